r"""Numerically stable special functions shared across floors.

* :func:`log_h` — :math:`\log h(z)`, :math:`h(z) = \varphi(z) + z\Phi(z)`, the scaled expected
  improvement of a standard normal (:math:`E[(Z + z)_+] = h(z)`), in the three-branch form of
  Ament et al. (2023, "Unexpected improvements to expected improvement for Bayesian
  optimization", NeurIPS, eq. 9); finite with useful gradients where :math:`h` underflows.
* :func:`log_ei` — log expected improvement of a normal, from :func:`log_h`.
* :func:`log1mexp` — :math:`\log(1 - e^a)` for :math:`a < 0` (Mächler 2012).
* :func:`normal_logpdf` — :math:`\log N(y; \mu, \sigma^2)`, elementwise;
* :func:`logmeanexp` — :math:`\log \frac1K \sum_k e^{a_k}` along an axis (mixtures of
  equally weighted components).

Used by the acquisition functions (:mod:`probkit.bo.acquisition`) and by the exact expected
improvement of a PFN's bar distribution (:mod:`probkit.inference.pfn.bar`).

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.special import log_h
>>> bool(jnp.isfinite(log_h(jnp.array(-100.0))))
True
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array
from jax.scipy.special import erfcx, logsumexp, ndtr

__all__ = ["log_h", "log_ei", "log1mexp", "normal_logpdf", "logmeanexp"]

_C1 = 0.5 * math.log(2.0 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2.0)


def log1mexp(a: Array) -> Array:
    """:math:`\\log(1 - e^{a})` for :math:`a < 0`, accurate on both sides of :math:`-\\log 2`."""
    a = jnp.minimum(a, -1e-300)
    big = a > -math.log(2.0)
    safe_big = jnp.where(big, a, -1.0)
    safe_small = jnp.where(big, -1.0, a)
    return jnp.where(big, jnp.log(-jnp.expm1(safe_big)), jnp.log1p(-jnp.exp(safe_small)))


def log_h(z: Array) -> Array:
    """Stable :math:`\\log(\\varphi(z) + z\\Phi(z))` (Ament et al. 2023, eq. 9)."""
    z = jnp.asarray(z)
    eps = jnp.finfo(z.dtype).eps
    z_up = jnp.where(z > -1.0, z, 0.0)
    upper = jnp.log(jnp.exp(-0.5 * z_up**2 - _C1) + z_up * ndtr(z_up))
    z_mid = jnp.where(z <= -1.0, z, -1.0)
    mid = -0.5 * z_mid**2 - _C1 + log1mexp(jnp.log(erfcx(-z_mid / math.sqrt(2.0)) * -z_mid) + _C2)
    tail = -0.5 * z_mid**2 - _C1 - 2.0 * jnp.log(-z_mid)
    lower = jnp.where(z_mid > -1.0 / jnp.sqrt(eps), mid, tail)
    return jnp.where(z > -1.0, upper, lower)


def log_ei(mean: Array, variance: Array, best: Array) -> Array:
    """Log expected improvement below ``best`` of :math:`N(\\text{mean}, \\text{variance})`,
    :math:`\\log\\sigma + \\log h((\\text{best} - \\text{mean})/\\sigma)` (finite far below
    the support, where the plain EI underflows)."""
    sigma = jnp.sqrt(variance)
    return log_h((best - mean) / sigma) + jnp.log(sigma)


def normal_logpdf(y: Array, loc: Array, scale: Array) -> Array:
    r"""Elementwise :math:`\log N(y; \mu, \sigma^2) = -\tfrac12 z^2 - \log\sigma
    - \tfrac12\log 2\pi`, :math:`z = (y - \mu)/\sigma`."""
    return -0.5 * ((y - loc) / scale) ** 2 - jnp.log(scale) - _C1


def logmeanexp(a: Array, axis: int = 0) -> Array:
    r""":math:`\log \frac1K \sum_{k=1}^K e^{a_k}` along ``axis`` (``K = a.shape[axis]``)."""
    return logsumexp(a, axis=axis) - math.log(a.shape[axis])
