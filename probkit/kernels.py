r"""Covariance functions shared by every GP-based family.

Each kernel is an :class:`equinox.Module` (a pytree, so its hyperparameters can be
differentiated, optimised with optax or sampled in a NumPyro model) with

* ``kernel(x1, x2) -> (n1, n2)`` Gram matrix for inputs of shape ``(n, d)``;
* ``kernel.diag(x) -> (n,)`` the exact diagonal.

Stationary kernels are written in terms of the scaled distance
:math:`r = \lVert (x - x') / \ell \rVert_2` with ARD lengthscales :math:`\ell`:

* RBF: :math:`k(r) = \sigma^2 \exp(-r^2/2)`;
* Matern-1/2: :math:`\sigma^2 e^{-r}`;
* Matern-3/2: :math:`\sigma^2 (1 + \sqrt3 r) e^{-\sqrt3 r}`;
* Matern-5/2: :math:`\sigma^2 (1 + \sqrt5 r + 5r^2/3) e^{-\sqrt5 r}`
  (Rasmussen & Williams 2006, eq. 4.17).

Kernels compute in the dtype of their inputs: pass float64 arrays (with
``jax.config.update("jax_enable_x64", True)`` or inside ``jax.experimental.enable_x64()``)
where Cholesky factorisations need it.

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.kernels import Matern32
>>> k = Matern32(lengthscale=0.5, variance=2.0)
>>> K = k(jnp.linspace(0, 1, 4)[:, None], jnp.linspace(0, 1, 4)[:, None])
>>> K.shape
(4, 4)
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

__all__ = ["Kernel", "Stationary", "RBF", "Matern12", "Matern32", "Matern52", "as_2d"]


def as_2d(x: Array) -> Array:
    """View 1-D inputs ``(n,)`` as ``(n, 1)``; leave ``(n, d)`` unchanged."""
    x = jnp.asarray(x)
    return x[:, None] if x.ndim == 1 else x


class Kernel(eqx.Module):
    """Base class: a positive-definite covariance function on :math:`\\mathbb{R}^d`."""

    def __call__(self, x1: Array, x2: Array) -> Array:
        raise NotImplementedError

    def diag(self, x: Array) -> Array:
        """Exact diagonal ``k(x_i, x_i)``."""
        x = as_2d(x)
        return jnp.diagonal(self(x, x))


class Stationary(Kernel):
    """A kernel of the scaled Euclidean distance, with ARD lengthscales.

    Parameters
    ----------
    lengthscale : float or array of shape (d,)
        Positive lengthscale(s) :math:`\\ell`.
    variance : float
        Positive output variance :math:`\\sigma^2`.
    """

    lengthscale: Array
    variance: Array

    def __init__(self, lengthscale=1.0, variance=1.0):
        self.lengthscale = jnp.asarray(lengthscale)
        self.variance = jnp.asarray(variance)

    def profile(self, r: Array) -> Array:
        """Correlation as a function of the scaled distance ``r >= 0``."""
        raise NotImplementedError

    def scaled_sqdist(self, x1: Array, x2: Array) -> Array:
        """Squared distance after dividing each input dimension by its lengthscale."""
        a = as_2d(x1) / self.lengthscale
        b = as_2d(x2) / self.lengthscale
        d2 = jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T
        return jnp.maximum(d2, 0.0)

    def __call__(self, x1: Array, x2: Array) -> Array:
        d2 = self.scaled_sqdist(x1, x2)
        # sqrt has an infinite gradient at 0: guard the exact zeros of the diagonal.
        safe = jnp.where(d2 > 0, d2, 1.0)
        r = jnp.where(d2 > 0, jnp.sqrt(safe), 0.0)
        return self.variance * self.profile(r)

    def diag(self, x: Array) -> Array:
        x = as_2d(x)
        return jnp.full(x.shape[:1], self.variance, dtype=jnp.result_type(x, self.variance))


class RBF(Stationary):
    """Squared-exponential kernel :math:`\\sigma^2 \\exp(-r^2/2)`."""

    def __call__(self, x1: Array, x2: Array) -> Array:
        return self.variance * jnp.exp(-0.5 * self.scaled_sqdist(x1, x2))

    def profile(self, r: Array) -> Array:
        return jnp.exp(-0.5 * r**2)


class Matern12(Stationary):
    """Matern-1/2 (exponential, Ornstein-Uhlenbeck) kernel :math:`\\sigma^2 e^{-r}`."""

    nu = 0.5

    def profile(self, r: Array) -> Array:
        return jnp.exp(-r)


class Matern32(Stationary):
    """Matern-3/2 kernel :math:`\\sigma^2 (1+\\sqrt3 r) e^{-\\sqrt3 r}`."""

    nu = 1.5

    def profile(self, r: Array) -> Array:
        s = jnp.sqrt(3.0) * r
        return (1.0 + s) * jnp.exp(-s)


class Matern52(Stationary):
    """Matern-5/2 kernel :math:`\\sigma^2 (1+\\sqrt5 r+5r^2/3) e^{-\\sqrt5 r}`."""

    nu = 2.5

    def profile(self, r: Array) -> Array:
        s = jnp.sqrt(5.0) * r
        return (1.0 + s + s**2 / 3.0) * jnp.exp(-s)
