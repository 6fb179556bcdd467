"""Tests of probkit.models.mpnp: mixture predictive, reduction to the base, I/O, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.models import mpnp

SMALL = dict(dim_hid=16, dim_lat=8)


def _model(kind, seed=0, **kw):
    extra = {"dim_gen": 16, "num_pseudo": 12, "num_inducing": 4} if kind.startswith("mp") else {}
    extra.update(kw)
    return mpnp.make_model(kind, key=jax.random.key(seed), **SMALL, **extra)


def _ctx(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    return x, np.sin(2 * x) + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize("kind", ["mpnp", "np"])
def test_mixture_integrates_to_one_and_moments(kind):
    model = _model(kind)
    x, y = _ctx()
    pred = mpnp.predict(model, x, y, np.array([-1.5, 0.3, 1.9]), key=jax.random.key(1),
                        num_samples=5)
    assert pred.loc.shape == (5, 3)
    lo = float(jnp.min(pred.loc - 12 * pred.scale))
    hi = float(jnp.max(pred.loc + 12 * pred.scale))
    grid = np.linspace(lo, hi, 40001)
    dens = np.exp(np.asarray(pred.log_prob(grid[:, None] * np.ones(3))))  # (G, 3)
    mass = np.trapezoid(dens, grid, axis=0)
    np.testing.assert_allclose(mass, 1.0, atol=1e-5)
    mean = np.trapezoid(dens * grid[:, None], grid, axis=0)
    var = np.trapezoid(dens * (grid[:, None] - mean) ** 2, grid, axis=0)
    np.testing.assert_allclose(pred.mean, mean, atol=1e-4)
    np.testing.assert_allclose(pred.variance, var, rtol=1e-4)
    draws = pred.sample(jax.random.key(2), 20000)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05 * np.sqrt(var.max()))


def test_k1_empty_generator_reduces_to_base():
    model = _model("mpnp", num_pseudo=0)
    assert model.generator is None and model.num_pseudo == 0
    x, y = _ctx()
    xt = np.linspace(-2, 2, 9)
    pred = mpnp.predict(model, x, y, xt, key=jax.random.key(3), num_samples=1)
    base = mpnp.predict(model.base, x, y, xt, key=jax.random.key(4), num_samples=1)
    np.testing.assert_array_equal(pred.loc, base.loc)
    np.testing.assert_array_equal(pred.scale, base.scale)
    # ... and its loss is the base likelihood (marginal + amortised terms coincide)
    t = mpnp.sample_tasks(mpnp.bnp_prior("rbf"), jax.random.key(5), 4)
    np.testing.assert_allclose(mpnp.batch_loss(model, jax.random.key(6), t, 1),
                               2 * mpnp.batch_loss(model.base, jax.random.key(6), t, 1),
                               rtol=1e-6)
    # with a generator the pseudo context changes the prediction
    gen = _model("mpnp")
    p1 = mpnp.predict(gen, x, y, xt, key=jax.random.key(3), num_samples=2)
    assert not np.allclose(p1.loc[0], p1.loc[1])


def test_bad_input_names_argument():
    model = _model("mpnp")
    x, y = _ctx()
    xt = np.linspace(-2, 2, 4)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="x_ctx"):
        mpnp.predict(model, np.zeros((0, 1)), np.zeros(0), xt, key=key)
    with pytest.raises(ValueError, match="x_tar"):
        mpnp.predict(model, x, y, np.zeros((4, 2)), key=key)
    xn = x.copy()
    xn[2] = np.nan
    with pytest.raises(ValueError, match="x_ctx"):
        mpnp.predict(model, xn, y, xt, key=key)
    yn = y.copy()
    yn[0] = np.nan
    with pytest.raises(ValueError, match="y_ctx"):
        mpnp.predict(model, x, yn, xt, key=key)
    with pytest.raises(ValueError, match="num_samples"):
        mpnp.predict(model, x, y, xt, key=key, num_samples=0)
    with pytest.raises(ValueError, match="y_ctx"):
        mpnp.predict(model, x, y[:-1], xt, key=key)
    with pytest.raises(ValueError, match="kind"):
        mpnp.make_model("gp", key=key)
    with pytest.raises(ValueError, match="num_pseudo"):
        mpnp.make_model("mpnp", key=key, num_pseudo=-1)
    with pytest.raises(ValueError, match="num_samples"):
        mpnp.MPNPSurrogate(model, num_samples=0)


def test_sample_tasks_protocol():
    prior = mpnp.bnp_prior("student_t")
    ks = jax.random.split(jax.random.key(1), 300)
    t = jax.jit(jax.vmap(lambda k: mpnp.sample_tasks(prior, k, 2)))(ks)
    assert t.x.shape == (300, 2, 50, 1) and t.y.shape == (300, 2, 50)
    assert np.all(np.abs(t.x) <= 2) and np.all(np.isfinite(t.y))
    n_ctx = np.asarray(t.mask_ctx[:, 0].sum(-1))
    n_tar = np.asarray(t.mask_tar[:, 0].sum(-1))
    assert n_ctx.min() >= 3 and n_ctx.max() <= 46 and n_tar.min() >= 3
    assert (n_ctx + n_tar).max() <= 49
    assert not np.any(t.mask_ctx & t.mask_tar)
    # output scale s ~ U(0.1, 1): the kernel variance s^2 lies in [0.01, 1]
    v = np.asarray(mpnp.bnp_prior("rbf").variance.sample(jax.random.key(2), (2000,)))
    assert v.min() >= 0.01 and v.max() <= 1.0 and abs(np.sqrt(v).mean() - 0.55) < 0.02


def test_evaluate_matches_dense_computation():
    model = _model("cnp")
    t = mpnp.sample_tasks(mpnp.bnp_prior("rbf"), jax.random.key(0), 3)
    ctx, tar = mpnp.evaluate(model, t, jax.random.key(1), 1)
    i = 1
    mc = np.asarray(t.mask_ctx[i])
    mt = np.asarray(t.mask_tar[i])
    pred = mpnp.predict(model, np.asarray(t.x[i])[mc], np.asarray(t.y[i])[mc],
                        np.asarray(t.x[i]), key=jax.random.key(0), num_samples=1)
    ll = np.asarray(pred.log_prob(np.asarray(t.y[i])))
    np.testing.assert_allclose(ctx[i], ll[mc].mean(), rtol=1e-5)
    np.testing.assert_allclose(tar[i], ll[mt].mean(), rtol=1e-5)


def test_train_save_load_bit_for_bit(tmp_path):
    model = _model("mpnp")
    trained, hist = mpnp.train(model, mpnp.bnp_prior("rbf"), key=jax.random.key(0),
                               num_steps=3, batch_size=3, steps_per_call=2, num_samples=2,
                               max_points=12, progress_bar=False, checkpoint=tmp_path / "ck.eqx")
    assert hist["steps_done"] == 3 and np.all(np.isfinite(hist["loss"]))
    assert not eqx.tree_equal(trained, model)
    for m in (trained, _model("np", seed=3), _model("canp", seed=4)):
        loaded = mpnp.load(mpnp.save(tmp_path / f"{m.kind}.eqx", m))
        a = jax.tree.leaves(eqx.filter(m, eqx.is_array))
        b = jax.tree.leaves(eqx.filter(loaded, eqx.is_array))
        assert len(a) == len(b) and loaded.kind == m.kind
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)
        assert eqx.tree_equal(m, loaded)
    assert mpnp.load(tmp_path / "ck.eqx").kind == "mpnp"


def test_numpyro_model_and_arviz():
    from numpyro.infer import Predictive

    model = _model("mpnp")
    x, y = _ctx()
    pred = mpnp.predict(model, x, y, np.linspace(-2, 2, 5), key=jax.random.key(0),
                        num_samples=4)
    out = Predictive(mpnp.posterior_predictive_model, num_samples=7)(jax.random.key(1), pred)
    assert out["y"].shape == (7, 5) and out["component"].shape == (7,)
    idata = mpnp.to_inference_data(pred, key=jax.random.key(2), num_draws=30, y_obs=np.zeros(5))
    assert "posterior_predictive" in idata.groups()
    assert idata.posterior_predictive["y"].shape[:2] == (1, 30)


def test_surrogate_protocol():
    from probkit.bo.protocol import Surrogate

    sur = mpnp.MPNPSurrogate(_model("mpnp"), num_samples=8, capacity=10)
    assert isinstance(sur, Surrogate)
    rng = np.random.default_rng(0)
    fitted = sur.fit(rng.uniform(size=(5, 1)), rng.normal(size=5), key=jax.random.key(0))
    assert fitted.x.shape == (10, 1)
    post = eqx.filter_jit(lambda f, x: f.posterior(x))(fitted, jnp.linspace(0, 1, 6)[:, None])
    assert post.mean.shape == (6,) and post.sample(jax.random.key(1), 3).shape == (3, 6)
    assert np.all(np.asarray(post.variance) > 0)
    big = sur.fit(rng.uniform(size=(12, 1)), rng.normal(size=12), key=jax.random.key(0))
    assert big.x.shape == (20, 1)
    with pytest.raises(ValueError, match="x: input dimension"):
        sur.fit(rng.uniform(size=(5, 2)), rng.normal(size=5), key=jax.random.key(0))
    with pytest.raises(ValueError, match="y"):
        sur.fit(rng.uniform(size=(5, 1)), np.full(5, np.nan), key=jax.random.key(0))
    from probkit.bo.protocol import Posterior

    assert isinstance(post, Posterior)


def test_pretrained_weights_load_if_shipped():
    for kind in ("cnp", "np", "mpnp"):
        try:
            m = mpnp.load_pretrained(kind)
        except FileNotFoundError:
            pytest.skip(f"no shipped weights for {kind}")
        assert m.kind == kind
