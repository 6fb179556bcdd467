r"""Simulation-based calibration of a sampler on a NumPyro model (Talts et al. 2018).

For replications :math:`r = 1..R`: draw :math:`\theta_r \sim p(\theta)` and
:math:`y_r \sim p(y \mid \theta_r)`, sample :math:`L` (thinned) posterior draws
:math:`\theta^{(1..L)} \sim p(\theta \mid y_r)`, and record the rank
:math:`\#\{l : \theta^{(l)} < \theta_r\} \in \{0, \dots, L\}` of every scalar latent component.
A calibrated sampler gives uniform ranks; :func:`rank_uniformity_pvalues` tests that with a
chi-square test over equal-width bins.

All replications run as one vmapped, compiled program over one of the HMC engine's BlackJAX
samplers (:func:`probkit.inference.samplers.sample_chain`; NUTS by default).

Examples
--------
>>> import jax, numpyro, numpyro.distributions as dist
>>> from probkit.inference.sbc import simulation_based_calibration
>>> def model(y=None):
...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
...     numpyro.sample("y", dist.Normal(mu, 1.0).expand([5]), obs=y)
>>> out = simulation_based_calibration(model, key=jax.random.key(0), observed="y",
...                                    num_replications=8, num_warmup=100, num_draws=19)
>>> out.ranks["mu"].shape
(8,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import Predictive
from numpyro.infer.util import unconstrain_fn
from scipy import stats

from probkit._checks import check_key, check_positive_int
from probkit.inference.hmc import model_logdensity
from probkit.inference.samplers import sample_chain, sampler_options

__all__ = ["SBCResult", "simulation_based_calibration", "rank_uniformity_pvalues"]


class SBCResult(NamedTuple):
    """Ranks per latent site, shape ``(num_replications, *site_shape)``, in ``0..num_draws``."""

    ranks: dict[str, np.ndarray]
    num_draws: int
    divergences: np.ndarray


def simulation_based_calibration(model: Callable, *args, key: jax.Array, observed: str,
                                 num_replications: int = 200, num_warmup: int = 300,
                                 num_draws: int = 99, thinning: int = 3, sampler: str = "nuts",
                                 target_accept: float | None = None, **kwargs) -> SBCResult:
    """Run SBC of one of probkit's samplers on ``model`` (one chain per replication, all
    vmapped).

    Parameters
    ----------
    model : callable
        NumPyro model whose observed site ``observed`` is passed as the keyword argument of the
        same name (``None`` when simulating).
    key : PRNG key
    observed : str
        Name of the observed site (and of its keyword argument).
    num_replications : int
        Number of simulated datasets.
    num_warmup : int
        Warm-up transitions per replication.
    num_draws : int
        Thinned posterior draws per replication (ranks take values in ``0..num_draws``).
    thinning : int
        Transitions per kept draw (reduces autocorrelation, as Talts et al. advise).
    sampler : {"nuts", "hmc", "mams", "mclmc"}
        The sampler under test (:func:`probkit.inference.hmc.run`).
    target_accept : float, optional
        Its target acceptance rate (the sampler's default when None; not for ``"mclmc"``).
    """
    key = check_key("key", key)
    num_replications = check_positive_int("num_replications", num_replications)
    num_draws = check_positive_int("num_draws", num_draws)
    thinning = check_positive_int("thinning", thinning)
    opts = sampler_options(sampler, target_accept=target_accept)
    key_prior, key_post = jax.random.split(key)
    prior = Predictive(model, num_samples=num_replications)(key_prior, *args, **kwargs)
    if observed not in prior:
        raise ValueError(f"observed: model has no sample site {observed!r}")
    truth = {k: v for k, v in prior.items() if k != observed}
    base_kwargs = {k: v for k, v in kwargs.items() if k != observed}

    def one(k, y, theta):
        kw = {**base_kwargs, observed: y}
        z0 = unconstrain_fn(model, args, kw, theta)
        draws, _ = sample_chain(k, z0, model_logdensity(model, args, kw), sampler=opts,
                                num_warmup=num_warmup, num_samples=num_draws * thinning,
                                thinning=thinning)
        constrained = jax.vmap(lambda z: numpyro.infer.util.constrain_fn(model, args, kw, z))(
            draws.position)
        ranks = {n: jnp.sum(constrained[n] < theta[n], axis=0) for n in theta}
        return ranks, jnp.sum(draws.stats["diverging"])

    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, key_prior)).get_trace(
        *args, **{**base_kwargs, observed: prior[observed][0]})
    latent_truth = {n: truth[n] for n, site in trace.items()
                    if site["type"] == "sample" and not site["is_observed"]}
    keys = jax.random.split(key_post, num_replications)
    ranks, div = jax.jit(jax.vmap(one))(keys, prior[observed], latent_truth)
    return SBCResult({k: np.asarray(v) for k, v in ranks.items()}, num_draws, np.asarray(div))


def rank_uniformity_pvalues(result: SBCResult, num_bins: int = 10) -> dict[str, np.ndarray]:
    """Chi-square p-value of rank uniformity for every scalar component of every site.

    Ranks in ``0..L`` are grouped into ``num_bins`` bins; ``L + 1`` should be a multiple of
    ``num_bins`` so that each bin has the same probability under uniformity.
    """
    num_bins = check_positive_int("num_bins", num_bins, minimum=2)
    if (result.num_draws + 1) % num_bins:
        raise ValueError(f"num_bins: num_draws + 1 = {result.num_draws + 1} is not a multiple "
                         f"of {num_bins}")
    out = {}
    for name, ranks in result.ranks.items():
        flat = ranks.reshape(ranks.shape[0], -1)
        bins = flat * num_bins // (result.num_draws + 1)
        pvals = [stats.chisquare(np.bincount(bins[:, j], minlength=num_bins)).pvalue
                 for j in range(flat.shape[1])]
        out[name] = np.asarray(pvals).reshape(ranks.shape[1:])
    return out
