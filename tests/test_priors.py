"""Dataset priors: GP datasets have the kernel's covariance, NumPyro priors the model's moments,
hyperpriors are drawn per dataset, bad arguments raise."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from probkit.kernels import Matern52
from probkit.priors import GPPrior, NumPyroPrior


def test_gp_prior_covariance_matches_kernel_plus_noise():
    prior = GPPrior("matern52", lengthscale=0.3, variance=1.5, noise=0.1)
    x = jnp.broadcast_to(jnp.array([[0.1], [0.3], [0.8]]), (20_000, 3, 1))
    data = prior.sample_at(jax.random.key(0), x)
    emp = np.cov(np.asarray(data.y).T)
    ref = np.asarray(Matern52(0.3, 1.5)(x[0], x[0])) + 0.1 * np.eye(3)
    np.testing.assert_allclose(emp, ref, atol=0.06)  # s.e. of a covariance ~ 1.6 * sqrt(2/2e4)


def test_gp_prior_with_ard_lengthscales_matches_the_dense_kernel():
    from probkit.kernels import RBF

    prior = GPPrior("rbf", lengthscale=[0.2, 1.5], variance=1.0, noise=0.05, input_dim=2)
    assert prior.lengthscale == (0.2, 1.5) and prior.is_fixed
    pts = jnp.array([[0.0, 0.0], [0.15, 0.0], [0.0, 0.9], [0.3, 1.2]])
    data = prior.sample_at(jax.random.key(2), jnp.broadcast_to(pts, (20_000, 4, 2)))
    ref = np.asarray(RBF(jnp.array([0.2, 1.5]), 1.0)(pts, pts)) + 0.05 * np.eye(4)
    np.testing.assert_allclose(np.cov(np.asarray(data.y).T), ref, atol=0.05)
    np.testing.assert_array_equal(np.asarray(data.params["lengthscale"][0]),
                                  np.float32([0.2, 1.5]))
    with pytest.raises(ValueError, match="^lengthscale"):
        GPPrior("rbf", lengthscale=[0.2, 1.5, 1.0], input_dim=2)


def test_gp_prior_draws_hyperparameters_per_dataset_and_inputs_in_bounds():
    prior = GPPrior("rbf", lengthscale=dist.Gamma(3.0, 6.0), variance=dist.Uniform(0.5, 2.0),
                    noise=0.01, input_dim=3, bounds=(-2.0, 2.0))
    data = prior.sample(jax.random.key(1), 4000, 5)
    ls = np.asarray(data.params["lengthscale"])
    assert ls.shape == (4000, 3)
    np.testing.assert_allclose(ls.mean(), 0.5, atol=0.01)  # Gamma(3, 6) mean
    np.testing.assert_allclose(np.asarray(data.params["variance"]).mean(), 1.25, atol=0.02)
    x = np.asarray(data.x)
    assert x.min() >= -2 and x.max() <= 2 and abs(x.mean()) < 0.03
    # the outputs' marginal variance is E[variance] + noise
    np.testing.assert_allclose(np.asarray(data.y).var(), 1.26, rtol=0.05)


def test_student_t_noise_has_heavy_tails():
    light = GPPrior("rbf", lengthscale=0.3, variance=1.0, noise=0.01)
    heavy = GPPrior("rbf", lengthscale=0.3, variance=1.0, noise=0.01, student_t_df=2.1,
                    student_t_scale=0.5)
    x = jnp.zeros((50_000, 1, 1))
    yl = np.asarray(light.sample_at(jax.random.key(2), x).y[:, 0])
    yh = np.asarray(heavy.sample_at(jax.random.key(2), x).y[:, 0])
    kurt = lambda v: np.mean((v - v.mean()) ** 4) / v.var() ** 2  # noqa: E731
    assert abs(kurt(yl) - 3.0) < 0.15 and kurt(yh) > 6.0


def test_exact_predictive_matches_dense_formula():
    prior = GPPrior("rbf", lengthscale=0.25, variance=0.7, noise=0.05)
    rng = np.random.default_rng(0)
    xt, yt, xq = rng.uniform(size=(7, 1)), rng.normal(size=7), rng.uniform(size=(3, 1))
    with jax.enable_x64(True):
        mean, var = prior.predictive(jnp.asarray(xt), jnp.asarray(yt), jnp.asarray(xq))
    k = lambda a, b: 0.7 * np.exp(-0.5 * (a - b.T) ** 2 / 0.25**2)  # noqa: E731
    kn = k(xt, xt) + (0.05 + 0.7e-6) * np.eye(7)
    ref_mean = k(xq, xt) @ np.linalg.solve(kn, yt)
    ref_var = 0.7 - np.sum(k(xq, xt) * np.linalg.solve(kn, k(xt, xq)).T, 1) + 0.05 + 0.7e-6
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-9)
    np.testing.assert_allclose(var, ref_var, rtol=1e-9)


def _blr(x):
    w = numpyro.sample("w", dist.Normal(0.0, 2.0))
    numpyro.sample("y", dist.Normal(w * x[:, 0], 0.5))


def test_numpyro_prior_matches_model_moments():
    data = NumPyroPrior(_blr, input_dim=1).sample(jax.random.key(3), 40_000, 2)
    x, y = np.asarray(data.x[..., 0]), np.asarray(data.y)
    # Var(y | x) = 4 x^2 + 0.25, so E[y^2 - 4 x^2] = 0.25
    np.testing.assert_allclose(np.mean(y**2 - 4 * x**2), 0.25, atol=0.02)
    # Cov(y1, y2 | x) = 4 x1 x2
    np.testing.assert_allclose(np.mean(y[:, 0] * y[:, 1] - 4 * x[:, 0] * x[:, 1]), 0.0, atol=0.02)


def test_same_key_same_datasets():
    prior = GPPrior("periodic", lengthscale=dist.Uniform(0.1, 0.6), period=dist.Uniform(0.1, 0.5))
    a, b = prior.sample(jax.random.key(4), 3, 10), prior.sample(jax.random.key(4), 3, 10)
    np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("kwargs,name", [
    ({"kernel": "cosine"}, "kernel"),
    ({"lengthscale": 0.0}, "lengthscale"),
    ({"variance": -1.0}, "variance"),
    ({"noise": float("nan")}, "noise"),
    ({"bounds": (1.0, 0.0)}, "bounds"),
    ({"input_dim": 0}, "input_dim"),
    ({"student_t_df": -2.0}, "student_t_df"),
])
def test_gp_prior_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GPPrior(**kwargs)


def test_numpyro_prior_rejects_bad_model_and_site():
    with pytest.raises(ValueError, match="model"):
        NumPyroPrior(3.0)
    with pytest.raises(ValueError, match="site"):
        NumPyroPrior(_blr, site="z").sample(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="num_points"):
        NumPyroPrior(_blr).sample(jax.random.key(0), 2, 0)
