r"""The four BlackJAX samplers of the HMC engine, as pure functions of one chain.

Each sampler warms up with BlackJAX's own tuning and then draws; the one entry point is
:func:`sample_chain` (jittable, vmappable, any log density on an unconstrained pytree).

``"nuts"``
    Multinomial, iterative No-U-Turn sampler (Hoffman & Gelman 2014; Betancourt 2017) with
    Stan's windowed adaptation: a fast window adapting the step size by dual averaging towards
    ``target_accept``, slow windows doubling in size that estimate the inverse mass matrix
    :math:`M^{-1} \approx \mathrm{Cov}[z]` (regularised towards :math:`10^{-3} I`), and a
    final fast window.
``"hmc"``
    Static-trajectory HMC (Neal 2011): ``num_integration_steps`` leapfrog steps per
    transition and a Metropolis correction, tuned by the same window adaptation.
``"mams"``
    Metropolis-adjusted microcanonical sampler (Robnik, Cohn-Gordon & Seljak 2025,
    arXiv:2503.01707): isokinetic dynamics, a McLachlan integrator, a random number of steps
    per proposal around :math:`L/\epsilon`, and a Metropolis correction, tuned by
    ``blackjax.adjusted_mclmc_find_L_and_step_size`` (dual averaging of :math:`\epsilon`
    towards ``target_accept``, then a diagonal preconditioner and :math:`L` from the
    warm-up's variance).
``"mclmc"``
    Unadjusted microcanonical Langevin Monte Carlo (Robnik et al. 2023, arXiv:2212.08549):
    one isokinetic McLachlan step with partial momentum refreshment per draw and **no**
    Metropolis correction, so its draws carry a step-size bias that the tuning keeps small
    (energy error variance per dimension ``desired_energy_var``), tuned by
    ``blackjax.mclmc_find_L_and_step_size``.

Both microcanonical samplers need at least two latent dimensions.

Every sampler records ``n_grad``, the gradient evaluations spent on each kept draw (the
McLachlan integrator of MAMS and MCLMC costs two per step, leapfrog one), so ESS per
gradient can be compared across samplers.

``pathfinder=True`` starts each chain from Pathfinder (Zhang, Carpenter, Gelman & Vehtari
2022, JMLR 23(306), arXiv:2108.03782): an L-BFGS path from the initial point, a normal
approximation at every iterate from the L-BFGS inverse-Hessian factors, and the iterate whose
approximation has the largest ELBO; the chain starts from a draw of that approximation and
NUTS/HMC start their warm-up from its inverse Hessian :math:`\operatorname{diag}(\alpha) +
\beta\gamma\beta^\top` (its diagonal unless ``dense_mass``) instead of the identity
(:func:`pathfinder_start`; BlackJAX's ``blackjax.vi.pathfinder``).

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.samplers import sample_chain
>>> def logdensity(z):
...     return -0.5 * jnp.sum(z ** 2)
>>> draws, tuned = sample_chain(jax.random.key(0), jnp.zeros(3), logdensity,
...                             sampler="mams", num_warmup=300, num_samples=500)
>>> draws.position.shape, sorted(draws.stats)[:3]
((500, 3), ['acceptance_rate', 'diverging', 'energy'])
>>> bool(abs(float(draws.position.var()) - 1.0) < 0.3)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.adjusted_mclmc_adaptation import adjusted_mclmc_find_L_and_step_size
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.mclmc_adaptation import MCLMCAdaptationState, mclmc_find_L_and_step_size
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc import adjusted_mclmc_dynamic, mclmc
from blackjax.mcmc.integrators import isokinetic_mclachlan
from blackjax.util import pytree_size
from blackjax.vi import pathfinder as _pathfinder
from jax.flatten_util import ravel_pytree

from probkit._checks import check_positive_int
from probkit.inference.progress import progress_tick

__all__ = [
    "SAMPLERS",
    "AdaptationState",
    "ChainDraws",
    "SamplerOptions",
    "Tuned",
    "check_dimension",
    "metropolis_stats",
    "metropolis_transition",
    "pathfinder_start",
    "sample_chain",
    "sampler_options",
    "transition",
    "warmup",
    "warmup_schedule",
    "window_adaptation_init",
    "windowed_transition",
    "window_adaptation_update",
]

SAMPLERS = ("nuts", "hmc", "mams", "mclmc")

# Gradient evaluations per integrator step: McLachlan's two-stage scheme evaluates the
# gradient twice per step (the last of a step is the first of the next), leapfrog once.
_GRADS_PER_STEP = {"nuts": 1, "hmc": 1, "mams": 2, "mclmc": 2}

# Warm-up fractions handed to BlackJAX's MCLMC/MAMS tuners, chosen so that the tuning
# spends exactly ``num_warmup`` transitions (BlackJAX sizes its phases as fractions of a
# step count): MAMS runs frac1 + frac2, then frac1 again; MCLMC runs frac1, frac2 plus a
# third of it for the preconditioner, then frac3 for L.
_MAMS_FRACS = (0.3, 0.4)
_MCLMC_FRACS = (0.4, 0.3, 0.2)

# Pathfinder's settings: L-BFGS iterations and history, and draws per ELBO estimate (Stan's
# defaults are 5 and 25 for the last two; fewer iterations than Stan's 1000 because only a
# starting point is wanted and every iterate's ELBO is computed).
_PATHFINDER = {"maxiter": 50, "maxcor": 5, "num_samples": 25}


class SamplerOptions(NamedTuple):
    """Validated settings of one sampler (see :func:`sampler_options`)."""

    sampler: str
    dense_mass: bool
    target_accept: float | None
    max_tree_depth: int | None
    num_integration_steps: int | None
    desired_energy_var: float | None
    pathfinder: bool = False


class ChainDraws(NamedTuple):
    """Per-draw output of :func:`sample_chain` (leading axis: draw).

    Attributes
    ----------
    position : pytree
        The chain's unconstrained positions.
    logdensity : Array
        Log density at each draw.
    stats : dict of Array
        Sample statistics under ArviZ's names where ArviZ has one: ``diverging``,
        ``acceptance_rate``, ``energy``, ``n_steps`` (integrator steps of the last transition),
        ``tree_depth`` (NUTS), ``energy_change`` (MCLMC) and ``n_grad`` (gradient
        evaluations since the previous kept draw).
    """

    position: Any
    logdensity: jax.Array
    stats: dict[str, jax.Array]


class Tuned(NamedTuple):
    """What warm-up chose for one chain.

    ``trajectory_length`` is :math:`L` for MAMS/MCLMC, ``step_size * num_integration_steps``
    for static HMC and NaN for NUTS (whose trajectories are built on the fly).
    ``warmup_n_grad`` counts the gradient evaluations the warm-up spent (BlackJAX's tuners
    report their integrator steps for MAMS/MCLMC), so the whole run's cost is known.
    """

    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    trajectory_length: jax.Array
    warmup_n_grad: jax.Array


def sampler_options(sampler: str = "nuts", *, dense_mass: bool = False,
                    target_accept: float | None = None, max_tree_depth: int | None = None,
                    num_integration_steps: int | None = None,
                    desired_energy_var: float | None = None,
                    pathfinder: bool = False) -> SamplerOptions:
    """Check a sampler name and its options, and fill in the sampler's defaults.

    Options that a sampler does not have are refused rather than ignored: ``max_tree_depth``
    is NUTS's, ``num_integration_steps`` static HMC's, ``desired_energy_var`` MCLMC's,
    ``target_accept`` belongs to the three Metropolis-adjusted samplers (default 0.8 for NUTS
    and HMC, 0.9 for MAMS as in Robnik et al. 2025), and a dense mass matrix is adapted only
    by the window adaptation of NUTS and HMC.

    Raises
    ------
    ValueError
        Naming ``sampler`` or the offending option.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    if not isinstance(pathfinder, bool | np.bool_):
        raise ValueError(f"pathfinder: expected True or False, got {pathfinder!r}")
    given = {"max_tree_depth": max_tree_depth, "num_integration_steps": num_integration_steps,
             "desired_energy_var": desired_energy_var, "target_accept": target_accept}
    owners = {"max_tree_depth": ("nuts",), "num_integration_steps": ("hmc",),
              "desired_energy_var": ("mclmc",), "target_accept": ("nuts", "hmc", "mams")}
    for name, value in given.items():
        if value is not None and sampler not in owners[name]:
            raise ValueError(f"{name}: sampler {sampler!r} has no such option (it belongs to "
                             f"{' and '.join(map(repr, owners[name]))})")
    if dense_mass and sampler in ("mams", "mclmc"):
        raise ValueError(f"dense_mass: sampler {sampler!r} adapts a diagonal preconditioner "
                         "only; use 'nuts' or 'hmc' for a dense mass matrix")
    if sampler in ("nuts", "hmc", "mams"):
        target_accept = {"mams": 0.9}.get(sampler, 0.8) if target_accept is None \
            else float(target_accept)
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept: must lie in (0, 1), got {target_accept}")
    if sampler == "nuts":
        max_tree_depth = check_positive_int("max_tree_depth", 10 if max_tree_depth is None
                                            else max_tree_depth)
    if sampler == "hmc":
        num_integration_steps = check_positive_int(
            "num_integration_steps", 16 if num_integration_steps is None
            else num_integration_steps)
    if sampler == "mclmc":
        desired_energy_var = 5e-4 if desired_energy_var is None else float(desired_energy_var)
        if not desired_energy_var > 0.0:
            raise ValueError(f"desired_energy_var: must be positive, got {desired_energy_var}")
    return SamplerOptions(sampler, bool(dense_mass), target_accept, max_tree_depth,
                          num_integration_steps, desired_energy_var, bool(pathfinder))


# --------------------------------------------------------------------------------------------
# Stan's window adaptation (NUTS and static HMC)
# --------------------------------------------------------------------------------------------


class AdaptationState(NamedTuple):
    """Stan-style window adaptation state.

    Attributes
    ----------
    da_state : DualAveragingAdaptationState
        Dual-averaging state of :math:`\\log \\epsilon`.
    mm_state : MassMatrixAdaptationState
        Welford covariance accumulator and the current inverse mass matrix.
    step_size : Array
        Step size used by the next transition.
    inverse_mass_matrix : Array
        Inverse mass matrix used by the next transition, shape ``(d,)`` or ``(d, d)``.
    """

    da_state: Any
    mm_state: Any
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def _adaptation_fns(dense_mass: bool, target_accept: float):
    mm = mass_matrix_adaptation(is_diagonal_matrix=not dense_mass)
    da = dual_averaging_adaptation(target_accept)
    return mm, da


def window_adaptation_init(position, *, dense_mass: bool = False, target_accept: float = 0.8,
                           initial_step_size: float = 1.0,
                           inverse_mass_matrix=None) -> AdaptationState:
    """Initial adaptation state for a position pytree (identity mass matrix unless
    ``inverse_mass_matrix``, shape ``(d,)`` or ``(d, d)`` as ``dense_mass``, is given)."""
    (mm_init, _, _), (da_init, _, _) = _adaptation_fns(dense_mass, target_accept)
    mm_state = mm_init(pytree_size(position))
    if inverse_mass_matrix is not None:
        mm_state = mm_state._replace(inverse_mass_matrix=jnp.asarray(
            inverse_mass_matrix, mm_state.inverse_mass_matrix.dtype))
    return AdaptationState(da_init(initial_step_size), mm_state,
                           jnp.asarray(initial_step_size, dtype=jnp.result_type(float)),
                           mm_state.inverse_mass_matrix)


def pathfinder_start(key: jax.Array, position, logdensity_fn: Callable, *,
                     dense_mass: bool = False):
    """A starting point and inverse mass matrix from Pathfinder (see the module docstring).

    Returns ``(position, inverse_mass_matrix)``: a draw from the best Pathfinder approximation
    and its inverse Hessian (``(d,)`` diagonal, or ``(d, d)`` with ``dense_mass``). Where
    Pathfinder fails (no finite ELBO, a non-finite draw or log density, a non-positive
    diagonal) it returns ``position`` and the identity, so a chain never starts worse than
    without it. Pure and jittable.
    """
    k_fit, k_draw = jax.random.split(key)
    state, _ = _pathfinder.approximate(k_fit, logdensity_fn, position, **_PATHFINDER)
    draw, _ = _pathfinder.sample(k_draw, state)
    alpha, beta, gamma = state.alpha, state.beta, state.gamma
    if dense_mass:
        imm = jnp.diag(alpha) + beta @ gamma @ beta.T
        diag = jnp.diag(imm)
        identity = jnp.eye(alpha.shape[0], dtype=alpha.dtype)
    else:
        imm = alpha + jnp.einsum("ij,jk,ik->i", beta, gamma, beta)
        diag, identity = imm, jnp.ones_like(alpha)
    flat_draw = ravel_pytree(draw)[0]
    ok = (jnp.isfinite(state.elbo) & jnp.all(jnp.isfinite(flat_draw))
          & jnp.isfinite(logdensity_fn(draw)) & jnp.all(jnp.isfinite(imm)) & jnp.all(diag > 0))
    start = jax.tree.map(lambda a, b: jnp.where(ok, a, b), draw, position)
    return start, jnp.where(ok, imm, identity)


def window_adaptation_update(state: AdaptationState, stage: jax.Array, window_end: jax.Array,
                             position, acceptance_rate: jax.Array, *, dense_mass: bool = False,
                             target_accept: float = 0.8) -> AdaptationState:
    """One warm-up update of Stan's windowed adaptation.

    Parameters
    ----------
    state : AdaptationState
    stage : int array
        0 in fast windows (step size only), 1 in slow windows (step size and covariance).
    window_end : bool array
        True at the last step of a slow window: the inverse mass matrix is recomputed from
        the window's draws, the accumulator is reset and dual averaging restarts.
    position : pytree
        The chain's position after the transition.
    acceptance_rate : array
        Mean Metropolis acceptance probability of the transition.
    """
    (_, mm_update, mm_final), (da_init, da_update, da_final) = _adaptation_fns(
        dense_mass, target_accept)
    da_state = da_update(state.da_state, acceptance_rate)
    mm_state = jax.lax.cond(stage == 1, lambda s: mm_update(s, position), lambda s: s,
                            state.mm_state)

    def close_window(args):
        da_s, mm_s = args
        mm_s = mm_final(mm_s)
        return da_init(da_final(da_s)), mm_s

    da_state, mm_state = jax.lax.cond(window_end, close_window, lambda a: a,
                                      (da_state, mm_state))
    return AdaptationState(da_state, mm_state, jnp.exp(da_state.log_step_size),
                           mm_state.inverse_mass_matrix)


def warmup_schedule(num_warmup: int) -> np.ndarray:
    """Stan's warm-up schedule: ``(num_warmup, 2)`` rows of (stage, end of slow window)."""
    with jax.ensure_compile_time_eval():
        return np.asarray(build_schedule(max(num_warmup, 1)), dtype=np.int32).reshape(-1, 2)


def metropolis_transition(opts: SamplerOptions):
    """``transition(key, state, logdensity_fn, step_size, inverse_mass_matrix)`` of NUTS or
    static HMC on a ``blackjax.mcmc.hmc.HMCState``, returning ``(state, info)``."""
    if opts.sampler == "nuts":
        kernel = blackjax.nuts.build_kernel()
        return lambda k, st, fn, eps, imm: kernel(k, st, fn, eps, imm,
                                                  max_num_doublings=opts.max_tree_depth)
    kernel = blackjax.hmc.build_kernel()
    return lambda k, st, fn, eps, imm: kernel(k, st, fn, eps, imm, opts.num_integration_steps)


def metropolis_stats(opts: SamplerOptions, info) -> dict[str, jax.Array]:
    """Sample statistics of one NUTS/HMC/MAMS transition under ArviZ's names."""
    n_steps = jnp.asarray(info.num_integration_steps, jnp.int32)
    stats = {"diverging": info.is_divergent, "acceptance_rate": info.acceptance_rate,
             "energy": info.energy, "n_steps": n_steps,
             "n_grad": n_steps * _GRADS_PER_STEP[opts.sampler]}
    if opts.sampler == "nuts":
        stats["tree_depth"] = info.num_trajectory_expansions
    return stats


def _mams_kernel():
    return adjusted_mclmc_dynamic.build_kernel(
        integration_steps_fn=adjusted_mclmc_dynamic.make_random_trajectory_length_fn(True),
        integrator=isokinetic_mclachlan)


def _mclmc_kernel(opts: SamplerOptions):
    return mclmc.build_kernel(integrator=isokinetic_mclachlan,
                              desired_energy_var=opts.desired_energy_var)


def _mams_warmup(key, position, logdensity_fn, opts: SamplerOptions, num_warmup: int):
    """MAMS: ``blackjax.adjusted_mclmc_find_L_and_step_size`` over ``num_warmup`` steps."""
    key_init, key_tune = jax.random.split(key)
    state = adjusted_mclmc_dynamic.init(position, logdensity_fn, key_init)
    f1, f2 = _MAMS_FRACS if num_warmup else (0.0, 0.0)
    state, params, steps = adjusted_mclmc_find_L_and_step_size(
        _mams_kernel(), logdensity_fn, max(num_warmup, 1), state, key_tune,
        opts.target_accept, frac_tune1=f1, frac_tune2=f2, diagonal_preconditioning=True)
    return state, Tuned(params.step_size, params.inverse_mass_matrix, params.L,
                        _warmup_grads(steps, "mams"))


def _mclmc_warmup(key, position, logdensity_fn, opts: SamplerOptions, num_warmup: int):
    """MCLMC: ``blackjax.mclmc_find_L_and_step_size`` over ``num_warmup`` steps."""
    key_init, key_tune = jax.random.split(key)
    state = mclmc.init(position, logdensity_fn, key_init)
    if num_warmup > 0:
        f1, f2, f3 = _MCLMC_FRACS
        state, params, steps = mclmc_find_L_and_step_size(
            _mclmc_kernel(opts), num_warmup, state, key_tune, logdensity_fn=logdensity_fn,
            frac_tune1=f1, frac_tune2=f2, frac_tune3=f3,
            desired_energy_var=opts.desired_energy_var, diagonal_preconditioning=True)
    else:  # BlackJAX's starting values
        dim = pytree_size(position)
        params = MCLMCAdaptationState(jnp.sqrt(dim), jnp.sqrt(dim) * 0.25, jnp.ones(dim))
        steps = 0
    return state, Tuned(params.step_size, params.inverse_mass_matrix, params.L,
                        _warmup_grads(steps, "mclmc"))


def _warmup_grads(integrator_steps, sampler: str) -> jax.Array:
    """Gradient evaluations of ``integrator_steps`` steps of ``sampler``'s integrator."""
    return jnp.asarray(integrator_steps, jnp.int32) * _GRADS_PER_STEP[sampler]


_WARMUPS: dict[str, Callable] = {"mams": _mams_warmup, "mclmc": _mclmc_warmup}


def warmup(key, position, logdensity_fn: Callable, opts: SamplerOptions,
           num_warmup: int) -> tuple[Any, Tuned]:
    """MAMS/MCLMC: initial BlackJAX state at ``position``, tuned by BlackJAX's tuner over
    ``num_warmup`` transitions: ``(state, tuned)``.

    NUTS and HMC adapt transition by transition instead (:func:`window_adaptation_update`,
    inside :func:`sample_chain`'s one loop and in the NumPyro kernel).
    """
    if opts.sampler not in _WARMUPS:
        raise ValueError(f"sampler: warmup() tunes {tuple(_WARMUPS)}; {opts.sampler!r} adapts "
                         "step by step (window_adaptation_update)")
    return _WARMUPS[opts.sampler](key, position, logdensity_fn, opts, num_warmup)


def transition(opts: SamplerOptions, logdensity_fn: Callable, step_size, inverse_mass_matrix,
               trajectory_length) -> Callable:
    """MAMS/MCLMC: one transition ``step(state, key) -> (state, stats)`` at the parameters
    their tuner chose (``trajectory_length`` is :math:`L`). NUTS and HMC move through
    :func:`windowed_transition`."""
    if opts.sampler == "mams":
        kernel, avg_steps = _mams_kernel(), trajectory_length / step_size

        def step(st, k):
            st, info = kernel(k, st, logdensity_fn, step_size,
                              inverse_mass_matrix=inverse_mass_matrix,
                              integration_steps_params=(avg_steps,))
            return st, metropolis_stats(opts, info)

    elif opts.sampler == "mclmc":
        kernel = _mclmc_kernel(opts)

        def step(st, k):
            st, info = kernel(k, st, logdensity_fn, inverse_mass_matrix, trajectory_length,
                              step_size)
            return st, {"diverging": ~info.nonans, "energy_change": info.energy_change,
                        "n_steps": jnp.ones((), jnp.int32),
                        "n_grad": jnp.full((), _GRADS_PER_STEP["mclmc"], jnp.int32)}

    else:
        raise ValueError(f"sampler: transition() is for the tuned samplers ('mams', 'mclmc'); "
                         f"{opts.sampler!r} moves through windowed_transition()")
    return step


def check_dimension(opts: SamplerOptions, position) -> None:
    r"""Refuse ``d < 2`` for MAMS and MCLMC.

    Their isokinetic velocity lives on the unit sphere of dimension ``d - 1``: for one latent
    dimension it is :math:`\pm 1` and the dynamics never turn, so MCLMC is not ergodic and
    MAMS degenerates into a random walk whose tuning can take minutes (measured: 20 s for 400
    steps of a 1-D normal mean against 2 s in 2-D).
    """
    if opts.sampler in ("mams", "mclmc") and pytree_size(position) < 2:
        raise ValueError(f"sampler: {opts.sampler!r} needs at least two latent dimensions (its "
                         "velocity has unit norm); use 'nuts' or 'hmc' for a scalar latent")


def windowed_transition(opts: SamplerOptions, logdensity_fn: Callable, key, state, adapt,
                        i, num_warmup: int):
    """Transition ``i`` of NUTS/HMC counting warm-up and sampling together:
    ``(state, adapt, stats, step_size)``.

    While ``i < num_warmup`` it moves at the adapting step size and then updates Stan's
    windows (:func:`window_adaptation_update`); afterwards it moves at the dual-averaged step
    size and leaves ``adapt`` alone. :func:`sample_chain` scans it and the NumPyro kernel
    (:class:`probkit.inference.hmc.BlackJAXKernel`) calls it once per ``sample``.
    """
    warm = i < num_warmup
    eps = (jnp.where(warm, adapt.step_size, jnp.exp(adapt.da_state.log_step_size_avg))
           if num_warmup else adapt.step_size)
    state, info = metropolis_transition(opts)(key, state, logdensity_fn, eps,
                                              adapt.inverse_mass_matrix)
    if num_warmup:
        schedule = jnp.asarray(warmup_schedule(num_warmup))
        row = schedule[jnp.minimum(i, num_warmup - 1)]
        adapt = jax.lax.cond(warm, lambda a: window_adaptation_update(
            a, row[0], row[1].astype(bool), state.position, info.acceptance_rate,
            dense_mass=opts.dense_mass, target_accept=opts.target_accept), lambda a: a, adapt)
    return state, adapt, metropolis_stats(opts, info), eps


def _windowed_chain(key, position, logdensity_fn, opts: SamplerOptions, num_warmup: int,
                    num_samples: int, thinning: int, progress_rate: int | None,
                    progress_offset, inverse_mass_matrix=None):
    """NUTS/HMC: warm-up and sampling in one loop of :func:`windowed_transition`, so the
    transition is traced and compiled once (a warm-up loop followed by a sampling loop would
    compile it twice).

    Kept draws are written into preallocated buffers, so memory is ``num_samples //
    thinning`` draws whatever the warm-up length.
    """
    n_keep = num_samples // thinning
    total = num_warmup + n_keep * thinning

    def moved(st, ad, i):
        st, ad, stats, _ = windowed_transition(opts, logdensity_fn, jax.random.fold_in(key, i),
                                               st, ad, i, num_warmup)
        return st, ad, ChainDraws(st.position, st.logdensity, stats)

    state = blackjax.hmc.init(position, logdensity_fn)
    adapt = window_adaptation_init(position, dense_mass=opts.dense_mass,
                                   target_accept=opts.target_accept,
                                   inverse_mass_matrix=inverse_mass_matrix)
    like = jax.eval_shape(lambda: moved(state, adapt, 0)[2])
    buffers = jax.tree.map(lambda a: jnp.zeros((n_keep, *a.shape), a.dtype), like)

    def body(carry, i):
        st, ad, bufs, grads, warm_grads = carry
        st, ad, draw = moved(st, ad, i)
        warm_grads = warm_grads + jnp.where(i < num_warmup, draw.stats["n_grad"], 0)
        grads = grads + draw.stats["n_grad"]
        j = i - num_warmup
        keep = (j >= 0) & ((j + 1) % thinning == 0)
        draw = draw._replace(stats={**draw.stats, "n_grad": grads})
        bufs = jax.lax.cond(keep, lambda b: jax.tree.map(
            lambda buf, v: buf.at[jnp.maximum(j, 0) // thinning].set(v), b, draw),
            lambda b: b, bufs)
        grads = jnp.where(keep | (i < num_warmup), 0, grads)
        if progress_rate:
            progress_tick(i, progress_rate, progress_offset)
        return (st, ad, bufs, grads, warm_grads), None

    grads0 = jnp.zeros((), buffers.stats["n_grad"].dtype)
    (_, adapt, draws, _, warm_grads), _ = jax.lax.scan(
        body, (state, adapt, buffers, grads0, grads0), jnp.arange(total))
    step_size = jnp.exp(adapt.da_state.log_step_size_avg) if num_warmup else adapt.step_size
    length = step_size * opts.num_integration_steps if opts.sampler == "hmc" \
        else jnp.full_like(step_size, jnp.nan)
    return draws, Tuned(step_size, adapt.inverse_mass_matrix, length, warm_grads)


def sample_chain(key: jax.Array, position, logdensity_fn: Callable, *, num_warmup: int,
                 num_samples: int, sampler: str | SamplerOptions = "nuts", thinning: int = 1,
                 progress_rate: int | None = None, progress_offset=0,
                 **options) -> tuple[ChainDraws, Tuned]:
    """Warm up and run one chain of ``sampler`` on ``logdensity_fn`` (pure, jittable,
    vmappable).

    Parameters
    ----------
    key : PRNG key
    position : pytree
        Initial (unconstrained) position.
    logdensity_fn : callable
        Log density of the target, up to a constant.
    num_warmup, num_samples : int
        Numbers of warm-up (tuning) and kept transitions (before thinning).
    sampler : {"nuts", "hmc", "mams", "mclmc"} or SamplerOptions
        The sampler (see the module docstring).
    thinning : int
        Keep every ``thinning``-th draw.
    progress_rate : int, optional
        If given, report every ``progress_rate`` transitions (warm-up and sampling together)
        to the progress bar (:mod:`probkit.inference.progress`), counted from
        ``progress_offset`` (an int or int array: chains run one after another add
        ``chain * (num_warmup + num_samples)``).
    **options
        The sampler's options, checked by :func:`sampler_options` (``dense_mass``,
        ``target_accept``, ``max_tree_depth``, ``num_integration_steps``,
        ``desired_energy_var``, ``pathfinder``).

    Returns
    -------
    draws : ChainDraws
        ``num_samples // thinning`` draws.
    tuned : Tuned
        The warm-up's step size, inverse mass matrix and trajectory length.
    """
    opts = sampler if isinstance(sampler, SamplerOptions) else sampler_options(sampler,
                                                                                **options)
    check_dimension(opts, position)
    imm = None
    if opts.pathfinder:
        key, key_start = jax.random.split(key)
        position, imm = pathfinder_start(key_start, position, logdensity_fn,
                                         dense_mass=opts.dense_mass)
    if opts.sampler in ("nuts", "hmc"):
        return _windowed_chain(key, position, logdensity_fn, opts, num_warmup, num_samples,
                               thinning, progress_rate, progress_offset, imm)
    key_warm, key_sample = jax.random.split(key)
    state, tuned = warmup(key_warm, position, logdensity_fn, opts, num_warmup)
    if progress_rate and num_warmup:  # BlackJAX's tuner is one call: the bar jumps past it
        progress_tick(jnp.asarray(num_warmup - 1), 1, progress_offset)
    step = transition(opts, logdensity_fn, tuned.step_size, tuned.inverse_mass_matrix,
                      tuned.trajectory_length)

    def one_draw(st, xs):
        i, k = xs

        def one_step(s, ks):
            j, kk = ks
            if progress_rate:
                progress_tick(num_warmup + j, progress_rate, progress_offset)
            return step(s, kk)

        st, stats = jax.lax.scan(one_step, st, (i * thinning + jnp.arange(thinning),
                                                jax.random.split(k, thinning)))
        last = {name: value[-1] for name, value in stats.items()}
        last["n_grad"] = jnp.sum(stats["n_grad"])
        return st, ChainDraws(st.position, st.logdensity, last)

    n_keep = num_samples // thinning
    _, draws = jax.lax.scan(one_draw, state,
                            (jnp.arange(n_keep), jax.random.split(key_sample, n_keep)))
    return draws, tuned
