r"""The HMC engine: BlackJAX samplers for NumPyro models.

Two levels, as in BlackJAX:

* pure functions of one chain in :mod:`probkit.inference.samplers` (NUTS and static HMC with
  Stan's window adaptation, MAMS and MCLMC with BlackJAX's own tuners);
* a convenience call :func:`run` that takes a NumPyro model, vectorises or shards the chains
  over ``jax.devices()``, compiles once per model and data shape and returns a
  :class:`probkit.result.Result`; and :class:`BlackJAXKernel` (``sampler=`` any of the four,
  :class:`BlackJAXNUTS` for NUTS), a ``numpyro.infer.MCMCKernel`` so that
  ``numpyro.infer.MCMC``, ``Predictive`` and ``arviz.from_numpyro`` work with it.

``sampler="nuts"`` (the default) is the multinomial, iterative No-U-Turn sampler of BlackJAX
(Hoffman & Gelman 2014; Betancourt 2017); ``"mams"`` the Metropolis-adjusted microcanonical
sampler (Robnik et al. 2025, arXiv:2503.01707); ``"mclmc"`` its unadjusted Langevin form
(biased by the step size; Robnik et al. 2023); ``"hmc"`` static-trajectory HMC. Every result
records the gradient evaluations per draw (``sample_stats["n_grad"]``).

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
>>> def means(y=None):                       # MAMS and MCLMC need two or more dimensions
...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
...     numpyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)
>>> res = hmc.run(means, y=jnp.array([[0.5, 1.5]]), key=jax.random.key(0), sampler="mams",
...               num_warmup=200, num_samples=200, num_chains=2, progress_bar=False)
>>> n_steps, n_grad = res.sample_stats["n_steps"], res.sample_stats["n_grad"]
>>> bool((n_grad == 2 * n_steps).all())     # McLachlan: two gradients per step
True
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
from probkit.inference import distributed, samplers
from probkit.inference.progress import ProgressBar
from probkit.inference.samplers import SamplerOptions, sample_chain, sampler_options
from probkit.result import Result

__all__ = ["BlackJAXKernel", "BlackJAXNUTS", "KernelState", "model_logdensity", "run"]

CHAIN_METHODS = ("auto", "sequential", "vectorized", "parallel")


# --------------------------------------------------------------------------------------------
# Model inspection: errors that name the site
# --------------------------------------------------------------------------------------------


def _trace_model(model, key, args, kwargs):
    seeded = numpyro.handlers.seed(model, rng_seed=key)
    return numpyro.handlers.trace(seeded).get_trace(*args, **kwargs)


class _Site(NamedTuple):
    """What :func:`_check_model` needs to know of a sample site (static, from one trace)."""

    name: str
    observed: bool
    discrete: bool
    enumerated: bool
    unit: bool
    dist_name: str


def _inspector(model, structure):
    """A compiled trace of ``model`` returning its observed values and unconstrained latent
    values, and the static description of its sites; cached per model and data structure.

    One small program instead of one eager dispatch (and compilation) per operation of the
    model: about 1 s less on a first fit of eight schools.
    """
    cache_key = ("inspect", model, _hashable(structure))
    if cache_key not in _PROGRAMS:
        sites: list[_Site] = []

        def inspect(key, dynamic):
            args, kwargs = _rebuild(dynamic, structure)
            trace = _trace_model(model, key, args, kwargs)
            observed, prototype = {}, {}
            sites.clear()
            for name, site in trace.items():
                if site["type"] != "sample":
                    continue
                fn = site["fn"]
                support = getattr(fn, "support", None)
                discrete = support is not None and support.is_discrete
                sites.append(_Site(name, bool(site["is_observed"]), discrete,
                                   bool(site["infer"].get("enumerate")),
                                   isinstance(fn, numpyro.distributions.Unit),
                                   type(fn).__name__))
                if site["is_observed"]:
                    observed[name] = site["value"]
                elif not discrete:
                    prototype[name] = biject_to(support).inv(site["value"])
            return observed, prototype

        _PROGRAMS[cache_key] = (jax.jit(inspect), sites)
    return _PROGRAMS[cache_key]


def _check_model(model, key, args, kwargs) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reject discrete latent sites and non-finite or empty observations.

    Returns the observed data and a prototype of the unconstrained latent values (their
    structure and shapes, needed to initialise inside compiled code).
    """
    dynamic, structure = _partition(args, kwargs)
    inspect, sites = _inspector(model, structure)
    observed, prototype = inspect(key, dynamic)
    for site in sites:
        name = site.name
        if site.observed:
            value = np.asarray(observed[name])
            observed[name] = value
            if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
                raise ValueError(
                    f"observed site {name!r}: contains NaN or inf at "
                    f"{int(np.sum(~np.isfinite(value)))} entries; remove or impute them "
                    "(HMC needs a finite likelihood)")
            if value.size == 0 and not site.unit:
                raise ValueError(f"observed site {name!r}: is empty (shape {value.shape}); with "
                                 "no data NUTS would sample the prior without a word")
        elif site.discrete and not site.enumerated:
            raise ValueError(
                f"latent site {name!r}: is discrete ({site.dist_name}); NUTS needs "
                "continuous latent variables. Marginalise it with enumeration "
                "(infer={'enumerate': 'parallel'} and numpyro's funsor support), use "
                "numpyro.infer.DiscreteHMCGibbs/MixedHMC, or another engine.")
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
    opts, num_warmup, num_samples, thinning, progress_rate, want_loglik, sequential = settings

    def chains(keys, z0, dynamic):
        args, kwargs = _rebuild(dynamic, structure)
        logdensity = model_logdensity(model, args, kwargs)

        def one(k, z, offset=0):
            return sample_chain(k, z, logdensity, sampler=opts, num_warmup=num_warmup,
                                num_samples=num_samples, thinning=thinning,
                                progress_rate=progress_rate, progress_offset=offset)

        if sequential:  # one chain after another: NUTS's loops stay unmasked
            offsets = jnp.arange(keys.shape[0]) * (num_warmup + num_samples)
            return jax.lax.map(lambda a: one(*a), (keys, z0, offsets))
        return jax.vmap(one)(keys, z0)

    if mesh_devices is not None:
        mesh = Mesh(np.asarray(mesh_devices), ("chain",))
        spec = PartitionSpec("chain")
        chains = jax.shard_map(chains, mesh=mesh, in_specs=(spec, spec, PartitionSpec()),
                               out_specs=spec, check_vma=False)

    def program(keys, z0, dynamic):
        draws, tuned = chains(keys, z0, dynamic)
        args, kwargs = _rebuild(dynamic, structure)

        def constrain(z):
            return constrain_fn(model, args, kwargs, z, return_deterministic=True)

        constrained = jax.vmap(jax.vmap(constrain))(draws.position)
        loglik = {}
        if want_loglik:
            loglik = log_likelihood(model, constrained, *args, batch_ndims=2, **kwargs)
        return draws, tuned, constrained, loglik

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


def run(model: Callable, *args, key: jax.Array, sampler: str = "nuts", num_warmup: int = 1000,
        num_samples: int = 1000, num_chains: int = 4, chain_method: str = "auto",
        dense_mass: bool = False, target_accept: float | None = None,
        init_strategy: Callable = init_to_uniform, max_tree_depth: int | None = None,
        num_integration_steps: int | None = None, desired_energy_var: float | None = None,
        pathfinder: bool = False, thinning: int = 1, log_likelihood: bool = True,
        progress_bar: bool = True, **kwargs) -> Result:
    """Sample the posterior of a NumPyro model with a BlackJAX sampler (NUTS by default).

    Every chain warms up with the sampler's own tuning (NUTS and HMC: Stan's windowed
    adaptation of the step size by dual averaging towards ``target_accept`` and of a diagonal
    or dense inverse mass matrix; MAMS and MCLMC: BlackJAX's step size, :math:`L` and
    diagonal preconditioner tuners) and then makes ``num_samples`` transitions. Warm-up,
    sampling, the map back to constrained space and the pointwise log-likelihood are one
    compiled program, reused for later calls with data of the same shapes.

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.
    *args, **kwargs
        Model arguments. Arrays and floats are traced (new values of the same shape reuse
        the compiled program); other values (ints, strings, None) are compile-time constants.
    key : PRNG key
        ``jax.random.key(seed)`` or ``jax.random.PRNGKey(seed)``.
    sampler : {"nuts", "hmc", "mams", "mclmc"}
        ``"nuts"``: No-U-Turn sampler; ``"hmc"``: static HMC with ``num_integration_steps``
        leapfrog steps; ``"mams"``: Metropolis-adjusted microcanonical sampler;
        ``"mclmc"``: unadjusted microcanonical Langevin (no Metropolis step, so a small
        step-size bias). The last two need at least two latent dimensions. See
        :mod:`probkit.inference.samplers`.
    num_warmup : int
        Adaptation transitions per chain (discarded).
    num_samples : int
        Kept transitions per chain (before thinning).
    num_chains : int
        Number of independent chains.
    chain_method : {"auto", "sequential", "vectorized", "parallel"}
        ``"sequential"`` runs the chains one after another inside the one compiled program
        (``lax.map``); ``"vectorized"`` vmaps them, which turns NUTS's data-dependent loops
        into masked lock-step ones and about doubles the compile time (eight schools: 5.5 s
        vs 2.9 s to trace and compile the sampling program;
        ``benchmarks/first_fit.py --breakdown``); ``"auto"`` (default) is ``"sequential"``
        on a CPU and ``"vectorized"`` on an accelerator. ``"parallel"`` shards the chains over
        ``jax.devices()`` (vmapped within each device); after
        :func:`probkit.inference.distributed.initialize` it uses the devices of all
        processes and every process returns all chains (call ``run`` on every process with
        the same arguments).
    dense_mass : bool
        Adapt a dense inverse mass matrix instead of a diagonal one (NUTS and HMC).
    target_accept : float, optional
        Target acceptance probability in (0, 1) of the Metropolis-adjusted samplers
        (default 0.8; 0.9 for MAMS).
    init_strategy : callable
        A NumPyro init strategy (``init_to_uniform``, ``init_to_median``, ...).
    max_tree_depth : int, optional
        NUTS: maximum number of trajectory doublings per transition (default 10).
    num_integration_steps : int, optional
        HMC: leapfrog steps per transition (default 16).
    desired_energy_var : float, optional
        MCLMC: target variance of the energy error per dimension (default 5e-4).
    pathfinder : bool
        Start every chain from a draw of its Pathfinder approximation (Zhang et al. 2022),
        run from the ``init_strategy`` point, and NUTS/HMC's warm-up from that
        approximation's inverse Hessian (:func:`probkit.inference.samplers.pathfinder_start`;
        it falls back to the plain start where Pathfinder fails). Costs one L-BFGS run and
        about 1,300 log-density evaluations per chain; pays where the default start is far
        from the typical set or the scales differ a lot.
    thinning : int
        Keep every ``thinning``-th draw.
    log_likelihood : bool
        Store the pointwise log-likelihood of every observed site (for ``az.loo``).
    progress_bar : bool
        Show a tqdm progress bar. The bar is driven by host callbacks compiled into the
        program, so switching it on or off compiles a second program once, and JAX's
        persistent compilation cache
        (:func:`probkit.compilation.enable_compilation_cache`) stores only the program
        without it.

    Returns
    -------
    Result
        Draws ``(chain, draw, ...)`` of every latent and deterministic site; sample stats
        ``lp``, ``diverging``, ``n_steps``, ``n_grad`` (gradient evaluations per kept draw),
        ``step_size``, and where the sampler has them ``acceptance_rate``, ``energy``,
        ``tree_depth`` (NUTS), ``energy_change`` (MCLMC) and ``trajectory_length`` (HMC, MAMS,
        MCLMC); observed data; pointwise log-likelihood. ``attrs`` holds the sampler, the
        wall time of compilation and sampling (``seconds``), the gradient evaluations of the
        warm-up over all chains (``warmup_n_grad``; the draws' own are ``n_grad``) and the
        devices used.

    Raises
    ------
    ValueError
        For a non-key ``key`` (or an array of keys), ``num_samples < 1``, ``num_chains < 1``,
        ``num_warmup < 0``, ``thinning`` out of range, an unknown ``sampler`` or
        ``chain_method``, an option the sampler does not have or out of range, a ``model`` or
        ``init_strategy`` that is not callable, a discrete latent site, non-finite or empty
        observed data, or a model whose initial log density is not finite (each message names
        the argument or site).
    """
    key = check_key("key", key)
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    num_warmup = check_positive_int("num_warmup", num_warmup, minimum=0)
    thinning = check_positive_int("thinning", thinning)
    opts = sampler_options(sampler, dense_mass=dense_mass, target_accept=target_accept,
                           max_tree_depth=max_tree_depth,
                           num_integration_steps=num_integration_steps,
                           desired_energy_var=desired_energy_var, pathfinder=pathfinder)
    if num_samples < thinning:
        raise ValueError(f"thinning: must not exceed num_samples ({num_samples}), got {thinning}")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method: expected one of {CHAIN_METHODS}, got {chain_method!r}")
    if not callable(model):
        raise ValueError(f"model: expected a callable NumPyro model, got {type(model).__name__}")
    if not callable(init_strategy):
        raise ValueError(f"init_strategy: expected a NumPyro init strategy (callable), got "
                         f"{type(init_strategy).__name__}")

    key_check, key_init, key_chains = _split(key, 3)
    observed, prototype = _check_model(model, key_check, args, kwargs)
    samplers.check_dimension(opts, prototype)
    dynamic, structure = _partition(args, kwargs)
    z0, valid = _compiled_init(model, structure, init_strategy)(
        _split(key_init, num_chains), prototype, dynamic)
    if not bool(np.all(valid)):
        raise ValueError(
            "model: the initial log density (or its gradient) is not finite; offending "
            f"site(s): {_diagnose_init(model, key_init, args, kwargs)}. Check observed values "
            "against each distribution's support, and the init_strategy.")
    devices = _choose_devices(num_chains, chain_method)
    if chain_method == "auto":
        chain_method = "sequential" if jax.default_backend() == "cpu" else "vectorized"
    sequential = chain_method == "sequential"
    total = num_warmup + num_samples
    # The progress callback is compiled in only with the bar: JAX's persistent compilation
    # cache does not store programs with host callbacks (probkit.enable_compilation_cache).
    # The decision uses the argument, not the process rank, so that all processes of a
    # distributed run compile the same program.
    progress_rate = max(total // 50, 1) if progress_bar else None
    settings = (opts, num_warmup, num_samples, thinning, progress_rate, bool(log_likelihood),
                devices is None and sequential)
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
        chains_in_turn = num_chains if settings[-1] else 1
        ProgressBar.open(total * chains_in_turn, f"{sampler.upper()} {num_chains} chains")
    try:
        draws, tuned, constrained, loglik = program(chain_keys, z0, dynamic)
        draws = jax.block_until_ready(draws)
    finally:
        if progress_bar:
            ProgressBar.close()
    seconds = time.perf_counter() - start
    sharding_devices = sorted(d.id for d in draws.logdensity.sharding.device_set)
    if multiprocess:  # all chains, gathered onto every process
        draws, tuned, constrained, loglik = distributed.to_local(
            (draws, tuned, constrained, loglik))
    n_keep = num_samples // thinning
    stats = {"lp": draws.logdensity, **draws.stats,
             "step_size": jnp.broadcast_to(tuned.step_size[:, None], (num_chains, n_keep))}
    if sampler != "nuts":
        stats["trajectory_length"] = jnp.broadcast_to(tuned.trajectory_length[:, None],
                                                      (num_chains, n_keep))
    attrs = {"engine": f"probkit.inference.hmc (BlackJAX {sampler.upper()})",
             "sampler": sampler, "num_warmup": num_warmup,
             "num_chains": num_chains, "chain_method": chain_method,
             "dense_mass": bool(dense_mass), "seconds": seconds,
             "warmup_n_grad": int(np.sum(np.asarray(tuned.warmup_n_grad, np.int64))),
             "devices": str(sharding_devices), "num_devices": len(sharding_devices)}
    return Result(posterior=constrained, sample_stats=stats, observed_data=observed,
                  log_likelihood=loglik, attrs=attrs)


# --------------------------------------------------------------------------------------------
# numpyro.infer.MCMCKernel
# --------------------------------------------------------------------------------------------


class KernelState(NamedTuple):
    """State of :class:`BlackJAXKernel` between NumPyro ``MCMC`` steps.

    ``inner`` is the BlackJAX sampler's own state; ``adaptation`` the window adaptation state
    (NUTS, HMC: adapted transition by transition) or the :class:`~probkit.inference.samplers.
    Tuned` parameters (MAMS, MCLMC: tuned in ``init``).
    """

    i: jax.Array
    z: Any
    potential_energy: jax.Array
    inner: Any
    adaptation: Any
    diverging: jax.Array
    accept_prob: jax.Array
    num_steps: jax.Array
    n_grad: jax.Array
    step_size: jax.Array
    rng_key: jax.Array


class BlackJAXKernel(MCMCKernel):
    """A BlackJAX sampler with its own tuning as a ``numpyro.infer.MCMCKernel``.

    Use it wherever NumPyro expects a kernel::

        kernel = BlackJAXKernel(model, sampler="mams")
        mcmc = numpyro.infer.MCMC(kernel, num_warmup=500, num_samples=500)
        mcmc.run(jax.random.key(0), x, y=y, extra_fields=("n_grad",))
        az.from_numpyro(mcmc)

    NUTS and HMC adapt step by step inside :meth:`sample` (Stan's windows, a ``lax.cond`` on
    the iteration counter). BlackJAX's MAMS and MCLMC tuners run as one call, so these two
    spend the ``num_warmup`` transitions NumPyro asks for inside :meth:`init`, and NumPyro's
    warm-up iterations then only advance the counter: the gradient evaluations match
    :func:`run` with the same settings. All of NumPyro's chain methods work; with
    ``chain_method="vectorized"`` NumPyro passes batched keys and states, and the kernel
    vmaps itself. ``extra_fields`` may name any field of :class:`KernelState` (``n_grad``:
    gradient evaluations of the transition).

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    sampler : {"nuts", "hmc", "mams", "mclmc"}
        See :func:`run`.
    dense_mass, target_accept, max_tree_depth, num_integration_steps, desired_energy_var, pathfinder
        The sampler's options, as in :func:`run` (refused by samplers that lack them).
    init_strategy : callable
        NumPyro init strategy.
    """

    sample_field = "z"
    default_fields = ("z", "diverging")

    def __init__(self, model: Callable, *, sampler: str = "nuts", dense_mass: bool = False,
                 target_accept: float | None = None, max_tree_depth: int | None = None,
                 num_integration_steps: int | None = None,
                 desired_energy_var: float | None = None, pathfinder: bool = False,
                 init_strategy: Callable = init_to_uniform):
        if not callable(model):
            raise ValueError(f"model: expected a callable NumPyro model, got {type(model)}")
        self.model = model
        self.opts: SamplerOptions = sampler_options(
            sampler, dense_mass=dense_mass, target_accept=target_accept,
            max_tree_depth=max_tree_depth, num_integration_steps=num_integration_steps,
            desired_energy_var=desired_energy_var, pathfinder=pathfinder)
        self.init_strategy = init_strategy
        self._initialized = False
        self._num_warmup = 0

    @property
    def _windowed(self) -> bool:
        return self.opts.sampler in ("nuts", "hmc")

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
        self._num_warmup = num_warmup
        z = info.param_info.z if init_params is None else init_params
        if not batched:
            z = jax.tree.map(lambda a: a[0], z) if init_params is None else z
        samplers.check_dimension(self.opts, jax.tree.map(lambda a: a[0], z) if batched else z)
        logdensity_fn = self._logdensity(model_args, model_kwargs)
        opts = self.opts

        def one(k, zz):
            key, k_warm = jax.random.split(k)
            imm = None
            if opts.pathfinder:
                k_warm, k_start = jax.random.split(k_warm)
                zz, imm = samplers.pathfinder_start(k_start, zz, logdensity_fn,
                                                    dense_mass=opts.dense_mass)
            if self._windowed:
                st = blackjax.hmc.init(zz, logdensity_fn)
                ad = samplers.window_adaptation_init(zz, dense_mass=opts.dense_mass,
                                                     target_accept=opts.target_accept,
                                                     inverse_mass_matrix=imm)
            else:
                st, ad = samplers.warmup(k_warm, zz, logdensity_fn, opts, num_warmup)
            zero = jnp.zeros((), st.logdensity.dtype)
            izero = jnp.zeros((), jnp.int32)
            return KernelState(izero, st.position, -st.logdensity, st, ad,
                               jnp.zeros((), bool), zero, izero, izero,
                               jnp.asarray(ad.step_size, st.logdensity.dtype), key)

        return jax.jit(jax.vmap(one) if batched else one)(rng_key, z)

    def _logdensity(self, model_args, model_kwargs):
        return model_logdensity(self.model, model_args, model_kwargs or {})

    def sample(self, state, model_args, model_kwargs):
        if state.i.ndim > 0:
            return jax.vmap(lambda s: self._sample_one(s, model_args, model_kwargs))(state)
        return self._sample_one(state, model_args, model_kwargs)

    def _sample_one(self, state: KernelState, model_args, model_kwargs) -> KernelState:
        logdensity_fn = self._logdensity(model_args, model_kwargs)
        num_warmup = self._num_warmup
        key, k = jax.random.split(state.rng_key)
        opts, ad = self.opts, state.adaptation

        def moved(new, stats, adaptation, step_size):
            dtype = new.logdensity.dtype
            accept = stats.get("acceptance_rate", jnp.full((), jnp.nan, dtype))
            return KernelState(state.i + 1, new.position, -new.logdensity, new, adaptation,
                               stats["diverging"], jnp.asarray(accept, dtype),
                               stats["n_steps"].astype(jnp.int32),
                               stats["n_grad"].astype(jnp.int32),
                               jnp.asarray(step_size, dtype), key)

        if not self._windowed:  # tuned in init; NumPyro's warm-up only counts
            step = samplers.transition(opts, logdensity_fn, ad.step_size,
                                       ad.inverse_mass_matrix, ad.trajectory_length)

            def move(st):
                new, stats = step(st.inner, k)
                return moved(new, stats, ad, ad.step_size)

            def hold(st):
                return st._replace(i=st.i + 1, rng_key=key)

            return jax.lax.cond(state.i < num_warmup, hold, move, state)

        new, ad, stats, step_size = samplers.windowed_transition(
            opts, logdensity_fn, k, state.inner, ad, state.i, num_warmup)
        return moved(new, stats, ad, step_size)

    def get_diagnostics_str(self, state):
        return f"{int(state.num_steps)} steps of size {float(state.step_size):.2e}. " \
               f"acc. prob={float(state.accept_prob):.2f}"


class BlackJAXNUTS(BlackJAXKernel):
    """BlackJAX NUTS with Stan's window adaptation as a ``numpyro.infer.MCMCKernel``
    (:class:`BlackJAXKernel` with ``sampler="nuts"``)::

        mcmc = numpyro.infer.MCMC(BlackJAXNUTS(model), num_warmup=500, num_samples=500)
    """

    def __init__(self, model: Callable, *, dense_mass: bool = False,
                 target_accept: float | None = None, max_tree_depth: int | None = None,
                 init_strategy: Callable = init_to_uniform):
        super().__init__(model, sampler="nuts", dense_mass=dense_mass,
                         target_accept=target_accept, max_tree_depth=max_tree_depth,
                         init_strategy=init_strategy)
