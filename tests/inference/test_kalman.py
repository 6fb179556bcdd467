"""Kalman filter / RTS smoother / exact state-space GP against dense Gaussian computations.

float64; the associative-scan (``parallel=True``) path is checked alongside the sequential one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from probkit.inference.kalman import (
    gp_posterior,
    kalman_filter,
    log_marginal_likelihood,
    rts_smoother,
)
from probkit.kernels import Matern12, Matern32, Matern52
from probkit.statespace import LGSSM, matern_sde, to_lgssm


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, 6.0, n))  # irregular inputs
    y = np.sin(1.3 * t) + 0.3 * rng.normal(size=n)
    y[[2, n // 3, n // 3 + 1, n - 5]] = np.nan  # missing observations
    return t, y


def _dense_gp(kern, t, y, noise, t_test):
    obs = ~np.isnan(y)
    K = np.asarray(kern(t[:, None], t[:, None]))
    Ko = K[np.ix_(obs, obs)] + noise * np.eye(obs.sum())
    ll = multivariate_normal(np.zeros(obs.sum()), Ko).logpdf(y[obs])
    allt = np.concatenate([t, t_test])
    Ks = np.asarray(kern(allt[:, None], t[obs][:, None]))
    mean = Ks @ np.linalg.solve(Ko, y[obs])
    var = np.asarray(kern.diag(allt[:, None])) - np.sum(Ks * np.linalg.solve(Ko, Ks.T).T, 1)
    return ll, mean, var


@pytest.mark.parametrize("cls, parallel", [(Matern12, False), (Matern32, False),
                                           (Matern52, False), (Matern52, True)])
def test_statespace_gp_equals_dense_gp(x64, cls, parallel):
    t, y = _data(24 if parallel else 60)  # the associative scan compiles slowly on CPU
    t_test = np.array([-0.5, 0.77, 3.0, t[5], 7.5])  # outside, between, on a training time
    kern = cls(lengthscale=0.8, variance=1.4)
    post = gp_posterior(kern, t, y, 0.09, test_times=t_test, parallel=parallel)
    ll, mean, var = _dense_gp(kern, t, y, 0.09, t_test)
    np.testing.assert_allclose(float(post.log_likelihood), ll, rtol=1e-8)
    n = len(t)
    np.testing.assert_allclose(post.mean, mean[:n], atol=1e-8)
    np.testing.assert_allclose(post.var, var[:n], atol=1e-8)
    np.testing.assert_allclose(post.test_mean, mean[n:], atol=1e-8)
    np.testing.assert_allclose(post.test_var, var[n:], atol=1e-8)


def test_gradient_equals_dense_gradient(x64):
    t, y = _data(40)
    obs = ~np.isnan(y)

    def ss(ls):
        return log_marginal_likelihood(to_lgssm(matern_sde(2.5, ls, 1.2), t, 0.1), y)

    def dense(ls):
        K = Matern52(ls, 1.2)(t[obs][:, None], t[obs][:, None]) + 0.1 * jnp.eye(obs.sum())
        return jax.scipy.stats.multivariate_normal.logpdf(y[obs], jnp.zeros(obs.sum()), K)

    np.testing.assert_allclose(jax.jit(jax.grad(ss))(0.7), jax.grad(dense)(0.7), rtol=1e-8)


def _random_lgssm(T=7, D=3, P=2, seed=0):
    rng = np.random.default_rng(seed)

    def spd(n, s):
        a = rng.normal(size=(n, n))
        return s * (a @ a.T + n * np.eye(n))

    A = 0.5 * rng.normal(size=(T, D, D))
    Q = np.stack([spd(D, 0.1) for _ in range(T)])
    H = rng.normal(size=(T, P, D))
    R = np.stack([spd(P, 0.2) for _ in range(T)])
    m0, P0 = rng.normal(size=D), spd(D, 0.5)
    y = rng.normal(size=(T, P))
    y[2] = np.nan
    y[5, 1] = np.nan  # a row holding any NaN is skipped entirely
    return LGSSM(*map(jnp.asarray, (m0, P0, A, Q, H, R))), y


def _dense_joint(params, y):
    """Posterior of (z_0..z_{T-1}) and log p(y) from the joint Gaussian of states and data."""
    m0, P0, A, Q, H, R = map(np.asarray, params)
    T, P = y.shape
    D = m0.shape[0]
    # z_t = Phi_t z_{-1} + sum_{s<=t} Phi_{t,s} q_s as one linear map of (z_{-1}, q_0..q_{T-1}).
    M = np.zeros((T * D, (T + 1) * D))
    prev = np.hstack([np.eye(D), np.zeros((D, T * D))])
    for t in range(T):
        cur = A[t] @ prev
        cur[:, (t + 1) * D:(t + 2) * D] += np.eye(D)
        M[t * D:(t + 1) * D] = cur
        prev = cur
    S = np.zeros(((T + 1) * D,) * 2)
    S[:D, :D] = P0
    for t in range(T):
        S[(t + 1) * D:(t + 2) * D, (t + 1) * D:(t + 2) * D] = Q[t]
    mz = M[:, :D] @ m0
    Cz = M @ S @ M.T
    Hb = np.zeros((T * P, T * D))
    Rb = np.zeros((T * P, T * P))
    for t in range(T):
        Hb[t * P:(t + 1) * P, t * D:(t + 1) * D] = H[t]
        Rb[t * P:(t + 1) * P, t * P:(t + 1) * P] = R[t]
    obs = np.repeat(~np.isnan(y).any(1), P)
    Hb, Rb, yy = Hb[obs], Rb[np.ix_(obs, obs)], y.reshape(-1)[obs]
    Sy = Hb @ Cz @ Hb.T + Rb
    ll = multivariate_normal(Hb @ mz, Sy).logpdf(yy)
    K = Cz @ Hb.T @ np.linalg.inv(Sy)
    return ll, mz + K @ (yy - Hb @ mz), Cz - K @ Hb @ Cz


@pytest.mark.parametrize("parallel", [False, True])
def test_multivariate_time_varying_equals_dense_joint(x64, parallel):
    params, y = _random_lgssm()
    T, D = y.shape[0], params.initial_mean.shape[0]
    ll, mean, cov = _dense_joint(params, y)
    res = rts_smoother(params, y, parallel=parallel)
    np.testing.assert_allclose(float(res.log_likelihood), ll, rtol=1e-10)
    np.testing.assert_allclose(res.smoothed_mean.reshape(-1), mean, atol=1e-10)
    blocks = np.stack([cov[t * D:(t + 1) * D, t * D:(t + 1) * D] for t in range(T)])
    np.testing.assert_allclose(res.smoothed_cov, blocks, atol=1e-10)
    cross = np.stack([cov[t * D:(t + 1) * D, (t + 1) * D:(t + 2) * D] for t in range(T - 1)])
    np.testing.assert_allclose(res.smoothed_cross_cov, cross, atol=1e-10)
    assert float(res.log_likelihood_steps[2]) == 0.0
    if parallel:  # associative scan == sequential scan, every field
        seq = rts_smoother(params, y)
        for name, a, b in zip(seq._fields, seq, res, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-10, rtol=1e-10, err_msg=name)


def test_batched_series(x64):
    params, y = _random_lgssm(seed=1)
    yb = np.stack([y, 2.0 * y, -y])
    out = kalman_filter(params, yb)
    assert out.filtered_mean.shape == (3, 7, 3)
    for b in range(3):
        np.testing.assert_allclose(out.log_likelihood[b],
                                   kalman_filter(params, yb[b]).log_likelihood, rtol=1e-12)


def test_bad_inputs():
    params, y = _random_lgssm()
    with pytest.raises(ValueError, match="params.emission_matrix"):
        kalman_filter(params._replace(emission_matrix=jnp.ones((2, 2))), y)
    with pytest.raises(ValueError, match="params.transition_matrix"):
        kalman_filter(params._replace(transition_matrix=jnp.ones((5, 3, 3))), y)
    with pytest.raises(ValueError, match="params.initial_mean"):
        kalman_filter(params._replace(initial_mean=jnp.ones((3, 1))), y)
    with pytest.raises(ValueError, match="emissions"):
        kalman_filter(params, np.ones((1, 2, 7, 2)))
    t, yy = _data(20)
    for bad in (np.r_[t[:-1], np.nan], t[::-1], np.r_[t[:1], t[:-1]]):
        with pytest.raises(ValueError, match="times"):
            gp_posterior(Matern32(), bad, yy, 0.1)
    with pytest.raises(ValueError, match="y"):
        gp_posterior(Matern32(), t, yy[:-1], 0.1)
    with pytest.raises(ValueError, match="noise"):
        gp_posterior(Matern32(), t, yy, 0.0)
    with pytest.raises(ValueError, match="test_times"):
        gp_posterior(Matern32(), t, yy, 0.1, test_times=[np.nan])
