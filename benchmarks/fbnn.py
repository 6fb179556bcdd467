"""UCI regression with functional-prior BNNs (Tran et al., JMLR 2022): fixed vs GP-matched prior.

For each UCI set and split: a BNN with one hidden layer of 100 tanh units, noise variance 0.1 on
standardised targets, posterior by adaptive SGHMC (4 chains); prior either the fixed N(0, 1)
prior on the unscaled weights (FG, ``probkit-fbnn-fixed``) or the per-layer Gaussian prior
matched in Wasserstein-1 distance to the paper's hierarchical RBF-ARD GP target on the split's
training inputs (GPiG, ``probkit-fbnn-matched``). Test RMSE and NLL in original units, mean +-
standard error over splits, and the seconds per split.

Settings are reduced from the official notebook (see ``SETTINGS`` and .notes/bench_fbnn.md) to
fit this 2-core machine. ``--quick``: boston and yacht, 2 splits, smaller budgets.

Run: ``python benchmarks/fbnn.py`` (full, ~25 min) or ``python benchmarks/fbnn.py --quick``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402

from probkit.datasets import UCI_NAMES, load_uci  # noqa: E402
from probkit.models.fbnn import FBNN, uci_target  # noqa: E402

SETTINGS = {
    "widths": [100], "activation": "tanh", "noise_var": 0.1,
    "sghmc": dict(num_chains=4, num_warmup=2000, num_samples=30, thinning=100, batch_size=32,
                  step_size=0.01, mdecay=0.01),
    "match": dict(num_steps=40, num_critic_steps=40, num_samples=128, num_points=100,
                  real_ratio=0.7, learning_rate=0.1, critic_learning_rate=0.01,
                  critic_optimizer="adam"),
}
QUICK = {
    "sghmc": dict(num_chains=4, num_warmup=1000, num_samples=20, thinning=100, batch_size=32,
                  step_size=0.01, mdecay=0.01),
    "match": dict(num_steps=20, num_critic_steps=30, num_samples=64, num_points=100,
                  real_ratio=0.7, learning_rate=0.1, critic_learning_rate=0.01,
                  critic_optimizer="adam"),
}


def run_split(name: str, split: int, prior: str, settings: dict, seed: int) -> dict:
    d = load_uci(name, split)
    key = jax.random.fold_in(jax.random.key(seed), 1000 * UCI_NAMES.index(name) + split)
    model = FBNN(tuple(settings["widths"]), settings["activation"], prior=prior,
                 target=uci_target(d["x_train"].shape[1]), noise_var=settings["noise_var"],
                 matching=settings["match"], **settings["sghmc"])
    t0 = time.perf_counter()
    post = model.fit(d["x_train"], d["y_train"], key=key, progress_bar=False)
    jax.block_until_ready(post.nets)
    seconds = time.perf_counter() - t0
    # the paper's convention: RMSE of the predictive mean, NLL of the moment-matched Gaussian
    pred = post.predict(d["x_test"])
    m, v, yt = np.asarray(pred.mean), np.asarray(pred.variance), d["y_test"]
    out = {"rmse": float(np.sqrt(np.mean((yt - m) ** 2))),
           "nll": float(np.mean(0.5 * np.log(2 * np.pi * v) + 0.5 * (yt - m) ** 2 / v)),
           "seconds": seconds}
    if post.distances.size:
        w = np.asarray(post.distances)
        out["w1_first"], out["w1_last"] = float(np.mean(w[:5])), float(np.mean(w[-5:]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--splits", type=int, default=None, help="number of splits per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    settings = {**SETTINGS, **(QUICK if args.quick else {})}
    names = args.datasets or (["boston", "yacht"] if args.quick else list(UCI_NAMES))
    n_splits = args.splits or (2 if args.quick else 10)
    rows, table = [], {}
    methods = (("fixed", "probkit-fbnn-fixed"), ("gaussian", "probkit-fbnn-matched"))
    for name in names:
        for prior, method in methods:
            res = [run_split(name, s, prior, settings, args.seed) for s in range(n_splits)]
            setting = f"splits={n_splits},hidden=100,act=tanh,prior={prior}"
            for metric in ("rmse", "nll"):
                v = np.array([r[metric] for r in res])
                se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else None
                secs = float(np.mean([r["seconds"] for r in res]))
                rows.append(row(name, method, setting, metric, v.mean(), se, secs))
                table[(name, method, metric)] = (v.mean(), se or 0.0)
            secs = np.array([r["seconds"] for r in res])
            rows.append(row(name, method, setting, "seconds", secs.mean(),
                            secs.std(ddof=1) / np.sqrt(len(secs)) if len(secs) > 1 else None))
            if prior == "gaussian":
                for m in ("w1_first", "w1_last"):
                    v = np.array([r[m] for r in res])
                    rows.append(row(name, method, setting, m, v.mean(),
                                    v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else None))
            (rm, rs), (nm, ns) = table[(name, method, "rmse")], table[(name, method, "nll")]
            print(f"{name:9s} {method:22s} RMSE {rm:.3f} +- {rs:.3f}  NLL {nm:.3f} +- {ns:.3f}"
                  f"  {secs.mean():.1f} s/split", flush=True)
    if not args.no_write:
        write_results("fbnn", rows, quick=args.quick, settings=settings,
                      note="GPiG matched per split on its training inputs; SGHMC is Springenberg-"
                           "adaptive (BlackJAX diffusion + diagonal preconditioner adapted in "
                           "burn-in); critic optimiser Adam (official: Adagrad)")
    return rows


if __name__ == "__main__":
    main()
