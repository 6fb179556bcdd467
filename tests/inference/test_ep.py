"""EP on a state-space GP against dense EP (float64)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from probkit.inference.ep import ep_statespace_gp
from probkit.kernels import Matern32, Matern52
from tests.inference.test_kalman import _data


def _dense_ep(K, y, moments, iters=300, damping=0.5):
    n = len(y)
    tau, nu = np.zeros(n), np.zeros(n)
    Kinv = np.linalg.inv(K)
    Sig, mu = K, np.zeros(n)
    for _ in range(iters):
        v = np.diag(Sig)
        tc, nc = 1 / v - tau, mu / v - nu
        mh, vh = moments(y, nc / tc, 1 / tc)
        tau = (1 - damping) * tau + damping * (1 / vh - tc)
        nu = (1 - damping) * nu + damping * (mh / vh - nc)
        Sig = np.linalg.inv(Kinv + np.diag(tau))
        mu = Sig @ nu
    return mu, np.diag(Sig), tau, nu


def _probit_moments(y, m, s2):
    z = y * m / np.sqrt(1 + s2)
    r = np.exp(norm.logpdf(z) - norm.logcdf(z))
    return m + y * s2 * r / np.sqrt(1 + s2), s2 - s2**2 * r * (z + r) / (1 + s2)


def test_ep_probit_equals_dense_ep(x64):
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 5, 60))
    y = (rng.uniform(size=60) < norm.cdf(1.5 * np.sin(2 * t))).astype(float)
    kern = Matern32(0.6, 1.5)
    res = ep_statespace_gp(kern, t, y, "probit", tol=1e-10, test_times=np.array([2.345]))
    assert bool(res.converged)
    K = np.asarray(kern(t[:, None], t[:, None]))
    ys = 2 * y - 1
    mu, var, tau, nu = _dense_ep(K, ys, _probit_moments)
    assert np.max(np.abs(res.mean - mu)) < 0.02  # the bar; in fact ~1e-9
    np.testing.assert_allclose(res.mean, mu, atol=1e-6)
    np.testing.assert_allclose(res.var, var, atol=1e-6)
    # EP log marginal likelihood, Rasmussen & Williams eq. (3.65).
    tc, nc = 1 / var - tau, mu / var - nu
    mc, sc = nc / tc, 1 / tc
    lz = (multivariate_normal(np.zeros(60), K + np.diag(1 / tau)).logpdf(nu / tau)
          + np.sum(norm.logcdf(ys * mc / np.sqrt(1 + sc)) + 0.5 * np.log(2 * np.pi * (sc + 1 / tau))
                   + 0.5 * (mc - nu / tau) ** 2 / (sc + 1 / tau)))
    np.testing.assert_allclose(float(res.log_marginal_likelihood), lz, rtol=1e-6)
    # Prediction at an unseen time: dense EP predictive mean.
    ks = np.asarray(kern(np.array([[2.345]]), t[:, None]))[0]
    pred = ks @ np.linalg.solve(K + np.diag(1 / tau), nu / tau)
    np.testing.assert_allclose(float(res.test_mean[0]), pred, atol=1e-6)


def test_ep_poisson_equals_dense_ep(x64):
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 5, 50))
    y = rng.poisson(np.exp(np.sin(2 * t))).astype(float)
    kern = Matern52(0.8, 1.0)
    res = ep_statespace_gp(kern, t, y, "poisson", tol=1e-10, num_quadrature=40)
    assert bool(res.converged)
    x, w = np.polynomial.hermite_e.hermegauss(40)

    def moments(y, m, s2):
        f = m[:, None] + np.sqrt(s2)[:, None] * x
        lw = np.log(w) + y[:, None] * f - np.exp(f)
        p = np.exp(lw - lw.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        mh = (p * f).sum(1)
        return mh, (p * (f - mh[:, None]) ** 2).sum(1)

    mu, var, _, _ = _dense_ep(np.asarray(kern(t[:, None], t[:, None])), y, moments)
    np.testing.assert_allclose(res.mean, mu, atol=1e-6)
    np.testing.assert_allclose(res.var, var, atol=1e-6)

def test_ep_bad_inputs():
    t, yy = _data(20)
    for bad in (np.r_[t[:-1], np.nan], t[::-1], np.r_[t[:1], t[:-1]]):
        with pytest.raises(ValueError, match="times"):
            ep_statespace_gp(Matern32(), bad, (yy > 0).astype(float), "probit")
    labels = (np.nan_to_num(yy) > 0).astype(float)
    with pytest.raises(ValueError, match="y"):
        ep_statespace_gp(Matern32(), t, labels + 2.0, "probit")
    with pytest.raises(ValueError, match="y"):
        ep_statespace_gp(Matern32(), t, labels - 0.5, "poisson")
    with pytest.raises(ValueError, match="likelihood"):
        ep_statespace_gp(Matern32(), t, labels, "logit")
    with pytest.raises(ValueError, match="damping"):
        ep_statespace_gp(Matern32(), t, labels, "probit", damping=0.0)
