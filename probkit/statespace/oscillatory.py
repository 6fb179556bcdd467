"""Oscillatory SDEs: the cosine rotation and celerite's SHO and damped-rotation terms."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array, lax

from probkit import kernels as _kernels
from probkit._checks import check_hyperparameter
from probkit.kernels.oscillatory import _damped_oscillation, _sho_damping
from probkit.statespace.base import SDE

__all__ = ["CosineSDE", "SHOSDE", "CeleriteSDE"]


def _rotation(theta: Array) -> Array:
    """``[[cos, -sin], [sin, cos]]`` of a scalar angle."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


#: Halve a step until ``rho h`` is at most this, sum the Taylor series of ``Q(h)`` there, then
#: double back (``_doubled_process_cov``).
_TAYLOR_AT = 0.5
#: At most this many doublings; steps with ``rho dt > _TAYLOR_AT * 2**_MAX_DOUBLINGS`` (where
#: ``Q`` is close to ``Pinf`` and the plain difference does not cancel) use ``Pinf - A Pinf A'``.
_MAX_DOUBLINGS = 20


def _doubled_process_cov(sde: SDE, dt: Array, rho: Array) -> Array:
    r"""``Q(dt) = int_0^dt e^{Fs} L Qc L' e^{F's} ds`` without the cancellation of
    ``Pinf - A Pinf A'``, for any SDE with a closed-form ``transition``.

    ``rho`` bounds the rate of ``F`` (its norm in a balanced basis). The step is halved ``k``
    times, :math:`h = \Delta / 2^k` with :math:`\rho h \le 1/2`; there
    :math:`Q(h) = \sum_n h^{n+1}/(n+1)!\,Y_n`, :math:`Y_0 = LQ_cL^\top`,
    :math:`Y_{n+1} = F Y_n + Y_n F^\top` (terms below :math:`1/(n+1)!` of the first), and
    :math:`Q(2h) = Q(h) + A(h) Q(h) A(h)^\top` doubles it back: sums of positive semi-definite
    matrices only, with :math:`A(2^i h)` from ``transition`` (no accumulated powers).
    """
    dtype = jnp.result_type(sde.F, dt, float)
    dt = jnp.asarray(dt, dtype)
    F = sde.F.astype(dtype)
    B = (sde.L @ sde.Qc @ sde.L.T).astype(dtype)
    terms = 12 if jnp.finfo(dtype).bits <= 32 else 20  # 1/13!: 2e-10, 1/21!: 2e-20
    x = jnp.asarray(rho, dtype) * dt
    k = jnp.ceil(jnp.log2(jnp.maximum(x, jnp.finfo(dtype).tiny) / _TAYLOR_AT))
    k = lax.stop_gradient(jnp.clip(k, 0.0, float(_MAX_DOUBLINGS)))
    h = dt * jnp.exp2(-k)

    def taylor(n, carry):  # rolled loops: a small program to compile
        Y, coef, Q = carry
        Y = F @ Y + Y @ F.T
        coef = coef * h / (n + 1)
        return Y, coef, Q + coef * Y

    _, _, Q = lax.fori_loop(1, terms, taylor, (B, h, h * B))

    def double(i, Q):
        A = sde.transition(h * jnp.exp2(i.astype(dtype))).astype(dtype)
        return jnp.where(i < k, Q + A @ Q @ A.T, Q)

    Q = lax.fori_loop(0, _MAX_DOUBLINGS, double, Q)
    A = sde.transition(dt).astype(dtype)
    P = sde.Pinf.astype(dtype)
    Q = jnp.where(x > _TAYLOR_AT * 2.0**_MAX_DOUBLINGS, P - A @ P @ A.T, Q)
    return 0.5 * (Q + Q.T)


class CosineSDE(SDE):
    r"""Cosine kernel :math:`\sigma^2\cos(\omega\tau)`, :math:`\omega = 2\pi/p`, as an SDE.

    A rotation without damping or noise: :math:`F = \omega\,[[0, -1], [1, 0]]`,
    :math:`A(\Delta) = R(\omega\Delta)` (the 2-D rotation), :math:`P_\infty = \sigma^2 I`,
    :math:`H = [1, 0]`, :math:`L Q_c L^\top = 0` and :math:`Q(\Delta) = 0` exactly (Solin &
    Särkkä 2014). Dense counterpart: :class:`probkit.kernels.Cosine`.

    Parameters
    ----------
    period, variance : Array
        Positive scalars :math:`p`, :math:`\sigma^2` (may be traced).

    Raises
    ------
    ValueError
        A concrete ``period`` or ``variance`` that is not a finite positive scalar.

    Examples
    --------
    >>> from probkit.statespace import CosineSDE
    >>> round(float(CosineSDE(period=4.0, variance=2.0).kernel(2.0)), 6)   # 2 cos(pi)
    -2.0
    """

    dense: _kernels.Cosine

    def __init__(self, period=1.0, variance=1.0):
        self.dense = _kernels.Cosine(check_hyperparameter("period", period, scalar=True),
                                     check_hyperparameter("variance", variance, scalar=True))

    @property
    def omega(self) -> Array:
        return 2.0 * jnp.pi / self.dense.period

    @property
    def F(self) -> Array:  # noqa: N802
        w = self.omega
        z = jnp.zeros_like(w)
        return jnp.stack([jnp.stack([z, -w]), jnp.stack([w, z])])

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.zeros((2, 1), self.omega.dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        return jnp.zeros((1, 1), self.omega.dtype)

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.array([[1.0, 0.0]], self.omega.dtype)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        return self.dense.variance * jnp.eye(2, dtype=self.omega.dtype)

    def transition(self, dt: Array) -> Array:
        return _rotation(self.omega * dt)

    def process_cov(self, dt: Array) -> Array:
        """Exactly zero (the rotation preserves ``Pinf``)."""
        return jnp.zeros((2, 2), jnp.result_type(self.omega, dt))


class SHOSDE(SDE):
    r"""Stochastically driven damped harmonic oscillator (celerite's SHO term) as an SDE.

    :math:`\ddot f + (\omega_0/Q)\dot f + \omega_0^2 f = w(t)` in companion form, state
    :math:`(f, \dot f)`:

    .. math::

        F = \begin{bmatrix} 0 & 1 \\ -\omega_0^2 & -\omega_0/Q \end{bmatrix}, \quad
        L = e_2, \quad Q_c = \frac{2\sigma^2\omega_0^3}{Q}, \quad
        P_\infty = \mathrm{diag}(\sigma^2, \omega_0^2\sigma^2), \quad H = e_1^\top

    (Foreman-Mackey et al. 2017, AJ 154:220, sec. 4; :math:`Q = 1/2` is Matern-3/2 with
    :math:`\lambda = \omega_0`). With :math:`c = \omega_0/(2Q)` and
    :math:`\Delta = c^2 - \omega_0^2`, :math:`(F + cI)^2 = \Delta I`, so

    .. math:: e^{Ft} = e^{-ct}\big(C(t) I + S(t)(F + cI)\big), \quad
              C = \cosh(\sqrt\Delta t), \quad S = \sinh(\sqrt\Delta t)/\sqrt\Delta,

    one formula for all three regimes (trigonometric for :math:`Q > 1/2`), evaluated
    smoothly through :math:`Q = 1/2`. The process covariance is the integral
    :math:`\int_0^\Delta e^{Fs}LQ_cL^\top e^{F^\top s}ds` by halving, a Taylor series and
    doubling back (sums of PSD matrices, no cancellation of :math:`P_\infty - AP_\infty A^\top`
    for small steps; rate :math:`\rho = \omega_0(1 + 1/Q)`). Dense counterpart:
    :class:`probkit.kernels.SHO`.

    Parameters
    ----------
    omega0, quality, sigma : Array
        Positive scalars :math:`\omega_0`, :math:`Q`, :math:`\sigma` (:math:`k(0) =
        \sigma^2`; may be traced).

    Raises
    ------
    ValueError
        A concrete hyperparameter that is not a finite positive scalar (named).

    Examples
    --------
    >>> from probkit.statespace import SHOSDE
    >>> sde = SHOSDE(omega0=2.0, quality=5.0, sigma=1.5)
    >>> sde.state_dim, round(float(sde.kernel(0.0)), 6)
    (2, 2.25)
    """

    dense: _kernels.SHO

    def __init__(self, omega0, quality, sigma=1.0):
        self.dense = _kernels.SHO(omega0, quality, sigma)

    @property
    def _w(self) -> Array:
        return self.dense.omega0 * jnp.ones_like(self.dense.quality * self.dense.sigma)

    @property
    def F(self) -> Array:  # noqa: N802
        w = self._w
        return jnp.stack([jnp.stack([jnp.zeros_like(w), jnp.ones_like(w)]),
                          jnp.stack([-(w**2), -w / self.dense.quality])])

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.array([[0.0], [1.0]], self._w.dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        return jnp.reshape(2.0 * self.dense.sigma**2 * self._w**3 / self.dense.quality, (1, 1))

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.array([[1.0, 0.0]], self._w.dtype)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        s2 = self.dense.sigma**2 * jnp.ones_like(self._w)
        return jnp.diag(jnp.stack([s2, self._w**2 * s2]))

    def transition(self, dt: Array) -> Array:
        w = self._w
        c, delta = _sho_damping(w, self.dense.quality)
        cv, sv = _damped_oscillation(c, delta, w**2, dt)
        M = jnp.stack([jnp.stack([c, jnp.ones_like(c)]), jnp.stack([-(w**2), -c])])
        return cv * jnp.eye(2, dtype=cv.dtype) + sv * M

    def process_cov(self, dt: Array) -> Array:
        return _doubled_process_cov(self, dt, self._w * (1.0 + 1.0 / self.dense.quality))


class CeleriteSDE(SDE):
    r"""One celerite term :math:`e^{-c\tau}(a\cos d\tau + b\sin d\tau)` as an SDE.

    A damped rotation, :math:`F = -cI + d\,[[0, -1], [1, 0]]`,
    :math:`A(\Delta) = e^{-c\Delta}R(d\Delta)`, :math:`H = [1, 0]`, and

    .. math::

        P_\infty = \begin{bmatrix} a & -b \\ -b & a + 2b^2/a \end{bmatrix}, \quad
        LQ_cL^\top = -(FP_\infty + P_\infty F^\top) = 2\begin{bmatrix}
            ac - bd & db^2/a - cb \\ db^2/a - cb & ac + 2cb^2/a + bd \end{bmatrix}.

    :math:`H A(\tau) P_\infty H^\top = e^{-c\tau}(a\cos d\tau + b\sin d\tau)` fixes the first
    row of :math:`P_\infty`; its free corner :math:`a + 2b^2/a` makes :math:`LQ_cL^\top`
    positive semi-definite (determinant :math:`4(a^2 + b^2)(a^2c^2 - b^2d^2)/a^2`) for every
    term with :math:`ac \ge |bd|` (Foreman-Mackey et al. 2017, AJ 154:220, eq. 7 and sec. 5),
    bounded as :math:`d \to 0`. The process covariance is computed as for :class:`SHOSDE`
    (rate :math:`\rho = c + d`). Dense counterpart: :class:`probkit.kernels.Celerite`.

    Parameters
    ----------
    a, b, c, d : Array
        Scalars with :math:`a, c > 0`, :math:`d \ge 0`, :math:`ac \ge |bd|` (may be traced).

    Raises
    ------
    ValueError
        A concrete hyperparameter out of range, or :math:`ac < |bd|` (named).

    Examples
    --------
    >>> from probkit.statespace import CeleriteSDE
    >>> round(float(CeleriteSDE(a=1.0, b=0.1, c=0.5, d=2.0).kernel(1.0)), 6)
    -0.197254
    """

    dense: _kernels.Celerite

    def __init__(self, a=1.0, b=0.0, c=1.0, d=1.0):
        self.dense = _kernels.Celerite(a, b, c, d)

    @property
    def _abcd(self) -> tuple[Array, Array, Array, Array]:
        k = self.dense
        dtype = jnp.result_type(k.a, k.b, k.c, k.d, float)
        return tuple(jnp.asarray(v, dtype) for v in (k.a, k.b, k.c, k.d))

    @property
    def F(self) -> Array:  # noqa: N802
        _, _, c, d = self._abcd
        return jnp.stack([jnp.stack([-c, -d]), jnp.stack([d, -c])])

    @property
    def L(self) -> Array:  # noqa: N802
        return jnp.eye(2, dtype=self._abcd[0].dtype)

    @property
    def Qc(self) -> Array:  # noqa: N802
        a, b, c, d = self._abcd
        off = d * b**2 / a - c * b
        return 2.0 * jnp.stack([jnp.stack([a * c - b * d, off]),
                                jnp.stack([off, a * c + 2.0 * c * b**2 / a + b * d])])

    @property
    def H(self) -> Array:  # noqa: N802
        return jnp.array([[1.0, 0.0]], self._abcd[0].dtype)

    @property
    def Pinf(self) -> Array:  # noqa: N802
        a, b, _, _ = self._abcd
        return jnp.stack([jnp.stack([a, -b]), jnp.stack([-b, a + 2.0 * b**2 / a])])

    def transition(self, dt: Array) -> Array:
        return jnp.exp(-self.dense.c * dt) * _rotation(self.dense.d * dt)

    def process_cov(self, dt: Array) -> Array:
        return _doubled_process_cov(self, dt, self.dense.c + self.dense.d)
