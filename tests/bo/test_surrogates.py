"""Model-family surrogates: NumPyro model through the HMC engine, Student-t NNGP, PFN."""

import contextlib

import jax
import jax.numpy as jnp
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
    # default kernel: fitted per-input variances, normalised (same prior variance at a corner
    # of the box as at its centre, so log-EI is not drawn to the corners)
    k = fitted.kernel
    assert k.normalize and np.asarray(k.input_weight_variance).shape == (2,)
    corner_centre = fitted.kernel.diag(jnp.array([[9.0, -9.0], [0.0, 0.0]]))
    np.testing.assert_allclose(corner_centre[0], corner_centre[1], rtol=1e-12)


@contextlib.contextmanager
def count_compiles():
    """Collect the durations of XLA compilations that happen inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_student_t_nngp_surrogate_compiles_once_per_capacity():
    """n and n + 1 points share a capacity (32): the second fit, posterior and acquisition
    optimisation trigger no compilation at all (same settings as the test above, so its
    compiled programs are reused when both run)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(21, 2))
    y = np.sin(5 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    surrogate = bo.StudentTNNGPSurrogate(num_steps=50, refine_steps=20)

    def step(n):
        fitted = surrogate.fit(x[:n], y[:n], key=jax.random.key(n))
        res = optimize_acquisition(bo.LogEI(), fitted, float(y[:n].min()), x[0],
                                   key=jax.random.key(2), num_raw=32, num_restarts=2,
                                   num_steps=10)
        return fitted, np.asarray(res.x)

    fitted, _ = step(20)
    assert (fitted.n, fitted.capacity) == (20, 32)
    with count_compiles() as compiles:
        fitted, x_next = step(21)
    assert (fitted.n, fitted.capacity) == (21, 32)
    assert compiles == [], f"{len(compiles)} recompilations for n=21 after n=20"
    assert x_next.shape == (1, 2) and np.all((x_next >= 0) & (x_next <= 1))


def test_pfn_surrogate_tracks_data_and_compiles_once():
    """The shipped BO PFN interpolates a smooth function it is conditioned on, its acquisition
    finds the low region, and one more observation compiles nothing (capacity padding)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(31, 2))
    f = lambda z: ((z - 0.3) ** 2).sum(-1)  # noqa: E731
    y = f(x)
    y = (y - y.mean()) / y.std()
    surrogate = bo.PFNSurrogate()

    def step(n):
        fitted = surrogate.fit(x[:n], y[:n], key=jax.random.key(0))
        res = optimize_acquisition(bo.LogEI(), fitted, float(y[:n].min()), x[np.argmin(y[:n])],
                                   key=jax.random.key(3), num_raw=64, num_restarts=2,
                                   num_steps=20)
        return fitted, np.asarray(res.x)

    fitted, _ = step(30)
    post = fitted.posterior(x[:30])
    resid = np.asarray(post.mean) - y[:30]
    assert np.sqrt(np.mean(resid**2)) < 0.2  # y has unit variance
    assert post.sample(jax.random.key(1), 4).shape == (4, 30)
    with count_compiles() as compiles:
        _, x_next = step(31)
    assert compiles == [], f"{len(compiles)} recompilations for n=31 after n=30"
    assert f(x_next[0]) < np.percentile(f(x), 25)
