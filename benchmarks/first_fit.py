"""First fit in a fresh process: probkit's NUTS vs numpyro.infer.NUTS (and nutpie), with and
without a warm persistent compilation cache.

Each measurement is one fresh Python process that imports the sampler, fits 4 chains x
(1000 warm-up + 1000 draws) and prints ``az.summary``: what a user pays for one fit. The
process's CPU time (user + system, children included) and wall time are read by the parent.
Runs are paired and interleaved: for each repeat, probkit then NumPyro, for each model and
cache setting. The cache runs give both libraries the same JAX persistent cache settings
(``JAX_COMPILATION_CACHE_DIR``, every program kept; one folder per library and model, filled
by an untimed first process). With ``--nutpie-python`` the same models in PyMC sampled by
nutpie (``benchmarks/nutpie_child.py``, numba backend) join the pairs: "no cache" gives it an
empty PyTensor compile directory and numba cache per process, "warm cache" a filled one.
``--sampling`` compares the sampling phase instead: a second fit in the same process (probkit:
``hmc.run`` compiled by the first; nutpie: ``nutpie.sample`` again on the compiled model).

    python benchmarks/first_fit.py             # 3 repeats (writes results/first_fit.json)
    python benchmarks/first_fit.py --nutpie-python /tmp/nutvenv/bin/python   # + nutpie
    python benchmarks/first_fit.py --sampling --nutpie-python /tmp/nutvenv/bin/python
    python benchmarks/first_fit.py --repeats 1 # one pass
    python benchmarks/first_fit.py --child probkit eight_schools   # one fit, as timed
    python benchmarks/first_fit.py --breakdown  # where probkit's first fit goes (eight schools,
                                                # chain_method auto vs vectorized; fresh processes)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
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
HERE = Path(__file__).parent


def child(library: str, model_name: str) -> None:
    """One fit, as a user would write it (imports included in the parent's timing); library
    ``probkit-sampling``: two fits, print the seconds of the second (JSON)."""
    import arviz as az
    import jax
    from hmc import datasets

    model, args, kwargs = datasets()[model_name]
    key = jax.random.key(0)
    if library.startswith("probkit"):
        from probkit.inference import hmc

        fit = functools.partial(hmc.run, model, *args, num_warmup=1000, num_samples=1000,
                                num_chains=4, progress_bar=False, **kwargs)
        if library == "probkit-sampling":
            t = time.perf_counter()
            fit(key=key)
            first = time.perf_counter() - t
            t = time.perf_counter()
            fit(key=jax.random.key(1))
            print(json.dumps({"first": first, "resample": time.perf_counter() - t}))
            return
        idata = fit(key=key).to_arviz()
    else:
        from numpyro.infer import MCMC, NUTS

        mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(key, *args, **kwargs)
        idata = az.from_numpyro(mcmc)
    print(az.summary(idata).to_string())


def breakdown_child(chain_method: str) -> None:
    """One probkit fit of eight schools; print JSON: import, fit and per-program seconds."""
    t0 = time.perf_counter()
    import arviz  # noqa: F401 - timed as part of the imports
    import jax

    from probkit.inference import hmc as probkit_hmc

    imports = time.perf_counter() - t0
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    for name in ("jax._src.dispatch", "jax._src.interpreters.pxla", "jax._src.compiler"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(Collect())
    jax.config.update("jax_log_compiles", True)
    from hmc import datasets

    model, args, kwargs = datasets()["eight_schools"]
    t1 = time.perf_counter()
    res = probkit_hmc.run(model, *args, key=jax.random.key(0), num_warmup=1000,
                          num_samples=1000, num_chains=4, progress_bar=False,
                          chain_method=chain_method, **kwargs)
    fit = time.perf_counter() - t1
    programs: dict[str, float] = {}
    for m in messages:
        hit = re.search(r"Finished (tracing|jaxpr to MLIR module conversion|XLA compilation)"
                        r" (?:of )?(?:jit\()?(\w+)\)?.* in ([0-9.e-]+) sec", m)
        if hit:
            name = hit.group(2) if hit.group(2) in ("program", "init", "inspect") else "other"
            programs[name] = programs.get(name, 0.0) + float(hit.group(3))
    print(json.dumps({"chain_method": res.attrs["chain_method"], "imports": imports,
                      "fit": fit, "compile_and_trace": programs}))


def breakdown() -> None:
    rows, out = [], {}
    for method in ("auto", "vectorized"):
        run = subprocess.run([sys.executable, __file__, "--breakdown-child", method],
                             check=True, capture_output=True, text=True,
                             cwd=Path(__file__).parent)
        got = json.loads(run.stdout.strip().splitlines()[-1])
        out[method] = got
        parts = got["compile_and_trace"]
        print(f"chain_method={method} ({got['chain_method']}): imports {got['imports']:.2f} s, "
              f"fit {got['fit']:.2f} s; trace+lower+compile: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(parts.items())))
        for k, v in parts.items():
            rows.append(row("eight_schools", f"probkit-nuts-{got['chain_method']}",
                            "4x(1000+1000)", f"{k} trace+compile s", v))
        rows.append(row("eight_schools", f"probkit-nuts-{got['chain_method']}",
                        "4x(1000+1000)", "first fit s", got["fit"]))
    write_results("first_fit_breakdown", rows, runs=out)


def command(library: str, model_name: str, nutpie_python: str | None,
            sampling: bool = False) -> list[str]:
    if library == "nutpie":
        return [nutpie_python, str(HERE / "nutpie_child.py"),
                "sampling" if sampling else "fit", model_name]
    return [sys.executable, __file__, "--child",
            f"{library}-sampling" if sampling else library, model_name]


def timed(library: str, model_name: str, cache: Path | None,
          nutpie_python: str | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh process running :func:`child` (or nutpie's)."""
    env = dict(os.environ)
    scratch = None
    if library == "nutpie":  # PyTensor and numba always cache: "no cache" = an empty one
        folder = cache if cache is not None else Path(tempfile.mkdtemp(prefix="nutpie-"))
        scratch = None if cache is not None else folder
        env["PYTENSOR_FLAGS"] = f"compiledir={folder / 'pytensor'}"
        env["NUMBA_CACHE_DIR"] = str(folder / "numba")
    elif cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(command(library, model_name, nutpie_python), env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=HERE)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return cpu, wall


def sampling(libraries, repeats: int, nutpie_python: str | None) -> None:
    """Sampling phase: seconds of a second fit in one process, median over ``repeats``; with
    the seconds of each process's first call (probkit: the first ``hmc.run``; nutpie: the
    model's compilation, separately from its first ``sample``)."""
    times: dict[tuple[str, str], list[dict]] = {}
    for rep in range(repeats):
        for m in MODELS:
            for lib in libraries:
                run = subprocess.run(command(lib, m, nutpie_python, sampling=True), check=True,
                                     capture_output=True, text=True, cwd=HERE)
                got = json.loads(run.stdout.strip().splitlines()[-1])
                times.setdefault((m, lib), []).append(got)
                print(f"[{rep}] {m:20s} {lib:8s} " + "  ".join(
                    f"{k} {v:6.2f} s" for k, v in got.items()), flush=True)
    rows = []
    for (m, lib), runs in times.items():
        for part in runs[0]:
            metric = ("sampling-phase wall s (median)" if part == "resample"
                      else f"{part} wall s (median)")
            rows.append(row(m, f"{lib}-nuts", "second fit in the process", metric,
                            statistics.median(r[part] for r in runs)))
    write_results("first_fit_sampling", rows, repeats=repeats,
                  runs={"|".join(k): v for k, v in times.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "MODEL"))
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--breakdown-child", metavar="CHAIN_METHOD")
    parser.add_argument("--nutpie-python", metavar="PYTHON",
                        help="an interpreter with pymc and nutpie: add nutpie to the pairs")
    parser.add_argument("--sampling", action="store_true")
    opts = parser.parse_args()
    if opts.child:
        child(*opts.child)
        return
    if opts.breakdown_child:
        breakdown_child(opts.breakdown_child)
        return
    if opts.breakdown:
        breakdown()
        return
    libraries = ("probkit", "numpyro") + (("nutpie",) if opts.nutpie_python else ())
    if opts.sampling:
        sampling([lib for lib in libraries if lib != "numpyro"], opts.repeats,
                 opts.nutpie_python)
        return
    root = Path(tempfile.mkdtemp(prefix="probkit-first-fit-"))
    caches = {(lib, m): root / f"{lib}-{m}" for lib in libraries for m in MODELS}
    for (lib, m), folder in caches.items():  # fill each cache once, untimed
        timed(lib, m, folder, opts.nutpie_python)
    times: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for rep in range(opts.repeats):
        for m in MODELS:
            for setting in ("no cache", "warm cache"):
                for lib in libraries:
                    cache = caches[lib, m] if setting == "warm cache" else None
                    times.setdefault((m, setting, lib), []).append(
                        timed(lib, m, cache, opts.nutpie_python))
                    cpu, wall = times[m, setting, lib][-1]
                    print(f"[{rep}] {m:20s} {setting:10s} {lib:8s} cpu {cpu:6.1f} s  "
                          f"wall {wall:6.1f} s", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for (m, setting, lib), runs in times.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        rows.append(row(m, f"{lib}-nuts", setting, "first-fit CPU s (median)", cpu,
                        seconds=wall))
    for m in MODELS:
        for setting in ("no cache", "warm cache"):
            for other in libraries[1:]:
                ratio = (statistics.median(c for c, _ in times[m, setting, "probkit"])
                         / statistics.median(c for c, _ in times[m, setting, other]))
                rows.append(row(m, f"probkit/{other}", setting, "first-fit CPU ratio", ratio))
                print(f"{m:20s} {setting:10s} probkit/{other} CPU ratio {ratio:.2f}")
    write_results("first_fit", rows, repeats=opts.repeats,
                  runs={"|".join(k): v for k, v in times.items()})


if __name__ == "__main__":
    main()
