r"""BlackJAX NUTS for NumPyro models.

Two levels, as in BlackJAX:

* pure functions on NamedTuples: :func:`window_adaptation_init`,
  :func:`window_adaptation_update` (Stan's windowed adaptation of the step size by dual
  averaging and of a diagonal or dense inverse mass matrix by Welford's covariance), and
  :func:`sample_chain` (warm-up followed by sampling for one chain of any log density);
* a convenience call :func:`run` that takes a NumPyro model, vectorises or shards the chains
  over ``jax.devices()``, compiles once per model and data shape and returns a
  :class:`probkit.result.Result`; and :class:`BlackJAXNUTS`, a ``numpyro.infer.MCMCKernel``
  so that ``numpyro.infer.MCMC``, ``Predictive`` and ``arviz.from_numpyro`` work with it.

The sampler is the multinomial, iterative No-U-Turn sampler of BlackJAX (Hoffman & Gelman
2014; Betancourt 2017). Warm-up follows Stan: a fast window adapting only the step size to the
target acceptance rate, slow windows doubling in size that estimate the (inverse) mass matrix
:math:`M^{-1} \approx \mathrm{Cov}[z]` (regularised towards :math:`10^{-3} I`), and a final
fast window.

Examples
--------
>>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
>>> from probkit.inference import hmc
>>> def model(y=None):
...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
>>> res = hmc.run(model, y=jnp.array([0.5, 1.5]), key=jax.random.key(0),
...               num_warmup=200, num_samples=200, num_chains=2, progress_bar=False)
>>> res.posterior["mu"].shape
(2, 200)
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.util import pytree_size
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import (
    constrain_fn,
    find_valid_initial_params,
    initialize_model,
    log_likelihood,
    potential_energy,
)

from probkit._checks import check_key, check_positive_int
from probkit.inference import distributed
from probkit.inference.progress import ProgressBar, progress_tick
from probkit.result import Result

__all__ = [
    "AdaptationState",
    "BlackJAXNUTS",
    "ChainDraws",
    "NUTSKernelState",
    "run",
    "sample_chain",
    "window_adaptation_init",
    "window_adaptation_update",
]

CHAIN_METHODS = ("vectorized", "parallel", "sequential")


# --------------------------------------------------------------------------------------------
# Pure layer
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


class ChainDraws(NamedTuple):
    """Per-draw output of :func:`sample_chain` (leading axis: draw)."""

    position: Any
    logdensity: jax.Array
    diverging: jax.Array
    acceptance_rate: jax.Array
    energy: jax.Array
    n_steps: jax.Array
    tree_depth: jax.Array
    step_size: jax.Array


def _adaptation_fns(dense_mass: bool, target_accept: float):
    mm = mass_matrix_adaptation(is_diagonal_matrix=not dense_mass)
    da = dual_averaging_adaptation(target_accept)
    return mm, da


def window_adaptation_init(position, *, dense_mass: bool = False, target_accept: float = 0.8,
                           initial_step_size: float = 1.0) -> AdaptationState:
    """Initial adaptation state for a position pytree (identity mass matrix)."""
    (mm_init, _, _), (da_init, _, _) = _adaptation_fns(dense_mass, target_accept)
    mm_state = mm_init(pytree_size(position))
    return AdaptationState(da_init(initial_step_size), mm_state,
                           jnp.asarray(initial_step_size, dtype=jnp.result_type(float)),
                           mm_state.inverse_mass_matrix)


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


def sample_chain(key: jax.Array, position, logdensity_fn: Callable, *, num_warmup: int,
                 num_samples: int, dense_mass: bool = False, target_accept: float = 0.8,
                 max_tree_depth: int = 10, thinning: int = 1,
                 progress_rate: int | None = None) -> tuple[ChainDraws, AdaptationState]:
    """Warm up and run one NUTS chain on ``logdensity_fn`` (pure, jittable, vmappable).

    Parameters
    ----------
    key : PRNG key
    position : pytree
        Initial (unconstrained) position.
    logdensity_fn : callable
        Log density of the target, up to a constant.
    num_warmup, num_samples : int
        Numbers of warm-up and kept transitions (before thinning).
    dense_mass : bool
        Adapt a dense rather than a diagonal inverse mass matrix.
    target_accept : float
        Target mean acceptance probability of the dual-averaging step-size adaptation.
    max_tree_depth : int
        Maximum number of trajectory doublings.
    thinning : int
        Keep every ``thinning``-th draw.
    progress_rate : int, optional
        If given, call the progress bar every ``progress_rate`` transitions.

    Returns
    -------
    draws : ChainDraws
        ``num_samples // thinning`` draws.
    adaptation : AdaptationState
        Final adapted step size and inverse mass matrix.
    """
    kernel = blackjax.nuts.build_kernel()
    state = blackjax.nuts.init(position, logdensity_fn)
    adapt = window_adaptation_init(position, dense_mass=dense_mass, target_accept=target_accept)
    key_warm, key_sample = jax.random.split(key)
    adapt_kw = {"dense_mass": dense_mass, "target_accept": target_accept}

    if num_warmup > 0:
        with jax.ensure_compile_time_eval():
            schedule = np.asarray(build_schedule(num_warmup), dtype=np.int32).reshape(-1, 2)

        def warm_step(carry, xs):
            st, ad = carry
            i, k, stage, end = xs
            st, info = kernel(k, st, logdensity_fn, ad.step_size, ad.inverse_mass_matrix,
                              max_num_doublings=max_tree_depth)
            ad = window_adaptation_update(ad, stage, end.astype(bool), st.position,
                                          info.acceptance_rate, **adapt_kw)
            if progress_rate:
                progress_tick(i, progress_rate, 0)
            return (st, ad), None

        xs = (jnp.arange(num_warmup), jax.random.split(key_warm, num_warmup),
              jnp.asarray(schedule[:, 0]), jnp.asarray(schedule[:, 1]))
        (state, adapt), _ = jax.lax.scan(warm_step, (state, adapt), xs)
        step_size = jnp.exp(adapt.da_state.log_step_size_avg)
    else:
        step_size = adapt.step_size
    inv_mass = adapt.inverse_mass_matrix
    adapt = adapt._replace(step_size=step_size)

    def one_draw(st, xs):
        i, k = xs
        keys = jax.random.split(k, thinning)

        def transition(s, kk):
            return kernel(kk, s, logdensity_fn, step_size, inv_mass,
                          max_num_doublings=max_tree_depth)

        st, info = jax.lax.scan(transition, st, keys)
        last = jax.tree.map(lambda a: a[-1], info)
        if progress_rate:
            progress_tick(i, max(progress_rate // thinning, 1), num_warmup // thinning)
        out = ChainDraws(st.position, st.logdensity, last.is_divergent, last.acceptance_rate,
                         last.energy, last.num_integration_steps,
                         last.num_trajectory_expansions, step_size)
        return st, out

    n_keep = num_samples // thinning
    _, draws = jax.lax.scan(one_draw, state,
                            (jnp.arange(n_keep), jax.random.split(key_sample, n_keep)))
    return draws, adapt


# --------------------------------------------------------------------------------------------
# Progress bar driven from inside compiled code
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Model inspection: errors that name the site
# --------------------------------------------------------------------------------------------


def _trace_model(model, key, args, kwargs):
    seeded = numpyro.handlers.seed(model, rng_seed=key)
    return numpyro.handlers.trace(seeded).get_trace(*args, **kwargs)


def _check_model(model, key, args, kwargs) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reject discrete latent sites and non-finite or empty observations.

    Returns the observed data and a prototype of the unconstrained latent values (their
    structure and shapes, needed to initialise inside compiled code).
    """
    trace = _trace_model(model, key, args, kwargs)
    observed, prototype = {}, {}
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            value = np.asarray(site["value"])
            if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
                raise ValueError(
                    f"observed site {name!r}: contains NaN or inf at "
                    f"{int(np.sum(~np.isfinite(value)))} entries; remove or impute them "
                    "(HMC needs a finite likelihood)")
            if value.size == 0 and not isinstance(site["fn"], numpyro.distributions.Unit):
                raise ValueError(f"observed site {name!r}: is empty (shape {value.shape}); with "
                                 "no data NUTS would sample the prior without a word")
            observed[name] = value
        elif getattr(site["fn"], "support", None) is not None and site["fn"].support.is_discrete:
            if site["infer"].get("enumerate"):
                continue
            raise ValueError(
                f"latent site {name!r}: is discrete ({type(site['fn']).__name__}); NUTS needs "
                "continuous latent variables. Marginalise it with enumeration "
                "(infer={'enumerate': 'parallel'} and numpyro's funsor support), use "
                "numpyro.infer.DiscreteHMCGibbs/MixedHMC, or another engine.")
        else:
            transform = biject_to(site["fn"].support)
            prototype[name] = transform.inv(site["value"])
    return observed, prototype


def _diagnose_init(model, key, args, kwargs) -> str:
    """Name the sites whose log density is not finite at a draw from the prior."""
    trace = _trace_model(model, key, args, kwargs)
    bad = []
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        try:
            with warnings.catch_warnings():  # NumPyro's out-of-support warning: reported below
                warnings.simplefilter("ignore", UserWarning)
                lp = site["fn"].log_prob(site["value"])
            if site.get("scale") is not None:
                lp = lp * site["scale"]
            lp = jnp.sum(lp)
        except Exception as err:  # noqa: BLE001 - report, do not mask, the user's error
            bad.append(f"{name!r} (log_prob raised {type(err).__name__}: {err})")
            continue
        if not bool(jnp.isfinite(lp)):
            bad.append(f"{name!r} (log density {float(lp)})")
    return ", ".join(bad) if bad else "no single site (the joint density is not finite)"


def model_logdensity(model: Callable, args: tuple, kwargs: dict) -> Callable:
    """Log joint density of a NumPyro model on unconstrained positions, with NaN mapped to
    ``-inf``.

    A NaN log density (e.g. a Cholesky factorisation failing on a near-singular GP covariance
    far out in the tails) must reject the proposal, as NumPyro's NUTS does. BlackJAX's
    divergence test compares energies, which is false for NaN, so without this guard a chain
    can step into such a region and stay there.
    """

    def logdensity(p):
        lp = -potential_energy(model, args, kwargs, p)
        return jnp.where(jnp.isnan(lp), -jnp.inf, lp)

    return logdensity


def _initialize(model, keys, args, kwargs, init_strategy):
    try:
        return initialize_model(keys, model, model_args=args, model_kwargs=kwargs,
                                init_strategy=init_strategy, dynamic_args=True)
    except RuntimeError as err:
        if "valid initial" not in str(err):
            raise
        where = _diagnose_init(model, keys[0], args, kwargs)
        raise ValueError(
            f"model: the initial log density is not finite; offending site(s): {where}. "
            "Check observed values against each distribution's support and the init_strategy."
        ) from None


def _is_typed(key) -> bool:
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _split(key, n: int):
    return jax.random.split(key, n)


# --------------------------------------------------------------------------------------------
# Compiled sampler, cached per model, data structure and settings
# --------------------------------------------------------------------------------------------


def _is_dynamic(leaf) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | float | np.floating)


def _partition(args, kwargs):
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dyn_idx = tuple(i for i, leaf in enumerate(leaves) if _is_dynamic(leaf))
    dynamic = [jnp.asarray(leaves[i]) for i in dyn_idx]
    static = tuple(leaf for i, leaf in enumerate(leaves) if i not in dyn_idx)
    return dynamic, (treedef, dyn_idx, static)


def _rebuild(dynamic, structure):
    treedef, dyn_idx, static = structure
    leaves, it_d, it_s = [], iter(dynamic), iter(static)
    for i in range(treedef.num_leaves):
        leaves.append(next(it_d) if i in dyn_idx else next(it_s))
    return jax.tree.unflatten(treedef, leaves)


def _hashable(structure):
    treedef, dyn_idx, static = structure
    try:
        hash(static)
        return (treedef, dyn_idx, static)
    except TypeError:
        return (treedef, dyn_idx, tuple(id(s) for s in static))


_PROGRAMS: dict = {}


def _compiled_sampler(model, structure, settings: tuple, mesh_devices: tuple | None):
    """The whole warm-up + sampling + post-processing program, built once per cache key.

    The key is the model, the pytree structure and compile-time constants of its
    arguments, the settings and the devices; jit then specialises on the shapes of the
    dynamic arguments, so refits with same-shaped data compile nothing.
    """
    cache_key = (model, _hashable(structure), settings, mesh_devices)
    if cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]
    (num_warmup, num_samples, dense_mass, target_accept, max_tree_depth, thinning,
     progress_rate, want_loglik) = settings

    def chains(keys, z0, dynamic):
        args, kwargs = _rebuild(dynamic, structure)
        logdensity = model_logdensity(model, args, kwargs)

        def one(k, z):
            return sample_chain(k, z, logdensity, num_warmup=num_warmup,
                                num_samples=num_samples, dense_mass=dense_mass,
                                target_accept=target_accept, max_tree_depth=max_tree_depth,
                                thinning=thinning, progress_rate=progress_rate)

        return jax.vmap(one)(keys, z0)

    if mesh_devices is not None:
        mesh = Mesh(np.asarray(mesh_devices), ("chain",))
        spec = PartitionSpec("chain")
        chains = jax.shard_map(chains, mesh=mesh, in_specs=(spec, spec, PartitionSpec()),
                               out_specs=spec, check_vma=False)

    def program(keys, z0, dynamic):
        draws, adapt = chains(keys, z0, dynamic)
        args, kwargs = _rebuild(dynamic, structure)

        def constrain(z):
            return constrain_fn(model, args, kwargs, z, return_deterministic=True)

        constrained = jax.vmap(jax.vmap(constrain))(draws.position)
        loglik = {}
        if want_loglik:
            loglik = log_likelihood(model, constrained, *args, batch_ndims=2, **kwargs)
        return draws, adapt, constrained, loglik

    _PROGRAMS[cache_key] = jax.jit(program)
    return _PROGRAMS[cache_key]


def _compiled_init(model, structure, init_strategy):
    """Compiled search for valid initial positions of all chains (NumPyro's init strategies)."""
    cache_key = ("init", model, _hashable(structure), init_strategy)
    if cache_key not in _PROGRAMS:

        def init(keys, prototype, dynamic):
            args, kwargs = _rebuild(dynamic, structure)
            (z, _, _), valid = find_valid_initial_params(
                keys, model, init_strategy=init_strategy, model_args=args,
                model_kwargs=kwargs, prototype_params=prototype)
            return z, valid

        _PROGRAMS[cache_key] = jax.jit(init)
    return _PROGRAMS[cache_key]


def _global_devices() -> list:
    """``jax.devices()``; across processes interleaved (process 0's first device, process 1's
    first device, ..., then the second devices), so that a few chains still reach every
    process."""
    devices = jax.devices()
    if not distributed.is_multiprocess():
        return devices
    by_process: dict[int, list] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d)
    rows = itertools.zip_longest(*by_process.values())
    return [d for row in rows for d in row if d is not None]


def _choose_devices(num_chains: int, chain_method: str):
    if chain_method != "parallel":
        return None
    devices = _global_devices()
    n = max(d for d in range(1, len(devices) + 1) if num_chains % d == 0)
    if distributed.is_multiprocess() and n < jax.process_count():
        raise ValueError(f"num_chains: {num_chains} chains do not reach all "
                         f"{jax.process_count()} processes (chain_method='parallel' splits them "
                         f"evenly over at most {len(devices)} devices); use a multiple of "
                         f"{jax.process_count()}")
    if n == 1 and len(devices) > 1:
        warnings.warn(f"chain_method='parallel': num_chains={num_chains} does not split over "
                      f"{len(devices)} devices; running on one device", stacklevel=3)
    if len(devices) == 1:
        warnings.warn("chain_method='parallel': only one JAX device is visible; chains run "
                      "vectorised on it (set XLA_FLAGS=--xla_force_host_platform_device_count=N "
                      "before importing JAX to use N CPU devices)", stacklevel=3)
    return tuple(devices[:n])


def run(model: Callable, *args, key: jax.Array, num_warmup: int = 1000,
        num_samples: int = 1000, num_chains: int = 4, chain_method: str = "vectorized",
        dense_mass: bool = False, target_accept: float = 0.8,
        init_strategy: Callable = init_to_uniform, max_tree_depth: int = 10,
        thinning: int = 1, log_likelihood: bool = True, progress_bar: bool = True,
        **kwargs) -> Result:
    """Sample the posterior of a NumPyro model with BlackJAX NUTS.

    Every chain runs Stan's windowed adaptation (step size by dual averaging towards
    ``target_accept``, diagonal or dense inverse mass matrix by windowed covariance
    estimation) followed by ``num_samples`` NUTS transitions. Warm-up, sampling, the map back
    to constrained space and the pointwise log-likelihood are one compiled program, reused
    for later calls with data of the same shapes.

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.
    *args, **kwargs
        Model arguments. Arrays and floats are traced (new values of the same shape reuse
        the compiled program); other values (ints, strings, None) are compile-time constants.
    key : PRNG key
        ``jax.random.key(seed)`` or ``jax.random.PRNGKey(seed)``.
    num_warmup : int
        Adaptation transitions per chain (discarded).
    num_samples : int
        Kept transitions per chain (before thinning).
    num_chains : int
        Number of independent chains.
    chain_method : {"vectorized", "parallel", "sequential"}
        ``"vectorized"`` vmaps the chains on one device; ``"parallel"`` shards them over
        ``jax.devices()`` (vmapped within each device); ``"sequential"`` is accepted as an
        alias of ``"vectorized"`` (the compiled program has no Python loop over chains).
        After :func:`probkit.inference.distributed.initialize`, ``"parallel"`` uses the
        devices of all processes and every process returns all chains (call ``run`` on every
        process with the same arguments).
    dense_mass : bool
        Adapt a dense inverse mass matrix instead of a diagonal one.
    target_accept : float
        Target acceptance probability, in (0, 1).
    init_strategy : callable
        A NumPyro init strategy (``init_to_uniform``, ``init_to_median``, ...).
    max_tree_depth : int
        Maximum number of trajectory doublings per transition.
    thinning : int
        Keep every ``thinning``-th draw.
    log_likelihood : bool
        Store the pointwise log-likelihood of every observed site (for ``az.loo``).
    progress_bar : bool
        Show a tqdm progress bar.

    Returns
    -------
    Result
        Draws ``(chain, draw, ...)`` of every latent and deterministic site; sample stats
        ``lp``, ``diverging``, ``acceptance_rate``, ``energy``, ``n_steps``, ``tree_depth``,
        ``step_size``; observed data; pointwise log-likelihood. ``attrs`` holds the wall
        times (``compile_and_sample_seconds``) and the devices used.

    Raises
    ------
    ValueError
        For a non-key ``key`` (or an array of keys), ``num_samples < 1``, ``num_chains < 1``,
        ``num_warmup < 0``, ``thinning`` or ``max_tree_depth`` out of range, an unknown
        ``chain_method``, ``target_accept`` outside (0, 1), a ``model`` or ``init_strategy``
        that is not callable, a discrete latent site, non-finite or empty observed data, or a
        model whose initial log density is not finite (each message names the argument or
        site).
    """
    key = check_key("key", key)
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    num_warmup = check_positive_int("num_warmup", num_warmup, minimum=0)
    thinning = check_positive_int("thinning", thinning)
    max_tree_depth = check_positive_int("max_tree_depth", max_tree_depth)
    if num_samples < thinning:
        raise ValueError(f"thinning: must not exceed num_samples ({num_samples}), got {thinning}")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method: expected one of {CHAIN_METHODS}, got {chain_method!r}")
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept: must lie in (0, 1), got {target_accept}")
    if not callable(model):
        raise ValueError(f"model: expected a callable NumPyro model, got {type(model).__name__}")
    if not callable(init_strategy):
        raise ValueError(f"init_strategy: expected a NumPyro init strategy (callable), got "
                         f"{type(init_strategy).__name__}")

    key_check, key_init, key_chains = _split(key, 3)
    observed, prototype = _check_model(model, key_check, args, kwargs)
    dynamic, structure = _partition(args, kwargs)
    z0, valid = _compiled_init(model, structure, init_strategy)(
        _split(key_init, num_chains), prototype, dynamic)
    if not bool(np.all(valid)):
        raise ValueError(
            "model: the initial log density (or its gradient) is not finite; offending "
            f"site(s): {_diagnose_init(model, key_init, args, kwargs)}. Check observed values "
            "against each distribution's support, and the init_strategy.")
    devices = _choose_devices(num_chains, chain_method)
    total = num_warmup + num_samples
    # The progress callback is always compiled in (it is a no-op without an open bar), so
    # switching the bar on or off does not recompile.
    progress_rate = max(total // 50, 1)
    settings = (num_warmup, num_samples, bool(dense_mass), float(target_accept), max_tree_depth,
                thinning, progress_rate, bool(log_likelihood))
    program = _compiled_sampler(model, structure, settings, devices)
    chain_keys = _split(key_chains, num_chains)
    multiprocess = devices is not None and distributed.is_multiprocess()
    if multiprocess:  # every process holds the same inputs; each feeds its devices' chains
        mesh = Mesh(np.asarray(devices), ("chain",))
        chain_keys, z0 = distributed.to_global(
            (chain_keys, z0), NamedSharding(mesh, PartitionSpec("chain")))
        dynamic = distributed.to_global(dynamic, NamedSharding(mesh, PartitionSpec()))
    progress_bar = progress_bar and distributed.is_main_process()
    start = time.perf_counter()
    if progress_bar:
        ProgressBar.open(total // thinning if thinning > 1 else total,
                          f"NUTS {num_chains} chains")
    try:
        draws, adapt, constrained, loglik = program(chain_keys, z0, dynamic)
        draws = jax.block_until_ready(draws)
    finally:
        if progress_bar:
            ProgressBar.close()
    seconds = time.perf_counter() - start
    sharding_devices = sorted(d.id for d in draws.logdensity.sharding.device_set)
    if multiprocess:  # all chains, gathered onto every process
        draws, step_size, constrained, loglik = distributed.to_local(
            (draws, adapt.step_size, constrained, loglik))
        adapt = adapt._replace(step_size=step_size)
    n_keep = num_samples // thinning
    stats = {
        "lp": draws.logdensity, "diverging": draws.diverging,
        "acceptance_rate": draws.acceptance_rate, "energy": draws.energy,
        "n_steps": draws.n_steps, "tree_depth": draws.tree_depth,
        "step_size": jnp.broadcast_to(adapt.step_size[:, None], (num_chains, n_keep)),
    }
    attrs = {"engine": "probkit.inference.hmc (BlackJAX NUTS)", "num_warmup": num_warmup,
             "num_chains": num_chains, "chain_method": chain_method,
             "dense_mass": bool(dense_mass), "seconds": seconds,
             "devices": str(sharding_devices), "num_devices": len(sharding_devices)}
    return Result(posterior=constrained, sample_stats=stats, observed_data=observed,
                  log_likelihood=loglik, attrs=attrs)


# --------------------------------------------------------------------------------------------
# numpyro.infer.MCMCKernel
# --------------------------------------------------------------------------------------------


class NUTSKernelState(NamedTuple):
    """State of :class:`BlackJAXNUTS` between NumPyro ``MCMC`` steps."""

    i: jax.Array
    z: Any
    logdensity: jax.Array
    logdensity_grad: Any
    potential_energy: jax.Array
    adaptation: AdaptationState
    diverging: jax.Array
    accept_prob: jax.Array
    num_steps: jax.Array
    energy: jax.Array
    step_size: jax.Array
    rng_key: jax.Array


class BlackJAXNUTS(MCMCKernel):
    """BlackJAX NUTS with Stan's window adaptation as a ``numpyro.infer.MCMCKernel``.

    Use it wherever NumPyro expects a kernel::

        mcmc = numpyro.infer.MCMC(BlackJAXNUTS(model), num_warmup=500, num_samples=500)
        mcmc.run(jax.random.key(0), x, y=y)
        az.from_numpyro(mcmc)

    Adaptation happens step by step inside :meth:`sample` (a ``lax.cond`` on the iteration
    counter), so all of NumPyro's chain methods work; with ``chain_method="vectorized"``
    NumPyro passes batched keys and states, and the kernel vmaps itself.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    dense_mass : bool
        Adapt a dense inverse mass matrix.
    target_accept : float
        Target acceptance probability of the step-size adaptation.
    max_tree_depth : int
        Maximum number of trajectory doublings.
    init_strategy : callable
        NumPyro init strategy.
    """

    sample_field = "z"
    default_fields = ("z", "diverging")

    def __init__(self, model: Callable, *, dense_mass: bool = False, target_accept: float = 0.8,
                 max_tree_depth: int = 10, init_strategy: Callable = init_to_uniform):
        if not callable(model):
            raise ValueError(f"model: expected a callable NumPyro model, got {type(model)}")
        self.model = model
        self.dense_mass = dense_mass
        self.target_accept = target_accept
        self.max_tree_depth = max_tree_depth
        self.init_strategy = init_strategy
        self._initialized = False
        self._schedule = None

    def postprocess_fn(self, model_args, model_kwargs):
        if not self._initialized:
            return lambda z: z
        return functools.partial(constrain_fn, self.model, model_args, model_kwargs or {},
                                 return_deterministic=True)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        batched = rng_key.ndim > (0 if _is_typed(rng_key) else 1)
        key_init = rng_key if batched else rng_key[None]
        _check_model(self.model, key_init[0], model_args, model_kwargs or {})
        info = _initialize(self.model, key_init, model_args, model_kwargs, self.init_strategy)
        self._initialized = True
        with jax.ensure_compile_time_eval():
            sched = np.asarray(build_schedule(max(num_warmup, 1)), dtype=np.int32).reshape(-1, 2)
        self._schedule = (jnp.asarray(sched[:, 0]), jnp.asarray(sched[:, 1]), num_warmup)
        z = info.param_info.z if init_params is None else init_params
        if not batched:
            z = jax.tree.map(lambda a: a[0], z) if init_params is None else z
        logdensity_fn = self._logdensity(model_args, model_kwargs)

        def one(k, zz):
            st = blackjax.nuts.init(zz, logdensity_fn)
            ad = window_adaptation_init(zz, dense_mass=self.dense_mass,
                                        target_accept=self.target_accept)
            zero = jnp.zeros((), st.logdensity.dtype)
            return NUTSKernelState(jnp.zeros((), jnp.int32), st.position, st.logdensity,
                                   st.logdensity_grad, -st.logdensity, ad, jnp.zeros((), bool),
                                   zero, jnp.zeros((), jnp.int32), zero, ad.step_size, k)

        return jax.vmap(one)(rng_key, z) if batched else one(rng_key, z)

    def _logdensity(self, model_args, model_kwargs):
        return model_logdensity(self.model, model_args, model_kwargs or {})

    def sample(self, state, model_args, model_kwargs):
        if state.i.ndim > 0:
            return jax.vmap(lambda s: self._sample_one(s, model_args, model_kwargs))(state)
        return self._sample_one(state, model_args, model_kwargs)

    def _sample_one(self, state: NUTSKernelState, model_args, model_kwargs) -> NUTSKernelState:
        logdensity_fn = self._logdensity(model_args, model_kwargs)
        stages, ends, num_warmup = self._schedule
        key, k = jax.random.split(state.rng_key)
        ad = state.adaptation
        warming = state.i < num_warmup
        step_size = jnp.where(warming, ad.step_size, jnp.exp(ad.da_state.log_step_size_avg))
        hmc_state = blackjax.mcmc.hmc.HMCState(state.z, state.logdensity, state.logdensity_grad)
        new, info = blackjax.nuts.build_kernel()(k, hmc_state, logdensity_fn, step_size,
                                                 ad.inverse_mass_matrix,
                                                 max_num_doublings=self.max_tree_depth)
        idx = jnp.minimum(state.i, stages.shape[0] - 1)
        ad = jax.lax.cond(
            warming,
            lambda a: window_adaptation_update(a, stages[idx], ends[idx].astype(bool),
                                               new.position, info.acceptance_rate,
                                               dense_mass=self.dense_mass,
                                               target_accept=self.target_accept),
            lambda a: a, ad)
        return NUTSKernelState(state.i + 1, new.position, new.logdensity, new.logdensity_grad,
                               -new.logdensity, ad, info.is_divergent, info.acceptance_rate,
                               info.num_integration_steps, info.energy, step_size, key)

    def get_diagnostics_str(self, state):
        return f"{int(state.num_steps)} steps of size {float(state.step_size):.2e}. " \
               f"acc. prob={float(state.accept_prob):.2f}"
