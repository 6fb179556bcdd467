r"""Matern Gaussian processes as linear stochastic differential equations (state-space GPs).

A stationary GP :math:`f(t)` with a Matern-:math:`\nu` kernel, :math:`\nu = p + 1/2`, is the
first coordinate of a :math:`(p+1)`-dimensional linear SDE (Hartikainen & Särkkä, "Kalman
filtering and smoothing solutions to temporal Gaussian process regression models", MLSP 2010;
Särkkä & Solin, *Applied Stochastic Differential Equations*, 2019, ch. 12)

.. math::

    \mathrm d x = F x\,\mathrm dt + L\,\mathrm d\beta, \quad
    \mathbb E[\mathrm d\beta\,\mathrm d\beta^\top] = Q_c\,\mathrm dt, \quad
    f(t) = H x(t), \quad
    F P_\infty + P_\infty F^\top + L Q_c L^\top = 0,

with :math:`\lambda = \sqrt{2\nu}/\ell`, output variance :math:`\sigma^2`,
:math:`L = e_{p+1}`, :math:`H = e_1^\top`:

* :math:`\nu = 1/2`: :math:`F = [-\lambda]`, :math:`Q_c = 2\sigma^2\lambda`,
  :math:`P_\infty = [\sigma^2]`;
* :math:`\nu = 3/2`: :math:`F = [[0, 1], [-\lambda^2, -2\lambda]]`,
  :math:`Q_c = 4\sigma^2\lambda^3`, :math:`P_\infty = \mathrm{diag}(\sigma^2, \lambda^2\sigma^2)`;
* :math:`\nu = 5/2`: :math:`F = [[0,1,0],[0,0,1],[-\lambda^3,-3\lambda^2,-3\lambda]]`,
  :math:`Q_c = \tfrac{16}{3}\sigma^2\lambda^5`,
  :math:`P_\infty = [[\sigma^2,0,-\kappa],[0,\kappa,0],[-\kappa,0,\sigma^2\lambda^4]]`,
  :math:`\kappa = \sigma^2\lambda^2/3`.

Between sorted inputs the exact discretisation is

.. math::

    A_k = e^{F \Delta_k}, \qquad Q_k = P_\infty - A_k P_\infty A_k^\top, \qquad
    \Delta_k = t_k - t_{k-1},

and since :math:`F + \lambda I` is nilpotent for these companion matrices,
:math:`e^{F\Delta} = e^{-\lambda\Delta}\sum_{j\le p} (F+\lambda I)^j\Delta^j/j!` in closed form.
For small :math:`\lambda\Delta` the difference :math:`P_\infty - A P_\infty A^\top` cancels (in
float32 its error, about :math:`10^{-7} P_\infty`, exceeds :math:`Q` itself for small steps
and makes :math:`Q` indefinite), so :meth:`MaternSDE.process_cov` evaluates the integral
:math:`Q = \int_0^\Delta e^{Fs} L Q_c L^\top e^{F^\top s}\,ds` term by term: with
:math:`x = \lambda\Delta`, :math:`D = \mathrm{diag}(1, \lambda, \dots, \lambda^p)` and
:math:`c_j = (F_1 + I)^j e_{p+1}/j!` of the unit-rate companion matrix :math:`F_1`,

.. math::

    Q = \sigma^2 D \Big(q_1 \sum_{j,k} c_j c_k^\top G_{j+k}(x)\Big) D, \qquad
    G_n(x) = \int_0^x u^n e^{-2u}\,du,

(:math:`q_1 = 2, 4, 16/3`), where :math:`G_n` comes from its Taylor series
:math:`x^{n+1}\sum_m (-2x)^m/(m!\,(n+m+1))` and the downward recurrence
:math:`G_{n-1} = (2G_n + x^n e^{-2x})/n` for :math:`x < 1`, and from
:math:`G_0 = -\tfrac12\operatorname{expm1}(-2x)` and the upward recurrence
:math:`G_n = (nG_{n-1} - x^n e^{-2x})/2` for :math:`x \ge 1`. Every entry of :math:`Q` so
computed is within :math:`2\cdot10^{-6}` (float32) or :math:`10^{-14}` (float64) of its scale
:math:`\sqrt{Q_{ii}Q_{jj}}` (measured for :math:`10^{-8} \le \lambda\Delta \le 300`; for
smaller steps the smallest entries of :math:`Q` underflow to 0 in float32), and its gradient
uses :math:`G_n' = x^n e^{-2x}`.

Sums of kernels are block-diagonal SDEs, products are Kronecker-sum SDEs
(:math:`F = F_1 \otimes I + I \otimes F_2`, :math:`A = A_1 \otimes A_2`,
:math:`P_\infty = P_{\infty,1} \otimes P_{\infty,2}`).

:func:`to_lgssm` turns (kernel, sorted times, noise variance) into the :class:`LGSSM` run by
:func:`probkit.inference.kalman.kalman_filter`: initial state ``(0, Pinf)`` and
``dt_0 = 0`` (so :math:`A_0 = I`, :math:`Q_0 = 0`, predict-then-update at every step).

This module is on floor 1: it imports nothing of probkit except ``_checks``.

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.statespace import matern_sde, to_lgssm
>>> sde = matern_sde(1.5, lengthscale=0.5, variance=2.0)
>>> params = to_lgssm(sde, jnp.array([0.0, 0.1, 0.7]), noise=0.01)
>>> params.transition_matrix.shape
(3, 2, 2)
>>> sum_sde = sde + matern_sde(0.5, 2.0, 1.0)   # block-diagonal sum, state dimension 3
>>> sum_sde.state_dim
3
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from probkit._checks import (
    as_array,
    check_finite,
    check_hyperparameter,
    check_positive,
    check_sorted,
)

__all__ = [
    "LGSSM",
    "SDE",
    "MaternSDE",
    "SumSDE",
    "ProductSDE",
    "matern_sde",
    "as_sde",
    "discretise",
    "to_lgssm",
    "sample_lgssm",
    "check_times",
]


class LGSSM(NamedTuple):
    """Parameters of a linear-Gaussian state-space model.

    .. math::
        z_{-1} \\sim \\mathcal N(\\mu_0, \\Sigma_0),\\quad z_t = A_t z_{t-1} + \\mathcal N(0, Q_t),
        \\quad y_t = H_t z_t + \\mathcal N(0, R_t),\\quad t = 0..T-1.

    The initial state is the state *before* the first step; every step predicts then updates.
    Each matrix is either time-invariant or has a leading time axis of length ``T``.
    (The parameters taken by :func:`probkit.inference.kalman.kalman_filter` and
    :func:`~probkit.inference.kalman.rts_smoother`.)

    Attributes
    ----------
    initial_mean : Array, shape (D,)
    initial_cov : Array, shape (D, D)
    transition_matrix : Array, shape (D, D) or (T, D, D)
        Entry ``t`` maps :math:`z_{t-1} \\to z_t`.
    transition_cov : Array, shape (D, D) or (T, D, D)
    emission_matrix : Array, shape (P, D) or (T, P, D)
    emission_cov : Array, shape (P, P) or (T, P, P)
    """

    initial_mean: Array
    initial_cov: Array
    transition_matrix: Array
    transition_cov: Array
    emission_matrix: Array
    emission_cov: Array


# ----------------------------------------------------------------------------- SDEs


class SDE(eqx.Module):
    """Base class of a stationary linear SDE ``dx = F x dt + L dbeta``, ``f = H x``.

    Subclasses provide ``F``, ``L``, ``Qc``, ``H``, ``Pinf`` (properties) and
    ``transition(dt) -> expm(F dt)``. ``sde1 + sde2`` builds a :class:`SumSDE`,
    ``sde1 * sde2`` a :class:`ProductSDE`.
    """

    @property
    def state_dim(self) -> int:
        return self.H.shape[-1]

    @property
    def F(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def L(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def Qc(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def H(self) -> Array:  # noqa: N802
        raise NotImplementedError

    @property
    def Pinf(self) -> Array:  # noqa: N802
        raise NotImplementedError

    def transition(self, dt: Array) -> Array:
        """``expm(F dt)`` for a scalar ``dt`` (generic fallback: ``jax.scipy.linalg.expm``)."""
        return jax.scipy.linalg.expm(self.F * dt)

    def process_cov(self, dt: Array) -> Array:
        """``Q = Pinf - A Pinf A'`` with ``A = transition(dt)`` (exact, symmetrised)."""
        A = self.transition(dt)
        Q = self.Pinf - A @ self.Pinf @ A.T
        return 0.5 * (Q + Q.T)

    def kernel(self, tau: Array) -> Array:
        """Covariance ``k(tau) = H expm(F |tau|) Pinf H'`` for a scalar lag (checks, plots)."""
        A = self.transition(jnp.abs(tau))
        return (self.H @ A @ self.Pinf @ self.H.T)[0, 0]

    def __add__(self, other: SDE) -> SumSDE:
        return SumSDE((self, other))

    def __mul__(self, other: SDE) -> ProductSDE:
        return ProductSDE(self, other)


class MaternSDE(SDE):
    """Matern-``nu`` (1/2, 3/2, 5/2) kernel as an SDE with closed-form ``expm``.

    Parameters
    ----------
    nu : float
        Smoothness: 0.5, 1.5 or 2.5 (static).
    lengthscale, variance : Array
        Positive scalars (may be traced: gradients flow through them).

    Raises
    ------
    ValueError
        ``nu`` not in (0.5, 1.5, 2.5); a concrete ``lengthscale`` or ``variance`` that is not a
        finite positive scalar (traced values are not checked).
    """

    nu: float = eqx.field(static=True)
    lengthscale: Array
    variance: Array

    def __init__(self, nu: float, lengthscale, variance):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"nu: state-space form exists here for 0.5, 1.5, 2.5; got {nu}")
        self.nu = float(nu)
        self.lengthscale = check_hyperparameter("lengthscale", lengthscale, scalar=True)
        self.variance = check_hyperparameter("variance", variance, scalar=True)

    @property
    def order(self) -> int:
        return int(self.nu + 0.5)  # state dimension p + 1

    @property
    def lam(self) -> Array:
        return math.sqrt(2.0 * self.nu) / self.lengthscale

    @property
    def F(self) -> Array:  # noqa: N802
        lam = self.lam
        if self.order == 1:
            return jnp.reshape(-lam, (1, 1))
        z, o = jnp.zeros_like(lam), jnp.ones_like(lam)
        if self.order == 2:
            return jnp.stack([jnp.stack([z, o]), jnp.stack([-lam**2, -2 * lam])])
        return jnp.stack([jnp.stack([z, o, z]), jnp.stack([z, z, o]),
                          jnp.stack([-lam**3, -3 * lam**2, -3 * lam])])

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.zeros((self.order, 1), self.lam.dtype).at[-1, 0].set(1.0)

    @property
    def Qc(self) -> Array:  # noqa: N802
        lam, s2 = self.lam, self.variance
        q = {1: 2 * s2 * lam, 2: 4 * s2 * lam**3, 3: 16.0 / 3.0 * s2 * lam**5}[self.order]
        return jnp.reshape(q, (1, 1))

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.zeros((1, self.order), self.lam.dtype).at[0, 0].set(1.0)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        lam, s2 = self.lam, self.variance * jnp.ones_like(self.lam)
        if self.order == 1:
            return jnp.reshape(s2, (1, 1))
        if self.order == 2:
            return jnp.diag(jnp.stack([s2, lam**2 * s2]))
        k = s2 * lam**2 / 3.0
        z = jnp.zeros_like(s2)
        return jnp.stack([jnp.stack([s2, z, -k]), jnp.stack([z, k, z]),
                          jnp.stack([-k, z, s2 * lam**4])])

    def transition(self, dt: Array) -> Array:
        """Closed form ``expm(F dt) = exp(-lam dt) sum_j (N dt)^j / j!``, ``N = F + lam I``."""
        lam = self.lam
        d = self.order
        N = (self.F + lam * jnp.eye(d, dtype=lam.dtype)) * dt
        out = jnp.eye(d, dtype=N.dtype) + N
        if d == 3:
            out = out + 0.5 * N @ N
        return jnp.exp(-lam * dt) * out

    def process_cov(self, dt: Array) -> Array:
        """``Q = Pinf - A Pinf A'`` without its cancellation for small ``lam dt``, from the
        integrals ``G_n`` of the module notes."""
        lam = self.lam
        x = lam * dt
        d_scale = lam ** jnp.arange(self.order, dtype=lam.dtype)
        unit = _unit_process_cov(self.order, x)
        return self.variance * d_scale[:, None] * unit * d_scale[None, :]


#: Below this ``x = lam dt`` ``G_n`` is summed as a series, above it by upward recurrence.
_SERIES_BELOW = 1.0


@functools.cache
def _unit_matern(d: int) -> np.ndarray:
    """The matrices ``M_n = q_1 sum_{j+k=n} c_j c_k'`` (``n < 2d - 1``) of the unit Matern SDE of
    state dimension ``d`` (``lam = 1``, ``variance = 1``): ``Q_1(x) = sum_n M_n G_n(x)``."""
    F = np.zeros((d, d))
    F[np.arange(d - 1), np.arange(1, d)] = 1.0
    F[-1] = -np.array([math.comb(d, j) for j in range(d)], dtype=float)  # (s + 1)^d
    N = F + np.eye(d)
    q1 = {1: 2.0, 2: 4.0, 3: 16.0 / 3.0}[d]
    c = [np.linalg.matrix_power(N, j)[:, -1] / math.factorial(j) for j in range(d)]
    M = np.zeros((2 * d - 1, d, d))
    for j in range(d):
        for k in range(d):
            M[j + k] += q1 * np.outer(c[j], c[k])
    return M


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _exp_moments(x: Array, nmax: int) -> Array:
    """``G_n(x) = int_0^x u^n e^{-2u} du`` for ``n = 0..nmax``, stacked on a last axis.

    For ``x < 1``: the Taylor series of ``G_nmax`` (terms up to the dtype's rounding), then the
    downward recurrence ``G_{n-1} = (2 G_n + x^n e^{-2x}) / n`` (sums of positive terms). For
    ``x >= 1``: ``G_0 = -expm1(-2x)/2`` and the upward recurrence
    ``G_n = (n G_{n-1} - x^n e^{-2x}) / 2`` (mild cancellation only near ``x = 1``). The
    derivative ``x^n e^{-2x}`` is supplied directly.
    """
    x = jnp.asarray(x)
    terms = 15 if jnp.finfo(x.dtype).bits <= 32 else 25  # 2^K / K!: 2.5e-8, 2e-18
    small = x < _SERIES_BELOW
    xs = jnp.where(small, x, 0.0)
    xl = jnp.where(small, _SERIES_BELOW, x)
    m = np.arange(terms)
    coef = (-2.0) ** m / np.array([math.factorial(i) for i in m], float) / (nmax + m + 1)
    top = jnp.zeros_like(xs)
    for a in coef[::-1]:  # Horner
        top = top * xs + a
    down = [xs ** (nmax + 1) * top]
    es = jnp.exp(-2.0 * xs)
    for n in range(nmax, 0, -1):
        down.append((2.0 * down[-1] + xs**n * es) / n)
    down = down[::-1]
    el = jnp.exp(-2.0 * xl)
    up = [-0.5 * jnp.expm1(-2.0 * xl)]
    for n in range(1, nmax + 1):
        up.append(0.5 * (n * up[-1] - xl**n * el))
    return jnp.stack([jnp.where(small, a, b) for a, b in zip(down, up, strict=True)], -1)


@_exp_moments.defjvp
def _exp_moments_jvp(nmax, primals, tangents):
    (x,), (dx,) = primals, tangents
    x = jnp.asarray(x)
    dg = x[..., None] ** np.arange(nmax + 1) * jnp.exp(-2.0 * x)[..., None]
    return _exp_moments(x, nmax), dg * dx[..., None]


def _unit_process_cov(d: int, x: Array) -> Array:
    """``Pinf_1 - A_1(x) Pinf_1 A_1(x)'`` of the unit Matern SDE, accurate for every ``x >= 0``."""
    M = jnp.asarray(_unit_matern(d), x.dtype)
    return jnp.tensordot(_exp_moments(x, 2 * d - 2), M, axes=1)


class SumSDE(SDE):
    """Sum of independent GPs: block-diagonal SDE, ``H = [H_1, H_2, ...]``."""

    parts: tuple

    def __init__(self, parts):
        flat = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, SumSDE) else [p])
        self.parts = tuple(flat)

    def _blk(self, mats):
        return jax.scipy.linalg.block_diag(*mats)

    @property
    def F(self) -> Array:  # noqa: N802
        return self._blk([p.F for p in self.parts])

    @property
    def L(self) -> Array:  # noqa: N802
        return self._blk([p.L for p in self.parts])

    @property
    def Qc(self) -> Array:  # noqa: N802
        return self._blk([p.Qc for p in self.parts])

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.concatenate([p.H for p in self.parts], axis=1)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        return self._blk([p.Pinf for p in self.parts])

    def transition(self, dt: Array) -> Array:
        return self._blk([p.transition(dt) for p in self.parts])

    def process_cov(self, dt: Array) -> Array:
        return self._blk([p.process_cov(dt) for p in self.parts])


class ProductSDE(SDE):
    """Product of two stationary kernels: Kronecker-sum SDE (state dimension ``D1 * D2``).

    ``L = I`` and ``Qc = -(F Pinf + Pinf F')`` so that the Lyapunov equation holds.
    """

    left: SDE
    right: SDE

    @property
    def F(self) -> Array:  # noqa: N802
        F1, F2 = self.left.F, self.right.F
        return jnp.kron(F1, jnp.eye(F2.shape[0], dtype=F2.dtype)) + jnp.kron(
            jnp.eye(F1.shape[0], dtype=F1.dtype), F2)

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.eye(self.state_dim, dtype=self.Pinf.dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        F, P = self.F, self.Pinf
        return -(F @ P + P @ F.T)

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.kron(self.left.H, self.right.H)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        return jnp.kron(self.left.Pinf, self.right.Pinf)

    def transition(self, dt: Array) -> Array:
        return jnp.kron(self.left.transition(dt), self.right.transition(dt))

    def process_cov(self, dt: Array) -> Array:
        """``P1 (x) P2 - M1 (x) M2 = Q1 (x) M2 + P1 (x) Q2`` with ``M = A P A'``: a sum of
        Kronecker products of PSD matrices, free of the cancellation of the plain difference."""
        A2 = self.right.transition(dt)
        m2 = A2 @ self.right.Pinf @ A2.T
        return jnp.kron(self.left.process_cov(dt), m2) + jnp.kron(self.left.Pinf,
                                                                  self.right.process_cov(dt))


def matern_sde(nu: float, lengthscale=1.0, variance=1.0) -> MaternSDE:
    """Matern-``nu`` SDE from ``(nu, lengthscale, variance)``.

    Raises
    ------
    ValueError
        As :class:`MaternSDE`: bad ``nu``, a non-positive or non-scalar ``lengthscale`` or
        ``variance``.

    Examples
    --------
    >>> from probkit.statespace import matern_sde
    >>> matern_sde(2.5, 1.0, 1.0).Pinf.shape
    (3, 3)
    """
    return MaternSDE(nu, lengthscale, variance)


def as_sde(kernel) -> SDE:
    """Accept an :class:`SDE`, or a Matern kernel object with ``nu``, ``lengthscale``, ``variance``.

    ``probkit.kernels.Matern12/32/52`` qualify (a one-element lengthscale is squeezed).

    Raises
    ------
    ValueError
        ``kernel`` has no state-space form here (e.g. RBF) or a multi-dimensional lengthscale.
    """
    if isinstance(kernel, SDE):
        return kernel
    nu = getattr(kernel, "nu", None)
    if nu is None or not hasattr(kernel, "lengthscale") or not hasattr(kernel, "variance"):
        raise ValueError(f"kernel: expected a Matern kernel (nu in 1/2, 3/2, 5/2) or an SDE, "
                         f"got {type(kernel).__name__}")
    ls = jnp.asarray(kernel.lengthscale)
    if ls.size != 1:
        raise ValueError(f"kernel: state-space GPs are 1-D; lengthscale must be a scalar, "
                         f"got shape {ls.shape}")
    return MaternSDE(float(nu), jnp.reshape(ls, ()), jnp.reshape(jnp.asarray(kernel.variance), ()))


# ----------------------------------------------------------------------------- discretisation


def check_times(name: str, times) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``times`` is 1-D, finite, strictly increasing.

    Skipped for traced values (inside ``jit``), where the check cannot run.
    """
    if isinstance(times, jax.core.Tracer):
        return
    arr = as_array(name, times, ndim=1)
    check_finite(name, arr)
    check_sorted(name, arr, strict=True)


def discretise(kernel, times: Array, *, validate: bool = True) -> tuple[Array, Array]:
    """Exact transition matrices and process covariances between consecutive ``times``.

    Parameters
    ----------
    kernel : SDE or Matern kernel
    times : Array, shape (T,)
        Non-decreasing, finite inputs (a repeated time is a zero-length step: ``A = I``,
        ``Q = 0``).
    validate : bool
        Check concrete ``times`` eagerly (traced values are never checked, so the function
        stays jittable).

    Returns
    -------
    A, Q : Array, shapes (T, D, D)
        ``A[k] = expm(F (t_k - t_{k-1}))``, ``Q[k] = Pinf - A[k] Pinf A[k]'`` (computed by
        :meth:`SDE.process_cov`, without cancellation for Matern kernels), with ``dt_0 = 0``
        (``A[0] = I``, ``Q[0] = 0``).

    Raises
    ------
    ValueError
        ``kernel`` has no state-space form; ``times`` is not 1-D, empty, non-finite or
        decreasing somewhere (with ``validate``).
    """
    sde = as_sde(kernel)
    if validate and not isinstance(times, jax.core.Tracer):
        check_sorted("times", times, strict=False)
    times = jnp.asarray(times)
    if not jnp.issubdtype(times.dtype, jnp.floating):
        times = times.astype(jnp.result_type(float))
    dt = jnp.concatenate([jnp.zeros((1,), times.dtype), jnp.diff(times)])
    A = jax.vmap(sde.transition)(dt)
    Q = jax.vmap(sde.process_cov)(dt)
    return A, Q


def to_lgssm(kernel, times: Array, noise, *, validate: bool = True) -> LGSSM:
    """State-space GP ``y_k = f(t_k) + N(0, noise_k)`` as an :class:`LGSSM`.

    Parameters
    ----------
    kernel : SDE or Matern kernel object
        The GP prior.
    times : Array, shape (T,)
        Strictly increasing, finite inputs.
    noise : float or Array of shape (T,)
        Observation-noise variance (per step allowed; must be > 0 where observed).
    validate : bool
        Check ``times`` (and a concrete ``noise``) eagerly; checks are skipped for traced
        values, so the function stays jittable.

    Returns
    -------
    LGSSM
        initial ``(0, Pinf)``, ``A, Q`` of shape ``(T, D, D)`` from :func:`discretise`,
        ``H`` of shape ``(1, D)``, ``R`` of shape ``(1, 1)`` or ``(T, 1, 1)``.

    Raises
    ------
    ValueError
        ``times`` has NaN, is unsorted or has duplicates; ``noise`` is negative or has the wrong
        length.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.statespace import matern_sde, to_lgssm
    >>> p = to_lgssm(matern_sde(0.5, 1.0, 1.0), jnp.array([0.0, 1.0]), 0.1)
    >>> round(float(p.transition_matrix[1, 0, 0]), 5)   # exp(-1)
    0.36788
    """
    sde = as_sde(kernel)
    if validate:
        check_times("times", times)
        if not isinstance(noise, jax.core.Tracer):
            nz = check_positive("noise", noise, allow_zero=True)
            if nz.ndim > 1 or (nz.ndim == 1 and nz.shape[0] != np.shape(times)[0]):
                raise ValueError(f"noise: expected a scalar or shape ({np.shape(times)[0]},), "
                                 f"got {nz.shape}")
    A, Q = discretise(sde, times, validate=False)
    Pinf = sde.Pinf
    D = Pinf.shape[0]
    dtype = jnp.result_type(A, Pinf)
    noise = jnp.asarray(noise, dtype)
    R = noise.reshape(-1, 1, 1) if noise.ndim == 1 else noise.reshape(1, 1)
    return LGSSM(jnp.zeros(D, dtype), Pinf.astype(dtype), A.astype(dtype), Q.astype(dtype),
                 sde.H.astype(dtype), R)


def _psd_sqrt(S: Array) -> Array:
    """A square root ``B``, ``B B' = S``, of a symmetric PSD ``S`` (eigh: singular S is fine)."""
    w, V = jnp.linalg.eigh(0.5 * (S + S.T))
    return V * jnp.sqrt(jnp.clip(w, 0.0))


def sample_lgssm(params: LGSSM, num_steps: int, *, key: Array) -> tuple[Array, Array]:
    """Draw ``(states, emissions)`` of shapes ``(T, D)``, ``(T, P)`` from an :class:`LGSSM` exactly.

    Uses symmetric square roots (``eigh``), so singular ``Q_t`` (e.g. ``Q_0 = 0``) and zero
    observation noise are fine.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.statespace import matern_sde, to_lgssm, sample_lgssm
    >>> p = to_lgssm(matern_sde(1.5, 1.0, 1.0), jnp.linspace(0, 1, 5), 0.01)
    >>> z, y = sample_lgssm(p, 5, key=jax.random.key(0))
    >>> z.shape, y.shape
    ((5, 2), (5, 1))
    """
    T = int(num_steps)
    D = params.initial_mean.shape[0]
    H0 = jnp.asarray(params.emission_matrix)
    P = H0.shape[-2]
    k0, k1, k2 = jax.random.split(key, 3)
    dtype = jnp.result_type(params.initial_mean, params.initial_cov)
    z0 = params.initial_mean + _psd_sqrt(params.initial_cov) @ jax.random.normal(k0, (D,), dtype)
    eps_z = jax.random.normal(k1, (T, D), dtype)
    eps_y = jax.random.normal(k2, (T, P), dtype)

    def at(x, t, nd):
        x = jnp.asarray(x)
        return x[t] if x.ndim > nd else x

    def step(z, t):
        A = at(params.transition_matrix, t, 2)
        Q = at(params.transition_cov, t, 2)
        H = at(params.emission_matrix, t, 2)
        R = at(params.emission_cov, t, 2)
        z = A @ z + _psd_sqrt(Q) @ eps_z[t]
        y = H @ z + _psd_sqrt(R) @ eps_y[t]
        return z, (z, y)

    _, (zs, ys) = lax.scan(step, z0, jnp.arange(T))
    return zs, ys
