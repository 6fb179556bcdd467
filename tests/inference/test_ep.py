"""EP on a state-space GP against dense EP (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from probkit.inference.ep import EPConvergenceWarning, ep_statespace_gp
from probkit.kernels import Matern32, Matern52
from tests.inference.test_kalman import _data


def _dense_ep(K, y, moments, iters=300, damping=0.5):
    """Parallel damped EP on a dense Gram matrix, in the form of Rasmussen & Williams (2006,
    Alg. 3.5: ``B = I + S^1/2 K S^1/2``), which needs no inverse of ``K`` (a periodic Gram
    matrix has numerical rank ``2J + 1``). Site precisions stay >= 0 for log-concave
    likelihoods; a negative one makes ``sqrt`` NaN and the comparison fail."""
    n = len(y)
    tau, nu = np.zeros(n), np.zeros(n)
    Sig, mu = K, np.zeros(n)
    for _ in range(iters):
        v = np.diag(Sig)
        tc, nc = 1 / v - tau, mu / v - nu
        mh, vh = moments(y, nc / tc, 1 / tc)
        tau = (1 - damping) * tau + damping * (1 / vh - tc)
        nu = (1 - damping) * nu + damping * (mh / vh - nc)
        s = np.sqrt(tau)
        L = np.linalg.cholesky(np.eye(n) + s[:, None] * K * s[None, :])
        V = np.linalg.solve(L, s[:, None] * K)
        Sig = K - V.T @ V
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


def _grid_moments(loglik):
    """Tilted moments by trapezoidal integration on a grid around the tilted mass (independent
    of Gauss-Hermite): a coarse grid over the cavity +-15 sd finds the peak and width, a fine
    grid +-12 widths around the peak integrates."""

    def one(y, m, s2):
        def logg(f):
            return -0.5 * (f - m) ** 2 / s2 + loglik(y, f)

        coarse = m + np.sqrt(s2) * np.linspace(-15, 15, 6001)
        lg = logg(coarse)
        peak = coarse[np.argmax(lg)]
        mass = coarse[lg > lg.max() - 30]
        width = max(mass.max() - mass.min(), 1e-3 * np.sqrt(s2))
        f = np.linspace(peak - width, peak + width, 8001)
        g = np.exp(logg(f) - logg(f).max())
        z = np.trapezoid(g, f)
        mean = np.trapezoid(g * f, f) / z
        return mean, np.trapezoid(g * (f - mean) ** 2, f) / z

    def moments(y, m, s2):
        return tuple(np.array(v) for v in zip(*map(one, y, m, s2), strict=True))

    return moments


def _poisson_loglik(y, f):
    return y * f - np.exp(f)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_ep_poisson_equals_dense_ep_for_counts_up_to_a_thousand(scale):
    # Counts from 0 (scale 1) to ~10^3 (sunspot-like sizes), in the default float32 setting: EP
    # computes in float64 inside the call and must converge and match dense EP.
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0, 5, 40))
    y = rng.poisson(scale * np.exp(np.sin(2 * t))).astype(float)
    assert y.min() == 0 or scale > 1
    kern = Matern52(0.8, 1.0 + np.log(scale) ** 2 / 4)
    res = ep_statespace_gp(kern, t, y, "poisson", tol=1e-10, max_iter=500)
    assert bool(res.converged) and res.mean.dtype == np.float64
    assert np.all(np.isfinite(res.site_precision)) and np.isfinite(res.log_marginal_likelihood)
    with jax.enable_x64(True):
        K = np.asarray(kern(jnp.asarray(t)[:, None], jnp.asarray(t)[:, None]))
    mu, var, _, _ = _dense_ep(K, y, _grid_moments(_poisson_loglik), iters=int(res.num_iterations)
                              + 40)
    np.testing.assert_allclose(res.mean, mu, atol=2e-5)
    np.testing.assert_allclose(res.var, var, rtol=2e-4, atol=1e-7)


def test_ep_with_any_elementwise_likelihood_equals_dense_ep():
    # A user likelihood (Bernoulli-logit, labels in {0, 1}) goes through Gauss-Hermite.
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 5, 30))
    y = (rng.uniform(size=30) < 1 / (1 + np.exp(-3 * np.sin(2 * t)))).astype(float)

    def loglik(yy, f):
        return yy * f - jnp.logaddexp(0.0, f)

    kern = Matern32(0.7, 2.0)
    res = ep_statespace_gp(kern, t, y, loglik, tol=1e-10, max_iter=500)
    assert bool(res.converged)
    with jax.enable_x64(True):
        K = np.asarray(kern(jnp.asarray(t)[:, None], jnp.asarray(t)[:, None]))
    ref = _grid_moments(lambda yy, f: yy * f - np.logaddexp(0.0, f))
    mu, var, _, _ = _dense_ep(K, y, ref, iters=int(res.num_iterations) + 40)
    np.testing.assert_allclose(res.mean, mu, atol=2e-5)
    np.testing.assert_allclose(res.var, var, rtol=2e-4)


def test_ep_probit_labels_in_either_coding_agree():
    rng = np.random.default_rng(6)
    t = np.sort(rng.uniform(0, 5, 40))
    y01 = (rng.uniform(size=40) < norm.cdf(2 * np.sin(2 * t))).astype(float)
    a = ep_statespace_gp(Matern32(0.6, 1.5), t, y01, "probit")
    b = ep_statespace_gp(Matern32(0.6, 1.5), t, 2 * y01 - 1, "probit")
    assert bool(a.converged) and int(a.num_iterations) == int(b.num_iterations)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.log_marginal_likelihood, b.log_marginal_likelihood)


def test_ep_that_does_not_converge_warns_or_raises_with_the_count():
    t = np.linspace(0, 5, 30)
    y = np.round(50 * (1.5 + np.sin(2 * t)))
    with pytest.warns(EPConvergenceWarning, match=r"not converged after 3 sweeps.*tol=1e-12"):
        res = ep_statespace_gp(Matern32(0.5, 4.0), t, y, "poisson", max_iter=3, tol=1e-12)
    assert not bool(res.converged) and int(res.num_iterations) == 3 and res.last_change > 1e-12
    with pytest.raises(ValueError, match="not converged after 3 sweeps"):
        ep_statespace_gp(Matern32(0.5, 4.0), t, y, "poisson", max_iter=3, tol=1e-12,
                         strict=True)


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
    with pytest.raises(ValueError, match="tol"):
        ep_statespace_gp(Matern32(), t, labels, "probit", tol=0.0)
