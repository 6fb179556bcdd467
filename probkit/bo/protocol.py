r"""The surrogate contract of probkit's Bayesian optimisation, and two ready posteriors.

A *surrogate* is anything with ``fit(x, y, *, key) -> Fitted``; a *fitted* surrogate has
``posterior(x) -> Posterior``; a *posterior* over the latent function at the ``q`` points ``x``
has ``mean`` ``(q,)``, ``variance`` ``(q,)`` and ``sample(key, num_samples) -> (num_samples, q)``,
joint over the ``q`` points where the model allows it. The protocols are structural
(:class:`typing.Protocol`): a model family implements them without importing this module.

Inputs handed to a surrogate by :class:`probkit.bo.BayesOpt` live in the unit cube and the
outputs are standardised (zero mean, unit variance), so a surrogate may use fixed priors on
that scale. BO minimises, so acquisitions read low ``mean`` as good.

**Compile once.** ``posterior`` is called inside ``jax.jit`` by the acquisition optimiser, with the
fitted object passed as an argument. A fitted object that is a JAX pytree (an
:class:`equinox.Module`, a ``NamedTuple`` of arrays) whose array shapes do not change as data
arrive (pad to a capacity, as :class:`probkit.bo.gp.GP` does, or keep a fixed number of posterior
draws, as :class:`probkit.bo.surrogates.NumPyroSurrogate` does) is compiled once per shape. Any
other fitted object still works, but is closed over and so recompiled at every iteration.

Two ready posteriors, defined in :mod:`probkit.posterior` (so that model families can return
them without importing ``bo``) and re-exported here: :class:`GaussianPosterior` (a joint
Gaussian) and :class:`SamplePosterior` (an ensemble of joint function draws).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.bo.protocol import GaussianPosterior
>>> post = GaussianPosterior(jnp.zeros(2), jnp.eye(2))
>>> post.sample(jax.random.key(0), 5).shape
(5, 2)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from jax import Array

from probkit.posterior import GaussianPosterior, SamplePosterior

__all__ = ["Posterior", "Fitted", "Surrogate", "GaussianPosterior", "SamplePosterior"]


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

    def sample(self, key: Array, num_samples: int) -> Array:
        """Draws of shape ``(num_samples, q)``, joint over the points where supported."""
        ...


@runtime_checkable
class Fitted(Protocol):
    """A surrogate conditioned on data."""

    def posterior(self, x: Array) -> Posterior:
        """Posterior at ``x`` of shape ``(q, d)``."""
        ...


@runtime_checkable
class Surrogate(Protocol):
    """A model that can be conditioned on ``(x, y)`` data.

    Implementations in probkit: :class:`probkit.bo.gp.GP` (exact GP),
    :class:`probkit.bo.surrogates.NumPyroSurrogate` (any NumPyro regression model through the
    HMC engine) and, when that family is present, the Student-t NNGP adapter. A new family (a
    PFN, a BNN) plugs in by returning a :class:`GaussianPosterior` or :class:`SamplePosterior`
    from its fitted object's ``posterior``.
    """

    def fit(self, x: Array, y: Array, *, key: Array) -> Fitted:
        """Condition on inputs ``x`` ``(n, d)`` and outputs ``y`` ``(n,)``."""
        ...
