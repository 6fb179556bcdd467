"""Tests of the DKF learners (probkit.models.dkf.learners)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import probkit
from probkit import _io
from probkit.models import dkf
from tests.models.dkf._helpers import lgssm_data, nw_numpy

pytestmark = pytest.mark.usefixtures("x64")


def test_nadaraya_watson_learner_against_numpy():
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(240, 2))
    z = np.column_stack([np.sin(2 * x[:, 0]), x[:, 1] ** 2]) + 0.2 * rng.normal(size=(240, 2))
    # the learner: f on the training share, Q from the held-out residuals
    nw = dkf.NadarayaWatson(covariance="nw").fit(x, z, key=jax.random.key(0))
    xq = rng.uniform(-2, 2, size=(5, 2))
    f, Q = nw.moments(xq)
    np.testing.assert_allclose(f, nw_numpy(nw.x, nw.z, float(nw.bandwidth), xq), rtol=1e-10)
    tr_rows = {tuple(r) for r in nw.x}
    ho = np.array([i for i in range(len(x)) if tuple(x[i]) not in tr_rows])
    assert len(ho) == 72 and len(nw.x) == 168
    r = z[ho] - nw_numpy(nw.x, nw.z, float(nw.bandwidth), x[ho])
    rr = np.einsum("ni,nj->nij", r, r).reshape(len(ho), 4)
    Q_ref = nw_numpy(x[ho], rr, float(nw.cov.bandwidth), xq).reshape(5, 2, 2)
    Q_ref += float(nw.cov.jitter) * np.eye(2)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-9, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(np.asarray(Q)) > 0)
    const = dkf.NadarayaWatson(covariance="constant", bandwidth=0.5).fit(x, z,
                                                                        key=jax.random.key(0))
    r = z[ho] - nw_numpy(nw.x, nw.z, 0.5, x[ho])    # same split: same key
    np.testing.assert_allclose(const.moments(xq)[1][0], (r.T @ r / len(r)) + const.cov.jitter
                               * np.eye(2), rtol=1e-9)


def test_gaussian_process_against_numpy():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, size=(120, 2))
    z = np.column_stack([np.sin(x[:, 0]), np.cos(x[:, 1])]) + 0.1 * rng.normal(size=(120, 2))
    # fixed hyperparameters: noise variance noise_floor + noise = 0.05 + 1e-8
    gp = dkf.GaussianProcess(kernel="matern32", lengthscale=(0.8, 1.3), variance=1.5, noise=0.05,
                             noise_floor=1e-8, optimize=False).fit(x, z, key=jax.random.key(1))
    scaled = gp.scaler.x_mean + gp.scaler.x_scale * np.asarray(gp.gps[0].x)   # training share
    rows = [int(np.argmin(np.abs(x - row).sum(1))) for row in scaled]
    xt, zt = x[rows], z[rows]
    np.testing.assert_allclose(scaled, xt, atol=1e-12)
    xq = rng.uniform(-2, 2, size=(7, 2))

    def m32(a, b):
        r = np.sqrt(np.sum(((a[:, None] - b[None]) / np.array([0.8, 1.3])) ** 2, -1))
        return 1.5 * (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)

    K = m32(xt, xt) + (0.05 + 1e-8) * np.eye(len(xt))
    ref = m32(xq, xt) @ np.linalg.solve(K, zt - zt.mean(0)) + zt.mean(0)
    np.testing.assert_allclose(gp.moments(xq)[0], ref, rtol=1e-8, atol=1e-10)
    # hyperparameter fit by the exact GP of probkit.models.gp, one GP per output
    fitted = dkf.GaussianProcess(kernel="rbf", num_steps=20).fit(x, z, key=jax.random.key(1))
    assert np.stack([g.params.log_lengthscale for g in fitted.gps]).shape == (2, 2)
    assert np.all(fitted.noise_variance < 0.1)          # true noise variance 0.01


def test_mlp_learner_fits_heteroscedastic_data():
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, size=(600, 1))
    sd = 0.05 + 0.3 * (x[:, 0] > 0)
    z = np.sin(2 * x) + sd[:, None] * rng.normal(size=(600, 1))
    m = dkf.MLPLearner(width=16, num_steps=400, learning_rate=2e-2).fit(
        x, z, key=jax.random.key(0), progress_bar=False)
    f, Q = m.moments(np.array([[-1.0], [1.0]]))
    np.testing.assert_allclose(f[:, 0], np.sin([-2.0, 2.0]), atol=0.15)
    assert Q[1, 0, 0] > 4 * Q[0, 0, 0]                    # learned the larger noise for x > 0
    assert m.history.shape == (400,)


@pytest.mark.parametrize("make", [
    lambda: dkf.NadarayaWatson(),
    lambda: dkf.NadarayaWatson(covariance="constant"),
    lambda: dkf.MLPLearner(width=8, num_steps=30),
    lambda: dkf.GaussianProcess(kernel="matern32", num_steps=5),
])
def test_save_load_is_bit_for_bit(make, tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(80, 3))
    z = np.column_stack([x[:, 0] - x[:, 1], np.tanh(x[:, 2])]) + 0.1 * rng.normal(size=(80, 2))
    learner = make().fit(x, z, key=jax.random.key(3), progress_bar=False)
    path = _io.save(tmp_path / "learner.pk", learner)
    loaded = probkit.load(path)
    assert type(loaded) is type(learner)
    for a, b in zip(learner.moments(x), loaded.moments(x), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype == np.float64
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_learner_bad_inputs_raise_value_errors_naming_the_argument():
    _, _, _, x, z = lgssm_data(T=60, D=2, P=3, seed=10)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="^x, z: lengths differ"):
        dkf.NadarayaWatson().fit(x[:50], z, key=key)
    for learner in (dkf.NadarayaWatson(), dkf.MLPLearner(), dkf.GaussianProcess()):
        with pytest.raises(AttributeError):   # a configuration is not a fitted learner
            learner.moments(x)
    fitted = dkf.NadarayaWatson().fit(x, z, key=key)
    with pytest.raises(ValueError, match="^x: expected 3 columns"):
        fitted.moments(x[:, :2])
    with pytest.raises(ValueError, match="^key:"):
        dkf.NadarayaWatson().fit(x, z, key=0)
    with pytest.raises(ValueError, match="^kernel:"):
        dkf.GaussianProcess(kernel="nope")
    with pytest.raises(ValueError, match="^lengthscale: expected one value or one per input"):
        dkf.GaussianProcess(optimize=False, lengthscale=(1.0, 2.0)).fit(x, z, key=key)
    with pytest.raises(ValueError, match="^holdout:"):
        dkf.MLPLearner(holdout=1.0)
    with pytest.raises(ValueError, match="^covariance:"):
        dkf.NadarayaWatson(covariance="full")
