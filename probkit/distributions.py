"""New NumPyro distributions used by probkit's model families.

Each class follows NumPyro's conventions (``support``, ``arg_constraints``, batch and
event shapes, ``validate_args``), so it can be used in any NumPyro model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import lax
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes, validate_sample

from probkit._checks import as_array, check_key, check_positive
from probkit.inference.kalman import gp_log_likelihood
from probkit.statespace import as_sde, check_times, sample_lgssm, to_lgssm

__all__ = ["BurrXII", "StateSpaceGP"]


class BurrXII(dist.Distribution):
    r"""Burr type XII distribution on :math:`(0, \infty)` (Burr 1942; Singh-Maddala).

    .. math::

        p(x) = \frac{c\, d}{\lambda} \Big(\frac{x}{\lambda}\Big)^{c-1}
               \Big(1 + \big(\tfrac{x}{\lambda}\big)^{c}\Big)^{-d-1},\qquad
        F(x) = 1 - \Big(1 + \big(\tfrac{x}{\lambda}\big)^{c}\Big)^{-d},

    the same law as ``scipy.stats.burr12(c, d, scale=lambda)``. Its right tail decays like
    :math:`x^{-cd-1}` (moments of order :math:`< cd` exist), so it serves as a heavy-tailed
    scale prior for scale mixtures of NNGPs (Lee et al., ICLR 2022, App. E). Sampling is by
    inversion, :math:`x = \lambda((1-u)^{-1/d} - 1)^{1/c}`, and is reparametrised.

    Parameters
    ----------
    c, d : array_like
        Positive shape parameters.
    scale : array_like
        Positive scale :math:`\lambda` (default 1).

    Examples
    --------
    >>> import jax
    >>> from probkit.distributions import BurrXII
    >>> d = BurrXII(2.0, 3.0)
    >>> x = d.sample(jax.random.key(0), (1000,))
    >>> bool((x > 0).all())
    True
    """

    arg_constraints = {"c": constraints.positive, "d": constraints.positive,
                       "scale": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["c", "d", "scale"]
    pytree_data_fields = ("c", "d", "scale")

    def __init__(self, c, d, scale=1.0, *, validate_args=None):
        self.c, self.d, self.scale = promote_shapes(c, d, scale)
        batch_shape = lax.broadcast_shapes(jnp.shape(c), jnp.shape(d), jnp.shape(scale))
        self.c, self.d, self.scale = (jnp.broadcast_to(v, batch_shape)
                                      for v in (self.c, self.d, self.scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.result_type(float)).tiny)
        return self.icdf(u)

    @validate_sample
    def log_prob(self, value):
        z = value / self.scale
        return (jnp.log(self.c) + jnp.log(self.d) - jnp.log(self.scale)
                + (self.c - 1.0) * jnp.log(z) - (self.d + 1.0) * jnp.log1p(z**self.c))

    def cdf(self, value):
        z = value / self.scale
        return -jnp.expm1(-self.d * jnp.log1p(z**self.c))

    def icdf(self, q):
        # (1 - q)^(-1/d) - 1 computed as expm1(-log1p(-q)/d) for accuracy near 0.
        return self.scale * jnp.expm1(-jnp.log1p(-q) / self.d) ** (1.0 / self.c)

    def _moment(self, k):
        # E[x^k] = lambda^k d B(d - k/c, 1 + k/c), finite iff c d > k.
        a = self.d - k / self.c
        logm = (k * jnp.log(self.scale) + jnp.log(self.d) + gammaln(jnp.where(a > 0, a, 1.0))
                + gammaln(1.0 + k / self.c) - gammaln(self.d + 1.0))
        return jnp.where(a > 0, jnp.exp(logm), jnp.inf)

    @property
    def mean(self):
        return self._moment(1.0)

    @property
    def variance(self):
        m1, m2 = self._moment(1.0), self._moment(2.0)
        return jnp.where(jnp.isfinite(m2), m2 - m1**2, jnp.inf)


class StateSpaceGP(dist.Distribution):
    r"""Noisy 1-D Matern GP at sorted times, with an O(T) Kalman-filter ``log_prob``.

    .. math::

        y_k = f(t_k) + \epsilon_k,\qquad f \sim \mathcal{GP}(0, k_\theta),\qquad
        \epsilon_k \sim \mathcal N(0, \sigma^2_k),

    i.e. :math:`y \sim \mathcal N(0, K_\theta + \mathrm{diag}(\sigma^2))`, but ``log_prob``
    runs :func:`probkit.inference.kalman.kalman_filter` on the state-space form of
    :math:`k_\theta` (:mod:`probkit.statespace`; Hartikainen & Särkkä 2010), so NUTS over
    kernel hyperparameters costs O(T) per gradient instead of O(T^3). NaN entries of the value
    are missing observations (marginalised out). ``sample`` draws from the prior exactly
    (state-space recursion with exact discretisation). Use float64
    (``with jax.enable_x64(True):``) for long or smooth series.

    Parameters
    ----------
    kernel : probkit.statespace.SDE or a kernel with a state-space form
        Matern, Cosine, Periodic, SHO, Celerite, or sums and products of them
        (:func:`probkit.statespace.as_sde`).
        Its hyperparameters may be NumPyro sample sites.
    times : array_like, shape (T,)
        Strictly increasing, finite (checked eagerly when concrete).
    noise : float or array of shape (T,)
        Observation-noise variance, > 0.
    parallel : bool
        Associative-scan filter (for accelerators).

    Raises
    ------
    ValueError
        Naming the argument: ``times`` not 1-D, empty, non-finite, unsorted or duplicated;
        ``noise`` of the wrong shape or (when concrete) not finite and positive; a ``kernel``
        without a state-space form; in :meth:`log_prob`, a ``value`` whose trailing dimension
        is not ``T`` or that is not numeric; in :meth:`sample`, a ``key`` that is not a PRNG
        key. Traced values are not checked.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro
    >>> import numpyro.distributions as nd
    >>> from probkit.kernels import Matern32
    >>> from probkit.distributions import StateSpaceGP
    >>> t = jnp.linspace(0.0, 1.0, 30)
    >>> def model(t, y=None):
    ...     ls = numpyro.sample("lengthscale", nd.LogNormal(0.0, 1.0))
    ...     return numpyro.sample("y", StateSpaceGP(Matern32(ls, 1.0), t, 0.1), obs=y)
    >>> y = StateSpaceGP(Matern32(0.3, 1.0), t, 0.1).sample(jax.random.key(0))
    >>> y.shape
    (30,)
    """

    arg_constraints = {"noise": constraints.positive}
    support = constraints.real_vector
    pytree_data_fields = ("sde", "times", "noise")
    pytree_aux_fields = ("parallel",)

    def __init__(self, kernel, times, noise, *, parallel: bool = False, validate_args=None):
        check_times("times", times)
        self.sde = as_sde(kernel)
        self.times = jnp.asarray(times)
        if not jnp.issubdtype(self.times.dtype, jnp.floating):
            self.times = self.times.astype(jnp.result_type(float))
        if not isinstance(noise, jax.core.Tracer):
            check_positive("noise", noise)
        self.noise = jnp.asarray(noise)
        T = self.times.shape[0]
        if self.noise.ndim > 1 or (self.noise.ndim == 1 and self.noise.shape[0] != T):
            raise ValueError(f"noise: expected a scalar or shape ({T},), got {self.noise.shape}")
        self.parallel = bool(parallel)
        super().__init__(batch_shape=(), event_shape=(T,), validate_args=validate_args)

    def _params(self):
        return to_lgssm(self.sde, self.times, self.noise, validate=False)

    def _validate_sample(self, value):
        # NaN marks a missing observation and is in the support here; inf is not.
        value = jnp.asarray(value)
        mask = jnp.all(jnp.isnan(value) | jnp.isfinite(value), axis=-1)
        if not isinstance(mask, jax.core.Tracer) and not bool(jnp.all(mask)):
            import warnings

            warnings.warn("StateSpaceGP: value holds inf (NaN marks a missing observation)",
                          stacklevel=2)
        return mask

    def log_prob(self, value):
        if not isinstance(value, jax.core.Tracer):
            value = as_array("value", value)
        value = jnp.asarray(value)
        T = self.event_shape[0]
        if value.shape[-1:] != (T,):
            raise ValueError(f"value: expected trailing shape ({T},), got {value.shape}")
        if self._validate_args:
            self._validate_sample(value)
        batch = value.shape[:-1]
        flat = value.reshape((-1, T))
        ll = jax.vmap(lambda y: gp_log_likelihood(self.sde, self.times, y, self.noise,
                                                  parallel=self.parallel, validate=False))(flat)
        return ll.reshape(batch)

    def sample(self, key, sample_shape=()):
        key = check_key("key", key)
        T = self.event_shape[0]
        params = self._params()
        n = 1
        for s in sample_shape:
            n *= s
        keys = jax.random.split(key, n)
        ys = jax.vmap(lambda k: sample_lgssm(params, T, key=k)[1][:, 0])(keys)
        return ys.reshape(tuple(sample_shape) + (T,))

    @property
    def mean(self):
        return jnp.zeros(self.event_shape, self.times.dtype)

    @property
    def variance(self):
        s2 = (self.sde.H @ self.sde.Pinf @ self.sde.H.T)[0, 0]
        return jnp.broadcast_to(s2 + self.noise, self.event_shape)

