"""The SDE base class (``+``, ``*``, generic discretisation) and sums and products of SDEs."""

from __future__ import annotations

import functools
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["SDE", "SumSDE", "ProductSDE"]


class SDE(eqx.Module):
    """Base class of a stationary linear SDE ``dx = F x dt + L dbeta``, ``f = H x``.

    Subclasses provide ``F``, ``L``, ``Qc``, ``H``, ``Pinf`` (properties) and
    ``transition(dt) -> expm(F dt)``. ``sde1 + sde2`` builds a :class:`SumSDE`,
    ``sde1 * sde2`` a :class:`ProductSDE`. The SDEs of this package also offer ``dense``, the
    kernel of :mod:`probkit.kernels` they represent (the one set of hyperparameters; for a
    :class:`~probkit.statespace.PeriodicSDE` the untruncated kernel), for dense comparisons.
    """

    @property
    def state_dim(self) -> int:
        return self.H.shape[-1]

    @property
    def F(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def L(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def Qc(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def H(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def Pinf(self) -> Array:  # noqa: N802
        raise NotImplementedError

    def transition(self, dt: Array) -> Array:
        """``expm(F dt)`` for a scalar ``dt`` (generic fallback: ``jax.scipy.linalg.expm``)."""
        return jax.scipy.linalg.expm(self.F * dt)

    def process_cov(self, dt: Array) -> Array:
        """``Q = Pinf - A Pinf A'`` with ``A = transition(dt)`` (exact, symmetrised)."""
        A = self.transition(dt)
        Q = self.Pinf - A @ self.Pinf @ A.T
        return 0.5 * (Q + Q.T)

    def kernel(self, tau: Array) -> Array:
        """Covariance ``k(tau) = H expm(F |tau|) Pinf H'`` for a scalar lag (checks, plots)."""
        A = self.transition(jnp.abs(tau))
        return (self.H @ A @ self.Pinf @ self.H.T)[0, 0]

    def gram(self, t1: Array, t2: Array) -> Array:
        """The covariance matrix ``k(t1_i - t2_j)`` this SDE represents, shape ``(n1, n2)``, for
        dense checks: for a truncated :class:`~probkit.statespace.PeriodicSDE` it is the
        truncated kernel the Kalman filter uses, not ``self.dense``. Row by row (``lax.map``),
        so no ``(n1, n2, D, D)`` intermediate."""
        t1, t2 = jnp.ravel(jnp.asarray(t1)), jnp.ravel(jnp.asarray(t2))
        row = jax.vmap(self.kernel)
        return jax.lax.map(lambda a: row(a - t2), t1)

    def __add__(self, other: SDE) -> SumSDE:
        return SumSDE((self, other))

    def __mul__(self, other: SDE) -> ProductSDE:
        return ProductSDE(self, other)


class SumSDE(SDE):
    """Sum of independent GPs: block-diagonal SDE, ``H = [H_1, H_2, ...]``."""

    parts: tuple

    def __init__(self, parts):
        flat = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, SumSDE) else [p])
        self.parts = tuple(flat)

    @property
    def dense(self):
        """The dense kernel ``k_1 + k_2 + ...`` of the parts."""
        return functools.reduce(operator.add, [p.dense for p in self.parts])

    def _blk(self, mats):
        return jax.scipy.linalg.block_diag(*mats)

    @property
    def F(self) -> Array:  # noqa: N802
        return self._blk([p.F for p in self.parts])

    @property
    def L(self) -> Array:  # noqa: N802
        return self._blk([p.L for p in self.parts])

    @property
    def Qc(self) -> Array:  # noqa: N802
        return self._blk([p.Qc for p in self.parts])

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.concatenate([p.H for p in self.parts], axis=1)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        return self._blk([p.Pinf for p in self.parts])

    def transition(self, dt: Array) -> Array:
        return self._blk([p.transition(dt) for p in self.parts])

    def process_cov(self, dt: Array) -> Array:
        return self._blk([p.process_cov(dt) for p in self.parts])


class ProductSDE(SDE):
    """Product of two stationary kernels: Kronecker-sum SDE (state dimension ``D1 * D2``).

    ``L = I`` and ``Qc = -(F Pinf + Pinf F')`` so that the Lyapunov equation holds.
    """

    left: SDE
    right: SDE

    @property
    def dense(self):
        """The dense kernel ``k_1 * k_2``."""
        return self.left.dense * self.right.dense

    @property
    def F(self) -> Array:  # noqa: N802
        F1, F2 = self.left.F, self.right.F
        return jnp.kron(F1, jnp.eye(F2.shape[0], dtype=F2.dtype)) + jnp.kron(
            jnp.eye(F1.shape[0], dtype=F1.dtype), F2)

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.eye(self.state_dim, dtype=self.Pinf.dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        F, P = self.F, self.Pinf
        return -(F @ P + P @ F.T)

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.kron(self.left.H, self.right.H)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        return jnp.kron(self.left.Pinf, self.right.Pinf)

    def transition(self, dt: Array) -> Array:
        return jnp.kron(self.left.transition(dt), self.right.transition(dt))

    def process_cov(self, dt: Array) -> Array:
        """``P1 (x) P2 - M1 (x) M2 = Q1 (x) M2 + P1 (x) Q2`` with ``M = A P A'``: a sum of
        Kronecker products of PSD matrices, free of the cancellation of the plain difference."""
        A2 = self.right.transition(dt)
        m2 = A2 @ self.right.Pinf @ A2.T
        return jnp.kron(self.left.process_cov(dt), m2) + jnp.kron(self.left.Pinf,
                                                                  self.right.process_cov(dt))
