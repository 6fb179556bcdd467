"""Stationary kernels of the scaled distance (RBF, Matern) and the periodic kernel."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from probkit._checks import check_hyperparameter
from probkit.kernels.base import _TINY, Kernel, as_2d, sqdist

__all__ = ["Stationary", "RBF", "Matern12", "Matern32", "Matern52", "Periodic"]


class Stationary(Kernel):
    """A kernel of the scaled Euclidean distance, with ARD lengthscales.

    Parameters
    ----------
    lengthscale : float or array of shape (d,)
        Positive lengthscale(s) :math:`\\ell`.
    variance : float
        Positive output variance :math:`\\sigma^2`.

    Raises
    ------
    ValueError
        If a concrete (non-traced) hyperparameter is not finite and positive. Traced values
        (a sampler's proposal inside a NumPyro model) are not checked: a bad proposal yields a
        -inf or NaN log density, which the sampler rejects.
    """

    lengthscale: Array
    variance: Array

    def __init__(self, lengthscale=1.0, variance=1.0):
        self.lengthscale = check_hyperparameter("lengthscale", lengthscale)
        self.variance = check_hyperparameter("variance", variance)

    def profile(self, r: Array) -> Array:
        """Correlation as a function of the scaled distance ``r >= 0``."""
        raise NotImplementedError

    def scaled_sqdist(self, x1: Array, x2: Array) -> Array:
        """Squared distance after dividing each input dimension by its lengthscale."""
        return sqdist(as_2d(x1) / self.lengthscale, as_2d(x2) / self.lengthscale)

    def __call__(self, x1: Array, x2: Array) -> Array:
        d2 = self.scaled_sqdist(x1, x2)
        # sqrt has an infinite gradient at 0: clamp the exact zeros of the diagonal to a tiny
        # positive value (r = 1e-18 there, zero gradient). Not the usual double-where guard:
        # with jax 0.10.2 on CPU, jit(vmap(value_and_grad(.))) of that form returned wrong
        # Matern values (tests/test_kernels.py::test_stationary_kernels_under_jit_vmap_grad).
        r = jnp.sqrt(jnp.maximum(d2, _TINY))
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


class Periodic(Kernel):
    r"""Periodic (exp-sine-squared) kernel of MacKay (1998), a product over input dimensions:

    .. math:: k(x, x') = \sigma^2 \exp\Big(-2 \sum_j \sin^2(\pi |x_j - x'_j| / p) / \ell_j^2\Big).

    Parameters
    ----------
    lengthscale : float or array of shape (d,)
        Positive lengthscale(s) :math:`\ell`.
    variance : float
        Positive output variance :math:`\sigma^2`.
    period : float or array of shape (d,)
        Positive period(s) :math:`p`.

    Raises
    ------
    ValueError
        If a concrete hyperparameter is not finite and positive (traced values are not checked,
        as for :class:`Stationary`).

    Notes
    -----
    With one input dimension it has a state-space form as a truncated series of harmonics,
    with a bounded truncation error (:class:`probkit.statespace.PeriodicSDE`); ``Periodic(...)
    * Matern32(...)`` is the quasi-periodic kernel.
    """

    lengthscale: Array
    variance: Array
    period: Array

    def __init__(self, lengthscale=1.0, variance=1.0, period=1.0):
        self.lengthscale = check_hyperparameter("lengthscale", lengthscale)
        self.variance = check_hyperparameter("variance", variance)
        self.period = check_hyperparameter("period", period)

    def __call__(self, x1: Array, x2: Array) -> Array:
        a, b = as_2d(x1), as_2d(x2)
        s = jnp.sin(jnp.pi * jnp.abs(a[:, None, :] - b[None, :, :]) / self.period)
        return self.variance * jnp.exp(-2.0 * jnp.sum((s / self.lengthscale) ** 2, axis=-1))

    def diag(self, x: Array) -> Array:
        x = as_2d(x)
        return jnp.full(x.shape[:1], self.variance, dtype=jnp.result_type(x, self.variance))
