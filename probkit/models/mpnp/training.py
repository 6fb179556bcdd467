r"""Training and evaluating neural processes on datasets from a stochastic-process prior.

**The protocol** (Lee et al., *Bootstrapping Neural Processes*, NeurIPS 2020, code
``juho-lee/bnp``): 50 points per task, :math:`x \sim U[-2, 2]`, ``num_ctx ~ randint(3, 47)`` and
``num_tar ~ randint(3, 50 - num_ctx)`` (exclusive upper bounds, one draw per batch); the first
``num_ctx`` points are the context, and the training loss uses all points as targets.
:func:`sample_tasks` pads every task to ``max_points`` and carries masks, so ``jit`` compiles once.

**Losses** (``network.loss``, :mod:`probkit.models.mpnp.networks`). The CNP minimises the
negative log-likelihood per point. The NP minimises the importance-weighted bound of the BNP code
(:math:`K` draws from :math:`q(z \mid Z_{\text{all}})`, prior :math:`p(z \mid Z_c)`). The MPNP
(our exact choice; the paper's code was not available) minimises, with
:math:`\ell_k = \sum_{i \in t} \log p(y_i \mid x_i, \theta^{(k)})` over all valid points
:math:`t`, :math:`n_t = |t|`, :math:`\theta^{(k)} = \mathrm{enc}(Z_c \cup Z'^{(k)})` and
:math:`\theta'^{(k)} = \mathrm{enc}(Z'^{(k)})` (pseudo context alone, giving :math:`\ell'_k`),

.. math::
    \mathcal L = -\tfrac{1}{n_t}\log\tfrac1K\sum_k e^{\ell_k}
    \;-\tfrac{1}{n_t}\textstyle\sum_{i\in t}\log p(y_i\mid x_i,\mathrm{enc}(Z_c))
    \;-\tfrac{1}{n_t}\log\tfrac1K\sum_k e^{\ell'_k}

(marginal, amortised and pseudo terms, weights ``loss_weights = (1, 1, 1)``), :math:`K = 4` in
training, averaged over tasks. The marginal term takes the log-mean-exp over the *product* over
points (the joint marginal likelihood of the task); the pseudo term keeps the generated sets
informative on their own.

**Optimiser.** :func:`train` runs :func:`probkit.inference.optimize.run`: Adam with the learning
rate decayed by a cosine from its peak to 0 over the steps
(:class:`~probkit.inference.optimize.WarmupCosine` without warm-up), one batch of tasks drawn
inside the loss from each step's key
and sharded over ``jax.devices()`` (data parallel; across processes too, after
:func:`probkit.inference.distributed.initialize`).

Examples
--------
>>> import jax
>>> from probkit.models.mpnp import bnp_prior, make_network, train
>>> net = make_network("cnp", key=jax.random.key(0), dim_hid=16)
>>> res = train(net, bnp_prior("rbf"), key=jax.random.key(1), num_steps=4, batch_size=8,
...             steps_per_dispatch=2, progress_bar=False)
>>> res.steps, res.params.kind
(4, 'cnp')
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import numpyro.distributions.transforms as transforms
from jax import Array

from probkit._checks import check_choice, check_key, check_positive, check_positive_int
from probkit.inference import distributed, optimize
from probkit.models.mpnp.networks import Network
from probkit.priors import GPPrior
from probkit.special import logmeanexp, normal_logpdf

__all__ = ["Tasks", "bnp_prior", "sample_tasks", "make_eval_tasks", "batch_loss", "evaluate",
           "train"]


class Tasks(NamedTuple):
    """A batch of padded regression tasks.

    Attributes
    ----------
    x : Array ``(b, n, d)``; y : Array ``(b, n)``
        Inputs and outputs, padded to ``n = max_points``.
    mask_ctx : Array ``(b, n)`` bool
        Context points (the first ``num_ctx``).
    mask_tar : Array ``(b, n)`` bool
        Target points (the next ``num_tar``); padding is in neither mask.
    """

    x: Array
    y: Array
    mask_ctx: Array
    mask_tar: Array


def bnp_prior(kernel: str = "rbf") -> GPPrior:
    r"""The task prior of the BNP 1-D suite: ``"rbf"``, ``"matern52"``, ``"periodic"`` or
    ``"student_t"`` (RBF plus Student-t noise).

    :math:`\ell \sim U(0.1, 0.6)`, output *standard deviation* :math:`s \sim U(0.1, 1)` (so the
    kernel variance :math:`s^2` is passed as the law of :math:`s^2`, a power transform of the
    uniform), noise sd 0.02, period :math:`p \sim U(0.1, 0.5)`, inputs in :math:`[-2, 2]`;
    ``student_t`` adds :math:`c\, t_{2.1}` noise with :math:`c \sim U(0, 0.15)` per task.
    """
    check_choice("kernel", kernel, ("rbf", "matern52", "periodic", "student_t"))
    s2 = dist.TransformedDistribution(dist.Uniform(0.1, 1.0), transforms.PowerTransform(2.0))
    kw = dict(lengthscale=dist.Uniform(0.1, 0.6), variance=s2, noise=0.02**2,
              bounds=(-2.0, 2.0))
    if kernel == "periodic":
        return GPPrior("periodic", period=dist.Uniform(0.1, 0.5), **kw)
    if kernel == "student_t":
        return GPPrior("rbf", student_t_df=2.1, student_t_scale=dist.Uniform(0.0, 0.15), **kw)
    return GPPrior(kernel, **kw)


def sample_tasks(prior, key: Array, batch_size: int, max_points: int = 50,
                 min_ctx: int = 3, min_tar: int = 3) -> Tasks:
    """Draw a padded batch: ``num_ctx ~ randint(min_ctx, max_points - min_tar)``, ``num_tar ~
    randint(min_tar, max_points - num_ctx)`` (exclusive upper bounds), shared by the batch.

    Traceable (usable inside ``jit``/``scan``); non-finite draws (a failed float32 Cholesky) are
    masked out of both sets.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    num_ctx = jax.random.randint(k1, (), min_ctx, max_points - min_tar)
    num_tar = jax.random.randint(k2, (), min_tar, max_points - num_ctx)
    with jax.default_matmul_precision("highest"):
        data = prior.sample(k3, batch_size, max_points)
    ok = jnp.all(jnp.isfinite(data.y), axis=-1, keepdims=True)
    idx = jnp.arange(max_points)
    mask_ctx = (idx < num_ctx)[None, :] & ok
    mask_tar = ((idx >= num_ctx) & (idx < num_ctx + num_tar))[None, :] & ok
    y = jnp.where(ok, data.y, 0.0)
    return Tasks(data.x, y, jnp.broadcast_to(mask_ctx, y.shape),
                 jnp.broadcast_to(mask_tar, y.shape))


def make_eval_tasks(prior, num_batches: int, batch_size: int = 16, *, seed: int = 42,
                    max_points: int = 50, chunk: int = 100) -> Tasks:
    """Fixed evaluation batches with leading axes ``(num_batches, batch_size)``.

    Batch ``i`` uses ``fold_in(key(seed), i)``, so the sets do not depend on ``chunk``.
    """
    num_batches = check_positive_int("num_batches", num_batches)
    base = jax.random.key(seed)
    fn = jax.jit(jax.vmap(lambda k: sample_tasks(prior, k, batch_size, max_points)))
    parts = []
    for start in range(0, num_batches, chunk):
        idx = jnp.arange(start, min(start + chunk, num_batches))
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
        parts.append(jax.tree.map(np.asarray, fn(keys)))
    return Tasks(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def batch_loss(network: Network, key: Array, tasks: Tasks, num_samples: int = 4) -> Array:
    """Mean training loss over a batch; all valid points (context and target) are targets."""
    keys = jax.random.split(key, tasks.y.shape[0])
    mask_all = tasks.mask_ctx | tasks.mask_tar
    losses = jax.vmap(lambda k, x, y, mc, ma: network.loss(k, x, y, mc, ma, num_samples))(
        keys, tasks.x, tasks.y, tasks.mask_ctx, mask_all)
    return jnp.mean(losses)


@eqx.filter_jit
def evaluate(network: Network, tasks: Tasks, key: Array, num_samples: int = 50
             ) -> tuple[Array, Array]:
    r"""Per-task context and target log-likelihood per point (the BNP metric).

    :math:`l_i = \log\frac1K\sum_k N(y_i; \mu_{ik}, \sigma_{ik}^2)` at every point (the network
    conditions on the context), averaged over the context points (``ctx_ll``) and the target
    points (``tar_ll``) of each task. ``tasks`` may have any leading batch shape.
    """
    lead = tasks.y.shape[:-1]
    flat = Tasks(*(a.reshape((-1,) + a.shape[len(lead):]) for a in tasks))
    keys = jax.random.split(key, flat.y.shape[0])

    def one(k, x, y, mc, mt):
        loc, scale = network.components(k, x, y, mc, x, num_samples)
        ll = logmeanexp(normal_logpdf(y, loc, scale))
        return (jnp.sum(ll * mc) / jnp.maximum(jnp.sum(mc), 1),
                jnp.sum(ll * mt) / jnp.maximum(jnp.sum(mt), 1))

    c, t = jax.vmap(one)(keys, *flat)
    return c.reshape(lead), t.reshape(lead)


def _prior_batch_loss(network: Network, key: Array, prior, batch_size: int, max_points: int,
                      num_samples: int) -> Array:
    """The training loss of one step: a fresh batch of tasks drawn from ``key``."""
    k_data, k_loss = jax.random.split(key)
    tasks = Tasks(*distributed.shard_batch(*sample_tasks(prior, k_data, batch_size, max_points)))
    return batch_loss(network, k_loss, tasks, num_samples)


def train(network: Network, prior, *, key: Array, num_steps: int | None = None,
          time_budget: float | None = None, batch_size: int = 100,
          learning_rate: float = 5e-4, num_samples: int = 4, max_points: int = 50,
          steps_per_dispatch: int = 20, progress_bar: bool = True,
          checkpoint: str | pathlib.Path | None = None,
          checkpoint_every: int = 1000) -> optimize.OptimizeResult:
    r"""Train ``network`` on tasks from ``prior`` (:func:`probkit.inference.optimize.run`).

    Parameters
    ----------
    network : CNP, NP or MPNP
        Initial network (:func:`~probkit.models.mpnp.make_network`).
    prior : probkit.priors.Prior
        Task prior (e.g. :func:`bnp_prior`).
    key : Array
        PRNG key (each step draws its batch of tasks and the loss's samples from its own key).
    num_steps, time_budget : int, float
        Exactly one: optimiser steps (BNP: 100,000), or seconds of training (the cosine
        schedule is then stretched over the estimated number of steps).
    batch_size : int
        Tasks per step (BNP: 100).
    learning_rate : float
        Peak Adam learning rate (BNP: 5e-4), decayed to 0 by a cosine.
    num_samples : int
        ``K`` of the NP / MPNP losses (BNP: 4).
    max_points : int
        Points per task.
    steps_per_dispatch : int
        Steps per compiled ``lax.scan`` (task sampling included, so a GPU is not starved by
        Python; :func:`probkit.inference.optimize.run` lowers it to a divisor of ``num_steps``).
    progress_bar : bool
        tqdm bar with the running loss.
    checkpoint : path, optional
        Optimiser state saved every ``checkpoint_every`` steps and at the end; training resumes
        from it if it exists (same settings required).

    Returns
    -------
    probkit.inference.optimize.OptimizeResult
        ``params`` (the trained network), per-dispatch mean ``losses``, ``steps``, ``seconds``.
    """
    key = check_key("key", key)
    batch_size = check_positive_int("batch_size", batch_size)
    num_samples = check_positive_int("num_samples", num_samples)
    max_points = check_positive_int("max_points", max_points)
    steps_per_dispatch = check_positive_int("steps_per_dispatch", steps_per_dispatch)
    check_positive("learning_rate", learning_rate)
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
    settings = {"kind": network.kind, "batch_size": batch_size,
                "learning_rate": float(learning_rate), "num_samples": num_samples,
                "max_points": max_points, "steps_per_dispatch": steps_per_dispatch}
    return optimize.run(
        _prior_batch_loss, network, key=key, args=(prior, batch_size, max_points, num_samples),
        num_steps=num_steps, time_budget=time_budget,
        learning_rate=optimize.WarmupCosine(learning_rate, 0.0, 0.0),
        steps_per_dispatch=steps_per_dispatch, progress_bar=progress_bar,
        desc=f"train {network.kind}", checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        settings=settings)
