r"""The one optax training loop of probkit.

Every gradient-based fit in the package runs through :func:`run`: PFN and neural-process
training, fBNN prior matching, NNGP marginal-likelihood fits, the DKF's MLP learner and the optax
path of the exact GP. One step is

.. math::
    g_t = \nabla_\theta \ell(\theta_t, k_t),\qquad u_t = T(g_t),\qquad
    \theta_{t+1} = \theta_t - \eta(t, T_{\rm total})\, u_t,

with ``T`` an optax gradient transformation *without* its learning rate (default
``optax.scale_by_adam()``; chain ``optax.clip_by_global_norm`` in front to clip) and
:math:`\eta` a constant or a schedule of the step and the total step count (so a schedule can be
stretched when training runs for a time budget rather than a step count; :class:`WarmupCosine`).

* ``steps_per_dispatch`` steps are compiled into one ``lax.scan``; the compiled chunk is cached
  by the loss function, the transformation and the array shapes, so a second fit of the same
  shapes does not recompile (pass module-level functions and a transformation built once).
* ``num_steps`` or ``time_budget`` (seconds; the step count is re-estimated from the measured
  speed, and the schedule's total with it).
* a tqdm bar with the running loss (``progress_bar``);
* ``checkpoint``: the parameters, optimiser state, step and key are saved every
  ``checkpoint_every`` steps (one :mod:`probkit._io` file, written atomically) and at the end;
  if the file exists, training resumes from it — in a new process too. The ``settings`` dict
  (JSON) is stored with it and compared *by content* on resume;
* ``keep_best``: return the parameters of the dispatch with the lowest mean loss;
* several processes (:mod:`probkit.inference.distributed`): the state is replicated over the
  devices of all processes, the loss may shard its batch over them, only process 0 writes the
  checkpoint (every process reads it on resume: put it on a shared file system), and every
  process returns process-local parameters.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference import optimize
>>> def loss(theta, key):
...     return jnp.sum((theta - 3.0) ** 2)
>>> out = optimize.run(loss, jnp.zeros(2), key=jax.random.key(0), num_steps=500,
...                    learning_rate=0.1, progress_bar=False)
>>> [round(float(v), 3) for v in out.params]
[3.0, 3.0]
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.sharding import NamedSharding, PartitionSpec

from probkit import _io
from probkit._checks import check_key, check_positive, check_positive_int
from probkit.inference import distributed

__all__ = ["run", "OptimizeResult", "Checkpoint", "Constant", "WarmupCosine", "ADAM"]

#: Adam's update direction without a learning rate (the default transformation).
ADAM = optax.scale_by_adam()


class OptimizeResult(NamedTuple):
    """What :func:`run` returns."""

    params: Any
    losses: np.ndarray  # mean loss of each dispatch of ``steps_per_dispatch`` steps
    steps: int
    seconds: float
    best_loss: float


class Checkpoint(eqx.Module):
    """Everything needed to resume a run (saved with :mod:`probkit._io`)."""

    params: Any
    opt_state: Any
    step: int
    key: Any


class Constant(eqx.Module):
    """A constant learning rate ``eta(step, total) = rate``."""

    rate: Array

    def __call__(self, step, total):
        return self.rate


class WarmupCosine(eqx.Module):
    r"""Linear warm-up from 0 to ``peak``, then cosine decay to ``final_fraction * peak`` at the
    last step: :math:`\eta(t) = \eta_{\max} t / w` for :math:`t < w`, else
    :math:`\eta_{\max}(c + (1 - c)\tfrac12(1 + \cos(\pi (t - w)/(T - w))))`.

    The warm-up length :math:`w` is ``warmup_steps`` if given, else ``warmup_fraction`` of the
    total :math:`T` (recomputed when a time budget moves the total). A pytree: new rates do not
    recompile.

    Raises
    ------
    ValueError
        ``peak`` not finite and positive, ``warmup_fraction`` or ``final_fraction`` outside
        [0, 1], ``warmup_steps`` not an integer >= 1.
    """

    peak: Array
    warmup_fraction: Array
    final_fraction: Array
    warmup_steps: Array

    def __init__(self, peak: float, warmup_fraction: float = 0.05, final_fraction: float = 0.01,
                 warmup_steps: int | None = None):
        check_positive("peak", peak)
        for name, value in (("warmup_fraction", warmup_fraction),
                            ("final_fraction", final_fraction)):
            arr = check_positive(name, value, allow_zero=True)
            if arr.ndim or arr > 1:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        self.peak = jnp.asarray(peak, jnp.float32)
        self.warmup_fraction = jnp.asarray(warmup_fraction, jnp.float32)
        self.final_fraction = jnp.asarray(final_fraction, jnp.float32)
        self.warmup_steps = jnp.asarray(-1 if warmup_steps is None else
                                        check_positive_int("warmup_steps", warmup_steps),
                                        jnp.float32)

    def __call__(self, step, total):
        warm = jnp.where(self.warmup_steps > 0, self.warmup_steps,
                         jnp.maximum(jnp.floor(self.warmup_fraction * total), 1.0))
        up = self.peak * step / warm
        frac = jnp.clip((step - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
        fin = self.final_fraction
        down = self.peak * (fin + (1 - fin) * 0.5 * (1 + jnp.cos(jnp.pi * frac)))
        return jnp.where(step < warm, up, down)


@eqx.filter_jit
def _chunk(loss, transform, schedule, params, static, opt_state, key, step, total, args,
           length):
    def one(carry, _):
        p, s, k, i = carry
        if k is None:
            sub = None
        else:
            k, sub = jax.random.split(k)
        value, grads = jax.value_and_grad(
            lambda q: loss(eqx.combine(q, static), sub, *args))(p)
        updates, s = transform.update(grads, s, p)
        rate = schedule(i.astype(jnp.float32), total)
        p = jax.tree_util.tree_map(lambda a, u: a - (rate * u).astype(a.dtype), p, updates)
        return (p, s, k, i + 1), value

    (params, opt_state, key, _), values = jax.lax.scan(
        one, (params, opt_state, key, step), None, length=length)
    return params, opt_state, key, jnp.mean(values), jnp.all(jnp.isfinite(values))


def _strongly_typed(tree):
    """``tree`` with weakly typed arrays made strong (same dtype).

    A compiled chunk returns strongly typed arrays; weakly typed ones in the first call (e.g.
    ``jnp.full(shape, 0.5)``) would make the second call compile the chunk again (measured:
    three compilations of 14-21 s each for the NNGP classifier's first fit).
    """
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype=a.dtype)
        if isinstance(a, jax.Array) and a.weak_type else a, tree)


def _check_params(params) -> None:
    """``params`` must hold at least one floating-point array, and its concrete ones are finite."""
    leaves = [v for v in jax.tree_util.tree_leaves(params) if eqx.is_inexact_array(v)]
    if not leaves:
        raise ValueError(f"params: no floating-point array to train in {type(params).__name__} "
                         "(give the initial parameters as arrays, a NamedTuple or a Module)")
    for i, v in enumerate(leaves):
        if isinstance(v, jax.core.Tracer):
            continue
        bad = ~np.isfinite(np.asarray(v))
        if np.any(bad):
            raise ValueError(f"params: array {i} (shape {tuple(v.shape)}) contains NaN or inf at "
                             f"{int(np.sum(bad))} entries")


def _same_structure(name: str, like, saved, path):
    """``saved``'s array leaves in ``like``'s tree structure (shapes checked)."""
    a, b = jax.tree_util.tree_leaves(like), jax.tree_util.tree_leaves(saved)
    if len(a) != len(b) or any(np.shape(u) != np.shape(v) for u, v in zip(a, b, strict=False)):
        raise ValueError(f"checkpoint: {str(path)!r} holds {name} of another structure than the "
                         "run being resumed")
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                        [jnp.asarray(v) for v in b])


def run(loss: Callable[..., Array], params, *, key: Array | None = None, args: tuple = (),
        num_steps: int | None = None, time_budget: float | None = None,
        learning_rate: float | eqx.Module = 1e-3,
        transform: optax.GradientTransformation = ADAM, steps_per_dispatch: int = 25,
        progress_bar: bool = True, desc: str = "fit", checkpoint=None,
        checkpoint_every: int = 1000, settings: dict[str, Any] | None = None,
        keep_best: bool = False) -> OptimizeResult:
    """Minimise ``loss(params, key, *args)`` with an optax transformation.

    Parameters
    ----------
    loss : callable
        ``loss(params, key, *args) -> scalar``; ``key`` is a fresh PRNG key per step (``None``
        when ``key`` is not given). Pass a module-level function so repeated fits reuse the
        compiled program.
    params : pytree
        Initial parameters (an equinox Module, a NamedTuple or array): its inexact arrays are
        trained, everything else is held fixed.
    key : PRNG key, optional
        For stochastic losses (minibatches, sampled datasets).
    args : tuple
        Extra arguments of ``loss`` (data), traced: new values of the same shapes do not
        recompile.
    num_steps, time_budget : int, float
        Exactly one: a step count, or seconds of training.
    learning_rate : float or schedule
        Constant, or a schedule module ``eta(step, total)`` such as :class:`WarmupCosine`.
    transform : optax.GradientTransformation
        Update direction without the learning rate (default Adam).
    steps_per_dispatch : int
        Steps per compiled ``lax.scan`` (also the granularity of the bar, checkpoints and the
        time budget). With ``num_steps`` it is lowered to the largest divisor of ``num_steps``
        not above it, so that exactly ``num_steps`` steps run.
    progress_bar : bool
        tqdm bar with the running loss.
    desc : str
        The bar's label.
    checkpoint : path, optional
        Save here every ``checkpoint_every`` steps and at the end; resume from it if it exists.
    settings : dict, optional
        JSON-able description of the run, stored in the checkpoint and compared on resume.
    keep_best : bool
        Return the parameters after the dispatch with the lowest mean loss.

    Returns
    -------
    OptimizeResult
        ``params``, per-dispatch mean ``losses``, ``steps`` done, ``seconds``, ``best_loss``.

    Raises
    ------
    ValueError
        Naming the argument: a ``loss`` that is not callable; ``params`` without a
        floating-point array to train, or with NaN or inf in one; a non-key ``key``; neither or
        both of ``num_steps`` and ``time_budget``, or one out of range; a non-positive
        ``learning_rate``; ``steps_per_dispatch`` or ``checkpoint_every`` below 1; a
        checkpoint written with other settings or another structure.
    FloatingPointError
        If the loss becomes NaN or infinite (the parameters before that dispatch are kept in the
        checkpoint, if any).
    """
    if not callable(loss):
        raise ValueError(f"loss: expected a callable loss(params, key, *args), got "
                         f"{type(loss).__name__}")
    _check_params(params)
    if key is not None:
        key = check_key("key", key)
    if (num_steps is None) == (time_budget is None):
        raise ValueError("num_steps: give exactly one of num_steps and time_budget")
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
    else:
        check_positive("time_budget", time_budget)
    steps_per_dispatch = check_positive_int("steps_per_dispatch", steps_per_dispatch)
    checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    if callable(learning_rate):
        schedule = learning_rate
    else:
        check_positive("learning_rate", learning_rate)
        schedule = Constant(jnp.asarray(learning_rate, jnp.float32))
    if num_steps is not None:  # exactly num_steps steps: the largest chunk that divides them
        steps_per_dispatch = max(c for c in range(1, min(num_steps, steps_per_dispatch) + 1)
                                 if num_steps % c == 0)
    train, static = eqx.partition(params, eqx.is_inexact_array)
    train = _strongly_typed(train)
    opt_state = _strongly_typed(transform.init(train))
    step = 0
    record = {"num_steps": num_steps, "time_budget": time_budget, **(settings or {})}
    if checkpoint is not None and pathlib.Path(checkpoint).is_file():
        header = _io.read_header(checkpoint)
        saved = header["metadata"].get("settings")
        if saved != record:
            raise ValueError(f"checkpoint: {str(checkpoint)!r} was written with settings "
                             f"{saved}, resuming with {record}")
        ck = _io.load(checkpoint, expected=Checkpoint)
        # Leaves only, into today's structure: static metadata (configuration strings, say)
        # may differ in spelling between processes without changing what is trained.
        train = _same_structure("params", train, eqx.partition(ck.params, eqx.is_inexact_array)[0],
                                checkpoint)
        opt_state = _same_structure("opt_state", opt_state, ck.opt_state, checkpoint)
        step, key = int(ck.step), ck.key

    total = num_steps if num_steps is not None else 10**9
    # On several devices (of one or more processes: probkit.inference.distributed) the state
    # is replicated on all of them, as the loss may shard its batch: every dispatch then sees
    # the same input layout (one compilation). Nothing moves on one device.
    static_local = static
    if jax.device_count() > 1:
        train, static, opt_state, key, args = distributed.to_global(
            (train, static, opt_state, key, tuple(args)),
            NamedSharding(distributed.data_mesh(), PartitionSpec()))
    bar = None
    if progress_bar and distributed.is_main_process():
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=step, desc=desc, unit="step", leave=False)
    losses: list[float] = []
    best, best_loss = train, np.inf
    start, last_ckpt = time.perf_counter(), step
    timed_start, timed_steps = None, 0

    def save_ck():  # one file, written by process 0, read by all on resume
        ck = distributed.to_local(Checkpoint(eqx.combine(train, static_local), opt_state, step,
                                             key))
        if distributed.is_main_process():
            _io.save(checkpoint, ck, metadata={"settings": record})
        distributed.barrier("probkit checkpoint written")

    try:
        while step < total:
            train, opt_state, key, value, finite = _chunk(
                loss, transform, schedule, train, static, opt_state, key,
                jnp.asarray(step, jnp.int32), jnp.asarray(total, jnp.float32), tuple(args),
                steps_per_dispatch)
            if not bool(finite):
                raise FloatingPointError(f"{desc}: the loss became NaN or infinite between "
                                         f"steps {step} and {step + steps_per_dispatch}")
            step += steps_per_dispatch
            value = float(value)
            losses.append(value)
            if keep_best and value < best_loss:
                best, best_loss = train, value
            if time_budget is not None:
                now = time.perf_counter()
                if timed_start is None:  # the first dispatch includes compilation
                    timed_start, timed_steps = now, step
                elif step > timed_steps:
                    rate = (step - timed_steps) / max(now - timed_start, 1e-9)
                    left = max(int(rate * (time_budget - (now - start))), 0)
                    total = step + -(-left // steps_per_dispatch) * steps_per_dispatch
                    if distributed.is_multiprocess():  # one step count for all processes
                        total = int(distributed.from_main(np.int32(min(total, 10**9))))
            if bar is not None:
                bar.update(steps_per_dispatch)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4g}")
            if checkpoint is not None and step - last_ckpt >= checkpoint_every:
                save_ck()
                last_ckpt = step
    finally:
        if bar is not None:
            bar.close()
    if checkpoint is not None and last_ckpt != step:
        save_ck()
    final = best if keep_best else train
    best_loss = best_loss if keep_best else (losses[-1] if losses else np.nan)
    return OptimizeResult(distributed.to_local(eqx.combine(final, static_local)),
                          np.asarray(losses), step,
                          time.perf_counter() - start, float(best_loss))
