"""Tests of the DKF dynamics (probkit.models.dkf.dynamics)."""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import pytest

from probkit.models import dkf
from tests.models.dkf._helpers import lgssm_data

pytestmark = pytest.mark.usefixtures("x64")


def test_fit_dynamics_least_squares_and_lyapunov():
    rng = np.random.default_rng(2)
    A = np.array([[0.9, 0.05], [-0.1, 0.7]])
    G = np.array([[0.3, 0.1], [0.1, 0.2]])
    S = dkf.make_dynamics(A, G).S
    np.testing.assert_allclose(S, A @ S @ A.T + G, atol=1e-12)
    z = np.zeros((2, 3000, 2))
    for b in range(2):
        prev = rng.multivariate_normal(np.zeros(2), S)
        for t in range(3000):
            prev = A @ prev + rng.multivariate_normal(np.zeros(2), G)
            z[b, t] = prev
    fit = dkf.fit_dynamics(z)
    prev, nxt = z[:, :-1].reshape(-1, 2), z[:, 1:].reshape(-1, 2)
    A_ls = np.linalg.lstsq(prev, nxt, rcond=None)[0].T
    np.testing.assert_allclose(fit.A, A_ls, atol=1e-10)
    np.testing.assert_allclose(fit.G, np.cov(nxt - prev @ A_ls.T, rowvar=False), atol=1e-10)
    np.testing.assert_allclose(fit.S, np.cov(z.reshape(-1, 2), rowvar=False), atol=1e-10)
    np.testing.assert_allclose(fit.A, A, atol=0.05)
    lyap = dkf.fit_dynamics(list(z), stationary="lyapunov")
    np.testing.assert_allclose(lyap.S, lyap.A @ lyap.S @ lyap.A.T + lyap.G, atol=1e-10)


def test_dynamics_model_log_density_matches_scipy():
    from scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(3)
    A = np.array([[0.5, 0.1], [0.0, 0.6]])
    G = np.array([[0.4, 0.1], [0.1, 0.3]])
    z = rng.normal(size=(6, 2))
    S = dkf.make_dynamics(A, G).S
    logp = jax.jit(lambda z, A, G: numpyro.infer.util.log_density(
        dkf.dynamics_model, (z,), {"A": A, "G": G}, {})[0])(z, A, G)
    ref = mvn(np.zeros(2), S).logpdf(z[0]) + sum(mvn(A @ z[t - 1], G).logpdf(z[t])
                                                 for t in range(1, 6))
    np.testing.assert_allclose(float(logp), ref, rtol=1e-10)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(dkf.dynamics_model, 0)).get_trace(
        num_steps=7, dim=2)
    assert tr["z_path"]["value"].shape == (7, 2) and tr["A"]["value"].shape == (2, 2)


@pytest.mark.slow
def test_dynamics_sampled_with_probkit_hmc():
    rng = np.random.default_rng(11)
    z = np.zeros((200, 1))
    for t in range(1, 200):
        z[t] = 0.7 * z[t - 1] + 0.5 * rng.normal()
    res = dkf.sample_dynamics(z, key=jax.random.key(0), num_warmup=100, num_samples=100,
                              num_chains=1, progress_bar=False)
    assert res.posterior["A"].shape == (1, 100, 1, 1) and res.posterior["G"].shape == (1, 100, 1, 1)
    ls = dkf.fit_dynamics(z)
    assert abs(float(res.posterior["A"].mean()) - ls.A[0, 0]) < 0.05
    assert abs(float(res.posterior["G"].mean()) - ls.G[0, 0]) < 0.05
    assert int(np.sum(res.sample_stats["diverging"])) == 0


def test_make_dynamics_bad_inputs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="^A: expected shape"):
        dkf.make_dynamics(np.ones((2, 3)), np.eye(2))
    with pytest.raises(ValueError, match="^A: expected an array with ndim"):
        dkf.make_dynamics(np.ones(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^G: expected shape \(2, 2\)"):
        dkf.make_dynamics(0.5 * np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="^G: must be positive definite"):
        dkf.make_dynamics(0.5 * np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="^G: must be symmetric"):
        dkf.make_dynamics(0.5 * np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="^A: spectral radius"):
        dkf.make_dynamics(1.1 * np.eye(2), np.eye(2))
    _, _, _, _, z = lgssm_data(T=60, D=2, P=3, seed=10)
    zb = z.copy()
    zb[0, 0] = np.nan
    with pytest.raises(ValueError, match="^z: contains NaN"):
        dkf.fit_dynamics(zb)
