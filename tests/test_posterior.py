"""Shared predictive posteriors: Gaussian draws have the stated moments, sample posteriors
resample whole draws."""

import jax
import jax.numpy as jnp
import numpy as np

from probkit.posterior import GaussianPosterior, SamplePosterior


def test_gaussian_posterior_samples_have_its_mean_and_covariance():
    cov = jnp.array([[1.0, 0.6], [0.6, 2.0]])
    post = GaussianPosterior(jnp.array([0.5, -1.0]), cov)
    draws = np.asarray(post.sample(jax.random.key(0), 100_000))
    np.testing.assert_allclose(draws.mean(0), [0.5, -1.0], atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03)
    np.testing.assert_allclose(post.variance, [1.0, 2.0])


def test_sample_posterior_moments_and_joint_resampling():
    draws = jnp.array([[0.0, 10.0], [2.0, 12.0], [4.0, 14.0]])
    post = SamplePosterior(draws)
    np.testing.assert_allclose(post.mean, [2.0, 12.0])
    np.testing.assert_allclose(post.variance, [8.0 / 3.0, 8.0 / 3.0], rtol=1e-6)
    s = np.asarray(post.sample(jax.random.key(1), 50))
    np.testing.assert_allclose(s[:, 1] - s[:, 0], 10.0)  # whole draws, never mixed
