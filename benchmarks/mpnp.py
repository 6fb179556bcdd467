"""CNP vs NP vs MPNP (and CANP) on the 1-D GP protocol of Bootstrapping / Martingale-posterior NPs.

All models train on RBF tasks (``x ~ U[-2, 2]``, 50 points, 3-46 of them context) with the same
number of steps and batch size, then are evaluated on fixed batches (seed 42) of RBF, Matern-5/2,
periodic and Student-t-noise (RBF + t_2.1 noise) tasks: context and target log-likelihood per
point, ``l_i = logmeanexp_k log N(y_i; mu_ik, sigma_ik)`` with 50 samples (1 for the CNP),
mean over batches and its standard error.

Training runs :func:`probkit.models.mpnp.train` (the one optax loop). ``--train-seconds-max``
caps a model's training time: the steady time per step is measured first (two short runs), and
the step count is lowered to what fits in the cap, with the cosine schedule over those steps.
``--pretrained`` trains nothing and evaluates the shipped networks (CNP, NP, MPNP).

Writes, as it goes, ``OUT/<kind>.pk`` (the trained network, :func:`probkit.models.mpnp.
save_network`; ``OUT/<kind>_checkpoint.pk`` while training, resumed from if present),
``OUT/mpnp.json`` (rows in the format of ``benchmarks/_common.py``), ``OUT/log.txt``, and at the
end ``benchmarks/results/mpnp.json`` (``mpnp_quick.json`` with ``--quick``; ``mpnp_pretrained``
instead of ``mpnp`` with ``--pretrained``).

Usage::

    python benchmarks/mpnp.py --steps 20000 --batch 100 --out runs/mpnp
    python benchmarks/mpnp.py --quick
    python benchmarks/mpnp.py --quick --pretrained
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import machine, row, write_results  # noqa: E402

from probkit.models import mpnp  # noqa: E402

DATASETS = ("rbf", "matern52", "periodic", "student_t")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per model")
    ap.add_argument("--batch", type=int, default=100, help="tasks per training step")
    ap.add_argument("--models", default="cnp,np,mpnp", help="comma list of cnp,canp,np,mpnp,mpanp")
    ap.add_argument("--eval-batches", type=int, default=3000, help="evaluation batches of 16")
    ap.add_argument("--eval-chunk", type=int, default=50, help="batches per jitted eval call")
    ap.add_argument("--eval-samples", type=int, default=50, help="K at evaluation")
    ap.add_argument("--steps-per-call", type=int, default=20, help="steps per lax.scan dispatch")
    ap.add_argument("--train-seconds-max", type=float, default=None,
                    help="cap a model's training time (fewer steps, same schedule shape)")
    ap.add_argument("--dim-hid", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/mpnp_run", help="output folder")
    ap.add_argument("--quick", action="store_true", help="tiny run (< 2 min on CPU)")
    ap.add_argument("--pretrained", action="store_true",
                    help="evaluate the shipped networks (cnp, np, mpnp) instead of training")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.eval_batches, args.eval_chunk = 30, 16, 8, 4
        args.dim_hid, args.steps_per_call = 32, 10
        if not args.pretrained:  # the shipped networks are scored with K as in the table
            args.eval_samples = 10
    name = "mpnp_pretrained" if args.pretrained else "mpnp"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"args {vars(args)}; devices {jax.devices()}; jax {jax.__version__}; {machine()}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.pretrained:
        models = [m for m in models if m in mpnp.PRETRAINED]
    rows: list[dict] = []

    def flush(final: bool = False) -> None:
        doc = {"benchmark": name, "command": "python " + " ".join(sys.argv),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
               "device": str(jax.devices()[0]), "rows": rows}
        (out / "mpnp.json").write_text(json.dumps(doc, indent=1))
        if final:
            write_results(name, rows, quick=args.quick, device=str(jax.devices()[0]))

    t0 = time.perf_counter()
    chunk = min(args.eval_chunk, args.eval_batches)
    n_eval = (args.eval_batches // chunk) * chunk
    if n_eval != args.eval_batches:
        log(f"eval batches rounded down to {n_eval} (a multiple of --eval-chunk {chunk})")
    eval_sets = {data: mpnp.make_eval_tasks(mpnp.bnp_prior(data), n_eval, 16, seed=42)
                 for data in DATASETS}
    log(f"eval sets: {n_eval} batches x 16 tasks per dataset, {time.perf_counter() - t0:.1f}s")
    prior = mpnp.bnp_prior("rbf")

    for i, kind in enumerate(models):
        method = f"probkit-{kind}"
        if args.pretrained:
            network = mpnp.load_pretrained(kind)
            setting = f"weights=shipped,K_eval={args.eval_samples},eval_batches={n_eval}"
        else:
            network, setting = train_one(args, kind, i, prior, n_eval, out, log, rows)
        for data in DATASETS:
            te = time.perf_counter()
            tasks = eval_sets[data]
            ctx, tar = [], []
            for start in range(0, n_eval, chunk):
                part = mpnp.Tasks(*(jnp.asarray(a[start:start + chunk]) for a in tasks))
                c, t = mpnp.evaluate(network, part, jax.random.fold_in(jax.random.key(7), start),
                                     args.eval_samples)
                ctx.append(np.asarray(c).mean(axis=1))  # batch means (equal counts per batch)
                tar.append(np.asarray(t).mean(axis=1))
            ctx, tar = np.concatenate(ctx), np.concatenate(tar)
            secs = time.perf_counter() - te
            for metric, v in (("ctx_ll", ctx), ("tar_ll", tar)):
                rows.append(row(data, method, setting, metric, v.mean(),
                                v.std(ddof=1) / np.sqrt(v.size), secs))
            log(f"{kind} {data}: ctx_ll {ctx.mean():.4f} tar_ll {tar.mean():.4f} "
                f"(+- {tar.std(ddof=1) / np.sqrt(tar.size):.4f}) eval {secs:.1f}s")
            flush()
    flush(final=True)
    log(f"done in {time.perf_counter() - t0:.0f}s")
    print_table(rows)


def train_one(args, kind: str, i: int, prior, n_eval: int, out: pathlib.Path, log,
              rows: list[dict]):
    """Train one network (steady speed measured first) and save it; returns it and its
    setting string, adding its speed and final-loss rows."""
    network = mpnp.make_network(kind, key=jax.random.key(args.seed * 100 + i),
                                dim_hid=args.dim_hid, dim_lat=args.dim_hid,
                                **({"dim_gen": max(16, args.dim_hid // 2)}
                                   if kind.startswith("mp") else {}))
    key = jax.random.key(args.seed * 100 + 50 + i)
    spd = args.steps_per_call
    common = dict(key=key, batch_size=args.batch, steps_per_dispatch=spd, progress_bar=False)
    first = mpnp.train(network, prior, num_steps=spd, **common)  # includes the compilation
    two = mpnp.train(network, prior, num_steps=2 * spd, **common)  # compiled: steady speed
    ms_step = 1e3 * two.seconds / two.steps
    compile_s = first.seconds - two.seconds / 2
    steps = args.steps
    if args.train_seconds_max is not None:
        fit = int(args.train_seconds_max / (ms_step / 1e3)) // spd * spd
        steps = max(spd, min(steps, fit))
    res = mpnp.train(network, prior, num_steps=steps, **{**common, "progress_bar":
                                                           not args.no_progress},
                     checkpoint=out / f"{kind}_checkpoint.pk",
                     checkpoint_every=max(steps // 5, spd))
    network = res.params
    mpnp.save_network(out / f"{kind}.pk", network, steps=res.steps, seconds=res.seconds,
                      batch_size=args.batch, prior="bnp_prior('rbf')")
    log(f"{kind}: {res.steps} steps in {res.seconds:.1f}s (compile ~{compile_s:.1f}s), "
        f"steady {ms_step:.1f} ms/step, final loss {res.losses[-1]:.4f}")
    setting = (f"steps={res.steps},batch={args.batch},dim_hid={args.dim_hid},"
               f"K_eval={args.eval_samples},eval_batches={n_eval}")
    method = f"probkit-{kind}"
    rows.append(row("rbf", method, setting, "ms_per_step", ms_step, None, res.seconds))
    rows.append(row("rbf", method, setting, "train_loss_last", res.losses[-1], None, None))
    return network, setting


def print_table(rows: list[dict]) -> None:
    methods = sorted({r["method"] for r in rows})
    print("\n| data | metric | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for data in DATASETS:
        for metric in ("ctx_ll", "tar_ll"):
            cells = []
            for m in methods:
                r = [x for x in rows if x["dataset"] == data and x["method"] == m
                     and x["metric"] == metric]
                cells.append(f"{r[0]['value']:.3f} ± {r[0]['stderr']:.3f}" if r else "-")
            print(f"| {data} | {metric} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
