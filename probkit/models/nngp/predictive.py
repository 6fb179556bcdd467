r"""The predictive distribution of the scale-mixture NNGP: a scale mixture of joint normals.

Given the data, :math:`f_* \mid y, s^2 \sim \mathcal N(\mu_*, s^2 S_*)` at the query points and
:math:`s^2 \mid y` is fixed (Gaussian model), inverse gamma (Student-t process) or a weighted set
of quadrature nodes (any other prior), so the marginal at each point is

.. math::
    p(z) = \int \mathcal N(z; \mu, s^2\sigma^2)\,p(s^2\mid y)\,ds^2 =
    \begin{cases} \mathcal N(\mu, s^2\sigma^2) & \text{fixed}\\
    t_{2a'}(\mu, \tfrac{b'}{a'}\sigma^2) & \mathrm{IG}(a', b')\\
    \sum_k w_k\,\mathcal N(\mu, e^{t_k}\sigma^2) & \text{quadrature,}\end{cases}

mapped to data units by :math:`y = \text{loc} + \text{unit}\cdot z`. Its ``log_prob`` and
``cdf`` are exact; ``icdf`` inverts the exact CDF by bisection; ``sample`` draws one
:math:`s^2` per draw and the points jointly given it (when the covariance is known).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.models.nngp import ScaleMixtureNormal
>>> with jax.enable_x64(True):
...     p = ScaleMixtureNormal(jnp.zeros(2), jnp.ones(2), jnp.eye(2),
...                            (jnp.array(3.0), jnp.array(3.0)), "inverse_gamma")
>>> p.batch_shape, p.sample(jax.random.key(0), (5,)).shape
((2,), (5, 2))
>>> round(float(p.cdf(p.icdf(0.9))[0]), 6)
0.9
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import betainc, gammaln, logsumexp

from probkit.models.nngp.spectral import LOG_2PI, ScalePosterior
from probkit.posterior import Predictive, _numerics, _sample_shape, _x64

__all__ = ["ScaleMixtureNormal"]


def _t_cdf(z, df):
    x = df / (df + z**2)
    tail = 0.5 * betainc(0.5 * df, 0.5, x)
    return jnp.where(z > 0, 1.0 - tail, tail)


class ScaleMixtureNormal(Predictive):
    r"""Predictive :math:`p(z) = \int \mathcal N(z; \mu, s^2\Sigma)\,p(s^2\mid y)\,ds^2`, mapped to
    data units by :math:`y = \text{loc} + \text{unit}\cdot z` (a NumPyro distribution with batch
    shape ``(m,)``; see the module notes).

    Parameters
    ----------
    loc_mean, unit_var : Array, shape (m,)
        :math:`\mu` and the diagonal of :math:`\Sigma` (unit scale, standardised units).
    unit_cov : Array or None, shape (m, m)
        The full :math:`\Sigma`; without it samples are independent across points given
        :math:`s^2`.
    scale_params : tuple
        Parameters of the scale posterior (:class:`~probkit.models.nngp.ScalePosterior`).
    kind : {"fixed", "inverse_gamma", "quadrature"}
    loc, unit : float
        Affine map back to data units.
    """

    pytree_data_fields = ("loc_mean", "unit_var", "unit_cov", "scale_params", "loc", "unit")
    pytree_aux_fields = ("kind",)

    def __init__(self, loc_mean, unit_var, unit_cov, scale_params, kind: str, loc=0.0,
                 unit=1.0):
        with jax.enable_x64(_x64(loc_mean, unit_var, *scale_params)):
            self.loc_mean = jnp.asarray(loc_mean)
            dtype = self.loc_mean.dtype
            self.unit_var = jnp.asarray(unit_var, dtype)
            self.unit_cov = None if unit_cov is None else jnp.asarray(unit_cov, dtype)
            self.scale_params = tuple(jnp.asarray(p) for p in scale_params)
            self.loc = jnp.asarray(loc, dtype)
            self.unit = jnp.asarray(unit, dtype)
        self.kind = kind
        self._init(self.loc_mean.shape[-1:])

    @property
    def scale(self) -> ScalePosterior:
        """The posterior of :math:`s^2` (standardised units)."""
        return ScalePosterior(self.kind, self.scale_params)

    @property
    def joint(self) -> bool:
        """Whether samples are joint over the points (the covariance is known)."""
        return self.unit_cov is not None

    # -- moments --------------------------------------------------------------------------
    @_numerics
    def mean_s2(self) -> Array:
        """:math:`\\mathbb E[s^2 \\mid y]` (``inf`` for an inverse gamma with :math:`a' \\le 1`)."""
        p = self.scale_params
        if self.kind == "fixed":
            return p[0]
        if self.kind == "inverse_gamma":
            return jnp.where(p[0] > 1, p[1] / jnp.maximum(p[0] - 1.0, 1e-300), jnp.inf)
        return jnp.sum(jnp.exp(p[1] + p[0]))

    @property
    @_numerics
    def mean(self) -> Array:
        """Predictive mean in data units."""
        return self.loc + self.unit * self.loc_mean

    @property
    @_numerics
    def variance(self) -> Array:
        """Predictive variance in data units: :math:`\\mathbb E[s^2]\\,\\mathrm{diag}\\,\\Sigma`."""
        return self.unit**2 * self.mean_s2() * self.unit_var

    # -- densities ------------------------------------------------------------------------
    @_numerics
    def log_prob(self, value) -> Array:
        """Pointwise marginal log density of ``value`` ``(..., m)`` in data units."""
        z = (jnp.asarray(value, self.loc_mean.dtype) - self.loc) / self.unit
        r2 = (z - self.loc_mean) ** 2
        v = self.unit_var
        p = self.scale_params
        if self.kind == "fixed":
            lp = -0.5 * (LOG_2PI + jnp.log(p[0] * v) + r2 / (p[0] * v))
        elif self.kind == "inverse_gamma":
            a, b = p
            lp = (gammaln(a + 0.5) - gammaln(a) - 0.5 * jnp.log(2.0 * math.pi * b * v)
                  - (a + 0.5) * jnp.log1p(r2 / (2.0 * b * v)))
        else:
            t, lw = p
            s = jnp.exp(t)[:, None] * v[None, :]
            lp = logsumexp(lw[:, None] - 0.5 * (LOG_2PI + jnp.log(s) + r2[..., None, :] / s),
                           axis=-2)
        return lp - jnp.log(self.unit)

    @_numerics
    def cdf(self, value) -> Array:
        """Pointwise marginal CDF in data units."""
        z = (jnp.asarray(value, self.loc_mean.dtype) - self.loc) / self.unit - self.loc_mean
        v = self.unit_var
        p = self.scale_params
        if self.kind == "fixed":
            return jax.scipy.stats.norm.cdf(z / jnp.sqrt(p[0] * v))
        if self.kind == "inverse_gamma":
            a, b = p
            return _t_cdf(z / jnp.sqrt(b / a * v), 2.0 * a)
        t, lw = p
        s = jnp.sqrt(jnp.exp(t)[:, None] * v[None, :])
        return jnp.sum(jnp.exp(lw)[:, None] * jax.scipy.stats.norm.cdf(z[..., None, :] / s),
                       axis=-2)

    @_numerics
    def icdf(self, q) -> Array:
        """Marginal quantile at probability ``q`` (scalar or broadcastable to the batch), by
        bisection on :meth:`cdf` in a bracket wide enough for heavy tails."""
        return _icdf_jit(self, jnp.asarray(q, self.loc_mean.dtype))

    # -- draws ----------------------------------------------------------------------------
    @_numerics
    def sample_s2(self, key, num_samples: int) -> Array:
        """Draws of :math:`s^2` from its posterior."""
        p = self.scale_params
        if self.kind == "fixed":
            return jnp.full((num_samples,), p[0])
        if self.kind == "inverse_gamma":
            return p[1] / jax.random.gamma(key, p[0], (num_samples,), dtype=p[0].dtype)
        idx = jax.random.categorical(key, p[1], shape=(num_samples,))
        return jnp.exp(p[0][idx])

    @_numerics
    def sample_with_scale(self, key, sample_shape=()) -> tuple[Array, Array]:
        """Draws ``(s2, y)``: ``s2`` of shape ``sample_shape`` and, given each, ``y`` of shape
        ``sample_shape + (m,)`` in data units (joint over the points when the covariance is
        known)."""
        shape = _sample_shape(sample_shape)
        num = math.prod(shape)
        k1, k2 = jax.random.split(key)
        s2 = self.sample_s2(k1, num)
        m = self.loc_mean.shape[0]
        dtype = self.loc_mean.dtype
        eps = jax.random.normal(k2, (num, m), dtype=dtype)
        if self.unit_cov is None:
            z = self.loc_mean + jnp.sqrt(s2)[:, None] * eps * jnp.sqrt(self.unit_var)
        else:
            cov = self.unit_cov
            jitter = 1e-10 * jnp.maximum(jnp.mean(jnp.diagonal(cov)), 1e-300)
            evals, evecs = jnp.linalg.eigh(cov)
            root = evecs * jnp.sqrt(jnp.maximum(evals, 0.0) + jitter)
            z = self.loc_mean + jnp.sqrt(s2)[:, None] * eps @ root.T
        y = self.loc + self.unit * z
        return s2.reshape(shape), y.reshape(shape + (m,))

    def sample(self, key, sample_shape=()) -> Array:
        """Draws of shape ``sample_shape + (m,)`` in data units, one :math:`s^2` per draw."""
        return self.sample_with_scale(key, sample_shape)[1]


@eqx.filter_jit
def _icdf_jit(post: ScaleMixtureNormal, q: Array) -> Array:
    sd = jnp.sqrt(post.unit_var) * post.unit
    mean = post.loc + post.unit * post.loc_mean
    # a wide bracket for heavy tails (small-df t, heavy-tailed mixtures); 100 halvings
    lo, hi, q = jnp.broadcast_arrays(mean - 1e4 * sd - 1e-8, mean + 1e4 * sd + 1e-8, q)

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        below = post.cdf(mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 100, body, (lo, hi))
    return 0.5 * (lo + hi)
