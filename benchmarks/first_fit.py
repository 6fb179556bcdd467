"""First fit in a fresh process: probkit's NUTS vs numpyro.infer.NUTS, with and without a warm
persistent compilation cache.

Each measurement is one fresh Python process that imports the sampler, fits 4 chains x
(1000 warm-up + 1000 draws) and prints ``az.summary``: what a user pays for one fit. The
process's CPU time (user + system, children included) and wall time are read by the parent.
Runs are paired and interleaved: for each repeat, probkit then NumPyro, for each model and
cache setting. The cache runs give both libraries the same JAX persistent cache settings
(``JAX_COMPILATION_CACHE_DIR``, every program kept; one folder per library and model, filled
by an untimed first process).

    python benchmarks/first_fit.py             # 3 repeats (writes results/first_fit.json)
    python benchmarks/first_fit.py --repeats 1 # one pass
    python benchmarks/first_fit.py --child probkit eight_schools   # one fit, as timed
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import row, write_results

MODELS = ("eight_schools", "logistic_n1000_d10")
LIBRARIES = ("probkit", "numpyro")


def child(library: str, model_name: str) -> None:
    """One fit, as a user would write it (imports included in the parent's timing)."""
    import arviz as az
    import jax
    from hmc import datasets

    model, args, kwargs = datasets()[model_name]
    key = jax.random.key(0)
    if library == "probkit":
        from probkit.inference import hmc

        idata = hmc.run(model, *args, key=key, num_warmup=1000, num_samples=1000,
                        num_chains=4, progress_bar=False, **kwargs).to_arviz()
    else:
        from numpyro.infer import MCMC, NUTS

        mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(key, *args, **kwargs)
        idata = az.from_numpyro(mcmc)
    print(az.summary(idata).to_string())


def timed(library: str, model_name: str, cache: Path | None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh process running :func:`child`."""
    env = dict(os.environ)
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", library, model_name], env=env,
                   check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).parent)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "MODEL"))
    opts = parser.parse_args()
    if opts.child:
        child(*opts.child)
        return
    root = Path(tempfile.mkdtemp(prefix="probkit-first-fit-"))
    caches = {(lib, m): root / f"{lib}-{m}" for lib in LIBRARIES for m in MODELS}
    for (lib, m), folder in caches.items():  # fill each cache once, untimed
        timed(lib, m, folder)
    times: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for rep in range(opts.repeats):
        for m in MODELS:
            for setting in ("no cache", "warm cache"):
                for lib in LIBRARIES:
                    cache = caches[lib, m] if setting == "warm cache" else None
                    times.setdefault((m, setting, lib), []).append(timed(lib, m, cache))
                    cpu, wall = times[m, setting, lib][-1]
                    print(f"[{rep}] {m:20s} {setting:10s} {lib:8s} cpu {cpu:6.1f} s  "
                          f"wall {wall:6.1f} s", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for (m, setting, lib), runs in times.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        method = "probkit-nuts" if lib == "probkit" else "numpyro-nuts"
        rows.append(row(m, method, setting, "first-fit CPU s (median)", cpu, seconds=wall))
    for m in MODELS:
        for setting in ("no cache", "warm cache"):
            ratio = (statistics.median(c for c, _ in times[m, setting, "probkit"])
                     / statistics.median(c for c, _ in times[m, setting, "numpyro"]))
            rows.append(row(m, "probkit/numpyro", setting, "first-fit CPU ratio", ratio))
            print(f"{m:20s} {setting:10s} probkit/numpyro CPU ratio {ratio:.2f}")
    write_results("first_fit", rows, repeats=opts.repeats,
                  runs={"|".join(k): v for k, v in times.items()})


if __name__ == "__main__":
    main()
