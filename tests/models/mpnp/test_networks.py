"""Tests of probkit.models.mpnp.networks: mixture predictive, reduction to the base, masked
attention and padding, shipped weights, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.models import mpnp
from probkit.models.mpnp.networks import attend

SMALL = dict(dim_hid=16, dim_lat=8)


def _net(kind, seed=0, **kw):
    extra = {"dim_gen": 16, "num_pseudo": 12, "num_inducing": 4} if kind.startswith("mp") else {}
    extra.update(kw)
    return mpnp.make_network(kind, key=jax.random.key(seed), **SMALL, **extra)


def _ctx(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    return x, np.sin(2 * x) + 0.1 * rng.normal(size=n)


def _predict(net, x, y, xt, *, key, num_samples):
    """The network conditioned on (x, y) on its own scale (no standardisation)."""
    family = mpnp.NeuralProcess(weights=net, num_samples=num_samples, standardise=False)
    return family.fit(x, y, key=key).predict(xt)


@pytest.mark.parametrize("kind", ["mpnp", "np"])
def test_mixture_integrates_to_one_and_moments(kind):
    net = _net(kind)
    x, y = _ctx()
    pred = _predict(net, x, y, np.array([-1.5, 0.3, 1.9]), key=jax.random.key(1), num_samples=5)
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
    net = _net("mpnp", num_pseudo=0)
    assert net.generator is None and net.num_pseudo == 0
    x, y = _ctx()
    xt = np.linspace(-2, 2, 9)
    pred = _predict(net, x, y, xt, key=jax.random.key(3), num_samples=1)
    base = _predict(net.base, x, y, xt, key=jax.random.key(4), num_samples=1)
    np.testing.assert_array_equal(pred.loc, base.loc)
    np.testing.assert_array_equal(pred.scale, base.scale)
    # ... and its loss is the base likelihood (marginal + amortised terms coincide)
    t = mpnp.sample_tasks(mpnp.bnp_prior("rbf"), jax.random.key(5), 4)
    np.testing.assert_allclose(mpnp.batch_loss(net, jax.random.key(6), t, 1),
                               2 * mpnp.batch_loss(net.base, jax.random.key(6), t, 1),
                               rtol=1e-6)
    # with a generator the pseudo context changes the prediction
    gen = _net("mpnp")
    p1 = _predict(gen, x, y, xt, key=jax.random.key(3), num_samples=2)
    assert not np.allclose(p1.loc[0], p1.loc[1])


@pytest.mark.parametrize("kind", mpnp.KINDS)
def test_padded_context_points_change_nothing(kind):
    """Masked rows get zero attention weight and no share of the mean: any values there."""
    net = _net(kind)
    x, y = _ctx(7)
    x, xt = jnp.asarray(x)[:, None], jnp.linspace(-2, 2, 5)[:, None]
    key = jax.random.key(8)
    loc, scale = net.components(key, x, jnp.asarray(y), jnp.ones(7, bool), xt, 4)
    rng = np.random.default_rng(1)
    xp = jnp.concatenate([x, jnp.asarray(rng.normal(0, 50, (9, 1)), jnp.float32)])
    yp = jnp.concatenate([jnp.asarray(y), jnp.asarray(rng.normal(0, 50, 9), jnp.float32)])
    mask = jnp.arange(16) < 7
    loc_p, scale_p = net.components(key, xp, yp, mask, xt, 4)
    np.testing.assert_allclose(loc_p, loc, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(scale_p, scale, atol=1e-5, rtol=1e-5)


def test_attention_gives_masked_keys_zero_weight():
    att = eqx.nn.MultiheadAttention(2, 8, key=jax.random.key(0))
    q, k = jax.random.normal(jax.random.key(1), (3, 8)), jax.random.normal(jax.random.key(2),
                                                                             (5, 8))
    mask = jnp.array([True, False, True, False, False])
    out = attend(att, q, k, k, mask)
    # changing the masked keys and values changes nothing
    k2 = k.at[~mask].set(1e3)
    np.testing.assert_allclose(attend(att, q, k2, k2, mask), out, atol=1e-6)
    np.testing.assert_allclose(attend(att, q, k[mask], k[mask], jnp.ones(2, bool)), out,
                               atol=1e-6)
    # no valid key: zero output (not an average of padding)
    np.testing.assert_array_equal(attend(att, q, k, k, jnp.zeros(5, bool)), 0.0)


def test_bad_input_names_argument():
    net = _net("mpnp")
    fam = mpnp.NeuralProcess(weights=net, standardise=False)
    x, y = _ctx()
    xt = np.linspace(-2, 2, 4)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="x"):
        fam.fit(np.zeros((0, 1)), np.zeros(0), key=key)
    with pytest.raises(ValueError, match="x"):
        fam.fit(x, y, key=key).predict(np.zeros((4, 2)))
    xn = x.copy()
    xn[2] = np.nan
    with pytest.raises(ValueError, match="x"):
        fam.fit(xn, y, key=key)
    yn = y.copy()
    yn[0] = np.nan
    with pytest.raises(ValueError, match="y"):
        fam.fit(x, yn, key=key)
    with pytest.raises(ValueError, match="num_samples"):
        mpnp.NeuralProcess(weights=net, num_samples=0)
    with pytest.raises(ValueError, match="y"):
        fam.fit(x, y[:-1], key=key)
    with pytest.raises(ValueError, match="x"):
        fam.fit(x, y, key=key).predict(xt[:, None, None])
    with pytest.raises(ValueError, match="kind"):
        mpnp.make_network("gp", key=key)
    with pytest.raises(ValueError, match="num_pseudo"):
        mpnp.make_network("mpnp", key=key, num_pseudo=-1)


def test_pretrained_weights_load_if_shipped():
    for kind in ("cnp", "np", "mpnp"):
        try:
            m = mpnp.load_pretrained(kind)
        except FileNotFoundError:
            pytest.skip(f"no shipped weights for {kind}")
        assert m.kind == kind
        assert isinstance(m, mpnp.NETWORKS) and m.dim_x == 1
