"""Acquisitions: log-EI vs closed forms and quadrature, MC qLogEI, optimisation, compile once."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring
from scipy import stats

from probkit import bo
from probkit.bo.acquisition import QLogEI, log_ei, optimize_acquisition
from probkit.posterior import Gaussian


def test_log_ei_equals_log_ei_closed_form():
    mean = np.array([0.0, 1.0, -2.0, 3.0])
    var = np.array([1.0, 0.25, 4.0, 0.01])
    best = 0.5
    s = np.sqrt(var)
    z = (best - mean) / s
    ref = np.log(s * (stats.norm.pdf(z) + z * stats.norm.cdf(z)))
    with jax.enable_x64(True):
        got = np.asarray(log_ei(jnp.asarray(mean), jnp.asarray(var), best))
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_qlogei_matches_analytic_log_ei_for_one_point():
    with jax.enable_x64(True):
        post = Gaussian(jnp.array([0.3]), cov=jnp.array([[0.04]]))
        q = QLogEI(num_samples=20_000)(post, jnp.asarray(0.1), jax.random.key(0))
        a = log_ei(post.mean, post.variance, 0.1)[0]
    np.testing.assert_allclose(float(q), float(a), atol=0.05)


def test_ucb_value():
    with jax.enable_x64(True):
        post = Gaussian(jnp.array([1.0]), cov=jnp.array([[0.25]]))
        v = bo.UCB(beta=4.0)(post, 0.0, jax.random.key(0))
    np.testing.assert_allclose(float(v), -1.0 + 2.0 * 0.5)


class _Bowl(eqx.Module):
    """Fitted surrogate whose posterior mean is a bowl with minimum at ``centre``."""

    centre: jax.Array

    def posterior(self, x):
        mean = jnp.sum((x - self.centre) ** 2, axis=-1)
        return Gaussian(mean, cov=0.01 * jnp.eye(x.shape[0]))


@pytest.mark.parametrize("acq", [bo.LogEI(), bo.QLogEI(num_samples=64)], ids=["logei", "qlogei"])
def test_optimizer_finds_the_maximiser(acq):
    centre = jnp.array([0.3, 0.7])
    res = optimize_acquisition(acq, _Bowl(centre), 0.5, np.array([0.9, 0.1]),
                               key=jax.random.key(1), num_raw=256, num_restarts=4,
                               num_steps=100)
    np.testing.assert_allclose(np.asarray(res.x)[0], centre, atol=2e-2)


def test_batch_and_thompson_shapes():
    centre = jnp.array([0.3, 0.7])
    res = optimize_acquisition(bo.LogEI(), _Bowl(centre), 0.5, np.array([0.5, 0.5]),
                               key=jax.random.key(2), q=3, num_raw=64, num_restarts=2,
                               num_steps=20)
    assert res.x.shape == (3, 2)
    th = optimize_acquisition(bo.Thompson(num_candidates=256), _Bowl(centre), 0.5,
                              np.array([0.5, 0.5]), key=jax.random.key(3), q=2)
    x = np.asarray(th.x)
    assert x.shape == (2, 2) and np.all((x >= 0) & (x <= 1))
    assert np.all(np.abs(x - np.asarray(centre)) < 0.3)


def test_compiles_once_as_data_grow():
    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event
        else None)
    rng = np.random.default_rng(0)
    gp = bo.GP(num_restarts=1, num_steps=50)
    counts = []
    for n in (10, 12, 17):
        x = rng.uniform(size=(n, 2))
        y = np.sin(5 * x[:, 0]) + x[:, 1]
        before = len(compiles)
        fitted = gp.fit(x, y, key=jax.random.key(n))
        optimize_acquisition(bo.LogEI(), fitted, y.min(), x[np.argmin(y)],
                             key=jax.random.key(0), num_raw=128, num_restarts=3, num_steps=40)
        counts.append(len(compiles) - before)
    assert counts[0] > 0
    assert counts[1:] == [0, 0], counts  # same capacity (32): no recompilation
