r"""Predictive posteriors of a latent function at ``q`` points, shared by every family.

Two representations cover the families and engines of probkit, and both satisfy the BO
``Posterior`` protocol (:mod:`probkit.bo.protocol`: ``mean``, ``variance``,
``sample(key, num_samples)``):

* :class:`GaussianPosterior` — a joint Gaussian (exact GP, Student-t process in its Gaussian
  limit, Laplace / linearised BNNs);
* :class:`SamplePosterior` — an ensemble of joint function draws (HMC/SGHMC draws of a BNN,
  martingale-posterior NP draws): ``mean``/``variance`` are the draw moments and ``sample``
  resamples whole draws, so samples are joint over the points by construction.

They live on the engines' floor so that model families (``probkit.models``) can return them
without importing ``probkit.bo``.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.posterior import SamplePosterior
>>> post = SamplePosterior(jnp.array([[0.0, 1.0], [2.0, 3.0]]))
>>> post.mean
Array([1., 2.], dtype=float32)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["GaussianPosterior", "SamplePosterior"]


class GaussianPosterior(eqx.Module):
    r"""Joint Gaussian posterior :math:`f(x_{1:q}) \sim N(\mu, \Sigma)`.

    Parameters
    ----------
    loc : Array of shape (q,)
        Mean :math:`\mu`.
    cov : Array of shape (q, q)
        Covariance :math:`\Sigma`. Samples use ``cholesky(cov + jitter * I)``.
    jitter : float
        Diagonal added before the Cholesky factorisation (default 1e-9, relative to the
        largest variance).
    """

    loc: Array
    cov: Array
    jitter: float = eqx.field(static=True, default=1e-9)

    @property
    def mean(self) -> Array:
        return self.loc

    @property
    def variance(self) -> Array:
        with jax.enable_x64(self.cov.dtype == jnp.float64):
            return jnp.maximum(jnp.diagonal(self.cov), 1e-12)

    def sample(self, key: Array, num_samples: int) -> Array:
        with jax.enable_x64(self.cov.dtype == jnp.float64):
            q = self.loc.shape[0]
            var = jnp.maximum(jnp.diagonal(self.cov), 1e-12)
            jitter = self.jitter * jnp.max(var) + 1e-12
            chol = jnp.linalg.cholesky(self.cov + jitter * jnp.eye(q, dtype=self.cov.dtype))
            eps = jax.random.normal(key, (num_samples, q), dtype=self.loc.dtype)
            return self.loc + eps @ chol.T


class SamplePosterior(eqx.Module):
    """Posterior represented by ``S`` joint function draws of shape ``(S, q)``.

    ``sample(key, n)`` picks ``n`` whole draws uniformly with replacement, so it is joint over the
    ``q`` points and differentiable in the draws (hence in ``x`` when the draws are).
    """

    draws: Array

    @property
    def mean(self) -> Array:
        with jax.enable_x64(self.draws.dtype == jnp.float64):
            return jnp.mean(self.draws, axis=0)

    @property
    def variance(self) -> Array:
        with jax.enable_x64(self.draws.dtype == jnp.float64):
            return jnp.maximum(jnp.var(self.draws, axis=0), 1e-12)

    def sample(self, key: Array, num_samples: int) -> Array:
        idx = jax.random.randint(key, (num_samples,), 0, self.draws.shape[0])
        return self.draws[idx]
