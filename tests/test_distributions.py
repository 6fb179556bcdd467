"""probkit.distributions.StateSpaceGP: Kalman-filter log_prob vs the dense Gaussian, prior
samples, NUTS over a lengthscale."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pytest
from scipy.stats import multivariate_normal

from probkit.distributions import StateSpaceGP
from probkit.kernels import Matern32, Matern52


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 4, n))
    y = np.sin(2 * t) + 0.3 * rng.normal(size=n)
    return t, y


def test_log_prob_equals_dense(x64):
    t, y = _data()
    y[[3, 20]] = np.nan
    kern = Matern52(0.5, 1.3)
    d = StateSpaceGP(kern, t, 0.09)
    obs = ~np.isnan(y)
    K = np.asarray(kern(t[:, None], t[:, None]))[np.ix_(obs, obs)] + 0.09 * np.eye(obs.sum())
    ref = multivariate_normal(np.zeros(obs.sum()), K).logpdf(y[obs])
    np.testing.assert_allclose(float(d.log_prob(y)), ref, rtol=1e-10)
    # Leading axes of the value are vmapped.
    lp = d.log_prob(np.stack([y, y]))
    assert lp.shape == (2,)
    np.testing.assert_allclose(lp, ref, rtol=1e-10)


def test_prior_samples(x64):
    """Exact prior draws (probkit.statespace.sample_lgssm): covariance = K + noise I."""
    t = np.array([0.0, 0.3, 0.4, 1.5])
    kern = Matern32(0.5, 2.0)
    ys = StateSpaceGP(kern, t, 0.1).sample(jax.random.key(1), (20000,))
    assert ys.shape == (20000, 4)
    K = np.asarray(kern(t[:, None], t[:, None])) + 0.1 * np.eye(4)
    np.testing.assert_allclose(np.cov(np.asarray(ys).T), K, atol=0.1)


def test_nuts_over_lengthscale_matches_grid_posterior(x64):
    t, y = _data(30, seed=2)

    def model(t, y=None):
        ls = numpyro.sample("lengthscale", nd.LogNormal(0.0, 1.0))
        numpyro.sample("y", StateSpaceGP(Matern32(ls, 1.0), t, 0.1), obs=y)

    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=150, num_samples=300,
                              progress_bar=False)
    mcmc.run(jax.random.key(0), t, y)
    draws = np.asarray(mcmc.get_samples()["lengthscale"])
    # Exact posterior mean of the lengthscale by quadrature on a log grid.
    grid = np.exp(np.linspace(-4, 2.5, 800))
    logp = jax.vmap(lambda ls: StateSpaceGP(Matern32(ls, 1.0), t, 0.1).log_prob(y)
                    + nd.LogNormal(0.0, 1.0).log_prob(ls))(jnp.asarray(grid))
    w = np.exp(np.asarray(logp) - np.max(logp)) * grid  # d(ls) = ls d(log ls)
    w /= w.sum()
    mean = np.sum(w * grid)
    sd = np.sqrt(np.sum(w * (grid - mean) ** 2))
    assert abs(draws.mean() - mean) < 4 * sd / np.sqrt(75), (draws.mean(), mean, sd)


def test_bad_inputs():
    for bad in ([0.0, np.nan, 1.0], [0.0, 2.0, 1.0], [0.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="times"):
            StateSpaceGP(Matern32(), bad, 0.1)
    with pytest.raises(ValueError, match="noise"):
        StateSpaceGP(Matern32(), [0.0, 1.0], jnp.ones(3))
    with pytest.raises(ValueError, match="value"):
        StateSpaceGP(Matern32(), [0.0, 1.0], 0.1).log_prob(jnp.ones(3))
