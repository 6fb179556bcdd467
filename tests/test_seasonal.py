"""The shipped Mauna Loa CO2 series and the seasonal state-space GP of ``probkit demo``.

The Kalman-filter likelihood and forecasts of the CO2 model are compared with a dense Cholesky
GP on the real series (float64): against the dense GP of the same truncated periodic kernel,
and, with enough harmonics that the truncation is negligible, against the exact kernel.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.datasets import load_co2
from probkit.demos import seasonal
from probkit.distributions import StateSpaceGP
from probkit.inference.kalman import gp_posterior

#: Near the MAP of the demo's model (rounded).
THETA = {"trend_lengthscale": 8.0, "trend_variance": 0.1, "season_lengthscale": 1.2,
         "season_decay": 300.0, "season_variance": 0.45, "short_lengthscale": 1.6,
         "short_variance": 0.055, "noise": 0.0065}


def test_load_co2_shape_order_and_source_values():
    d = load_co2()
    assert set(d) == {"time", "co2", "year", "month", "n_weeks"}
    assert all(v.shape == (521,) for v in d.values())
    assert np.all(np.diff(d["time"]) > 0)
    assert (d["year"][0], d["month"][0], d["year"][-1], d["month"][-1]) == (1958, 3, 2001, 12)
    # March 1958 has one weekly value (316.1 ppm); April 1958 four: 317.3, 317.6, 317.5, 316.4
    assert d["co2"][0] == pytest.approx(316.1, abs=0.005)
    assert d["co2"][1] == pytest.approx(np.mean([317.3, 317.6, 317.5, 316.4]), abs=0.005)
    assert d["n_weeks"].sum() == 2225          # every non-missing weekly value used once
    assert 310.0 < d["co2"].min() < d["co2"].max() < 375.0
    np.testing.assert_allclose(d["time"], d["year"] + (d["month"] - 0.5) / 12.0)
    window = load_co2(start=1990.0, stop=1991.0)
    assert list(window["month"]) == list(range(1, 13))


@pytest.mark.parametrize("bad", [{"start": "1990"}, {"stop": float("nan")}, {"start": 2100.0},
                                 {"start": True}])
def test_load_co2_bad_arguments(bad):
    with pytest.raises(ValueError, match="start|stop"):
        load_co2(**bad)


def _dense_posterior(gram, t, y, noise, ts):
    x, xs = t[:, None], ts[:, None]
    K = gram(x, x) + noise * jnp.eye(t.shape[0], dtype=t.dtype)
    c = jax.scipy.linalg.cho_factor(K, lower=True)
    Ks = gram(xs, x)
    mean = Ks @ jax.scipy.linalg.cho_solve(c, y)
    var = jnp.diagonal(gram(xs, xs)) - jnp.sum(Ks * jax.scipy.linalg.cho_solve(c, Ks.T).T, 1)
    return np.asarray(mean), np.asarray(var)


def test_state_space_log_likelihood_equals_dense_gp(x64):
    d = seasonal.co2_data()
    t, y = jnp.asarray(d["t"]), jnp.asarray(d["y"])
    noise = THETA["noise"]
    sde = seasonal.co2_sde(THETA)                        # the model's 4 harmonics
    ll_ss = float(StateSpaceGP(sde, t, noise).log_prob(y))
    ll_trunc = seasonal.dense_log_likelihood(sde.gram, t, y, noise)
    # absolute tolerance 1e-6 (log p(y) is about 290 here: 3e-9 relative)
    assert abs(ll_ss - ll_trunc) < 1e-6
    # 16 harmonics: truncation error bound below 1e-12 of the variance -> the exact kernel
    sde16 = seasonal.co2_sde(THETA, order=16)
    assert float(sde16.parts[1].left.truncation_error()) < 1e-12
    ll_ss16 = float(StateSpaceGP(sde16, t, noise).log_prob(y))
    ll_exact = seasonal.dense_log_likelihood(seasonal.co2_kernel(THETA), t, y, noise)
    assert abs(ll_ss16 - ll_exact) < 1e-6
    assert abs(ll_ss - ll_exact) > 1e-4              # 4 harmonics are a different kernel


def test_forecast_equals_dense_gp(x64):
    d = seasonal.co2_data()
    t, y = jnp.asarray(d["t"]), jnp.asarray(d["y"])
    noise = THETA["noise"]
    ts = jnp.asarray(t[-1] + np.array([0.5, 1.0 / 12.0, 2.25, 10.0]))   # unsorted on purpose
    for order, gram in ((seasonal.ORDER, seasonal.co2_sde(THETA).gram),
                        (16, seasonal.co2_kernel(THETA))):
        post = gp_posterior(seasonal.co2_sde(THETA, order), t, y, noise, test_times=ts)
        mean, var = _dense_posterior(gram, t, y, noise, ts)
        np.testing.assert_allclose(post.test_mean, mean, rtol=0, atol=1e-8)
        np.testing.assert_allclose(post.test_var, var, rtol=1e-6, atol=1e-10)
    # the mixture helper with one draw is the plug-in forecast plus observation noise
    m1, v1 = seasonal.forecast([THETA], t, y, ts, order=16)
    np.testing.assert_allclose(m1, mean, atol=1e-8)
    np.testing.assert_allclose(v1, var + noise, rtol=1e-6)


def test_demo_section_runs(tmp_path):
    text = seasonal.demo(tmp_path, key=jax.random.key(0), num_steps=25)
    assert (tmp_path / "seasonal_co2_map.png").stat().st_size > 10_000
    assert "dense Cholesky" in text and "forecast Dec 2011" in text
