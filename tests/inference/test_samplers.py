"""The samplers of probkit.inference.samplers against exact answers: static HMC, MAMS and MCLMC
on a conjugate posterior, all four through NumPyro's MCMC + ArviZ, and simulation-based
calibration of each (NUTS's own tests are in test_hmc.py)."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from probkit.inference import hmc
from probkit.inference.samplers import pathfinder_start, sampler_options
from probkit.inference.sbc import rank_uniformity_pvalues, simulation_based_calibration
from probkit.result import group_names

PRIOR_MEAN, PRIOR_SD, NOISE = np.array([1.0, -1.0]), 2.0, 1.5
Y = np.random.default_rng(1).normal([0.7, 2.0], NOISE, size=(20, 2))


def conjugate(y=None):
    """Two independent normal means (two dimensions, as MCLMC needs)."""
    mu = numpyro.sample("mu", dist.Normal(jnp.asarray(PRIOR_MEAN), PRIOR_SD).to_event(1))
    with numpyro.plate("rows", Y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, NOISE).to_event(1), obs=y)


def exact_posterior():
    prec = 1 / PRIOR_SD**2 + Y.shape[0] / NOISE**2
    mean = (PRIOR_MEAN / PRIOR_SD**2 + Y.sum(0) / NOISE**2) / prec
    return mean, np.full(2, prec**-0.5)


def assert_within_4_mcse(idata, draws):
    mean, sd = exact_posterior()
    mcse_mean = np.asarray(az.mcse(idata, var_names=["mu"])["mu"])
    mcse_sd = np.asarray(az.mcse(idata, var_names=["mu"], method="sd")["mu"])
    flat = np.asarray(draws).reshape(-1, 2)
    np.testing.assert_array_less(np.abs(flat.mean(0) - mean), 4 * mcse_mean)
    np.testing.assert_array_less(np.abs(flat.std(0) - sd), 4 * mcse_sd)


@pytest.mark.parametrize("sampler", ["hmc", "mams", "mclmc"])
def test_conjugate_posterior_within_4_mcse_and_same_key_same_draws(sampler):
    kw = {"sampler": sampler, "num_warmup": 400, "num_samples": 1000, "num_chains": 2,
          "progress_bar": False}
    res = hmc.run(conjugate, y=Y, key=jax.random.key(0), **kw)
    assert_within_4_mcse(res.to_arviz(), res.posterior["mu"])
    stats = res.sample_stats
    per_step = {"hmc": 1, "mams": 2, "mclmc": 2}[sampler]
    np.testing.assert_array_equal(stats["n_grad"], per_step * np.asarray(stats["n_steps"]))
    assert int(np.sum(stats["diverging"])) == 0
    assert res.attrs["sampler"] == sampler
    if sampler == "hmc":  # fixed trajectories: 2 chains x 400 warm-up transitions x L steps
        steps = sampler_options("hmc").num_integration_steps
        assert res.attrs["warmup_n_grad"] == 2 * 400 * steps
    else:                 # BlackJAX's tuner: two gradients per integrator step
        assert res.attrs["warmup_n_grad"] >= 2 * 2 * 400 * 0.7
    again = hmc.run(conjugate, y=Y, key=jax.random.key(0), **kw)
    other = hmc.run(conjugate, y=Y, key=jax.random.key(1), **kw)
    np.testing.assert_array_equal(again.posterior["mu"], res.posterior["mu"])
    assert not np.array_equal(other.posterior["mu"], res.posterior["mu"])


def test_pathfinder_start_recovers_a_gaussian_and_falls_back_where_it_fails():
    """On a rotated Gaussian (covariance condition number 225) Pathfinder's inverse Hessian is
    the L-BFGS estimate of the covariance: within 35% of it elementwise (the assertion prints the
    ratios when it fails); the diagonal form is the dense one's diagonal. A log density that is
    NaN everywhere gives back the initial point and the identity."""
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    cov = (q * np.array([0.2, 0.5, 1.0, 3.0]) ** 2) @ q.T
    prec, mean = jnp.asarray(np.linalg.inv(cov)), jnp.array([1.0, -2.0, 3.0, 0.5])

    def logdensity(z):
        return -0.5 * (z - mean) @ prec @ (z - mean)

    start = jax.jit(pathfinder_start, static_argnums=2, static_argnames="dense_mass")
    z, dense = start(jax.random.key(0), jnp.zeros(4), logdensity, dense_mass=True)
    _, diag = start(jax.random.key(0), jnp.zeros(4), logdensity, dense_mass=False)
    ratio = np.asarray(dense) / cov
    assert np.all((ratio > 0.65) & (ratio < 1.5)), ratio
    np.testing.assert_allclose(diag, np.diag(np.asarray(dense)), rtol=1e-5)
    assert np.isfinite(float(logdensity(z)))
    z, imm = pathfinder_start(jax.random.key(0), jnp.ones(3), lambda z: jnp.nan * jnp.sum(z))
    np.testing.assert_array_equal(z, np.ones(3))
    np.testing.assert_array_equal(imm, np.ones(3))


@pytest.mark.parametrize("sampler", ["nuts", "mams"])
def test_pathfinder_start_keeps_the_posterior(sampler):
    """Chains started by Pathfinder still sample the conjugate posterior (within 4 MCSE) and
    reproduce with the same key, in hmc.run and (NUTS) as a NumPyro kernel."""
    kw = {"sampler": sampler, "num_warmup": 200, "num_samples": 1000, "num_chains": 2,
          "progress_bar": False, "pathfinder": True}
    res = hmc.run(conjugate, y=Y, key=jax.random.key(0), **kw)
    assert_within_4_mcse(res.to_arviz(), res.posterior["mu"])
    again = hmc.run(conjugate, y=Y, key=jax.random.key(0), **kw)
    np.testing.assert_array_equal(again.posterior["mu"], res.posterior["mu"])
    if sampler == "nuts":  # the kernel's own start (the same function; one sampler suffices)
        kernel = hmc.BlackJAXKernel(conjugate, sampler=sampler, pathfinder=True)
        mcmc = MCMC(kernel, num_warmup=200, num_samples=1000, num_chains=2,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.key(3), y=Y)
        assert_within_4_mcse(az.from_numpyro(mcmc), mcmc.get_samples(group_by_chain=True)["mu"])


@pytest.mark.parametrize("sampler", ["nuts", "hmc", "mams", "mclmc"])
def test_kernel_in_numpyro_mcmc_matches_the_conjugate_posterior(sampler):
    kernel = hmc.BlackJAXKernel(conjugate, sampler=sampler)
    mcmc = MCMC(kernel, num_warmup=400, num_samples=1000, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(3), y=Y, extra_fields=("n_grad", "accept_prob"))
    idata = az.from_numpyro(mcmc, log_likelihood=True)
    assert {"posterior", "log_likelihood"} <= set(group_names(idata))
    assert_within_4_mcse(idata, mcmc.get_samples(group_by_chain=True)["mu"])
    n_grad = mcmc.get_extra_fields()["n_grad"]
    assert n_grad.shape == (2000,) and int(n_grad.min()) >= 1


@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "num_warmup", "thinning"),
                         [("nuts", 150, 2), ("mams", 300, 4), ("mclmc", 300, 10)])
def test_simulation_based_calibration_50_replications(sampler, num_warmup, thinning):
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        with numpyro.plate("group", 3):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(mu + tau * eta, 1.0), obs=y)

    out = simulation_based_calibration(model, key=jax.random.key(9), observed="y",
                                       sampler=sampler, num_replications=50,
                                       num_warmup=num_warmup,
                                       num_draws=49, thinning=thinning)
    pvals = rank_uniformity_pvalues(out, num_bins=5)
    assert min(float(np.min(p)) for p in pvals.values()) > 0.001
