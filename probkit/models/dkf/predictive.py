r"""The DKF's predictive distribution: a Gaussian over the latent state at every time step.

:class:`StateGaussian` holds :math:`N(\mu_t, \Sigma_t)` for :math:`t = 1, \dots, T` (the filtering
distributions :math:`p(z_t \mid x_{1:t})` or the smoothed :math:`p(z_t \mid x_{1:T})`): batch shape
``(T,)`` (``(B, T)`` for trials), event shape ``(D,)``. It is a NumPyro ``Distribution`` with the
interface of :class:`probkit.posterior.Predictive`: ``mean`` and ``variance`` ``(T, D)``,
``log_prob(z)`` ``(T,)`` (the multivariate normal density of each step), marginal ``cdf``/``icdf``
and ``interval`` per coordinate (exact), and ``sample(key, shape)`` of shape ``shape + (T, D)``.
Each step is drawn from its own marginal: the draws are independent across steps (the
distribution describes per-step marginals, not the joint law of the path).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.models.dkf import StateGaussian
>>> p = StateGaussian(jnp.zeros((5, 2)), jnp.tile(jnp.eye(2), (5, 1, 1)))
>>> p.batch_shape, p.event_shape, p.sample(jax.random.key(0), (3,)).shape
((5,), (2,), (3, 5, 2))
>>> round(float(p.log_prob(jnp.zeros((5, 2)))[0]), 4)  # -log(2 pi)
-1.8379
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import ndtr, ndtri
from numpyro.distributions import constraints

from probkit.posterior import Predictive, _numerics, _sample_shape, _x64

__all__ = ["StateGaussian"]


class StateGaussian(Predictive):
    r"""Gaussian :math:`N(\mu_t, \Sigma_t)` over a ``D``-dimensional state at each of ``T`` steps.

    Parameters
    ----------
    loc : Array ``(..., T, D)``
        Means :math:`\mu_t`.
    cov : Array ``(..., T, D, D)``
        Covariances :math:`\Sigma_t` (symmetric positive definite).
    """

    arg_constraints = {"loc": constraints.real_vector}
    support = constraints.real_vector
    pytree_data_fields = ("loc", "cov")

    def __init__(self, loc, cov):
        self.loc = jnp.asarray(loc)
        self.cov = jnp.asarray(cov)
        if self.loc.ndim < 2 or self.cov.shape != self.loc.shape + self.loc.shape[-1:]:
            raise ValueError(f"cov: expected shape loc.shape + (D,) with loc (..., T, D); got "
                             f"loc {self.loc.shape} and cov {self.cov.shape}")
        with jax.enable_x64(_x64(self.loc, self.cov)):
            dist.Distribution.__init__(self, batch_shape=self.loc.shape[:-1],
                                       event_shape=self.loc.shape[-1:])

    @property
    @_numerics
    def mean(self) -> Array:
        return self.loc

    @property
    @_numerics
    def variance(self) -> Array:
        """Marginal variances ``(..., T, D)`` (the diagonals of the covariances)."""
        return jnp.diagonal(self.cov, axis1=-2, axis2=-1)

    @property
    @_numerics
    def covariance_matrix(self) -> Array:
        return self.cov

    @_numerics
    def log_prob(self, value) -> Array:
        """:math:`\\log N(z_t; \\mu_t, \\Sigma_t)` of states ``(..., T, D)``, shape ``(..., T)``."""
        diff = jnp.asarray(value, self.loc.dtype) - self.loc
        d = self.loc.shape[-1]
        chol = jnp.broadcast_to(jnp.linalg.cholesky(self.cov), diff.shape + (d,))
        r = solve_triangular(chol, diff[..., None], lower=True)[..., 0]
        logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        return -0.5 * jnp.sum(r**2, -1) - logdet - 0.5 * d * math.log(2 * math.pi)

    @_numerics
    def cdf(self, value) -> Array:
        """Marginal CDF of each coordinate, ``(..., T, D)``."""
        sd = jnp.sqrt(jnp.diagonal(self.cov, axis1=-2, axis2=-1))
        return ndtr((jnp.asarray(value, self.loc.dtype) - self.loc) / sd)

    @_numerics
    def icdf(self, q) -> Array:
        """Marginal quantile of each coordinate at probability ``q``, ``(..., T, D)``."""
        sd = jnp.sqrt(jnp.diagonal(self.cov, axis1=-2, axis2=-1))
        return self.loc + sd * ndtri(jnp.asarray(q, self.loc.dtype))

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        """Draws ``sample_shape + (..., T, D)``, independent across steps."""
        shape = _sample_shape(sample_shape) + self.loc.shape
        eps = jax.random.normal(key, shape, dtype=self.loc.dtype)
        return self.loc + jnp.einsum("...ij,...j->...i", jnp.linalg.cholesky(self.cov), eps)
