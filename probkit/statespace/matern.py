"""Matern-1/2, 3/2, 5/2 SDEs: closed-form transitions, a cancellation-free process covariance."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probkit import kernels as _kernels
from probkit._checks import check_hyperparameter
from probkit.statespace.base import SDE

__all__ = ["MaternSDE", "matern_sde"]


class MaternSDE(SDE):
    """Matern-``nu`` (1/2, 3/2, 5/2) kernel as an SDE with closed-form ``expm``.

    Parameters
    ----------
    nu : float
        Smoothness: 0.5, 1.5 or 2.5 (static).
    lengthscale, variance : Array
        Positive scalars (may be traced: gradients flow through them).

    Raises
    ------
    ValueError
        ``nu`` not in (0.5, 1.5, 2.5); a concrete ``lengthscale`` or ``variance`` that is not a
        finite positive scalar (traced values are not checked).
    """

    nu: float = eqx.field(static=True)
    lengthscale: Array
    variance: Array

    def __init__(self, nu: float, lengthscale, variance):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"nu: state-space form exists here for 0.5, 1.5, 2.5; got {nu}")
        self.nu = float(nu)
        self.lengthscale = check_hyperparameter("lengthscale", lengthscale, scalar=True)
        self.variance = check_hyperparameter("variance", variance, scalar=True)

    @property
    def order(self) -> int:
        return int(self.nu + 0.5)  # state dimension p + 1

    @property
    def dense(self) -> _kernels.Stationary:
        """The dense Matern kernel with these hyperparameters."""
        cls = {1: _kernels.Matern12, 2: _kernels.Matern32, 3: _kernels.Matern52}[self.order]
        return cls(self.lengthscale, self.variance)

    @property
    def lam(self) -> Array:
        return math.sqrt(2.0 * self.nu) / self.lengthscale

    @property
    def F(self) -> Array:  # noqa: N802
        lam = self.lam
        if self.order == 1:
            return jnp.reshape(-lam, (1, 1))
        z, o = jnp.zeros_like(lam), jnp.ones_like(lam)
        if self.order == 2:
            return jnp.stack([jnp.stack([z, o]), jnp.stack([-lam**2, -2 * lam])])
        return jnp.stack([jnp.stack([z, o, z]), jnp.stack([z, z, o]),
                          jnp.stack([-lam**3, -3 * lam**2, -3 * lam])])

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.zeros((self.order, 1), self.lam.dtype).at[-1, 0].set(1.0)

    @property
    def Qc(self) -> Array:  # noqa: N802
        lam, s2 = self.lam, self.variance
        q = {1: 2 * s2 * lam, 2: 4 * s2 * lam**3, 3: 16.0 / 3.0 * s2 * lam**5}[self.order]
        return jnp.reshape(q, (1, 1))

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.zeros((1, self.order), self.lam.dtype).at[0, 0].set(1.0)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        lam, s2 = self.lam, self.variance * jnp.ones_like(self.lam)
        if self.order == 1:
            return jnp.reshape(s2, (1, 1))
        if self.order == 2:
            return jnp.diag(jnp.stack([s2, lam**2 * s2]))
        k = s2 * lam**2 / 3.0
        z = jnp.zeros_like(s2)
        return jnp.stack([jnp.stack([s2, z, -k]), jnp.stack([z, k, z]),
                          jnp.stack([-k, z, s2 * lam**4])])

    def transition(self, dt: Array) -> Array:
        """Closed form ``expm(F dt) = exp(-lam dt) sum_j (N dt)^j / j!``, ``N = F + lam I``."""
        lam = self.lam
        d = self.order
        N = (self.F + lam * jnp.eye(d, dtype=lam.dtype)) * dt
        out = jnp.eye(d, dtype=N.dtype) + N
        if d == 3:
            out = out + 0.5 * N @ N
        return jnp.exp(-lam * dt) * out

    def process_cov(self, dt: Array) -> Array:
        """``Q = Pinf - A Pinf A'`` without its cancellation for small ``lam dt``, from the
        integrals ``G_n`` of the module notes."""
        lam = self.lam
        x = lam * dt
        d_scale = lam ** jnp.arange(self.order, dtype=lam.dtype)
        unit = _unit_process_cov(self.order, x)
        return self.variance * d_scale[:, None] * unit * d_scale[None, :]


#: Below this ``x = lam dt`` ``G_n`` is summed as a series, above it by upward recurrence.
_SERIES_BELOW = 1.0


@functools.cache
def _unit_matern(d: int) -> np.ndarray:
    """The matrices ``M_n = q_1 sum_{j+k=n} c_j c_k'`` (``n < 2d - 1``) of the unit Matern SDE of
    state dimension ``d`` (``lam = 1``, ``variance = 1``): ``Q_1(x) = sum_n M_n G_n(x)``."""
    F = np.zeros((d, d))
    F[np.arange(d - 1), np.arange(1, d)] = 1.0
    F[-1] = -np.array([math.comb(d, j) for j in range(d)], dtype=float)  # (s + 1)^d
    N = F + np.eye(d)
    q1 = {1: 2.0, 2: 4.0, 3: 16.0 / 3.0}[d]
    c = [np.linalg.matrix_power(N, j)[:, -1] / math.factorial(j) for j in range(d)]
    M = np.zeros((2 * d - 1, d, d))
    for j in range(d):
        for k in range(d):
            M[j + k] += q1 * np.outer(c[j], c[k])
    return M


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _exp_moments(x: Array, nmax: int) -> Array:
    """``G_n(x) = int_0^x u^n e^{-2u} du`` for ``n = 0..nmax``, stacked on a last axis.

    For ``x < 1``: the Taylor series of ``G_nmax`` (terms up to the dtype's rounding), then the
    downward recurrence ``G_{n-1} = (2 G_n + x^n e^{-2x}) / n`` (sums of positive terms). For
    ``x >= 1``: ``G_0 = -expm1(-2x)/2`` and the upward recurrence
    ``G_n = (n G_{n-1} - x^n e^{-2x}) / 2`` (mild cancellation only near ``x = 1``). The
    derivative ``x^n e^{-2x}`` is supplied directly.
    """
    x = jnp.asarray(x)
    terms = 15 if jnp.finfo(x.dtype).bits <= 32 else 25  # 2^K / K!: 2.5e-8, 2e-18
    small = x < _SERIES_BELOW
    xs = jnp.where(small, x, 0.0)
    xl = jnp.where(small, _SERIES_BELOW, x)
    m = np.arange(terms)
    coef = (-2.0) ** m / np.array([math.factorial(i) for i in m], float) / (nmax + m + 1)
    top = jnp.zeros_like(xs)
    for a in coef[::-1]:  # Horner
        top = top * xs + a
    down = [xs ** (nmax + 1) * top]
    es = jnp.exp(-2.0 * xs)
    for n in range(nmax, 0, -1):
        down.append((2.0 * down[-1] + xs**n * es) / n)
    down = down[::-1]
    el = jnp.exp(-2.0 * xl)
    up = [-0.5 * jnp.expm1(-2.0 * xl)]
    for n in range(1, nmax + 1):
        up.append(0.5 * (n * up[-1] - xl**n * el))
    return jnp.stack([jnp.where(small, a, b) for a, b in zip(down, up, strict=True)], -1)


@_exp_moments.defjvp
def _exp_moments_jvp(nmax, primals, tangents):
    (x,), (dx,) = primals, tangents
    x = jnp.asarray(x)
    dg = x[..., None] ** np.arange(nmax + 1) * jnp.exp(-2.0 * x)[..., None]
    return _exp_moments(x, nmax), dg * dx[..., None]


def _unit_process_cov(d: int, x: Array) -> Array:
    """``Pinf_1 - A_1(x) Pinf_1 A_1(x)'`` of the unit Matern SDE, accurate for every ``x >= 0``."""
    M = jnp.asarray(_unit_matern(d), x.dtype)
    return jnp.tensordot(_exp_moments(x, 2 * d - 2), M, axes=1)


def matern_sde(nu: float, lengthscale=1.0, variance=1.0) -> MaternSDE:
    """Matern-``nu`` SDE from ``(nu, lengthscale, variance)``.

    Raises
    ------
    ValueError
        As :class:`MaternSDE`: bad ``nu``, a non-positive or non-scalar ``lengthscale`` or
        ``variance``.

    Examples
    --------
    >>> from probkit.statespace import matern_sde
    >>> matern_sde(2.5, 1.0, 1.0).Pinf.shape
    (3, 3)
    """
    return MaternSDE(nu, lengthscale, variance)
