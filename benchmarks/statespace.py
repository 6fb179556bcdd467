"""State-space GP: log marginal likelihood + gradient in O(n) vs tinygp, dense Cholesky, dynamax.

Data: a GP regression problem on n irregular, sorted inputs (exponential gaps), float64, with a
Matern-3/2 and a Matern-5/2 kernel. For every method we time ``jax.value_and_grad`` of the
negative log marginal likelihood with respect to (log lengthscale, log variance, log noise),
jitted once (compiled ahead of time). Calls are interleaved: each repeat times one call of
every method in turn, and the table reports the median over repeats (2 shared cores).

Methods (user-facing paths on both sides)
-----------------------------------------
* ``probkit-statespace-gp``: ``StateSpaceGP(Matern32(ls, var), t, noise).log_prob(y)`` (the
  NumPyro distribution: discretisation + Kalman filter).
* ``probkit-kalman-scan``: the lower-level path, :func:`probkit.inference.kalman.
  log_marginal_likelihood` on :func:`probkit.statespace.to_lgssm`.
* ``probkit-kalman-assoc``: the same with ``parallel=True`` (``lax.associative_scan``; on a CPU
  it is slower, it pays off on accelerators), n <= 1e4 only.
* ``tinygp-quasisep``: ``tinygp.GaussianProcess(quasisep.Matern32(...), t, diag=noise)
  .log_probability(y)`` (``pip install tinygp``).
* ``jax-dense-cholesky``: the dense GP, O(n^3), n <= 1e4 (one call at 1e4).
* ``dynamax-lgssm-filter``: dynamax 1.0.3's Kalman filter on the same discretised Matern-3/2
  model, run in a separate virtual environment (it needs tfp-nightly), ``--dynamax-python``.
Also ``seconds_smoother``: filter + RTS smoother (no gradient), probkit vs dynamax.

Usage::

    python benchmarks/statespace.py [--quick] [--dynamax-python /tmp/dxvenv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script, not a library: global float64 is fine

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402

from probkit.distributions import StateSpaceGP  # noqa: E402
from probkit.inference.kalman import (  # noqa: E402
    log_marginal_likelihood,
    rts_smoother,
)
from probkit.kernels import Matern32, Matern52  # noqa: E402
from probkit.statespace import matern_sde, to_lgssm  # noqa: E402

THETA = np.log(np.array([0.5, 1.3, 0.1]))  # lengthscale, variance, noise


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.1, n))
    y = np.sin(t) + 0.5 * np.sin(3.1 * t) + math.sqrt(0.1) * rng.normal(size=n)
    return jnp.asarray(t), jnp.asarray(y)


CPU_TIMES: dict = {}


def bench(fn, args, repeats):
    """(best wall seconds after compilation, compile+first-call seconds, output).

    The best process-CPU time of the same repeats is left in ``CPU_TIMES[fn]`` (less
    sensitive to other jobs on a shared machine; multi-threaded BLAS counts every core).
    """
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best, best_cpu = math.inf, math.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    CPU_TIMES[id(fn)] = best_cpu
    return best, first, out


KERNELS = {"matern32": (1.5, Matern32), "matern52": (2.5, Matern52)}


def probkit_nll(theta, t, y, parallel=False, nu=1.5):
    ls, var, noise = jnp.exp(theta)
    params = to_lgssm(matern_sde(nu, ls, var), t, noise, validate=False)
    return -log_marginal_likelihood(params, y, parallel=parallel)


def statespace_gp_nll(theta, t, y, kernel=Matern32):
    ls, var, noise = jnp.exp(theta)
    return -StateSpaceGP(kernel(ls, var), t, noise).log_prob(y)


def probkit_smooth(theta, t, y):
    ls, var, noise = jnp.exp(theta)
    res = rts_smoother(to_lgssm(matern_sde(1.5, ls, var), t, noise, validate=False), y)
    return res.smoothed_mean[:, 0], res.smoothed_cov[:, 0, 0]


def dense_nll(theta, t, y, kernel=Matern32):
    ls, var, noise = jnp.exp(theta)
    n = t.shape[0]
    K = kernel(ls, var)(t[:, None], t[:, None]) + noise * jnp.eye(n)
    L = jnp.linalg.cholesky(K)
    a = jax.scipy.linalg.solve_triangular(L, y, lower=True)
    return 0.5 * a @ a + jnp.sum(jnp.log(jnp.diagonal(L))) + 0.5 * n * math.log(2 * math.pi)


def tinygp_nll(theta, t, y, name="matern32"):
    from tinygp import GaussianProcess
    from tinygp.kernels import quasisep

    ls, var, noise = jnp.exp(theta)
    kernel = {"matern32": quasisep.Matern32, "matern52": quasisep.Matern52}[name]
    gp = GaussianProcess(kernel(scale=ls, sigma=jnp.sqrt(var)), t, diag=noise)
    return -gp.log_probability(y)


def repeats_for(n):
    return 10 if n <= 10_000 else (5 if n <= 100_000 else 3)


def dynamax_worker(ns):
    """Runs inside the dynamax venv; prints one JSON line per n."""
    from dynamax.linear_gaussian_ssm import lgssm_filter, lgssm_smoother
    from dynamax.linear_gaussian_ssm.inference import make_lgssm_params

    def params_of(theta, t):
        ls, var, noise = jnp.exp(theta)
        p = to_lgssm(matern_sde(1.5, ls, var), t, noise, validate=False)
        # dynamax 1.0.3: the first emission comes from the initial state and weights[t] maps
        # z_{t-1} -> z_t, which equals probkit's convention with A_0 = I, Q_0 = 0.
        return make_lgssm_params(p.initial_mean, p.initial_cov, p.transition_matrix,
                                 p.transition_cov, p.emission_matrix, p.emission_cov)

    def nll(theta, t, y):
        return -lgssm_filter(params_of(theta, t), y[:, None]).marginal_loglik

    def smooth(theta, t, y):
        post = lgssm_smoother(params_of(theta, t), y[:, None])
        return post.smoothed_means[:, 0], post.smoothed_covariances[:, 0, 0]

    vg = jax.jit(jax.value_and_grad(nll))
    sm = jax.jit(smooth)
    for n in ns:
        t, y = make_data(n)
        th = jnp.asarray(THETA)
        s, first, (val, _) = bench(vg, (th, t, y), repeats_for(n))
        cpu = CPU_TIMES[id(vg)]
        s2, _, _ = bench(sm, (th, t, y), repeats_for(n))
        print(json.dumps({"n": n, "seconds": s, "cpu_seconds": cpu, "first": first,
                          "nll": float(val), "seconds_smoother": s2}), flush=True)


REF = "probkit-statespace-gp"


def summarise(rows: list[dict]) -> list[dict]:
    """Derived rows per kernel: agreement with probkit's value, t(10n)/t(n), speed-ups."""
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        get = {(r["method"], int(r["setting"][2:]), r["metric"]): r["value"] for r in rows
               if r["dataset"] == ds and r["setting"].startswith("n=")}
        ns = sorted({n for (_, n, _) in get})
        for (name, n, metric), v in list(get.items()):
            if metric == "nll" and name != REF and (REF, n, "nll") in get:
                out.append(row(ds, name, f"n={n}", "abs_nll_diff_vs_probkit",
                               abs(v - get[REF, n, "nll"])))
        for name in (REF, "probkit-kalman-scan", "tinygp-quasisep", "dynamax-lgssm-filter"):
            for n in ns:
                if (name, n, "seconds") in get and (name, 10 * n, "seconds") in get:
                    r = get[name, 10 * n, "seconds"] / get[name, n, "seconds"]
                    out.append(row(ds, name, f"n={10 * n}", "time_ratio_10n_over_n", r))
        for base in ("jax-dense-cholesky", "tinygp-quasisep", "dynamax-lgssm-filter"):
            short = base.split("-")[1] if base.startswith("jax") else base.split("-")[0]
            for n in ns:
                if (base, n, "seconds") in get and (REF, n, "seconds") in get:
                    r = get[base, n, "seconds"] / get[REF, n, "seconds"]
                    out.append(row(ds, REF, f"n={n}", f"speedup_vs_{short}", r))
                    print(f"{ds}: probkit vs {base} at n={n}: {r:.2f}x")
    return out


def interleaved(methods: dict, args: tuple, repeats: int) -> dict:
    """Median wall and CPU seconds of each compiled method, calls interleaved round-robin."""
    times = {k: [] for k in methods}
    cpus = {k: [] for k in methods}
    values = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            values[name] = float(jax.block_until_ready(fn(*args))[0])
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    return {k: (float(np.median(times[k])), float(np.median(cpus[k])), values[k])
            for k in methods}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1e3, 1e4 only (< 2 min)")
    ap.add_argument("--kernels", default="matern32,matern52")
    ap.add_argument("--dynamax-python", default=os.environ.get("DYNAMAX_PYTHON"),
                    help="python of a venv with dynamax + tfp-nightly (else dynamax is skipped)")
    ap.add_argument("--dynamax-worker", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dynamax_worker:
        dynamax_worker([int(v) for v in args.dynamax_worker.split(",")])
        return

    ns = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    dense_max = 1_000 if args.quick else 10_000
    assoc_ns = [] if args.quick else [1_000, 10_000]
    rows, notes = [], []
    th = jnp.asarray(THETA)
    try:
        import tinygp  # noqa: F401
        have_tinygp = True
    except ImportError:
        have_tinygp = False
        notes.append("tinygp not installed: pip install tinygp (the bench extra)")

    for kname in args.kernels.split(","):
        nu, kernel = KERNELS[kname]
        ds = f"synthetic-{kname}"
        fns = {
            REF: lambda a, b, c, k=kernel: statespace_gp_nll(a, b, c, kernel=k),
            "probkit-kalman-scan": lambda a, b, c, v=nu: probkit_nll(a, b, c, nu=v),
            "probkit-kalman-assoc": lambda a, b, c, v=nu: probkit_nll(a, b, c, True, nu=v),
            "jax-dense-cholesky": lambda a, b, c, k=kernel: dense_nll(a, b, c, kernel=k),
        }
        if have_tinygp:
            fns["tinygp-quasisep"] = lambda a, b, c, k=kname: tinygp_nll(a, b, c, name=k)
        for n in ns:
            t, y = make_data(n)
            compiled, firsts = {}, {}
            for name, fn in fns.items():
                if (name == "jax-dense-cholesky" and n > dense_max) or (
                        name == "probkit-kalman-assoc" and n not in assoc_ns):
                    continue
                t0 = time.perf_counter()
                compiled[name] = jax.jit(jax.value_and_grad(fn)).lower(th, t, y).compile()
                firsts[name] = time.perf_counter() - t0
            slow = {k: compiled.pop(k) for k in list(compiled)
                    if k == "jax-dense-cholesky" and n > 1000}
            res = interleaved(compiled, (th, t, y), repeats_for(n))
            res.update(interleaved(slow, (th, t, y), 1))
            for name, (sec, cpu, val) in res.items():
                print(f"{kname} {name:24s} n={n:>8d}  median {sec * 1e3:10.2f} ms  "
                      f"cpu {cpu * 1e3:10.2f} ms  (compile {firsts[name]:6.2f} s)  "
                      f"nll={val:.6f}", flush=True)
                rows.append(row(ds, name, f"n={n}", "seconds", sec, seconds=firsts[name]))
                rows.append(row(ds, name, f"n={n}", "cpu_seconds", cpu))
                rows.append(row(ds, name, f"n={n}", "nll", val))
            if kname == "matern32":
                smooth = jax.jit(probkit_smooth)
                s2, first, _ = bench(smooth, (th, t, y), repeats_for(n))
                print(f"{'probkit smoother':24s} n={n:>8d}  {s2 * 1e3:10.2f} ms", flush=True)
                rows.append(row(ds, "probkit-kalman-scan", f"n={n}", "seconds_smoother", s2,
                                seconds=first))

    if args.dynamax_python and Path(args.dynamax_python).exists():
        ds = "synthetic-matern32"
        cmd = [args.dynamax_python, __file__, "--dynamax-worker", ",".join(map(str, ns))]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                n = d["n"]
                print(f"{'dynamax-lgssm-filter':24s} n={n:>8d}  {d['seconds'] * 1e3:10.2f} ms  "
                      f"cpu {d['cpu_seconds'] * 1e3:10.2f} ms  nll={d['nll']:.6f}  "
                      f"smoother {d['seconds_smoother'] * 1e3:.2f} ms")
                rows.append(row(ds, "dynamax-lgssm-filter", f"n={n}", "seconds", d["seconds"],
                                seconds=d["first"]))
                rows.append(row(ds, "dynamax-lgssm-filter", f"n={n}", "cpu_seconds",
                                d["cpu_seconds"]))
                rows.append(row(ds, "dynamax-lgssm-filter", f"n={n}", "nll", d["nll"]))
                rows.append(row(ds, "dynamax-lgssm-smoother", f"n={n}", "seconds_smoother",
                                d["seconds_smoother"]))
        if proc.returncode != 0:
            notes.append("dynamax worker failed: " + proc.stderr[-500:])
    else:
        notes.append("dynamax skipped: needs tfp-nightly and fastprogress<1.1; install it in a "
                     "separate venv and pass --dynamax-python")

    rows += summarise(rows)
    for note in notes:
        print("note:", note)
    write_results("statespace", rows, quick=args.quick, notes=notes)


if __name__ == "__main__":
    main()
