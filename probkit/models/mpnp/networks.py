r"""The networks of the neural-process family, built from :mod:`equinox.nn`.

Every network acts on one task: a context of ``n`` points (inputs ``(n, d)``, outputs ``(n,)``)
with a boolean ``mask`` ``(n,)`` marking the real points (the rest is padding, so ``jit`` compiles
once per capacity), and ``m`` target inputs ``(m, d)``; ``jax.vmap`` it for batches.

* :class:`CNP` — conditional NP (Garnelo et al. 2018a); ``attentive=True`` gives the attentive
  CANP (Kim et al. 2019). One Gaussian :math:`p(y \mid x, Z_c) = N(\mu, \sigma^2)` per target.
* :class:`NP` — latent-variable NP with a deterministic path (Garnelo et al. 2018b).
* :class:`MPNP` — martingale-posterior NP (Lee, Yun, Nam, Fong & Lee, ICLR 2023): a
  :class:`Generator` draws pseudo contexts :math:`Z'^{(k)} = g(Z_c, \varepsilon^{(k)})`, and
  component :math:`k` of the predictive is the base CNP conditioned on :math:`Z_c \cup Z'^{(k)}`.

All heads are the Gaussian head of the Bootstrapping-NP code (Lee et al., NeurIPS 2020),
:math:`\sigma = 0.1 + 0.9\,\mathrm{softplus}(\cdot)`. ``components(key, x, y, mask, x_tar, K)``
returns the ``K`` mixture components ``loc, scale`` ``(K, m)`` of every network; ``loss`` is its
training loss on one task (see :mod:`probkit.models.mpnp.training`).

**Layers.** MLPs are :class:`equinox.nn.MLP` (``depth`` linear layers with ReLU between them,
the ``build_mlp`` of the BNP code), normalisation :class:`equinox.nn.LayerNorm`, attention
:class:`equinox.nn.MultiheadAttention` without biases. Attention is *masked*: a padded context
point gets exactly zero weight (:func:`attend`), so padding a context never changes a prediction,
and a query with no valid key gets a zero output.

**Generator (our choices; the paper's code was not available).** Pseudo points live in data
space. The context pairs are embedded by an MLP and summarised by learned inducing points that
attend to them (an ISAB, Lee et al. 2019). Each of ``num_pseudo`` noise vectors
:math:`\varepsilon_j \sim N(0, I)` is embedded and attends to that summary, then the pseudo
tokens interact through a second ISAB (the pseudo set is drawn jointly and exchangeably), and an
MLP head outputs :math:`(x'_j, y'_j)`. The pseudo set has as many active points as the context
(at most ``num_pseudo``).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.models.mpnp import make_network
>>> net = make_network("mpnp", key=jax.random.key(0), dim_hid=16, dim_gen=16)
>>> x = jnp.linspace(-1, 1, 5)[:, None]
>>> loc, scale = net.components(jax.random.key(1), x, jnp.sin(x[:, 0]), jnp.ones(5, bool),
...                             jnp.linspace(-2, 2, 7)[:, None], 3)
>>> loc.shape, bool(jnp.all(scale >= 0.1))
((3, 7), True)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from probkit._checks import check_choice, check_key, check_positive_int
from probkit.special import logmeanexp, normal_logpdf

__all__ = ["KINDS", "SIGMA_FLOOR", "mlp", "attend", "MAB", "CNP", "NP", "Generator", "MPNP",
           "Network", "NETWORKS", "make_network"]

#: Network kinds accepted by :func:`make_network`.
KINDS = ("cnp", "canp", "np", "mpnp", "mpanp")
#: Lower bound of the predictive standard deviation, as in the BNP code.
SIGMA_FLOOR = 0.1


def _identity(h: Array) -> Array:
    return h


def mlp(d_in: int, d_hid: int, d_out: int, depth: int, *, key: Array) -> eqx.nn.MLP:
    """``depth`` linear layers of width ``d_hid`` with ReLU between them (no final activation).

    (:class:`equinox.nn.MLP` counts hidden layers, so its ``depth`` is ``depth - 1``; the
    activations are module-level functions so that the network can be saved.)"""
    return eqx.nn.MLP(d_in, d_out, d_hid, depth - 1, activation=jax.nn.relu,
                      final_activation=_identity, key=key)


def _rows(layer, h: Array) -> Array:
    """Apply a layer of one vector to a vector or to every row of a matrix."""
    return layer(h) if h.ndim == 1 else jax.vmap(layer)(h)


def attend(att: eqx.nn.MultiheadAttention, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Masked attention of queries ``q`` ``(m, .)`` to keys/values ``(n, .)``.

    Keys with ``mask`` ``(n,)`` False get zero weight (equinox sets their logits to the lowest
    float before the softmax); if no key is valid, the output is zero (not an average of
    padding), so an empty context contributes nothing."""
    full = jnp.broadcast_to(mask[None, :], (q.shape[0], k.shape[0]))
    return jnp.where(jnp.any(mask), att(q, k, v, mask=full), 0.0)


class MAB(eqx.Module):
    """Multihead attention block of the Set Transformer: ``LN(H + FF(H))``, ``H = LN(Q + Att)``."""

    att: eqx.nn.MultiheadAttention
    ff: eqx.nn.MLP
    ln1: eqx.nn.LayerNorm
    ln2: eqx.nn.LayerNorm

    def __init__(self, dim: int, num_heads: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.att = eqx.nn.MultiheadAttention(num_heads, dim, key=k1)
        self.ff = mlp(dim, dim, dim, 2, key=k2)
        self.ln1 = eqx.nn.LayerNorm(dim)
        self.ln2 = eqx.nn.LayerNorm(dim)

    def __call__(self, q: Array, kv: Array, mask: Array) -> Array:
        h = _rows(self.ln1, q + attend(self.att, q, kv, kv, mask))
        return _rows(self.ln2, h + _rows(self.ff, h))


def _masked_mean(h: Array, mask: Array) -> Array:
    w = mask.astype(h.dtype)
    return jnp.sum(h * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1.0)


def _pairs(x: Array, y: Array) -> Array:
    return jnp.concatenate([x, y[:, None]], axis=-1)


def _head(out: Array) -> tuple[Array, Array]:
    return out[..., 0], SIGMA_FLOOR + (1.0 - SIGMA_FLOOR) * jax.nn.softplus(out[..., 1])


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------

class DetEncoder(eqx.Module):
    r"""Mean-pooled deterministic encoder :math:`r = \rho(\frac1n\sum_i \phi(x_i, y_i))`."""

    pre: eqx.nn.MLP
    post: eqx.nn.MLP

    def __init__(self, dim_x: int, dim_hid: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.pre = mlp(dim_x + 1, dim_hid, dim_hid, 4, key=k1)
        self.post = mlp(dim_hid, dim_hid, dim_hid, 2, key=k2)

    def __call__(self, x: Array, y: Array, mask: Array, x_tar: Array) -> Array:
        r = self.post(_masked_mean(_rows(self.pre, _pairs(x, y)), mask))
        return jnp.broadcast_to(r, (x_tar.shape[0], r.shape[0]))


class AttnEncoder(eqx.Module):
    """Attentive encoder of the CANP: self-attention over the context values, then
    cross-attention from the targets (queries and keys from an MLP of the inputs)."""

    v: eqx.nn.MLP
    qk: eqx.nn.MLP
    self_att: MAB
    cross: eqx.nn.MultiheadAttention

    def __init__(self, dim_x: int, dim_hid: int, num_heads: int = 8, *, key: Array):
        ks = jax.random.split(key, 4)
        self.v = mlp(dim_x + 1, dim_hid, dim_hid, 4, key=ks[0])
        self.qk = mlp(dim_x, dim_hid, dim_hid, 2, key=ks[1])
        self.self_att = MAB(dim_hid, num_heads, key=ks[2])
        self.cross = eqx.nn.MultiheadAttention(num_heads, dim_hid, key=ks[3])

    def __call__(self, x: Array, y: Array, mask: Array, x_tar: Array) -> Array:
        v = _rows(self.v, _pairs(x, y))
        v = self.self_att(v, v, mask)
        return attend(self.cross, _rows(self.qk, x_tar), _rows(self.qk, x), v, mask)


class LatEncoder(eqx.Module):
    r"""Latent path of the NP:
    :math:`q(z \mid Z) = N(\mu, \mathrm{diag}(0.1 + 0.9\,\mathrm{sigmoid}(\cdot))^2)`."""

    pre: eqx.nn.MLP
    post: eqx.nn.MLP

    def __init__(self, dim_x: int, dim_hid: int, dim_lat: int, *, key: Array):
        k1, k2 = jax.random.split(key)
        self.pre = mlp(dim_x + 1, dim_hid, dim_hid, 4, key=k1)
        self.post = mlp(dim_hid, dim_hid, 2 * dim_lat, 2, key=k2)

    def __call__(self, x: Array, y: Array, mask: Array) -> tuple[Array, Array]:
        out = self.post(_masked_mean(_rows(self.pre, _pairs(x, y)), mask))
        mu, raw = jnp.split(out, 2)
        return mu, 0.1 + 0.9 * jax.nn.sigmoid(raw)


# ---------------------------------------------------------------------------------------------
# Networks
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
    decoder: eqx.nn.MLP
    dim_x: int = eqx.field(static=True)
    dim_hid: int = eqx.field(static=True)
    attentive: bool = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim_hid: int = 128, attentive: bool = False, *,
                 key: Array):
        k1, k2 = jax.random.split(key)
        self.encoder = (AttnEncoder(dim_x, dim_hid, key=k1) if attentive
                        else DetEncoder(dim_x, dim_hid, key=k1))
        self.decoder = mlp(dim_x + dim_hid, dim_hid, 2, 3, key=k2)
        self.dim_x, self.dim_hid, self.attentive = dim_x, dim_hid, attentive

    @property
    def kind(self) -> str:
        return "canp" if self.attentive else "cnp"

    def gaussian(self, x: Array, y: Array, mask: Array, x_tar: Array) -> tuple[Array, Array]:
        """Predictive mean and standard deviation ``(m,)`` at ``x_tar`` given a masked set."""
        r = self.encoder(x, y, mask, x_tar)
        return _head(_rows(self.decoder, jnp.concatenate([x_tar, r], axis=-1)))

    def components(self, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
                   num_samples: int) -> tuple[Array, Array]:
        loc, scale = self.gaussian(x, y, mask, x_tar)
        shape = (num_samples, x_tar.shape[0])
        return jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape)

    def loss(self, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
             num_samples: int) -> Array:
        """Negative log-likelihood per valid point of all points given the context."""
        loc, scale = self.gaussian(x, y, mask_ctx, x)
        ll = normal_logpdf(y, loc, scale)
        return -jnp.sum(ll * mask_all) / jnp.maximum(jnp.sum(mask_all), 1.0)


class NP(eqx.Module):
    r"""Latent-variable NP with a deterministic path (the ``NP`` of the BNP code).

    :math:`p(y \mid x, Z_c) = \int N(y; d(x, r, z)) \, p(z \mid Z_c)\, dz`; trained with the
    importance-weighted bound :math:`\log \frac1K\sum_k p(y_t \mid z_k) p(z_k \mid Z_c) /
    q(z_k \mid Z_t)`, :math:`z_k \sim q(z \mid Z_t)`, divided by the number of points.
    Component ``k`` of the predictive is the decoder at one draw :math:`z_k \sim p(z \mid Z_c)`.
    """

    det: DetEncoder
    lat: LatEncoder
    decoder: eqx.nn.MLP
    dim_x: int = eqx.field(static=True)
    dim_hid: int = eqx.field(static=True)
    dim_lat: int = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim_hid: int = 128, dim_lat: int = 128, *, key: Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.det = DetEncoder(dim_x, dim_hid, key=k1)
        self.lat = LatEncoder(dim_x, dim_hid, dim_lat, key=k2)
        self.decoder = mlp(dim_x + dim_hid + dim_lat, dim_hid, 2, 3, key=k3)
        self.dim_x, self.dim_hid, self.dim_lat = dim_x, dim_hid, dim_lat

    @property
    def kind(self) -> str:
        return "np"

    def _decode(self, r: Array, z: Array, x_tar: Array) -> tuple[Array, Array]:
        zz = jnp.broadcast_to(z, (x_tar.shape[0], z.shape[-1]))
        return _head(_rows(self.decoder, jnp.concatenate([x_tar, r, zz], axis=-1)))

    def components(self, key: Array, x: Array, y: Array, mask: Array, x_tar: Array,
                   num_samples: int) -> tuple[Array, Array]:
        r = self.det(x, y, mask, x_tar)
        mu, sd = self.lat(x, y, mask)
        z = mu + sd * jax.random.normal(key, (num_samples, mu.shape[0]), mu.dtype)
        return jax.vmap(lambda zk: self._decode(r, zk, x_tar))(z)

    def loss(self, key: Array, x: Array, y: Array, mask_ctx: Array, mask_all: Array,
             num_samples: int) -> Array:
        """Negative importance-weighted bound per valid point."""
        r = self.det(x, y, mask_ctx, x)
        pm, ps = self.lat(x, y, mask_ctx)
        qm, qs = self.lat(x, y, mask_all)
        z = qm + qs * jax.random.normal(key, (num_samples, qm.shape[0]), qm.dtype)
        loc, scale = jax.vmap(lambda zk: self._decode(r, zk, x))(z)
        recon = jnp.sum(normal_logpdf(y, loc, scale) * mask_all, axis=-1)
        log_w = (recon + jnp.sum(normal_logpdf(z, pm, ps), -1)
                 - jnp.sum(normal_logpdf(z, qm, qs), -1))
        return -logmeanexp(log_w) / jnp.maximum(jnp.sum(mask_all), 1.0)


class Generator(eqx.Module):
    r"""Exchangeable pseudo-context generator :math:`Z' = g(Z_c, \varepsilon)` (module notes).

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
    num_heads : int
        Attention heads.
    """

    embed: eqx.nn.MLP
    inducing_ctx: Array
    summarise: MAB
    noise_in: eqx.nn.MLP
    condition: MAB
    inducing_pseudo: Array
    isab_in: MAB
    isab_out: MAB
    head: eqx.nn.MLP
    num_pseudo: int = eqx.field(static=True)
    dim_noise: int = eqx.field(static=True)

    def __init__(self, dim_x: int = 1, dim: int = 64, num_pseudo: int = 50,
                 num_inducing: int = 16, dim_noise: int = 8, num_heads: int = 4, *,
                 key: Array):
        ks = jax.random.split(key, 9)
        self.embed = mlp(dim_x + 1, dim, dim, 2, key=ks[0])
        self.inducing_ctx = 0.1 * jax.random.normal(ks[1], (num_inducing, dim))
        self.summarise = MAB(dim, num_heads, key=ks[2])
        self.noise_in = mlp(dim_noise, dim, dim, 2, key=ks[3])
        self.condition = MAB(dim, num_heads, key=ks[4])
        self.inducing_pseudo = 0.1 * jax.random.normal(ks[5], (num_inducing, dim))
        self.isab_in = MAB(dim, num_heads, key=ks[6])
        self.isab_out = MAB(dim, num_heads, key=ks[7])
        self.head = mlp(dim, dim, dim_x + 1, 2, key=ks[8])
        self.num_pseudo, self.dim_noise = num_pseudo, dim_noise

    def __call__(self, key: Array, x: Array, y: Array, mask: Array
                 ) -> tuple[Array, Array, Array]:
        """Pseudo inputs ``(M, d)``, outputs ``(M,)`` and mask ``(M,)`` (first ``n_c`` active)."""
        summary = self.summarise(self.inducing_ctx, _rows(self.embed, _pairs(x, y)), mask)
        eps = jax.random.normal(key, (self.num_pseudo, self.dim_noise), summary.dtype)
        everything = jnp.ones(summary.shape[0], bool)
        tokens = self.condition(_rows(self.noise_in, eps), summary, everything)
        pmask = jnp.arange(self.num_pseudo) < jnp.sum(mask)
        h = self.isab_in(self.inducing_pseudo, tokens, pmask)
        tokens = self.isab_out(tokens, h, jnp.ones(h.shape[0], bool))
        out = _rows(self.head, tokens)
        return out[:, :-1], out[:, -1], pmask


class MPNP(eqx.Module):
    r"""Martingale-posterior NP on a CNP (``attentive=False``) or CANP (``attentive=True``) base.

    Predictive :math:`\frac1K\sum_k N(y; \mu_k(x), \sigma_k(x)^2)`, :math:`(\mu_k, \sigma_k) =
    \mathrm{base}(x; Z_c \cup g(Z_c, \varepsilon^{(k)}))`. ``num_pseudo=0`` means no generator:
    the network is then exactly its base (a test checks it).

    Parameters
    ----------
    dim_x, dim_hid : int
        Base network sizes (as :class:`CNP`).
    attentive : bool
        Attentive base (MPANP).
    dim_gen, num_pseudo, num_inducing, dim_noise : int
        Generator sizes (:class:`Generator`).
    loss_weights : tuple of 3 floats
        Weights of the marginal, amortised and pseudo-only loss terms (default ``(1, 1, 1)``;
        :mod:`probkit.models.mpnp.training`).
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
    def dim_x(self) -> int:
        return self.base.dim_x

    @property
    def num_pseudo(self) -> int:
        return 0 if self.generator is None else self.generator.num_pseudo

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
        """Weighted marginal + amortised + pseudo-only negative log-likelihood per point."""
        n = jnp.maximum(jnp.sum(mask_all), 1.0)
        w_marg, w_amort, w_pseudo = self.loss_weights
        loc, scale = self.base.gaussian(x, y, mask_ctx, x)
        amort = -jnp.sum(normal_logpdf(y, loc, scale) * mask_all) / n
        if self.generator is None:
            return (w_marg + w_amort) * amort
        keys = jax.random.split(key, num_samples)

        def joint_ll(k):  # one pseudo draw, used with and without the real context
            xp, yp, mp = self.pseudo(k, x, y, mask_ctx)
            xa, ya = jnp.concatenate([x, xp]), jnp.concatenate([y, yp])
            out = []
            for m_real in (mask_ctx, jnp.zeros_like(mask_ctx)):
                loc, scale = self.base.gaussian(xa, ya, jnp.concatenate([m_real, mp]), x)
                out.append(jnp.sum(normal_logpdf(y, loc, scale) * mask_all))
            return jnp.stack(out)

        ll = jax.vmap(joint_ll)(keys)
        marg = -logmeanexp(ll[:, 0]) / n
        pseudo = -logmeanexp(ll[:, 1]) / n
        return w_marg * marg + w_amort * amort + w_pseudo * pseudo


Network = CNP | NP | MPNP
#: The network classes (for ``isinstance`` checks).
NETWORKS = (CNP, NP, MPNP)


def make_network(kind: str, *, key: Array, dim_x: int = 1, dim_hid: int = 128,
                 dim_lat: int = 128, **generator_kwargs) -> Network:
    """Build a network by name: ``"cnp"``, ``"canp"``, ``"np"``, ``"mpnp"`` or ``"mpanp"``.

    ``dim_lat`` is the NP's latent size; ``generator_kwargs`` (``dim_gen``, ``num_pseudo``,
    ``num_inducing``, ``dim_noise``, ``loss_weights``) go to :class:`MPNP`.
    """
    check_choice("kind", kind, KINDS)
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
