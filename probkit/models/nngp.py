r"""Scale mixtures of neural-network Gaussian processes (Lee, Yun, Yang & Lee, ICLR 2022).

Model (regression). With a kernel :math:`K` (by default the NNGP kernel of
:class:`probkit.kernels.NNGP` with readout variance 1) and a random scale :math:`s^2 \sim H`,

.. math::

    s^2 \sim H, \qquad f \mid s^2 \sim \mathcal{GP}(0, s^2 K), \qquad
    y_i \mid f, s^2 \sim \mathcal N(f(x_i), s^2\varepsilon),

so that :math:`y \mid s^2 \sim \mathcal N(0, s^2 A)` with :math:`A = K + \varepsilon I`. Write
:math:`q = y^\top A^{-1} y`, :math:`\mu_* = K_{*n}A^{-1}y` and
:math:`S_* = K_{**} - K_{*n}A^{-1}K_{n*}`. Three kinds of scale:

* **Gaussian** (``scale_prior=None``): :math:`s^2` is a fitted constant (the readout variance),
  the ordinary NNGP/GP: :math:`f_* \mid y \sim \mathcal N(\mu_*, s^2 S_*)`.
* **Inverse gamma** :math:`H = \mathrm{IG}(a, b)`: the Student-t process (Shah et al. 2014), in
  closed form: :math:`y \sim t_{2a}(0, (b/a)A)`,
  :math:`\log p(y) = \ln\Gamma(a+\tfrac n2) - \ln\Gamma(a) - \tfrac n2\ln(2\pi b)
  - \tfrac12\ln|A| - (a+\tfrac n2)\ln(1 + \tfrac{q}{2b})`,
  :math:`s^2 \mid y \sim \mathrm{IG}(a + n/2, b + q/2)` and
  :math:`f_* \mid y \sim t_{2a+n}(\mu_*, \tfrac{2b+q}{2a+n} S_*)`.
* **Any other** NumPyro distribution on :math:`(0,\infty)` (Gamma, LogNormal, HalfCauchy,
  :class:`probkit.distributions.BurrXII`, ...): the posterior of :math:`t = \log s^2` is
  proportional to :math:`g(t) = H(e^t)e^t e^{-nt/2}\exp(-q e^{-t}/2)`; it is integrated by
  the trapezoid rule on :math:`\hat t \pm 20/\sqrt{h}` around its mode :math:`\hat t` (Newton),
  :math:`h = -(\log g)''(\hat t)`, which converges geometrically for these smooth integrands.
  The predictive is the mixture :math:`\sum_k w_k\,\mathcal N(\mu_*, e^{t_k}S_*)`.

All three reuse one eigendecomposition :math:`K = U\Lambda U^\top`: with
:math:`\tilde y = U^\top y`, :math:`q = \sum_i \tilde y_i^2/(\lambda_i+\varepsilon)` and
:math:`\ln|A| = \sum_i\ln(\lambda_i + \varepsilon)` cost :math:`O(n)` for every value of
:math:`\varepsilon` and :math:`s^2`, so each quadrature node, optimiser step on
:math:`(\varepsilon, H)` or HMC step of :func:`scale_mixture_model` is :math:`O(n)`.

**Padding to a capacity** (``fit(..., capacity=N)``, used by the BO surrogate): the
standardised training data are padded to ``N`` rows with a mask :math:`m`, the Gram matrix is
:math:`K_m = \mathrm{where}(m_i \wedge m_j, K_{ij}, 0) + \mathrm{diag}(\lnot m)`
(:func:`mask_gram`) and the padded targets and cross-covariance columns are zero. Then
:math:`q` and the predictive moments are unchanged, :math:`\ln|K_m+\varepsilon I|` exceeds the
real one by :math:`n_{pad}\ln(1+\varepsilon)` (removed by :func:`masked_quad_stats`), and the
real count :math:`n` enters the marginal likelihoods as a traced value, so one compiled program
serves every :math:`n \le N` (a Bayesian-optimisation loop adds one point per iteration).

Classification (:func:`fit_classifier`): C latent functions with softmax likelihood, a sparse
variational posterior on M inducing inputs and one shared scale with variational factor
:math:`q(s^2) = \mathrm{IG}(a', b')` and :math:`q(u_c\mid s^2) = \mathcal N(m_c, s^2 S_c)`
(:math:`S_c` diagonal), trained with optax on minibatches.

Two levels: pure functions on NamedTuples (:func:`spectral`, :func:`quad_stats`,
:func:`student_t_log_marginal`, :func:`scale_quadrature`, :func:`predictive_moments`, the
NumPyro models :func:`nngp_model` and :func:`scale_mixture_model`) and a convenience
:func:`fit` returning :class:`NNGPRegression` with ``posterior(x)`` (the BO ``Surrogate``
protocol), ``predict(x)`` and ``to_result(x)``.

References
----------
Lee, H., Yun, E., Yang, H., Lee, J. Scale Mixtures of Neural Network Gaussian Processes.
ICLR 2022 (arXiv:2107.01408). Shah, A., Wilson, A., Ghahramani, Z. Student-t Processes as
Alternatives to Gaussian Processes. AISTATS 2014.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models import nngp
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(-3, 3, (40, 1)); y = np.sin(x[:, 0]) + 0.1 * rng.standard_cauchy(40)
>>> model = nngp.fit(x, y, key=jax.random.key(0), num_steps=50)
>>> pred = model.predict(np.linspace(-3, 3, 5)[:, None], quantiles=(0.05, 0.95))
>>> pred.mean.shape, pred.quantiles.shape
((5,), (2, 5))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jax import Array
from jax.scipy.special import betainc, digamma, gammaln, logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from probkit._checks import (
    as_array,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
    check_same_length,
)
from probkit.kernels import NNGP, Kernel, Stationary, as_2d
from probkit.result import Result

__all__ = [
    "Spectral",
    "ScalePosterior",
    "ScaleQuadrature",
    "PredictiveMoments",
    "Prediction",
    "ScaleMixtureNormal",
    "NNGPRegression",
    "NNGPClassifier",
    "spectral",
    "quad_stats",
    "mask_gram",
    "masked_quad_stats",
    "gaussian_log_marginal",
    "student_t_log_marginal",
    "log_scale_integrand",
    "scale_quadrature",
    "log_marginal",
    "scale_posterior",
    "predictive_moments",
    "nngp_model",
    "scale_mixture_model",
    "check_scale_prior",
    "fit",
    "fit_classifier",
]

LOG_2PI = math.log(2.0 * math.pi)


# =============================================================================================
# Pure layer: spectral statistics, closed forms, quadrature
# =============================================================================================


class Spectral(NamedTuple):
    """One eigendecomposition :math:`K = U\\Lambda U^\\top` and the rotated targets.

    Attributes
    ----------
    evals : Array, shape (n,)
        Eigenvalues of ``K`` (clipped at 0).
    evecs : Array, shape (n, n)
        Orthonormal eigenvectors ``U``.
    y_rot : Array, shape (n,)
        :math:`U^\\top y`.
    """

    evals: Array
    evecs: Array
    y_rot: Array


def spectral(gram: Array, y: Array) -> Spectral:
    """Eigendecompose the Gram matrix once (O(n^3)); everything after is O(n) per evaluation."""
    evals, evecs = jnp.linalg.eigh(gram)
    return Spectral(jnp.maximum(evals, 0.0), evecs, evecs.T @ y)


def quad_stats(sp: Spectral, noise) -> tuple[Array, Array]:
    """:math:`q = y^\\top(K+\\varepsilon I)^{-1}y` and :math:`\\ln|K+\\varepsilon I|` in O(n)."""
    d = sp.evals + noise
    return jnp.sum(sp.y_rot**2 / d), jnp.sum(jnp.log(d))


def mask_gram(gram: Array, mask: Array) -> Array:
    """Gram matrix of data padded to a fixed capacity: real block, identity block for padding.

    :math:`K_m = \\mathrm{where}(m_i \\wedge m_j, K_{ij}, 0) + \\mathrm{diag}(\\lnot m)`. With
    zero targets in the padded rows and zero cross-covariance columns for them, the padded
    rows decouple: :math:`q = y^\\top(K_m+\\varepsilon I)^{-1}y` and the predictive moments
    equal those of the real rows, and
    :math:`\\ln|K_m+\\varepsilon I| = \\ln|K+\\varepsilon I| + n_{pad}\\ln(1+\\varepsilon)`
    (see :func:`masked_quad_stats`). One compiled program then serves every ``n`` up to the
    capacity.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.models.nngp import mask_gram
    >>> mask_gram(jnp.full((3, 3), 2.0), jnp.array([True, True, False])).tolist()
    [[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 1.0]]
    """
    both = mask[:, None] & mask[None, :]
    return jnp.where(both, gram, 0.0) + jnp.diag(jnp.where(mask, 0.0, 1.0).astype(gram.dtype))


def _counts(mask: Array | None, size: int):
    """Real and padded counts: Python ints without a mask, traced scalars with one."""
    if mask is None:
        return size, 0
    n = jnp.sum(mask).astype(jnp.result_type(float))
    return n, size - n


def masked_quad_stats(sp: Spectral, noise, mask: Array | None) -> tuple[Array, Array, Any]:
    """:math:`(q, \\ln|A|, n)` of the real rows from the spectrum of a :func:`mask_gram` matrix.

    The padded eigenvalues are 1, so :math:`n_{pad}\\ln(1+\\varepsilon)` is subtracted from
    the log determinant; ``n`` is the real count (a traced scalar). ``mask=None``: no padding,
    :func:`quad_stats` and ``n = len(y)``.
    """
    q, logdet = quad_stats(sp, noise)
    n, n_pad = _counts(mask, sp.y_rot.shape[0])
    if mask is not None:
        logdet = logdet - n_pad * jnp.log1p(noise)
    return q, logdet, n


def _chol_stats(gram: Array, y: Array, noise) -> tuple[Array, Array]:
    """The same statistics through a Cholesky factorisation (used while the kernel changes)."""
    n = y.shape[0]
    chol = jnp.linalg.cholesky(gram + noise * jnp.eye(n, dtype=gram.dtype))
    z = jax.scipy.linalg.solve_triangular(chol, y, lower=True)
    return jnp.sum(z**2), 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def gaussian_log_marginal(q, logdet, n: int | Array, scale) -> Array:
    """:math:`\\log\\mathcal N(y; 0, s^2 A) = -\\frac12(n\\ln 2\\pi s^2 + \\ln|A| + q/s^2)`."""
    return -0.5 * (n * (LOG_2PI + jnp.log(scale)) + logdet + q / scale)


def student_t_log_marginal(q, logdet, n: int | Array, a, b) -> Array:
    """Log density of :math:`y \\sim t_{2a}(0, (b/a)A)`, the Student-t process marginal.

    :math:`\\ln\\Gamma(a+\\tfrac n2) - \\ln\\Gamma(a) - \\tfrac n2\\ln(2\\pi b) -
    \\tfrac12\\ln|A| - (a+\\tfrac n2)\\ln(1 + q/(2b))`.
    """
    return (gammaln(a + 0.5 * n) - gammaln(a) - 0.5 * n * (LOG_2PI + jnp.log(b))
            - 0.5 * logdet - (a + 0.5 * n) * jnp.log1p(q / (2.0 * b)))


def log_scale_integrand(t, q, n: int | Array, prior: dist.Distribution) -> Array:
    """:math:`\\log g(t) = \\log H(e^t) + t - nt/2 - q e^{-t}/2` (unnormalised, t = log s2)."""
    return prior.log_prob(jnp.exp(t)) + t - 0.5 * n * t - 0.5 * q * jnp.exp(-t)


class ScaleQuadrature(NamedTuple):
    """Trapezoid nodes for the posterior of :math:`t = \\log s^2`.

    Attributes
    ----------
    log_s2 : Array, shape (K,)
        Nodes :math:`t_k`.
    log_weights : Array, shape (K,)
        Normalised log posterior weights :math:`\\log w_k` (they sum to one).
    log_integral : Array
        :math:`\\ln\\int H(s^2)(s^2)^{-n/2}e^{-q/(2s^2)}ds^2`.
    """

    log_s2: Array
    log_weights: Array
    log_integral: Array


def scale_quadrature(q, n: int | Array, prior: dist.Distribution, *, num_nodes: int = 128,
                     width: float = 20.0, newton_steps: int = 40) -> ScaleQuadrature:
    """Exact 1-D quadrature of the scale posterior on :math:`t = \\log s^2`.

    Newton's method (damped, from :math:`\\log(q/n)`) finds the mode :math:`\\hat t` of
    :math:`\\log g`; the trapezoid rule with ``num_nodes`` nodes on
    :math:`\\hat t \\pm` ``width``:math:`/\\sqrt{h}` integrates it. The grid's location is held
    fixed under differentiation (the integral does not depend on it), so gradients with
    respect to ``q`` and the prior's parameters are those of the quadrature sum. ``n`` may be
    a traced scalar (padded data: the real count is data, not a shape).
    """
    if isinstance(n, int | float | np.number):
        n_f = float(n)
        n_floor = max(n_f, 1.0)
    else:
        n_f = jnp.asarray(n, dtype=jnp.result_type(float))
        n_floor = jnp.maximum(n_f, 1.0)

    def logg(t):
        return log_scale_integrand(t, q, n_f, prior)

    d1 = jax.grad(logg)
    d2 = jax.grad(d1)
    qs = jax.lax.stop_gradient(q)
    t0 = jnp.log(jnp.maximum(qs, 1e-300) / n_floor)

    def newton(_, t):
        g1, g2 = d1(t), d2(t)
        step = jnp.where(g2 < 0, -g1 / g2, jnp.sign(g1))
        return jax.lax.stop_gradient(t + jnp.clip(step, -2.0, 2.0))

    t_hat = jax.lax.fori_loop(0, newton_steps, newton, t0)
    h = jax.lax.stop_gradient(jnp.maximum(-d2(t_hat), 1e-4))
    half = width / jnp.sqrt(h)
    nodes = t_hat + half * jnp.linspace(-1.0, 1.0, num_nodes)
    delta = 2.0 * half / (num_nodes - 1)
    lg = jax.vmap(logg)(nodes)
    trap = jnp.full((num_nodes,), jnp.log(delta)).at[jnp.array([0, -1])].add(-jnp.log(2.0))
    lw = lg + trap
    log_int = logsumexp(lw)
    return ScaleQuadrature(nodes, lw - log_int, log_int)


class ScalePosterior(NamedTuple):
    """Posterior of the scale :math:`s^2` in one of three forms.

    ``kind`` is ``"fixed"`` (``params = (s2,)``), ``"inverse_gamma"`` (``params = (a', b')``)
    or ``"quadrature"`` (``params = (log_s2_nodes, log_weights)``).
    """

    kind: str
    params: tuple


def _is_inverse_gamma(prior) -> bool:
    return isinstance(prior, dist.InverseGamma)


def log_marginal(q, logdet, n: int | Array, prior: dist.Distribution | None, scale=1.0, *,
                 num_nodes: int = 128) -> Array:
    """:math:`\\log p(y)` of the scale-mixture model from :math:`(q, \\ln|A|)`.

    ``prior=None`` is the Gaussian model with fixed ``scale``; ``InverseGamma`` the closed form;
    anything else the quadrature :math:`-\\frac n2\\ln 2\\pi - \\frac12\\ln|A| + \\ln\\int\\ldots`.
    """
    if prior is None:
        return gaussian_log_marginal(q, logdet, n, scale)
    if _is_inverse_gamma(prior):
        return student_t_log_marginal(q, logdet, n, prior.concentration, prior.rate)
    quad = scale_quadrature(q, n, prior, num_nodes=num_nodes)
    return -0.5 * n * LOG_2PI - 0.5 * logdet + quad.log_integral


def scale_posterior(q, n: int | Array, prior: dist.Distribution | None, scale=1.0, *,
                    num_nodes: int = 128) -> ScalePosterior:
    """Posterior of :math:`s^2` given :math:`q` (closed form or quadrature)."""
    if prior is None:
        return ScalePosterior("fixed", (jnp.asarray(scale),))
    if _is_inverse_gamma(prior):
        return ScalePosterior("inverse_gamma", (prior.concentration + 0.5 * n,
                                                prior.rate + 0.5 * q))
    quad = scale_quadrature(q, n, prior, num_nodes=num_nodes)
    return ScalePosterior("quadrature", (quad.log_s2, quad.log_weights))


class PredictiveMoments(NamedTuple):
    """Unit-scale predictive moments: :math:`f_* \\mid y, s^2 \\sim \\mathcal N(\\mu_*, s^2 S_*)`.

    ``cov`` is the full :math:`S_*` or ``None`` when only the diagonal ``var`` was computed.
    """

    mean: Array
    var: Array
    cov: Array | None


def predictive_moments(sp: Spectral, noise, k_star: Array, k_star_diag: Array,
                       k_star_star: Array | None = None) -> PredictiveMoments:
    """:math:`\\mu_* = K_{*n}A^{-1}y`, :math:`S_* = K_{**} - K_{*n}A^{-1}K_{n*}` via the spectrum.

    ``k_star`` is :math:`K_{*n}` (m, n); pass ``k_star_star`` (m, m) for the full covariance.
    """
    d = sp.evals + noise
    v = k_star @ sp.evecs  # (m, n)
    mean = v @ (sp.y_rot / d)
    var = jnp.maximum(k_star_diag - jnp.sum(v**2 / d, axis=1), 0.0)
    cov = None
    if k_star_star is not None:
        cov = k_star_star - (v / d) @ v.T
        cov = 0.5 * (cov + cov.T)
    return PredictiveMoments(mean, var, cov)


# =============================================================================================
# Predictive distribution: a scale mixture of normals over test points
# =============================================================================================


def _t_cdf(z, df):
    x = df / (df + z**2)
    tail = 0.5 * betainc(0.5 * df, 0.5, x)
    return jnp.where(z > 0, 1.0 - tail, tail)


class ScaleMixtureNormal(eqx.Module):
    r"""Predictive :math:`p(z) = \int \mathcal N(z; \mu, s^2\Sigma)\,p(s^2\mid y)\,ds^2`, mapped to
    data units by :math:`y = \text{loc} + \text{unit}\cdot z`.

    Satisfies the ``Posterior`` part of the BO ``Surrogate`` protocol: ``mean``,
    ``variance`` and ``sample(key, num_samples)`` (joint draws over the test points, one
    :math:`s^2` per draw).

    Attributes
    ----------
    loc_mean, unit_var : Array, shape (m,)
        :math:`\mu` and the diagonal of :math:`\Sigma` (unit scale, standardised units).
    unit_cov : Array or None, shape (m, m)
    scale : ScalePosterior
    loc, unit : float
        Affine map back to data units.
    """

    loc_mean: Array
    unit_var: Array
    unit_cov: Array | None
    scale_params: tuple
    kind: str = eqx.field(static=True)
    loc: Array = 0.0
    unit: Array = 1.0

    @property
    def scale(self) -> ScalePosterior:
        return ScalePosterior(self.kind, self.scale_params)

    # -- moments --------------------------------------------------------------------------
    def mean_s2(self) -> Array:
        """:math:`\\mathbb E[s^2 \\mid y]` (``inf`` for an inverse gamma with :math:`a' \\le 1`)."""
        p = self.scale_params
        if self.kind == "fixed":
            return p[0]
        with jax.enable_x64(True):  # the parameters are float64 (fitted under x64)
            if self.kind == "inverse_gamma":
                return jnp.where(p[0] > 1, p[1] / jnp.maximum(p[0] - 1.0, 1e-300), jnp.inf)
            return jnp.sum(jnp.exp(p[1] + p[0]))

    @property
    def mean(self) -> Array:
        """Predictive mean in data units."""
        return self.loc + self.unit * self.loc_mean

    @property
    def variance(self) -> Array:
        """Predictive variance in data units: :math:`\\mathbb E[s^2]\\,\\mathrm{diag}\\,\\Sigma`."""
        return self.unit**2 * self.mean_s2() * self.unit_var

    @property
    def stddev(self) -> Array:
        return jnp.sqrt(self.variance)

    # -- densities ------------------------------------------------------------------------
    def log_prob(self, y: Array) -> Array:
        """Pointwise marginal log density of ``y`` (m,) in data units."""
        with jax.enable_x64(True):
            z = (jnp.asarray(y) - self.loc) / self.unit
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
                lp = logsumexp(lw[:, None] - 0.5 * (LOG_2PI + jnp.log(s) + r2[None, :] / s),
                               axis=0)
            return lp - jnp.log(self.unit)

    def cdf(self, y: Array) -> Array:
        """Pointwise marginal CDF in data units."""
        with jax.enable_x64(True):
            z = (jnp.asarray(y) - self.loc) / self.unit - self.loc_mean
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

    def quantile(self, probs: Sequence[float] | Array) -> Array:
        """Marginal quantiles, shape ``(len(probs), m)``, by bisection on :meth:`cdf`."""
        with jax.enable_x64(True):
            probs = jnp.atleast_1d(jnp.asarray(probs, dtype=jnp.float64))
            return _quantile_jit(self, probs)

    # -- draws ----------------------------------------------------------------------------
    def sample_s2(self, key, num_samples: int) -> Array:
        """Draws of :math:`s^2` from its posterior."""
        p = self.scale_params
        if self.kind == "fixed":
            return jnp.full((num_samples,), p[0])
        if self.kind == "inverse_gamma":
            return p[1] / jax.random.gamma(key, p[0], (num_samples,))
        idx = jax.random.categorical(key, p[1], shape=(num_samples,))
        return jnp.exp(p[0][idx])

    def sample(self, key, num_samples: int) -> Array:
        """Joint draws ``(num_samples, m)`` in data units (needs the full covariance)."""
        if self.unit_cov is None:
            raise ValueError("full_cov: joint samples need posterior(x, full_cov=True)")
        with jax.enable_x64(True):
            k1, k2 = jax.random.split(key)
            s2 = self.sample_s2(k1, num_samples)
            m = self.loc_mean.shape[0]
            cov = self.unit_cov
            jitter = 1e-10 * jnp.maximum(jnp.mean(jnp.diagonal(cov)), 1e-300)
            evals, evecs = jnp.linalg.eigh(cov)
            root = evecs * jnp.sqrt(jnp.maximum(evals, 0.0) + jitter)
            eps = jax.random.normal(k2, (num_samples, m), dtype=cov.dtype)
            z = self.loc_mean + jnp.sqrt(s2)[:, None] * eps @ root.T
            return self.loc + self.unit * z


@eqx.filter_jit
def _quantile_jit(post: ScaleMixtureNormal, probs: Array) -> Array:
    sd = jnp.sqrt(post.unit_var) * post.unit
    mean = post.mean
    # wide bracket for heavy tails (small-df t, heavy-tailed mixtures); 100 halvings
    lo = jnp.broadcast_to(mean - 1e4 * sd - 1e-8, (probs.size,) + mean.shape)
    hi = jnp.broadcast_to(mean + 1e4 * sd + 1e-8, (probs.size,) + mean.shape)

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        below = post.cdf(mid) < probs[:, None]
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 100, body, (lo, hi))
    return 0.5 * (lo + hi)


class Prediction(NamedTuple):
    """Output of :meth:`NNGPRegression.predict` (data units).

    ``quantiles`` has shape ``(len(q), m)``; ``log_density`` is ``None`` unless ``y`` was
    given; ``samples`` ``(num_samples, m)`` is ``None`` unless requested.
    """

    mean: Array
    variance: Array
    quantiles: Array | None
    log_density: Array | None
    samples: Array | None


# =============================================================================================
# NumPyro models
# =============================================================================================


def scale_mixture_model(sp: Spectral, *, scale_prior: dist.Distribution, noise=None,
                        noise_prior: dist.Distribution | None = None) -> None:
    """NumPyro model for :math:`s^2` (and optionally :math:`\\varepsilon`) with the kernel fixed.

    The rotated data :math:`\\tilde y = U^\\top y` are independent,
    :math:`\\tilde y_i \\sim \\mathcal N(0, s^2(\\lambda_i + \\varepsilon))`, so every
    log-density evaluation (every HMC step) is O(n). Sites: ``s2``, ``noise`` (if
    ``noise_prior``), observed ``y_rot``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> from probkit.kernels import NNGP
    >>> from probkit.models.nngp import scale_mixture_model, spectral
    >>> from probkit.inference import hmc
    >>> with jax.enable_x64(True):
    ...     x = jnp.linspace(-2, 2, 30)[:, None]; y = jnp.sin(x[:, 0])
    ...     sp = spectral(NNGP(2)(x, x), y)
    ...     res = hmc.run(scale_mixture_model, sp, scale_prior=dist.Gamma(2.0, 2.0), noise=0.01,
    ...                   key=jax.random.key(0), num_warmup=200, num_samples=200,
    ...                   num_chains=1, progress_bar=False)
    >>> res.posterior["s2"].shape
    (1, 200)
    """
    s2 = numpyro.sample("s2", scale_prior)
    if noise_prior is not None:
        noise = numpyro.sample("noise", noise_prior)
    elif noise is None:
        raise ValueError("noise: give a fixed noise or a noise_prior")
    sd = jnp.sqrt(s2 * (sp.evals + noise))
    numpyro.sample("y_rot", dist.Normal(0.0, sd), obs=sp.y_rot)


def nngp_model(x: Array, y: Array | None = None, *, depth: int = 3, activation: str = "relu",
               scale_prior: dist.Distribution | None = None,
               weight_variance_prior: dist.Distribution | None = None,
               bias_variance_prior: dist.Distribution | None = None,
               noise_prior: dist.Distribution | None = None, weight_variance=2.0,
               bias_variance=0.1, noise=0.1, jitter: float = 1e-8) -> None:
    """Generative NumPyro model of the scale-mixture NNGP with random kernel hyperparameters.

    ``s2 ~ scale_prior`` (1 if ``None``), optionally ``weight_variance``, ``bias_variance``,
    ``noise`` from their priors (fixed values otherwise), ``f ~ GP(0, s2 K)`` and
    ``y ~ N(f, s2 noise)`` with ``f`` integrated out:
    ``y ~ MultivariateNormal(0, s2 (K + noise I))``. Sampling kernel hyperparameters changes
    ``K``, so each step costs a Cholesky factorisation, O(n^3); with the kernel fixed use
    :func:`scale_mixture_model` (O(n) per step). Run inside ``jax.enable_x64(True)``.
    """
    x = as_2d(x)
    s2 = 1.0 if scale_prior is None else numpyro.sample("s2", scale_prior)
    sw2 = (weight_variance if weight_variance_prior is None
           else numpyro.sample("weight_variance", weight_variance_prior))
    sb2 = (bias_variance if bias_variance_prior is None
           else numpyro.sample("bias_variance", bias_variance_prior))
    eps = noise if noise_prior is None else numpyro.sample("noise", noise_prior)
    k = NNGP(depth, activation, sw2, sb2, 1.0)
    gram = k(x, x)
    n = x.shape[0]
    cov = s2 * (gram + (eps + jitter) * jnp.eye(n, dtype=gram.dtype))
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(n, gram.dtype), cov), obs=y)


# =============================================================================================
# Validation helpers
# =============================================================================================


def check_scale_prior(name: str, prior) -> None:
    """``ValueError`` naming ``name`` unless ``prior`` is ``None`` or a continuous NumPyro
    distribution supported on :math:`(0, \\infty)` with valid parameters."""
    if prior is None:
        return
    if not isinstance(prior, dist.Distribution):
        raise ValueError(f"{name}: expected a numpyro Distribution or None, got "
                         f"{type(prior).__name__}")
    sup = prior.support
    ok = (isinstance(sup, constraints._GreaterThan) and not sup.is_discrete
          and float(np.asarray(sup.lower_bound)) >= 0.0 and prior.event_shape == ()
          and prior.batch_shape == ())
    if not ok:
        raise ValueError(f"{name}: the scale prior must be a scalar continuous distribution on "
                         f"(0, inf); {type(prior).__name__} has support {sup}")
    for arg, con in prior.arg_constraints.items():
        value = getattr(prior, arg, None)
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        if not bool(np.all(np.asarray(con(jnp.asarray(value))))):
            raise ValueError(f"{name}: parameter {arg}={np.asarray(value)} violates {con}")


def _default_fit_prior(prior) -> tuple[str, ...]:
    if prior is None:
        return ()
    table = {dist.InverseGamma: ("rate",), dist.Gamma: ("rate",), dist.HalfCauchy: ("scale",),
             dist.HalfNormal: ("scale",), dist.LogNormal: ("loc",),
             dist.Exponential: ("rate",)}
    for cls, names in table.items():
        if type(prior) is cls:
            return names
    if "scale" in prior.arg_constraints:
        return ("scale",)
    return ()


def _prior_from(prior, values: dict[str, Array]):
    """Rebuild ``prior`` with some parameters replaced (a new distribution object)."""
    if not values:
        return prior
    kwargs = {k: getattr(prior, k) for k in prior.arg_constraints}
    kwargs.update(values)
    return type(prior)(**kwargs)


def _kernel_trainable(kernel: Kernel):
    """Filter spec: every array leaf except the amplitude (it lives in the scale s2)."""
    spec = jax.tree_util.tree_map(eqx.is_inexact_array, kernel)
    if isinstance(kernel, NNGP):
        spec = eqx.tree_at(lambda k: k.last_weight_variance, spec, False)
    elif isinstance(kernel, Stationary):
        spec = eqx.tree_at(lambda k: k.variance, spec, False)
    return spec


def _unit_amplitude(kernel: Kernel) -> Kernel:
    if isinstance(kernel, NNGP):
        return eqx.tree_at(lambda k: k.last_weight_variance, kernel, jnp.asarray(1.0))
    if isinstance(kernel, Stationary):
        return eqx.tree_at(lambda k: k.variance, kernel, jnp.asarray(1.0))
    return kernel


# =============================================================================================
# Convenience: fit / predict
# =============================================================================================


class NNGPRegression(eqx.Module):
    """A fitted scale-mixture NNGP regression (returned by :func:`fit`); an equinox Module.

    Inputs and targets are z-scored with training statistics internally; every output is in
    data units. Methods: :meth:`posterior` (BO ``Surrogate`` protocol), :meth:`predict`,
    :meth:`log_marginal_likelihood`, :meth:`sample_scale` (HMC on ``s2``/noise, O(n) per step),
    :meth:`to_result` (ArviZ via :class:`probkit.result.Result`).

    Attributes
    ----------
    kernel : Kernel
        Fitted kernel (unit amplitude).
    noise : Array
        Noise ratio :math:`\\varepsilon` (standardised units).
    scale_prior : numpyro Distribution or None
        Fitted scale prior (``None``: Gaussian model with constant ``scale``).
    scale : Array
        Constant :math:`s^2` of the Gaussian model (1 for scale mixtures).
    sp : Spectral
        The one eigendecomposition of the training Gram matrix (of the :func:`mask_gram`
        matrix when padded; :meth:`unpad` gives that of the real rows).
    x_train, y_train : Array
        Standardised training data, padded to ``capacity`` rows when ``mask`` is set.
    mask : Array or None
        Boolean mask of the real rows (``fit(..., capacity=...)``), ``None`` when unpadded.
        Padded models evaluate every ``n`` up to the capacity with the same compiled programs.
    """

    kernel: Kernel
    noise: Array
    scale_prior: Any
    scale: Array
    x_train: Array
    y_train: Array
    sp: Spectral
    x_loc: Array
    x_unit: Array
    y_loc: Array
    y_unit: Array
    history: Array
    mask: Array | None = None
    num_nodes: int = eqx.field(static=True, default=128)

    @property
    def n(self) -> int:
        """Number of (real) training points."""
        if self.mask is None:
            return int(self.y_train.shape[0])
        return int(np.sum(np.asarray(self.mask)))

    @property
    def capacity(self) -> int:
        """Rows of the (padded) training arrays; equals :attr:`n` when unpadded."""
        return int(self.y_train.shape[0])

    def unpad(self) -> NNGPRegression:
        """The same fitted model on the real rows only (one new eigendecomposition, O(n^3)).

        Returns ``self`` when the model is not padded.
        """
        if self.mask is None:
            return self
        keep = np.flatnonzero(np.asarray(self.mask))
        with jax.enable_x64(True):
            xs, ys = self.x_train[keep], self.y_train[keep]
            sp = spectral(self.kernel(xs, xs), ys)
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(x_train=xs, y_train=ys, sp=sp, mask=None)
        return NNGPRegression(**fields)

    def _x(self, x) -> Array:
        if isinstance(x, jax.core.Tracer):
            xx = as_2d(x)
        else:
            xx = as_2d(jnp.asarray(check_finite("x", as_array("x", x, ndim=(1, 2)))))
        if xx.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x: expected {self.x_train.shape[1]} input columns, got "
                             f"shape {tuple(xx.shape)}")
        return xx

    def scale_posterior(self) -> ScalePosterior:
        """Posterior of :math:`s^2` given the training data (standardised units)."""
        with jax.enable_x64(True):
            return _scale_posterior_jit(self)

    def log_marginal_likelihood(self) -> float:
        """:math:`\\log p(y)` of the training targets in data units."""
        with jax.enable_x64(True):
            return float(_lml_jit(self))

    def posterior(self, x, *, full_cov: bool = True, include_noise: bool = False
                  ) -> ScaleMixtureNormal:
        """Predictive distribution of :math:`f(x)` (or of :math:`y` with ``include_noise``).

        Returns a :class:`ScaleMixtureNormal` with ``.mean``, ``.variance``,
        ``.sample(key, num_samples)`` (joint draws), ``.log_prob``, ``.quantile``.
        """
        with jax.enable_x64(True):
            xs = self._x(x)
            return _posterior_jit(self, xs, full_cov, include_noise)

    def predict(self, x, y=None, *, quantiles: Sequence[float] | None = (0.025, 0.975),
                num_samples: int = 0, key=None, include_noise: bool = True) -> Prediction:
        """Predictive mean, variance, quantiles, log density of ``y`` (if given) and samples.

        By default the predictive is for noisy observations ``y`` (``include_noise=True``).
        """
        if num_samples:
            check_key("key", key)
        if y is not None:
            y = check_finite("y", as_array("y", y, ndim=1))
        post = self.posterior(x, full_cov=bool(num_samples), include_noise=include_noise)
        if y is not None:
            check_same_length(x=post.loc_mean, y=y)
        with jax.enable_x64(True):
            qs = None if not quantiles else post.quantile(quantiles)
            ld = None if y is None else post.log_prob(jnp.asarray(y))
            smp = post.sample(key, num_samples) if num_samples else None
            return Prediction(post.mean, post.variance, qs, ld, smp)

    def sample_scale(self, *, key, noise_prior: dist.Distribution | None = None,
                     num_warmup: int = 500, num_samples: int = 1000, num_chains: int = 2,
                     progress_bar: bool = False) -> Result:
        """HMC (probkit's BlackJAX NUTS) on ``s2`` (and ``noise`` with ``noise_prior``) with the
        fitted kernel: :func:`scale_mixture_model`, O(n) per step (standardised units)."""
        from probkit.inference import hmc

        check_key("key", key)
        if self.scale_prior is None:
            raise ValueError("scale_prior: the Gaussian model has no random scale to sample")
        check_scale_prior("noise_prior", noise_prior)
        with jax.enable_x64(True):
            return hmc.run(scale_mixture_model, self.unpad().sp, scale_prior=self.scale_prior,
                           noise=None if noise_prior is not None else self.noise,
                           noise_prior=noise_prior, key=key, num_warmup=num_warmup,
                           num_samples=num_samples, num_chains=num_chains,
                           progress_bar=progress_bar)

    def to_result(self, x, *, key, num_samples: int = 1000, y=None) -> Result:
        """Posterior-predictive draws at ``x`` as a :class:`~probkit.result.Result`.

        Groups: ``posterior`` (``s2`` draws, standardised units), ``posterior_predictive``
        (``y``, shape (1, draws, m)), ``observed_data`` (training ``y``), and
        ``log_likelihood`` (pointwise predictive log density of ``y`` when given).
        """
        check_key("key", key)
        check_positive_int("num_samples", num_samples)
        post = self.posterior(x, full_cov=True, include_noise=True)
        y_real = self.y_train if self.mask is None else self.y_train[np.asarray(self.mask)]
        with jax.enable_x64(True):
            k1, k2 = jax.random.split(key)
            draws = np.asarray(post.sample(k2, num_samples))
            s2 = np.asarray(post.sample_s2(k1, num_samples))
            loglik = {}
            if y is not None:
                yy = check_finite("y", as_array("y", y, ndim=1))
                check_same_length(x=draws[0], y=yy)
                lp = np.asarray(post.log_prob(jnp.asarray(yy)))
                loglik = {"y": np.broadcast_to(lp, (1, num_samples) + lp.shape)}
        return Result(posterior={"s2": s2[None]},
                      posterior_predictive={"y": draws[None]},
                      observed_data={"y": np.asarray(self.y_loc + self.y_unit * y_real)},
                      log_likelihood=loglik,
                      attrs={"engine": "probkit.models.nngp", "scale": post.kind,
                             "kernel": type(self.kernel).__name__})


def _model_q(model: NNGPRegression):
    """(q, logdet, n) of the real rows; ``n`` traced when padded."""
    return masked_quad_stats(model.sp, model.noise, model.mask)


@eqx.filter_jit
def _scale_posterior_jit(model: NNGPRegression) -> ScalePosterior:
    q, _, n = _model_q(model)
    return scale_posterior(q, n, model.scale_prior, model.scale, num_nodes=model.num_nodes)


@eqx.filter_jit
def _lml_jit(model: NNGPRegression):
    q, logdet, n = _model_q(model)
    lml = log_marginal(q, logdet, n, model.scale_prior, model.scale,
                       num_nodes=model.num_nodes)
    return lml - n * jnp.log(model.y_unit)


@eqx.filter_jit
def _posterior_jit(model: NNGPRegression, x, full_cov: bool, include_noise: bool):
    xs = (x - model.x_loc) / model.x_unit
    kx = model.kernel(xs, model.x_train)
    if model.mask is not None:
        kx = jnp.where(model.mask[None, :], kx, 0.0)
    kdiag = model.kernel.diag(xs)
    kss = model.kernel(xs, xs) if full_cov else None
    mom = predictive_moments(model.sp, model.noise, kx, kdiag, kss)
    var, cov = mom.var, mom.cov
    if include_noise:
        var = var + model.noise
        if cov is not None:
            cov = cov + model.noise * jnp.eye(cov.shape[0], dtype=cov.dtype)
    q, _, n = _model_q(model)
    sc = scale_posterior(q, n, model.scale_prior, model.scale, num_nodes=model.num_nodes)
    return ScaleMixtureNormal(mom.mean, var, cov, tuple(sc.params), sc.kind, model.y_loc,
                              model.y_unit)


def _flatten_prior(prior, names):
    """Unconstrained values of the prior parameters to fit."""
    out = {}
    for k in names:
        if k not in prior.arg_constraints:
            raise ValueError(f"fit_prior: {type(prior).__name__} has no parameter {k!r}; "
                             f"choose from {tuple(prior.arg_constraints)}")
        out[k] = biject_to(prior.arg_constraints[k]).inv(jnp.asarray(getattr(prior, k),
                                                                      jnp.float64))
    return out


def _unflatten_prior(prior, names, raw):
    return _prior_from(prior, {k: biject_to(prior.arg_constraints[k])(raw[k]) for k in names})


def _build(th, kstatic, prior, names):
    kfrozen, kstatic = kstatic
    k = eqx.combine(jax.tree_util.tree_map(jnp.exp, th["kernel"]), kfrozen, kstatic)
    pr = None if prior is None else _unflatten_prior(prior, names, th["prior"])
    return k, jnp.exp(th["log_noise"]), pr, jnp.exp(th["log_scale"])


def _neg_lml_chol(th, prior, x, y, kstatic, names, num_nodes, mask=None):
    k, eps, pr, s2 = _build(th, kstatic, prior, names)  # kstatic = (frozen arrays, static)
    gram = k(x, x)
    m, n_pad = _counts(mask, y.shape[0])
    if mask is None:
        q, logdet = _chol_stats(gram, y, eps + 1e-9)
    else:
        q, logdet = _chol_stats(mask_gram(gram, mask), jnp.where(mask, y, 0.0), eps + 1e-9)
        logdet = logdet - n_pad * jnp.log1p(eps + 1e-9)
    return -log_marginal(q, logdet, m, pr, s2, num_nodes=num_nodes) / m


def _neg_lml_spectral(sub, kth, prior, sp, kstatic, names, num_nodes, mask=None):
    _, eps, pr, s2 = _build({**sub, "kernel": kth}, kstatic, prior, names)
    q, logdet, n = masked_quad_stats(sp, eps, mask)
    return -log_marginal(q, logdet, n, pr, s2, num_nodes=num_nodes) / n


@functools.partial(jax.jit, static_argnames=("kstatic", "names", "num_nodes", "lr", "steps"))
def _fit_chol(theta, kfrozen, prior, x, y, mask, *, kstatic, names, num_nodes, lr, steps):
    def loss(th):
        return _neg_lml_chol(th, prior, x, y, (kfrozen, kstatic), names, num_nodes, mask)

    return _adam(loss, theta, lr, steps)


@functools.partial(jax.jit, static_argnames=("kstatic", "names", "num_nodes", "lr", "steps"))
def _fit_spectral(sub, kth, kfrozen, prior, sp, mask, *, kstatic, names, num_nodes, lr, steps):
    def loss(th):
        return _neg_lml_spectral(th, kth, prior, sp, (kfrozen, kstatic), names, num_nodes, mask)

    return _adam(loss, sub, lr, steps)


@functools.partial(jax.jit, static_argnames=("kstatic",))
def _gram_spectral(kparams, kfrozen, x, y, mask, *, kstatic):
    k = eqx.combine(jax.tree_util.tree_map(jnp.exp, kparams), kfrozen, kstatic)
    gram = k(x, x)
    if mask is not None:
        gram, y = mask_gram(gram, mask), jnp.where(mask, y, 0.0)
    return spectral(gram, y)


def fit(x, y, *, key, kernel: Kernel | None = None,
        scale_prior: dist.Distribution | None | str = "default", noise: float = 0.1,
        fit_hyperparameters: bool = True, fit_prior: Sequence[str] | str = "auto",
        num_steps: int = 200, refine_steps: int = 100, learning_rate: float = 0.05,
        max_fit_points: int = 400, num_nodes: int = 128, standardize: bool = True,
        capacity: int | None = None) -> NNGPRegression:
    """Fit a scale-mixture NNGP regression by maximising the marginal likelihood with optax.

    Parameters
    ----------
    x : array_like, shape (n, d) or (n,)
    y : array_like, shape (n,)
    key : jax PRNG key
        Chooses the subset for kernel fitting when ``n > max_fit_points``.
    kernel : Kernel, optional
        Default ``NNGP(depth=3, activation="relu", weight_variance=2, bias_variance=0.1)``.
        Its amplitude (``last_weight_variance`` / ``variance``) is set to 1: the scale lives in
        ``s2``.
    scale_prior : numpyro Distribution on (0, inf) or None
        ``None``: Gaussian model (fitted constant ``s2``); ``InverseGamma``: Student-t process
        (closed form); any other: quadrature. Default ``InverseGamma(2, 2)``.
    noise : float
        Initial noise ratio :math:`\\varepsilon` (standardised units), > 0.
    fit_prior : sequence of str or "auto"
        Prior parameters to fit by maximum marginal likelihood ("auto": its scale parameter,
        e.g. ``rate`` of the inverse gamma). Shape parameters that set the tails (``a``) are
        better chosen on validation data: maximum likelihood drives them to the Gaussian limit.
    num_steps : int
        Adam steps on all hyperparameters (kernel, noise, scale/prior) with a Cholesky
        factorisation per step, on at most ``max_fit_points`` random training points.
    refine_steps : int
        Adam steps on noise and scale/prior parameters on all ``n`` points with one shared
        eigendecomposition (O(n) per step).
    learning_rate : float
        Adam step size (the refinement uses half of it). The best iterate is kept.
    max_fit_points : int
        Subset size for the kernel stage (the data term of the marginal likelihood is then a
        random-subset estimate; the refinement uses all points).
    num_nodes : int
        Quadrature nodes for non-inverse-gamma priors.
    standardize : bool
        z-score inputs and targets with the statistics of the (real) training points.
    capacity : int, optional
        Pad the training data to ``capacity >= n`` rows with a mask (:func:`mask_gram`; the
        real count enters the marginal likelihoods as a traced value), so that every jitted
        function of the fit and of :meth:`NNGPRegression.posterior` compiles once for all
        ``n <= capacity`` (Bayesian optimisation adds one point per iteration). The results
        equal the unpadded ones up to rounding; the cost is that of ``capacity`` points.
        Default ``None``: no padding.

    Returns
    -------
    NNGPRegression

    Examples
    --------
    >>> import jax, numpy as np, numpyro.distributions as dist
    >>> from probkit.models.nngp import fit
    >>> x = np.linspace(-2, 2, 30)[:, None]; y = np.sin(2 * x[:, 0])
    >>> m = fit(x, y, key=jax.random.key(0), scale_prior=dist.Gamma(2.0, 2.0), num_steps=20)
    >>> m.posterior(x[:3]).mean.shape
    (3,)
    """
    check_key("key", key)
    xa = check_finite("x", as_array("x", x, ndim=(1, 2)))
    ya = check_finite("y", as_array("y", y, ndim=1))
    check_same_length(x=xa, y=ya)
    check_positive("noise", noise)
    check_positive_int("num_steps", num_steps, minimum=0)
    check_positive_int("refine_steps", refine_steps, minimum=0)
    check_positive("learning_rate", learning_rate)
    check_positive_int("max_fit_points", max_fit_points, minimum=2)
    check_positive_int("num_nodes", num_nodes, minimum=8)
    if capacity is not None:
        check_positive_int("capacity", capacity)
        if capacity < xa.shape[0]:
            raise ValueError(f"capacity: must be >= the number of points n={xa.shape[0]}, "
                             f"got {capacity}")
    if isinstance(scale_prior, str):
        if scale_prior != "default":
            raise ValueError(f"scale_prior: expected a numpyro Distribution or None, got "
                             f"{scale_prior!r}")
        scale_prior = dist.InverseGamma(2.0, 2.0)
    check_scale_prior("scale_prior", scale_prior)
    if kernel is None:
        kernel = NNGP(3, "relu", 2.0, 0.1, 1.0)
    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel: expected a probkit.kernels.Kernel, got {type(kernel).__name__}")
    names = _default_fit_prior(scale_prior) if fit_prior == "auto" else tuple(fit_prior)

    with jax.enable_x64(True):
        prior_raw = {} if scale_prior is None else _flatten_prior(scale_prior, names)
        xa2 = xa[:, None] if xa.ndim == 1 else xa
        if standardize:
            x_loc, x_unit = xa2.mean(0), xa2.std(0)
            x_unit = np.where(x_unit > 0, x_unit, 1.0)
            y_loc, y_unit = ya.mean(), ya.std() if ya.std() > 0 else 1.0
        else:
            x_loc, x_unit, y_loc, y_unit = np.zeros(xa2.shape[1]), np.ones(xa2.shape[1]), 0.0, 1.0
        xs_np, ys_np = (xa2 - x_loc) / x_unit, (ya - y_loc) / y_unit
        n = ys_np.shape[0]
        mask = None
        if capacity is not None:  # real rows first, padded rows at the (standardised) origin
            mask_np = np.arange(capacity) < n
            mask = jnp.asarray(mask_np)
            xs_np = np.concatenate([xs_np, np.zeros((capacity - n, xs_np.shape[1]))])
            ys_np = np.concatenate([ys_np, np.zeros(capacity - n)])
        xs = jnp.asarray(xs_np, jnp.float64)
        ys = jnp.asarray(ys_np, jnp.float64)
        kernel = jax.tree_util.tree_map(
            lambda v: jnp.asarray(v, jnp.float64) if eqx.is_inexact_array(v) else v,
            _unit_amplitude(kernel))
        spec = _kernel_trainable(kernel)
        kparams = eqx.filter(kernel, spec)
        kfrozen, kstatic = eqx.partition(eqx.filter(kernel, spec, inverse=True), eqx.is_array)
        prior_arr = None if scale_prior is None else jax.tree_util.tree_map(
            lambda v: jnp.asarray(v, jnp.float64), scale_prior)
        theta = {"kernel": jax.tree_util.tree_map(jnp.log, kparams),
                 "log_noise": jnp.log(jnp.float64(noise)), "prior": prior_raw,
                 "log_scale": jnp.float64(0.0)}
        static = dict(kstatic=kstatic, names=names, num_nodes=num_nodes)
        history = []
        if fit_hyperparameters and num_steps > 0:
            msub = None
            if n > max_fit_points and mask is not None:  # random real rows, shapes fixed
                u = jnp.where(mask, jax.random.uniform(key, (capacity,)), 2.0)
                idx = jnp.argsort(u)[:max_fit_points]
                xsub, ysub = xs[idx], ys[idx]
            elif n > max_fit_points:
                idx = jax.random.choice(key, n, (max_fit_points,), replace=False)
                xsub, ysub = xs[idx], ys[idx]
            elif mask is not None:  # the real rows come first: at most max_fit_points rows
                m = min(capacity, max_fit_points)
                xsub, ysub, msub = xs_np[:m], ys_np[:m], mask_np[:m]
            else:
                xsub, ysub = xs, ys
            theta, hist = _fit_chol(theta, kfrozen, prior_arr, xsub, ysub, msub,
                                    lr=float(learning_rate), steps=num_steps, **static)
            history.append(np.asarray(hist))
        sp = _gram_spectral(theta["kernel"], kfrozen, xs, ys, mask, kstatic=kstatic)
        if fit_hyperparameters and refine_steps > 0:
            sub = {k: v for k, v in theta.items() if k != "kernel"}
            sub, hist = _fit_spectral(sub, theta["kernel"], kfrozen, prior_arr, sp, mask,
                                      lr=0.5 * float(learning_rate), steps=refine_steps, **static)
            history.append(np.asarray(hist))
            theta = {**sub, "kernel": theta["kernel"]}
        kern, eps, pr, s2 = _build(theta, (kfrozen, kstatic), prior_arr, names)
        return NNGPRegression(kernel=kern, noise=eps, scale_prior=pr,
                              scale=s2 if scale_prior is None else jnp.float64(1.0),
                              x_train=xs, y_train=ys, sp=sp, x_loc=jnp.asarray(x_loc),
                              x_unit=jnp.asarray(x_unit), y_loc=jnp.float64(y_loc),
                              y_unit=jnp.float64(y_unit),
                              history=np.concatenate(history) if history else np.zeros(0),
                              mask=mask, num_nodes=num_nodes)


def _adam(loss, theta, lr, steps):
    """Adam on ``loss`` for a fixed number of steps in one scan; returns the best iterate."""
    opt = optax.adam(lr)
    state = opt.init(theta)

    def step(carry, _):
        th, st, best, best_val = carry
        val, g = jax.value_and_grad(loss)(th)
        ok = jnp.isfinite(val) & jax.tree_util.tree_reduce(
            lambda a, b: a & b, jax.tree_util.tree_map(lambda v: jnp.all(jnp.isfinite(v)), g),
            True)
        better = ok & (val < best_val)
        best = jax.tree_util.tree_map(lambda b, t: jnp.where(better, t, b), best, th)
        best_val = jnp.where(better, val, best_val)
        g = jax.tree_util.tree_map(lambda v: jnp.where(ok, v, 0.0), g)
        upd, st = opt.update(g, st, th)
        return (optax.apply_updates(th, upd), st, best, best_val), val

    init = (theta, state, theta, jnp.asarray(jnp.inf, jnp.float64))
    (th, _, best, best_val), hist = jax.lax.scan(step, init, None, length=steps)
    last = loss(th)
    use_last = jnp.isfinite(last) & (last < best_val)
    best = jax.tree_util.tree_map(lambda b, t: jnp.where(use_last, t, b), best, th)
    return best, hist


# =============================================================================================
# Classification: sparse variational scale-mixture NNGP
# =============================================================================================


class SVParams(NamedTuple):
    """Trainable parameters of the sparse variational classifier (unconstrained)."""

    z: Array  # (M, d) inducing inputs
    m: Array  # (C, M) variational means
    log_s: Array  # (C, M) log diagonal variances (per unit scale)
    log_a: Array  # q(s2) = IG(a', b') (inverse-gamma model)
    log_b: Array
    log_scale: Array  # fixed s2 (Gaussian model)
    log_kernel: Any  # log of the kernel's trainable leaves


def _kl_inverse_gamma(aq, bq, a, b):
    return ((aq - a) * digamma(aq) - gammaln(aq) + gammaln(a) + a * (jnp.log(bq) - jnp.log(b))
            + aq * (b - bq) / bq)


@dataclasses.dataclass(frozen=True)
class NNGPClassifier:
    """A fitted sparse variational (scale-mixture) NNGP classifier (see :func:`fit_classifier`)."""

    params: SVParams
    kstatic: Any
    scale_model: str
    prior_a: float
    prior_b: float
    num_classes: int
    x_loc: Array
    x_unit: Array
    history: np.ndarray
    jitter: float = 1e-6

    def _kernel(self, params=None):
        params = self.params if params is None else params
        return _sv_kernel(params, self.kstatic)

    def latent_moments(self, x) -> tuple[Array, Array]:
        """Unit-scale marginal moments of the C latent functions at ``x``: (m, C) each."""
        with jax.enable_x64(True):
            xs = (as_2d(jnp.asarray(x, jnp.float64)) - self.x_loc) / self.x_unit
            return _sv_moments(self.params, self.kstatic, xs, self.jitter)

    def predict_proba(self, x, *, key, num_samples: int = 1000) -> Array:
        """Monte Carlo predictive class probabilities, shape (m, C)."""
        check_key("key", key)
        xa = check_finite("x", as_array("x", x, ndim=2))
        with jax.enable_x64(True):
            mean, var = self.latent_moments(xa)
            return _sv_predict(self.params, mean, var, key, num_samples, self.scale_model)

    def evaluate(self, x, y, *, key, num_samples: int = 1000) -> dict[str, float]:
        """Accuracy, NLL (mean) and mean predictive entropy on labelled data."""
        p = np.asarray(self.predict_proba(x, key=key, num_samples=num_samples))
        y = np.asarray(y, dtype=int)
        ent = -np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=1)
        out = {"entropy": float(ent.mean())}
        if y.size:
            out["accuracy"] = float(np.mean(p.argmax(1) == y))
            out["nll"] = float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-300, None))))
        return out


def _sv_kernel(params: SVParams, kstatic):
    return eqx.combine(jax.tree_util.tree_map(jnp.exp, params.log_kernel), kstatic)


def _sv_moments(params: SVParams, kstatic, xb, jitter):
    k = _sv_kernel(params, kstatic)
    z = params.z
    mm = z.shape[0]
    kmm = k(z, z) + jitter * jnp.eye(mm, dtype=z.dtype)
    chol = jnp.linalg.cholesky(kmm)
    kmb = k(z, xb)  # (M, B)
    a = jax.scipy.linalg.solve_triangular(chol, kmb, lower=True)  # L^-1 K_MB
    p = jax.scipy.linalg.solve_triangular(chol.T, a, lower=False)  # K_MM^-1 K_MB  (M, B)
    mean = params.m @ p  # (C, B)
    s = jnp.exp(params.log_s)  # (C, M)
    var = s @ (p**2) + (k.diag(xb) - jnp.sum(a**2, 0))[None, :]
    return mean.T, jnp.maximum(var, 1e-12).T  # (B, C)


def _sample_s2(params: SVParams, key, shape, scale_model):
    if scale_model == "gaussian":
        return jnp.full(shape, jnp.exp(params.log_scale))
    a, b = jnp.exp(params.log_a), jnp.exp(params.log_b)
    return b / jax.random.gamma(key, a, shape)


def _sv_predict(params, mean, var, key, num_samples, scale_model):
    k1, k2 = jax.random.split(key)
    s2 = _sample_s2(params, k1, (num_samples, mean.shape[0], 1), scale_model)
    f = mean + jnp.sqrt(s2 * var) * jax.random.normal(k2, (num_samples,) + mean.shape)
    return jnp.mean(jax.nn.softmax(f, axis=-1), axis=0)


def _sv_kl(params: SVParams, kstatic, jitter, scale_model, prior_a, prior_b):
    k = _sv_kernel(params, kstatic)
    z = params.z
    mm = z.shape[0]
    kmm = k(z, z) + jitter * jnp.eye(mm, dtype=z.dtype)
    chol = jnp.linalg.cholesky(kmm)
    kinv_diag = jnp.sum(jax.scipy.linalg.solve_triangular(
        chol, jnp.eye(mm, dtype=z.dtype), lower=True) ** 2, 0)  # diag(K^-1)
    s = jnp.exp(params.log_s)
    alpha = jax.scipy.linalg.solve_triangular(chol, params.m.T, lower=True)  # (M, C)
    maha = jnp.sum(alpha**2, 0)  # m_c^T K^-1 m_c
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    if scale_model == "gaussian":
        inv_s2 = jnp.exp(-params.log_scale)
        kl_ig = 0.0
    else:
        aq, bq = jnp.exp(params.log_a), jnp.exp(params.log_b)
        inv_s2 = aq / bq
        kl_ig = _kl_inverse_gamma(aq, bq, prior_a, prior_b)
    kl_u = 0.5 * jnp.sum(s @ kinv_diag + inv_s2 * maha - mm + logdet - jnp.sum(params.log_s, 1))
    return kl_u + kl_ig


def fit_classifier(x, y, *, key, kernel: Kernel | None = None, scale_model: str = "inverse_gamma",
                   prior_a: float = 2.0, prior_b: float = 2.0, num_inducing: int = 200,
                   num_classes: int | None = None, batch_size: int = 100, num_epochs: int = 100,
                   learning_rate: float = 1e-2, num_mc: int = 16, train_inducing: bool = True,
                   standardize: bool = True) -> NNGPClassifier:
    """Sparse variational NNGP classifier with a shared random scale (Lee et al. 2022, Sec. 3.3).

    Prior: :math:`s^2 \\sim \\mathrm{IG}(a, b)`, :math:`u_c \\mid s^2 \\sim \\mathcal N(0, s^2
    K_{MM})` for each class, :math:`f_c \\mid u_c` the GP conditional, softmax likelihood.
    Variational posterior :math:`q(s^2) = \\mathrm{IG}(a', b')`,
    :math:`q(u_c \\mid s^2) = \\mathcal N(m_c, s^2\\,\\mathrm{diag}(S_c))`. The ELBO
    :math:`\\mathbb E_q\\log p(y\\mid f) - \\mathrm{KL}` uses ``num_mc`` reparametrised draws of
    :math:`(s^2, f)` per minibatch and the closed-form KL

    .. math::

        \\tfrac12\\sum_c[\\mathrm{tr}(K_{MM}^{-1}S_c) + \\tfrac{a'}{b'}m_c^\\top K_{MM}^{-1}m_c
        - M + \\ln|K_{MM}| - \\ln|S_c|]
        + \\mathrm{KL}(\\mathrm{IG}(a',b')\\,\\|\\,\\mathrm{IG}(a,b)).

    ``scale_model="gaussian"`` is the NNGP baseline: a fitted constant :math:`s^2` (trainable
    readout variance). Optimised with optax Adam on minibatches (loss: -ELBO / N).

    Parameters
    ----------
    x : array (n, d); y : int array (n,) of labels in ``0..C-1``.
    num_inducing : int
        M (default 200), initialised with training inputs spread over the classes.

    Returns
    -------
    NNGPClassifier
    """
    check_key("key", key)
    xa = check_finite("x", as_array("x", x, ndim=2))
    ya = as_array("y", y, ndim=1)
    check_finite("y", ya)
    check_same_length(x=xa, y=ya)
    if not np.all(ya == np.round(ya)) or np.any(ya < 0):
        raise ValueError("y: expected integer class labels >= 0")
    ya = ya.astype(int)
    if scale_model not in ("inverse_gamma", "gaussian"):
        raise ValueError(f"scale_model: expected 'inverse_gamma' or 'gaussian', "
                         f"got {scale_model!r}")
    check_positive("prior_a", prior_a)
    check_positive("prior_b", prior_b)
    num_inducing = check_positive_int("num_inducing", num_inducing)
    batch_size = check_positive_int("batch_size", batch_size)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    num_mc = check_positive_int("num_mc", num_mc)
    check_positive("learning_rate", learning_rate)
    c = int(ya.max()) + 1 if num_classes is None else check_positive_int("num_classes", num_classes)
    if ya.max() >= c:
        raise ValueError(f"y: labels must be < num_classes={c}")
    if kernel is None:
        kernel = NNGP(2, "relu", 2.0, 0.1, 1.0)
    n, d = xa.shape
    with jax.enable_x64(True):
        if standardize:
            x_loc, x_unit = xa.mean(0), xa.std(0)
            x_unit = np.where(x_unit > 0, x_unit, 1.0)
        else:
            x_loc, x_unit = np.zeros(d), np.ones(d)
        xs = (xa - x_loc) / x_unit
        # inducing inputs: round-robin over classes, first examples of each class
        mm = min(num_inducing, n)
        order = np.concatenate([np.flatnonzero(ya == k) for k in range(c)])
        per_class = [list(np.flatnonzero(ya == k)) for k in range(c)]
        picks, i = [], 0
        while len(picks) < mm:
            lst = per_class[i % c]
            if lst:
                picks.append(lst.pop(0))
            i += 1
            if i > 10 * n:
                picks += [j for j in order if j not in picks][: mm - len(picks)]
                break
        kernel = jax.tree_util.tree_map(
            lambda v: jnp.asarray(v, jnp.float64) if eqx.is_inexact_array(v) else v,
            _unit_amplitude(kernel))
        kparams, kstatic = eqx.partition(kernel, _kernel_trainable(kernel))
        params = SVParams(
            z=jnp.asarray(xs[np.array(picks)]), m=jnp.zeros((c, mm)),
            log_s=jnp.full((c, mm), jnp.log(1.0)), log_a=jnp.log(jnp.float64(prior_a)),
            log_b=jnp.log(jnp.float64(prior_b)), log_scale=jnp.float64(0.0),
            log_kernel=jax.tree_util.tree_map(jnp.log, kparams))
        jitter = 1e-6
        batch_size = min(batch_size, n)
        opt = optax.adam(learning_rate)
        opt_state = opt.init(params)
        xs_j, ys_j = jnp.asarray(xs), jnp.asarray(ya)

        def loss(p, xb, yb, k):
            if not train_inducing:
                p = p._replace(z=jax.lax.stop_gradient(p.z))
            mean, var = _sv_moments(p, kstatic, xb, jitter)
            k1, k2 = jax.random.split(k)
            s2 = _sample_s2(p, k1, (num_mc, 1, 1), scale_model)
            f = mean + jnp.sqrt(s2 * var) * jax.random.normal(k2, (num_mc,) + mean.shape)
            ll = jnp.take_along_axis(jax.nn.log_softmax(f, -1), yb[None, :, None], -1)
            kl = _sv_kl(p, kstatic, jitter, scale_model, prior_a, prior_b)
            return -jnp.mean(ll) + kl / n

        @jax.jit
        def epoch(carry, k):
            p, st = carry
            kp, kb = jax.random.split(k)
            perm = jax.random.permutation(kp, n)
            nb = n // batch_size
            batches = perm[: nb * batch_size].reshape(nb, batch_size)

            def step(carry, inp):
                p, st = carry
                idx, kk = inp
                val, g = jax.value_and_grad(loss)(p, xs_j[idx], ys_j[idx], kk)
                upd, st = opt.update(g, st, p)
                return (optax.apply_updates(p, upd), st), val

            (p, st), vals = jax.lax.scan(step, (p, st), (batches, jax.random.split(kb, nb)))
            return (p, st), jnp.mean(vals)

        (params, opt_state), hist = jax.lax.scan(epoch, (params, opt_state),
                                                 jax.random.split(key, num_epochs))
        return NNGPClassifier(params=params, kstatic=kstatic, scale_model=scale_model,
                              prior_a=prior_a, prior_b=prior_b, num_classes=c,
                              x_loc=jnp.asarray(x_loc), x_unit=jnp.asarray(x_unit),
                              history=np.asarray(hist), jitter=jitter)

