"""Predictive distributions: moments, densities, CDFs and quantiles against scipy; joint samples;
float64 results never leak out of an x64 context."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

from probkit.posterior import Empirical, Gaussian, Mixture


def test_gaussian_samples_have_its_mean_and_covariance():
    cov = jnp.array([[1.0, 0.6], [0.6, 2.0]])
    post = Gaussian(jnp.array([0.5, -1.0]), cov=cov)
    draws = np.asarray(post.sample(jax.random.key(0), (100_000,)))
    np.testing.assert_allclose(draws.mean(0), [0.5, -1.0], atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03)
    np.testing.assert_allclose(post.variance, [1.0, 2.0])
    assert post.batch_shape == (2,) and post.sample(jax.random.key(0), 7).shape == (7, 2)


def test_gaussian_density_cdf_quantiles_match_scipy():
    loc, sd = np.array([0.3, -2.0]), np.array([0.5, 3.0])
    post = Gaussian(jnp.asarray(loc), scale=jnp.asarray(sd))
    y = np.array([1.0, -1.0])
    np.testing.assert_allclose(post.log_prob(y), st.norm.logpdf(y, loc, sd), rtol=1e-5)
    np.testing.assert_allclose(post.cdf(y), st.norm.cdf(y, loc, sd), rtol=1e-5)
    np.testing.assert_allclose(post.icdf(0.9), st.norm.ppf(0.9, loc, sd), rtol=1e-5)
    lo, hi = post.interval(0.95)
    np.testing.assert_allclose(lo, st.norm.ppf(0.025, loc, sd), rtol=1e-5)
    np.testing.assert_allclose(hi, st.norm.ppf(0.975, loc, sd), rtol=1e-5)
    assert np.asarray(post.quantile([0.1, 0.5])).shape == (2, 2)
    with pytest.raises(ValueError, match="level"):
        post.interval(1.5)


def test_mixture_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(5, 3)), rng.uniform(0.2, 1.0, (5, 3))
    mix = Mixture(jnp.asarray(loc), jnp.asarray(scale))
    y = np.array([0.1, -0.4, 2.0])
    dens = st.norm.pdf(y, loc, scale).mean(0)
    np.testing.assert_allclose(mix.log_prob(y), np.log(dens), rtol=1e-5)
    np.testing.assert_allclose(mix.cdf(y), st.norm.cdf(y, loc, scale).mean(0), rtol=1e-5)
    np.testing.assert_allclose(mix.mean, loc.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mix.variance, (scale**2).mean(0) + loc.var(0), rtol=1e-5)
    q = np.asarray(mix.icdf(0.3))  # bisection on the exact mixture CDF
    np.testing.assert_allclose(st.norm.cdf(q[:, None], loc.T, scale.T).mean(1), 0.3, atol=1e-5)


def test_mixture_log_expected_improvement_matches_quadrature():
    """The exact log-EI of a mixture (the average of its components' improvements) against
    scipy quadrature of max(best - y, 0) under the mixture density, and finite far below the
    support, where the plain EI underflows."""
    from scipy.integrate import quad

    rng = np.random.default_rng(1)
    loc, scale = rng.normal(size=(4, 3)), rng.uniform(0.1, 1.0, (4, 3))
    mix = Mixture(jnp.asarray(loc, jnp.float32), jnp.asarray(scale, jnp.float32))
    best = -0.3
    got = np.asarray(mix.log_expected_improvement(best))
    for j in range(3):
        def gain(t, j=j):
            return (best - t) * st.norm.pdf(t, loc[:, j], scale[:, j]).mean()

        ei = quad(gain, -np.inf, best)[0]
        np.testing.assert_allclose(got[j], np.log(ei), rtol=2e-5)
    far = np.asarray(mix.log_expected_improvement(-40.0))
    assert np.all(np.isfinite(far)) and np.all(far < got)


def test_mixture_samples_are_joint_over_points():
    loc = jnp.array([[0.0, 10.0], [5.0, 15.0]])
    s = np.asarray(Mixture(loc, 1e-6).sample(jax.random.key(1), (200,)))
    np.testing.assert_allclose(s[:, 1] - s[:, 0], 10.0, atol=1e-4)


def test_empirical_moments_joint_resampling_and_no_density():
    draws = jnp.array([[0.0, 10.0], [2.0, 12.0], [4.0, 14.0]])
    post = Empirical(draws)
    np.testing.assert_allclose(post.mean, [2.0, 12.0])
    np.testing.assert_allclose(post.variance, [8.0 / 3.0, 8.0 / 3.0], rtol=1e-6)
    s = np.asarray(post.sample(jax.random.key(1), 50))
    np.testing.assert_allclose(s[:, 1] - s[:, 0], 10.0)  # whole draws, never mixed
    np.testing.assert_allclose(post.icdf(0.5), [2.0, 12.0])
    with pytest.raises(NotImplementedError):
        post.log_prob(jnp.zeros(2))


def test_float64_results_come_back_as_numpy_outside_x64():
    with jax.enable_x64(True):
        post = Gaussian(jnp.array([0.5, 1.0]), cov=jnp.eye(2, dtype=jnp.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (post.mean, post.variance, post.log_prob(np.zeros(2)),
                      post.sample(jax.random.key(0), (3,))):
            assert isinstance(value, np.ndarray) and value.dtype == np.float64
            float(np.mean(value))


def test_distributions_pass_through_jit():
    @jax.jit
    def f(loc):
        return Gaussian(loc, scale=jnp.ones(2))

    out = f(jnp.zeros(2))
    assert isinstance(out, Gaussian) and out.batch_shape == (2,)
