"""Model-family surrogates: NumPyro model through the HMC engine, Student-t NNGP."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit import bo
from probkit.bo.acquisition import optimize_acquisition


def quadratic(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 3.0).expand([3]).to_event(1))
    f = numpyro.deterministic("f", w[0] + w[1] * x[:, 0] + w[2] * x[:, 0] ** 2)
    numpyro.sample("y", dist.Normal(f, 0.05), obs=y)


def test_numpyro_surrogate_through_hmc():
    x = np.linspace(0, 1, 12)[:, None]
    y = 4 * (x[:, 0] - 0.6) ** 2
    s = bo.NumPyroSurrogate(quadratic, num_warmup=150, num_samples=100, num_chains=2,
                            max_draws=64)
    fitted = s.fit(x, y, key=jax.random.key(0))
    xs = np.array([[0.1], [0.6], [0.9]])
    post = fitted.posterior(xs)
    assert isinstance(post, bo.SamplePosterior) and post.draws.shape == (64, 3)
    np.testing.assert_allclose(np.asarray(post.mean), 4 * (xs[:, 0] - 0.6) ** 2, atol=0.1)
    assert post.sample(jax.random.key(1), 5).shape == (5, 3)
    res = optimize_acquisition(bo.LogEI(), fitted, float(y.min()), x[np.argmin(y)],
                               key=jax.random.key(2), num_raw=64, num_restarts=2, num_steps=30)
    np.testing.assert_allclose(np.asarray(res.x)[0, 0], 0.6, atol=0.1)


def test_student_t_nngp_surrogate():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(15, 2))
    y = np.sin(5 * x[:, 0]) + x[:, 1]
    fitted = bo.StudentTNNGPSurrogate(num_steps=50, refine_steps=20).fit(
        x, (y - y.mean()) / y.std(), key=jax.random.key(0))
    post = fitted.posterior(x[:4])
    assert post.mean.shape == (4,) and post.variance.shape == (4,)
    assert post.sample(jax.random.key(1), 3).shape == (3, 4)
    res = optimize_acquisition(bo.LogEI(), fitted, -1.0, x[0], key=jax.random.key(2),
                               num_raw=32, num_restarts=2, num_steps=10)
    assert np.all((np.asarray(res.x) >= 0) & (np.asarray(res.x) <= 1))
