"""Exact GP surrogate against a dense NumPy/SciPy computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from probkit.bo import GP, Fitted, Surrogate
from probkit.kernels import Matern52
from probkit.models.gp import GPParams, log_marginal_likelihood, pad_data


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
