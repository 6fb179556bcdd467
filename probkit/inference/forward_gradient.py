r"""Reverse-mode gradients of long sequential computations, computed in forward mode.

A sampler or optimiser asks for :math:`\nabla_\theta \ell(\theta)` of a scalar
:math:`\ell` (a log-likelihood) through ``jax.grad``. For a Kalman filter over :math:`T`
steps, reverse mode stores every step's intermediates and runs a second, backward scan,
several times the cost of the filter itself on a CPU. When
:math:`\theta` has only a few entries (kernel hyperparameters), forward mode is cheaper: one
pass carries the :math:`k` directional derivatives :math:`\partial\ell/\partial\theta_i`
alongside the value (``jax.jvp`` vmapped over the :math:`k` basis directions; the value itself
is computed once), with no stored intermediates.

:func:`forward_gradient` wraps a scalar function so that ``jax.grad`` and ``jax.vjp`` of it
take that route whenever the inputs being differentiated hold at most ``max_tangents``
numbers in total; otherwise (e.g. the gradient with respect to the data ``y`` of a latent
series) it falls back to ordinary reverse mode. Inputs not being differentiated cost nothing
either way (``jax.custom_vjp`` with symbolic zeros tells which ones are).

A wrapped function supports reverse-mode differentiation (``grad``, ``vjp``,
``value_and_grad``, NUTS); forward-mode transformations of it (``jax.jvp``, ``jax.jacfwd``,
``jax.hessian``) are not available, as for any ``jax.custom_vjp`` function.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.forward_gradient import forward_gradient
>>> def loss(theta, data):
...     return jnp.sum(jnp.exp(theta[0]) * data**2 + theta[1] * data)
>>> fast = forward_gradient(loss)
>>> data = jnp.linspace(0.0, 1.0, 5)
>>> g1 = jax.grad(fast)(jnp.array([0.1, 0.2]), data)
>>> g2 = jax.grad(loss)(jnp.array([0.1, 0.2]), data)
>>> bool(jnp.allclose(g1, g2))
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.flatten_util import ravel_pytree

__all__ = ["forward_gradient", "MAX_TANGENTS"]

#: Above this many differentiated numbers reverse mode is used (forward mode's cost grows with
#: the number of tangents; reverse mode's does not).
MAX_TANGENTS = 16


class _Forward(NamedTuple):
    grads: Any  # the arguments' structure: d out / d leaf, or None where not differentiated


class _Reverse(NamedTuple):
    vjp: Any  # jax.vjp's function (a Partial) of all leaves, undifferentiated ones held constant
    skeleton: Any  # the arguments' structure with None leaves (to rebuild the cotangents)


def _is_none(x) -> bool:
    return x is None


def forward_gradient(fn: Callable[..., jax.Array], *,
                     max_tangents: int = MAX_TANGENTS) -> Callable[..., jax.Array]:
    """Wrap a scalar function of array pytrees so that its reverse-mode gradient is computed
    in forward mode when at most ``max_tangents`` numbers are differentiated.

    Parameters
    ----------
    fn : callable
        ``fn(*args) -> scalar``; every argument a pytree of arrays (bind static options with
        ``functools.partial`` first).
    max_tangents : int
        Total size of the differentiated inputs up to which forward mode is used.

    Returns
    -------
    callable
        Same values as ``fn``; ``jax.grad`` of it equals ``jax.grad(fn)`` to rounding.
    """

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def fwd(*args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        values = [p.value for p in leaves]
        perturbed = [bool(p.perturbed) for p in leaves]
        size = sum(int(jnp.size(v)) for v, p in zip(values, perturbed, strict=True) if p)
        if 0 < size <= max_tangents:
            return _forward(fn, values, perturbed, tree)
        return _reverse(fn, values, perturbed, tree)

    def bwd(res, g):
        if isinstance(g, SymbolicZero):
            g = jnp.zeros(g.aval.shape, g.aval.dtype)
        if isinstance(res, _Forward):
            return jax.tree_util.tree_map(lambda d: (g * d).astype(d.dtype), res.grads)
        structure = jax.tree_util.tree_structure(res.skeleton, is_leaf=_is_none)
        return jax.tree_util.tree_unflatten(structure, list(res.vjp(g)))

    wrapped.defvjp(fwd, bwd, symbolic_zeros=True)
    return wrapped


def _forward(fn, values, perturbed, tree):
    """Value and gradient by ``jvp`` along the basis directions of the differentiated leaves."""
    pos = [i for i, p in enumerate(perturbed) if p]
    flat, unravel = ravel_pytree([values[i] for i in pos])

    def at(z):
        vals = list(values)
        for i, v in zip(pos, unravel(z), strict=True):
            vals[i] = v
        return fn(*jax.tree_util.tree_unflatten(tree, vals))

    outs, tans = jax.vmap(lambda e: jax.jvp(at, (flat,), (e,)))(
        jnp.eye(flat.shape[0], dtype=flat.dtype))
    grads: list = [None] * len(values)
    for i, d in zip(pos, unravel(tans), strict=True):
        grads[i] = d
    return outs[0], _Forward(jax.tree_util.tree_unflatten(tree, grads))


def _reverse(fn, values, perturbed, tree):
    """Ordinary reverse mode (undifferentiated leaves held constant)."""

    def of_all(*vals):
        vals = [v if p else jax.lax.stop_gradient(v)
                for v, p in zip(vals, perturbed, strict=True)]
        return fn(*jax.tree_util.tree_unflatten(tree, vals))

    out, vjp = jax.vjp(of_all, *values)
    return out, _Reverse(vjp, jax.tree_util.tree_unflatten(tree, [None] * len(values)))
