r"""Bayesian MLPs in NTK parameterisation, their weight priors and the NumPyro model.

The network :math:`f_\theta: \mathbb{R}^d \to \mathbb{R}` with hidden widths
:math:`(H_1, \dots, H_{L-1})` computes

.. math::

    h^{(0)} = x, \qquad h^{(l)} = \phi\!\left(\frac{W^{(l)} h^{(l-1)}}{\sqrt{n_{l-1}}}
    + b^{(l)}\right), \qquad f_\theta(x) = \frac{W^{(L)} h^{(L-1)}}{\sqrt{n_{L-1}}} + b^{(L)},

so that a prior standard deviation applies to the *unscaled* weights :math:`W^{(l)}` (Tran et
al. 2022, Sec. 3; the "1/sqrt(fan-in)" scaling). Three prior families over the weights:

* :class:`GaussianPrior` -- :math:`W^{(l)}_{ij} \sim N(0, \sigma_{w,l}^2)`,
  :math:`b^{(l)}_i \sim N(0, \sigma_{b,l}^2)` with one learnable standard deviation per layer
  and parameter kind (positivity through softplus). ``GaussianPrior.init(L, 1.0)`` is the
  fixed standard-normal prior (FG in the paper); optimised, it is GPiG.
* :class:`InvGammaPrior` -- hierarchical: :math:`\sigma_{w,l}^2 \sim \mathrm{InvGamma}(a_{w,l},
  \beta_{w,l})`, :math:`W^{(l)}_{ij} \mid \sigma^2_{w,l} \sim N(0, \sigma^2_{w,l})` (likewise for
  biases); fixed at :math:`(1, 1)` it is FH, optimised it is GPiH.

Every prior draws networks by reparameterisation (:meth:`sample`), so the Wasserstein matching
of :mod:`probkit.models.fbnn.matching` differentiates function draws with respect to the prior's
hyperparameters. :func:`bnn_model` writes the same model as NumPyro sites.

Reference: B.-H. Tran, S. Rossi, D. Milios, M. Filippone, "All You Need is a Good Functional
Prior for Bayesian Deep Learning", JMLR 23 (2022).

Examples
--------
>>> import jax
>>> from probkit.models.fbnn import GaussianPrior, mlp_template
>>> net = mlp_template(1, (50, 50), "tanh")
>>> prior = GaussianPrior.init(net.num_layers, 1.0)
>>> f, _ = prior.sample(jax.random.key(0), net)
>>> f(jax.numpy.zeros((3, 1))).shape
(3,)
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import Array

from probkit import _io
from probkit._checks import check_positive, check_positive_int

__all__ = ["ACTIVATIONS", "MLP", "mlp_template", "LayerVariances", "GaussianPrior",
           "InvGammaPrior", "gaussian_log_prior", "bnn_model", "softplus_inv", "save_prior",
           "load_prior"]

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "erf": jax.scipy.special.erf,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
}


def softplus_inv(y) -> Array:
    """Inverse of softplus, :math:`\\log(e^y - 1)`, for ``y > 0``."""
    y = jnp.asarray(y, dtype=jnp.float32)
    return y + jnp.log(-jnp.expm1(-y))


class MLP(eqx.Module):
    """A fully connected network in NTK parameterisation (see the module docstring).

    Parameters
    ----------
    weights : tuple of arrays
        ``W^{(l)}`` of shape ``(n_{l-1}, n_l)``, unscaled.
    biases : tuple of arrays
        ``b^{(l)}`` of shape ``(n_l,)``.
    activation : str
        Key of :data:`ACTIVATIONS`.
    """

    weights: tuple
    biases: tuple
    activation: str = eqx.field(static=True)

    @property
    def num_layers(self) -> int:
        """Number of weight layers (hidden layers + 1)."""
        return len(self.weights)

    def __call__(self, x: Array) -> Array:
        """Outputs ``(n,)`` for inputs ``(n, d)``."""
        act = ACTIVATIONS[self.activation]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w / math.sqrt(w.shape[0]) + b
            if i < last:
                h = act(h)
        return h[..., 0]


def mlp_template(in_dim: int, widths: Sequence[int], activation: str = "tanh") -> MLP:
    """An all-zero :class:`MLP` that fixes the architecture ``in_dim -> widths -> 1``.

    Raises
    ------
    ValueError
        ``in_dim`` or any of ``widths`` below 1, or an unknown ``activation``.
    """
    in_dim = check_positive_int("in_dim", in_dim)
    widths = tuple(widths)
    for w in widths:
        check_positive_int("widths", w)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    sizes = (in_dim, *widths, 1)
    ws = tuple(jnp.zeros((a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    bs = tuple(jnp.zeros((b,)) for b in sizes[1:])
    return MLP(ws, bs, activation)


class LayerVariances(NamedTuple):
    """Per-layer prior variances of the weights ``w`` ``(L,)`` and biases ``b`` ``(L,)``."""

    w: Array
    b: Array


def gaussian_log_prior(net: MLP, var: LayerVariances) -> Array:
    r"""Log density :math:`\sum_l \log N(W^{(l)}; 0, \sigma^2_{w,l} I)
    + \log N(b^{(l)}; 0, \sigma^2_{b,l} I)` of the Gaussian layers given their variances."""
    total = 0.0
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        for p, v in ((w, var.w[i]), (b, var.b[i])):
            total = total - 0.5 * jnp.sum(p**2) / v - 0.5 * p.size * jnp.log(2 * jnp.pi * v)
    return total


def _scale(template: MLP, key: Array, std_w: Array, std_b: Array) -> MLP:
    keys = jax.random.split(key, 2 * template.num_layers)
    ws = tuple(std_w[i] * jax.random.normal(keys[2 * i], w.shape)
               for i, w in enumerate(template.weights))
    bs = tuple(std_b[i] * jax.random.normal(keys[2 * i + 1], b.shape)
               for i, b in enumerate(template.biases))
    return MLP(ws, bs, template.activation)


class GaussianPrior(eqx.Module):
    r"""Per-layer Gaussian prior, :math:`\sigma = \mathrm{softplus}(\rho)` per layer and kind.

    Parameters
    ----------
    raw_w, raw_b : arrays of shape (L,)
        Unconstrained :math:`\rho_{w}`, :math:`\rho_{b}`.

    Examples
    --------
    >>> from probkit.models.fbnn import GaussianPrior
    >>> GaussianPrior.init(2, 1.0).variances().w
    Array([1., 1.], dtype=float32)
    """

    raw_w: Array
    raw_b: Array
    hierarchical = False

    @classmethod
    def init(cls, num_layers: int, std_w: float = 1.0, std_b: float | None = None):
        """Equal standard deviations in every layer (``std_b`` defaults to ``std_w``)."""
        num_layers = check_positive_int("num_layers", num_layers)
        std_b = std_w if std_b is None else std_b
        check_positive("std_w", std_w)
        check_positive("std_b", std_b)
        return cls(jnp.full((num_layers,), softplus_inv(std_w)),
                   jnp.full((num_layers,), softplus_inv(std_b)))

    def stds(self) -> tuple[Array, Array]:
        """Per-layer standard deviations ``(std_w, std_b)``."""
        return jax.nn.softplus(self.raw_w), jax.nn.softplus(self.raw_b)

    def variances(self, key: Array | None = None) -> LayerVariances:
        """The (fixed) layer variances; ``key`` is ignored."""
        sw, sb = self.stds()
        return LayerVariances(sw**2, sb**2)

    def sample(self, key: Array, template: MLP) -> tuple[MLP, LayerVariances]:
        """A reparameterised network draw and its layer variances."""
        sw, sb = self.stds()
        return _scale(template, key, sw, sb), LayerVariances(sw**2, sb**2)

    def gibbs(self, key: Array, net: MLP, var: LayerVariances) -> LayerVariances:
        """Conditional draw of the variances given the weights (fixed here)."""
        return var

    def numpyro_sample(self, template: MLP) -> MLP:
        """Sample sites ``W{l}``, ``b{l}`` under this prior; returns the network."""
        sw, sb = self.stds()
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(template.weights, template.biases, strict=True)):
            ws.append(numpyro.sample(f"W{i}", dist.Normal(0.0, sw[i]).expand(w.shape).to_event(2)))
            bs.append(numpyro.sample(f"b{i}", dist.Normal(0.0, sb[i]).expand(b.shape).to_event(1)))
        return MLP(tuple(ws), tuple(bs), template.activation)


class InvGammaPrior(eqx.Module):
    r"""Hierarchical prior: per-layer variance :math:`\sim \mathrm{InvGamma}(a, \beta)`.

    :math:`a = \mathrm{softplus}(\rho^a)`, :math:`\beta = \mathrm{softplus}(\rho^\beta)` per layer
    and kind. Draws are reparameterised through ``jax.random.gamma`` (implicit gradients in the
    shape): :math:`1/\sigma^2 = g/\beta`, :math:`g \sim \mathrm{Gamma}(a, 1)`. Given the weights
    the variances have the conjugate conditional
    :math:`\mathrm{InvGamma}(a + n_l/2, \beta + \lVert W^{(l)} \rVert^2/2)` (:meth:`gibbs`).

    Examples
    --------
    >>> from probkit.models.fbnn import InvGammaPrior
    >>> p = InvGammaPrior.init(2, 1.0, 1.0)     # the paper's FH prior
    >>> p.params()[0].shape
    (2,)
    """

    raw_shape_w: Array
    raw_rate_w: Array
    raw_shape_b: Array
    raw_rate_b: Array
    hierarchical = True

    @classmethod
    def init(cls, num_layers: int, shape: float = 1.0, rate: float = 1.0):
        """Equal (shape, rate) in every layer, for weights and biases."""
        num_layers = check_positive_int("num_layers", num_layers)
        check_positive("shape", shape)
        check_positive("rate", rate)
        a = jnp.full((num_layers,), softplus_inv(shape))
        r = jnp.full((num_layers,), softplus_inv(rate))
        return cls(a, r, a, r)

    def params(self) -> tuple[Array, Array, Array, Array]:
        """``(shape_w, rate_w, shape_b, rate_b)``, each ``(L,)``."""
        sp = jax.nn.softplus
        return sp(self.raw_shape_w), sp(self.raw_rate_w), sp(self.raw_shape_b), sp(self.raw_rate_b)

    def variances(self, key: Array) -> LayerVariances:
        """A reparameterised draw of the layer variances."""
        aw, rw, ab, rb = self.params()
        k1, k2 = jax.random.split(key)
        return LayerVariances(rw / jax.random.gamma(k1, aw), rb / jax.random.gamma(k2, ab))

    def sample(self, key: Array, template: MLP) -> tuple[MLP, LayerVariances]:
        """A reparameterised network draw and its layer variances."""
        k1, k2 = jax.random.split(key)
        var = self.variances(k1)
        return _scale(template, k2, jnp.sqrt(var.w), jnp.sqrt(var.b)), var

    def gibbs(self, key: Array, net: MLP, var: LayerVariances) -> LayerVariances:
        """Draw the variances from their conjugate inverse-gamma conditional."""
        aw, rw, ab, rb = self.params()
        keys = jax.random.split(key, 2)
        nw = jnp.array([w.size for w in net.weights], dtype=aw.dtype)
        nb = jnp.array([b.size for b in net.biases], dtype=aw.dtype)
        sw = jnp.stack([jnp.sum(w**2) for w in net.weights])
        sb = jnp.stack([jnp.sum(b**2) for b in net.biases])
        vw = (rw + sw / 2) / jax.random.gamma(keys[0], aw + nw / 2)
        vb = (rb + sb / 2) / jax.random.gamma(keys[1], ab + nb / 2)
        return LayerVariances(vw, vb)

    def numpyro_sample(self, template: MLP) -> MLP:
        """Sites ``var_W{l}``, ``var_b{l}`` (inverse gamma) and ``W{l}``, ``b{l}``."""
        aw, rw, ab, rb = self.params()
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(template.weights, template.biases, strict=True)):
            vw = numpyro.sample(f"var_W{i}", dist.InverseGamma(aw[i], rw[i]))
            vb = numpyro.sample(f"var_b{i}", dist.InverseGamma(ab[i], rb[i]))
            ws.append(numpyro.sample(f"W{i}", dist.Normal(0.0, jnp.sqrt(vw)).expand(w.shape)
                                     .to_event(2)))
            bs.append(numpyro.sample(f"b{i}", dist.Normal(0.0, jnp.sqrt(vb)).expand(b.shape)
                                     .to_event(1)))
        return MLP(tuple(ws), tuple(bs), template.activation)


def bnn_model(x: Array, y: Array | None = None, *, prior, widths: tuple[int, ...] = (50,),
              activation: str = "tanh", noise_var: float = 0.1,
              noise_prior: tuple[float, float] | None = None) -> None:
    r"""NumPyro model of BNN regression, :math:`y_i \sim N(f_\theta(x_i), \sigma^2_n)`.

    The weights follow ``prior`` (:class:`GaussianPrior` or :class:`InvGammaPrior`); the noise
    variance is ``noise_var`` (0.1 on standardised targets in Tran et al. 2022) or, with
    ``noise_prior=(a, b)``, the site ``"noise_var"`` :math:`\sim \mathrm{InvGamma}(a, b)`.
    Records the latent function at ``x`` as the deterministic site ``"f"``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro.infer import Predictive
    >>> from probkit.models.fbnn import GaussianPrior, bnn_model
    >>> x = jnp.linspace(-1, 1, 5)[:, None]
    >>> pr = GaussianPrior.init(2)
    >>> d = Predictive(bnn_model, num_samples=3)(jax.random.key(0), x, prior=pr, widths=(8,))
    >>> d["y"].shape
    (3, 5)
    """
    template = mlp_template(x.shape[-1], widths, activation)
    net = prior.numpyro_sample(template)
    f = numpyro.deterministic("f", net(x))
    if noise_prior is not None:
        noise_var = numpyro.sample("noise_var", dist.InverseGamma(*noise_prior))
    numpyro.sample("y", dist.Normal(f, jnp.sqrt(noise_var)).to_event(1), obs=y)


def save_prior(path, prior, template: MLP, **metadata) -> pathlib.Path:
    """Save a (matched) prior with its architecture in one :mod:`probkit._io` file.

    Keyword arguments are stored as JSON metadata (with ``in_dim``, ``widths``, ``activation``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from probkit.models.fbnn import GaussianPrior, mlp_template, save_prior, load_prior
    >>> net = mlp_template(2, (8,))
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "prior.pk"
    >>> _ = save_prior(p, GaussianPrior.init(2, 0.7), net)
    >>> prior, template, metadata = load_prior(p)
    >>> metadata["widths"]
    [8]
    """
    if not isinstance(prior, GaussianPrior | InvGammaPrior):
        raise ValueError(f"prior: expected GaussianPrior or InvGammaPrior, got {type(prior)}")
    meta = {"in_dim": int(template.weights[0].shape[0]),
            "widths": [int(w.shape[1]) for w in template.weights[:-1]],
            "activation": template.activation, **metadata}
    return _io.save(path, (prior, template), metadata=meta)


def load_prior(path):
    """Read a prior written by :func:`save_prior`: ``(prior, template, metadata)``."""
    obj = _io.load(path, expected=tuple)
    if len(obj) != 2 or not isinstance(obj[0], GaussianPrior | InvGammaPrior):
        raise ValueError(f"{str(path)!r}: not a BNN prior file (written by save_prior)")
    return obj[0], obj[1], _io.read_header(path)["metadata"]
