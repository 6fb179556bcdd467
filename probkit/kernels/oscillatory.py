"""One-dimensional oscillatory kernels with a state-space form: cosine, SHO, celerite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array

from probkit._checks import check_finite, check_hyperparameter, check_positive
from probkit.kernels.base import Kernel, as_2d

__all__ = ["Cosine", "SHO", "Celerite"]


def _lags_1d(x1: Array, x2: Array) -> Array:
    """``|t_i - t'_j|`` of 1-D inputs, shape ``(n1, n2)``; ``ValueError`` for ``d > 1``."""
    a, b = as_2d(x1), as_2d(x2)
    for name, v in (("x1", a), ("x2", b)):
        if v.shape[-1] != 1:
            raise ValueError(f"{name}: this kernel is defined on 1-D inputs (shape (n,) or "
                             f"(n, 1)), got shape {v.shape}")
    return jnp.abs(a[:, None, 0] - b[None, :, 0])


class Cosine(Kernel):
    r"""Cosine kernel, a product over input dimensions:
    :math:`k(x, x') = \sigma^2 \prod_j \cos(2\pi (x_j - x'_j) / p_j)`.

    Its spectrum is two lines at :math:`\pm 1/p` (a random sinusoid of fixed frequency); with
    one input dimension it is the state-space model
    :class:`probkit.statespace.CosineSDE` (a rotation, state dimension 2).

    Parameters
    ----------
    period : float or array of shape (d,)
        Positive period(s) :math:`p`.
    variance : float
        Positive output variance :math:`\sigma^2`.

    Raises
    ------
    ValueError
        If a concrete hyperparameter is not finite and positive (traced values are not checked).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Cosine
    >>> k = Cosine(period=2.0, variance=3.0)
    >>> float(k(jnp.zeros((1, 1)), jnp.ones((1, 1)))[0, 0])   # 3 cos(pi)
    -3.0
    """

    period: Array
    variance: Array

    def __init__(self, period=1.0, variance=1.0):
        self.period = check_hyperparameter("period", period)
        self.variance = check_hyperparameter("variance", variance)

    def __call__(self, x1: Array, x2: Array) -> Array:
        a, b = as_2d(x1), as_2d(x2)
        c = jnp.cos(2.0 * jnp.pi * (a[:, None, :] - b[None, :, :]) / self.period)
        return self.variance * jnp.prod(c, axis=-1)

    def diag(self, x: Array) -> Array:
        x = as_2d(x)
        return jnp.full(x.shape[:1], self.variance, dtype=jnp.result_type(x, self.variance))


#: Terms of the Taylor series of cosh(sqrt z) and sinh(sqrt z)/sqrt z used for |z| < 1.
_OSC_TERMS = 12


def _damped_oscillation(c: Array, delta: Array, omega2: Array, t: Array) -> tuple[Array, Array]:
    r"""``(e^{-ct} C(t), e^{-ct} S(t))`` with :math:`C = \cosh(\sqrt\Delta t)`,
    :math:`S = \sinh(\sqrt\Delta t)/\sqrt\Delta` (:math:`\cos`, :math:`\sin(\sqrt{-\Delta}t)
    /\sqrt{-\Delta}` for :math:`\Delta < 0`), ``delta`` :math:`= c^2 - \omega^2`,
    ``omega2`` :math:`= \omega^2`, ``t >= 0``.

    Both are entire functions of :math:`z = \Delta t^2`: for :math:`|z| < 1` their Taylor
    series are summed (continuous and differentiable through critical damping
    :math:`\Delta = 0`); for :math:`z \ge 1` they are written as
    :math:`\tfrac12 e^{rt}(1 + e^{-2st})` and :math:`e^{rt}(-\operatorname{expm1}(-2st))/(2s)`
    with :math:`s = \sqrt\Delta` and :math:`r = s - c = -\omega^2/(c + s)` (no overflow of
    :math:`\cosh`, no cancellation in :math:`s - c`). Unused branches see safe arguments, so
    gradients stay finite.
    """
    z = delta * t * t
    small = jnp.abs(z) < 1.0
    under = z <= -1.0
    over = z >= 1.0
    zs = jnp.where(small, z, 0.0)
    cs = jnp.zeros_like(zs)
    ss = jnp.zeros_like(zs)
    for k in range(_OSC_TERMS - 1, -1, -1):  # Horner in z
        cs = cs * zs + 1.0 / math.factorial(2 * k)
        ss = ss * zs + 1.0 / math.factorial(2 * k + 1)
    ect = jnp.exp(-c * t)
    w = jnp.sqrt(jnp.where(under, -delta, 1.0))
    s = jnp.sqrt(jnp.where(over, delta, 1.0))
    e = jnp.exp(-omega2 / (c + s) * t)
    m = jnp.exp(-2.0 * s * t)
    cval = jnp.where(small, ect * cs,
                     jnp.where(under, ect * jnp.cos(w * t), 0.5 * e * (1.0 + m)))
    sval = jnp.where(small, ect * t * ss,
                     jnp.where(under, ect * jnp.sin(w * t) / w,
                               e * (-jnp.expm1(-2.0 * s * t)) / (2.0 * s)))
    return cval, sval


def _sho_damping(omega0: Array, quality: Array) -> tuple[Array, Array]:
    r"""``(c, delta)`` of an SHO: :math:`c = \omega_0/(2Q)`,
    :math:`\Delta = c^2 - \omega_0^2 = \omega_0^2 (1 - 2Q)(1 + 2Q) / (4Q^2)` (written without
    the cancellation of :math:`c^2 - \omega_0^2` near :math:`Q = 1/2`)."""
    return omega0 / (2.0 * quality), omega0**2 * (1.0 - 2.0 * quality) * (1.0 + 2.0 * quality) / (
        4.0 * quality**2)


class SHO(Kernel):
    r"""Stochastically driven, damped simple harmonic oscillator (celerite's SHO term) on 1-D
    inputs, parameterised as tinygp's ``quasisep.SHO``: frequency :math:`\omega_0`, quality
    factor :math:`Q` and standard deviation :math:`\sigma`, :math:`k(0) = \sigma^2`.

    The process solves :math:`\ddot f + (\omega_0/Q)\dot f + \omega_0^2 f = \text{noise}`,
    with power spectrum :math:`S(\omega) = \sqrt{2/\pi}\,S_0\omega_0^4 /
    ((\omega^2 - \omega_0^2)^2 + \omega^2\omega_0^2/Q^2)` and :math:`S_0 = \sigma^2 /
    (\omega_0 Q)` (celerite2's ``SHOTerm(S0=..., w0=..., Q=...)`` is the same kernel). With
    :math:`\tau = |t - t'|`, :math:`c = \omega_0/(2Q)`, :math:`\eta = \sqrt{|1 - 1/(4Q^2)|}`
    (Foreman-Mackey, Agol, Ambikasaran & Angus 2017, "Fast and scalable Gaussian process
    modeling with applications to astronomical time series", AJ 154:220, eq. 23):

    .. math::

        k(\tau) = \sigma^2 e^{-c\tau} \begin{cases}
            \cosh(\eta\omega_0\tau) + \sinh(\eta\omega_0\tau)/(2\eta Q), & Q < 1/2, \\
            1 + \omega_0\tau, & Q = 1/2 \ (\text{Matern-3/2 with } \lambda = \omega_0), \\
            \cos(\eta\omega_0\tau) + \sin(\eta\omega_0\tau)/(2\eta Q), & Q > 1/2.
        \end{cases}

    The three regimes are evaluated as one function, continuous and differentiable in
    :math:`Q` through :math:`Q = 1/2` (series of :math:`\cosh\sqrt z`, :math:`\sinh\sqrt z
    /\sqrt z` near it). State-space form: :class:`probkit.statespace.SHOSDE`.

    Parameters
    ----------
    omega0 : float
        Undamped angular frequency :math:`\omega_0 > 0` (period :math:`2\pi/\omega_0` for
        large :math:`Q`).
    quality : float
        Quality factor :math:`Q > 0`.
    sigma : float
        Standard deviation :math:`\sigma > 0`.

    Raises
    ------
    ValueError
        A concrete hyperparameter that is not a finite positive scalar (named); inputs with more
        than one dimension, when called.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import SHO, Matern32
    >>> t = jnp.linspace(0.0, 2.0, 5)
    >>> bool(jnp.allclose(SHO(3.0, 0.5, 1.0)(t, t), Matern32(3 ** 0.5 / 3.0)(t, t)))
    True
    """

    omega0: Array
    quality: Array
    sigma: Array

    def __init__(self, omega0, quality, sigma=1.0):
        self.omega0 = check_hyperparameter("omega0", omega0, scalar=True)
        self.quality = check_hyperparameter("quality", quality, scalar=True)
        self.sigma = check_hyperparameter("sigma", sigma, scalar=True)

    def __call__(self, x1: Array, x2: Array) -> Array:
        tau = _lags_1d(x1, x2)
        c, delta = _sho_damping(self.omega0, self.quality)
        cv, sv = _damped_oscillation(c, delta, self.omega0**2, tau)
        return self.sigma**2 * (cv + c * sv)

    def diag(self, x: Array) -> Array:
        x = as_2d(x)
        return jnp.full(x.shape[:1], self.sigma**2, dtype=jnp.result_type(x, self.sigma))


def _check_real(name: str, value, *, nonnegative: bool = False) -> Array:
    """A finite real scalar (non-negative with ``nonnegative``); traced values unchecked."""
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value)):
        arr = check_positive(name, value, allow_zero=True) if nonnegative else check_finite(
            name, value)
        if arr.ndim:
            raise ValueError(f"{name}: expected a scalar, got shape {arr.shape}")
    return jnp.asarray(value)


def _check_celerite(a, b, c, d) -> tuple[Array, Array, Array, Array]:
    """Check one celerite term's ``(a, b, c, d)``: ``a, c > 0``, ``d >= 0``, ``b`` real, and
    ``a c >= |b d|`` (its power spectrum is non-negative), each where concrete.

    Raises
    ------
    ValueError
        Naming the bad hyperparameter(s).
    """
    a = check_hyperparameter("a", a, scalar=True)
    b = _check_real("b", b)
    c = check_hyperparameter("c", c, scalar=True)
    d = _check_real("d", d, nonnegative=True)
    vals = (a, b, c, d)
    if not any(isinstance(v, jax.core.Tracer) for v in vals):
        fa, fb, fc, fd = (float(v) for v in vals)
        if fa * fc < abs(fb * fd) * (1.0 - 1e-12):
            raise ValueError(f"a, b, c, d: a celerite term is positive definite only if "
                             f"a*c >= |b*d|; got a*c = {fa * fc:.6g} < |b*d| = "
                             f"{abs(fb * fd):.6g}")
    return vals


class Celerite(Kernel):
    r"""One celerite term on 1-D inputs (Foreman-Mackey et al. 2017, AJ 154:220, eq. 7):

    .. math:: k(\tau) = e^{-c\tau}\big(a\cos(d\tau) + b\sin(d\tau)\big), \quad \tau = |t - t'|,

    with power spectrum :math:`S(\omega) = \sqrt{2/\pi}\,[(ac + bd)(c^2 + d^2) + (ac - bd)
    \omega^2] / [\omega^4 + 2(c^2 - d^2)\omega^2 + (c^2 + d^2)^2]`, non-negative for every
    :math:`\omega` exactly when :math:`ac \ge |bd|` (checked). ``b = 0`` is an exponentially
    damped cosine, ``d = 0`` the Matern-1/2 kernel :math:`a e^{-c\tau}`, and the SHO with
    :math:`Q > 1/2` is the term :math:`a = \sigma^2`, :math:`b = \sigma^2/(2\eta Q)`,
    :math:`c = \omega_0/(2Q)`, :math:`d = \eta\omega_0` (on the boundary :math:`ac = bd`).
    State-space form: :class:`probkit.statespace.CeleriteSDE`.

    Parameters
    ----------
    a : float
        :math:`k(0) = a > 0`.
    b : float
        Any real, with :math:`|b d| \le a c`.
    c : float
        Damping rate :math:`c > 0`.
    d : float
        Angular frequency :math:`d \ge 0`.

    Raises
    ------
    ValueError
        A concrete hyperparameter that is not a finite scalar in its range, or
        :math:`ac < |bd|` (named); inputs with more than one dimension, when called.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Celerite
    >>> k = Celerite(a=1.0, b=0.1, c=0.5, d=2.0)
    >>> round(float(k(jnp.zeros(1), jnp.ones(1))[0, 0]), 6)   # e^-0.5 (cos 2 + 0.1 sin 2)
    -0.197254
    """

    a: Array
    b: Array
    c: Array
    d: Array

    def __init__(self, a=1.0, b=0.0, c=1.0, d=1.0):
        self.a, self.b, self.c, self.d = _check_celerite(a, b, c, d)

    def __call__(self, x1: Array, x2: Array) -> Array:
        tau = _lags_1d(x1, x2)
        return jnp.exp(-self.c * tau) * (self.a * jnp.cos(self.d * tau)
                                         + self.b * jnp.sin(self.d * tau))

    def diag(self, x: Array) -> Array:
        x = as_2d(x)
        return jnp.full(x.shape[:1], self.a, dtype=jnp.result_type(x, self.a))
