r"""Gaussian message passing: Kalman filter, RTS smoother (sequential and parallel in time), EP.

This module is the one home of the Kalman filter in probkit: the state-space GP
distribution, the functional Tucker model and the discriminative Kalman filter all call it.

Model (a linear-Gaussian state-space model, :class:`LGSSM`)
-----------------------------------------------------------
.. math::

    z_{-1} \sim \mathcal N(\mu_0, \Sigma_0), \qquad
    z_t = A_t z_{t-1} + q_t,\; q_t \sim \mathcal N(0, Q_t), \qquad
    y_t = H_t z_t + r_t,\; r_t \sim \mathcal N(0, R_t), \qquad t = 0, \dots, T-1.

``initial_mean``/``initial_cov`` describe the state *before* the first step: every step,
the first included, predicts and then updates.  For a state-space GP with stationary
covariance :math:`P_\infty` take the initial state ``(0, Pinf)`` and ``dt_0 = 0`` so that
:math:`A_0 = I`, :math:`Q_0 = 0` (see :func:`probkit.statespace.to_lgssm`).  A row of
``emissions`` holding any NaN skips the update at that step (the state passes through
predicted; its log-likelihood term is 0).

Parameters may be time-invariant (``A: (D, D)``) or time-varying (``A: (T, D, D)``), each
independently.  All low-level functions are pure and jittable; shape errors are raised
(from static shapes) as :class:`ValueError` naming the argument.  Batches of independent
series: pass ``emissions`` of shape ``(B, T, P)`` (parameters shared), or
``jax.vmap(kalman_filter, in_axes=(LGSSM(0, 0, None, None, None, None), 0))`` etc. for
batched parameters.

Algorithms
----------
* Sequential filter: ``lax.scan`` over predict/update steps; vector observations use
  Cholesky solves of the innovation covariance and the Joseph-form covariance update
  (symmetrised); scalar observations (P = 1, the state-space GP case) use the symmetric form
  :math:`P - S K K^\top` written elementwise, so no LAPACK call sits inside the loop (this
  gives parity with tinygp's quasiseparable solver for value + gradient).
* Sequential smoother: Rauch-Tung-Striebel backward ``lax.scan``.
* Parallel filter/smoother (``parallel=True``): ``lax.associative_scan`` over the elements of
  Särkkä & García-Fernández, "Temporal parallelization of Bayesian smoothers",
  IEEE TAC 66(1), 2021 (Lemmas 7-10); :math:`O(\log T)` depth, pays off on accelerators.
  Both agree to ~1e-12 in float64.
* Expectation propagation on a state-space GP with a non-Gaussian likelihood
  (Wilkinson et al., "State Space Expectation Propagation", ICML 2020).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.message_passing import LGSSM, kalman_filter, rts_smoother
>>> params = LGSSM(jnp.zeros(1), jnp.eye(1), 0.9 * jnp.eye(1), 0.1 * jnp.eye(1),
...                jnp.eye(1), 0.5 * jnp.eye(1))
>>> y = jnp.array([[0.3], [jnp.nan], [-0.2], [0.1]])
>>> kalman_filter(params, y).filtered_mean.shape
(4, 1)
>>> bool(jnp.allclose(rts_smoother(params, y).smoothed_mean,
...                   rts_smoother(params, y, parallel=True).smoothed_mean, atol=1e-5))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.scipy.linalg import cho_solve

from probkit.statespace import LGSSM

__all__ = [
    "LGSSM",
    "FilterResult",
    "SmootherResult",
    "kalman_filter",
    "rts_smoother",
    "log_marginal_likelihood",
    "GPPosterior",
    "gp_posterior",
    "EPResult",
    "ep_statespace_gp",
]

_LOG2PI = math.log(2.0 * math.pi)


class FilterResult(NamedTuple):
    """Output of :func:`kalman_filter`.

    Attributes
    ----------
    log_likelihood : Array, scalar
        :math:`\\log p(y_{0:T-1})` (sum of ``log_likelihood_steps``).
    log_likelihood_steps : Array, shape (T,)
        :math:`\\log p(y_t \\mid y_{0:t-1})`, 0 where the row is missing.
    filtered_mean, filtered_cov : Array, shapes (T, D), (T, D, D)
        Moments of :math:`p(z_t \\mid y_{0:t})`.
    predicted_mean, predicted_cov : Array, shapes (T, D), (T, D, D)
        Moments of :math:`p(z_t \\mid y_{0:t-1})`.
    """

    log_likelihood: Array
    log_likelihood_steps: Array
    filtered_mean: Array
    filtered_cov: Array
    predicted_mean: Array
    predicted_cov: Array


class SmootherResult(NamedTuple):
    """Output of :func:`rts_smoother`: the filter's output plus smoothed moments.

    Attributes
    ----------
    smoothed_mean, smoothed_cov : Array, shapes (T, D), (T, D, D)
        Moments of :math:`p(z_t \\mid y_{0:T-1})`.
    smoothed_cross_cov : Array, shape (T - 1, D, D)
        Entry ``t`` is :math:`\\mathrm{Cov}(z_t, z_{t+1} \\mid y_{0:T-1})`.
    """

    log_likelihood: Array
    log_likelihood_steps: Array
    filtered_mean: Array
    filtered_cov: Array
    predicted_mean: Array
    predicted_cov: Array
    smoothed_mean: Array
    smoothed_cov: Array
    smoothed_cross_cov: Array


# ----------------------------------------------------------------------------- helpers


def _sym(m: Array) -> Array:
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def _check_params(params: LGSSM, emissions: Array) -> tuple[LGSSM, Array, Array]:
    """Static shape checks; returns params broadcast to (T, ...), emissions (T, P), mask (T,)."""
    if not isinstance(params, LGSSM):
        raise ValueError(f"params: expected an LGSSM, got {type(params).__name__}")
    emissions = jnp.asarray(emissions)
    if emissions.ndim == 1:
        emissions = emissions[:, None]
    if emissions.ndim != 2:
        raise ValueError(f"emissions: expected shape (T, P) (or (B, T, P) for a batch), "
                         f"got {emissions.shape}")
    T, P = emissions.shape
    if T < 1:
        raise ValueError("emissions: need at least one time step, got T = 0")
    m0 = jnp.asarray(params.initial_mean)
    if m0.ndim != 1:
        raise ValueError(f"params.initial_mean: expected shape (D,), got {m0.shape}")
    D = m0.shape[0]
    expected = {
        "initial_cov": (D, D),
        "transition_matrix": (D, D),
        "transition_cov": (D, D),
        "emission_matrix": (P, D),
        "emission_cov": (P, P),
    }
    out = {"initial_mean": m0}
    for name, shp in expected.items():
        x = jnp.asarray(getattr(params, name))
        if name == "initial_cov":
            ok = x.shape == shp
        else:
            ok = x.shape == shp or x.shape == (T, *shp)
        if not ok:
            allowed = f"{shp}" if name == "initial_cov" else f"{shp} or {(T, *shp)}"
            raise ValueError(f"params.{name}: expected shape {allowed} "
                             f"(D = {D} from initial_mean, T, P = {T}, {P} from emissions), "
                             f"got {x.shape}")
        out[name] = x
    dtype = jnp.result_type(*out.values(), emissions)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    out = {k: v.astype(dtype) for k, v in out.items()}
    emissions = emissions.astype(dtype)
    mask = jnp.all(~jnp.isnan(emissions), axis=-1)
    return LGSSM(**out), emissions, mask


def _at(x: Array, t, base_ndim: int) -> Array:
    """Entry t of a possibly time-varying parameter."""
    return x[t] if x.ndim > base_ndim else x


def _steps(x: Array, T: int, base_ndim: int) -> Array:
    """Broadcast a parameter to a leading time axis of length T."""
    return x if x.ndim > base_ndim else jnp.broadcast_to(x, (T, *x.shape))


_SMALL = 8  # state/observation sizes up to which products are written elementwise


def _mm(a: Array, b: Array) -> Array:
    """``a @ b``; for small matrices as a fused elementwise sum (no BLAS call per scan step)."""
    if max(a.shape[-2], a.shape[-1], b.shape[-1]) <= _SMALL:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    return a @ b


def _mv(a: Array, v: Array) -> Array:
    """``a @ v`` for a matrix and a vector (elementwise when small)."""
    if max(a.shape[-2], a.shape[-1]) <= _SMALL:
        return jnp.sum(a * v[..., None, :], axis=-1)
    return a @ v


def _predict(m: Array, P: Array, A: Array, Q: Array) -> tuple[Array, Array]:
    return _mv(A, m), _sym(_mm(_mm(A, P), A.T) + Q)


def _update_scalar(m: Array, P: Array, h: Array, r: Array, y: Array, observed: Array):
    """Update with one scalar observation ``y = h'z + N(0, r)``, without LAPACK calls.

    ``P - S K K'`` is symmetric by construction and equals the Joseph form for the optimal
    gain; it costs 30% less than the Joseph form in the gradient (measured, 2-core CPU).
    """
    y0 = jnp.where(observed, y, 0.0)
    Ph = _mv(P, h)
    S = jnp.sum(h * Ph) + r
    K = Ph / S
    v = y0 - jnp.sum(h * m)
    ll = -0.5 * (_LOG2PI + jnp.log(S) + v * v / S)
    m_new = m + K * v
    P_new = P - S * K[:, None] * K[None, :]
    return (jnp.where(observed, m_new, m), jnp.where(observed, P_new, P),
            jnp.where(observed, ll, 0.0))


def _update(m: Array, P: Array, H: Array, R: Array, y: Array, observed: Array):
    """Cholesky/Joseph-form update; returns (m, P, loglik), passes through where unobserved."""
    y0 = jnp.where(observed, y, 0.0)
    S = _sym(H @ P @ H.T + R)
    chol = jnp.linalg.cholesky(S)
    PHt = P @ H.T
    K = cho_solve((chol, True), PHt.T).T  # P H' S^-1
    v = y0 - H @ m
    w = jax.scipy.linalg.solve_triangular(chol, v, lower=True)
    ll = -0.5 * (v.shape[0] * _LOG2PI + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))) + w @ w)
    m_new = m + K @ v
    IKH = jnp.eye(P.shape[0], dtype=P.dtype) - K @ H
    P_new = _sym(IKH @ P @ IKH.T + K @ R @ K.T)
    m_out = jnp.where(observed, m_new, m)
    P_out = jnp.where(observed, P_new, P)
    return m_out, P_out, jnp.where(observed, ll, 0.0)


def _loglik_step(m_pred, P_pred, H, R, y, observed):
    return _update(m_pred, P_pred, H, R, y, observed)[2]


# ----------------------------------------------------------------------------- sequential


def _filter_seq(params: LGSSM, emissions: Array, mask: Array) -> FilterResult:
    T, P = emissions.shape
    names = ("transition_matrix", "transition_cov", "emission_matrix", "emission_cov")
    varying = tuple(n for n in names if getattr(params, n).ndim == 3)
    xs = {n: getattr(params, n) for n in varying}

    def step(carry, inp):
        m, Pc = carry
        x, y, obs = inp
        A, Q, H, R = (x[n] if n in x else getattr(params, n) for n in names)
        mp, Pp = _predict(m, Pc, A, Q)
        if P == 1:
            mf, Pf, ll = _update_scalar(mp, Pp, H[0], R[0, 0], y[0], obs)
        else:
            mf, Pf, ll = _update(mp, Pp, H, R, y, obs)
        return (mf, Pf), (ll, mf, Pf, mp, Pp)

    init = (params.initial_mean, _sym(params.initial_cov))
    _, (ll, mf, Pf, mp, Pp) = lax.scan(step, init, (xs, emissions, mask))
    return FilterResult(jnp.sum(ll), ll, mf, Pf, mp, Pp)


def _smoother_gains(params: LGSSM, filt: FilterResult) -> Array:
    """G_t = P_t A_{t+1}' (A_{t+1} P_t A_{t+1}' + Q_{t+1})^{-1}, t = 0..T-2."""
    T = filt.filtered_mean.shape[0]
    A_next = _steps(params.transition_matrix, T, 2)[1:]
    Pf = filt.filtered_cov[:-1]
    Pp_next = filt.predicted_cov[1:]

    def gain(P, A, Pp):
        # Pp symmetric: G = (Pp^-1 A P)'.
        return jnp.linalg.solve(Pp, A @ P).T

    return jax.vmap(gain)(Pf, A_next, Pp_next)


def _smoother_seq(params: LGSSM, filt: FilterResult) -> tuple[Array, Array, Array]:
    T = filt.filtered_mean.shape[0]
    if T == 1:
        D = filt.filtered_mean.shape[1]
        return filt.filtered_mean, filt.filtered_cov, jnp.zeros((0, D, D), filt.filtered_cov.dtype)
    G = _smoother_gains(params, filt)

    def step(carry, inp):
        ms_next, Ps_next = carry
        m, P, mp_next, Pp_next, g = inp
        ms = m + _mv(g, ms_next - mp_next)
        Ps = _sym(P + _mm(_mm(g, Ps_next - Pp_next), g.T))
        cross = _mm(g, Ps_next)  # Cov(z_t, z_{t+1} | y)
        return (ms, Ps), (ms, Ps, cross)

    last = (filt.filtered_mean[-1], filt.filtered_cov[-1])
    inputs = (filt.filtered_mean[:-1], filt.filtered_cov[:-1], filt.predicted_mean[1:],
              filt.predicted_cov[1:], G)
    _, (ms, Ps, cross) = lax.scan(step, last, inputs, reverse=True)
    ms = jnp.concatenate([ms, last[0][None]], 0)
    Ps = jnp.concatenate([Ps, last[1][None]], 0)
    return ms, Ps, cross


# ----------------------------------------------------------------------------- parallel


def _filter_par(params: LGSSM, emissions: Array, mask: Array) -> FilterResult:
    """Särkkä & García-Fernández (2021), Lemmas 7-8, for predict-then-update at every step."""
    T, _ = emissions.shape
    D = params.initial_mean.shape[0]
    dtype = emissions.dtype
    eye = jnp.eye(D, dtype=dtype)
    A = _steps(params.transition_matrix, T, 2)
    Q = _steps(params.transition_cov, T, 2)
    H = _steps(params.emission_matrix, T, 2)
    R = _steps(params.emission_cov, T, 2)

    def generic(A_t, Q_t, H_t, R_t, y, obs):
        y0 = jnp.where(obs, y, 0.0)
        S = _sym(H_t @ Q_t @ H_t.T + R_t)
        chol = jnp.linalg.cholesky(S)
        K = cho_solve((chol, True), H_t @ Q_t).T  # Q H' S^-1
        HF = H_t @ A_t
        Ae = (eye - K @ H_t) @ A_t
        be = K @ y0
        Ce = _sym((eye - K @ H_t) @ Q_t @ (eye - K @ H_t).T + K @ R_t @ K.T)
        eta = HF.T @ cho_solve((chol, True), y0)
        J = _sym(HF.T @ cho_solve((chol, True), HF))
        zero_v = jnp.zeros(D, dtype)
        zero_m = jnp.zeros((D, D), dtype)
        return (jnp.where(obs, Ae, A_t), jnp.where(obs, be, zero_v), jnp.where(obs, Ce, _sym(Q_t)),
                jnp.where(obs, eta, zero_v), jnp.where(obs, J, zero_m))

    elems = jax.vmap(generic)(A, Q, H, R, emissions, mask)
    # First element: exact predict + update from the initial state.
    mp0, Pp0 = _predict(params.initial_mean, _sym(params.initial_cov), A[0], Q[0])
    m0, P0, _ = _update(mp0, Pp0, H[0], R[0], emissions[0], mask[0])
    zero_m = jnp.zeros((D, D), dtype)
    elems = (elems[0].at[0].set(zero_m), elems[1].at[0].set(m0), elems[2].at[0].set(P0),
             elems[3].at[0].set(jnp.zeros(D, dtype)), elems[4].at[0].set(zero_m))

    def combine(ei, ej):
        Ai, bi, Ci, etai, Ji = ei
        Aj, bj, Cj, etaj, Jj = ej
        # C, J symmetric: (I + J_j C_i)^{-1} = ((I + C_i J_j)^{-1})'; one inverse serves both.
        Minv = jnp.linalg.inv(jnp.broadcast_to(eye, Ci.shape) + Ci @ Jj)
        AjM = Aj @ Minv
        A_ij = AjM @ Ai
        b_ij = jnp.einsum("...ij,...j->...i", AjM,
                          bi + jnp.einsum("...ij,...j->...i", Ci, etaj)) + bj
        C_ij = _sym(AjM @ Ci @ jnp.swapaxes(Aj, -1, -2) + Cj)
        AiTN = jnp.swapaxes(Minv @ Ai, -1, -2)  # A_i' (I + J_j C_i)^{-1}
        eta_ij = jnp.einsum("...ij,...j->...i", AiTN,
                            etaj - jnp.einsum("...ij,...j->...i", Jj, bi)) + etai
        J_ij = _sym(AiTN @ Jj @ Ai + Ji)
        return A_ij, b_ij, C_ij, eta_ij, J_ij

    _, mf, Pf, _, _ = lax.associative_scan(combine, elems)
    # Predicted moments and log-likelihood from the filtered ones, in parallel.
    m_prev = jnp.concatenate([params.initial_mean[None], mf[:-1]], 0)
    P_prev = jnp.concatenate([_sym(params.initial_cov)[None], Pf[:-1]], 0)
    mp, Pp = jax.vmap(_predict)(m_prev, P_prev, A, Q)
    ll = jax.vmap(_loglik_step)(mp, Pp, H, R, emissions, mask)
    return FilterResult(jnp.sum(ll), ll, mf, Pf, mp, Pp)


def _smoother_par(params: LGSSM, filt: FilterResult) -> tuple[Array, Array, Array]:
    """Särkkä & García-Fernández (2021), Lemmas 9-10."""
    T, D = filt.filtered_mean.shape
    if T == 1:
        return filt.filtered_mean, filt.filtered_cov, jnp.zeros((0, D, D), filt.filtered_cov.dtype)
    dtype = filt.filtered_mean.dtype
    G = _smoother_gains(params, filt)
    A_next = _steps(params.transition_matrix, T, 2)[1:]
    m, P = filt.filtered_mean[:-1], filt.filtered_cov[:-1]
    g = m - jnp.einsum("tij,tj->ti", G @ A_next, m)
    L = _sym(P - G @ filt.predicted_cov[1:] @ jnp.swapaxes(G, -1, -2))
    E = jnp.concatenate([G, jnp.zeros((1, D, D), dtype)], 0)
    g = jnp.concatenate([g, filt.filtered_mean[-1:]], 0)
    L = jnp.concatenate([L, filt.filtered_cov[-1:]], 0)

    def combine(later, earlier):
        # With reverse=True, jax passes the accumulated later-time element first.
        Ej, gj, Lj = later
        Ei, gi, Li = earlier
        return (Ei @ Ej, jnp.einsum("...ij,...j->...i", Ei, gj) + gi,
                _sym(Ei @ Lj @ jnp.swapaxes(Ei, -1, -2) + Li))

    _, ms, Ps = lax.associative_scan(combine, (E, g, L), reverse=True)
    cross = G @ Ps[1:]
    return ms, Ps, cross


# ----------------------------------------------------------------------------- public


def _batched(fn, params, emissions, parallel):
    emissions = jnp.asarray(emissions)
    if emissions.ndim == 3:
        return jax.vmap(lambda y: fn(params, y, parallel=parallel))(emissions)
    return None


def kalman_filter(params: LGSSM, emissions: Array, *, parallel: bool = False) -> FilterResult:
    r"""Kalman filter with missing observations (NaN rows) and the log marginal likelihood.

    Predict :math:`m^-_t = A_t m_{t-1}`, :math:`P^-_t = A_t P_{t-1} A_t^\top + Q_t`; update
    with :math:`S_t = H_t P^-_t H_t^\top + R_t` (Cholesky), :math:`K_t = P^-_t H_t^\top S_t^{-1}`,
    :math:`m_t = m^-_t + K_t (y_t - H_t m^-_t)` and the Joseph form
    :math:`P_t = (I - K_t H_t) P^-_t (I - K_t H_t)^\top + K_t R_t K_t^\top`;
    :math:`\log p(y_t \mid y_{<t}) = \log \mathcal N(y_t; H_t m^-_t, S_t)`.

    Parameters
    ----------
    params : LGSSM
        Model parameters, time-invariant or with a leading time axis of length ``T``.
    emissions : Array, shape (T, P), (T,) (P = 1) or (B, T, P)
        Observations; a row holding any NaN is treated as missing. With a leading batch
        axis the filter is vmapped over independent series sharing ``params``.
    parallel : bool
        Use the associative-scan (parallel-in-time) filter of Särkkä & García-Fernández
        (2021) instead of ``lax.scan``. Same result to rounding; faster on GPU for long T.

    Returns
    -------
    FilterResult
        (With a batch axis, every field gains a leading axis ``B``.)

    Raises
    ------
    ValueError
        If a shape is inconsistent (the message names the argument).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.message_passing import LGSSM, kalman_filter
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), jnp.zeros((1, 1)), jnp.eye(1), jnp.eye(1))
    >>> round(float(kalman_filter(p, jnp.zeros((1, 1))).log_likelihood), 5)  # log N(0; 0, 2)
    -1.26551
    """
    out = _batched(kalman_filter, params, emissions, parallel)
    if out is not None:
        return out
    params, emissions, mask = _check_params(params, emissions)
    return (_filter_par if parallel else _filter_seq)(params, emissions, mask)


def rts_smoother(params: LGSSM, emissions: Array, *, parallel: bool = False) -> SmootherResult:
    r"""Kalman filter followed by the Rauch-Tung-Striebel smoother.

    Backward pass: :math:`G_t = P_t A_{t+1}^\top (P^-_{t+1})^{-1}`,
    :math:`m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1})`,
    :math:`P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t^\top`,
    :math:`\mathrm{Cov}(z_t, z_{t+1} \mid y) = G_t P^s_{t+1}`.

    Parameters
    ----------
    params, emissions, parallel
        As for :func:`kalman_filter` (``parallel`` applies to both passes).

    Returns
    -------
    SmootherResult

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.message_passing import LGSSM, rts_smoother
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), 0.1 * jnp.eye(1), jnp.eye(1), jnp.eye(1))
    >>> rts_smoother(p, jnp.ones((5, 1))).smoothed_cov.shape
    (5, 1, 1)
    """
    out = _batched(rts_smoother, params, emissions, parallel)
    if out is not None:
        return out
    params, emissions, mask = _check_params(params, emissions)
    filt = (_filter_par if parallel else _filter_seq)(params, emissions, mask)
    ms, Ps, cross = (_smoother_par if parallel else _smoother_seq)(params, filt)
    return SmootherResult(*filt, ms, Ps, cross)


def log_marginal_likelihood(params: LGSSM, emissions: Array, *, parallel: bool = False) -> Array:
    """:math:`\\log p(y_{0:T-1})` by the Kalman filter (NaN rows marginalised out).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.message_passing import LGSSM, log_marginal_likelihood
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), jnp.zeros((1, 1)), jnp.eye(1), jnp.eye(1))
    >>> round(float(log_marginal_likelihood(p, jnp.zeros((1, 1)))), 5)
    -1.26551
    """
    return kalman_filter(params, emissions, parallel=parallel).log_likelihood


# ----------------------------------------------------------------------------- state-space GP


class GPPosterior(NamedTuple):
    """Posterior marginals of a state-space GP :math:`f` (see :func:`gp_posterior`).

    Attributes
    ----------
    mean, var : Array, shape (T,)
        Posterior mean and variance of :math:`f(t_k)` at the training times.
    test_mean, test_var : Array, shape (T*,)
        The same at ``test_times`` (empty when none were given).
    log_likelihood : Array, scalar
        :math:`\\log p(y)` (Gaussian likelihood).
    """

    mean: Array
    var: Array
    test_mean: Array
    test_var: Array
    log_likelihood: Array


def _merge_times(times: Array, test_times: Array | None):
    """Sorted union of training and test times, and the positions of each in it."""
    n = times.shape[0]
    if test_times is None:
        return times, jnp.arange(n), jnp.arange(0)
    allt = jnp.concatenate([times, test_times])
    order = jnp.argsort(allt, stable=True)
    pos = jnp.argsort(order)  # position of each original entry in the merged array
    return allt[order], pos[:n], pos[n:]


def _gp_posterior(sde, times, y, noise, test_times, parallel):
    """Jittable core of :func:`gp_posterior` (no validation)."""
    from probkit.statespace import to_lgssm

    merged, itrain, itest = _merge_times(times, test_times)
    T = merged.shape[0]
    dtype = jnp.result_type(merged, y)
    ym = jnp.full((T,), jnp.nan, dtype).at[itrain].set(y)
    noise = jnp.broadcast_to(jnp.asarray(noise, dtype), y.shape)
    # Observation-free test points get a placeholder noise of 1 (their rows are NaN: skipped).
    nm = jnp.ones((T,), dtype).at[itrain].set(noise)
    params = to_lgssm(sde, merged, nm, validate=False)
    res = rts_smoother(params, ym[:, None], parallel=parallel)
    H = params.emission_matrix
    mean = (res.smoothed_mean @ H.T)[:, 0]
    var = jnp.einsum("pd,tde,pe->t", H, res.smoothed_cov, H)
    return GPPosterior(mean[itrain], var[itrain], mean[itest], var[itest], res.log_likelihood)


_gp_posterior_jit = jax.jit(_gp_posterior, static_argnums=(5,))


def gp_posterior(kernel, times: Array, y: Array, noise, *, test_times: Array | None = None,
                 parallel: bool = False) -> GPPosterior:
    r"""Exact posterior marginals and :math:`\log p(y)` of a 1-D Matern GP in O(T).

    :math:`y_k = f(t_k) + \epsilon_k`, :math:`\epsilon_k \sim \mathcal N(0, \text{noise}_k)`,
    :math:`f \sim \mathcal{GP}(0, k)`. Test points are inserted as observation-free steps
    of the filter/smoother. NaN entries of ``y`` are missing observations.

    Parameters
    ----------
    kernel : probkit.statespace.SDE or a Matern kernel object
    times : Array, shape (T,)
        Strictly increasing, finite.
    y : Array, shape (T,)
    noise : float or Array of shape (T,)
        Observation-noise variance(s), > 0.
    test_times : Array, shape (T*,), optional
        Any finite order; may coincide with training times.
    parallel : bool
        Associative-scan filter/smoother.

    Returns
    -------
    GPPosterior

    Raises
    ------
    ValueError
        Bad ``times`` (NaN, unsorted, duplicated), ``y`` of the wrong length or with inf,
        non-positive ``noise``, non-finite ``test_times``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Matern32
    >>> from probkit.inference.message_passing import gp_posterior
    >>> t = jnp.linspace(0.0, 1.0, 20)
    >>> post = gp_posterior(Matern32(0.3, 1.0), t, jnp.sin(6 * t), 0.01,
    ...                     test_times=jnp.array([0.55]))
    >>> post.test_mean.shape
    (1,)
    """
    from probkit._checks import as_array, check_finite, check_positive
    from probkit.statespace import as_sde, check_times

    check_times("times", times)
    yv = check_finite("y", as_array("y", y, ndim=1), allow_nan=True)
    if yv.shape[0] != np.shape(times)[0]:
        raise ValueError(f"y: expected length {np.shape(times)[0]} (= len(times)), "
                         f"got {yv.shape[0]}")
    if not isinstance(noise, jax.core.Tracer):
        nz = check_positive("noise", noise)
        if nz.ndim > 1 or (nz.ndim == 1 and nz.shape[0] != yv.shape[0]):
            raise ValueError(f"noise: expected a scalar or shape ({yv.shape[0]},), got {nz.shape}")
    if test_times is not None:
        check_finite("test_times", as_array("test_times", test_times, ndim=1))
        test_times = jnp.asarray(test_times, jnp.result_type(jnp.asarray(times), float))
    return _gp_posterior_jit(as_sde(kernel), jnp.asarray(times, jnp.result_type(float)),
                         jnp.asarray(yv), noise, test_times, parallel)


# ----------------------------------------------------------------------------- EP


class EPResult(NamedTuple):
    """Output of :func:`ep_statespace_gp`.

    Attributes
    ----------
    mean, var : Array, shape (T,)
        Approximate posterior marginals of :math:`f(t_k)`.
    test_mean, test_var : Array, shape (T*,)
        The same at ``test_times`` (empty when none were given).
    site_precision, site_shift : Array, shape (T,)
        Natural parameters :math:`\\tilde\\tau_k, \\tilde\\nu_k` of the Gaussian sites
        (0 for missing observations).
    log_marginal_likelihood : Array, scalar
        EP's approximation of :math:`\\log p(y)` (Rasmussen & Williams eq. 3.65; exact EP
        energy for ``power = 1``).
    num_iterations : Array, int
    converged : Array, bool
        Largest change of the site parameters in the last sweep below ``tol``.
    """

    mean: Array
    var: Array
    test_mean: Array
    test_var: Array
    site_precision: Array
    site_shift: Array
    log_marginal_likelihood: Array
    num_iterations: Array
    converged: Array


def _probit_moments(y, mu, s2):
    """Tilted moments of N(f; mu, s2) Phi(y f), y in {-1, +1} (R&W eqs. 3.58)."""
    denom = jnp.sqrt(1.0 + s2)
    z = y * mu / denom
    logZ = jax.scipy.special.log_ndtr(z)
    ratio = jnp.exp(jax.scipy.stats.norm.logpdf(z) - logZ)  # N(z)/Phi(z)
    mhat = mu + y * s2 * ratio / denom
    vhat = s2 - s2**2 * ratio * (z + ratio) / (1.0 + s2)
    return logZ, mhat, vhat


def _probit_loglik(y, f):
    return jax.scipy.special.log_ndtr(y * f)


def _poisson_loglik(y, f):
    return y * f - jnp.exp(f) - jax.scipy.special.gammaln(y + 1.0)


def _gh_moments(loglik, y, mu, s2, power, num_quadrature):
    """Tilted moments of N(f; mu, s2) p(y|f)^power by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(num_quadrature)
    x = jnp.asarray(x, mu.dtype)
    logw = jnp.asarray(np.log(w / np.sqrt(2.0 * np.pi)), mu.dtype)
    f = mu[:, None] + jnp.sqrt(s2)[:, None] * x[None, :]
    lw = logw[None, :] + power * loglik(y[:, None], f)
    logZ = jax.scipy.special.logsumexp(lw, axis=1)
    p = jnp.exp(lw - logZ[:, None])
    mhat = jnp.sum(p * f, 1)
    vhat = jnp.sum(p * (f - mhat[:, None]) ** 2, 1)
    return logZ, mhat, vhat


_LIKELIHOODS = {"probit": _probit_loglik, "poisson": _poisson_loglik}


def _ep_core(sde, times, y, test_times, likelihood, damping, power, tol, max_iter,
             num_quadrature, parallel, min_precision):
    """Jittable EP loop (``likelihood`` a name or a callable ``log p(y | f)``).

    Test times are merged into the grid up front as observation-free steps, so one
    smoother (inside the loop) serves the sweeps, the final marginals and the predictions.
    """
    from probkit.statespace import to_lgssm

    merged, itrain, itest = _merge_times(times, test_times)
    T = merged.shape[0]
    dtype = jnp.result_type(times, y)
    y_all = jnp.full((T,), jnp.nan, dtype).at[itrain].set(y)
    observed = ~jnp.isnan(y_all)
    y0 = jnp.where(observed, y_all, 0.0)
    params0 = to_lgssm(sde, merged, jnp.ones((T,), dtype), validate=False)
    H = params0.emission_matrix
    loglik = _LIKELIHOODS.get(likelihood, likelihood) if isinstance(likelihood, str) else likelihood

    def pseudo(tau, nu):
        has_site = observed & (tau > min_precision)
        safe = jnp.where(has_site, tau, 1.0)
        return jnp.where(has_site, nu / safe, jnp.nan), 1.0 / safe, has_site

    def marginals(tau, nu):
        pseudo_y, pseudo_noise, _ = pseudo(tau, nu)
        params = params0._replace(emission_cov=pseudo_noise.reshape(T, 1, 1))
        res = rts_smoother(params, pseudo_y[:, None], parallel=parallel)
        m = (res.smoothed_mean @ H.T)[:, 0]
        v = jnp.einsum("pd,tde,pe->t", H, res.smoothed_cov, H)
        return m, v, res.log_likelihood

    def tilted(mu_c, s2_c):
        if likelihood == "probit" and power == 1.0:
            return _probit_moments(y0, mu_c, s2_c)
        return _gh_moments(loglik, y0, mu_c, s2_c, power, num_quadrature)

    def cavity(tau, nu, m, v):
        tau_c = 1.0 / v - power * tau
        nu_c = m / v - power * nu
        ok = observed & (tau_c > 0)
        tau_c = jnp.where(ok, tau_c, 1.0)
        return tau_c, nu_c, ok

    def sweep(state):
        tau, nu, m, v, _, it, _ = state
        tau_c, nu_c, ok = cavity(tau, nu, m, v)
        _, mhat, vhat = tilted(nu_c / tau_c, 1.0 / tau_c)
        tau_new = jnp.maximum((1.0 / vhat - tau_c) / power, min_precision)
        nu_new = (mhat / vhat - nu_c) / power
        tau_new = jnp.where(ok, (1.0 - damping) * tau + damping * tau_new, tau)
        nu_new = jnp.where(ok, (1.0 - damping) * nu + damping * nu_new, nu)
        delta = jnp.maximum(jnp.max(jnp.abs(tau_new - tau)), jnp.max(jnp.abs(nu_new - nu)))
        m, v, ll = marginals(tau_new, nu_new)
        return tau_new, nu_new, m, v, ll, it + 1, delta

    def cond(state):
        it, delta = state[-2:]
        return (it < max_iter) & (delta > tol)

    zero = jnp.zeros((T,), dtype)
    prior_var = jnp.full((T,), (H @ params0.initial_cov @ H.T)[0, 0], dtype)
    init = (zero, zero, zero, prior_var, jnp.zeros((), dtype), jnp.asarray(0),
            jnp.asarray(jnp.inf, dtype))
    tau, nu, m, v, ll_pseudo, it, delta = lax.while_loop(cond, sweep, init)

    # EP log marginal likelihood, R&W eq. (3.65), with the Gaussian part from the filter.
    pseudo_y, s2_site, has_site = pseudo(tau, nu)
    tau_c, nu_c, ok = cavity(tau, nu, m, v)
    mu_c, s2_c = nu_c / tau_c, 1.0 / tau_c
    logZ, _, _ = tilted(mu_c, s2_c)
    log_ztilde = (logZ + 0.5 * jnp.log(2 * jnp.pi * (s2_c + s2_site))
                  + 0.5 * (mu_c - jnp.where(has_site, pseudo_y, 0.0)) ** 2 / (s2_c + s2_site))
    log_ml = ll_pseudo + jnp.sum(jnp.where(has_site & ok, log_ztilde, 0.0))
    return EPResult(m[itrain], v[itrain], m[itest], v[itest], tau[itrain], nu[itrain], log_ml,
                    it, delta <= tol)


_ep_core_jit = jax.jit(_ep_core, static_argnums=tuple(range(4, 12)))


def ep_statespace_gp(kernel, times: Array, y: Array, likelihood="probit", *,
                     test_times: Array | None = None, damping: float = 0.5, power: float = 1.0,
                     tol: float = 1e-6, max_iter: int = 200, num_quadrature: int = 32,
                     parallel: bool = False, min_precision: float = 1e-10) -> EPResult:
    r"""Expectation propagation for a 1-D Matern GP with a non-Gaussian likelihood, in O(T).

    Model: :math:`f \sim \mathcal{GP}(0, k)`, :math:`y_k \mid f \sim p(y_k \mid f(t_k))`.
    Each likelihood term is replaced by a Gaussian site
    :math:`\tilde t_k(f) \propto \exp(-\tfrac12 \tilde\tau_k f^2 + \tilde\nu_k f)`, i.e. a
    pseudo-observation :math:`\tilde y_k = \tilde\nu_k/\tilde\tau_k` with noise
    :math:`1/\tilde\tau_k`, so the approximate posterior is one Kalman filter + RTS smoother.
    Each sweep (all sites in parallel, Wilkinson et al., "State Space Expectation
    Propagation", ICML 2020):

    1. marginals :math:`(m_k, v_k)` from the smoother on the pseudo-observations;
    2. cavity (power :math:`\alpha`): :math:`\tau_{-k} = 1/v_k - \alpha\tilde\tau_k`,
       :math:`\nu_{-k} = m_k/v_k - \alpha\tilde\nu_k` (sites with :math:`\tau_{-k} \le 0` are
       left unchanged);
    3. moments :math:`(\hat m_k, \hat v_k)` of
       :math:`\mathcal N(f; \nu_{-k}/\tau_{-k}, 1/\tau_{-k})\,p(y_k \mid f)^\alpha`: closed form
       for the probit (R&W eq. 3.58), Gauss-Hermite otherwise;
    4. :math:`\tilde\tau^{new} = (1/\hat v - \tau_-)/\alpha`, :math:`\tilde\nu^{new} =
       (\hat m/\hat v - \nu_-)/\alpha`, precision clipped below at ``min_precision``;
    5. damping :math:`\tilde\tau \leftarrow (1-d)\tilde\tau + d\,\tilde\tau^{new}` (same for
       :math:`\tilde\nu`), looped in ``lax.while_loop`` until the largest change < ``tol``.

    Parameters
    ----------
    kernel : probkit.statespace.SDE or a Matern kernel object
    times : Array, shape (T,)
        Strictly increasing, finite.
    y : Array, shape (T,)
        Observations; NaN = missing. ``"probit"``: labels in {0, 1} or {-1, +1};
        ``"poisson"``: non-negative counts, :math:`y \sim \mathrm{Poisson}(e^{f})`.
    likelihood : {"probit", "poisson"} or callable
        A callable ``log_lik(y, f)`` (elementwise, jnp) uses Gauss-Hermite moments.
    test_times : Array, optional
        Predict :math:`f` there (observation-free filter steps).
    damping : float in (0, 1]
        Weight of the new site value (1 = undamped).
    power : float in (0, 1]
        Power-EP parameter :math:`\alpha` (1 = EP).
    tol, max_iter, num_quadrature, parallel, min_precision
        Convergence tolerance on site parameters, sweep limit, Gauss-Hermite nodes,
        associative-scan smoother, smallest site precision.

    Returns
    -------
    EPResult

    Raises
    ------
    ValueError
        Bad ``times``, ``y`` (length, values for the likelihood), ``likelihood``, ``damping``,
        ``power``, ``test_times``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import Matern32
    >>> from probkit.inference.message_passing import ep_statespace_gp
    >>> t = jnp.linspace(0.0, 1.0, 50)
    >>> y = (jnp.sin(8 * t) > 0).astype(float)
    >>> res = ep_statespace_gp(Matern32(0.2, 2.0), t, y, "probit")
    >>> bool(res.converged), res.mean.shape
    (True, (50,))
    """
    from probkit._checks import as_array, check_finite, check_positive_int
    from probkit.statespace import as_sde, check_times

    check_times("times", times)
    yv = check_finite("y", as_array("y", y, ndim=1), allow_nan=True)
    if yv.shape[0] != np.shape(times)[0]:
        raise ValueError(f"y: expected length {np.shape(times)[0]} (= len(times)), "
                         f"got {yv.shape[0]}")
    obs = yv[~np.isnan(yv)]
    if isinstance(likelihood, str):
        if likelihood not in _LIKELIHOODS:
            raise ValueError("likelihood: expected 'probit', 'poisson' or a callable, "
                             f"got {likelihood!r}")
        if likelihood == "probit":
            if np.all(np.isin(obs, (0.0, 1.0))):
                yv = np.where(np.isnan(yv), np.nan, 2.0 * yv - 1.0)
            elif not np.all(np.isin(obs, (-1.0, 1.0))):
                raise ValueError("y: probit labels must be in {0, 1} or {-1, +1}")
        if likelihood == "poisson" and not (np.all(obs >= 0) and np.all(obs == np.round(obs))):
            raise ValueError("y: Poisson counts must be non-negative integers")
    elif not callable(likelihood):
        raise ValueError("likelihood: expected 'probit', 'poisson' or a callable, "
                         f"got {likelihood!r}")
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping: must be in (0, 1], got {damping}")
    if not 0.0 < power <= 1.0:
        raise ValueError(f"power: must be in (0, 1], got {power}")
    check_positive_int("max_iter", max_iter)
    check_positive_int("num_quadrature", num_quadrature)
    if test_times is not None:
        check_finite("test_times", as_array("test_times", test_times, ndim=1))
    dtype = jnp.result_type(float)
    tt = None if test_times is None else jnp.asarray(test_times, dtype)
    return _ep_core_jit(as_sde(kernel), jnp.asarray(times, dtype), jnp.asarray(yv, dtype), tt,
                    likelihood, float(damping), float(power), float(tol), int(max_iter),
                    int(num_quadrature), bool(parallel), float(min_precision))
