"""Where the time of the Matern-5/2 state-space GP value + gradient goes, and its floor (issue 16).

Issue 16 asks for ``StateSpaceGP(Matern52(ls, var), t, noise).log_prob(y)`` value + gradient
(with respect to log lengthscale, log variance, log noise; float64; jitted, compiled ahead
of time) at n = 1e6 in <= 1 s on a CPU, or the measured floor and why. This script splits
that time into its parts and times the cheapest XLA scan doing the same recursion:

* ``full``: the user-facing value + gradient (as ``benchmarks/statespace.py``); also with the
  filter scans unrolled 1, 4 (the default), 8 and 16 steps per iteration
  (``probkit.inference.kalman.UNROLL``).
* ``value``: the log-likelihood alone (no gradient).
* ``disc``: the discretisation alone (``A_t``, ``Q_t`` of every step, returned as arrays),
  its value and with its forward tangents along the 3 hyperparameter directions.
* ``filter``: probkit's Kalman filter scan alone on precomputed ``A_t``, ``Q_t`` (value, and
  with the 3 tangents, the tangents of ``A_t``, ``Q_t`` precomputed too), unrolled 1, 4, 8, 16.
* Floor candidates, checked against probkit's filter on the same ``A_t``, ``Q_t``:
  ``scalar step``: a minimal hand-written scalar-observation Kalman step in a plain
  ``lax.scan``, the carry 3 + 6 scalars (mean, symmetric covariance), one packed input row
  (``A`` 9, ``Q`` 6 unique, ``y``) per step, the log-likelihood summed in the carry; value, and
  with the 3 tangents by ``jax.jvp`` vmapped over the directions (as probkit does); unrolled 1
  and 4 (8 takes 30 s to compile at n = 1e4, 16 minutes). ``batched tangents``: the value and
  the 3 tangents written out by hand as one batch of 4 covariance matrices per step (no
  ``jvp``), unrolled 1, 4, 8.
* ``overhead``: a scan of n steps with a 1-scalar carry (the loop cost alone).
* Flop floor: XLA's flop count of one step of the ``scalar step`` (``cost_analysis`` of the step,
  value and with tangents) times n, divided by the GFLOP/s of a jitted 1024 x 1024 float64
  matmul (the machine's vectorised peak: a lower bound no sequential recursion reaches).

Every method is compiled ahead of time; each repeat calls every method once in turn
(interleaved); the median of the repeats is reported (2 shared cores).

Usage::

    python benchmarks/statespace_floor.py [--n 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script, not a library: global float64 is fine

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402
from statespace import THETA, make_data, statespace_gp_nll  # noqa: E402

import probkit.inference.kalman as kalman  # noqa: E402
from probkit.kernels import Matern52  # noqa: E402
from probkit.statespace import LGSSM, discretise, matern_sde  # noqa: E402

BASIS = jnp.eye(3)
UNROLLS = (1, 4, 8, 16)
SCALAR_UNROLLS = (1, 4)  # 8: 30 s to compile at n = 1e4, 16: minutes
BATCHED_UNROLLS = (1, 4, 8)
_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # packed symmetric entries


# ----------------------------------------------------------------------------- probkit's parts


def full_nll(theta, t, y):
    return statespace_gp_nll(theta, t, y, kernel=Matern52)


def disc(theta, t):
    ls, var, _ = jnp.exp(theta)
    return discretise(matern_sde(2.5, ls, var), t, validate=False)


def disc_tangents(theta, t):
    """A, Q and their tangents along the 3 basis directions, shapes (3, n, 3, 3)."""
    return jax.vmap(lambda e: jax.jvp(lambda th: disc(th, t), (theta,), (e,)),
                    out_axes=(None, 0))(BASIS)


def filter_ll(theta, y, A, Q):
    """probkit's Kalman filter on given A, Q (Pinf and the noise from theta)."""
    ls, var, noise = jnp.exp(theta)
    sde = matern_sde(2.5, ls, var)
    params = LGSSM(jnp.zeros(3), sde.Pinf, A, Q, sde.H, jnp.reshape(noise, (1, 1)))
    return kalman.kalman_filter(params, y[:, None], validate=False).log_likelihood


def filter_tangents(theta, y, A, Q, dA, dQ):
    return jax.vmap(lambda e, a, q: jax.jvp(lambda th, A_, Q_: filter_ll(th, y, A_, Q_),
                                            (theta, A, Q), (e, a, q)),
                    out_axes=(None, 0))(BASIS, dA, dQ)


# ----------------------------------------------------------------------------- the floor


def pack(A, Q, y):
    """One row per step: A (9), the upper triangle of Q (6), y."""
    q = jnp.stack([Q[:, i, j] for i, j in _UPPER], -1)
    return jnp.concatenate([A.reshape(A.shape[0], 9), q, y[:, None]], -1)


def _floor_step(r, carry, x):
    m0, m1, m2, p00, p01, p02, p11, p12, p22, ll = carry
    a = [x[i] for i in range(9)]
    q00, q01, q02, q11, q12, q22 = (x[9 + i] for i in range(6))
    y = x[15]
    P = ((p00, p01, p02), (p01, p11, p12), (p02, p12, p22))
    A = ((a[0], a[1], a[2]), (a[3], a[4], a[5]), (a[6], a[7], a[8]))
    n = [A[i][0] * m0 + A[i][1] * m1 + A[i][2] * m2 for i in range(3)]
    B = [[A[i][0] * P[0][j] + A[i][1] * P[1][j] + A[i][2] * P[2][j] for j in range(3)]
         for i in range(3)]
    Qm = {(0, 0): q00, (0, 1): q01, (0, 2): q02, (1, 1): q11, (1, 2): q12, (2, 2): q22}
    Pp = {(i, j): B[i][0] * A[j][0] + B[i][1] * A[j][1] + B[i][2] * A[j][2] + Qm[i, j]
          for i, j in _UPPER}
    S = Pp[0, 0] + r
    k = (Pp[0, 0] / S, Pp[0, 1] / S, Pp[0, 2] / S)
    v = y - n[0]
    ll = ll - 0.5 * (jnp.log(2.0 * jnp.pi) + jnp.log(S) + v * v / S)
    m = [n[i] + k[i] * v for i in range(3)]
    Pn = [Pp[i, j] - S * k[i] * k[j] for i, j in _UPPER]
    return (*m, *Pn, ll), None


def floor_ll(theta, X, unroll):
    ls, var, noise = jnp.exp(theta)
    Pinf = matern_sde(2.5, ls, var).Pinf
    z = jnp.zeros((), X.dtype)
    init = (z, z, z, *[Pinf[i, j] for i, j in _UPPER], z)
    out, _ = lax.scan(lambda c, x: _floor_step(noise, c, x), init, X, unroll=unroll)
    return out[-1]


def floor_tangents(theta, X, dX, unroll):
    return jax.vmap(lambda e, dx: jax.jvp(lambda th, X_: floor_ll(th, X_, unroll),
                                          (theta, X), (e, dx)),
                    out_axes=(None, 0))(BASIS, dX)


def _mm(a, b):
    """Batched small matmul as an elementwise sum (as probkit's kalman_steps._mm)."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def batched_tangents(theta, y, AA, QQ, unroll):
    """Value + 3 tangents of the filter written by hand as one batch of 4 (no ``jvp``).

    ``AA``, ``QQ``: shape (n, 4, 3, 3), entry 0 the value (``A_t``, ``Q_t``), 1..3 the
    tangents. Predict: ``P^-_k = A P_k A' + V_k + V_k' + Q_k`` with ``V_k = dA_k (A P_0)'``;
    update (``H = e_1``): the derivatives of ``S``, ``K = P^- h / S``, ``m``, ``P - S K K'``.
    """
    def f(th):
        ls, var, noise = jnp.exp(th)
        return matern_sde(2.5, ls, var).Pinf, noise

    (Pinf, r), (dPinf, dr) = jax.vmap(lambda e: jax.jvp(f, (theta,), (e,)),
                                      out_axes=(None, 0))(BASIS)
    rr = jnp.concatenate([r[None], dr])
    sel = jnp.array([0.0, 1.0, 1.0, 1.0])  # 1 on the tangents

    def step(c, x):
        m, P, ll = c
        Ab, Qb, yt = x
        A0 = Ab[0]
        W = _mm(A0, P[0])
        mp = (jnp.sum(A0 * m[:, None, :], -1)
              + sel[:, None] * jnp.sum(Ab * m[0][None, None, :], -1))
        U = _mm(_mm(A0[None], P), A0.T[None])
        V = _mm(Ab * sel[:, None, None], W.T[None])
        Pp = U + V + jnp.swapaxes(V, -1, -2) + Qb
        S = Pp[:, 0, 0] + rr  # S, dS_k
        S0 = S[0]
        K0 = Pp[0, :, 0] / S0
        K = (Pp[:, :, 0] - sel[:, None] * K0[None] * S[:, None]) / S0  # K, dK_k
        v = jnp.concatenate([(yt - mp[0, 0])[None], -mp[1:, 0]])  # v, dv_k
        v0 = v[0]
        dll = jnp.concatenate([(jnp.log(S0) + v0 * v0 / S0)[None],
                               S[1:] / S0 + 2 * v0 * v[1:] / S0 - v0 * v0 * S[1:] / S0**2])
        mn = mp + K * v0 + sel[:, None] * K0[None] * v[:, None]
        KK = K0[:, None] * K0[None, :]
        dKK = K[:, :, None] * K0[None, None, :]
        Pn = Pp - S0 * KK[None] * (1 - sel[:, None, None]) - sel[:, None, None] * (
            S[:, None, None] * KK[None] + S0 * (dKK + jnp.swapaxes(dKK, -1, -2)))
        return (mn, Pn, ll - 0.5 * dll), None

    ll0 = jnp.zeros(4, y.dtype).at[0].set(-0.5 * jnp.log(2 * jnp.pi) * y.shape[0])
    init = (jnp.zeros((4, 3), y.dtype), jnp.concatenate([Pinf[None], dPinf], 0), ll0)
    (_, _, ll), _ = lax.scan(step, init, (AA, QQ, y), unroll=unroll)
    return ll[0], ll[1:]


def overhead(X, unroll):
    out, _ = lax.scan(lambda c, x: (c + x[15], None), jnp.zeros((), X.dtype), X, unroll=unroll)
    return out


def step_flops(theta, X, dX):
    """XLA's flop count of one step of the floor scan: value, and with the 3 tangents."""
    ls, var, noise = jnp.exp(theta)
    c0 = tuple(jnp.asarray(0.1 + 0.01 * i) for i in range(10))

    def one(c, x):
        return _floor_step(noise, c, x)[0]

    def with_tangents(c, dc, x, dx):
        return jax.vmap(lambda a, b: jax.jvp(one, (c, x), (a, b)), out_axes=(None, 0))(dc, dx)

    dc = tuple(jnp.ones(3) for _ in range(10))
    f1 = jax.jit(one).lower(c0, X[1]).compile().cost_analysis()
    f2 = jax.jit(with_tangents).lower(c0, dc, X[1], dX[:, 1]).compile().cost_analysis()
    f1, f2 = (f[0] if isinstance(f, list) else f for f in (f1, f2))
    return float(f1["flops"]), float(f2["flops"])


def matmul_gflops(repeats=5):
    a = jnp.asarray(np.random.default_rng(1).normal(size=(1024, 1024)))
    mm = jax.jit(lambda a: a @ a).lower(a).compile()
    jax.block_until_ready(mm(a))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best / 1e9


# ----------------------------------------------------------------------------- driver


def interleaved(methods: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of each ``(compiled, args)``, calls interleaved."""
    times = {k: [] for k in methods}
    cpus = {k: [] for k in methods}
    outs = {}
    for _ in range(repeats):
        for name, (fn, args) in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    return {k: (float(np.median(times[k])), float(np.median(cpus[k])), outs[k]) for k in methods}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (>= 3)")
    args = ap.parse_args()
    n, repeats = args.n, max(3, args.repeats)
    th = jnp.asarray(THETA)
    t, y = make_data(n)

    # Precomputed inputs of the filter-only and floor methods.
    (A, Q), (dA, dQ) = jax.jit(disc_tangents)(th, t)
    X = jax.jit(pack)(A, Q, y)
    dX = jax.jit(jax.vmap(lambda a, q: pack(a, q, jnp.zeros_like(y))))(dA, dQ)

    AA = jnp.concatenate([A[:, None], jnp.moveaxis(dA, 0, 1)], 1)
    QQ = jnp.concatenate([Q[:, None], jnp.moveaxis(dQ, 0, 1)], 1)

    default_unroll = kalman.UNROLL

    def with_unroll(fn, u):
        """``fn`` traced with probkit's scans unrolled ``u`` steps per iteration."""
        def traced(*a):
            kalman.UNROLL = u
            try:
                return fn(*a)
            finally:
                kalman.UNROLL = default_unroll
        return traced

    builders = {}
    for u in UNROLLS:
        builders[f"full (unroll {u})"] = (with_unroll(jax.value_and_grad(full_nll), u),
                                          (th, t, y))
    builders["value"] = (full_nll, (th, t, y))
    builders["disc value"] = (disc, (th, t))
    builders["disc + tangents"] = (disc_tangents, (th, t))
    for u in UNROLLS:
        builders[f"filter value (unroll {u})"] = (with_unroll(filter_ll, u), (th, y, A, Q))
        builders[f"filter + tangents (unroll {u})"] = (with_unroll(filter_tangents, u),
                                                       (th, y, A, Q, dA, dQ))
    for u in SCALAR_UNROLLS:
        builders[f"scalar step value (unroll {u})"] = (
            lambda th_, X_, u=u: floor_ll(th_, X_, u), (th, X))
        builders[f"scalar step + tangents (unroll {u})"] = (
            lambda th_, X_, dX_, u=u: floor_tangents(th_, X_, dX_, u), (th, X, dX))
    for u in BATCHED_UNROLLS:
        builders[f"batched tangents (unroll {u})"] = (
            lambda th_, y_, a_, q_, u=u: batched_tangents(th_, y_, a_, q_, u), (th, y, AA, QQ))
    for u in (1, 8):
        builders[f"loop overhead (unroll {u})"] = (lambda X_, u=u: overhead(X_, u), (X,))

    compiled, compile_s = {}, {}
    for name, (fn, fargs) in builders.items():
        t0 = time.perf_counter()
        compiled[name] = (jax.jit(fn).lower(*fargs).compile(), fargs)
        compile_s[name] = time.perf_counter() - t0
        print(f"compiled {name} in {compile_s[name]:.1f} s", flush=True)
    res = interleaved(compiled, repeats)

    # Agreement (absolute): full path, probkit's filter on given A, Q, the hand-written steps.
    ll_ref, g_ref = res[f"filter + tangents (unroll {default_unroll})"][2]
    nll_full, g_full = res[f"full (unroll {default_unroll})"][2]
    checks = {"|ll| (scale)": abs(float(ll_ref)),
              "filter value vs full": abs(float(ll_ref) + float(nll_full)),
              "filter grad vs full (max abs)": float(jnp.max(jnp.abs(g_ref + g_full)))}
    for name, (_, _, out) in res.items():
        if name.startswith(("full", "filter + tangents", "scalar step +", "batched")):
            ll, g = out
            sign = -1.0 if name.startswith("full") else 1.0
            checks[f"{name}: value"] = abs(sign * float(ll) - float(ll_ref))
            checks[f"{name}: grad (max abs)"] = float(jnp.max(jnp.abs(sign * g - g_ref)))
        elif name.startswith(("filter value", "scalar step value", "value")):
            sign = -1.0 if name == "value" else 1.0
            checks[f"{name}: value"] = abs(sign * float(out) - float(ll_ref))

    rows = []
    ds = "synthetic-matern52"
    print(f"n = {n}, median of {repeats} interleaved repeats")
    for name, (sec, cpu, _) in res.items():
        print(f"{name:32s} {sec * 1e3:10.1f} ms  cpu {cpu * 1e3:10.1f} ms  "
              f"(compile {compile_s[name]:6.2f} s)  {sec / n * 1e9:7.0f} ns/step", flush=True)
        method = (f"probkit-{name}" if name.startswith(("full", "value", "disc", "filter"))
                  else name)
        rows.append(row(ds, method, f"n={n}", "seconds", sec, seconds=compile_s[name]))
        rows.append(row(ds, method, f"n={n}", "cpu_seconds", cpu))
    for k, v in checks.items():
        print(f"check {k}: {v:.3g}")
        rows.append(row(ds, "check", f"n={n}", k, v))

    f_val, f_tan = step_flops(th, X, dX)
    gflops = matmul_gflops()
    for label, f in (("value", f_val), ("value + 3 tangents", f_tan)):
        floor_s = f * n / (gflops * 1e9)
        print(f"flops/step of the floor step ({label}): {f:.0f};  x n / {gflops:.1f} GFLOP/s "
              f"(1024^2 f64 matmul) = {floor_s * 1e3:.1f} ms")
        rows.append(row(ds, f"floor {label}", f"n={n}", "flops_per_step", f))
        rows.append(row(ds, f"floor {label}", f"n={n}", "flop_floor_seconds_at_matmul_rate",
                        floor_s))
    rows.append(row(ds, "jax-matmul-1024-f64", "", "gflops", gflops))
    write_results("statespace_floor", rows, n=n, repeats=repeats,
                  jax_version=jax.__version__, checks=checks)


if __name__ == "__main__":
    main()
