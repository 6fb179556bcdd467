"""The first-fit models of ``benchmarks/first_fit.py`` in PyMC, sampled by nutpie (numba
backend): the issue-18 baseline.

Runs in any interpreter that has ``pymc``, ``nutpie`` and ``arviz`` (the ``bench`` extra, or a
separate virtual environment: JAX is not needed). Same priors, same data (the NumPy draws of
``benchmarks/hmc.py``'s ``datasets``), same 4 chains x (1000 + 1000).

    python benchmarks/nutpie_child.py fit eight_schools       # one fit + az.summary, as timed
    python benchmarks/nutpie_child.py sampling eight_schools  # JSON: compile, sample, resample s
"""

from __future__ import annotations

import json
import sys
import time


def model(name: str):
    import numpy as np
    import pymc as pm

    with pm.Model() as m:
        if name == "eight_schools":  # non-centred, as benchmarks/hmc.py's eight_schools
            sigma = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
            y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
            mu = pm.Normal("mu", 0.0, 5.0)
            tau = pm.HalfCauchy("tau", 5.0)
            eta = pm.Normal("eta", 0.0, 1.0, shape=8)
            pm.Normal("y", mu + tau * eta, sigma, observed=y)
        elif name == "logistic_n1000_d10":  # the same NumPy draws as benchmarks/hmc.py
            rng = np.random.default_rng(0)
            x = rng.normal(size=(1000, 10))
            w = rng.normal(size=10)
            ylog = (rng.uniform(size=1000) < 1 / (1 + np.exp(-(x @ w + 0.5)))).astype(np.int32)
            wv = pm.Normal("w", 0.0, 1.0, shape=10)
            b = pm.Normal("b", 0.0, 5.0)
            pm.Bernoulli("y", logit_p=pm.math.dot(x, wv) + b, observed=ylog)
        else:
            raise ValueError(f"model: unknown {name!r}")
    return m


def sample(compiled, seed: int):
    import nutpie

    return nutpie.sample(compiled, draws=1000, tune=1000, chains=4, seed=seed,
                         progress_bar=False)


def main() -> None:
    mode, name = sys.argv[1], sys.argv[2]
    import arviz as az
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model(name), backend="numba")
    t1 = time.perf_counter()
    trace = sample(compiled, 0)
    t2 = time.perf_counter()
    if mode == "fit":
        print(az.summary(trace).to_string())
        return
    sample(compiled, 1)
    t3 = time.perf_counter()
    print(json.dumps({"compile": t1 - t0, "sample": t2 - t1, "resample": t3 - t2}))


if __name__ == "__main__":
    main()
