"""The periodic kernel as Solin & Särkkä's truncated harmonic series, with its error bound."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probkit import kernels as _kernels
from probkit._checks import check_hyperparameter, check_positive, check_positive_int
from probkit.statespace.base import SDE

__all__ = ["PeriodicSDE", "periodic_order", "TRACED_PERIODIC_ORDER"]


def _periodic_tail_bound(K: int, z, xp=jnp):
    r"""Upper bound on :math:`\sum_{j > K} \tilde q_j(z)`, :math:`\tilde q_j = 2 I_j(z) e^{-z}`:

    :math:`B_K(z) = 2 e^{-z} \frac{(z/2)^{K+1}}{(K+1)!} e^{z^2/(4(K+2))} / (1 - z/(2(K+2)))`
    for :math:`z < 2(K+2)`, else 1 (capped at 1 = the sum of all :math:`\tilde q_j`)."""
    z = xp.asarray(z)
    r = z / (2.0 * (K + 2))
    ok = r < 1.0
    rs, zs = xp.where(ok, r, 0.5), xp.where(ok, z, 1.0)
    logb = (math.log(2.0) - zs + (K + 1) * xp.log(zs / 2.0) - math.lgamma(K + 2)
            + zs * zs / (4.0 * (K + 2)) - xp.log1p(-rs))
    return xp.where(ok, xp.minimum(xp.exp(xp.minimum(logb, 0.0)), 1.0), 1.0)


def _periodic_relative_error(order: int, z, xp=jnp):
    """``B_J(z) + 2 B_{3J+3}(z)``: truncation plus aliasing bound, relative to the variance."""
    return (_periodic_tail_bound(order, z, xp)
            + 2.0 * _periodic_tail_bound(3 * order + 3, z, xp))


#: Order of a :class:`PeriodicSDE` built from a traced lengthscale (no adaptive choice
#: possible): its error bound is below 1e-8 of the variance for lengthscales >= 0.56.
TRACED_PERIODIC_ORDER = 12


def periodic_order(lengthscale, tol: float = 1e-8, max_order: int = 64) -> int:
    """Smallest order ``J`` whose :class:`PeriodicSDE` error bound is at most ``tol`` times the
    variance for this (concrete) ``lengthscale``.

    Raises
    ------
    ValueError
        ``lengthscale`` not a finite positive scalar, or needing more than ``max_order``
        harmonics (a very short lengthscale; build ``PeriodicSDE(..., order=J)`` to accept a
        larger error).

    Examples
    --------
    >>> from probkit.statespace import periodic_order
    >>> periodic_order(1.0), periodic_order(0.5)
    (8, 14)
    """
    ls = check_positive("lengthscale", lengthscale)
    if ls.ndim:
        raise ValueError(f"lengthscale: expected a scalar, got shape {ls.shape}")
    z = float(ls) ** -2
    for order in range(1, max_order + 1):
        if float(_periodic_relative_error(order, z, np)) <= tol:
            return order
    raise ValueError(f"lengthscale: a periodic lengthscale of {float(ls):.4g} needs more than "
                     f"{max_order} harmonics for a truncation error below {tol:g} of the "
                     "variance; build PeriodicSDE(..., order=J) to accept a larger error")


class PeriodicSDE(SDE):
    r"""Periodic (exp-sine-squared) kernel as the truncated harmonic series of Solin & Särkkä.

    With :math:`\omega_0 = 2\pi/p` and :math:`z = \ell^{-2}`, the generating function of the
    modified Bessel functions, :math:`e^{z\cos\theta} = I_0(z) + 2\sum_{j\ge1} I_j(z)
    \cos j\theta`, gives (Solin & Särkkä, "Explicit link between periodic covariance functions
    and state space models", AISTATS 2014, eq. 9)

    .. math::

        k(\tau) = \sigma^2 \exp\!\Big(-\frac{2\sin^2(\omega_0\tau/2)}{\ell^2}\Big)
        = \sum_{j\ge0} q_j^2 \cos(j\omega_0\tau), \qquad
        q_j^2 = \sigma^2 \tilde q_j, \quad \tilde q_j = \frac{(2 - \delta_{j0}) I_j(z)}{e^z},
        \quad \sum_j \tilde q_j = 1.

    Keeping :math:`j = 0..J` (``order``) gives one constant state (:math:`F = 0`,
    :math:`P_\infty = q_0^2`) and :math:`J` undamped rotations
    (:class:`CosineSDE` blocks, frequency :math:`j\omega_0`, :math:`P_\infty = q_j^2 I`),
    state dimension :math:`2J + 1`, :math:`H = [1, 1, 0, 1, 0, \dots]`, :math:`Q(\Delta) = 0`
    exactly. Multiply by a Matern SDE for a quasi-periodic kernel.

    The coefficients come from the :math:`M = 4(J+1)`-point trapezoidal rule on
    :math:`e^{-2z\sin^2(\theta/2)}` (all terms in :math:`(0, 1]`, differentiable in
    :math:`\ell`; no Bessel functions), which returns each :math:`\tilde q_j` plus its aliases
    :math:`\tilde q_{|j + mM|}`, :math:`m \ne 0`: these add up to at most
    :math:`2\sum_{i > 3J+3}\tilde q_i`. Since every :math:`\tilde q_j \ge 0` and
    :math:`|\cos| \le 1`, the error of the truncated kernel is bounded, for every lag, by

    .. math::

        |k(\tau) - k_J(\tau)| \le \sigma^2\Big(\sum_{j>J}\tilde q_j
            + 2\sum_{j>3J+3}\tilde q_j\Big) \le \sigma^2\big(B_J(z) + 2B_{3J+3}(z)\big),
        \qquad B_K(z) = \frac{2e^{-z}(z/2)^{K+1}}{(K+1)!}\,
            \frac{e^{z^2/(4(K+2))}}{1 - z/(2(K+2))}

    (from :math:`I_j(z) \le (z/2)^j e^{z^2/(4(j+1))}/j!` and a geometric tail; valid for
    :math:`z < 2(K+2)`), which :meth:`truncation_error` returns; the first sum is attained at
    :math:`\tau = 0`. Relative to :math:`\sigma^2` it is 4.3e-9 for :math:`\ell = 1, J = 8`,
    7.5e-8 for :math:`\ell = 0.5, J = 12`, 1.9e-11 for :math:`\ell = 0.5, J = 16`.

    Parameters
    ----------
    lengthscale, variance, period : Array
        Positive scalars :math:`\ell`, :math:`\sigma^2`, :math:`p` (may be traced).
    order : int, optional
        :math:`J \ge 1` (static). Default: :func:`periodic_order` of a concrete
        ``lengthscale`` (the smallest :math:`J` with bound :math:`\le 10^{-8}\sigma^2`), or
        :data:`TRACED_PERIODIC_ORDER` (12) for a traced one (inside ``jit`` or a NumPyro
        model: a static order is needed there), whose bound is below :math:`10^{-8}\sigma^2`
        for :math:`\ell \ge 0.56` only; pass ``order`` for shorter lengthscales.

    Raises
    ------
    ValueError
        A concrete hyperparameter that is not a finite positive scalar; ``order`` not an
        integer >= 1; a lengthscale too short for the default order choice.

    Examples
    --------
    >>> from probkit.statespace import PeriodicSDE
    >>> sde = PeriodicSDE(lengthscale=1.0, variance=1.0, period=2.0)
    >>> sde.order, sde.state_dim, float(sde.truncation_error()) < 1e-8
    (8, 17, True)
    """

    dense: _kernels.Periodic
    order: int = eqx.field(static=True)

    def __init__(self, lengthscale=1.0, variance=1.0, period=1.0, order: int | None = None):
        self.dense = _kernels.Periodic(
            check_hyperparameter("lengthscale", lengthscale, scalar=True),
            check_hyperparameter("variance", variance, scalar=True),
            check_hyperparameter("period", period, scalar=True))
        if order is None:
            traced = isinstance(lengthscale, jax.core.Tracer)
            order = TRACED_PERIODIC_ORDER if traced else periodic_order(lengthscale)
        self.order = check_positive_int("order", order, minimum=1)

    @property
    def omega(self) -> Array:
        return 2.0 * jnp.pi / self.dense.period

    @property
    def _dtype(self):
        k = self.dense
        return jnp.result_type(k.lengthscale, k.variance, k.period, float)

    @property
    def coefficients(self) -> Array:
        r""":math:`q_j^2`, ``j = 0..order`` (shape ``(order + 1,)``), by the trapezoidal rule."""
        J = self.order
        m = 4 * (J + 1)
        theta = 2.0 * np.pi * np.arange(m) / m
        z = self.dense.lengthscale.astype(self._dtype) ** -2
        f = jnp.exp(-2.0 * z * jnp.asarray(np.sin(theta / 2.0) ** 2, self._dtype))
        cos = jnp.asarray(np.cos(np.outer(np.arange(J + 1), theta)), self._dtype)
        eps = jnp.asarray(np.where(np.arange(J + 1) == 0, 1.0, 2.0), self._dtype)
        return self.dense.variance * jnp.maximum(eps * (cos @ f) / m, 0.0)

    def truncation_error(self) -> Array:
        r""":math:`\sigma^2 (B_J(z) + 2B_{3J+3}(z))`, an upper bound on
        :math:`\max_\tau |k(\tau) - k_J(\tau)|` (see the class notes)."""
        z = self.dense.lengthscale.astype(self._dtype) ** -2
        return self.dense.variance * _periodic_relative_error(self.order, z)

    @property
    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the cosine and sine coordinates of harmonics ``1..J``."""
        j = np.arange(1, self.order + 1)
        return 2 * j - 1, 2 * j

    @property
    def F(self) -> Array:  # noqa: N802
        c, s = self._blocks
        w = self.omega.astype(self._dtype) * jnp.arange(1, self.order + 1, dtype=self._dtype)
        D = 2 * self.order + 1
        return jnp.zeros((D, D), self._dtype).at[c, s].set(-w).at[s, c].set(w)

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.zeros((2 * self.order + 1, 1), self._dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        return jnp.zeros((1, 1), self._dtype)

    @property
    def H(self) -> Array:  # noqa: N802
        h = np.zeros((1, 2 * self.order + 1))
        h[0, 0] = 1.0
        h[0, self._blocks[0]] = 1.0
        return jnp.asarray(h, self._dtype)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        q = self.coefficients
        return jnp.diag(jnp.concatenate([q[:1], jnp.repeat(q[1:], 2)]))

    def transition(self, dt: Array) -> Array:
        c, s = self._blocks
        dtype = jnp.result_type(self._dtype, dt)
        th = (self.omega * dt).astype(dtype) * jnp.arange(1, self.order + 1, dtype=dtype)
        cos, sin = jnp.cos(th), jnp.sin(th)
        A = jnp.eye(2 * self.order + 1, dtype=dtype)
        return A.at[c, c].set(cos).at[s, s].set(cos).at[c, s].set(-sin).at[s, c].set(sin)

    def process_cov(self, dt: Array) -> Array:
        """Exactly zero (each rotation preserves its block of ``Pinf``)."""
        D = 2 * self.order + 1
        return jnp.zeros((D, D), jnp.result_type(self._dtype, dt))
