"""Exact GP surrogate against a dense NumPy/SciPy computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from probkit.bo import GP, Fitted, Surrogate
from probkit.kernels import RBF, Matern52
from probkit.models.gp import GPParams, condition, log_marginal_likelihood, pad_data


def _matern52(a, b, ls, var):
    r = np.sqrt(np.sum(((a[:, None, :] - b[None, :, :]) / ls) ** 2, -1))
    s = math.sqrt(5) * r
    return var * (1 + s + s**2 / 3) * np.exp(-s)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(15, 2))
    y = np.sin(6 * x[:, 0]) + np.cos(3 * x[:, 1]) + 0.05 * rng.normal(size=15)
    return x, (y - y.mean()) / y.std()


@pytest.fixture(scope="module")
def fitted(data):
    return GP().fit(*data, key=jax.random.key(0))


def test_protocols(fitted):
    assert isinstance(GP(), Surrogate)
    assert isinstance(fitted, Fitted)


def test_posterior_equals_dense_computation(data, fitted):
    x, y = data
    p = fitted.params
    ls, var = np.exp(np.asarray(p.log_lengthscale)), float(np.exp(p.log_variance))
    noise, m = float(fitted.noise), float(p.mean)
    xs = np.random.default_rng(1).uniform(size=(7, 2))
    k = _matern52(x, x, ls, var) + noise * np.eye(len(x))
    ks = _matern52(xs, x, ls, var)
    mean = m + ks @ np.linalg.solve(k, y - m)
    cov = _matern52(xs, xs, ls, var) - ks @ np.linalg.solve(k, ks.T)
    post = fitted.posterior(xs)
    # Tolerances reflect the conditioning of K (near noise-free data), not the method.
    np.testing.assert_allclose(np.asarray(post.mean), mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(post.cov), cov, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(post.variance), np.maximum(np.diag(cov), 1e-12),
                               rtol=1e-5, atol=1e-8)
    draws = np.asarray(post.sample(jax.random.key(2), 4000))
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 * np.sqrt(np.diag(cov).max() / 4000))


def test_padded_log_marginal_equals_scipy(data):
    x, y = data
    p = GPParams(jnp.log(jnp.array([0.3, 0.5])), jnp.asarray(0.2), jnp.asarray(-3.0),
                 jnp.asarray(0.1))
    noise = 1e-6 + math.exp(-3.0)
    k = _matern52(x, x, np.array([0.3, 0.5]), math.exp(0.2)) + noise * np.eye(len(x))
    ref = stats.multivariate_normal(np.full(len(x), 0.1), k).logpdf(y)
    for capacity in (None, 64):
        with jax.enable_x64(True):
            got = log_marginal_likelihood(p, pad_data(x, y, capacity), Matern52)
        # probkit.kernels forms |a|^2 + |b|^2 - 2ab: ~1e-8 relative error in the Gram matrix.
        np.testing.assert_allclose(float(got), ref, rtol=1e-7)


def test_fit_improves_marginal_likelihood(data, fitted):
    x, y = data
    with jax.enable_x64(True):
        d = pad_data(x, y)
        start = GPParams(jnp.log(jnp.full(2, 0.3)), jnp.asarray(0.0), jnp.asarray(-8.0),
                         jnp.asarray(0.0))
        assert log_marginal_likelihood(fitted.params, d) > log_marginal_likelihood(start, d)
    # Interpolates the (smooth, nearly noise-free) data.
    np.testing.assert_allclose(np.asarray(fitted.posterior(x).mean), y, atol=0.1)


def test_optax_fitter_agrees(data, fitted):
    alt = GP(optimizer="optax", num_restarts=1, num_steps=40).fit(*data, key=jax.random.key(0))
    xs = np.random.default_rng(3).uniform(size=(5, 2))
    np.testing.assert_allclose(np.asarray(alt.posterior(xs).mean),
                               np.asarray(fitted.posterior(xs).mean), atol=0.05)


def test_bad_input(data):
    x, y = data
    with pytest.raises(ValueError, match="x"):
        GP().fit(np.where(x > 0.5, np.nan, x), y, key=jax.random.key(0))
    with pytest.raises(ValueError, match="lengths differ"):
        GP().fit(x, y[:-1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="kernel"):
        GP(kernel="cubic")
    with pytest.raises(ValueError, match="key"):
        GP().fit(x, y, key=0)


def test_nuts_engine_agrees_with_numpyro_nuts_on_an_independent_model(x64):
    """engine='nuts' samples the posterior of the MAP objective (priors x padded marginal
    likelihood): its hyperparameter means agree within 4 MCSE with NumPyro's NUTS on the same
    priors written independently (a MultivariateNormal likelihood, no padding), and the
    mixture's mean is the average of the draws' exact GP means."""
    import arviz as az
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    from probkit.models.gp import GP as GPFamily
    from probkit.result import to_inference_data

    rng = np.random.default_rng(3)
    x = rng.uniform(size=(12, 1))
    y = np.sin(6 * x[:, 0]) + 0.1 * rng.normal(size=12)
    fam = GPFamily(kernel="rbf", engine="nuts", num_warmup=500, num_samples=1000, num_chains=2,
                   max_draws=2000)
    fit = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)
    p = fit.components.params
    ours = {"ls": p.log_lengthscale[:, 0], "var": p.log_variance, "noise": p.log_noise,
            "mean": p.mean}

    def reference(x, y):
        ll = numpyro.sample("ls", dist.Normal(math.sqrt(2), math.sqrt(3)))
        lv = numpyro.sample("var", dist.Normal(0.0, 1.5))
        ln = numpyro.sample("noise", dist.Normal(-8.0, 2.0))
        m = numpyro.sample("mean", dist.Normal(0.0, 1.0))
        k = jnp.exp(lv) * jnp.exp(-0.5 * (x - x.T) ** 2 / jnp.exp(2 * ll))
        cov = k + (1e-6 + jnp.exp(ln)) * jnp.eye(x.shape[0])
        numpyro.sample("y", dist.MultivariateNormal(m * jnp.ones(x.shape[0]), cov), obs=y)

    mcmc = MCMC(NUTS(reference), num_warmup=500, num_samples=1000, num_chains=2,
                chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.key(1), jnp.asarray(x), jnp.asarray(y))
    ref = mcmc.get_samples(group_by_chain=True)
    for name, draws in ours.items():
        a = np.asarray(draws).reshape(2, 1000)
        b = np.asarray(ref[name])
        se = np.hypot(*(float(np.asarray(az.mcse(to_inference_data({"posterior": {"v": c}}),
                                                 var_names=["v"])["v"])) for c in (a, b)))
        assert abs(a.mean() - b.mean()) < 4 * se, (name, a.mean(), b.mean(), se)
    # each mixture component is that draw's exact GP, conditioned alone
    xq = np.array([[0.1], [0.55], [1.3]])
    mix = np.asarray(fit.posterior(xq).loc)
    for s in (0, 7, 1999):
        params = jax.tree.map(lambda a, s=s: a[s], p)
        one = condition(params, pad_data(x, y), RBF, 1e-6)
        np.testing.assert_allclose(mix[s], np.asarray(one.posterior(xq).mean), rtol=1e-10)
