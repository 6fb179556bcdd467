"""Tests of probkit.models.mpnp.training: the task protocol, evaluation, training and I/O."""

import equinox as eqx
import jax
import numpy as np

import probkit
from probkit.models import mpnp
from tests.models.mpnp.test_networks import _net, _predict


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
    net = _net("cnp")
    t = mpnp.sample_tasks(mpnp.bnp_prior("rbf"), jax.random.key(0), 3)
    ctx, tar = mpnp.evaluate(net, t, jax.random.key(1), 1)
    i = 1
    mc = np.asarray(t.mask_ctx[i])
    mt = np.asarray(t.mask_tar[i])
    pred = _predict(net, np.asarray(t.x[i])[mc], np.asarray(t.y[i])[mc], np.asarray(t.x[i]),
                    key=jax.random.key(0), num_samples=1)
    ll = np.asarray(pred.log_prob(np.asarray(t.y[i])))
    np.testing.assert_allclose(ctx[i], ll[mc].mean(), rtol=1e-5)
    np.testing.assert_allclose(tar[i], ll[mt].mean(), rtol=1e-5)


def test_train_save_load_bit_for_bit(tmp_path):
    net = _net("mpnp")
    res = mpnp.train(net, mpnp.bnp_prior("rbf"), key=jax.random.key(0), num_steps=3,
                     batch_size=3, steps_per_dispatch=2, num_samples=2, max_points=12,
                     progress_bar=False, checkpoint=tmp_path / "ck.pk")
    trained = res.params
    assert res.steps == 3 and np.all(np.isfinite(res.losses))
    assert not eqx.tree_equal(trained, net)
    for m in (trained, _net("np", seed=3), _net("canp", seed=4)):
        loaded = mpnp.load_network(mpnp.save_network(tmp_path / f"{m.kind}.pk", m))
        a = jax.tree.leaves(eqx.filter(m, eqx.is_array))
        b = jax.tree.leaves(eqx.filter(loaded, eqx.is_array))
        assert len(a) == len(b) and loaded.kind == m.kind
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)
        assert eqx.tree_equal(m, loaded)
    assert probkit.load(tmp_path / "ck.pk").params.kind == "mpnp"
    # resuming from the finished checkpoint runs no further step and gives the same network
    again = mpnp.train(net, mpnp.bnp_prior("rbf"), key=jax.random.key(0), num_steps=3,
                       batch_size=3, steps_per_dispatch=2, num_samples=2, max_points=12,
                       progress_bar=False, checkpoint=tmp_path / "ck.pk")
    assert again.steps == 3 and eqx.tree_equal(again.params, trained)
