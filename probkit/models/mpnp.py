r"""Neural processes and martingale-posterior neural processes (MPNP).

A neural process (NP) maps a context set :math:`Z_c = \{(x_i, y_i)\}_{i \in c}` to a predictive
distribution at any target inputs; it is trained on many datasets drawn from a stochastic-process
prior (:mod:`probkit.priors`). This module holds

* the bases — :class:`CNP` (conditional NP, Garnelo et al. 2018a; with ``attentive=True`` the
  attentive CANP of Kim et al. 2019), :class:`NP` (latent-variable NP, Garnelo et al. 2018b),
  all with the Gaussian head of the Bootstrapping-NP code,
  :math:`p(y \mid x, r) = N(\mu(x, r), \sigma(x, r)^2)`, :math:`\sigma = 0.1 + 0.9\,
  \mathrm{softplus}(\cdot)`;
* the martingale-posterior NP :class:`MPNP` (Lee, Yun, Nam, Fong & Lee, *Martingale Posterior
  Neural Processes*, ICLR 2023): an exchangeable generator draws a pseudo-context set
  :math:`Z'^{(k)} = g(Z_c, \varepsilon^{(k)})` from the real context and noise, the encoder acts
  as an amortised arg-min :math:`\theta^{(k)} = \mathrm{enc}(Z_c \cup Z'^{(k)})`, and the
  predictive is the mixture
  :math:`p(y \mid x, Z_c) \approx \frac1K \sum_{k=1}^K p(y \mid x, \theta^{(k)})`;
* training on prior datasets (optax Adam with cosine decay, a tqdm bar, checkpoints), exact
  save/load (``eqx.tree_serialise_leaves`` plus a JSON header), the mixture predictive
  (:class:`MixturePredictive`: density, mean, variance, joint samples), the posterior predictive as
  a NumPyro model and as an ArviZ group, and :class:`MPNPSurrogate` for Bayesian optimisation.

**The protocol** (Lee et al., *Bootstrapping Neural Processes*, NeurIPS 2020, code
``juho-lee/bnp``): 50 points per task, :math:`x \sim U[-2, 2]`, ``num_ctx ~ randint(3, 47)`` and
``num_tar ~ randint(3, 50 - num_ctx)`` (exclusive upper bounds, one draw per batch), the first
``num_ctx`` points are the context, the training loss uses all points as targets.
:func:`sample_tasks` pads every task to ``max_points`` and carries masks, so ``jit`` compiles once.

**Generator (our choices; the paper's code was not available).** Pseudo points live in *data*
space. The context pairs are embedded by an MLP and summarised by an induced-point attention block
(ISAB, Lee et al. 2019): learned inducing points attend to the context. Each of ``num_pseudo``
noise vectors :math:`\varepsilon_j \sim N(0, I)` is embedded, attends to that summary (conditioning
on :math:`Z_c`), then the pseudo tokens interact through a second ISAB (so the pseudo set is drawn
jointly and exchangeably), and an MLP head outputs :math:`(x'_j, y'_j)`. The pseudo set has as
many points as the context (capped at ``num_pseudo``); the generator is permutation invariant in
the context and equivariant in the noise tokens, so the joint law of the pseudo set is exchangeable.

**Loss (our exact choice).** With :math:`\ell_k = \sum_{i \in t} \log p(y_i \mid x_i,
\theta^{(k)})` over all valid points :math:`t` (context and target) and :math:`n_t = |t|`,

.. math::
    \mathcal L = \underbrace{-\tfrac{1}{n_t}\log\tfrac1K\sum_k e^{\ell_k}}_{\text{marginal}}
    \;\underbrace{-\tfrac{1}{n_t}\textstyle\sum_{i\in t}\log p(y_i\mid x_i,\mathrm{enc}(Z_c))}
    _{\text{amortised}}
    \;\underbrace{-\tfrac{1}{n_t}\log\tfrac1K\sum_k e^{\ell'_k}}_{\text{pseudo}},

with :math:`\ell'_k` as :math:`\ell_k` but :math:`\theta'^{(k)} = \mathrm{enc}(Z'^{(k)})` (pseudo
context alone), weights ``(1, 1, 1)`` (``loss_weights``), :math:`K = 4` in training, averaged over
tasks. The marginal term takes the log-mean-exp over the *product* over points (the joint
marginal likelihood of the task), the pseudo term keeps the generated sets informative on their
own. The NP is trained with the importance-weighted bound of the BNP code (:math:`K` draws from
:math:`q(z \mid Z_{\text{all}})`, prior :math:`p(z \mid Z_c)`), the CNP with the plain likelihood.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.models import mpnp
>>> model = mpnp.make_model("mpnp", key=jax.random.key(0), dim_hid=16, dim_gen=16)
>>> x = jnp.linspace(-1, 1, 5)
>>> pred = mpnp.predict(model, x, jnp.sin(x), jnp.linspace(-2, 2, 7), key=jax.random.key(1),
...                     num_samples=3)
>>> pred.loc.shape, pred.mean.shape
((3, 7), (7,))
"""

from __future__ import annotations

import importlib.resources
import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.distributions.transforms as transforms
import optax
from jax import Array

from probkit._checks import as_array, check_finite, check_key, check_positive_int
from probkit.posterior import SamplePosterior
from probkit.priors import GPPrior

__all__ = [
    "VERSION", "KINDS", "SIGMA_FLOOR", "Tasks", "CNP", "NP", "MPNP", "Generator",
    "MixturePredictive", "make_model", "bnp_prior", "sample_tasks", "make_eval_tasks",
    "components", "predict", "task_loss", "batch_loss", "evaluate", "train", "save", "load",
    "load_pretrained", "posterior_predictive_model", "to_inference_data", "MPNPSurrogate",
    "MPNPFitted",
]

VERSION = 1
#: Model kinds accepted by :func:`make_model`.
KINDS = ("cnp", "canp", "np", "mpnp", "mpanp")
#: Lower bound of the predictive standard deviation, as in the BNP code.
SIGMA_FLOOR = 0.1


# ---------------------------------------------------------------------------------------------
# Building blocks: plain-array layers that act on any leading shape
# ---------------------------------------------------------------------------------------------

def _linear_init(key: Array, d_in: int, d_out: int) -> tuple[Array, Array]:
    bound = 1.0 / math.sqrt(d_in)
    kw, kb = jax.random.split(key)
    return (jax.random.uniform(kw, (d_in, d_out), minval=-bound, maxval=bound),
            jax.random.uniform(kb, (d_out,), minval=-bound, maxval=bound))


class MLP(eqx.Module):
    """``depth`` linear layers with ReLU between them (the ``build_mlp`` of the BNP code)."""

    weights: list[Array]
    biases: list[Array]

    def __init__(self, d_in: int, d_hid: int, d_out: int, depth: int, *, key: Array):
        dims = [d_in] + [d_hid] * (depth - 1) + [d_out]
        keys = jax.random.split(key, depth)
        wb = [_linear_init(k, a, b) for k, a, b in zip(keys, dims[:-1], dims[1:], strict=True)]
        self.weights = [w for w, _ in wb]
        self.biases = [b for _, b in wb]

    def __call__(self, h: Array) -> Array:
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = jax.nn.relu(h)
        return h


class LayerNorm(eqx.Module):
    gain: Array
    bias: Array

    def __init__(self, dim: int):
        self.gain = jnp.ones(dim)
        self.bias = jnp.zeros(dim)

    def __call__(self, h: Array) -> Array:
        mu = jnp.mean(h, -1, keepdims=True)
        var = jnp.var(h, -1, keepdims=True)
        return (h - mu) * jax.lax.rsqrt(var + 1e-5) * self.gain + self.bias


class MultiHeadAttention(eqx.Module):
    """Scaled dot-product attention with ``num_heads`` heads and a key mask."""

    wq: Array
    wk: Array
    wv: Array
    wo: Array
    num_heads: int = eqx.field(static=True)

    def __init__(self, d_q: int, d_k: int, d_v: int, dim: int, num_heads: int, *, key: Array):
        ks = jax.random.split(key, 4)
        self.wq = _linear_init(ks[0], d_q, dim)[0]
        self.wk = _linear_init(ks[1], d_k, dim)[0]
        self.wv = _linear_init(ks[2], d_v, dim)[0]
        self.wo = _linear_init(ks[3], dim, dim)[0]
        self.num_heads = num_heads

    def __call__(self, q: Array, k: Array, v: Array, mask: Array) -> Array:
        # q (m, d_q), k (n, d_k), v (n, d_v), mask (n,) bool -> (m, dim)
        h = self.num_heads
        qh = (q @ self.wq).reshape(q.shape[0], h, -1)
        kh = (k @ self.wk).reshape(k.shape[0], h, -1)
        vh = (v @ self.wv).reshape(v.shape[0], h, -1)
        logits = jnp.einsum("mhd,nhd->hmn", qh, kh) / math.sqrt(qh.shape[-1])
        logits = jnp.where(mask[None, None, :], logits, -1e9)
        att = jax.nn.softmax(logits, axis=-1) * mask[None, None, :]  # all masked -> zeros
        out = jnp.einsum("hmn,nhd->mhd", att, vh).reshape(q.shape[0], -1)
        return out @ self.wo


class MAB(eqx.Module):
    """Multihead attention block of the Set Transformer: ``LN(H + FF(H))``, ``H = LN(Q + Att)``."""

    att: MultiHeadAttention
    ff: MLP
    ln1: LayerNorm
    ln2: LayerNorm

    def __init__(self, dim: int, num_heads: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.att = MultiHeadAttention(dim, dim, dim, dim, num_heads, key=k1)
        self.ff = MLP(dim, dim, dim, 2, key=k2)
        self.ln1 = LayerNorm(dim)
        self.ln2 = LayerNorm(dim)

    def __call__(self, q: Array, kv: Array, mask: Array) -> Array:
        h = self.ln1(q + self.att(q, kv, kv, mask))
        return self.ln2(h + self.ff(h))


def _masked_mean(h: Array, mask: Array) -> Array:
    w = mask.astype(h.dtype)
    return jnp.sum(h * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1.0)


def _pairs(x: Array, y: Array) -> Array:
    return jnp.concatenate([x, y[:, None]], axis=-1)


def _head(out: Array) -> tuple[Array, Array]:
    return out[..., 0], SIGMA_FLOOR + (1.0 - SIGMA_FLOOR) * jax.nn.softplus(out[..., 1])


def _normal_logpdf(y: Array, loc: Array, scale: Array) -> Array:
    return -0.5 * ((y - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def _logmeanexp(a: Array, axis: int = 0) -> Array:
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------

class DetEncoder(eqx.Module):
    r"""Mean-pooled deterministic encoder :math:`r = \rho(\frac1n\sum_i \phi(x_i, y_i))`."""

    pre: MLP
    post: MLP

    def __init__(self, dim_x: int, dim_hid: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.pre = MLP(dim_x + 1, dim_hid, dim_hid, 4, key=k1)
        self.post = MLP(dim_hid, dim_hid, dim_hid, 2, key=k2)

    def __call__(self, x: Array, y: Array, mask: Array, x_tar: Array) -> Array:
        r = self.post(_masked_mean(self.pre(_pairs(x, y)), mask))
        return jnp.broadcast_to(r, (x_tar.shape[0], r.shape[0]))


class AttnEncoder(eqx.Module):
    """Attentive encoder of the CANP: self-attention over context values, cross-attention from
    targets (queries and keys from an MLP of the inputs)."""

    v: MLP
    qk: MLP
    self_att: MAB
    cross: MultiHeadAttention

    def __init__(self, dim_x: int, dim_hid: int, num_heads: int = 8, *, key: Array):
        ks = jax.random.split(key, 4)
        self.v = MLP(dim_x + 1, dim_hid, dim_hid, 4, key=ks[0])
        self.qk = MLP(dim_x, dim_hid, dim_hid, 2, key=ks[1])
        self.self_att = MAB(dim_hid, num_heads, key=ks[2])
        self.cross = MultiHeadAttention(dim_hid, dim_hid, dim_hid, dim_hid, num_heads, key=ks[3])

    def __call__(self, x: Array, y: Array, mask: Array, x_tar: Array) -> Array:
        v = self.self_att(self.v(_pairs(x, y)), self.v(_pairs(x, y)), mask)
        return self.cross(self.qk(x_tar), self.qk(x), v, mask)


class LatEncoder(eqx.Module):
    r"""Latent path of the NP:
    :math:`q(z \mid Z) = N(\mu, \mathrm{diag}(0.1 + 0.9\,\mathrm{sigmoid}(\cdot))^2)`."""

    pre: MLP
    post: MLP

    def __init__(self, dim_x: int, dim_hid: int, dim_lat: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.pre = MLP(dim_x + 1, dim_hid, dim_hid, 4, key=k1)
        self.post = MLP(dim_hid, dim_hid, 2 * dim_lat, 2, key=k2)

    def __call__(self, x: Array, y: Array, mask: Array) -> tuple[Array, Array]:
        out = self.post(_masked_mean(self.pre(_pairs(x, y)), mask))
        mu, raw = jnp.split(out, 2)
        return mu, 0.1 + 0.9 * jax.nn.sigmoid(raw)


# ---------------------------------------------------------------------------------------------
# Models (one task at a time; vmap for batches)
# ---------------------------------------------------------------------------------------------

class CNP(eqx.Module):
    r"""Conditional NP (``attentive=False``) or conditional attentive NP (``attentive=True``).

    :math:`p(y \mid x, Z_c) = N(\mu, \sigma^2)` with :math:`(\mu, \sigma) = d(x, r(x; Z_c))`.
    Deterministic: its :meth:`components` are ``num_samples`` copies of one Gaussian.

    Parameters
    ----------
    dim_x, dim_hid : int
        Input dimension and width (BNP: 128; encoder depths 4 + 2, decoder depth 3).
    attentive : bool
        Use the attentive encoder (CANP) instead of mean pooling.
    key : Array
        PRNG key of the initialisation.
    """

    encoder: DetEncoder | AttnEncoder
    decoder: MLP
    dim_x: int = eqx.field(static=True)
    dim_hid: int = eqx.field(static=True)
    attentive: bool = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim_hid: int = 128, attentive: bool = False, *,
                 key: Array):
        k1, k2 = jax.random.split(key)
        self.encoder = (AttnEncoder(dim_x, dim_hid, key=k1) if attentive
                        else DetEncoder(dim_x, dim_hid, key=k1))
        self.decoder = MLP(dim_x + dim_hid, dim_hid, 2, 3, key=k2)
        self.dim_x, self.dim_hid, self.attentive = dim_x, dim_hid, attentive

    @property
    def kind(self) -> str:
        return "canp" if self.attentive else "cnp"

    @property
    def config(self) -> dict:
        return {"dim_x": self.dim_x, "dim_hid": self.dim_hid}

    def gaussian(self, x: Array, y: Array, mask: Array, x_tar: Array) -> tuple[Array, Array]:
        """Predictive mean and standard deviation ``(m,)`` at ``x_tar`` given a masked set."""
        r = self.encoder(x, y, mask, x_tar)
        return _head(self.decoder(jnp.concatenate([x_tar, r], axis=-1)))

    def components(self, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
                   num_samples: int) -> tuple[Array, Array]:
        loc, scale = self.gaussian(x, y, mask, x_tar)
        shape = (num_samples, x_tar.shape[0])
        return jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape)

    def loss(self, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
             num_samples: int) -> Array:
        loc, scale = self.gaussian(x, y, mask_ctx, x)
        ll = _normal_logpdf(y, loc, scale)
        return -jnp.sum(ll * mask_all) / jnp.maximum(jnp.sum(mask_all), 1.0)


class NP(eqx.Module):
    r"""Latent-variable NP with a deterministic path (the ``NP`` of the BNP code).

    :math:`p(y \mid x, Z_c) = \int N(y; d(x, r, z)) \, p(z \mid Z_c)\, dz`; trained with the
    importance-weighted bound :math:`\log \frac1K\sum_k p(y_t \mid z_k) p(z_k \mid Z_c) /
    q(z_k \mid Z_t)`, :math:`z_k \sim q(z \mid Z_t)`, divided by the number of points.
    """

    det: DetEncoder
    lat: LatEncoder
    decoder: MLP
    dim_x: int = eqx.field(static=True)
    dim_hid: int = eqx.field(static=True)
    dim_lat: int = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim_hid: int = 128, dim_lat: int = 128, *, key: Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.det = DetEncoder(dim_x, dim_hid, key=k1)
        self.lat = LatEncoder(dim_x, dim_hid, dim_lat, key=k2)
        self.decoder = MLP(dim_x + dim_hid + dim_lat, dim_hid, 2, 3, key=k3)
        self.dim_x, self.dim_hid, self.dim_lat = dim_x, dim_hid, dim_lat

    @property
    def kind(self) -> str:
        return "np"

    @property
    def config(self) -> dict:
        return {"dim_x": self.dim_x, "dim_hid": self.dim_hid, "dim_lat": self.dim_lat}

    def _decode(self, r: Array, z: Array, x_tar: Array) -> tuple[Array, Array]:
        zz = jnp.broadcast_to(z, (x_tar.shape[0], z.shape[-1]))
        return _head(self.decoder(jnp.concatenate([x_tar, r, zz], axis=-1)))

    def components(self, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
                   num_samples: int) -> tuple[Array, Array]:
        r = self.det(x, y, mask, x_tar)
        mu, sd = self.lat(x, y, mask)
        z = mu + sd * jax.random.normal(key, (num_samples, mu.shape[0]), mu.dtype)
        return jax.vmap(lambda zk: self._decode(r, zk, x_tar))(z)

    def loss(self, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
             num_samples: int) -> Array:
        r = self.det(x, y, mask_ctx, x)
        pm, ps = self.lat(x, y, mask_ctx)
        qm, qs = self.lat(x, y, mask_all)
        z = qm + qs * jax.random.normal(key, (num_samples, qm.shape[0]), qm.dtype)
        loc, scale = jax.vmap(lambda zk: self._decode(r, zk, x))(z)
        recon = jnp.sum(_normal_logpdf(y, loc, scale) * mask_all, axis=-1)
        log_w = (recon + jnp.sum(_normal_logpdf(z, pm, ps), -1)
                 - jnp.sum(_normal_logpdf(z, qm, qs), -1))
        return -_logmeanexp(log_w) / jnp.maximum(jnp.sum(mask_all), 1.0)


class Generator(eqx.Module):
    r"""Exchangeable pseudo-context generator :math:`Z' = g(Z_c, \varepsilon)` (see module doc).

    Parameters
    ----------
    dim_x : int
        Input dimension.
    dim : int
        Width of the attention blocks.
    num_pseudo : int
        Number of noise tokens ``M`` (the pseudo set has ``min(n_c, M)`` active points).
    num_inducing : int
        Inducing points of each ISAB.
    dim_noise : int
        Dimension of each :math:`\varepsilon_j \sim N(0, I)`.
    """

    embed: MLP
    inducing_ctx: Array
    summarise: MAB
    noise_in: MLP
    condition: MAB
    inducing_pseudo: Array
    isab_in: MAB
    isab_out: MAB
    head: MLP
    num_pseudo: int = eqx.field(static=True)
    dim_noise: int = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim: int = 64, num_pseudo: int = 50,
                 num_inducing: int = 16, dim_noise: int = 8, num_heads: int = 4, *,
                 key: Array):
        ks = jax.random.split(key, 8)
        self.embed = MLP(dim_x + 1, dim, dim, 2, key=ks[0])
        self.inducing_ctx = 0.1 * jax.random.normal(ks[1], (num_inducing, dim))
        self.summarise = MAB(dim, num_heads, key=ks[2])
        self.noise_in = MLP(dim_noise, dim, dim, 2, key=ks[3])
        self.condition = MAB(dim, num_heads, key=ks[4])
        self.inducing_pseudo = 0.1 * jax.random.normal(ks[5], (num_inducing, dim))
        self.isab_in = MAB(dim, num_heads, key=ks[6])
        k7, k8 = jax.random.split(ks[7])
        self.isab_out = MAB(dim, num_heads, key=k7)
        self.head = MLP(dim, dim, dim_x + 1, 2, key=k8)
        self.num_pseudo, self.dim_noise = num_pseudo, dim_noise

    def __call__(self, key: Array, x: Array, y: Array, mask: Array
                 ) -> tuple[Array, Array, Array]:
        """Pseudo inputs ``(M, d)``, outputs ``(M,)`` and mask ``(M,)`` (first ``n_c`` active)."""
        summary = self.summarise(self.inducing_ctx, self.embed(_pairs(x, y)), mask)
        eps = jax.random.normal(key, (self.num_pseudo, self.dim_noise), summary.dtype)
        tokens = self.condition(self.noise_in(eps), summary, jnp.ones(summary.shape[0], bool))
        n_c = jnp.sum(mask)
        pmask = jnp.arange(self.num_pseudo) < n_c
        h = self.isab_in(self.inducing_pseudo, tokens, pmask)
        tokens = self.isab_out(tokens, h, jnp.ones(h.shape[0], bool))
        out = self.head(tokens)
        return out[:, :-1], out[:, -1], pmask


class MPNP(eqx.Module):
    r"""Martingale-posterior NP on a CNP (``attentive=False``) or CANP (``attentive=True``) base.

    Predictive :math:`\frac1K\sum_k N(y; \mu_k(x), \sigma_k(x)^2)`, :math:`(\mu_k, \sigma_k) =
    \mathrm{base}(x; Z_c \cup g(Z_c, \varepsilon^{(k)}))`. ``num_pseudo=0`` means an empty
    generator: the model is then exactly its base (a test checks it).

    Parameters
    ----------
    dim_x, dim_hid : int
        Base network sizes (as :class:`CNP`).
    attentive : bool
        Attentive base (MPANP).
    dim_gen, num_pseudo, num_inducing, dim_noise : int
        Generator sizes (:class:`Generator`).
    loss_weights : tuple of 3 floats
        Weights of the marginal, amortised and pseudo-only terms (default ``(1, 1, 1)``).
    """

    base: CNP
    generator: Generator | None
    dim_gen: int = eqx.field(static=True)
    num_inducing: int = eqx.field(static=True)
    loss_weights: tuple[float, float, float] = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim_hid: int = 128, attentive: bool = False,
                 dim_gen: int = 64, num_pseudo: int = 50, num_inducing: int = 16,
                 dim_noise: int = 8, loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 *, key: Array):
        k1, k2 = jax.random.split(key)
        self.base = CNP(dim_x, dim_hid, attentive, key=k1)
        self.generator = (Generator(dim_x, dim_gen, num_pseudo, num_inducing, dim_noise, key=k2)
                          if num_pseudo > 0 else None)
        self.dim_gen, self.num_inducing = dim_gen, num_inducing
        self.loss_weights = tuple(float(w) for w in loss_weights)

    @property
    def kind(self) -> str:
        return "mpanp" if self.base.attentive else "mpnp"

    @property
    def num_pseudo(self) -> int:
        return 0 if self.generator is None else self.generator.num_pseudo

    @property
    def config(self) -> dict:
        g = self.generator
        return {"dim_x": self.base.dim_x, "dim_hid": self.base.dim_hid, "dim_gen": self.dim_gen,
                "num_pseudo": self.num_pseudo, "num_inducing": self.num_inducing,
                "dim_noise": 8 if g is None else g.dim_noise,
                "loss_weights": list(self.loss_weights)}

    def pseudo(self, key: Array, x: Array, y: Array, mask: Array
               ) -> tuple[Array, Array, Array]:
        """One pseudo-context draw ``(x', y', mask')`` (empty when ``num_pseudo=0``)."""
        if self.generator is None:
            return x[:0], y[:0], mask[:0]
        return self.generator(key, x, y, mask)

    def _augmented(self, key, x, y, mask, x_tar):
        xp, yp, mp = self.pseudo(key, x, y, mask)
        return self.base.gaussian(jnp.concatenate([x, xp]), jnp.concatenate([y, yp]),
                                  jnp.concatenate([mask, mp]), x_tar)

    def components(self, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
                   num_samples: int) -> tuple[Array, Array]:
        keys = jax.random.split(key, num_samples)
        return jax.vmap(lambda k: self._augmented(k, x, y, mask, x_tar))(keys)

    def loss(self, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
             num_samples: int) -> Array:
        n = jnp.maximum(jnp.sum(mask_all), 1.0)
        w_marg, w_amort, w_pseudo = self.loss_weights
        loc, scale = self.base.gaussian(x, y, mask_ctx, x)
        amort = -jnp.sum(_normal_logpdf(y, loc, scale) * mask_all) / n
        if self.generator is None:
            return (w_marg + w_amort) * amort
        keys = jax.random.split(key, num_samples)

        def joint_ll(k):  # one pseudo draw, used with and without the real context
            xp, yp, mp = self.pseudo(k, x, y, mask_ctx)
            xa, ya = jnp.concatenate([x, xp]), jnp.concatenate([y, yp])
            out = []
            for m_real in (mask_ctx, jnp.zeros_like(mask_ctx)):
                loc, scale = self.base.gaussian(xa, ya, jnp.concatenate([m_real, mp]), x)
                out.append(jnp.sum(_normal_logpdf(y, loc, scale) * mask_all))
            return jnp.stack(out)

        ll = jax.vmap(joint_ll)(keys)
        marg = -_logmeanexp(ll[:, 0]) / n
        pseudo = -_logmeanexp(ll[:, 1]) / n
        return w_marg * marg + w_amort * amort + w_pseudo * pseudo


Model = CNP | NP | MPNP


def make_model(kind: str, *, key: Array, dim_x: int = 1, dim_hid: int = 128,
               dim_lat: int = 128, **generator_kwargs) -> Model:
    """Build a model by name: ``"cnp"``, ``"canp"``, ``"np"``, ``"mpnp"`` or ``"mpanp"``.

    ``generator_kwargs`` (``dim_gen``, ``num_pseudo``, ``num_inducing``, ``dim_noise``,
    ``loss_weights``) go to :class:`MPNP`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    key = check_key("key", key)
    dim_x = check_positive_int("dim_x", dim_x)
    dim_hid = check_positive_int("dim_hid", dim_hid)
    if kind in ("cnp", "canp"):
        return CNP(dim_x, dim_hid, kind == "canp", key=key)
    if kind == "np":
        return NP(dim_x, dim_hid, check_positive_int("dim_lat", dim_lat), key=key)
    if "num_pseudo" in generator_kwargs:
        check_positive_int("num_pseudo", generator_kwargs["num_pseudo"], minimum=0)
    if "loss_weights" in generator_kwargs:
        generator_kwargs["loss_weights"] = tuple(generator_kwargs["loss_weights"])
    return MPNP(dim_x, dim_hid, kind == "mpanp", key=key, **generator_kwargs)


# ---------------------------------------------------------------------------------------------
# Tasks: the BNP 1-D protocol with padding and masks
# ---------------------------------------------------------------------------------------------

class Tasks(NamedTuple):
    """A batch of padded regression tasks.

    Attributes
    ----------
    x : Array ``(b, n, d)``; y : Array ``(b, n)``
        Inputs and outputs, padded to ``n = max_points``.
    mask_ctx : Array ``(b, n)`` bool
        Context points (the first ``num_ctx``).
    mask_tar : Array ``(b, n)`` bool
        Target points (the next ``num_tar``); padding is in neither mask.
    """

    x: Array
    y: Array
    mask_ctx: Array
    mask_tar: Array


def bnp_prior(kernel: str = "rbf") -> GPPrior:
    r"""The task prior of the BNP 1-D suite: ``"rbf"``, ``"matern52"``, ``"periodic"`` or
    ``"student_t"`` (RBF plus Student-t noise).

    :math:`\ell \sim U(0.1, 0.6)`, output *standard deviation* :math:`s \sim U(0.1, 1)` (so the
    kernel variance :math:`s^2` is passed as the law of :math:`s^2`, a power transform of the
    uniform), noise sd 0.02, period :math:`p \sim U(0.1, 0.5)`, inputs in :math:`[-2, 2]`;
    ``student_t`` adds :math:`c\, t_{2.1}` noise with :math:`c \sim U(0, 0.15)` per task.
    """
    names = ("rbf", "matern52", "periodic", "student_t")
    if kernel not in names:
        raise ValueError(f"kernel: expected one of {names}, got {kernel!r}")
    s2 = dist.TransformedDistribution(dist.Uniform(0.1, 1.0), transforms.PowerTransform(2.0))
    kw = dict(lengthscale=dist.Uniform(0.1, 0.6), variance=s2, noise=0.02**2,
              bounds=(-2.0, 2.0))
    if kernel == "periodic":
        return GPPrior("periodic", period=dist.Uniform(0.1, 0.5), **kw)
    if kernel == "student_t":
        return GPPrior("rbf", student_t_df=2.1, student_t_scale=dist.Uniform(0.0, 0.15), **kw)
    return GPPrior(kernel, **kw)


def sample_tasks(prior, key: Array, batch_size: int, max_points: int = 50,
                 min_ctx: int = 3, min_tar: int = 3) -> Tasks:
    """Draw a padded batch: ``num_ctx ~ randint(min_ctx, max_points - min_tar)``, ``num_tar ~
    randint(min_tar, max_points - num_ctx)`` (exclusive upper bounds), shared by the batch.

    Traceable (usable inside ``jit``/``scan``); non-finite draws (a failed float32 Cholesky) are
    masked out of both sets.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    num_ctx = jax.random.randint(k1, (), min_ctx, max_points - min_tar)
    num_tar = jax.random.randint(k2, (), min_tar, max_points - num_ctx)
    with jax.default_matmul_precision("highest"):
        data = prior.sample(k3, batch_size, max_points)
    ok = jnp.all(jnp.isfinite(data.y), axis=-1, keepdims=True)
    idx = jnp.arange(max_points)
    mask_ctx = (idx < num_ctx)[None, :] & ok
    mask_tar = ((idx >= num_ctx) & (idx < num_ctx + num_tar))[None, :] & ok
    y = jnp.where(ok, data.y, 0.0)
    return Tasks(data.x, y, jnp.broadcast_to(mask_ctx, y.shape),
                 jnp.broadcast_to(mask_tar, y.shape))


def make_eval_tasks(prior, num_batches: int, batch_size: int = 16, *, seed: int = 42,
                    max_points: int = 50, chunk: int = 100) -> Tasks:
    """Fixed evaluation batches with leading axes ``(num_batches, batch_size)``.

    Batch ``i`` uses ``fold_in(key(seed), i)``, so the sets do not depend on ``chunk``.
    """
    num_batches = check_positive_int("num_batches", num_batches)
    base = jax.random.key(seed)
    fn = jax.jit(jax.vmap(lambda k: sample_tasks(prior, k, batch_size, max_points)))
    parts = []
    for start in range(0, num_batches, chunk):
        idx = jnp.arange(start, min(start + chunk, num_batches))
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
        parts.append(jax.tree.map(np.asarray, fn(keys)))
    return Tasks(*(np.concatenate(p) for p in zip(*parts, strict=True)))


# ---------------------------------------------------------------------------------------------
# Losses, evaluation, training
# ---------------------------------------------------------------------------------------------

def task_loss(model: Model, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
              num_samples: int = 4) -> Array:
    """Training loss of one task (see the module docstring for each kind)."""
    return model.loss(key, x, y, mask_ctx, mask_all, num_samples)


def batch_loss(model: Model, key: Array, tasks: Tasks, num_samples: int = 4) -> Array:
    """Mean training loss over a batch; all valid points (context and target) are targets."""
    keys = jax.random.split(key, tasks.y.shape[0])
    mask_all = tasks.mask_ctx | tasks.mask_tar
    losses = jax.vmap(lambda k, x, y, mc, ma: model.loss(k, x, y, mc, ma, num_samples))(
        keys, tasks.x, tasks.y, tasks.mask_ctx, mask_all)
    return jnp.mean(losses)


def components(model: Model, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
               num_samples: int) -> tuple[Array, Array]:
    """Mixture components ``loc, scale`` of shape ``(num_samples, m)`` for one (masked) task."""
    return model.components(key, x, y, mask, x_tar, num_samples)


@eqx.filter_jit
def evaluate(model: Model, tasks: Tasks, key: Array, num_samples: int = 50
             ) -> tuple[Array, Array]:
    r"""Per-task context and target log-likelihood per point (the BNP metric).

    :math:`l_i = \log\frac1K\sum_k N(y_i; \mu_{ik}, \sigma_{ik}^2)` at every point (the model
    conditions on the context), averaged over the context points (``ctx_ll``) and the target
    points (``tar_ll``) of each task. ``tasks`` may have any leading batch shape.
    """
    lead = tasks.y.shape[:-1]
    flat = Tasks(*(a.reshape((-1,) + a.shape[len(lead):]) for a in tasks))
    keys = jax.random.split(key, flat.y.shape[0])

    def one(k, x, y, mc, mt):
        loc, scale = model.components(k, x, y, mc, x, num_samples)
        ll = _logmeanexp(_normal_logpdf(y, loc, scale))
        return (jnp.sum(ll * mc) / jnp.maximum(jnp.sum(mc), 1),
                jnp.sum(ll * mt) / jnp.maximum(jnp.sum(mt), 1))

    c, t = jax.vmap(one)(keys, *flat)
    return c.reshape(lead), t.reshape(lead)


def train(model: Model, prior, *, key: Array, num_steps: int, batch_size: int = 100,
          learning_rate: float = 5e-4, num_samples: int = 4, max_points: int = 50,
          steps_per_call: int = 20, progress_bar: bool = True,
          checkpoint: str | pathlib.Path | None = None, checkpoint_every: int = 1000,
          max_seconds: float | None = None,
          callback: Callable[[int, float], None] | None = None) -> tuple[Model, dict]:
    r"""Train on tasks from ``prior`` with Adam and cosine decay of the learning rate to 0.

    Each dispatch runs ``steps_per_call`` steps in a ``lax.scan`` (task sampling included), so a
    GPU is not starved by Python. Steps beyond ``num_steps`` in the last dispatch are skipped.

    Parameters
    ----------
    model : CNP, NP or MPNP
        Initial model.
    prior : probkit.priors.Prior
        Task prior (e.g. :func:`bnp_prior`).
    key : Array
        PRNG key.
    num_steps, batch_size : int
        Optimiser steps and tasks per step (BNP: 100,000 and 100).
    learning_rate : float
        Peak Adam learning rate (BNP: 5e-4).
    num_samples : int
        ``K`` of the NP / MPNP losses (BNP: 4).
    checkpoint : path, optional
        Saved (:func:`save`) every ``checkpoint_every`` steps and at the end.
    max_seconds : float, optional
        Stop after the dispatch that passes this wall time (the schedule is unchanged).
    callback : callable, optional
        ``callback(step, mean_loss)`` after every dispatch.

    Returns
    -------
    model, history
        The trained model and ``{"step": [...], "loss": [...], "seconds": float,
        "steps_done": int}``.

    Examples
    --------
    >>> import jax
    >>> from probkit.models import mpnp
    >>> model = mpnp.make_model("cnp", key=jax.random.key(0), dim_hid=16)
    >>> model, hist = mpnp.train(model, mpnp.bnp_prior("rbf"), key=jax.random.key(1),
    ...                          num_steps=4, batch_size=8, steps_per_call=2, progress_bar=False)
    >>> hist["steps_done"]
    4
    """
    key = check_key("key", key)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    num_samples = check_positive_int("num_samples", num_samples)
    steps_per_call = check_positive_int("steps_per_call", steps_per_call)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)

    def one_step(carry, step):
        params, opt_state, key = carry
        key, k_data, k_loss = jax.random.split(key, 3)
        tasks = sample_tasks(prior, k_data, batch_size, max_points)

        def loss_fn(p):
            return batch_loss(eqx.combine(p, static), k_loss, tasks, num_samples)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, new_state = opt.update(grads, opt_state, params)
        new_params = eqx.apply_updates(params, updates)
        active = step < num_steps
        params, opt_state = jax.tree.map(lambda a, b: jnp.where(active, a, b),
                                         (new_params, new_state), (params, opt_state))
        return (params, opt_state, key), jnp.where(active, loss, jnp.nan)

    @jax.jit
    def run_chunk(params, opt_state, key, step0):
        steps = step0 + jnp.arange(steps_per_call)
        (params, opt_state, key), losses = jax.lax.scan(one_step, (params, opt_state, key),
                                                        steps)
        return params, opt_state, key, losses

    history = {"step": [], "loss": []}
    num_calls = -(-num_steps // steps_per_call)
    t0 = time.perf_counter()
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc=f"train {model.kind}", mininterval=1.0)
    step = 0
    next_ckpt = checkpoint_every
    for _ in range(num_calls):
        params, opt_state, key, losses = run_chunk(params, opt_state, key, jnp.asarray(step))
        done = min(steps_per_call, num_steps - step)
        step += done
        mean_loss = float(jnp.nanmean(losses))
        history["step"].append(step)
        history["loss"].append(mean_loss)
        if bar is not None:
            bar.update(done)
            bar.set_postfix(loss=f"{mean_loss:.3f}")
        if callback is not None:
            callback(step, mean_loss)
        if checkpoint is not None and step >= next_ckpt:
            save(checkpoint, eqx.combine(params, static))
            next_ckpt += checkpoint_every
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    if bar is not None:
        bar.close()
    model = eqx.combine(params, static)
    jax.block_until_ready(params)
    history["seconds"] = time.perf_counter() - t0
    history["steps_done"] = step
    if checkpoint is not None:
        save(checkpoint, model)
    return model, history


# ---------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------

def save(path: str | pathlib.Path, model: Model) -> pathlib.Path:
    """Write a JSON header line (``probkit-mpnp``, version, kind, sizes) then the leaves."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": "probkit-mpnp", "version": VERSION, "kind": model.kind,
              "config": model.config}
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(f, model)
    tmp.replace(path)
    return path


def _load_stream(f) -> Model:
    header = json.loads(f.readline().decode())
    if header.get("format") != "probkit-mpnp":
        raise ValueError(f"path: not a probkit MPNP file (header {header!r})")
    if header["version"] > VERSION:
        raise ValueError(f"path: file version {header['version']} is newer than {VERSION}")
    kind, config = header["kind"], header["config"]
    # shapes only: building the skeleton eagerly would cost one dispatch per weight
    skeleton = eqx.filter_eval_shape(lambda: make_model(kind, key=jax.random.key(0), **config))
    return eqx.tree_deserialise_leaves(f, skeleton)


def load(path: str | pathlib.Path) -> Model:
    """Load a model written by :func:`save` (bit-for-bit).

    Examples
    --------
    >>> import jax, tempfile, pathlib, equinox as eqx
    >>> from probkit.models import mpnp
    >>> m = mpnp.make_model("np", key=jax.random.key(0), dim_hid=8, dim_lat=4)
    >>> path = mpnp.save(pathlib.Path(tempfile.mkdtemp()) / "np.eqx", m)
    >>> bool(eqx.tree_equal(mpnp.load(path), m))
    True
    """
    with open(path, "rb") as f:
        return _load_stream(f)


def load_pretrained(kind: str = "mpnp") -> Model:
    """Shipped weights ``probkit/models/mpnp_weights/<kind>.eqx`` (trained on RBF tasks).

    Raises
    ------
    FileNotFoundError
        When no weights for ``kind`` ship with this installation.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    res = importlib.resources.files("probkit.models").joinpath("mpnp_weights", f"{kind}.eqx")
    if not res.is_file():
        raise FileNotFoundError(f"no shipped weights for {kind!r} ({res})")
    with res.open("rb") as f:
        return _load_stream(f)


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------

class MixturePredictive(eqx.Module):
    r"""The predictive :math:`\frac1K\sum_k \prod_j N(y_j; \mu_{kj}, \sigma_{kj}^2)` at ``m``
    points (components are joint over the points: one pseudo context or latent per component).

    Attributes
    ----------
    loc, scale : Array ``(K, m)``
    """

    loc: Array
    scale: Array

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    def log_prob(self, y: Array) -> Array:
        """Pointwise log mixture density ``(..., m)`` of ``y`` (broadcast over the ``m`` points)."""
        return _logmeanexp(_normal_logpdf(jnp.asarray(y)[..., None, :], self.loc, self.scale),
                           axis=-2)

    @property
    def mean(self) -> Array:
        return jnp.mean(self.loc, axis=0)

    @property
    def variance(self) -> Array:
        r"""Law of total variance: mean of :math:`\sigma_k^2` plus variance of :math:`\mu_k`."""
        return jnp.mean(self.scale**2, axis=0) + jnp.var(self.loc, axis=0)

    def sample(self, key: Array, num_samples: int) -> Array:
        """Joint draws ``(num_samples, m)``: a component per draw, then independent noise."""
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (num_samples,), 0, self.num_components)
        eps = jax.random.normal(k2, (num_samples, self.loc.shape[1]), self.loc.dtype)
        return self.loc[idx] + self.scale[idx] * eps


def _as_inputs(name: str, value, dim_x: int | None = None) -> np.ndarray:
    arr = as_array(name, value, ndim=(1, 2))
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty set (shape {arr.shape}); at least one point is needed")
    check_finite(name, arr)
    if dim_x is not None and arr.shape[1] != dim_x:
        raise ValueError(f"{name}: input dimension {arr.shape[1]} differs from {dim_x}")
    return arr


def _check_context(model: Model, x_ctx, y_ctx, x_tar,
                   names: tuple[str, str, str] = ("x_ctx", "y_ctx", "x_tar")
                   ) -> tuple[np.ndarray, ...]:
    nx, ny, nt = names
    x_ctx = _as_inputs(nx, x_ctx)
    y_ctx = as_array(ny, y_ctx, ndim=1)
    if y_ctx.shape[0] != x_ctx.shape[0]:
        raise ValueError(f"{ny}: {y_ctx.shape[0]} outputs for {x_ctx.shape[0]} inputs in {nx}")
    check_finite(ny, y_ctx)
    x_tar = _as_inputs(nt, x_tar, dim_x=x_ctx.shape[1])
    dim_x = model.base.dim_x if isinstance(model, MPNP) else model.dim_x
    if x_ctx.shape[1] != dim_x:
        raise ValueError(f"{nx}: input dimension {x_ctx.shape[1]}, the model expects {dim_x}")
    return x_ctx, y_ctx, x_tar


@eqx.filter_jit
def _predict_jit(model, key, x, y, mask, x_tar, num_samples):
    return MixturePredictive(*model.components(key, x, y, mask, x_tar, num_samples))


def predict(model: Model, x_ctx, y_ctx, x_tar, *, key: Array, num_samples: int = 50
            ) -> MixturePredictive:
    """Mixture predictive at ``x_tar`` ``(m, d)`` given a context ``x_ctx`` ``(n, d)``, ``y_ctx``
    ``(n,)`` (1-D inputs may be given as ``(n,)``); ``num_samples`` is ``K``.

    Raises
    ------
    ValueError
        On an empty context, NaN/inf in the context, differing input dimensions of context and
        target, or ``num_samples < 1``, naming the argument.
    """
    key = check_key("key", key)
    x_ctx, y_ctx, x_tar = _check_context(model, x_ctx, y_ctx, x_tar)
    num_samples = check_positive_int("num_samples", num_samples)
    dt = jnp.float32
    return _predict_jit(model, key, jnp.asarray(x_ctx, dt), jnp.asarray(y_ctx, dt),
                        jnp.ones(x_ctx.shape[0], bool), jnp.asarray(x_tar, dt), num_samples)


def posterior_predictive_model(pred: MixturePredictive, y: Array | None = None) -> None:
    """NumPyro model of the mixture predictive: ``component ~ Categorical(1/K)``,
    ``y ~ Normal(loc[component], scale[component])`` jointly over the ``m`` points."""
    k = numpyro.sample("component", dist.Categorical(logits=jnp.zeros(pred.num_components)))
    numpyro.sample("y", dist.Normal(pred.loc[k], pred.scale[k]).to_event(1), obs=y)


def to_inference_data(pred: MixturePredictive, *, key: Array, num_draws: int = 1000,
                      y_obs=None):
    """ArviZ data with a ``posterior_predictive`` group ``y`` (1 chain, ``num_draws`` draws);
    with ``y_obs`` also ``observed_data`` and the pointwise ``log_likelihood`` of the mixture."""
    from probkit.result import Result

    key = check_key("key", key)
    num_draws = check_positive_int("num_draws", num_draws)
    draws = np.asarray(pred.sample(key, num_draws))[None]
    kw = {}
    if y_obs is not None:
        y_obs = check_finite("y_obs", as_array("y_obs", y_obs, ndim=1))
        kw["observed_data"] = {"y": y_obs}
        kw["log_likelihood"] = {"y": np.asarray(pred.log_prob(y_obs))[None, None]}
    return Result(posterior_predictive={"y": draws}, attrs={"engine": "probkit-mpnp"},
                  **kw).to_arviz()


# ---------------------------------------------------------------------------------------------
# Bayesian-optimisation surrogate
# ---------------------------------------------------------------------------------------------

class MPNPFitted(eqx.Module):
    r"""A model conditioned on a padded context; ``posterior(x)`` gives :class:`SamplePosterior`.

    The pseudo-context draws depend on the stored ``key`` and the context only, so component
    ``k`` is the same function at every ``x``: draw ``s`` is
    :math:`\mu_{k_s}(x) + \sigma_{k_s}(x)\,\xi_s` with one :math:`\xi_s \sim N(0,1)` per draw,
    which matches the mixture's mean and variance and is smooth in ``x``.
    """

    model: Model
    x: Array
    y: Array
    mask: Array
    key: Array
    low: Array
    high: Array
    num_samples: int = eqx.field(static=True)

    def posterior(self, x: Array) -> SamplePosterior:
        xs = self.low + (self.high - self.low) * jnp.asarray(x)
        k1, k2 = jax.random.split(self.key)
        loc, scale = self.model.components(k1, self.x, self.y, self.mask, xs, self.num_samples)
        xi = jax.random.normal(k2, (self.num_samples, 1), loc.dtype)
        return SamplePosterior(loc + scale * xi)


class MPNPSurrogate:
    """BO surrogate: conditions a trained NP/MPNP on the data, no gradient training.

    Parameters
    ----------
    model : CNP, NP or MPNP, optional
        Default: :func:`load_pretrained` ``("mpnp")``.
    num_samples : int
        Mixture components ``K`` (posterior draws).
    capacity : int
        Context padding (grown in steps of ``capacity`` when exceeded; one compile per size).
    bounds : (float, float)
        BO hands inputs in the unit cube; they are mapped affinely to this box (the training
        range, default ``(-2, 2)``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.models import mpnp
    >>> model = mpnp.make_model("mpnp", key=jax.random.key(0), dim_hid=16, dim_gen=16)
    >>> sur = mpnp.MPNPSurrogate(model, num_samples=8, capacity=16)
    >>> fitted = sur.fit(jnp.array([[0.1], [0.5], [0.9]]), jnp.array([0.3, -1.0, 0.2]),
    ...                  key=jax.random.key(1))
    >>> post = fitted.posterior(jnp.linspace(0, 1, 5)[:, None])
    >>> post.mean.shape, post.sample(jax.random.key(2), 3).shape
    ((5,), (3, 5))
    """

    def __init__(self, model: Model | None = None, *, num_samples: int = 64,
                 capacity: int = 50, bounds: tuple[float, float] = (-2.0, 2.0)):
        self.model = load_pretrained("mpnp") if model is None else model
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.capacity = check_positive_int("capacity", capacity)
        self.bounds = (float(bounds[0]), float(bounds[1]))

    def fit(self, x, y, *, key: Array) -> MPNPFitted:
        key = check_key("key", key)
        dummy = np.zeros((1, np.shape(x)[-1] if np.ndim(x) == 2 else 1))
        x, y, _ = _check_context(self.model, x, y, dummy, ("x", "y", "x"))
        n = x.shape[0]
        cap = self.capacity * (-(-n // self.capacity))
        low, high = self.bounds
        xp = np.zeros((cap, x.shape[1]), np.float32)
        xp[:n] = low + (high - low) * x
        yp = np.zeros(cap, np.float32)
        yp[:n] = y
        return MPNPFitted(self.model, jnp.asarray(xp), jnp.asarray(yp),
                          jnp.arange(cap) < n, key, jnp.float32(low), jnp.float32(high),
                          self.num_samples)
