"""Tests of the DKF family (probkit.models.dkf.family): fit, filter, centring, bad inputs."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from probkit.models import dkf
from tests.models.dkf._helpers import lgssm_data

pytestmark = pytest.mark.usefixtures("x64")


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - b) ** 2)))


def test_filter_handles_missing_rows_and_trials():
    dyn, H, Lam, x, z = lgssm_data(T=300, D=2, P=4, seed=8)
    family = dkf.DKF(learner=dkf.NadarayaWatson(), dynamics="lstsq")
    model = family.fit(x[:200], z[:200], key=jax.random.key(0))
    assert family == dkf.DKF(learner=dkf.NadarayaWatson(), dynamics="lstsq")   # not mutated
    xt = x[200:].copy()
    xt[5] = np.nan
    out = model.filter(xt)
    f, Q = model.moments(xt)
    assert np.isnan(f[5]).all() and not np.isnan(out.mean).any()
    m = model.y_mean                 # the filter runs on the centred states
    np.testing.assert_allclose(out.mean[5] - m, model.dynamics.A @ (out.mean[4] - m), atol=1e-12)
    err = np.sqrt(np.mean((out.mean - z[200:]) ** 2))
    raw = np.sqrt(np.mean((np.nan_to_num(f) - z[200:]) ** 2))
    assert err < raw < np.sqrt(np.mean(z[200:] ** 2))
    both = model.filter(np.stack([xt, x[200:]]))
    np.testing.assert_allclose(both.mean[0], out.mean, atol=1e-12)
    pred = model.predict(xt)
    np.testing.assert_array_equal(pred.mean, out.mean)
    np.testing.assert_array_equal(pred.covariance_matrix, out.cov)
    smooth = model.posterior(xt)
    assert np.all(smooth.variance <= pred.variance * (1 + 1e-9))
    assert _rmse(smooth.mean, z[200:]) < err
    # given dynamics are used as they are
    fixed = dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.5), dynamics=dyn).fit(
        np.stack([x[:100], x[100:200]]), np.stack([z[:100], z[100:200]]), key=jax.random.key(0))
    np.testing.assert_array_equal(fixed.dynamics.A, dyn.A)
    # the robust variant is a configuration of the same fitted model
    robust = dataclasses.replace(model, robust=True).filter(xt)
    assert not np.any(robust.pd_fixed) and not np.allclose(robust.mean, out.mean)


def test_states_are_centred_inside_fit():
    _, _, _, x, z = lgssm_data(T=300, D=2, P=4, seed=8)
    key = jax.random.key(0)
    xt = x[200:]
    family = dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.5))
    base = family.fit(x[:200], z[:200], key=key)
    shifted = family.fit(x[:200], z[:200] + 5.0, key=key)
    np.testing.assert_allclose(shifted.y_mean, z[:200].mean(0) + 5.0, rtol=1e-12)
    np.testing.assert_allclose(shifted.predict(xt).mean, base.predict(xt).mean + 5.0, atol=1e-9)
    np.testing.assert_allclose(shifted.posterior(xt).mean, base.posterior(xt).mean + 5.0,
                               atol=1e-9)
    np.testing.assert_allclose(shifted.moments(xt)[0], base.moments(xt)[0] + 5.0, atol=1e-9)
    # without centring the zero-mean dynamics pull every estimate towards 0: much worse, and said
    with pytest.warns(UserWarning, match="^y: the states have mean"):
        raw = dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.5), centre=False).fit(
            x[:200], z[:200] + 5.0, key=key)
    assert _rmse(raw.predict(xt).mean, z[200:] + 5.0) > 2 * _rmse(shifted.predict(xt).mean,
                                                                  z[200:] + 5.0)


@pytest.mark.parametrize("learner", ["mlp", "gp"])
def test_other_learners_by_name(learner):
    _, _, _, x, z = lgssm_data(T=300, D=2, P=4, seed=8)
    small = {"mlp": dkf.MLPLearner(width=8, num_steps=100), "gp": dkf.GaussianProcess(num_steps=10)}
    for spec in (learner, small[learner]):
        assert isinstance(dkf.DKF(learner=spec), dkf.DKF)
    model = dkf.DKF(learner=small[learner]).fit(x[:200], z[:200], key=jax.random.key(0),
                                                progress_bar=False)
    assert isinstance(model.learner, {"mlp": dkf.MLPFitted, "gp": dkf.GPLearnerFitted}[learner])
    assert _rmse(model.predict(x[200:]).mean, z[200:]) < np.sqrt(np.mean(z[200:] ** 2))


def test_family_bad_inputs_raise_value_errors_naming_the_argument():
    dyn, H, Lam, x, z = lgssm_data(T=60, D=2, P=3, seed=10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="^x, y: lengths differ"):
        dkf.DKF().fit(x[:50], z, key=key)
    zb = z.copy()
    zb[0, 0] = np.nan
    with pytest.raises(ValueError, match="^y: contains NaN"):
        dkf.DKF().fit(x, zb, key=key)
    model = dkf.DKF().fit(x, z, key=key)
    xb = x.copy()
    xb[2, 1] = np.nan
    with pytest.raises(ValueError, match="^x: row"):
        model.filter(xb)
    xb[2] = np.inf
    with pytest.raises(ValueError, match="^x: contains inf"):
        model.predict(xb)
    with pytest.raises(ValueError, match="^x: expected 3 columns"):
        model.learner.moments(x[:, :2])
    with pytest.raises(ValueError, match="^x: expected 3 columns"):
        model.posterior(x[:, :2])
    with pytest.raises(ValueError, match="^dynamics: A is"):
        dkf.DKF(dynamics=dkf.make_dynamics(0.5 * np.eye(3), np.eye(3))).fit(x, z, key=key)
    for bad in ({"learner": "svm"}, {"pd_fix": "nope"}, {"dynamics": "em"},
                {"stationary": "zero"}, {"engine": "hmc"}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}:"):
            dkf.DKF(**bad)
