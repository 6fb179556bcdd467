"""Tests of the DKF recursion (probkit.models.dkf.filter)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from probkit.inference.kalman import kalman_filter, rts_smoother
from probkit.models import dkf
from probkit.statespace import LGSSM
from tests.models.dkf._helpers import lgssm_data, linear_moments

pytestmark = pytest.mark.usefixtures("x64")


def test_dkf_equals_kalman_filter_for_linear_gaussian_observations():
    dyn, H, Lam, x, _ = lgssm_data()
    x[[7, 40, 41]] = np.nan                      # missing rows skip the update in both
    f, Q = linear_moments(dyn, H, Lam, np.nan_to_num(x))
    f[[7, 40, 41]] = np.nan
    params = LGSSM(jnp.zeros(3), jnp.asarray(dyn.S), jnp.asarray(dyn.A), jnp.asarray(dyn.G),
                   jnp.asarray(H), jnp.asarray(Lam))
    ref = kalman_filter(params, jnp.asarray(x))
    for pd_fix in dkf.PD_FIXES:       # Q^-1 - S^-1 = H'Lam^-1 H > 0: no fix is ever applied
        out = dkf.dkf_filter(dyn, f, Q, pd_fix=pd_fix)
        assert out.mean.dtype == jnp.float64
        np.testing.assert_allclose(out.mean, ref.filtered_mean, atol=1e-8, rtol=0)
        np.testing.assert_allclose(out.cov, ref.filtered_cov, atol=1e-8, rtol=0)
        assert not np.any(out.pd_fixed)
    # the exact mixture moments with one component are the same linear moments
    f2, Q2 = dkf.gaussian_mixture_moments(np.nan_to_num(x), H[None], Lam[None], np.ones(1), dyn.S)
    np.testing.assert_allclose(f2[~np.isnan(f[:, 0])], f[~np.isnan(f[:, 0])], atol=1e-10)
    np.testing.assert_allclose(Q2, Q, atol=1e-10)


def test_dkf_matches_direct_recursion_and_pd_fixes():
    """The paper's recursion written out densely, with each PD fix, robust variant and batching."""
    rng = np.random.default_rng(1)
    D, T = 2, 40
    dyn = dkf.make_dynamics(np.array([[0.9, 0.1], [-0.1, 0.8]]), 0.3 * np.eye(2))
    f = rng.normal(size=(T, D))
    W = rng.normal(size=(T, D, D))
    Q = 0.4 * W @ np.swapaxes(W, 1, 2) + 0.05 * np.eye(D)      # some exceed S: fixes needed
    Sinv = np.linalg.inv(dyn.S)

    def direct(robust, fix):
        mu, Sig = np.zeros(D), dyn.S
        means, fixed = [], []
        for t in range(T):
            M = dyn.A @ Sig @ dyn.A.T + dyn.G
            Qt, minus = Q[t], (0.0 if robust else Sinv)
            e = np.linalg.eigvals(np.linalg.solve(dyn.S, Qt)).real
            bad = (not robust) and e.max() >= 1 - 1e-6
            fixed.append(bad)
            info_f = np.linalg.solve(Qt, f[t])
            if bad and fix == "robust":
                minus = 0.0
            elif bad and fix == "inflate":
                Qt = np.linalg.inv(np.linalg.inv(Qt) + Sinv)
                info_f = np.linalg.solve(Qt, f[t])
            elif bad and fix == "clip":
                E, V = np.linalg.eig(np.linalg.solve(dyn.S, Qt))
                Qt = (dyn.S @ V @ np.diag(np.minimum(E.real, 1 - 1e-6)) @ np.linalg.inv(V)).real
                Qt = 0.5 * (Qt + Qt.T)
                info_f = np.linalg.solve(Qt, f[t])
            prec = np.linalg.inv(Qt) + np.linalg.inv(M) - minus
            Sig = np.linalg.inv(prec)
            mu = Sig @ (info_f + np.linalg.solve(M, dyn.A @ mu))
            means.append(mu)
        return np.array(means), np.array(fixed)

    for fix in dkf.PD_FIXES:
        ref, ref_fixed = direct(False, fix)
        out = dkf.dkf_filter(dyn, f, Q, pd_fix=fix)
        assert ref_fixed.any() and not ref_fixed.all()
        np.testing.assert_array_equal(out.pd_fixed, ref_fixed)
        np.testing.assert_allclose(out.mean, ref, rtol=1e-5, atol=1e-6)
    ref, _ = direct(True, "robust")
    batched = dkf.dkf_filter(dyn, np.stack([f, f[::-1]]), np.stack([Q, Q[::-1]]), robust=True)
    np.testing.assert_allclose(batched.mean[0], ref, atol=1e-8)
    single = dkf.dkf_filter(dyn, f[::-1], Q[::-1], robust=True)
    np.testing.assert_allclose(batched.mean[1], single.mean, atol=1e-12)


def test_dkf_smoother_equals_rts_smoother_for_linear_gaussian_observations():
    dyn, H, Lam, x, _ = lgssm_data(seed=3)
    x[[10, 11]] = np.nan
    f, Q = linear_moments(dyn, H, Lam, np.nan_to_num(x))
    f[[10, 11]] = np.nan
    params = LGSSM(jnp.zeros(3), jnp.asarray(dyn.S), jnp.asarray(dyn.A), jnp.asarray(dyn.G),
                   jnp.asarray(H), jnp.asarray(Lam))
    ref = rts_smoother(params, jnp.asarray(x))
    out = dkf.dkf_filter(dyn, f, Q, smooth=True)
    np.testing.assert_allclose(out.mean, ref.smoothed_mean, atol=1e-8, rtol=0)
    np.testing.assert_allclose(out.cov, ref.smoothed_cov, atol=1e-8, rtol=0)
    filt = dkf.dkf_filter(dyn, f, Q)
    np.testing.assert_allclose(out.mean[-1], filt.mean[-1], atol=1e-12)   # same at the end
    both = dkf.dkf_filter(dyn, np.stack([f, f[::-1]]), np.stack([Q, Q[::-1]]), smooth=True)
    np.testing.assert_allclose(both.mean[0], out.mean, atol=1e-12)


def test_filter_bad_inputs_raise_value_errors_naming_the_argument():
    dyn, H, Lam, x, z = lgssm_data(T=60, D=2, P=3, seed=10)
    f, Q = linear_moments(dyn, H, Lam, x)
    with pytest.raises(ValueError, match="^f: expected last dimension 3"):
        dkf.dkf_filter(dkf.DynamicsParams(np.eye(3) * 0.5, np.eye(3), np.eye(3) / 0.75), f, Q)
    bad = f.copy()
    bad[3, 0] = np.nan                                   # partly NaN row
    with pytest.raises(ValueError, match="^f: row"):
        dkf.dkf_filter(dyn, bad, Q)
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="^f: contains inf"):
        dkf.dkf_filter(dyn, bad, Q)
    badQ = Q.copy()
    badQ[4] = -np.eye(2)
    with pytest.raises(ValueError, match="^Q: every Q"):
        dkf.dkf_filter(dyn, f, badQ)
    badQ[4] = np.nan
    with pytest.raises(ValueError, match="^Q: contains NaN"):
        dkf.dkf_filter(dyn, f, badQ)
    with pytest.raises(ValueError, match="^pd_fix:"):
        dkf.dkf_filter(dyn, f, Q, pd_fix="nope")
