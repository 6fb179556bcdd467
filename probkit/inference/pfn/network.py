r"""The PFN transformer: a set-to-set encoder whose queries attend to the training set only.

Tokens (Müller et al., ICLR 2022, Sec. 4): a training token is :math:`W_x x_i + W_y y_i`, a query
token :math:`W_x x_q`; no positional encoding, so the output is invariant to the order of the
training set. Attention mask: every position (training token or query) attends to the training
tokens and to itself; queries never see each other, so each query's prediction depends on the
training set and its own ``x`` only. (The paper's code ORs the identity into the query mask; the
maintained ``PFNs`` code omits it. We keep it: with an empty training set a query then still has
one key, and the prediction is the prior predictive at ``x``.)

Layers are pre-LayerNorm (the paper uses post-LN; pre-LN trains more stably at the small sizes a
CPU allows), GELU feed-forward blocks of width ``ff_factor * emsize``, and the output projections
of attention and of the feed-forward blocks start at zero, so every residual block starts as the
identity. The decoder ``Linear -> GELU -> Linear`` gives ``num_buckets`` logits of a bar
distribution (:mod:`probkit.inference.pfn.bar`) per position.

Inputs of dimension ``d < max_input_dim`` are zero-padded and the input encoder's output is
scaled by ``max_input_dim / d`` (as in PFNs4BO), so one network serves every ``d`` up to its
maximum. The training-set size is a traced integer: one compiled program serves every size.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["Transformer", "attention_mask"]


def attention_mask(num_train: Array, capacity: int, num_queries: int) -> Array:
    """Boolean ``(T, T)`` mask of the whole sequence, ``T = capacity + num_queries``: row ``i``
    may attend to column ``j`` iff ``j`` is a real training token (``j < num_train``) or
    ``j == i``."""
    t = capacity + num_queries
    cols = jnp.arange(t)
    return (cols[None, :] < num_train) | (cols[None, :] == cols[:, None])


class _Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    ff1: eqx.nn.Linear
    ff2: eqx.nn.Linear

    def __init__(self, emsize: int, num_heads: int, ff_factor: int, *, key: Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(emsize)
        attn = eqx.nn.MultiheadAttention(num_heads, emsize, key=k1)
        self.attn = eqx.tree_at(lambda a: a.output_proj.weight, attn,
                                jnp.zeros_like(attn.output_proj.weight))
        self.norm2 = eqx.nn.LayerNorm(emsize)
        self.ff1 = eqx.nn.Linear(emsize, ff_factor * emsize, key=k2)
        ff2 = eqx.nn.Linear(ff_factor * emsize, emsize, key=k3)
        self.ff2 = eqx.tree_at(lambda lin: (lin.weight, lin.bias), ff2,
                               (jnp.zeros_like(ff2.weight), jnp.zeros_like(ff2.bias)))

    def __call__(self, h: Array, context: Array, mask: Array) -> tuple[Array, Array]:
        """One pre-LN block for tokens ``h`` attending to ``[context; own normed states]``.

        ``context`` holds the normalised states of the training tokens at this layer; returns
        the new ``h`` and this layer's normalised states of ``h`` (the next context)."""
        z = jax.vmap(self.norm1)(h)
        kv = jnp.concatenate([context, z])
        h = h + self.attn(z, kv, kv, mask=mask)
        u = jax.vmap(self.norm2)(h)
        return h + jax.vmap(self.ff2)(jax.nn.gelu(jax.vmap(self.ff1)(u))), z


class Transformer(eqx.Module):
    """The PFN network for one dataset (vmap it over a batch).

    Parameters
    ----------
    max_input_dim : int
        Largest input dimension served (smaller ones are zero-padded).
    num_buckets : int
        Number of logits per position (bar-distribution buckets).
    emsize, num_layers, num_heads, ff_factor : int
        Width, depth, heads and feed-forward expansion.
    key : Array
        PRNG key for the initialisation.
    """

    enc_x: eqx.nn.Linear
    enc_y: eqx.nn.Linear
    blocks: tuple[_Block, ...]
    norm: eqx.nn.LayerNorm
    dec1: eqx.nn.Linear
    dec2: eqx.nn.Linear
    max_input_dim: int = eqx.field(static=True)

    def __init__(self, max_input_dim: int, num_buckets: int, *, emsize: int = 128,
                 num_layers: int = 4, num_heads: int = 4, ff_factor: int = 2, key: Array):
        keys = jax.random.split(key, num_layers + 4)
        self.max_input_dim = max_input_dim
        self.enc_x = eqx.nn.Linear(max_input_dim, emsize, key=keys[0])
        self.enc_y = eqx.nn.Linear("scalar", emsize, key=keys[1])
        self.blocks = tuple(_Block(emsize, num_heads, ff_factor, key=k) for k in keys[4:])
        self.norm = eqx.nn.LayerNorm(emsize)
        self.dec1 = eqx.nn.Linear(emsize, ff_factor * emsize, key=keys[2])
        self.dec2 = eqx.nn.Linear(ff_factor * emsize, num_buckets, key=keys[3])

    def _embed_x(self, x: Array, input_dim: Array) -> Array:
        return jax.vmap(self.enc_x)(x) * (self.max_input_dim / input_dim)

    def encode_train(self, x_train: Array, y_train: Array, num_train: Array,
                     input_dim: Array) -> Array:
        """The training tokens' normalised states at every layer, ``(layers, capacity, emsize)``.

        Training tokens attend only to training tokens, so these states do not depend on any
        query: computed once, they serve any number of query batches (:meth:`decode`).

        Parameters
        ----------
        x_train : Array
            ``(capacity, max_input_dim)``; rows ``>= num_train`` are padding (ignored).
        y_train : Array
            ``(capacity,)``.
        num_train : Array
            Integer scalar: how many leading rows are real.
        input_dim : Array
            Integer scalar: how many leading input columns are real (the rest must be zero).
        """
        capacity = x_train.shape[0]
        h = self._embed_x(x_train, input_dim) + jax.vmap(self.enc_y)(y_train)
        mask = attention_mask(num_train, capacity, 0)
        empty = jnp.zeros((0, h.shape[1]), h.dtype)
        states = []
        for block in self.blocks:
            h, z = block(h, empty, mask)
            states.append(z)
        return jnp.stack(states)

    def decode(self, states: Array, num_train: Array, x_query: Array,
               input_dim: Array) -> Array:
        """Logits ``(num_queries, num_buckets)`` of queries ``x_query``
        ``(num_queries, max_input_dim)`` given the training states of :meth:`encode_train`."""
        capacity, q = states.shape[1], x_query.shape[0]
        h = self._embed_x(x_query, input_dim)
        mask = attention_mask(num_train, capacity, q)[capacity:]
        for block, context in zip(self.blocks, states, strict=True):
            h, _ = block(h, context, mask)
        h = jax.vmap(self.norm)(h)
        return jax.vmap(lambda z: self.dec2(jax.nn.gelu(self.dec1(z))))(h)

    def __call__(self, x_train: Array, y_train: Array, num_train: Array, x_query: Array,
                 input_dim: Array) -> Array:
        """Logits ``(num_queries, num_buckets)``: :meth:`decode` after :meth:`encode_train`."""
        states = self.encode_train(x_train, y_train, num_train, input_dim)
        return self.decode(states, num_train, x_query, input_dim)
