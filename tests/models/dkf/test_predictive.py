"""Tests of the DKF's per-step Gaussian (probkit.models.dkf.predictive)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal as mvn
from scipy.stats import norm

from probkit.models.dkf import StateGaussian


def _example(T=4, D=3, seed=0):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(T, D))
    W = rng.normal(size=(T, D, D))
    cov = W @ np.swapaxes(W, 1, 2) + 0.5 * np.eye(D)
    return loc, cov


@pytest.mark.usefixtures("x64")
def test_state_gaussian_against_scipy():
    loc, cov = _example()
    p = StateGaussian(jnp.asarray(loc), jnp.asarray(cov))
    assert p.batch_shape == (4,) and p.event_shape == (3,)
    np.testing.assert_array_equal(p.mean, loc)
    np.testing.assert_allclose(p.variance, np.diagonal(cov, axis1=1, axis2=2), rtol=1e-14)
    z = np.random.default_rng(1).normal(size=(2, 4, 3))
    ref = np.array([[mvn(loc[t], cov[t]).logpdf(z[s, t]) for t in range(4)] for s in range(2)])
    np.testing.assert_allclose(p.log_prob(z), ref, rtol=1e-12)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    np.testing.assert_allclose(p.cdf(z[0]), norm.cdf(z[0], loc, sd), rtol=1e-12)
    np.testing.assert_allclose(p.icdf(0.9), norm.ppf(0.9, loc, sd), rtol=1e-12)
    lo, hi = p.interval(0.5)
    np.testing.assert_allclose(hi - lo, 2 * norm.ppf(0.75) * sd, rtol=1e-12)
    s = np.asarray(p.sample(jax.random.key(0), (20000,)))
    assert s.shape == (20000, 4, 3)
    w = np.linalg.solve(np.linalg.cholesky(cov), (s - loc)[..., None])[..., 0]   # whitened
    np.testing.assert_allclose(w.mean(0), 0.0, atol=5 / np.sqrt(len(s)))
    emp = np.einsum("sti,stj->tij", w, w) / len(s)
    np.testing.assert_allclose(emp, np.broadcast_to(np.eye(3), emp.shape),
                               atol=5 * np.sqrt(2 / len(s)))


def test_state_gaussian_keeps_float64_out_of_float32_code():
    loc, cov = _example()
    with jax.enable_x64(True):
        p = StateGaussian(jnp.asarray(loc), jnp.asarray(cov))
    assert isinstance(p.mean, np.ndarray) and p.mean.dtype == np.float64
    assert isinstance(p.log_prob(loc), np.ndarray)
    assert p.sample(jax.random.key(0), 3).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="^cov: expected shape"):
        StateGaussian(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
