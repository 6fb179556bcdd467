"""The kernel base class, sums and products, and the input helpers every kernel uses."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["Kernel", "Sum", "Product", "as_2d", "sqdist"]

_TINY = 1e-36  # representable in float32 too


def as_2d(x: Array) -> Array:
    """View 1-D inputs ``(n,)`` as ``(n, 1)``; leave ``(n, d)`` unchanged."""
    x = jnp.asarray(x)
    return x[:, None] if x.ndim == 1 else x


@jax.jit
def sqdist(x1: Array, x2: Array) -> Array:
    """Pairwise squared Euclidean distances of ``(n1, d)`` and ``(n2, d)`` inputs.

    Computed from the differences, not as ``|a|^2 + |b|^2 - 2 a.b``, which cancels
    catastrophically for nearby inputs. Jitted so that XLA fuses the subtraction into the
    reduction also when called eagerly (no ``(n1, n2, d)`` intermediate in memory).
    """
    a, b = as_2d(x1), as_2d(x2)
    return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


class Kernel(eqx.Module):
    """Base class: a positive-definite covariance function on :math:`\\mathbb{R}^d`."""

    def __call__(self, x1: Array, x2: Array) -> Array:
        raise NotImplementedError

    def diag(self, x: Array) -> Array:
        """Exact diagonal ``k(x_i, x_i)``."""
        x = as_2d(x)
        return jnp.diagonal(self(x, x))

    def __add__(self, other):
        if not isinstance(other, Kernel):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, other):
        if not isinstance(other, Kernel):
            return NotImplemented
        return Product(self, other)


class Sum(Kernel):
    """Sum of two kernels, ``k(x, x') = k1(x, x') + k2(x, x')`` (what ``k1 + k2`` builds).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Matern52, Periodic
    >>> k = Matern52(2.0, 1.0) + Periodic(1.0, 0.5, period=1.0)
    >>> x = jnp.array([[0.0], [1.0]])
    >>> bool(jnp.allclose(k(x, x), Matern52(2.0, 1.0)(x, x) + Periodic(1.0, 0.5)(x, x)))
    True
    """

    kernel1: Kernel
    kernel2: Kernel

    def __call__(self, x1: Array, x2: Array) -> Array:
        return self.kernel1(x1, x2) + self.kernel2(x1, x2)

    def diag(self, x: Array) -> Array:
        return self.kernel1.diag(x) + self.kernel2.diag(x)


class Product(Kernel):
    """Product of two kernels, ``k(x, x') = k1(x, x') k2(x, x')`` (what ``k1 * k2`` builds).

    ``Periodic(...) * Matern32(...)`` is the quasi-periodic kernel.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Matern32, Periodic
    >>> k = Periodic(1.0, 1.0, period=1.0) * Matern32(5.0, 1.0)   # quasi-periodic
    >>> float(k(jnp.zeros((1, 1)), jnp.ones((1, 1)))[0, 0]) < 1.0  # decays across periods
    True
    """

    kernel1: Kernel
    kernel2: Kernel

    def __call__(self, x1: Array, x2: Array) -> Array:
        return self.kernel1(x1, x2) * self.kernel2(x1, x2)

    def diag(self, x: Array) -> Array:
        return self.kernel1.diag(x) * self.kernel2.diag(x)
