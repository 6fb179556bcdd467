r"""Stochastic-gradient HMC with Springenberg's adaptive preconditioner, inside ``lax.scan``.

The transition is BlackJAX's SGHMC diffusion (Chen et al. 2014, in the parameterisation of
Ma et al. 2015) with step size :math:`h` and friction :math:`\alpha`,

.. math::

    z_{t+1} = z_t + h p_t, \qquad
    p_{t+1} = (1 - \alpha h) p_t + h \nabla_z \widetilde{\log \pi}(z_t) + \sqrt{2\alpha h}\,\xi_t,

run on preconditioned coordinates :math:`z = \theta / s` with a diagonal scale
:math:`s = \hat v^{-1/4}`, i.e. a mass matrix :math:`M = \mathrm{diag}(\hat v^{1/2})`. During
burn-in :math:`\hat v` tracks the squared stochastic gradient with Springenberg et al.'s (2016)
adaptive window (:func:`adapt_update`):

.. math::

    r = 1/(\tau + 1),\quad \tau \leftarrow \tau + 1 - \tau \hat g^2/\hat v,\quad
    \hat g \leftarrow (1 - r)\hat g + r g,\quad \hat v \leftarrow (1 - r)\hat v + r g^2.

After burn-in the preconditioner is frozen, so the kept draws come from SGHMC with a constant
mass matrix. With :math:`h` = ``lr`` and :math:`\alpha h` = ``mdecay`` this is the adaptive SGHMC
of Springenberg et al. (BOHAMIANN), which Tran et al. (2022) use, up to its :math:`-h^4`
noise correction (BlackJAX's ``beta = 0``). The whole chain -- burn-in, thinning, optional Gibbs
updates of auxiliary variables (hierarchical prior variances) -- is one ``lax.scan``; chains are
``vmap``-ed by the caller.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.models.fbnn import sghmc_sample
>>> grad = lambda th, aux, k: -th                      # standard normal target
>>> th, _ = sghmc_sample(jax.random.key(0), jnp.zeros(2), jnp.zeros(()), grad,
...                      num_burnin=100, num_samples=50, thinning=10, step_size=0.1)
>>> th.shape
(50, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.sgmcmc.diffusions import sghmc as sghmc_diffusion
from jax import Array

__all__ = ["AdaptState", "SGHMCState", "adapt_init", "adapt_update", "sghmc_sample"]


class AdaptState(NamedTuple):
    """Springenberg's running estimates: window ``tau``, mean ``g`` and mean square ``v``."""

    tau: Array
    g: Array
    v: Array


class SGHMCState(NamedTuple):
    """One chain: position ``theta``, momentum ``p`` (preconditioned), ``aux``, adaptation."""

    theta: Array
    p: Array
    aux: Any
    adapt: AdaptState
    step: Array


def adapt_init(theta: Array) -> AdaptState:
    """``tau = g = v = 1`` as in Springenberg et al. (2016)."""
    one = jnp.ones_like(theta)
    return AdaptState(one, one, one)


def adapt_update(state: AdaptState, grad: Array) -> AdaptState:
    """One step of the adaptive-window estimate of the gradient's mean square."""
    r = 1.0 / (state.tau + 1.0)
    tau = state.tau + 1.0 - state.tau * state.g**2 / state.v
    g = (1.0 - r) * state.g + r * grad
    v = (1.0 - r) * state.v + r * grad**2
    return AdaptState(tau, g, v)


def sghmc_sample(key: Array, theta0: Array, aux0, grad_fn: Callable, *, num_burnin: int,
                 num_samples: int, thinning: int, step_size: float = 0.01,
                 mdecay: float = 0.01, adapt: bool = True,
                 gibbs_fn: Callable | None = None, gibbs_every: int = 20):
    r"""Run one SGHMC chain and return ``num_samples`` thinned draws.

    Parameters
    ----------
    key : PRNG key
    theta0 : array of shape (P,)
        Initial position (flat).
    aux0 : pytree
        Auxiliary state passed to ``grad_fn`` and updated by ``gibbs_fn``.
    grad_fn : callable
        ``grad_fn(theta, aux, key) -> (P,)``, an unbiased estimate of
        :math:`\nabla_\theta \log \pi(\theta \mid \mathrm{aux})` (e.g. from a minibatch).
    num_burnin, num_samples, thinning : int
        Burn-in steps, kept draws and steps between kept draws.
    step_size, mdecay : float
        :math:`h` and :math:`\alpha h` (``lr`` and ``mdecay`` of Springenberg et al.).
    adapt : bool
        Adapt the preconditioner during burn-in (otherwise :math:`s = 1`: plain SGHMC).
    gibbs_fn : callable, optional
        ``gibbs_fn(key, theta, aux) -> aux``, applied every ``gibbs_every`` steps.

    Returns
    -------
    (theta_draws, aux_draws)
        Arrays with a leading ``(num_samples,)`` axis.
    """
    integrator = sghmc_diffusion(alpha=mdecay / step_size, beta=0.0)

    def step(state: SGHMCState, k, adapting: bool):
        k_g, k_int, k_gibbs = jax.random.split(k, 3)
        g = grad_fn(state.theta, state.aux, k_g)
        ad = adapt_update(state.adapt, g) if adapting else state.adapt
        s = ad.v ** -0.25 if adapt else jnp.ones_like(state.theta)
        z, p = integrator(k_int, state.theta / s, state.p, g * s, step_size)
        theta = z * s
        aux = state.aux
        if gibbs_fn is not None:
            aux = jax.lax.cond(state.step % gibbs_every == 0,
                               lambda: gibbs_fn(k_gibbs, theta, state.aux), lambda: state.aux)
        return SGHMCState(theta, p, aux, ad, state.step + 1), None

    k_burn, k_keep = jax.random.split(key)
    state = SGHMCState(theta0, jnp.zeros_like(theta0), aux0, adapt_init(theta0),
                       jnp.zeros((), jnp.int32))
    if num_burnin > 0:
        state, _ = jax.lax.scan(lambda s, k: step(s, k, True), state,
                                jax.random.split(k_burn, num_burnin))

    def keep(state, k):
        state, _ = jax.lax.scan(lambda s, kk: step(s, kk, False), state,
                                jax.random.split(k, thinning))
        return state, (state.theta, state.aux)

    _, (thetas, auxs) = jax.lax.scan(keep, state, jax.random.split(k_keep, num_samples))
    return thetas, auxs
