"""Infinite-width neural-network kernels: the NNGP and the neural tangent kernel (NTK)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from probkit._checks import check_hyperparameter, check_positive_int
from probkit.kernels.base import Kernel, as_2d

__all__ = ["NNGP", "NTK"]


_NNGP_ACTIVATIONS = ("relu", "erf")
# erf: the arcsine argument 2c/sqrt((1+2q1)(1+2q2)) is < 1 for finite variances; it is clamped to
# +-(1 - _ERF_CLAMP) so that its derivative 1/sqrt(1 - r^2) stays finite for huge variances.
_ERF_CLAMP = 1e-12


@jax.custom_jvp
def _arccos_j(rho: Array) -> Array:
    """:math:`J = \\sin\\theta + (\\pi - \\theta)\\cos\\theta` with :math:`\\theta = \\arccos\\rho`.

    Its derivative :math:`J'(\\rho) = \\pi - \\arccos\\rho` is finite on [-1, 1] although those
    of its two terms are not, so it is supplied by hand (duplicate inputs give rho = 1).
    """
    return jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0)) + (math.pi - jnp.arccos(rho)) * rho


@_arccos_j.defjvp
def _arccos_j_jvp(primals, tangents):
    (rho,), (dot,) = primals, tangents
    return _arccos_j(rho), (math.pi - jnp.arccos(rho)) * dot


def _relu_expectation(q1: Array, q2: Array, c: Array) -> Array:
    """E[relu(u) relu(v)] for centred Gaussians with Var u = q1, Var v = q2, Cov = c.

    Arc-cosine kernel of degree 1 (Cho & Saul 2009):
    sqrt(q1 q2)/(2 pi) (sin t + (pi - t) cos t), t = arccos(c / sqrt(q1 q2)), with the
    arccos argument clamped to [-1, 1].
    """
    norm = jnp.sqrt(q1 * q2)
    safe = jnp.where(norm > 0, norm, 1.0)
    rho = jnp.clip(c / safe, -1.0, 1.0)
    val = norm / (2.0 * math.pi) * _arccos_j(rho)
    return jnp.where(norm > 0, val, 0.0)


def _erf_expectation(q1: Array, q2: Array, c: Array) -> Array:
    """E[erf(u) erf(v)] = (2/pi) arcsin(2c / sqrt((1+2q1)(1+2q2))) (Williams 1997).

    Written as (2/pi) atan2(2c, sqrt((1+2q1)(1+2q2) - 4c^2)), with the ratio clamped.
    """
    den = jnp.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2))
    rho = jnp.clip(2.0 * c / den, -1.0 + _ERF_CLAMP, 1.0 - _ERF_CLAMP)
    return (2.0 / math.pi) * jnp.arcsin(rho)


def _relu_diag(q: Array) -> Array:
    return 0.5 * q


def _erf_diag(q: Array) -> Array:
    return (2.0 / math.pi) * jnp.arcsin(2.0 * q / (1.0 + 2.0 * q))


@jax.custom_jvp
def _arccos_clipped(rho: Array) -> Array:
    """:math:`\\arccos\\rho` of ``rho`` clipped to [-1, 1], with a finite derivative everywhere.

    The derivative :math:`-1/\\sqrt{1-\\rho^2}` is used inside (-1, 1) and replaced by 0 at
    :math:`|\\rho| \\ge 1`: duplicate inputs have :math:`\\rho = 1` for every value of the
    hyperparameters, so their exact tangent is 0 there, and the kernel has a cusp (no
    derivative) in the inputs at that point.
    """
    return jnp.arccos(jnp.clip(rho, -1.0, 1.0))


@_arccos_clipped.defjvp
def _arccos_clipped_jvp(primals, tangents):
    (rho,), (dot,) = primals, tangents
    s = 1.0 - rho**2
    inside = s > 0
    slope = -1.0 / jnp.sqrt(jnp.where(inside, s, 1.0))
    return _arccos_clipped(rho), jnp.where(inside, slope * dot, 0.0)


def _relu_derivative_expectation(q1: Array, q2: Array, c: Array) -> Array:
    """E[relu'(u) relu'(v)] = P(u > 0, v > 0) = (pi - theta)/(2 pi), theta = arccos(c/sqrt(q1 q2)).

    It is the derivative of :func:`_relu_expectation` in ``c`` (Price's theorem). A zero
    variance (only with a zero input and a vanishing bias) is read as uncorrelated signs, 1/4.
    """
    norm = jnp.sqrt(q1 * q2)
    safe = jnp.where(norm > 0, norm, 1.0)
    rho = jnp.where(norm > 0, c / safe, 0.0)
    return (math.pi - _arccos_clipped(rho)) / (2.0 * math.pi)


def _erf_derivative_expectation(q1: Array, q2: Array, c: Array) -> Array:
    """E[erf'(u) erf'(v)] = (4/pi) / sqrt((1+2q1)(1+2q2) - 4c^2), the ``c``-derivative of
    :func:`_erf_expectation`.

    By Cauchy-Schwarz the radicand is at least 1 + 2 q1 + 2 q2 >= 1; it is floored at 1 so that
    rounding can never make it vanish.
    """
    s = (1.0 + 2.0 * q1) * (1.0 + 2.0 * q2) - 4.0 * c**2
    return (4.0 / math.pi) / jnp.sqrt(jnp.maximum(s, 1.0))


def _relu_derivative_diag(q: Array) -> Array:
    return jnp.full_like(q, 0.5)


def _erf_derivative_diag(q: Array) -> Array:
    return (4.0 / math.pi) / jnp.sqrt(1.0 + 4.0 * q)


class NNGP(Kernel):
    r"""Infinite-width limit of a fully connected network with ``depth`` hidden layers.

    For a network :math:`h^1 = \sigma_w W^1 x/\sqrt d + \sigma_b b^1`,
    :math:`h^{l+1} = \sigma_w W^{l+1}\phi(h^l)/\sqrt{N} + \sigma_b b^{l+1}` and readout
    :math:`f = \sigma_{L+1} w^\top \phi(h^L)/\sqrt N` (no readout bias) with standard normal
    weights, the output converges as :math:`N\to\infty` to a GP with covariance

    .. math::

        K_1 = \sigma_b^2 + \sigma_w^2\, x^\top x'/d, \qquad
        K_{l+1} = \sigma_b^2 + \sigma_w^2\, E_l, \qquad
        K = \sigma_{L+1}^2 E_L,

    where :math:`E_l = \mathbb E[\phi(u)\phi(v)]` for :math:`(u, v)` centred Gaussian with
    covariance :math:`[[K_l(x,x), K_l(x,x')], [K_l(x,x'), K_l(x',x')]]`
    (Neal 1996; Lee et al. 2018; Matthews et al. 2018). Closed forms:

    * ReLU (arc-cosine, Cho & Saul 2009): :math:`E = \frac{\sqrt{q_1 q_2}}{2\pi}
      (\sin\theta + (\pi-\theta)\cos\theta)`, :math:`\theta=\arccos(c/\sqrt{q_1q_2})`;
      diagonal :math:`q/2`.
    * erf (arcsine, Williams 1997): :math:`E = \frac{2}{\pi}\arcsin\frac{2c}
      {\sqrt{(1+2q_1)(1+2q_2)}}`; diagonal :math:`\frac2\pi\arcsin\frac{2q}{1+2q}`.

    Diagonals are propagated with their exact closed forms (when called as ``k(x, x)`` with
    the same array object the diagonal of every layer is set to them); the arccos argument is
    clamped to [-1, 1] and the derivative of the ReLU expectation in the correlation,
    :math:`(\pi-\theta)/(2\pi)`, is written out, so gradients stay finite at duplicate inputs.
    Compute in float64 (inside ``jax.enable_x64(True)``) where the
    Gram matrix is factorised.

    Parameters
    ----------
    depth : int
        Number of hidden layers :math:`L \ge 1`.
    activation : {"relu", "erf"}
    weight_variance : float
        :math:`\sigma_w^2 > 0` of the hidden layers (2 is He initialisation for ReLU).
    bias_variance : float
        :math:`\sigma_b^2 > 0` (use a small value such as 1e-8 for "no bias").
    last_weight_variance : float
        Readout weight variance :math:`\sigma_{L+1}^2 > 0`; set it to 1 when a random scale
        multiplies the kernel (scale-mixture NNGP).
    input_weight_variance : float or array of shape (d,), optional
        First-layer weight variances per input dimension, :math:`K_1 = \sigma_b^2 +
        \sum_i \sigma_{w,i}^2 x_i x'_i / d` (automatic relevance determination: a network
        whose first-layer weights have one prior variance per input). Default: the shared
        ``weight_variance``.
    normalize : bool
        Use the correlation kernel :math:`K(x,x')/\sqrt{K(x,x)K(x',x')}` (unit prior variance
        everywhere; the amplitude is ``last_weight_variance``). The ReLU NNGP's prior variance
        grows with :math:`\lVert x\rVert^2`, so an acquisition function built on it favours the
        corners of a box; the normalised kernel removes that drift. With one ReLU layer it equals
        (up to the factor 2) the NNGP of the inputs :math:`(\sigma_w x/\sqrt d, \sigma_b)`
        projected onto the unit sphere (the ReLU is positively homogeneous): only directions
        from the origin matter, and ``bias_variance`` acts as a length scale.

    Raises
    ------
    ValueError
        Naming ``depth``, ``activation``, ``weight_variance``, ``bias_variance`` or
        ``last_weight_variance`` when it is invalid.

    References
    ----------
    Lee, Yun, Yang, Lee. Scale Mixtures of Neural Network Gaussian Processes. ICLR 2022.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import NNGP
    >>> k = NNGP(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    >>> with jax.enable_x64(True):
    ...     x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    ...     K = k(x, x)
    >>> K.shape
    (5, 5)
    """

    weight_variance: Array
    bias_variance: Array
    last_weight_variance: Array
    input_weight_variance: Array | None
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(self, depth: int = 3, activation: str = "relu", weight_variance=2.0,
                 bias_variance=0.1, last_weight_variance=1.0, input_weight_variance=None,
                 normalize: bool = False):
        self.depth = check_positive_int("depth", depth, minimum=1)
        if activation not in _NNGP_ACTIVATIONS:
            raise ValueError(f"activation: expected one of {_NNGP_ACTIVATIONS}, "
                             f"got {activation!r}")
        self.activation = activation
        self.weight_variance = check_hyperparameter("weight_variance", weight_variance)
        self.bias_variance = check_hyperparameter("bias_variance", bias_variance)
        self.last_weight_variance = check_hyperparameter("last_weight_variance",
                                                         last_weight_variance)
        if input_weight_variance is not None:
            input_weight_variance = check_hyperparameter("input_weight_variance",
                                                    input_weight_variance)
            if input_weight_variance.ndim > 1:
                raise ValueError("input_weight_variance: expected a scalar or a vector of "
                                 f"length d, got shape {input_weight_variance.shape}")
        self.input_weight_variance = input_weight_variance
        self.normalize = bool(normalize)

    def _input_weights(self) -> Array:
        w = self.input_weight_variance
        return self.weight_variance if w is None else w

    def _fns(self):
        if self.activation == "relu":
            return _relu_expectation, _relu_diag
        return _erf_expectation, _erf_diag

    def layer_diagonals(self, x: Array) -> list[Array]:
        """Exact :math:`K_l(x_i, x_i)` for ``l = 1..L`` (pre-activation variances)."""
        x = as_2d(x)
        _, ediag = self._fns()
        q = self.bias_variance + jnp.sum(self._input_weights() * x * x, -1) / x.shape[-1]
        out = [q]
        for _ in range(self.depth - 1):
            q = self.bias_variance + self.weight_variance * ediag(q)
            out.append(q)
        return out

    def __call__(self, x1: Array, x2: Array) -> Array:
        same = x1 is x2
        x1, x2 = as_2d(x1), as_2d(x2)
        expect, _ = self._fns()
        d = x1.shape[-1]
        q1s = self.layer_diagonals(x1)
        q2s = q1s if same else self.layer_diagonals(x2)
        c = self.bias_variance + (self._input_weights() * x1) @ x2.T / d
        for layer in range(self.depth):
            q1, q2 = q1s[layer], q2s[layer]
            if same:
                c = _set_diagonal(c, q1)
            e = expect(q1[:, None], q2[None, :], c)
            c = self.bias_variance + self.weight_variance * e if layer < self.depth - 1 else e
        d1 = self._last_diag(q1s[-1])
        if self.normalize:
            d2 = d1 if same else self._last_diag(q2s[-1])
            c = c / jnp.sqrt(d1[:, None] * d2[None, :])
            d1 = jnp.ones_like(d1)
        if same:
            c = _set_diagonal(c, d1)
        return self.last_weight_variance * c

    def _last_diag(self, q: Array) -> Array:
        _, ediag = self._fns()
        return ediag(q)

    def diag(self, x: Array) -> Array:
        d = self._last_diag(self.layer_diagonals(x)[-1])
        return self.last_weight_variance * (jnp.ones_like(d) if self.normalize else d)


class NTK(NNGP):
    r"""Neural tangent kernel of the fully connected network of :class:`NNGP` at infinite width.

    Same network, parameterisation and arguments as :class:`NNGP`: :math:`h^1 = \sigma_w W^1
    x/\sqrt d + \sigma_b b^1`, :math:`h^{l+1} = \sigma_w W^{l+1}\phi(h^l)/\sqrt N +
    \sigma_b b^{l+1}`, :math:`f = \sigma_{L+1} w^\top\phi(h^L)/\sqrt N`, every weight and bias
    standard normal (the NTK parameterisation). The tangent kernel
    :math:`\hat\Theta(x, x') = \sum_p \partial_p f(x)\,\partial_p f(x')` (a sum over all weights
    and biases) converges as :math:`N\to\infty` to the deterministic kernel

    .. math::

        \Theta_1 = K_1, \qquad
        \Theta_{l+1} = K_{l+1} + \sigma_w^2\,\dot E_l\,\Theta_l, \qquad
        \Theta = \sigma_{L+1}^2\,(E_L + \dot E_L\,\Theta_L),

    with :math:`K_l` and :math:`E_l = \mathbb E[\phi(u)\phi(v)]` the layer covariances of
    :class:`NNGP` and :math:`\dot E_l = \mathbb E[\phi'(u)\phi'(v)]` under the same Gaussian
    (Jacot, Gabriel & Hongler 2018; Lee et al. 2019; Arora et al. 2019). The first term of each
    step is the contribution of that layer's own weights and biases, the second that of the
    layers below, back-propagated through :math:`\phi'`. :math:`\dot E` is the derivative of
    :math:`E` in the covariance :math:`c` (Price's theorem):

    * ReLU: :math:`\dot E = (\pi - \theta)/(2\pi)`, :math:`\theta = \arccos(c/\sqrt{q_1q_2})`;
      diagonal :math:`1/2`.
    * erf: :math:`\dot E = \frac{4}{\pi}\,((1+2q_1)(1+2q_2) - 4c^2)^{-1/2}`; diagonal
      :math:`\frac4\pi(1+4q)^{-1/2}`.

    With ``input_weight_variance`` (one first-layer weight variance per input) :math:`K_1`
    and hence :math:`\Theta_1` use it, exactly as for :class:`NNGP`. The kernel scales with
    ``last_weight_variance`` like the NNGP, so it is the amplitude here too. Diagonals are
    computed with their closed forms (for ``k(x, x)`` with the same array object they are
    imposed on every layer), and the arccos has a finite derivative at :math:`\rho = \pm1`,
    so values and gradients are finite at duplicate inputs. (Equal rows of two different arrays
    get no exact diagonal: there the ReLU's :math:`\dot E`, an arccos near :math:`\rho = 1`, is
    accurate to about the square root of the machine epsilon, ~1e-8 in float64.) Compute in
    float64 where the Gram
    matrix is factorised. :meth:`nngp_and_ntk` returns the NNGP kernel of the same network too
    (one pass), as the NTK-GP predictor needs both.

    ``NTK`` subclasses :class:`NNGP` for its parameters and layer variances, so code that
    treats ``last_weight_variance`` as the amplitude of an ``NNGP`` applies unchanged.

    Parameters
    ----------
    depth, activation, weight_variance, bias_variance, last_weight_variance, input_weight_variance
        As for :class:`NNGP`.
    normalize : bool
        Must be ``False``. The normalised NNGP is a correlation kernel, not the covariance of
        a network's output, and there is no network whose tangent kernel is the normalised
        NTK, so the option is refused.

    Raises
    ------
    ValueError
        Naming ``depth``, ``activation``, ``weight_variance``, ``bias_variance``,
        ``last_weight_variance`` or ``input_weight_variance`` when it is invalid, and
        ``normalize`` when it is true.

    References
    ----------
    Jacot, A., Gabriel, F., Hongler, C. Neural Tangent Kernel: Convergence and Generalization
    in Neural Networks. NeurIPS 2018.
    Lee, J., Xiao, L., Schoenholz, S., Bahri, Y., Novak, R., Sohl-Dickstein, J., Pennington,
    J. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent.
    NeurIPS 2019 (arXiv:1902.06720).
    Arora, S., Du, S., Hu, W., Li, Z., Salakhutdinov, R., Wang, R. On Exact Computation with
    an Infinitely Wide Neural Net. NeurIPS 2019.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import NNGP, NTK
    >>> k = NTK(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    >>> with jax.enable_x64(True):
    ...     x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    ...     K, theta = k.nngp_and_ntk(x, x)
    ...     ok = bool(jnp.allclose(K, NNGP(2, "relu", 2.0, 0.1)(x, x)))
    ...     ok = ok and bool(jnp.allclose(jnp.diagonal(theta), k.diag(x)))
    ...     gap = float(jnp.linalg.eigvalsh(theta - K).min())  # Theta - K is PSD
    >>> theta.shape, ok, gap > -1e-12
    ((5, 5), True, True)
    """

    def __init__(self, depth: int = 3, activation: str = "relu", weight_variance=2.0,
                 bias_variance=0.1, last_weight_variance=1.0, input_weight_variance=None,
                 normalize: bool = False):
        if normalize:
            raise ValueError("normalize: the normalised NNGP has no tangent-kernel counterpart "
                             "(no network has a normalised NTK); use normalize=False")
        super().__init__(depth, activation, weight_variance, bias_variance,
                         last_weight_variance, input_weight_variance, normalize=False)

    def nngp(self) -> NNGP:
        """The :class:`NNGP` kernel of the same network (same parameters)."""
        return NNGP(self.depth, self.activation, self.weight_variance, self.bias_variance,
                    self.last_weight_variance, self.input_weight_variance)

    def _derivative_fns(self):
        if self.activation == "relu":
            return _relu_derivative_expectation, _relu_derivative_diag
        return _erf_derivative_expectation, _erf_derivative_diag

    def _tangent_diagonals(self, qs: list[Array]) -> tuple[list[Array], Array]:
        """Exact :math:`\\Theta_l(x_i, x_i)` for ``l = 1..L`` from the layer variances ``qs``,
        and the diagonal of the kernel before the readout factor."""
        _, ediag = self._fns()
        _, dediag = self._derivative_fns()
        t = qs[0]
        out = [t]
        for layer in range(self.depth - 1):
            t = qs[layer + 1] + self.weight_variance * dediag(qs[layer]) * t
            out.append(t)
        return out, ediag(qs[-1]) + dediag(qs[-1]) * t

    def nngp_and_ntk(self, x1: Array, x2: Array) -> tuple[Array, Array]:
        """The NNGP kernel :math:`K(x_1, x_2)` and the NTK :math:`\\Theta(x_1, x_2)` of the same
        network, both ``(n1, n2)``, in one pass of the recursion."""
        same = x1 is x2
        x1, x2 = as_2d(x1), as_2d(x2)
        expect, ediag = self._fns()
        dexpect, _ = self._derivative_fns()
        q1s = self.layer_diagonals(x1)
        q2s = q1s if same else self.layer_diagonals(x2)
        t1s, tdiag = self._tangent_diagonals(q1s)
        c = self.bias_variance + (self._input_weights() * x1) @ x2.T / x1.shape[-1]
        t = c
        for layer in range(self.depth):
            q1, q2 = q1s[layer][:, None], q2s[layer][None, :]
            if same:
                c, t = _set_diagonal(c, q1s[layer]), _set_diagonal(t, t1s[layer])
            e, de = expect(q1, q2, c), dexpect(q1, q2, c)
            if layer < self.depth - 1:
                c = self.bias_variance + self.weight_variance * e
                t = c + self.weight_variance * de * t
            else:
                c, t = e, e + de * t
        if same:
            c, t = _set_diagonal(c, ediag(q1s[-1])), _set_diagonal(t, tdiag)
        return self.last_weight_variance * c, self.last_weight_variance * t

    def __call__(self, x1: Array, x2: Array) -> Array:
        return self.nngp_and_ntk(x1, x2)[1]

    def diag(self, x: Array) -> Array:
        return self.last_weight_variance * self._tangent_diagonals(self.layer_diagonals(x))[1]


def _set_diagonal(m: Array, d: Array) -> Array:
    eye = jnp.eye(m.shape[0], dtype=bool)
    return jnp.where(eye, d[:, None], m)
