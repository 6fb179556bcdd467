"""A NumPyro regression model as a BO surrogate: seconds per fit as the data grow by one point.

``probkit-numpyro-padded`` is :class:`probkit.models.numpyro.Regressor` (data padded to a
capacity, padded observations masked), so growing data reuse one compiled sampler;
``probkit-hmc-unpadded`` is the same NUTS run on the raw data (what the v0.1 surrogate did),
which compiles anew for every data size. Calls are interleaved, same keys, same settings.

    python benchmarks/numpyro_family.py            # n = 20..27, writes results/numpyro_family.json
    python benchmarks/numpyro_family.py --quick    # n = 20..22
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import row, write_results

from probkit.inference.hmc import run
from probkit.models.numpyro import Regressor

SETTINGS = dict(num_warmup=300, num_samples=300, num_chains=2)


def quadratic(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 3.0).expand([5]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    f = numpyro.deterministic("f", w[0] + x @ w[1:3] + (x**2) @ w[3:5])
    numpyro.sample("y", dist.Normal(f, sigma), obs=y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    sizes = range(20, 23 if args.quick else 28)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(max(sizes), 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=len(x))
    family = Regressor(quadratic, **SETTINGS)
    rows = []
    for n in sizes:
        key = jax.random.key(n)
        t0 = time.perf_counter()
        family.fit(x[:n], y[:n], key=key, progress_bar=False)
        t1 = time.perf_counter()
        with jax.enable_x64(True):
            run(quadratic, jnp.asarray(x[:n]), jnp.asarray(y[:n]), key=key, progress_bar=False,
                log_likelihood=False, **SETTINGS)
        t2 = time.perf_counter()
        rows.append(row("quadratic-2d", "probkit-numpyro-padded", f"n={n}", "seconds", t1 - t0,
                        seconds=t1 - t0))
        rows.append(row("quadratic-2d", "probkit-hmc-unpadded", f"n={n}", "seconds", t2 - t1,
                        seconds=t2 - t1))
        print(f"n={n}: padded {t1 - t0:.2f} s, unpadded {t2 - t1:.2f} s")
    later = [r for r in rows if r["setting"] != f"n={min(sizes)}"]
    for method in ("probkit-numpyro-padded", "probkit-hmc-unpadded"):
        med = np.median([r["value"] for r in later if r["method"] == method])
        print(f"{method}: median seconds per refit after the first = {med:.2f}")
    write_results("numpyro_family", rows, quick=args.quick)


if __name__ == "__main__":
    main()
