"""State-space GP: log marginal likelihood + gradient in O(n) vs dense Cholesky, tinygp, dynamax.

Data: a Matern-3/2 GP regression problem on n irregular, sorted inputs (exponential gaps),
float64. For every method we time ``jax.value_and_grad`` of the negative log marginal
likelihood with respect to (log lengthscale, log variance, log noise), jitted once; the time
is the best of a few repeats after compilation (2 shared cores: the best is the least noisy).

Methods
-------
* ``probkit-kalman-scan``: :func:`probkit.inference.kalman.log_marginal_likelihood` on
  :func:`probkit.statespace.to_lgssm` (sequential ``lax.scan``).
* ``probkit-kalman-assoc``: the same with ``parallel=True`` (``lax.associative_scan``; on a CPU
  it is slower, it pays off on accelerators), n <= 1e4 only.
* ``jax-dense-cholesky``: the dense GP, O(n^3), n <= 1e4.
* ``tinygp-quasisep``: tinygp's quasiseparable Matern-3/2 GP (``pip install tinygp``).
* ``dynamax-lgssm-filter``: dynamax 1.0.3's Kalman filter on the same discretised model, run in
  a separate virtual environment (it needs tfp-nightly), given by ``--dynamax-python``.
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

from probkit.inference.kalman import (  # noqa: E402
    log_marginal_likelihood,
    rts_smoother,
)
from probkit.kernels import Matern32  # noqa: E402
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


def probkit_nll(theta, t, y, parallel=False):
    ls, var, noise = jnp.exp(theta)
    params = to_lgssm(matern_sde(1.5, ls, var), t, noise, validate=False)
    return -log_marginal_likelihood(params, y, parallel=parallel)


def probkit_smooth(theta, t, y):
    ls, var, noise = jnp.exp(theta)
    res = rts_smoother(to_lgssm(matern_sde(1.5, ls, var), t, noise, validate=False), y)
    return res.smoothed_mean[:, 0], res.smoothed_cov[:, 0, 0]


def dense_nll(theta, t, y):
    ls, var, noise = jnp.exp(theta)
    n = t.shape[0]
    K = Matern32(ls, var)(t[:, None], t[:, None]) + noise * jnp.eye(n)
    L = jnp.linalg.cholesky(K)
    a = jax.scipy.linalg.solve_triangular(L, y, lower=True)
    return 0.5 * a @ a + jnp.sum(jnp.log(jnp.diagonal(L))) + 0.5 * n * math.log(2 * math.pi)


def tinygp_nll(theta, t, y):
    from tinygp import GaussianProcess
    from tinygp.kernels.quasisep import Matern32 as QSMatern32

    ls, var, noise = jnp.exp(theta)
    gp = GaussianProcess(QSMatern32(scale=ls, sigma=jnp.sqrt(var)), t, diag=noise)
    return -gp.log_probability(y)


def repeats_for(n):
    return 10 if n <= 10_000 else (3 if n <= 100_000 else 2)


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


def summarise(rows: list[dict]) -> list[dict]:
    """Derived rows: agreement with probkit's value, t(10n)/t(n) (wall and CPU), speed-ups."""
    get = {(r["method"], int(r["setting"][2:]), r["metric"]): r["value"] for r in rows
           if r["setting"].startswith("n=")}
    ds = rows[0]["dataset"]
    ns = sorted({n for (_, n, _) in get})
    out = []
    for (name, n, metric), v in get.items():
        if metric == "nll" and name != "probkit-kalman-scan" and ("probkit-kalman-scan", n,
                                                                   "nll") in get:
            out.append(row(ds, name, f"n={n}", "abs_nll_diff_vs_probkit",
                           abs(v - get["probkit-kalman-scan", n, "nll"])))
    for name in ("probkit-kalman-scan", "tinygp-quasisep", "dynamax-lgssm-filter"):
        for metric, label in (("seconds", "time_ratio_10n_over_n"),
                              ("cpu_seconds", "cpu_time_ratio_10n_over_n")):
            for n in ns:
                if (name, n, metric) in get and (name, 10 * n, metric) in get:
                    r = get[name, 10 * n, metric] / get[name, n, metric]
                    out.append(row(ds, name, f"n={10 * n}", label, r))
                    print(f"{name}: {metric} t({10 * n})/t({n}) = {r:.2f}")
    for base in ("jax-dense-cholesky", "tinygp-quasisep", "dynamax-lgssm-filter"):
        short = base.split("-")[1] if base.startswith("jax") else base.split("-")[0]
        for metric, label in (("seconds", f"speedup_vs_{short}"),
                              ("cpu_seconds", f"cpu_speedup_vs_{short}")):
            for n in ns:
                if (base, n, metric) in get and ("probkit-kalman-scan", n, metric) in get:
                    r = get[base, n, metric] / get["probkit-kalman-scan", n, metric]
                    out.append(row(ds, "probkit-kalman-scan", f"n={n}", label, r))
                    print(f"probkit vs {base} at n={n} ({metric}): {r:.2f}x")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1e3, 1e4 only (< 2 min)")
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
    ds = "synthetic-matern32"
    th = jnp.asarray(THETA)

    methods = {
        "probkit-kalman-scan": jax.jit(jax.value_and_grad(probkit_nll)),
        "probkit-kalman-assoc": jax.jit(jax.value_and_grad(
            lambda a, b, c: probkit_nll(a, b, c, parallel=True))),
        "jax-dense-cholesky": jax.jit(jax.value_and_grad(dense_nll)),
    }
    try:
        import tinygp  # noqa: F401

        methods["tinygp-quasisep"] = jax.jit(jax.value_and_grad(tinygp_nll))
    except ImportError:
        notes.append("tinygp not installed: pip install tinygp (the bench extra)")
    smooth = jax.jit(probkit_smooth)

    for n in ns:
        t, y = make_data(n)
        for name, fn in methods.items():
            if name == "jax-dense-cholesky" and n > dense_max:
                continue
            if name == "probkit-kalman-assoc" and n not in assoc_ns:
                continue
            if "dense" in name and n > 1000:  # one timed call after an ahead-of-time compile
                t0 = time.perf_counter()
                compiled = fn.lower(th, t, y).compile()
                first = time.perf_counter() - t0
                t0, c0 = time.perf_counter(), time.process_time()
                val, grad = jax.block_until_ready(compiled(th, t, y))
                s = time.perf_counter() - t0
                CPU_TIMES[id(fn)] = time.process_time() - c0
            else:
                s, first, (val, grad) = bench(fn, (th, t, y), repeats_for(n))
            cpu = CPU_TIMES[id(fn)]
            print(f"{name:24s} n={n:>8d}  {s * 1e3:10.2f} ms  cpu {cpu * 1e3:10.2f} ms  "
                  f"(first call {first:6.2f} s)  nll={float(val):.6f}", flush=True)
            rows.append(row(ds, name, f"n={n}", "seconds", s, seconds=first))
            rows.append(row(ds, name, f"n={n}", "cpu_seconds", cpu))
            rows.append(row(ds, name, f"n={n}", "nll", float(val)))
        s, first, _ = bench(smooth, (th, t, y), repeats_for(n))
        print(f"{'probkit smoother':24s} n={n:>8d}  {s * 1e3:10.2f} ms", flush=True)
        rows.append(row(ds, "probkit-kalman-scan", f"n={n}", "seconds_smoother", s, seconds=first))

    if args.dynamax_python and Path(args.dynamax_python).exists():
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
                     "separate venv and pass --dynamax-python (see .notes/bench_statespace.md)")

    rows += summarise(rows)
    for note in notes:
        print("note:", note)
    write_results("statespace", rows, quick=args.quick, notes=notes)


if __name__ == "__main__":
    main()
