"""Tests of the DKF baselines (probkit.models.dkf.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from probkit.models import dkf
from tests.models.dkf._helpers import lgssm_data

pytestmark = pytest.mark.usefixtures("x64")


def test_gaussian_mixture_moments_against_scipy():
    from scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(12)
    n, d = 7, 3
    H = rng.normal(size=(2, n, d))
    noise = np.stack([np.eye(n), 5.0 * np.eye(n)])
    S = 0.7 * np.eye(d) + 0.1
    x = rng.normal(size=(4, n))
    f, Q = dkf.gaussian_mixture_moments(x, H, noise, np.array([0.3, 0.7]), S)
    w, fs, Qs = [], [], []
    for l, pi in enumerate([0.3, 0.7]):             # conditioning of the joint Gaussian
        C = H[l] @ S @ H[l].T + noise[l]
        K = S @ H[l].T @ np.linalg.inv(C)
        w.append(pi * mvn(np.zeros(n), C).pdf(x))
        fs.append(x @ K.T)
        Qs.append(S - K @ H[l] @ S)
    w = np.array(w) / np.sum(w, 0)
    f_ref = sum(w[l][:, None] * fs[l] for l in range(2))
    Q_ref = sum(w[l][:, None, None] * (Qs[l] + np.einsum("ni,nj->nij", fs[l], fs[l]))
                for l in range(2)) - np.einsum("ni,nj->nij", f_ref, f_ref)
    np.testing.assert_allclose(f, f_ref, atol=1e-12)
    np.testing.assert_allclose(Q, Q_ref, atol=1e-12)


def test_kalman_baseline_helpers():
    dyn, H, Lam, x, z = lgssm_data(T=4000, D=2, P=3, seed=9)
    H_fit, Lam_fit = dkf.fit_linear_observation(x, z)
    np.testing.assert_allclose(H_fit, np.linalg.lstsq(z, x, rcond=None)[0].T, atol=1e-12)
    np.testing.assert_allclose(H_fit, H, atol=0.05)
    assert dkf.kalman_decode(dyn, H, Lam, x[:10]).filtered_mean.shape == (10, 2)
    v = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert dkf.mean_absolute_angle(v, np.array([[0.0, 1.0], [0.0, -1.0]])) == pytest.approx(
        0.75 * np.pi)
    assert dkf.nrmse(np.zeros_like(z), z) == pytest.approx(1.0)
