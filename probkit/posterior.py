r"""Predictive distributions that every family returns, as NumPyro ``Distribution`` objects.

``fitted.predict(x)`` (over ``y``) and ``fitted.posterior(x)`` (over the latent ``f``) return one
of these, with batch shape ``(n,)`` for ``n`` query points and event shape ``()``: the marginal
at each point is what ``mean``, ``variance``, ``log_prob``, ``cdf`` and ``icdf`` describe, while
``sample(key, sample_shape)`` draws *jointly* over the ``n`` points where the representation allows
it (a full covariance, one mixture component or one ensemble member per draw).

* :class:`Gaussian` — :math:`N(\mu, \Sigma)` (exact GP, linear-Gaussian filters) or independent
  normals when only the variances are known;
* :class:`Mixture` — :math:`\frac1K\sum_k \prod_j N(y_j; \mu_{kj}, \sigma_{kj}^2)`: posterior
  draws plus observation noise (BNN ensembles, HMC draws of a regression model, martingale-
  posterior pseudo-contexts); ``log_prob`` is the exact mixture density;
* :class:`Empirical` — an ensemble of joint draws of ``f`` with no noise (``log_prob`` is not
  defined and says so).

All three are pytrees (NumPyro distributions are), so a fitted model can return them inside
``jax.jit`` (the BO acquisition optimiser does). Parameters keep their dtype; read outside an
x64 context, float64 results come back as NumPy arrays (:func:`export`), so they never carry
float64 into float32 JAX code and never trigger JAX's truncation warnings.

``sample(key, 5)`` is accepted as shorthand for ``sample(key, (5,))``.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.posterior import Gaussian
>>> p = Gaussian(jnp.zeros(2), cov=jnp.eye(2))
>>> p.batch_shape, p.sample(jax.random.key(0), (3,)).shape
((2,), (3, 2))
>>> round(float(p.icdf(0.975)[0]), 3)
1.96
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import ndtr, ndtri
from numpyro.distributions import constraints

from probkit.special import log_ei, logmeanexp, normal_logpdf

__all__ = ["Predictive", "Gaussian", "Mixture", "Empirical", "export"]


def export(value):
    """Return ``value`` unchanged inside a trace or an x64 context; otherwise a float64 JAX array
    becomes a NumPy array, so float64 results do not leak into float32 JAX code."""
    if isinstance(value, jax.core.Tracer) or jax.config.jax_enable_x64:
        return value
    if isinstance(value, jax.Array) and value.dtype == jnp.float64:
        return np.asarray(value)
    return value


def _x64(*arrays) -> bool:
    return any(getattr(a, "dtype", None) == jnp.float64 for a in arrays)


def _numerics(method):
    """Run ``method`` in float64 when the distribution's parameters are float64 (and never turn
    float64 off where the caller has it on: float64 arguments would be truncated), then
    :func:`export` the result (outside that context)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with jax.enable_x64(jax.config.jax_enable_x64 or _x64(*self._params())):
            out = method(self, *args, **kwargs)
        return jax.tree_util.tree_map(export, out)

    return wrapper


def _sample_shape(sample_shape) -> tuple[int, ...]:
    if isinstance(sample_shape, int | np.integer):
        return (int(sample_shape),)
    return tuple(sample_shape)


class Predictive(dist.Distribution):
    """Common interface of probkit's predictive distributions (batch shape ``(n,)``).

    Subclasses define ``mean``, ``variance``, ``log_prob``, ``cdf``, ``sample`` and either an
    exact ``icdf`` or the bracket used by the generic bisection :meth:`icdf`.
    """

    support = constraints.real
    reparametrized_params: list = []

    def _params(self) -> tuple:
        return tuple(getattr(self, n) for n in type(self).gather_pytree_data_fields())

    def _init(self, batch_shape: tuple[int, ...]) -> None:
        with jax.enable_x64(_x64(*self._params())):
            super().__init__(batch_shape=batch_shape, event_shape=())

    @property
    @_numerics
    def stddev(self) -> Array:
        return jnp.sqrt(jnp.asarray(self.variance))

    def _bracket(self) -> tuple[Array, Array]:
        sd = jnp.sqrt(jnp.asarray(self.variance))
        m = jnp.asarray(self.mean)
        return m - 40.0 * sd - 1.0, m + 40.0 * sd + 1.0

    @_numerics
    def icdf(self, q) -> Array:
        """Quantile at probability ``q`` (scalar or broadcastable to the batch), by bisection on
        the exact CDF (80 halvings: exact to the float resolution)."""
        q = jnp.asarray(q)
        lo, hi = self._bracket()
        lo, hi = jnp.broadcast_arrays(lo, hi, q)[:2]

        def body(_, lohi):
            lo, hi = lohi
            mid = 0.5 * (lo + hi)
            below = jnp.asarray(self.cdf(mid)) < q
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, body, (lo, hi))
        return 0.5 * (lo + hi)

    def quantile(self, probs: float | Sequence[float] | Array) -> Array:
        """Quantiles: scalar ``probs`` gives ``(n,)``; ``probs`` ``(r,)`` gives ``(r, n)``."""
        probs = jnp.asarray(probs)
        if probs.ndim == 0:
            return self.icdf(probs)
        return jnp.stack([jnp.asarray(self.icdf(p)) for p in probs])

    def interval(self, level: float = 0.95) -> tuple[Array, Array]:
        """Central interval holding ``level`` of the marginal mass at each point."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
        a = 0.5 * (1.0 - level)
        return self.icdf(a), self.icdf(1.0 - a)


class Gaussian(Predictive):
    r"""Gaussian predictive :math:`N(\mu, \Sigma)` at ``n`` points.

    Parameters
    ----------
    loc : Array ``(n,)``
        Mean :math:`\mu`.
    cov : Array ``(n, n)``, optional
        Joint covariance :math:`\Sigma`; samples use ``cholesky(cov + jitter I)`` with
        ``jitter`` relative to the largest variance.
    scale : Array ``(n,)``, optional
        Marginal standard deviations, when only those are known (samples then are independent
        across points). Exactly one of ``cov`` and ``scale`` is given.
    jitter : float
        Relative diagonal jitter for the Cholesky factor of ``cov`` (default 1e-9).
    """

    arg_constraints = {"loc": constraints.real_vector}
    pytree_data_fields = ("loc", "cov", "scale")
    pytree_aux_fields = ("jitter",)

    def __init__(self, loc, *, cov=None, scale=None, jitter: float = 1e-9):
        if (cov is None) == (scale is None):
            raise ValueError("Gaussian: give exactly one of cov and scale")
        with jax.enable_x64(_x64(loc, cov, scale)):
            self.loc = jnp.asarray(loc)
            self.cov = None if cov is None else jnp.asarray(cov)
            self.scale = None if scale is None else jnp.asarray(scale)
        self.jitter = jitter
        self._init(self.loc.shape[-1:])

    @property
    def joint(self) -> bool:
        """Whether samples are joint over the points (a covariance is known)."""
        return self.cov is not None

    def _var(self) -> Array:
        if self.cov is not None:
            return jnp.maximum(jnp.diagonal(self.cov, axis1=-2, axis2=-1), 1e-12)
        return self.scale**2

    @property
    @_numerics
    def mean(self) -> Array:
        return self.loc

    @property
    @_numerics
    def variance(self) -> Array:
        return self._var()

    @_numerics
    def log_prob(self, value) -> Array:
        """Marginal log density at each point (batch shape ``(n,)``)."""
        return normal_logpdf(jnp.asarray(value, self.loc.dtype), self.loc, jnp.sqrt(self._var()))

    @_numerics
    def cdf(self, value) -> Array:
        return ndtr((jnp.asarray(value, self.loc.dtype) - self.loc) / jnp.sqrt(self._var()))

    @_numerics
    def icdf(self, q) -> Array:
        return self.loc + jnp.sqrt(self._var()) * ndtri(jnp.asarray(q, self.loc.dtype))

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        """Draws of shape ``sample_shape + (n,)``, joint over the points when ``cov`` is known."""
        shape = _sample_shape(sample_shape) + self.loc.shape
        eps = jax.random.normal(key, shape, dtype=self.loc.dtype)
        if self.cov is None:
            return self.loc + self.scale * eps
        n = self.loc.shape[-1]
        var = self._var()
        jitter = self.jitter * jnp.max(var) + 1e-12
        chol = jnp.linalg.cholesky(self.cov + jitter * jnp.eye(n, dtype=self.cov.dtype))
        return self.loc + eps @ jnp.swapaxes(chol, -1, -2)


class Mixture(Predictive):
    r"""Equally weighted mixture of ``K`` joint Gaussians with diagonal covariance,
    :math:`\frac1K\sum_k \prod_j N(y_j; \mu_{kj}, \sigma_{kj}^2)`.

    One component is one posterior draw (network weights, HMC draw, pseudo context), so samples
    pick one component for all points (joint), and the marginal density at each point is the
    exact mixture density :math:`\log\frac1K\sum_k N(y_j; \mu_{kj}, \sigma_{kj}^2)`.

    Parameters
    ----------
    loc : Array ``(K, n)``
    scale : Array ``(K, n)`` or broadcastable (e.g. a scalar noise standard deviation)
    """

    arg_constraints = {"loc": constraints.real_matrix}
    pytree_data_fields = ("loc", "scale")

    def __init__(self, loc, scale):
        with jax.enable_x64(_x64(loc, scale)):
            self.loc = jnp.asarray(loc)
            if self.loc.ndim != 2:
                raise ValueError(f"loc: expected shape (K, n), got {self.loc.shape}")
            self.scale = jnp.broadcast_to(jnp.asarray(scale, self.loc.dtype), self.loc.shape)
        self._init(self.loc.shape[-1:])

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    @property
    @_numerics
    def mean(self) -> Array:
        return jnp.mean(self.loc, axis=0)

    @property
    @_numerics
    def variance(self) -> Array:
        r"""Law of total variance: mean of :math:`\sigma_k^2` plus variance of :math:`\mu_k`."""
        return jnp.mean(self.scale**2, axis=0) + jnp.var(self.loc, axis=0)

    @_numerics
    def log_prob(self, value) -> Array:
        """Pointwise log mixture density, shape ``(..., n)``."""
        y = jnp.asarray(value, self.loc.dtype)[..., None, :]
        return logmeanexp(normal_logpdf(y, self.loc, self.scale), axis=-2)

    @_numerics
    def cdf(self, value) -> Array:
        y = jnp.asarray(value, self.loc.dtype)[..., None, :]
        return jnp.mean(ndtr((y - self.loc) / self.scale), axis=-2)

    def _bracket(self) -> tuple[Array, Array]:
        return (jnp.min(self.loc - 40.0 * self.scale, axis=0) - 1e-6,
                jnp.max(self.loc + 40.0 * self.scale, axis=0) + 1e-6)

    @_numerics
    def log_expected_improvement(self, best) -> Array:
        r"""Exact log expected improvement below ``best`` at each point,
        :math:`\log \frac1K \sum_k \sigma_k h((\text{best} - \mu_k)/\sigma_k)` with
        :math:`h(z) = \varphi(z) + z\Phi(z)` (each term by :func:`probkit.special.log_ei`):
        the improvement averaged over the components (one per posterior draw), not the
        Gaussian of the mixture's mean and variance. Used by :class:`probkit.bo.LogEI`."""
        best = jnp.asarray(best, self.loc.dtype)
        scale = jnp.maximum(self.scale, jnp.finfo(self.loc.dtype).tiny ** 0.25)
        return logmeanexp(log_ei(self.loc, scale**2, best), axis=0)

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        """Joint draws ``sample_shape + (n,)``: a component per draw, then independent noise."""
        shape = _sample_shape(sample_shape)
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, shape, 0, self.num_components)
        eps = jax.random.normal(k2, shape + self.loc.shape[-1:], self.loc.dtype)
        return self.loc[idx] + self.scale[idx] * eps


class Empirical(Predictive):
    """An ensemble of ``S`` joint draws of the latent function, shape ``(S, n)``.

    ``sample(key, shape)`` resamples whole draws uniformly with replacement (joint over the
    points, and differentiable in the draws); ``mean``/``variance`` are the ensemble moments and
    ``cdf``/``icdf`` those of the empirical distribution. ``log_prob`` is undefined (the ensemble
    has no density) and raises.
    """

    arg_constraints = {"draws": constraints.real_matrix}
    pytree_data_fields = ("draws",)

    def __init__(self, draws):
        with jax.enable_x64(_x64(draws)):
            self.draws = jnp.asarray(draws)
        if self.draws.ndim != 2:
            raise ValueError(f"draws: expected shape (S, n), got {self.draws.shape}")
        self._init(self.draws.shape[-1:])

    @property
    @_numerics
    def mean(self) -> Array:
        return jnp.mean(self.draws, axis=0)

    @property
    @_numerics
    def variance(self) -> Array:
        return jnp.maximum(jnp.var(self.draws, axis=0), 1e-12)

    @_numerics
    def log_prob(self, value) -> Array:
        raise NotImplementedError("Empirical: an ensemble of draws has no density; use the "
                                  "family's predict(x), which adds the observation noise")

    @_numerics
    def cdf(self, value) -> Array:
        y = jnp.asarray(value, self.draws.dtype)[..., None, :]
        return jnp.mean(self.draws <= y, axis=-2).astype(self.draws.dtype)

    @_numerics
    def icdf(self, q) -> Array:
        """Empirical quantile (linear interpolation between order statistics)."""
        return jnp.quantile(self.draws, jnp.asarray(q), axis=0)

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        idx = jax.random.randint(key, _sample_shape(sample_shape), 0, self.draws.shape[0])
        return self.draws[idx]
