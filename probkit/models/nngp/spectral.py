r"""The pure layer of the scale-mixture NNGP: one eigendecomposition, closed forms, quadrature.

With :math:`A = K + \varepsilon I` and the rotated targets :math:`\tilde y = U^\top y` of one
eigendecomposition :math:`K = U\Lambda U^\top`, the two statistics every marginal likelihood and
scale posterior needs, :math:`q = y^\top A^{-1} y = \sum_i \tilde y_i^2/(\lambda_i+\varepsilon)`
and :math:`\ln|A| = \sum_i\ln(\lambda_i+\varepsilon)`, cost :math:`O(n)` for every value of the
noise ratio :math:`\varepsilon` and the scale :math:`s^2`. From them:

* the Gaussian marginal :math:`\log\mathcal N(y; 0, s^2 A)` (:func:`gaussian_log_marginal`);
* the Student-t process marginal :math:`y \sim t_{2a}(0, (b/a)A)` for
  :math:`s^2 \sim \mathrm{IG}(a, b)` (:func:`student_t_log_marginal`, Shah et al. 2014) and its
  conjugate posterior :math:`s^2\mid y \sim \mathrm{IG}(a + n/2, b + q/2)`;
* for any other prior :math:`H`, the posterior of :math:`t = \log s^2`,
  :math:`g(t) \propto H(e^t)e^t e^{-nt/2}e^{-q e^{-t}/2}`, by the trapezoid rule around its mode
  (:func:`scale_quadrature`), which converges geometrically for these smooth integrands;
* the unit-scale predictive moments :math:`\mu_* = K_{*n}A^{-1}y`,
  :math:`S_* = K_{**} - K_{*n}A^{-1}K_{n*}` (:func:`predictive_moments`).

Padding (:func:`mask_gram`, :func:`masked_quad_stats`) lets one compiled program serve every
data size up to a capacity: the real count ``n`` is then a traced value.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.kernels import NNGP
>>> from probkit.models.nngp import spectral, quad_stats, student_t_log_marginal
>>> with jax.enable_x64(True):
...     x = jnp.linspace(-1, 1, 6)[:, None]
...     sp = spectral(NNGP(2)(x, x), jnp.sin(3 * x[:, 0]))
...     q, logdet = quad_stats(sp, 0.1)
...     lml = student_t_log_marginal(q, logdet, 6, 2.0, 2.0)
>>> bool(jnp.isfinite(lml))
True
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import gammaln, logsumexp

__all__ = [
    "Spectral", "ScaleQuadrature", "ScalePosterior", "PredictiveMoments", "spectral",
    "quad_stats", "mask_gram", "masked_quad_stats", "gaussian_log_marginal",
    "student_t_log_marginal", "log_scale_integrand", "scale_quadrature", "log_marginal",
    "scale_posterior", "predictive_moments",
]

LOG_2PI = math.log(2.0 * math.pi)


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
                 num_nodes: int = 128, closed_form: bool = True) -> Array:
    """:math:`\\log p(y)` of the scale-mixture model from :math:`(q, \\ln|A|)`.

    ``prior=None`` is the Gaussian model with fixed ``scale``; ``InverseGamma`` the closed form
    (unless ``closed_form=False``); anything else the quadrature
    :math:`-\\frac n2\\ln 2\\pi - \\frac12\\ln|A| + \\ln\\int\\ldots`.
    """
    if prior is None:
        return gaussian_log_marginal(q, logdet, n, scale)
    if closed_form and _is_inverse_gamma(prior):
        return student_t_log_marginal(q, logdet, n, prior.concentration, prior.rate)
    quad = scale_quadrature(q, n, prior, num_nodes=num_nodes)
    return -0.5 * n * LOG_2PI - 0.5 * logdet + quad.log_integral


def scale_posterior(q, n: int | Array, prior: dist.Distribution | None, scale=1.0, *,
                    num_nodes: int = 128, closed_form: bool = True) -> ScalePosterior:
    """Posterior of :math:`s^2` given :math:`q` (closed form for an inverse gamma unless
    ``closed_form=False``, quadrature otherwise)."""
    if prior is None:
        return ScalePosterior("fixed", (jnp.asarray(scale),))
    if closed_form and _is_inverse_gamma(prior):
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
    The marginal variances are floored at the dtype's resolution of the prior variance,
    :math:`\\epsilon K_{**,ii}`: below it the difference is rounding error, and a zero variance
    (noise-free interpolation at a training input) would give a 0/0 density.
    """
    d = sp.evals + noise
    v = k_star @ sp.evecs  # (m, n)
    mean = v @ (sp.y_rot / d)
    floor = jnp.finfo(v.dtype).eps * k_star_diag
    var = jnp.maximum(k_star_diag - jnp.sum(v**2 / d, axis=1), floor)
    cov = None
    if k_star_star is not None:
        cov = k_star_star - (v / d) @ v.T
        cov = 0.5 * (cov + cov.T)
    return PredictiveMoments(mean, var, cov)
