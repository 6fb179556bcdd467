"""What a Pathfinder start buys NUTS (issue 18), on the model set of ``benchmarks/samplers.py``.

For each model, probkit NUTS with 4 chains x 1000 draws and
(a) the default warm-up of 1000 transitions from ``init_to_uniform``;
(b) a short warm-up of ``--short`` transitions from the same start;
(c) the short warm-up after ``pathfinder=True`` (each chain starts from a draw of its
    Pathfinder approximation, the warm-up from its diagonal inverse Hessian).
Reported per run (one compiling call, then one timed call with another key): wall seconds,
gradient evaluations of warm-up and sampling (Pathfinder's own L-BFGS and ELBO evaluations
are not counted in them; its time is in the seconds), min ESS_bulk, max R-hat, divergences,
and the largest z-score of the means and standard deviations against run (a), using both
runs' Monte Carlo standard errors.

    python benchmarks/pathfinder.py                 # results/pathfinder.json
    python benchmarks/pathfinder.py --models varying_intercept_100 --short 100
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import jax
import numpy as np
from _common import row, write_results
from samplers import agreement, model_set, moments, scalars

from probkit.inference import hmc


def fit(model, args, kwargs, warmup: int, pathfinder: bool, key: int):
    t = time.perf_counter()
    res = hmc.run(model, *args, key=jax.random.key(key), num_warmup=warmup, num_samples=1000,
                  num_chains=4, progress_bar=False, log_likelihood=False,
                  pathfinder=pathfinder, **kwargs)
    return time.perf_counter() - t, res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--short", type=int, default=200)
    opts = parser.parse_args()
    settings = {"warmup 1000": (1000, False), f"warmup {opts.short}": (opts.short, False),
                f"pathfinder + warmup {opts.short}": (opts.short, True)}
    rows, summary, ref = [], {}, None
    for name, (model, args, kwargs, _) in model_set().items():
        if opts.models and name not in opts.models:
            continue
        for label, (warmup, pathfinder) in settings.items():
            fit(model, args, kwargs, warmup, pathfinder, 0)  # compile
            secs, res = fit(model, args, kwargs, warmup, pathfinder, 1)
            draws = scalars(res.posterior)
            est = moments(draws)
            if label == "warmup 1000":
                ref, zm, zs = est, 0.0, 0.0
            else:
                zm, zs = agreement(est, ref)
            idata = az.from_dict(posterior=draws)
            vals = {"seconds": secs,
                    "grad_evals": float(np.sum(res.sample_stats["n_grad"]))
                    + res.attrs["warmup_n_grad"],
                    "warmup_grad_evals": res.attrs["warmup_n_grad"],
                    "min_ess_bulk": float(np.min(az.ess(idata, method="bulk").to_array())),
                    "max_rhat": float(np.max(az.rhat(idata).to_array())),
                    "divergences": int(np.sum(res.sample_stats["diverging"])),
                    "max_z_mean_vs_warmup_1000": zm, "max_z_sd_vs_warmup_1000": zs}
            rows += [row(name, "probkit-nuts", label, k, v, seconds=secs)
                     for k, v in vals.items()]
            summary.setdefault(name, {})[label] = vals
            print(f"{name:26s} {label:24s} {secs:6.2f} s  grads {vals['grad_evals']:9.0f} "
                  f"(warm-up {vals['warmup_grad_evals']:8d})  ESS {vals['min_ess_bulk']:6.0f}  "
                  f"rhat {vals['max_rhat']:.3f}  div {vals['divergences']:4d}  "
                  f"z {zm:4.1f}/{zs:4.1f}", flush=True)
        write_results("pathfinder", rows, summary=summary, short_warmup=opts.short)


if __name__ == "__main__":
    main()
