r"""The bar (Riemann) distribution: a PFN's output over a real-valued ``y``.

A bar distribution on borders :math:`b_0 < b_1 < \dots < b_K` with bucket probabilities
:math:`p = \mathrm{softmax}(\text{logits})` has density :math:`p_k / (b_{k+1} - b_k)` inside
the inner buckets :math:`k = 1, \dots, K-2`. The two outer buckets are replaced by half-normal
tails attached at :math:`b_1` and :math:`b_{K-1}` that keep their probability, with scale
:math:`s = w / \Phi^{-1}(0.75)` (``w`` the outer bucket's width), so half of each tail's mass lies
inside the original bucket and the support is the whole real line (Müller et al., "Transformers
Can Do Bayesian Inference", ICLR 2022, Sec. 4 and Theorem 1).

Borders come from prior samples of ``y``: equal-count quantile groups, each inner border midway
between neighbouring groups (:func:`borders_from_samples`).

Everything here is a pure, jitted function of ``(logits, borders)`` that broadcasts over leading
axes of ``logits`` (``(..., K)``) and of ``y``.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.pfn.bar import borders_from_samples, logpdf, mean
>>> borders = borders_from_samples(jax.random.normal(jax.random.key(0), (10_000,)), 50)
>>> logits = jnp.zeros(borders.shape[0] - 1)
>>> bool(abs(mean(logits, borders)) < 0.05)
True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import ndtri
from jax.scipy.stats import norm

from probkit.special import log_h

__all__ = ["borders_from_samples", "logpdf", "cdf", "mean", "variance", "quantile", "sample",
           "probabilities", "log_expected_improvement"]

_Q75 = 0.6744897501960817  # Phi^-1(0.75)
_SQRT_2_OVER_PI = 0.7978845608028654
_PHI0 = 0.3989422804014327  # standard normal density at 0


def borders_from_samples(samples, num_buckets: int) -> Array:
    """Equal-mass bucket borders from prior samples of ``y``.

    Sorted samples are cut into ``num_buckets`` groups of equal count; each inner border is the
    midpoint between the last value of one group and the first of the next; the outer borders are
    the sample minimum and maximum. Duplicate borders are dropped (fewer buckets result).

    Parameters
    ----------
    samples : array
        Prior draws of ``y`` (any shape; flattened). Non-finite values are ignored.
    num_buckets : int
        Number of buckets wanted (at least 3: two tails and one inner bucket).
    """
    s = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    s = s[np.isfinite(s)]
    if num_buckets < 3:
        raise ValueError(f"num_buckets: expected at least 3, got {num_buckets}")
    if s.size < 2 * num_buckets:
        raise ValueError(f"samples: need at least {2 * num_buckets} finite samples for "
                         f"{num_buckets} buckets, got {s.size}")
    cuts = np.linspace(0, s.size, num_buckets + 1).round().astype(int)[1:-1]
    inner = 0.5 * (s[cuts - 1] + s[cuts])
    borders = np.unique(np.concatenate([[s[0]], inner, [s[-1]]]))
    return jnp.asarray(borders, dtype=jnp.float32)


def _take(a: Array, idx: Array) -> Array:
    """``a[..., idx]`` with ``idx`` broadcast against ``a``'s leading axes."""
    shape = jnp.broadcast_shapes(a.shape[:-1], idx.shape)
    a = jnp.broadcast_to(a, shape + a.shape[-1:])
    return jnp.take_along_axis(a, jnp.broadcast_to(idx, shape)[..., None], axis=-1)[..., 0]


def _parts(logits: Array, borders: Array):
    logp = jax.nn.log_softmax(logits, axis=-1)
    widths = jnp.diff(borders)
    s_left = widths[0] / _Q75
    s_right = widths[-1] / _Q75
    return logp, widths, s_left, s_right


def probabilities(logits: Array) -> Array:
    """Bucket probabilities ``softmax(logits)``."""
    return jax.nn.softmax(logits, axis=-1)


@jax.jit
def logpdf(logits: Array, borders: Array, y: Array) -> Array:
    """Log density at ``y`` (broadcast against ``logits[..., 0]``)."""
    logp, widths, s_left, s_right = _parts(logits, borders)
    k = logits.shape[-1]
    idx = jnp.clip(jnp.searchsorted(borders, y, side="right") - 1, 0, k - 1)
    inner = _take(logp, idx) - jnp.log(widths[idx])
    left = logp[..., 0] + jnp.log(2.0) + norm.logpdf(borders[1] - y, scale=s_left)
    right = logp[..., -1] + jnp.log(2.0) + norm.logpdf(y - borders[-2], scale=s_right)
    return jnp.where(y < borders[1], left, jnp.where(y >= borders[-2], right, inner))


@jax.jit
def cdf(logits: Array, borders: Array, y: Array) -> Array:
    """Cumulative distribution function at ``y``."""
    p = probabilities(logits)
    widths = jnp.diff(borders)
    _, _, s_left, s_right = _parts(logits, borders)
    k = logits.shape[-1]
    cum = jnp.cumsum(p, axis=-1) - p  # mass below each bucket's lower border
    idx = jnp.clip(jnp.searchsorted(borders, y, side="right") - 1, 1, k - 2)
    frac = jnp.clip((y - borders[idx]) / widths[idx], 0.0, 1.0)
    inner = _take(cum, idx) + _take(p, idx) * frac
    left = p[..., 0] * 2.0 * norm.cdf(-(borders[1] - y) / s_left)
    right = 1.0 - p[..., -1] * 2.0 * norm.cdf(-(y - borders[-2]) / s_right)
    return jnp.where(y < borders[1], left, jnp.where(y >= borders[-2], right, inner))


@jax.jit
def mean(logits: Array, borders: Array) -> Array:
    r"""Mean: :math:`\sum_k p_k m_k` with bucket midpoints inside and half-normal means in the
    tails (:math:`b_1 - s\sqrt{2/\pi}`, :math:`b_{K-1} + s\sqrt{2/\pi}`)."""
    return _moments(logits, borders)[0]


@jax.jit
def variance(logits: Array, borders: Array) -> Array:
    """Variance, from the exact first two moments of the uniform buckets and half-normal tails."""
    m1, m2 = _moments(logits, borders)
    return jnp.maximum(m2 - m1**2, 0.0)


def _moments(logits: Array, borders: Array) -> tuple[Array, Array]:
    p, (_, widths, s_left, s_right) = probabilities(logits), _parts(logits, borders)
    mid = 0.5 * (borders[1:] + borders[:-1])
    m1_b = mid
    m2_b = mid**2 + widths**2 / 12.0
    bl, br = borders[1], borders[-2]
    m1_b = m1_b.at[0].set(bl - s_left * _SQRT_2_OVER_PI).at[-1].set(br + s_right * _SQRT_2_OVER_PI)
    m2_b = (m2_b.at[0].set(bl**2 - 2 * bl * s_left * _SQRT_2_OVER_PI + s_left**2)
            .at[-1].set(br**2 + 2 * br * s_right * _SQRT_2_OVER_PI + s_right**2))
    return p @ m1_b, p @ m2_b


@jax.jit
def quantile(logits: Array, borders: Array, q: Array) -> Array:
    """Quantile function (inverse of :func:`cdf`) at levels ``q`` in ``(0, 1)``; ``q``
    broadcasts against ``logits[..., 0]``."""
    p = probabilities(logits)
    widths = jnp.diff(borders)
    _, _, s_left, s_right = _parts(logits, borders)
    k = logits.shape[-1]
    upper = jnp.cumsum(p, axis=-1)
    q = jnp.asarray(q)
    qb = jnp.broadcast_to(q, jnp.broadcast_shapes(q.shape, p.shape[:-1]))
    pb = jnp.broadcast_to(p, qb.shape + p.shape[-1:])
    ub = jnp.broadcast_to(upper, pb.shape)
    idx = jnp.clip(jnp.sum(ub < qb[..., None], axis=-1), 1, k - 2)
    p_idx = _take(pb, idx)
    below = _take(ub, idx) - p_idx
    inner = borders[idx] + widths[idx] * jnp.clip((qb - below) / jnp.maximum(p_idx, 1e-30),
                                                  0.0, 1.0)
    p0, pk = pb[..., 0], pb[..., -1]
    left = borders[1] - s_left * ndtri(jnp.clip(1.0 - qb / (2.0 * p0), 0.5, 1.0 - 1e-7))
    right = borders[-2] + s_right * ndtri(
        jnp.clip((qb - (1.0 - pk)) / (2.0 * pk) + 0.5, 0.5, 1.0 - 1e-7))
    return jnp.where(qb < p0, left, jnp.where(qb > 1.0 - pk, right, inner))


@functools.partial(jax.jit, static_argnums=3)
def sample(key: Array, logits: Array, borders: Array, num_samples: int) -> Array:
    """``num_samples`` independent draws per distribution, shape ``(num_samples, ...)``."""
    u = jax.random.uniform(key, (num_samples,) + logits.shape[:-1], minval=1e-7,
                           maxval=1.0 - 1e-7)
    return quantile(logits, borders, u)


@jax.jit
def log_expected_improvement(logits: Array, borders: Array, best: Array) -> Array:
    r"""Exact :math:`\log E[(y^* - y)_+]` (expected improvement below ``best`` :math:`= y^*`).

    Summed bucket by bucket in log space (:func:`jax.nn.logsumexp`): an inner bucket
    :math:`[l, r]` of probability :math:`p` contributes
    :math:`\frac{p}{2(r-l)}\,(u)\,(a + c)` with :math:`u = \min(r, y^*) - l`,
    :math:`a = y^* - l`, :math:`c = (y^* - r)_+` (zero unless :math:`y^* > l`); the left
    half-normal tail (scale :math:`s`, attached at :math:`b_1`) :math:`2p_0 s\,h((y^*-b_1)/s)` for
    :math:`y^* < b_1` (with :math:`h(z) = \varphi(z) + z\Phi(z)`, evaluated as
    :func:`probkit.special.log_h`, so the value stays finite far below the support) and
    :math:`p_0(s\sqrt{2/\pi} + y^* - b_1)` otherwise; the right tail
    :math:`2p_{K-1}s\,(h(z) - h(0) - z/2)`, :math:`z = (y^* - b_{K-1})/s`, for
    :math:`y^* > b_{K-1}`.
    This is the expected improvement PFNs4BO optimises (Müller et al., "PFNs4BO: In-context
    learning for Bayesian optimization", ICML 2023) instead of a Gaussian fitted to the mean and
    variance. ``best`` broadcasts against ``logits[..., 0]``.
    """
    logp, widths, s_left, s_right = _parts(logits, borders)
    best = jnp.asarray(best, logp.dtype)
    shape = jnp.broadcast_shapes(logp.shape[:-1], best.shape)
    logp = jnp.broadcast_to(logp, shape + logp.shape[-1:])
    best = jnp.broadcast_to(best, shape)
    neg_inf = jnp.asarray(-jnp.inf, logp.dtype)
    # inner buckets k = 1..K-2 on [borders[k], borders[k+1]]
    lo, hi, w = borders[1:-2], borders[2:-1], widths[1:-1]
    b = best[..., None]
    valid = b > lo
    u = jnp.where(valid, jnp.minimum(hi, b) - lo, 1.0)
    apc = jnp.where(valid, (b - lo) + jnp.maximum(b - hi, 0.0), 1.0)
    inner = jnp.where(valid, logp[..., 1:-1] - jnp.log(2.0 * w) + jnp.log(u) + jnp.log(apc),
                      neg_inf)
    # left tail below borders[1]
    b1 = borders[1]
    below = best < b1
    far = jnp.log(2.0 * s_left) + log_h(jnp.where(below, (best - b1) / s_left, 0.0))
    near = jnp.log(s_left * _SQRT_2_OVER_PI + jnp.where(below, 0.0, best - b1))
    left = logp[..., 0] + jnp.where(below, far, near)
    # right tail above borders[-2]
    z = jnp.maximum((best - borders[-2]) / s_right, 0.0)
    zs = jnp.where(z > 1e-3, z, 1.0)
    gain = jnp.where(z > 1e-3, jnp.exp(log_h(zs)) - _PHI0 - 0.5 * zs,
                     _PHI0 * z**2 * (0.5 - z**2 / 24.0))
    pos = z > 0.0
    right = jnp.where(pos, logp[..., -1] + jnp.log(2.0 * s_right)
                      + jnp.log(jnp.where(pos, gain, 1.0)), neg_inf)
    return jax.nn.logsumexp(jnp.concatenate([left[..., None], inner, right[..., None]], -1), -1)
