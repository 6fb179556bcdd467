"""UCI regression with functional-prior BNNs (Tran et al., JMLR 2022): fixed vs GP-matched prior.

For each UCI set and split: a BNN with one hidden layer of 100 tanh units, posterior by adaptive
SGHMC (4 chains); prior either the fixed N(0, 1) prior on the unscaled weights (FG,
``probkit-fbnn-fixed``) or the per-layer Gaussian prior matched in Wasserstein-1 distance to the
paper's hierarchical RBF-ARD GP target on the split's training inputs (GPiG,
``probkit-fbnn-matched``; matched once per split, the same prior for both noise settings). The
noise variance on standardised targets is the official fixed 0.1 (``--noise fixed``) or inferred
(``--noise learned``: InvGamma(2, 0.1) prior, Gibbs-updated in SGHMC; methods get a
``-learned-noise`` suffix); ``--noise fixed learned`` runs both. Test RMSE, NLL (of the
moment-matched Gaussian, the paper's convention), the NLL of the predictive mixture itself and the
coverage of its central 95% interval, in original units; mean +- standard error over splits; the
median learned noise standard deviation; seconds per split.

Budgets: ``--match-steps`` outer x ``--critic-steps`` critic steps (official notebook: 200 x 200;
default here 40 x 40); SGHMC is the official 2000 burn-in + 40 draws every 2000 steps with the
first 10 dropped (here: 22,000 warm-up transitions, then 30 draws every 2000), with friction
``mdecay`` 0.1 instead of 0.01 and the noise correction (see probkit.inference.sgmcmc: on energy
the 0.01 chain ran hot). ``--quick``: boston
and yacht, 2 splits, smaller budgets. ``--tag`` names the results file
(``benchmarks/results/fbnn<tag>.json``).

Run: ``python benchmarks/fbnn.py --noise learned`` (all five sets, ~45 min here) or
``python benchmarks/fbnn.py --quick``.
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
    "sghmc": dict(num_chains=4, num_warmup=22000, num_samples=30, thinning=2000, batch_size=32,
                  step_size=0.01, mdecay=0.1),
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
METRICS = ("rmse", "nll", "mixture_nll", "coverage95", "noise_sd")


def evaluate(post, d) -> dict:
    """Test metrics in original units (the paper's NLL: the moment-matched Gaussian's)."""
    pred = post.predict(d["x_test"])
    m, v, yt = np.asarray(pred.mean), np.asarray(pred.variance), d["y_test"]
    lo, hi = (np.asarray(b) for b in pred.interval(0.95))
    return {"rmse": float(np.sqrt(np.mean((yt - m) ** 2))),
            "nll": float(np.mean(0.5 * np.log(2 * np.pi * v) + 0.5 * (yt - m) ** 2 / v)),
            "mixture_nll": -float(np.mean(np.asarray(pred.log_prob(yt)))),
            "coverage95": float(np.mean((yt >= lo) & (yt <= hi))),
            "noise_sd": float(np.sqrt(np.median(post.noise_variance)))}


def run_split(name: str, split: int, noises: list[str], settings: dict, seed: int) -> dict:
    """Both priors and every noise setting on one split: ``{(prior, noise): metrics}``."""
    d = load_uci(name, split)
    key = jax.random.fold_in(jax.random.key(seed), 1000 * UCI_NAMES.index(name) + split)
    k_match, k_post = jax.random.split(key)
    base = dict(widths=tuple(settings["widths"]), activation=settings["activation"],
                target=uci_target(d["x_train"].shape[1]), noise_var=settings["noise_var"],
                matching=settings["match"], **settings["sghmc"])
    t0 = time.perf_counter()
    fit = FBNN(prior="gaussian", **base).match(d["x_train"], key=k_match, progress_bar=False)
    match_seconds = time.perf_counter() - t0
    out = {}
    for prior in ("fixed", "gaussian"):
        for noise in noises:
            fam = FBNN(prior="fixed" if prior == "fixed" else fit.prior,
                       learn_noise=noise == "learned", **base)
            t0 = time.perf_counter()
            post = fam.fit(d["x_train"], d["y_train"], key=k_post, progress_bar=False)
            jax.block_until_ready(post.nets)
            res = {**evaluate(post, d), "seconds": time.perf_counter() - t0}
            if prior == "gaussian":
                w = np.asarray(fit.distances)
                res.update(seconds=res["seconds"] + match_seconds, w1_first=float(w[:5].mean()),
                           w1_last=float(w[-5:].mean()))
            out[(prior, noise)] = res
    return out


def _stats(values) -> tuple[float, float | None]:
    v = np.asarray(values)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--splits", type=int, default=None, help="number of splits per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", nargs="+", choices=("fixed", "learned"), default=["fixed"])
    ap.add_argument("--match-steps", type=int, default=None, help="outer matching steps")
    ap.add_argument("--critic-steps", type=int, default=None, help="critic steps per outer step")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    settings = {**SETTINGS, **(QUICK if args.quick else {})}
    settings["match"] = {**settings["match"]}
    if args.match_steps:
        settings["match"]["num_steps"] = args.match_steps
    if args.critic_steps:
        settings["match"]["num_critic_steps"] = args.critic_steps
    settings["noise"] = args.noise
    names = args.datasets or (["boston", "yacht"] if args.quick else list(UCI_NAMES))
    n_splits = args.splits or (2 if args.quick else 10)
    rows = []
    for name in names:
        res = [run_split(name, s, args.noise, settings, args.seed) for s in range(n_splits)]
        for prior, label in (("fixed", "fixed"), ("gaussian", "matched")):
            for noise in args.noise:
                method = f"probkit-fbnn-{label}" + ("-learned-noise" if noise == "learned" else "")
                setting = f"splits={n_splits},hidden=100,act=tanh,prior={prior},noise={noise}"
                split_res = [r[(prior, noise)] for r in res]
                metrics = METRICS + (("w1_first", "w1_last") if prior == "gaussian" else ())
                summary = {}
                for metric in metrics + ("seconds",):
                    summary[metric] = _stats([r[metric] for r in split_res])
                    secs = summary["seconds"][0] if metric == "seconds" else None
                    rows.append(row(name, method, setting, metric, *summary[metric], secs))
                (rm, rs), (nm, ns) = summary["rmse"], summary["nll"]
                print(f"{name:9s} {method:35s} RMSE {rm:.3f} +- {rs or 0:.3f}  NLL {nm:.3f} +- "
                      f"{ns or 0:.3f}  mixture NLL {summary['mixture_nll'][0]:.3f}  cover95 "
                      f"{summary['coverage95'][0]:.3f}  {summary['seconds'][0]:.1f} s/split",
                      flush=True)
    if not args.no_write:
        write_results("fbnn" + args.tag, rows, quick=args.quick, settings=settings,
                      note="GPiG matched per split on its training inputs; SGHMC is Springenberg-"
                           "adaptive (BlackJAX diffusion + diagonal preconditioner adapted in "
                           "warm-up); critic optimiser Adam (official: Adagrad)")
    return rows


if __name__ == "__main__":
    main()
