"""How close SGHMC comes to NUTS on a UCI BNN posterior with a learned noise variance.

Energy, split 0 (691 training points, 8 inputs), one hidden layer of 100 tanh units, the fixed
N(0, 1) prior on the unscaled weights, noise variance ~ InvGamma(2, 0.1) on standardised targets.
Reference: NUTS (``FBNN(engine="nuts")``, 2 chains x (400 warm-up + 200 draws)). Against it,
adaptive SGHMC (4 chains, batch 32, step 0.01, 22,000 warm-up transitions, 30 draws every 2000:
the paper's 82k transitions per chain) with the friction ``mdecay`` 0.01 (the paper's) or 0.1,
with and without the minibatch-noise correction of ``probkit.inference.sgmcmc``. Reported: the
posterior median noise standard deviation, the test RMSE of the predictive mean, the test NLL of
the predictive mixture (original units), the per-draw training RMSE and the mean posterior
standard deviation of f on the test inputs (the spread of the draws), and seconds per fit. A
sampler that runs hot shows a larger noise, per-draw RMSE and spread than NUTS.

Run: ``python benchmarks/sghmc_vs_nuts.py`` (about 6 minutes here; results
``benchmarks/results/sghmc_vs_nuts.json``).
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

from probkit.datasets import load_uci  # noqa: E402
from probkit.models.fbnn import FBNN  # noqa: E402

SGHMC = dict(num_chains=4, num_warmup=22000, num_samples=30, thinning=2000, batch_size=32,
             step_size=0.01)
NUTS = dict(engine="nuts", num_chains=2, num_warmup=400, num_samples=200, thinning=1)
CONFIGS = {
    "nuts": dict(NUTS),
    "sghmc-mdecay0.01-uncorrected": dict(SGHMC, mdecay=0.01, noise_correction=False),
    "sghmc-mdecay0.01": dict(SGHMC, mdecay=0.01),
    "sghmc-mdecay0.1-uncorrected": dict(SGHMC, mdecay=0.1, noise_correction=False),
    "sghmc-mdecay0.1": dict(SGHMC, mdecay=0.1),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    d = load_uci("energy", 0)
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    rows = []
    for name, cfg in CONFIGS.items():
        fam = FBNN((100,), "tanh", prior="fixed", noise_var=0.1, learn_noise=True, **cfg)
        t0 = time.perf_counter()
        post = fam.fit(x, y, key=jax.random.key(args.seed), progress_bar=False)
        jax.block_until_ready(post.nets)
        seconds = time.perf_counter() - t0
        f_test, f_train = (np.asarray(post.posterior(a).draws) for a in (xt, x))
        pred = post.predict(xt)
        metrics = {
            "noise_sd": float(np.sqrt(np.median(post.noise_variance))),
            "rmse": float(np.sqrt(np.mean((yt - np.asarray(pred.mean)) ** 2))),
            "mixture_nll": -float(np.mean(np.asarray(pred.log_prob(yt)))),
            "train_rmse_per_draw": float(np.sqrt(np.mean((y - f_train) ** 2))),
            "f_spread": float(np.sqrt(np.mean(f_test.var(0)))),
        }
        for metric, value in metrics.items():
            rows.append(row("energy-split0", f"probkit-fbnn-{name}", "100 tanh, learned noise",
                            metric, value, None, seconds))
        print(f"{name:30s} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
              + f"  {seconds:.1f} s", flush=True)
    if not args.no_write:
        write_results("sghmc_vs_nuts", rows, settings={"sghmc": SGHMC, "nuts": NUTS})
    return rows


if __name__ == "__main__":
    main()
