"""The family contract (as in tests/test_contract.py) for the DKF, whose data are sequences:
observations ``x`` ``(T, P)`` and latent states ``y`` ``(T, D)``, so ``predict(x)`` has batch shape
``(T,)`` and event shape ``(D,)``. fit -> predict (moments agree with samples, the density
integrates to one) -> posterior -> ArviZ -> save/load bit-for-bit -> every bad input a ValueError
naming the argument or the path."""

from __future__ import annotations

import json
import struct
import warnings

import jax
import numpy as np
import pytest

import probkit
from probkit import _io
from probkit.models import dkf
from probkit.models.base import Family, Fitted
from probkit.result import group_names
from tests.models.dkf._helpers import lgssm_data

FAMILY = dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.5))
_, _, _, _X, _Z = lgssm_data(T=160, D=2, P=3, seed=12)
_Z = _Z + np.array([1.0, -2.0])                  # states with a mean: centred inside fit
X, Y, X_NEW, Y_NEW = _X[:120], _Z[:120], _X[120:], _Z[120:]


@pytest.fixture(scope="module")
def model() -> Fitted:
    return FAMILY.fit(X, Y, key=jax.random.key(0), progress_bar=False)


def test_fit_returns_an_immutable_fitted_without_mutating_the_family(model):
    assert isinstance(FAMILY, Family) and FAMILY.name == "dkf"
    assert list(FAMILY.engines) == ["closed_form"]
    assert repr(FAMILY) == repr(dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.5)))
    assert isinstance(model, Fitted)
    with pytest.raises(AttributeError):
        model.some_field = 1


def test_predict_moments_agree_with_samples_and_the_density(model):
    T, D = Y_NEW.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no float64 truncation warnings
        pred = model.predict(X_NEW)
        assert pred.batch_shape == (T,) and pred.event_shape == (D,)
        mean, var = np.asarray(pred.mean), np.asarray(pred.variance)
        assert mean.shape == (T, D) and var.shape == (T, D) and np.all(var > 0)
        s = np.asarray(pred.sample(jax.random.key(1), (4000,)))
        assert s.shape == (4000, T, D) and np.all(np.isfinite(s))
        np.testing.assert_array_less(np.abs(s.mean(0) - mean), 5 * np.sqrt(var / 4000) + 1e-9)
        np.testing.assert_allclose(s.var(0), var, rtol=0.2)
        lp = np.asarray(pred.log_prob(Y_NEW))
        assert lp.shape == (T,) and np.all(np.isfinite(lp))
    # the density of the first step integrates to one (2-D trapezoid rule)
    sd = np.sqrt(var[0])
    g0, g1 = (mean[0, i] + sd[i] * np.linspace(-9, 9, 241) for i in range(2))
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    values = np.tile(Y_NEW[None], (len(grid), 1, 1))
    values[:, 0] = grid
    dens = np.exp(np.asarray(pred.log_prob(values))[:, 0]).reshape(241, 241)
    assert abs(np.trapezoid(np.trapezoid(dens, g1, axis=1), g0) - 1.0) < 2e-3


def test_posterior_is_no_wider_than_the_predictive(model):
    post, pred = model.posterior(X_NEW), model.predict(X_NEW)
    assert post.batch_shape == (len(X_NEW),) and post.event_shape == (Y_NEW.shape[1],)
    assert np.all(np.asarray(post.variance) <= np.asarray(pred.variance) * (1 + 1e-6))
    s = np.asarray(post.sample(jax.random.key(2), (16,)))
    assert s.shape == (16,) + Y_NEW.shape and np.all(np.isfinite(s))


def test_to_arviz_groups_and_summary(model):
    import arviz as az

    idata = model.to_arviz(X_NEW, Y_NEW, key=jax.random.key(3), num_samples=200)
    names = set(group_names(idata))
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data",
            "predictions", "predictions_constant_data"} <= names
    ll = np.asarray(idata.log_likelihood["y"])
    assert ll.shape[-1] == len(Y) and np.all(np.isfinite(ll))  # training data only
    np.testing.assert_allclose(ll[0, 0], model.predict(X).log_prob(Y), rtol=1e-12)
    assert np.asarray(idata.posterior["states"]).shape == (4, 50) + Y.shape
    assert len(az.summary(idata)) > 0


def test_save_load_is_bit_for_bit(model, tmp_path):
    path = model.save(tmp_path / "dkf.pk", note="contract test")
    back = probkit.load(path)
    assert type(back) is type(model) and type(back.learner) is type(model.learner)
    for method in ("predict", "posterior"):
        a, b = getattr(model, method)(X_NEW), getattr(back, method)(X_NEW)
        for name in ("mean", "variance"):
            np.testing.assert_array_equal(np.asarray(getattr(a, name)),
                                          np.asarray(getattr(b, name)))
        np.testing.assert_array_equal(np.asarray(a.log_prob(Y_NEW)), np.asarray(b.log_prob(Y_NEW)))
        k = jax.random.key(4)
        np.testing.assert_array_equal(np.asarray(a.sample(k, (3,))), np.asarray(b.sample(k, (3,))))


def _bad_fits():
    x, y = X.copy(), Y.copy()
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    inf_y = y.copy()
    inf_y[1, 0] = np.inf
    yield "x", dict(x=nan_x, y=y)
    yield "y", dict(x=x, y=inf_y)
    yield "x", dict(x=x[:, 0], y=y)
    yield "x", dict(x=x[None], y=y)
    yield "y", dict(x=x, y=y[None])
    yield "x|y", dict(x=x[:-1], y=y)
    yield "x|y", dict(x=x[:0], y=y[:0])
    yield "key", dict(x=x, y=y, key=0)


def test_bad_fit_inputs_raise_value_errors_naming_the_argument():
    for name, kwargs in _bad_fits():
        kwargs.setdefault("key", jax.random.key(0))
        with pytest.raises(ValueError, match=name):
            FAMILY.fit(progress_bar=False, **kwargs)


def test_bad_query_inputs_raise_value_errors(model):
    bad = X_NEW.copy()
    bad[0, 0] = np.nan                           # a partly missing row
    inf = X_NEW.copy()
    inf[1, 1] = np.inf
    for x in (bad, inf, bad[:0], bad[0], bad[None, None]):
        with pytest.raises(ValueError, match="x"):
            model.predict(x)
    missing = X_NEW.copy()
    missing[0] = np.nan                          # a whole row of NaN is a missing observation
    assert np.all(np.isfinite(np.asarray(model.predict(missing).mean)))
    with pytest.raises(ValueError, match="key"):
        model.to_arviz(key=1)
    with pytest.raises(ValueError, match="y"):
        model.to_arviz(X_NEW, Y_NEW[:, 0], key=jax.random.key(0), num_samples=8)


def test_damaged_and_newer_files_name_the_path(model, tmp_path):
    saved = model.save(tmp_path / "m.pk")
    raw, header = saved.read_bytes(), _io.read_header(saved)
    for n, cut in enumerate((20, len(raw) // 2, len(raw) - 7)):   # header, arrays, last bytes
        damaged = tmp_path / f"truncated{n}.pk"
        damaged.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=f"truncated{n}.pk"):
            probkit.load(damaged)
    text = json.dumps({**header, "format_version": _io.FORMAT_VERSION + 1}).encode()
    arrays = raw[len(raw) - header["data_bytes"]:]
    (tmp_path / "newer.pk").write_bytes(raw[:8] + struct.pack("<Q", len(text)) + text + arrays)
    with pytest.raises(ValueError, match="newer.pk.*newer"):
        probkit.load(tmp_path / "newer.pk")
    with pytest.raises(ValueError, match="m.pk.*holds a DKFFitted"):
        _io.load(saved, expected=dkf.NWFitted)
    (tmp_path / "other.pk").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="other.pk"):
        probkit.load(tmp_path / "other.pk")
