r"""The factor posterior of one mode: one Kalman filter + RTS smoother over its sorted grid.

Given Gaussian messages summed per grid point (precision :math:`\Lambda_i`, shift
:math:`\eta_i`), the posterior of the mode's :math:`R` latent functions is

.. math::
    q(u) \propto \prod_r \mathcal{GP}(u_r; 0, k)
    \prod_i \exp\!\big(-\tfrac12 u(x_i)^\top\Lambda_i u(x_i) + \eta_i^\top u(x_i)\big).

The mode's kernel :math:`k` is any kernel with a state-space form (Matern, cosine, periodic,
SHO, celerite and their sums and products, :func:`probkit.statespace.as_sde`); its SDE is
repeated for the :math:`R` functions and stacked into one state, and the messages enter as
whitened pseudo-observations
:math:`L_i^{-1}\eta_i = L_i^\top H z_i + e`, :math:`e \sim N(0, I)`, :math:`\Lambda_i = L_i
L_i^\top` (the same as observing :math:`\Lambda_i^{-1}\eta_i` with covariance
:math:`\Lambda_i^{-1}`, without inverting :math:`\Lambda_i`), smoothed by
:func:`probkit.inference.kalman.rts_smoother`. ``mode_solver="dense"`` solves the same Gaussian
with the dense Gram matrix instead (a reference, :math:`O(I^3 R^3)`).

:func:`factor_marginals` evaluates the posterior at any coordinates by merging them into the grid
as observation-free steps (a stable sort, so it runs under ``jax.jit`` and is differentiable in
the coordinates): the smoothed marginals there are exact GP conditioning under the messages, for
interpolation and extrapolation alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import solve_triangular

from probkit import statespace
from probkit.inference.kalman import rts_smoother
from probkit.models.tucker.data import TuckerConfig
from probkit.statespace import LGSSM

__all__ = ["mode_posterior", "factor_marginals"]


def sym(m: Array) -> Array:
    """Symmetric part of (a batch of) square matrices."""
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def _mode_lgssm(grid: Array, kernel, rank: int) -> tuple[LGSSM, Array]:
    """Prior of the R stacked latent functions of one mode as an LGSSM (emission placeholder)
    and the selection matrix ``H (R, R d)`` (state order: function-major)."""
    sde = statespace.as_sde(kernel)
    A, Q = statespace.discretise(sde, grid)
    d = sde.state_dim
    dtype = grid.dtype
    eye = jnp.eye(rank, dtype=dtype)
    kron_t = jax.vmap(lambda a: jnp.kron(eye, a))
    H = jnp.kron(eye, sde.H.astype(dtype))
    params = LGSSM(jnp.zeros(rank * d, dtype), jnp.kron(eye, sde.Pinf.astype(dtype)),
                   kron_t(A.astype(dtype)), kron_t(Q.astype(dtype)), H, eye)
    return params, H


def _whiten(prec: Array, shift: Array, observed: Array) -> tuple[Array, Array]:
    """Cholesky factors L (I, R, R) of the message precisions and L^{-1} eta (NaN if unobserved)."""
    R = prec.shape[-1]
    scale = jnp.trace(prec, axis1=-2, axis2=-1)[:, None, None] / R
    eye = jnp.eye(R, dtype=prec.dtype)
    L = jnp.linalg.cholesky(sym(prec) + (1e-10 * scale + 1e-300) * eye)
    L = jnp.where(observed[:, None, None], L, eye)
    obs = jax.vmap(lambda l, e: solve_triangular(l, e, lower=True))(L, shift)
    return L, jnp.where(observed[:, None], obs, jnp.nan)


def _posterior_kalman(grid, observed, prec, shift, kernel, config):
    params, H = _mode_lgssm(grid, kernel, config.rank)
    L, obs = _whiten(prec, shift, observed)
    params = params._replace(emission_matrix=jnp.swapaxes(L, -1, -2) @ H)
    sm = rts_smoother(params, obs)
    mean = sm.smoothed_mean @ H.T
    cov = H @ sm.smoothed_cov @ H.T
    return mean, sym(cov)


def _block_diag(blocks: Array) -> Array:
    n, R, _ = blocks.shape
    out = jnp.zeros((n, R, n, R), blocks.dtype)
    out = out.at[jnp.arange(n), :, jnp.arange(n), :].set(blocks)
    return out.reshape(n * R, n * R)


def _posterior_dense(grid, observed, prec, shift, kernel, config):
    """Exact Gaussian posterior of the stacked (I R) factor values with the dense Gram matrix
    (of the kernel the smoother uses: the truncated series for a periodic kernel)."""
    R, n = config.rank, grid.shape[0]
    Kxx = statespace.as_sde(kernel).gram(grid, grid)
    Pm = jnp.kron(Kxx, jnp.eye(R, dtype=grid.dtype))
    L, _ = _whiten(prec, shift, observed)
    L = jnp.where(observed[:, None, None], L, 0.0)
    Lb = _block_diag(L)
    PL = Pm @ Lb
    M = jnp.eye(n * R, dtype=grid.dtype) + Lb.T @ PL
    cM = jnp.linalg.cholesky(sym(M))
    X = jax.scipy.linalg.cho_solve((cM, True), PL.T)
    Sig = sym(Pm - PL @ X)
    eta = jnp.where(observed[:, None], shift, 0.0).reshape(-1)
    mean = (Sig @ eta).reshape(n, R)
    blocks = Sig.reshape(n, R, n, R)
    cov = blocks[jnp.arange(n), :, jnp.arange(n), :]
    return mean, sym(cov)


def mode_posterior(grid: Array, observed: Array, prec: Array, shift: Array,
                   kernel, config: TuckerConfig) -> tuple[Array, Array]:
    r"""Marginals of one mode's factors given summed Gaussian messages per grid point.

    Parameters
    ----------
    grid : Array, shape (I,)
        Non-decreasing coordinates.
    observed : Array, shape (I,) bool
        Grid points with ``False`` carry no message (prediction points, padding).
    prec, shift : Array, shapes (I, R, R), (I, R)
        :math:`\Lambda_i, \eta_i`.
    kernel : kernel of :mod:`probkit.kernels` with a state-space form, or an SDE
        The prior of each of the mode's latent functions (:func:`probkit.statespace.as_sde`).
    config : TuckerConfig
        Uses ``rank`` and ``mode_solver``.

    Returns
    -------
    mean, cov : Array, shapes (I, R), (I, R, R)

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import Matern32
    >>> from probkit.models.tucker import TuckerConfig, mode_posterior
    >>> grid = jnp.linspace(0.0, 1.0, 5)
    >>> prec, shift = jnp.ones((5, 1, 1)), jnp.ones((5, 1))
    >>> mean, cov = mode_posterior(grid, jnp.ones(5, bool), prec, shift, Matern32(0.3, 1.0),
    ...                            TuckerConfig(rank=1, num_modes=1))
    >>> mean.shape, cov.shape
    ((5, 1), (5, 1, 1))
    """
    solver = {"kalman": _posterior_kalman, "dense": _posterior_dense}[config.mode_solver]
    return solver(grid, observed, prec, shift, kernel, config)


def factor_marginals(grid: Array, observed: Array, prec: Array, shift: Array,
                     kernel, coords: Array, config: TuckerConfig) -> tuple[Array, Array]:
    """Posterior mean ``(m, R)`` and covariance ``(m, R, R)`` of one mode's factors at ``coords``.

    The query coordinates are merged into the grid (a stable sort: a coordinate equal to a grid
    point follows it, with a zero-length step) as observation-free smoother steps. Pure and
    jittable; ``coords`` may be traced.
    """
    I, m = grid.shape[0], coords.shape[0]
    R = config.rank
    merged = jnp.concatenate([grid, coords.astype(grid.dtype)])
    order = jnp.argsort(merged, stable=True)
    where = jnp.argsort(order)[I:]
    obs = jnp.concatenate([observed, jnp.zeros(m, bool)])[order]
    P = jnp.concatenate([prec, jnp.broadcast_to(jnp.eye(R, dtype=prec.dtype), (m, R, R))])
    S = jnp.concatenate([shift, jnp.zeros((m, R), shift.dtype)])
    mean, cov = mode_posterior(merged[order], obs, P[order], S[order], kernel, config)
    return mean[where], cov[where]
