r"""Training a PFN on datasets from a prior: the loss, the optimiser loop, checkpoints.

The PFN objective (Müller et al., ICLR 2022, eq. 2) is the expected negative log predictive
density of held-out points,

.. math::
    \ell(\phi) = \mathbb{E}_{D \sim p(D),\, n}\Big[-\frac{1}{N-n}\sum_{i > n}
    \log q_\phi(y_i \mid x_i, D_{1:n})\Big],

whose minimiser is the posterior predictive of the prior. Each step draws ``batch_size``
datasets of ``max_points`` points inside the compiled step (no host round trip), one training
size ``n`` per batch from :math:`\{0, \dots, N-1\}` with weights :math:`\propto 1/(N - n)` (so
every ``n`` contributes equally many query points), passed as a traced integer. Adam with linear
warm-up and cosine decay (:func:`learning_rate`),
gradient clipping at norm 1. Several steps run per dispatch inside
``lax.scan``; the batch is sharded over ``jax.devices()`` (data parallel; a no-op on one device).

With ``vary_input_dim=True`` each dataset draws its dimension ``d`` from ``1..max_input_dim``:
the unused input columns are held at the lower bound of the box, so a GP prior with ARD kernels
is exactly a GP on the active columns, and the network sees them as zero-padded columns.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from probkit._checks import check_key, check_positive, check_positive_int
from probkit.inference.pfn import bar
from probkit.inference.pfn.model import PFN, PFNConfig, _predict, build, load, save
from probkit.priors import Prior

__all__ = ["init", "train", "batch_loss", "TrainResult", "train_size_weights", "learning_rate"]


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    pfn: PFN
    losses: np.ndarray  # mean loss per dispatch of ``steps_per_call`` steps
    steps: int
    seconds: float


def train_size_weights(max_points: int) -> Array:
    """Probabilities of the training size ``n = 0..N-1``, proportional to ``1/(N - n)``."""
    w = 1.0 / (max_points - jnp.arange(max_points))
    return w / w.sum()


def init(prior: Prior, *, key: Array, max_points: int = 60, num_buckets: int = 100,
         emsize: int = 128, num_layers: int = 4, num_heads: int = 4, ff_factor: int = 2,
         max_input_dim: int | None = None, standardize_y: bool = False,
         num_border_datasets: int = 10_000, prior_name: str = "") -> PFN:
    """A fresh PFN for ``prior``, with bar borders from its samples.

    Parameters
    ----------
    prior : Prior
        E.g. :class:`probkit.priors.GPPrior` or :class:`probkit.priors.NumPyroPrior`; its
        ``bounds`` become the PFN's input box.
    key : Array
        PRNG key (borders and initial weights).
    max_points : int
        Points per training sequence (at most ``max_points - 1`` training points later).
    num_buckets : int
        Buckets of the bar distribution.
    emsize, num_layers, num_heads, ff_factor : int
        Network sizes.
    max_input_dim : int, optional
        Largest input dimension served (default ``prior.input_dim``).
    standardize_y : bool
        Per-dataset standardisation of ``y`` (see :mod:`probkit.inference.pfn.model`).
    num_border_datasets : int
        Prior datasets drawn for the borders.
    prior_name : str
        Description stored with the model.

    Examples
    --------
    >>> import jax
    >>> from probkit.priors import GPPrior
    >>> from probkit.inference.pfn import init
    >>> pfn = init(GPPrior("rbf", lengthscale=0.2), key=jax.random.key(0), max_points=20,
    ...            num_buckets=20, emsize=16, num_layers=1, num_heads=2)
    >>> pfn.borders.shape
    (21,)
    """
    key = check_key("key", key)
    max_points = check_positive_int("max_points", max_points, minimum=2)
    max_input_dim = check_positive_int("max_input_dim", max_input_dim or prior.input_dim)
    if prior.input_dim > max_input_dim:
        raise ValueError(f"max_input_dim: {max_input_dim} is below the prior's input_dim "
                         f"{prior.input_dim}")
    kb, kn = jax.random.split(key)
    data = prior.sample(kb, check_positive_int("num_border_datasets", num_border_datasets),
                        max_points)
    y = np.asarray(data.y, np.float64)
    if standardize_y:
        y = (y - y.mean(1, keepdims=True)) / np.maximum(y.std(1, ddof=1, keepdims=True), 1e-6)
        y_loc, y_scale = 0.0, 1.0
    else:
        y_loc, y_scale = float(np.mean(y)), float(np.std(y))
        y = (y - y_loc) / y_scale
    borders = bar.borders_from_samples(y, num_buckets)
    config = PFNConfig(max_points=max_points, max_input_dim=max_input_dim,
                       num_buckets=int(borders.shape[0]) - 1, emsize=emsize,
                       num_layers=num_layers, num_heads=num_heads, ff_factor=ff_factor,
                       x_bounds=tuple(float(b) for b in prior.bounds),
                       standardize_y=standardize_y, y_loc=y_loc, y_scale=y_scale,
                       prior=prior_name or repr(prior))
    return build(config, borders, key=kn)


def _draw_batch(prior: Prior, config: PFNConfig, key: Array, batch_size: int,
                vary_input_dim: bool):
    n_pts, d_max = config.max_points, config.max_input_dim
    lo, hi = config.x_bounds
    kx, kd, ky = jax.random.split(key, 3)
    if vary_input_dim:
        dims = jax.random.randint(kd, (batch_size,), 1, d_max + 1)
    else:
        dims = jnp.full((batch_size,), prior.input_dim)
    x = jax.random.uniform(kx, (batch_size, n_pts, prior.input_dim), minval=lo, maxval=hi)
    x = jnp.where(jnp.arange(prior.input_dim) < dims[:, None, None], x, lo)
    y = prior.sample_at(ky, x).y
    x = jnp.pad(x, ((0, 0), (0, 0), (0, d_max - prior.input_dim)), constant_values=lo)
    return x, y, dims


def batch_loss(pfn: PFN, prior: Prior, key: Array, batch_size: int,
               vary_input_dim: bool = False) -> Array:
    """Mean NLL (in normalised units) of the held-out points of one batch of prior datasets."""
    cfg = pfn.config
    k_data, k_n = jax.random.split(key)
    x, y, dims = _draw_batch(prior, cfg, k_data, batch_size, vary_input_dim)
    if len(jax.devices()) > 1 and batch_size % len(jax.devices()) == 0:
        sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)),
                                 PartitionSpec("data"))
        x, y, dims = (jax.lax.with_sharding_constraint(a, sharding) for a in (x, y, dims))
    n = jax.random.choice(k_n, cfg.max_points, p=train_size_weights(cfg.max_points))
    pred = jax.vmap(_predict, in_axes=(None, 0, 0, None, 0, 0))(pfn, x, y, n, x, dims)
    query = jnp.arange(cfg.max_points) >= n
    z = (y - pred.loc) / pred.scale
    nll = -bar.logpdf(pred.logits, jax.lax.stop_gradient(pfn.borders), z)
    return jnp.sum(jnp.where(query, nll, 0.0)) / (batch_size * jnp.sum(query))


def learning_rate(step: Array, total: Array, peak: float, warmup: Array) -> Array:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak / 100`` at
    ``total``. ``total`` is traced, so a time budget can move it without recompiling."""
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / jnp.maximum(warmup, 1)
    frac = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1), 0.0, 1.0)
    cos = peak * (0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
    return jnp.where(step < warmup, warm, cos)


def train(pfn: PFN, prior: Prior, *, key: Array, num_steps: int | None = None,
          time_budget: float | None = None, batch_size: int = 64, lr: float = 1e-3,
          warmup_steps: int | None = None, steps_per_call: int = 25,
          vary_input_dim: bool = False, checkpoint: str | pathlib.Path | None = None,
          checkpoint_every: int = 1000, progress_bar: bool = True) -> TrainResult:
    """Train ``pfn`` on datasets from ``prior``.

    Parameters
    ----------
    pfn : PFN
        From :func:`init` (or a loaded model to fine-tune).
    prior : Prior
        The prior to learn; must sample at given inputs (``sample_at``).
    key : Array
        PRNG key: the same key (and ``num_steps``) gives the same model.
    num_steps : int, optional
        Optimiser steps (the learning-rate schedule spans them).
    time_budget : float, optional
        Seconds of training instead of ``num_steps``: the step count is estimated from the
        measured speed (and re-estimated as training goes), and the schedule is stretched to end
        when the time does. Not reproducible step for step (it depends on the machine's speed).
    batch_size : int
        Datasets per step.
    lr : float
        Peak learning rate (Adam; warm-up, then cosine decay to ``lr / 100``).
    warmup_steps : int, optional
        Linear warm-up (default 5% of the steps).
    steps_per_call : int
        Steps compiled into one dispatch (``lax.scan``).
    vary_input_dim : bool
        Draw each dataset's dimension in ``1..max_input_dim`` (see module notes).
    checkpoint : path, optional
        Where to save every ``checkpoint_every`` steps and at the end (``path`` is a loadable
        PFN file; ``path + ".opt"`` holds the optimiser state). If it exists, training resumes
        from it.
    checkpoint_every : int
        Steps between checkpoints.
    progress_bar : bool
        Show a tqdm bar with the running loss.

    Returns
    -------
    TrainResult
        The trained PFN, loss per dispatch, steps done, seconds.
    """
    key = check_key("key", key)
    if (num_steps is None) == (time_budget is None):
        raise ValueError("num_steps: give exactly one of num_steps and time_budget")
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
    else:
        check_positive("time_budget", time_budget)
    batch_size = check_positive_int("batch_size", batch_size)
    steps_per_call = check_positive_int("steps_per_call", steps_per_call)
    check_positive("lr", lr)
    if prior.input_dim > pfn.config.max_input_dim:
        raise ValueError(f"prior: input_dim {prior.input_dim} exceeds the PFN's max_input_dim "
                         f"{pfn.config.max_input_dim}")
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    params, static = eqx.partition(pfn, eqx.is_inexact_array)
    opt_state = opt.init(params)
    step = 0
    settings = {"num_steps": num_steps, "time_budget": time_budget, "batch_size": batch_size,
                "lr": lr, "warmup_steps": warmup_steps, "vary_input_dim": vary_input_dim}
    if checkpoint is not None and pathlib.Path(checkpoint).is_file():
        pfn, opt_state, step, key = _load_checkpoint(checkpoint, opt_state, settings)
        params, static = eqx.partition(pfn, eqx.is_inexact_array)

    def one_step(carry, _, total, warmup):
        p, s, k, i = carry
        k, sub = jax.random.split(k)
        loss, grads = eqx.filter_value_and_grad(
            lambda q: batch_loss(eqx.combine(q, static), prior, sub, batch_size, vary_input_dim)
        )(p)
        updates, s = opt.update(grads, s, p)
        rate = learning_rate(i, total, lr, warmup)
        updates = jax.tree_util.tree_map(lambda u: -rate * u, updates)
        return (eqx.apply_updates(p, updates), s, k, i + 1), loss

    @jax.jit
    def chunk(p, s, k, i, total, warmup):
        (p, s, k, _), losses = jax.lax.scan(
            lambda c, x: one_step(c, x, total, warmup), (p, s, k, i), None, length=steps_per_call)
        return p, s, k, jnp.mean(losses)

    total = num_steps if num_steps is not None else 10**9
    bar_ = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar_ = tqdm(total=num_steps, initial=step, desc="PFN training", unit="step")
    losses, start, last_ckpt = [], time.perf_counter(), step
    timed_start, timed_steps = None, 0
    try:
        while step < total:
            warmup = warmup_steps if warmup_steps is not None else max(total // 20, 1)
            params, opt_state, key, loss = chunk(params, opt_state, key, step, total, warmup)
            step += steps_per_call
            losses.append(float(loss))
            if time_budget is not None:
                now = time.perf_counter()
                if timed_start is None:  # the first dispatch includes compilation
                    timed_start, timed_steps = now, step
                elif len(losses) % 5 == 0 or total == 10**9:
                    rate = (step - timed_steps) / max(now - timed_start, 1e-9)
                    remaining = time_budget - (now - start)
                    total = step + max(int(rate * remaining), 0) if step > timed_steps else total
            if bar_ is not None:
                bar_.update(steps_per_call)
                bar_.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if checkpoint is not None and step - last_ckpt >= checkpoint_every:
                _save_checkpoint(checkpoint, eqx.combine(params, static), opt_state, step, key,
                                 settings)
                last_ckpt = step
    finally:
        if bar_ is not None:
            bar_.close()
    pfn = eqx.combine(params, static)
    if checkpoint is not None and last_ckpt != step:
        _save_checkpoint(checkpoint, pfn, opt_state, step, key, settings)
    return TrainResult(pfn, np.asarray(losses), step, time.perf_counter() - start)


def _save_checkpoint(path, pfn: PFN, opt_state, step: int, key: Array,
                     settings: dict[str, Any]) -> None:
    path = pathlib.Path(path)
    save(path, pfn, extra={"step": step, "key": np.asarray(jax.random.key_data(key)).tolist(),
                           "settings": settings})
    eqx.tree_serialise_leaves(str(path) + ".opt", opt_state)


def _load_checkpoint(path, opt_template, settings: dict[str, Any]):
    from probkit.inference.pfn.model import read_header

    header = read_header(path)
    saved = header["extra"].get("settings", {})
    if saved != settings:
        raise ValueError(f"checkpoint: {str(path)!r} was written with settings {saved}, "
                         f"resuming with {settings}")
    pfn = load(path)
    opt_state = eqx.tree_deserialise_leaves(str(path) + ".opt", opt_template)
    key = jax.random.wrap_key_data(jnp.asarray(header["extra"]["key"], jnp.uint32))
    return pfn, opt_state, int(header["extra"]["step"]), key
