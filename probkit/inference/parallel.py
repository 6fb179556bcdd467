r"""Parallel-in-time Kalman filter and RTS smoother (``lax.associative_scan``).

The elements and associative operators of Särkkä & García-Fernández, "Temporal
parallelization of Bayesian smoothers", IEEE TAC 66(1), 2021 (Lemmas 7-10), for the
predict-then-update convention of :mod:`probkit.inference.kalman`: the filter element of
step ``t`` is ``(A, b, C, eta, J)`` (Lemmas 7-8), the smoother element ``(E, g, L)``
(Lemmas 9-10).  :math:`O(\log T)` depth, pays off on accelerators; agrees with the
sequential ``lax.scan`` versions to ~1e-12 in float64.

Reached through ``parallel=True`` of :func:`probkit.inference.kalman.kalman_filter` and
:func:`probkit.inference.kalman.rts_smoother`; the functions here are private.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array, lax
from jax.scipy.linalg import cho_solve

from probkit.inference.kalman_steps import (
    FilterResult,
    _loglik_step,
    _predict,
    _smoother_gains,
    _steps,
    _sym,
    _update,
)
from probkit.statespace import LGSSM

__all__: list[str] = []  # private: used by probkit.inference.kalman (parallel=True)


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
        # By QR, not LU (jnp.linalg.inv): jaxlib 0.10's batched LU deadlocks on a 2-core CPU
        # when two run at once (see kalman_steps._smoother_gains).
        q, r = jnp.linalg.qr(jnp.broadcast_to(eye, Ci.shape) + Ci @ Jj)
        Minv = jax.scipy.linalg.solve_triangular(r, jnp.swapaxes(q, -1, -2), lower=False)
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
