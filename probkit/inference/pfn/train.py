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
warm-up and cosine decay (:class:`probkit.inference.optimize.WarmupCosine`), gradient clipping at
norm 1, through the package's one training loop (:func:`probkit.inference.optimize.run`). Several
steps run per dispatch inside ``lax.scan``; the batch is sharded over ``jax.devices()`` (data
parallel; a no-op on one device), which after :func:`probkit.inference.distributed.initialize`
are the devices of all processes (every process calls :func:`train` with the same key).

With ``vary_input_dim=True`` each dataset draws its dimension ``d`` from ``1..max_input_dim``:
the unused input columns are held at the lower bound of the box, so a GP prior with ARD kernels
is exactly a GP on the active columns, and the network sees them as zero-padded columns.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from probkit import _io
from probkit._checks import check_key, check_positive, check_positive_int
from probkit.inference import distributed, optimize
from probkit.inference.pfn import bar
from probkit.inference.pfn.model import PFN, PFNConfig, _predict, build
from probkit.priors import Prior

__all__ = ["init", "train", "batch_loss", "TrainResult", "train_size_weights", "TRANSFORM"]


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    pfn: PFN
    losses: np.ndarray  # mean loss per dispatch of ``steps_per_dispatch`` steps
    steps: int
    seconds: float


def train_size_weights(max_points: int) -> Array:
    """Probabilities of the training size ``n = 0..N-1``, proportional to ``1/(N - n)``."""
    w = 1.0 / (max_points - jnp.arange(max_points))
    return w / w.sum()


def _check_prior(prior) -> None:
    if not (isinstance(getattr(prior, "input_dim", None), int) and callable(
            getattr(prior, "sample", None))):
        raise ValueError("prior: expected a probkit.priors.Prior (an object with input_dim and "
                         f"sample(key, num_datasets, num_points)), got {type(prior).__name__}")


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
    _check_prior(prior)
    max_points = check_positive_int("max_points", max_points, minimum=2)
    for name, value in (("emsize", emsize), ("num_layers", num_layers),
                        ("num_heads", num_heads), ("ff_factor", ff_factor)):
        check_positive_int(name, value)
    if emsize % num_heads:
        raise ValueError(f"num_heads: must divide emsize={emsize}, got {num_heads}")
    max_input_dim = check_positive_int("max_input_dim", prior.input_dim if max_input_dim is None
                                       else max_input_dim)
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
                       prior=prior_name or type(prior).__name__)
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
    x, y, dims = distributed.shard_batch(x, y, dims)
    n = jax.random.choice(k_n, cfg.max_points, p=train_size_weights(cfg.max_points))
    pred = jax.vmap(_predict, in_axes=(None, 0, 0, None, 0, 0))(pfn, x, y, n, x, dims)
    query = jnp.arange(cfg.max_points) >= n
    z = (y - pred.loc) / pred.scale
    nll = -bar.logpdf(pred.logits, jax.lax.stop_gradient(pfn.borders), z)
    return jnp.sum(jnp.where(query, nll, 0.0)) / (batch_size * jnp.sum(query))


#: Adam on gradients clipped at global norm 1 (the learning rate is applied by the schedule).
TRANSFORM = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())


def _loss(pfn: PFN, key: Array, prior: Prior, batch_size: int, vary_input_dim: bool) -> Array:
    return batch_loss(pfn, prior, key, batch_size, vary_input_dim)


def train(pfn: PFN, prior: Prior, *, key: Array, num_steps: int | None = None,
          time_budget: float | None = None, batch_size: int = 64, learning_rate: float = 1e-3,
          warmup_steps: int | None = None, steps_per_dispatch: int = 25,
          vary_input_dim: bool = False, checkpoint: str | pathlib.Path | None = None,
          checkpoint_every: int = 1000, progress_bar: bool = True) -> TrainResult:
    """Train ``pfn`` on datasets from ``prior`` (through :func:`probkit.inference.optimize.run`).

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
    learning_rate : float
        Peak learning rate (Adam on gradients clipped at norm 1; linear warm-up, then cosine decay
        to ``learning_rate / 100``: :class:`probkit.inference.optimize.WarmupCosine`).
    warmup_steps : int, optional
        Linear warm-up (default 5% of the steps).
    steps_per_dispatch : int
        Steps compiled into one dispatch (``lax.scan``).
    vary_input_dim : bool
        Draw each dataset's dimension in ``1..max_input_dim`` (see module notes).
    checkpoint : path, optional
        Where to save every ``checkpoint_every`` steps and at the end (one :mod:`probkit._io`
        file: network, optimiser state, step, key). If it exists, training resumes from it, in a
        new process too; the settings and the prior are compared by content (the prior's
        :func:`probkit._io.fingerprint`), so a changed prior is refused.
    checkpoint_every : int
        Steps between checkpoints.
    progress_bar : bool
        Show a tqdm bar with the running loss.

    Returns
    -------
    TrainResult
        The trained PFN, loss per dispatch, steps done, seconds.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    _check_prior(prior)
    check_positive("learning_rate", learning_rate)
    if prior.input_dim > pfn.config.max_input_dim:
        raise ValueError(f"prior: input_dim {prior.input_dim} exceeds the PFN's max_input_dim "
                         f"{pfn.config.max_input_dim}")
    schedule = optimize.WarmupCosine(learning_rate, warmup_steps=warmup_steps)
    settings = {"batch_size": batch_size, "learning_rate": learning_rate,
                "warmup_steps": warmup_steps, "vary_input_dim": vary_input_dim,
                "prior": _io.fingerprint(prior)}
    out = optimize.run(_loss, pfn, key=key, args=(prior, batch_size, vary_input_dim),
                       num_steps=num_steps, time_budget=time_budget, learning_rate=schedule,
                       transform=TRANSFORM, steps_per_dispatch=steps_per_dispatch,
                       progress_bar=progress_bar, desc="PFN training", checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every, settings=settings)
    return TrainResult(out.params, out.losses, out.steps, out.seconds)
