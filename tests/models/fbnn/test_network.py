"""probkit.models.fbnn.network: the NTK MLP, its weight priors, the NumPyro model, prior files."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from numpyro.infer.util import log_density

from probkit.models.fbnn import (
    FBNN,
    GaussianPrior,
    InvGammaPrior,
    LayerVariances,
    bnn_model,
    gaussian_log_prior,
    load_prior,
    mlp_template,
    sample_functions,
    save_prior,
)

KEY = jax.random.key(0)


def test_widths_below_one_rejected():
    with pytest.raises(ValueError, match="widths"):
        mlp_template(1, (10, 0))
    with pytest.raises(ValueError, match="widths"):
        FBNN(widths=(0,))


def test_numpyro_model_log_density_matches_closed_form():
    x = jax.random.normal(KEY, (7, 2))
    y = jnp.linspace(-1, 1, 7)
    prior = GaussianPrior(jnp.array([0.3, -0.2]), jnp.array([0.1, 0.5]))
    net, var = prior.sample(jax.random.key(3), mlp_template(2, (5,)))
    params = {f"W{i}": w for i, w in enumerate(net.weights)}
    params |= {f"b{i}": b for i, b in enumerate(net.biases)}
    lp, _ = log_density(bnn_model, (x, y), dict(prior=prior, widths=(5,), noise_var=0.2), params)
    f = net.weights[1].T @ jnp.tanh(x @ net.weights[0] / np.sqrt(2) + net.biases[0]).T
    f = f[0] / np.sqrt(5) + net.biases[1][0]
    expect = gaussian_log_prior(net, var) + scipy.stats.norm.logpdf(y, f, np.sqrt(0.2)).sum()
    np.testing.assert_allclose(lp, expect, rtol=1e-5)


def test_invgamma_prior_draws_and_gibbs_conditional():
    prior = InvGammaPrior.init(1, 3.0, 2.0)
    v = jax.vmap(lambda k: prior.variances(k).w[0])(jax.random.split(KEY, 4000))
    assert scipy.stats.kstest(np.asarray(v), scipy.stats.invgamma(3.0, scale=2.0).cdf).pvalue > 1e-3
    net = mlp_template(3, ())
    net = eqx.tree_at(lambda n: n.weights, net, (jnp.ones((3, 1)),))
    var0 = LayerVariances(jnp.ones(1), jnp.ones(1))
    g = jax.vmap(lambda k: prior.gibbs(k, net, var0).w[0])(jax.random.split(KEY, 4000))
    # InvGamma(3 + 3/2, 2 + 3/2): mean 3.5 / 3.5 = 1.0
    assert abs(float(jnp.mean(g)) - 1.0) < 0.05


def test_reparameterised_draws_have_gradients():
    net, x = mlp_template(1, (8,)), jnp.linspace(-2, 2, 5)[:, None]
    for prior in (GaussianPrior.init(2), InvGammaPrior.init(2, 3.0, 3.0)):
        g = eqx.filter_grad(lambda p: jnp.mean(sample_functions(KEY, p, net, x, 16) ** 2))(prior)
        leaves = jax.tree.leaves(eqx.filter(g, eqx.is_array))
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
        assert any(float(jnp.max(jnp.abs(a))) > 0 for a in leaves)


def test_matched_prior_save_load_bit_for_bit(tmp_path):
    net = mlp_template(2, (6, 5), "relu")
    for prior in (GaussianPrior(jnp.array([0.1, 0.2, 0.3]), jnp.array([-1.0, 0.0, 1.23456789])),
                  InvGammaPrior.init(3, 2.5, 0.7)):
        path = save_prior(tmp_path / "p.pk", prior, net, dataset="toy")
        loaded, template, head = load_prior(path)
        assert type(loaded) is type(prior) and head["dataset"] == "toy"
        assert head["widths"] == [6, 5] and template.activation == "relu"
        for a, b in zip(jax.tree.leaves(prior), jax.tree.leaves(loaded), strict=True):
            assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def test_prior_files_of_another_kind_name_the_path(tmp_path):
    from probkit import _io

    other = _io.save(tmp_path / "other.pk", (jnp.ones(2), jnp.zeros(2)))
    with pytest.raises(ValueError, match="other.pk"):
        load_prior(other)
    with pytest.raises(ValueError, match="^prior"):
        save_prior(tmp_path / "x.pk", "fixed", mlp_template(1, (2,)))
