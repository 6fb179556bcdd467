"""probkit.inference.sgmcmc: SGHMC/SGLD on a conjugate model against the exact posterior, the
minibatch potential against the full one, and the pure init/step/sample functions."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from probkit.inference import sgmcmc


def gaussian_mean(y, sigma=1.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.mark.parametrize("method", sgmcmc.METHODS)
def test_draws_match_the_exact_conjugate_posterior(method):
    """Gaussian mean, known variance: posterior N(sum y / (N + 1/100), 1 / (N + 1/100)). The draws'
    mean and variance agree within 4 Monte Carlo standard errors (from ArviZ's ESS)."""
    y = np.random.default_rng(0).normal(1.5, 1.0, 100)
    prec = len(y) + 1 / 100
    mean, var = y.sum() / prec, 1 / prec
    res = sgmcmc.run(gaussian_mean, y, key=jax.random.key(1), batch_size=20, num_warmup=2000,
                     num_samples=1000, thinning=50, num_chains=4, step_size=0.005,
                     mdecay=0.01, method=method, progress_bar=False)
    draws = res.posterior["mu"]
    assert draws.shape == (4, 1000)
    assert abs(draws.mean() - mean) < 4 * float(az.mcse(draws))
    ess = float(az.ess(draws))
    assert abs(draws.var() / var - 1) < 4 * np.sqrt(2 / ess), (draws.var() / var, ess)
    assert res.log_likelihood["y"].shape == (4, 1000, 100)
    assert len(az.summary(res.to_arviz())) == 1


def test_minibatch_potential_is_unbiased():
    """The N/B-scaled minibatch gradient averages to the full-data gradient over all batches."""
    y = jnp.asarray(np.random.default_rng(1).normal(size=12))
    potential = sgmcmc.potential_fn(gaussian_mean, 12)
    z = {"mu": jnp.asarray(0.3)}
    full = jax.grad(potential)(z, y)["mu"]
    batches = y.reshape(4, 3)                       # a partition into 4 batches of 3 rows
    per = jax.vmap(lambda b: jax.grad(potential)(z, b)["mu"])(batches)
    np.testing.assert_allclose(per.mean(), full, rtol=1e-5)
    assert not np.allclose(per, full)


def test_pure_functions_on_a_standard_normal():
    """``sample`` with the exact gradient of a standard normal target (no minibatch noise, no
    preconditioner: with exact gradients near zero its scale estimate would blow up)."""
    grad = lambda th, aux, k: -th                      # noqa: E731
    draws, _ = jax.vmap(lambda k: sgmcmc.sample(k, jnp.zeros(2), grad, num_warmup=200,
                                                num_samples=400, thinning=10, step_size=0.1,
                                                mdecay=0.1, adapt=False))(
        jax.random.split(jax.random.key(0), 4))
    assert draws.shape == (4, 400, 2)
    np.testing.assert_allclose(draws.mean((0, 1)), 0.0, atol=0.15)
    np.testing.assert_allclose(draws.std((0, 1)), 1.0, rtol=0.15)
    state = sgmcmc.init({"a": jnp.ones(3)})
    nxt = sgmcmc.step(jax.random.key(1), state, {"a": -jnp.ones(3)}, step_size=0.1, adapt=True)
    assert int(nxt.step) == 1 and nxt.position["a"].shape == (3,)


def test_bad_arguments_name_themselves():
    y = np.zeros(5)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="^batch_size"):
        sgmcmc.run(gaussian_mean, y, key=key, batch_size=0)
    with pytest.raises(ValueError, match="^method"):
        sgmcmc.run(gaussian_mean, y, key=key, batch_size=2, method="sgnht")
    with pytest.raises(ValueError, match="^data"):
        sgmcmc.run(gaussian_mean, key=key, batch_size=2)
    with pytest.raises(ValueError, match="^key"):
        sgmcmc.run(gaussian_mean, y, key=0, batch_size=2)


def test_noise_correction_removes_the_minibatch_heat():
    """N = 1000 rows in batches of 10: the minibatch gradient injects about as much noise as the
    friction term (h^2 B ~ 2 alpha h in preconditioned units), so the uncorrected chain's
    variance is well above the exact 1 / (N + 1/100); the corrected one matches it."""
    y = np.random.default_rng(2).normal(0.5, 1.0, 1000)
    var = 1 / (len(y) + 1 / 100)
    ratios = {}
    for correct in (True, False):
        res = sgmcmc.run(gaussian_mean, y, key=jax.random.key(3), batch_size=10,
                         num_warmup=2000, num_samples=1000, thinning=20, num_chains=4,
                         step_size=0.01, mdecay=0.02, noise_correction=correct,
                         log_likelihood_sites=False, progress_bar=False)
        draws = res.posterior["mu"]
        ratios[correct] = (draws.var() / var, float(az.ess(draws)))
    ratio, ess = ratios[True]
    assert abs(ratio - 1) < 4 * np.sqrt(2 / ess), ratios
    assert ratios[False][0] > 1.4, ratios
