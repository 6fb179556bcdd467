"""No numerical routine returns NaN for valid input without a warning.

Adversarial but valid inputs for the Kalman filter / smoother (``gp_posterior`` and
``StateSpaceGP.log_prob`` in float32, the default: long smooth series, near-duplicate time
stamps, very small noise, lengthscales far longer than the spacing), EP on a state-space GP
(Poisson counts in the thousands, probit labels in long runs), the scale-mixture NNGP's
quadrature engine (near-duplicate inputs, very small noise) and the Tucker CEP engine (duplicate
coordinates, tiny and huge output scales). Each result must be finite and, where a dense float64
computation is cheap, agree with it to the stated tolerance.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from probkit.distributions import StateSpaceGP
from probkit.inference.ep import ep_statespace_gp
from probkit.inference.kalman import gp_posterior
from probkit.kernels import Matern32, Matern52
from probkit.models import nngp
from probkit.models.tucker import FunBaT
from tests.inference.test_ep import _dense_ep, _grid_moments, _poisson_loglik, _probit_moments

# ------------------------------------------------------------------ Kalman filter, float32


def _dense_loglik_and_mean(kern, t, y, noise):
    """log N(y; 0, K + noise I) and the posterior mean of f, by a float64 Cholesky (scipy's
    multivariate_normal refuses the near-singular covariances used here)."""
    with jax.enable_x64(True):
        tt = jnp.asarray(t, jnp.float64)[:, None]
        K = np.asarray(kern(tt, tt), np.float64)
    L = np.linalg.cholesky(K + noise * np.eye(len(t)))
    a = np.linalg.solve(L, y)
    alpha = np.linalg.solve(L.T, a)
    ll = -0.5 * a @ a - np.sum(np.log(np.diag(L))) - 0.5 * len(t) * np.log(2 * np.pi)
    return ll, K @ alpha


def _near_duplicates(n, seed=0):
    """``n`` sorted time stamps in pairs 1e-9 apart (equal once rounded to float32)."""
    u = np.sort(np.random.default_rng(seed).uniform(0.0, 10.0, n // 2))
    return np.sort(np.concatenate([u, u + 1e-9]))


_T = np.linspace(0.0, 10.0, 1000)
_T_DUP = _near_duplicates(1000)

# (id, kernel, times, y, noise, rtol of log p(y), atol of the posterior mean); the reference is
# the dense float64 Gaussian. One kernel class and one length: one compiled program.
KALMAN_CASES = [
    ("tiny-noise", Matern32(5.0, 1.0), _T, np.sin(_T / 2.0), 1e-8, 5e-5, 2e-5),
    ("lengthscale-1e4-spacing-1e-2", Matern32(1e4, 1.0), _T,
     np.sin(_T / 2.0) + 0.1 * np.cos(7.0 * _T), 1e-2, 2e-6, 1e-4),
    ("near-duplicate-times", Matern32(1.0, 1.0), _T_DUP,
     np.sin(_T_DUP) + 0.1 * np.random.default_rng(1).normal(size=_T_DUP.size), 1e-2, 2e-6,
     1e-5),
]


def _assert_finite(result):
    for name, value in result._asdict().items():
        assert np.all(np.isfinite(np.asarray(value))), f"{name} is not finite"


@pytest.mark.parametrize("kern, t, y, noise, rtol, atol",
                         [pytest.param(*c[1:], id=c[0]) for c in KALMAN_CASES])
def test_float32_state_space_gp_is_finite_and_matches_dense_float64(kern, t, y, noise, rtol,
                                                                    atol):
    ll_ref, mean_ref = _dense_loglik_and_mean(kern, t, y, noise)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent NaN would come with no warning either
        post = gp_posterior(kern, t, y, noise)
        lp = StateSpaceGP(kern, t, noise).log_prob(jnp.asarray(y, jnp.float32))
    assert post.mean.dtype == jnp.float32
    _assert_finite(post)
    assert float(np.min(post.var)) > -1e-6  # a variance, up to float32 rounding
    np.testing.assert_allclose(float(post.log_likelihood), ll_ref, rtol=rtol)
    np.testing.assert_allclose(float(lp), ll_ref, rtol=rtol)
    np.testing.assert_allclose(np.asarray(post.mean), mean_ref, atol=atol)


def test_float32_series_of_1e5_points_matches_float64_filter():
    # A long, smooth series: 10^5 steps of float32 rounding in the filter. Before the
    # cancellation-free process covariance Q = Pinf - A Pinf A' was indefinite for these small
    # steps and the float32 log-likelihood was NaN; the float64 run is the reference (the
    # filter equals the dense GP in float64: tests/inference/test_kalman.py).
    t = np.linspace(0.0, 100.0, 100_000)
    y = np.sin(t / 5.0)
    kern = Matern52(5.0, 1.0)
    post = gp_posterior(kern, t, y, 1e-6)
    _assert_finite(post)
    with jax.enable_x64(True):
        ref = gp_posterior(kern, jnp.asarray(t, jnp.float64), jnp.asarray(y, jnp.float64), 1e-6)
    np.testing.assert_allclose(float(post.log_likelihood), float(ref.log_likelihood), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(post.mean), np.asarray(ref.mean), atol=3e-5)


def test_float32_filter_with_near_duplicate_times_and_tiny_noise_is_finite():
    t = _T_DUP
    y = np.sin(t)
    ll_ref, _ = _dense_loglik_and_mean(Matern32(1.0, 1.0), t, y, 1e-8)
    lp = StateSpaceGP(Matern32(1.0, 1.0), t, 1e-8).log_prob(jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(float(lp), ll_ref, rtol=5e-4)


def test_float32_smoother_with_near_duplicate_times_and_tiny_noise_is_finite():
    # Two stamps that round to the same float32 time after a near-noise-free update leave a
    # singular predicted covariance; the RTS gain falls back to a jittered solve there (and only
    # there). Reference: the dense float64 posterior mean; the posterior variance of a point
    # observed with noise 1e-8 is at most that noise.
    t, y = _T_DUP, np.sin(_T_DUP)
    post = gp_posterior(Matern32(1.0, 1.0), t, y, 1e-8)
    _assert_finite(post)
    _, mean_ref = _dense_loglik_and_mean(Matern32(1.0, 1.0), t, y, 1e-8)
    np.testing.assert_allclose(np.asarray(post.mean), mean_ref, atol=1e-5)
    var = np.asarray(post.var)
    assert var.min() > -1e-6 and var.max() <= 1e-8 * (1 + 1e-3)


# ------------------------------------------------------------------ EP


def _dense_kernel(kern, t):
    with jax.enable_x64(True):
        tt = jnp.asarray(t, jnp.float64)[:, None]
        return np.asarray(kern(tt, tt))


def test_ep_poisson_counts_in_the_thousands_match_dense_ep():
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0.0, 5.0, 40))
    y = rng.poisson(5000.0 * np.exp(0.5 * np.sin(2.0 * t))).astype(float)
    assert y.min() > 1000
    kern = Matern52(0.8, 4.0)  # prior sd 2 around 0: log-counts of 8.5 lie 4 sd away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ep_statespace_gp(kern, t, y, "poisson", tol=1e-10, max_iter=500)
    assert bool(res.converged)
    _assert_finite(res)
    mu, var, _, _ = _dense_ep(_dense_kernel(kern, t), y, _grid_moments(_poisson_loglik),
                              iters=int(res.num_iterations) + 40)
    np.testing.assert_allclose(res.mean, mu, atol=1e-7)
    np.testing.assert_allclose(res.var, var, rtol=1e-6)


def test_ep_probit_with_a_long_run_of_one_label_matches_dense_ep():
    t = np.linspace(0.0, 12.0, 120)
    y = (np.arange(120) < 100).astype(float)  # 100 ones, then 20 zeros
    kern = Matern32(1.0, 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ep_statespace_gp(kern, t, y, "probit", tol=1e-9, max_iter=500)
    assert bool(res.converged)
    _assert_finite(res)
    mu, var, _, _ = _dense_ep(_dense_kernel(kern, t), 2.0 * y - 1.0, _probit_moments,
                              iters=int(res.num_iterations) + 100)
    np.testing.assert_allclose(res.mean, mu, atol=1e-6)
    np.testing.assert_allclose(res.var, var, atol=1e-6)
    assert np.all(res.mean[:95] > 0) and np.all(res.mean[-15:] < 0)


# ------------------------------------------------------------------ NNGP quadrature


def _near_duplicate_inputs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, (n, 1))
    x[1::2] = x[::2] + 1e-9
    return x, np.sin(2.0 * x[:, 0]) + 0.05 * rng.normal(size=n)


def _quadrature_fit(x, y, noise):
    family = nngp.Regressor(scale_prior=dist.Gamma(2.0, 2.0), engine="quadrature", noise=noise,
                            fit_hyperparameters=False, standardize=False)
    return family.fit(x, y, key=jax.random.key(0), progress_bar=False)


def _dense_scale_mixture_lml(K, y, noise, prior):
    """log of int N(y; 0, s2 (K + noise I)) prior(ds2) by a fine trapezoid rule on log s2,
    with a float64 Cholesky for the Gaussian part."""
    n = len(y)
    L = np.linalg.cholesky(K + noise * np.eye(n))
    q = np.sum(np.linalg.solve(L, y) ** 2)
    logdet = 2.0 * np.sum(np.log(np.diag(L)))
    grid = np.linspace(np.log(q / n) - 15.0, np.log(q / n) + 15.0, 200_001)
    with jax.enable_x64(True):
        log_prior = np.asarray(prior.log_prob(jnp.exp(jnp.asarray(grid))))
    lg = log_prior + grid - 0.5 * n * grid - 0.5 * q * np.exp(-grid)
    m = lg.max()
    return -0.5 * n * np.log(2 * np.pi) - 0.5 * logdet + m + np.log(np.trapezoid(np.exp(lg - m),
                                                                                  grid))


@pytest.mark.parametrize("noise", [1e-2, 1e-8])
def test_nngp_quadrature_with_near_duplicate_inputs_matches_dense_float64(noise):
    x, y = _near_duplicate_inputs()
    model = _quadrature_fit(x, y, noise)
    with jax.enable_x64(True):
        K = np.asarray(model.kernel(jnp.asarray(x), jnp.asarray(x)))
    ref = _dense_scale_mixture_lml(K, y, noise, dist.Gamma(2.0, 2.0))
    np.testing.assert_allclose(model.log_marginal_likelihood(), ref, rtol=1e-6)
    post = model.posterior(x[:6] + 1e-12)  # the latent f: variances down to ~noise
    assert np.all(np.asarray(post.variance) > 0)
    assert np.all(np.isfinite(np.asarray(post.log_prob(y[:6]))))


def test_nngp_posterior_log_prob_at_training_inputs_with_noise_1e_15_is_finite():
    x, y = _near_duplicate_inputs()
    post = _quadrature_fit(x, y, 1e-15).posterior(x[:6])
    assert np.all(np.isfinite(np.asarray(post.log_prob(y[:6]))))


# ------------------------------------------------------------------ Tucker CEP


def test_tucker_cep_with_duplicate_coordinates_is_finite_at_any_output_scale():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(100, 2))
    x = np.concatenate([x, x])  # every coordinate pair twice
    y = np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1]) + 0.05 * rng.normal(size=200)
    family = FunBaT(rank=2, nu=1.5, lengthscale=0.3, num_steps=20)
    out = {}
    for scale in (1.0, 1e-30, 1e30):
        pred = family.fit(x, scale * y, key=jax.random.key(0), progress_bar=False).predict(x[:20])
        mean, var = np.asarray(pred.mean), np.asarray(pred.variance)
        assert np.all(np.isfinite(mean)) and np.all(var > 0) and np.all(np.isfinite(var))
        assert np.all(np.isfinite(np.asarray(pred.log_prob(scale * y[:20]))))
        out[scale] = mean / scale, var / scale**2
    # Standardisation makes the engine scale-equivariant: same fit in units of the scale.
    for scale in (1e-30, 1e30):
        np.testing.assert_allclose(out[scale][0], out[1.0][0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(out[scale][1], out[1.0][1], rtol=1e-6)
