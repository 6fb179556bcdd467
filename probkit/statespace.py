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

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from probkit._checks import as_array, check_finite, check_positive, check_sorted

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
    """

    nu: float = eqx.field(static=True)
    lengthscale: Array
    variance: Array

    def __init__(self, nu: float, lengthscale, variance):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"nu: state-space form exists here for 0.5, 1.5, 2.5; got {nu}")
        self.nu = float(nu)
        self.lengthscale = jnp.asarray(lengthscale)
        self.variance = jnp.asarray(variance)

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


def matern_sde(nu: float, lengthscale=1.0, variance=1.0) -> MaternSDE:
    """Matern-``nu`` SDE from ``(nu, lengthscale, variance)``.

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


def discretise(kernel, times: Array) -> tuple[Array, Array]:
    """Exact transition matrices and process covariances between consecutive ``times``.

    Parameters
    ----------
    kernel : SDE or Matern kernel
    times : Array, shape (T,)
        Strictly increasing inputs (not checked here: see :func:`check_times`).

    Returns
    -------
    A, Q : Array, shapes (T, D, D)
        ``A[k] = expm(F (t_k - t_{k-1}))``, ``Q[k] = Pinf - A[k] Pinf A[k]'``, with ``dt_0 = 0``
        (``A[0] = I``, ``Q[0] = 0``).
    """
    sde = as_sde(kernel)
    times = jnp.asarray(times)
    dt = jnp.concatenate([jnp.zeros((1,), times.dtype), jnp.diff(times)])
    A = jax.vmap(sde.transition)(dt)
    Pinf = sde.Pinf

    def proc(a):
        q = Pinf - a @ Pinf @ a.T
        return 0.5 * (q + q.T)

    return A, jax.vmap(proc)(A)


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
    times = jnp.asarray(times)
    if not jnp.issubdtype(times.dtype, jnp.floating):
        times = times.astype(jnp.result_type(float))
    A, Q = discretise(sde, times)
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
