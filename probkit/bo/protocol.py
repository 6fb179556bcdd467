r"""The surrogate contract of probkit's Bayesian optimisation: the family contract.

A *surrogate* is any model family (:class:`probkit.models.base.Family`): ``fit(x, y, *, key,
progress_bar) -> Fitted``; a fitted model has ``posterior(x)``, the posterior of the latent
function at the ``q`` points ``x``, a distribution with ``mean`` ``(q,)``, ``variance`` ``(q,)`` and
``sample(key, (num_samples,)) -> (num_samples, q)``, joint over the points where the model allows
it (and ``log_expected_improvement(best)`` where a family gives it exactly). The protocols below
are structural (:class:`typing.Protocol`), so a user's own object works too.

Inputs handed to a surrogate by :class:`probkit.bo.BayesOpt` live in the unit cube and the
outputs are standardised (zero mean, unit variance), so a surrogate may use fixed priors on
that scale. BO minimises, so acquisitions read low ``mean`` as good.

**Compile once.** ``posterior`` is called inside ``jax.jit`` by the acquisition optimiser, with the
fitted object passed as an argument. A fitted object that is a JAX pytree (every probkit
``Fitted`` is an equinox Module) whose array shapes do not change as data arrive (pad to a
capacity, as :class:`probkit.models.gp.GP` does, or keep a fixed number of posterior draws) is
compiled once per shape. Any other fitted object still works, but is closed over and so
recompiled at every iteration.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.bo.protocol import Surrogate
>>> from probkit.models.gp import GP
>>> isinstance(GP(), Surrogate)
True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from jax import Array

__all__ = ["Posterior", "Fitted", "Surrogate"]


@runtime_checkable
class Posterior(Protocol):
    """Posterior of the latent function at ``q`` points."""

    @property
    def mean(self) -> Array:
        """Posterior mean, shape ``(q,)``."""
        ...

    @property
    def variance(self) -> Array:
        """Posterior marginal variance, shape ``(q,)``."""
        ...

    def sample(self, key: Array, sample_shape=()) -> Array:
        """Draws of shape ``sample_shape + (q,)``, joint over the points where supported."""
        ...


@runtime_checkable
class Fitted(Protocol):
    """A surrogate conditioned on data."""

    def posterior(self, x: Array) -> Posterior:
        """Posterior at ``x`` of shape ``(q, d)``."""
        ...


@runtime_checkable
class Surrogate(Protocol):
    """A model that can be conditioned on ``(x, y)`` data: every box-input probkit family."""

    def fit(self, x: Array, y: Array, *, key: Array, progress_bar: bool = True) -> Fitted:
        """Condition on inputs ``x`` ``(n, d)`` and outputs ``y`` ``(n,)``."""
        ...
