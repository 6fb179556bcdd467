"""Tests of probkit.models.mpnp.family: the NeuralProcess family, its units, padding, ArviZ
and the BO surrogate protocol."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.models import mpnp
from probkit.result import group_names
from tests.models.mpnp.test_networks import _ctx, _net


def test_raw_units_are_standardised_from_the_context():
    """Years and outputs near 1000 (far outside the training scale) give sensible predictions."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(1900, 2000, 30))
    y = 1000 + 40 * np.sin(x / 12) + rng.normal(0, 2, 30)
    fitted = mpnp.NeuralProcess(model="mpnp", num_samples=16).fit(x, y, key=jax.random.key(0))
    x_new = np.linspace(1905, 1995, 19)
    truth = 1000 + 40 * np.sin(x_new / 12)
    pred = fitted.predict(x_new)
    mean, sd = np.asarray(pred.mean), np.sqrt(np.asarray(pred.variance))
    err = np.abs(mean - truth) / np.std(y)  # near the data (unstandardised: ~1600)
    assert err.mean() < 0.35 and err.max() < 0.75  # measured: 0.24 and 0.59
    assert np.all(sd < np.std(y)) and np.all(sd > 0)
    lo, hi = pred.interval(0.95)
    assert np.mean((lo < truth) & (truth < hi)) > 0.8
    # without standardisation the network refuses inputs outside its training range
    x_unit = (x - 1950) / 25
    raw = mpnp.NeuralProcess(model="mpnp", num_samples=16, standardise=False)
    with pytest.raises(ValueError, match=r"x: inputs span \[19\d\d, 2000\].*range \[-2, 2\]"):
        raw.fit(x, y, key=jax.random.key(0))
    inside = raw.fit(x_unit[np.abs(x_unit) <= 2], y[np.abs(x_unit) <= 2], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"x: inputs span .*\[-2, 2\]"):
        inside.predict(np.array([2.5]))


def test_standardised_fit_is_affine_equivariant():
    """Shifting and scaling x and y moves the predictions with them."""
    net = _net("np")
    x, y = _ctx(8)
    xt = np.linspace(-1.5, 1.5, 5)
    fam = mpnp.NeuralProcess(weights=net, num_samples=6)
    a = fam.fit(x, y, key=jax.random.key(2)).predict(xt)
    b = fam.fit(100 + 7 * x, 500 + 3 * y, key=jax.random.key(2)).predict(100 + 7 * xt)
    np.testing.assert_allclose(b.loc, 500 + 3 * a.loc, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b.scale, 3 * a.scale, rtol=1e-4)


def test_padding_to_capacity_changes_no_prediction():
    net = _net("mpnp")
    x, y = _ctx(9)
    xt = np.linspace(-2, 2, 6)
    small = mpnp.NeuralProcess(weights=net, num_samples=4, capacity=9)
    big = mpnp.NeuralProcess(weights=net, num_samples=4, capacity=64)
    a = small.fit(x, y, key=jax.random.key(1))
    b = big.fit(x, y, key=jax.random.key(1))
    assert a.x.shape == (9, 1) and b.x.shape == (64, 1)
    np.testing.assert_allclose(b.predict(xt).loc, a.predict(xt).loc, atol=1e-5)
    np.testing.assert_allclose(b.predict(xt).scale, a.predict(xt).scale, atol=1e-5)


def test_family_configuration_errors():
    net = _net("np")
    with pytest.raises(ValueError, match="model"):
        mpnp.NeuralProcess(model="canp")  # no shipped CANP weights
    with pytest.raises(ValueError, match="model"):
        mpnp.NeuralProcess(model="cnp", weights=net)
    with pytest.raises(ValueError, match="weights"):
        mpnp.NeuralProcess(weights="random")
    with pytest.raises(ValueError, match="weights"):
        mpnp.NeuralProcess(weights=np.zeros(3))
    with pytest.raises(ValueError, match="capacity"):
        mpnp.NeuralProcess(weights=net, capacity=0)
    assert mpnp.NeuralProcess(weights=net).network is net
    assert mpnp.NeuralProcess.name == "mpnp" and "amortised" in mpnp.NeuralProcess.engines


def test_posterior_is_the_component_means_and_arviz():
    net = _net("mpnp")
    x, y = _ctx()
    fitted = mpnp.NeuralProcess(weights=net, num_samples=4).fit(x, y, key=jax.random.key(0))
    xt = np.linspace(-2, 2, 5)
    pred, post = fitted.predict(xt), fitted.posterior(xt)
    np.testing.assert_array_equal(post.draws, pred.loc)
    assert np.all(np.asarray(post.variance) <= np.asarray(pred.variance))
    idata = fitted.to_arviz(xt, np.zeros(5), key=jax.random.key(2), num_samples=30,
                            num_chains=1)
    assert {"posterior", "posterior_predictive", "log_likelihood"} <= set(group_names(idata))
    assert idata.posterior_predictive["y"].shape[:2] == (1, 30)
    # the log-likelihood of each draw is its Gaussian density at the context points
    res = fitted.to_result(key=jax.random.key(2), num_samples=30, num_chains=2)
    f, s = res.posterior["f"], res.posterior["scale"]
    ll = -0.5 * ((y - f) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(res.log_likelihood["y"], ll, rtol=1e-5)


def test_numpyro_model_of_the_predictive():
    from numpyro.infer import Predictive

    x, y = _ctx()
    fitted = mpnp.NeuralProcess(weights=_net("mpnp"), num_samples=4).fit(
        x, y, key=jax.random.key(0))
    pred = fitted.predict(np.linspace(-2, 2, 5))
    out = Predictive(mpnp.posterior_predictive_model, num_samples=7)(jax.random.key(1), pred)
    assert out["y"].shape == (7, 5) and out["component"].shape == (7,)


def test_surrogate_protocol():
    from probkit.bo.protocol import Posterior, Surrogate

    sur = mpnp.NeuralProcess(weights=_net("mpnp"), num_samples=8, capacity=10)
    assert isinstance(sur, Surrogate)
    rng = np.random.default_rng(0)
    fitted = sur.fit(rng.uniform(size=(5, 1)), rng.normal(size=5), key=jax.random.key(0))
    assert fitted.x.shape == (10, 1)
    post = eqx.filter_jit(lambda f, x: f.posterior(x))(fitted, jnp.linspace(0, 1, 6)[:, None])
    assert post.mean.shape == (6,) and post.sample(jax.random.key(1), 3).shape == (3, 6)
    assert np.all(np.asarray(post.variance) > 0)
    big = sur.fit(rng.uniform(size=(12, 1)), rng.normal(size=12), key=jax.random.key(0))
    assert big.x.shape == (20, 1)
    with pytest.raises(ValueError, match="x: 2 input columns"):
        sur.fit(rng.uniform(size=(5, 2)), rng.normal(size=5), key=jax.random.key(0))
    with pytest.raises(ValueError, match="y"):
        sur.fit(rng.uniform(size=(5, 1)), np.full(5, np.nan), key=jax.random.key(0))
    assert isinstance(post, Posterior)
