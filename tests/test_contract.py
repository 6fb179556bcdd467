"""The family contract (probkit.models.base), run over every family's cases in
tests/contract_cases: fit -> predict (moments agree with samples, the density integrates to one)
-> posterior -> ArviZ -> save/load bit-for-bit -> three BO steps; and every bad input raises a
ValueError naming the argument or the path."""

from __future__ import annotations

import importlib
import json
import pathlib
import pkgutil
import struct
import warnings

import jax
import numpy as np
import pytest

import probkit
from probkit import bo
from probkit.models.base import Family, Fitted
from probkit.result import group_names
from tests import contract_cases

CASES = []
for info in pkgutil.iter_modules(contract_cases.__path__):
    CASES.extend(importlib.import_module(f"tests.contract_cases.{info.name}").CASES)
_FITTED: dict[str, Fitted] = {}


def params(cases):
    """``cases`` as pytest parameters, each family in its own xdist group (so one worker fits it
    once and reuses the fit for every contract step)."""
    return [pytest.param(c, id=c.name, marks=pytest.mark.xdist_group(c.name)) for c in cases]


def fitted(case) -> Fitted:
    if case.name not in _FITTED:
        _FITTED[case.name] = case.family.fit(case.x, case.y, key=jax.random.key(0),
                                             progress_bar=False, **case.fit_kwargs)
    return _FITTED[case.name]


@pytest.mark.parametrize("case", params(CASES))
def test_fit_returns_an_immutable_fitted_without_mutating_the_family(case):
    assert isinstance(case.family, Family)
    before = repr(case.family)
    model = fitted(case)
    assert isinstance(model, Fitted) and repr(case.family) == before
    with pytest.raises(AttributeError):
        model.some_field = 1


@pytest.mark.parametrize("case", params(CASES))
def test_predict_moments_agree_with_samples_and_the_density(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no float64 truncation warnings
        pred = fitted(case).predict(case.x_new)
        n = len(case.x_new)
        assert pred.batch_shape == (n,)
        mean, var = np.asarray(pred.mean), np.asarray(pred.variance)
        assert mean.shape == (n,) and var.shape == (n,) and np.all(var > 0)
        s = np.asarray(pred.sample(jax.random.key(1), (4000,)))
        assert s.shape == (4000, n) and np.all(np.isfinite(s))
        # Monte Carlo error of the sample mean: 5 standard errors.
        np.testing.assert_array_less(np.abs(s.mean(0) - mean), 5 * np.sqrt(var / 4000) + 1e-9)
        np.testing.assert_allclose(s.var(0), var, rtol=0.2)
        lp = np.asarray(pred.log_prob(case.y_new))
        assert lp.shape == (n,) and np.all(np.isfinite(lp))
    if case.exact_log_prob:  # the density of the first point integrates to one
        sd = np.sqrt(var[0])
        grid = mean[0] + sd * np.linspace(-12, 12, 4001)
        ys = np.tile(case.y_new[None, :], (grid.size, 1))
        ys[:, 0] = grid
        dens = np.exp(np.asarray(pred.log_prob(ys))[:, 0])
        assert abs(np.trapezoid(dens, grid) - 1.0) < 2e-3


@pytest.mark.parametrize("case", params(CASES))
def test_posterior_over_f_is_no_wider_than_the_predictive(case):
    model = fitted(case)
    post, pred = model.posterior(case.x_new), model.predict(case.x_new)
    assert post.batch_shape == (len(case.x_new),)
    assert np.all(np.asarray(post.variance) <= np.asarray(pred.variance) * (1 + 1e-6))
    s = np.asarray(post.sample(jax.random.key(2), (16,)))
    assert s.shape == (16, len(case.x_new)) and np.all(np.isfinite(s))


@pytest.mark.parametrize("case", params(CASES))
def test_to_arviz_groups_and_summary(case):
    import arviz as az

    idata = fitted(case).to_arviz(case.x_new, case.y_new, key=jax.random.key(3), num_samples=200)
    names = set(group_names(idata))
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data",
            "predictions", "predictions_constant_data"} <= names
    ll = np.asarray(idata.log_likelihood["y"])
    assert ll.shape[-1] == len(case.y) and np.all(np.isfinite(ll))  # training data only
    assert len(az.summary(idata)) > 0


@pytest.mark.parametrize("case", params(CASES))
def test_save_load_is_bit_for_bit(case, tmp_path):
    model = fitted(case)
    path = model.save(tmp_path / f"{case.name}.pk", note="contract test")
    back = probkit.load(path)
    assert type(back) is type(model)
    a, b = model.predict(case.x_new), back.predict(case.x_new)
    for name in ("mean", "variance"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    np.testing.assert_array_equal(np.asarray(a.log_prob(case.y_new)),
                                  np.asarray(b.log_prob(case.y_new)))
    k = jax.random.key(4)
    np.testing.assert_array_equal(np.asarray(a.sample(k, (3,))), np.asarray(b.sample(k, (3,))))


@pytest.mark.parametrize("case", params(c for c in CASES if c.box))
def test_three_bo_steps_with_the_family_as_surrogate(case):
    if case.bo_skip:
        pytest.skip(case.bo_skip)
    problem = bo.branin()
    res = bo.minimize(problem, problem.bounds, budget=7, n_init=4, key=jax.random.key(5),
                      surrogate=case.bo_family or case.family, progress_bar=False)
    assert res.nfev == 7 and res.nfail == 0 and np.isfinite(res.fun)
    assert len(res.optimizer.timings) == 3  # three surrogate-driven proposals


def _bad_fits(case):
    x, y = np.array(case.x, dtype=float), np.array(case.y, dtype=float)
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    inf_y = y.copy()
    inf_y[1] = np.inf
    yield "x", dict(x=nan_x, y=y)
    yield "y", dict(x=x, y=inf_y)
    yield "x", dict(x=x[None], y=y)
    yield "y", dict(x=x, y=y[:, None, None] if y.ndim == 1 else y[None])
    yield "x|y", dict(x=x[:-1], y=y)
    yield "x|y", dict(x=x[:0], y=y[:0])
    yield "key", dict(x=x, y=y, key=0)


@pytest.mark.parametrize("case", params(CASES))
def test_bad_fit_inputs_raise_value_errors_naming_the_argument(case):
    for name, kwargs in _bad_fits(case):
        kwargs.setdefault("key", jax.random.key(0))
        with pytest.raises(ValueError, match=name):
            case.family.fit(progress_bar=False, **kwargs, **case.fit_kwargs)


@pytest.mark.parametrize("case", params(CASES))
def test_bad_query_inputs_raise_value_errors(case):
    model = fitted(case)
    bad = np.array(case.x_new, dtype=float)
    bad[0, 0] = np.nan
    for x in (bad, bad[:0], bad[None]):
        with pytest.raises(ValueError, match="x"):
            model.predict(x)
    with pytest.raises(ValueError, match="key"):
        model.to_arviz(key=1)


@pytest.mark.parametrize("case", params(CASES))
def test_damaged_and_newer_files_name_the_path(case, tmp_path):
    path = fitted(case).save(tmp_path / "m.pk")
    raw = path.read_bytes()
    cut = tmp_path / "truncated.pk"
    cut.write_bytes(raw[:-7])
    with pytest.raises(ValueError, match="truncated.pk"):
        probkit.load(cut)
    (size,) = struct.unpack("<Q", raw[8:16])
    header = json.loads(raw[16:16 + size])
    header["format_version"] += 1
    text = json.dumps(header).encode()
    newer = tmp_path / "newer.pk"
    newer.write_bytes(raw[:8] + struct.pack("<Q", len(text)) + text + raw[16 + size:])
    with pytest.raises(ValueError, match="newer.pk.*newer"):
        probkit.load(newer)
    other = pathlib.Path(tmp_path / "other.pk")
    other.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="other.pk"):
        probkit.load(other)
