"""The regression family as a BO surrogate (Regressor.for_bo: no adapter class), compiled once
per capacity, and float64 kept inside the model when used outside an x64 context."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from probkit import bo
from probkit.bo.acquisition import optimize_acquisition
from probkit.models import nngp
from tests.compiles import count_compiles


def test_student_t_nngp_surrogate():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(15, 2))
    y = np.sin(5 * x[:, 0]) + x[:, 1]
    fitted = nngp.Regressor.for_bo(num_steps=50, refine_steps=20).fit(
        x, (y - y.mean()) / y.std(), key=jax.random.key(0), progress_bar=False)
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
    with jax.enable_x64(True):
        corner_centre = fitted.kernel.diag(jnp.array([[9.0, -9.0], [0.0, 0.0]]))
    np.testing.assert_allclose(corner_centre[0], corner_centre[1], rtol=1e-12)


def test_student_t_nngp_surrogate_compiles_once_per_capacity():
    """n and n + 1 points share a capacity (32): the second fit, posterior and acquisition
    optimisation trigger no compilation at all (same settings as the test above, so its
    compiled programs are reused when both run)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(21, 2))
    y = np.sin(5 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    surrogate = nngp.Regressor.for_bo(num_steps=50, refine_steps=20)

    def step(n):
        fitted = surrogate.fit(x[:n], y[:n], key=jax.random.key(n), progress_bar=False)
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


def test_predictions_carry_no_float64_out_of_x64():
    """The issue's leak: np.mean(pred.log_prob(y)) outside x64 warns nothing, and every
    returned array is NumPy (float64) or a float32-safe JAX array."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(12, 1))
    y = np.sin(6 * x[:, 0])
    fitted = nngp.Regressor(num_steps=10, refine_steps=5).fit(x, y, key=jax.random.key(0),
                                                             progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = fitted.predict(x)
        assert np.isfinite(np.mean(pred.log_prob(y)))
        for value in (pred.mean, pred.variance, pred.log_prob(y), pred.cdf(y), pred.icdf(0.3),
                      pred.sample(jax.random.key(1), (3,)), pred.interval(0.9)[0],
                      fitted.posterior(x).variance):
            assert isinstance(value, np.ndarray), type(value)
            jnp.asarray(value, jnp.float32) + jnp.float32(1.0)
