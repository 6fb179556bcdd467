"""Tests of probkit.models.fbnn: priors, Wasserstein matching, SGHMC, NUTS, save/load, BO."""

from __future__ import annotations

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from numpyro.infer.util import log_density

from probkit.kernels import RBF
from probkit.models.fbnn import (
    FBNN,
    FBNNSurrogate,
    GaussianPrior,
    GPTarget,
    InvGammaPrior,
    LayerVariances,
    bnn_model,
    critic_wasserstein,
    gaussian_log_prior,
    load_prior,
    marginal_wasserstein,
    match_prior,
    mlp_template,
    sample_functions,
    save_prior,
    sliced_wasserstein,
)

KEY = jax.random.key(0)


# --- bad input -------------------------------------------------------------------------------


def test_widths_below_one_rejected():
    with pytest.raises(ValueError, match="widths"):
        mlp_template(1, (10, 0))
    with pytest.raises(ValueError, match="widths"):
        FBNN(widths=(0,))


def test_nan_data_rejected():
    x = np.zeros((5, 1))
    y = np.array([0.0, 1.0, np.nan, 0.0, 1.0])
    with pytest.raises(ValueError, match="^y"):
        FBNN(widths=(4,), prior="fixed").fit(x, y, key=KEY)
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="^x"):
        FBNN(widths=(4,), prior="fixed").fit(x, np.zeros(5), key=KEY)
    with pytest.raises(ValueError, match="^x"):
        match_prior(GaussianPrior.init(2), mlp_template(1, (4,)), GPTarget(RBF()), x, key=KEY)


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="x, y"):
        FBNN(widths=(4,), prior="fixed").fit(np.zeros((5, 1)), np.zeros(4), key=KEY)


@pytest.mark.parametrize("kernel", [RBF(-1.0, 1.0), RBF(1.0, 0.0), RBF(1.0, np.nan)])
def test_nonpositive_target_kernel_rejected(kernel):
    with pytest.raises(ValueError, match="kernel"):
        GPTarget(kernel)


def test_empty_measurement_set_rejected():
    net, x = mlp_template(1, (4,)), np.zeros((5, 1))
    with pytest.raises(ValueError, match="measurement_points"):
        match_prior(GaussianPrior.init(2), net, GPTarget(RBF()), x, key=KEY,
                    measurement_points=np.zeros((0, 1)))
    with pytest.raises(ValueError, match="num_points"):
        match_prior(GaussianPrior.init(2), net, GPTarget(RBF()), x, key=KEY, num_points=0)


# --- network, priors, NumPyro model ----------------------------------------------------------


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


# --- Wasserstein distances -------------------------------------------------------------------


def test_marginal_wasserstein_matches_scipy():
    a = jax.random.normal(KEY, (300, 3))
    b = 2.0 * jax.random.normal(jax.random.key(1), (300, 3)) + 0.5
    expect = np.mean([scipy.stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(3)])
    np.testing.assert_allclose(marginal_wasserstein(a, b), expect, rtol=1e-5)


def test_critic_recovers_known_distance():
    # W1(N(0, I), N(mu, I)) = |mu| (a translation is optimal).
    mu = jnp.array([1.5, -1.0, 0.5, 0.0])
    a = jax.random.normal(KEY, (1024, 4))
    b = jax.random.normal(jax.random.key(1), (1024, 4)) + mu
    est = float(critic_wasserstein(jax.random.key(2), b, a, num_steps=400, lr=0.05))
    assert abs(est - float(jnp.linalg.norm(mu))) < 0.2 * float(jnp.linalg.norm(mu))


def test_gp_target_covariance_and_hyperpriors():
    import numpyro.distributions as dist

    x = jnp.linspace(0, 2, 4)[:, None]
    k = RBF(0.7, 1.5)
    draws = GPTarget(k).sample(KEY, x, 20000)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), k(x, x), atol=0.08)
    hier = GPTarget(k, hyperpriors={"variance": dist.LogNormal(0.0, 0.5)})
    v = jnp.var(hier.sample(KEY, x, 20000)[:, 0])
    np.testing.assert_allclose(v, np.exp(0.125), rtol=0.08)   # E[LogNormal(0, 0.5)]


def test_matching_reduces_wasserstein_distance_independent_check():
    net = mlp_template(1, (32,), "tanh")
    grid = jnp.linspace(-3, 3, 16)[:, None]
    target = GPTarget(RBF(1.0, 1.0))
    prior0 = GaussianPrior.init(2, 0.1)
    fit = match_prior(prior0, net, target, grid, key=KEY, num_iters=50, num_samples=128,
                      num_critic_steps=50, lr=0.1, measurement_points=grid)
    assert fit.distances.shape == (50,)
    kf, kg, kp = jax.random.split(jax.random.key(7), 3)
    gp = target.sample(kg, grid, 2000)

    def dists(prior):
        f = sample_functions(kf, prior, net, grid, 2000)
        return float(marginal_wasserstein(f, gp)), float(sliced_wasserstein(kp, f, gp))

    # exact 1-D distances from samples, independent of the critic
    (m0, s0), (m1, s1) = dists(prior0), dists(fit.prior)
    assert m1 < m0 / 2.5 and s1 < s0 / 2.5, (m0, m1, s0, s1)
    assert np.mean(fit.distances[-10:]) < np.mean(fit.distances[:5]) / 1.5


# --- posterior: SGHMC, NUTS ------------------------------------------------------------------


def test_sghmc_matches_exact_linear_regression_posterior():
    rng = np.random.default_rng(0)
    n, d = 256, 3
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5, 0.2]) + 0.3 + 0.5 * rng.normal(size=n)
    prior = GaussianPrior.init(1, 1.0)
    post = FBNN(widths=(), prior=prior, noise_var=0.3, num_chains=8, num_burnin=1000,
                num_samples=200, thinning=10, batch_size=32).fit(x, y, key=KEY)
    # exact posterior on the standardised scale: features [x_s / sqrt(d), 1]
    xs = (x - np.asarray(post.x_mean)) / np.asarray(post.x_std)
    ys = (y - float(post.y_mean)) / float(post.y_std)
    phi = np.c_[xs / np.sqrt(d), np.ones(n)]
    prec = np.eye(d + 1) + phi.T @ phi / 0.3
    mean = np.linalg.solve(prec, phi.T @ ys / 0.3)
    draws = np.concatenate([np.asarray(post.nets.weights[0])[..., 0],
                            np.asarray(post.nets.biases[0])], axis=-1)     # (C, S, d + 1)
    mcse = np.array([az.mcse(draws[..., j]) for j in range(d + 1)])
    assert np.all(np.abs(draws.mean((0, 1)) - mean) < 4 * mcse), (draws.mean((0, 1)), mean, mcse)
    sd = np.sqrt(np.diag(np.linalg.inv(prec)))
    np.testing.assert_allclose(draws.std((0, 1)), sd, rtol=0.3)


def test_fbnn_fit_predict_arviz_and_hierarchical_gibbs():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (60, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=60)
    post = FBNN(widths=(20,), prior="fixed-invgamma", num_chains=2, num_burnin=1500,
                num_samples=20, thinning=20).fit(x, y, key=KEY)
    m, v = post.predict(x)
    assert m.shape == v.shape == (60,)
    assert post.rmse(x, y) < 0.35 and np.isfinite(post.nll(x, y))
    assert float(jnp.std(post.variances.w)) > 0                         # Gibbs moved them
    idata = post.to_arviz(x, y)
    assert idata.posterior["W0"].shape == (2, 20, 1, 20)
    assert idata.log_likelihood["y"].shape == (2, 20, 60)
    assert post.sample(KEY, x[:4], 7).shape == (7, 4)


def test_nuts_small_network():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (30, 1))
    y = x[:, 0] ** 2 + 0.1 * rng.normal(size=30)
    post = FBNN(widths=(4,), prior="fixed", sampler="nuts", num_chains=2, num_burnin=150,
                num_samples=50, thinning=1).fit(x, y, key=KEY)
    assert post.nets.weights[0].shape == (2, 50, 1, 4)
    assert post.rmse(x, y) < 0.6


# --- save / load, BO surrogate ---------------------------------------------------------------


def test_matched_prior_save_load_bit_for_bit(tmp_path):
    net = mlp_template(2, (6, 5), "relu")
    for prior in (GaussianPrior(jnp.array([0.1, 0.2, 0.3]), jnp.array([-1.0, 0.0, 1.23456789])),
                  InvGammaPrior.init(3, 2.5, 0.7)):
        path = save_prior(tmp_path / "p.eqx", prior, net, dataset="toy")
        loaded, template, head = load_prior(path)
        assert type(loaded) is type(prior) and head["dataset"] == "toy"
        assert head["widths"] == [6, 5] and template.activation == "relu"
        for a, b in zip(jax.tree.leaves(prior), jax.tree.leaves(loaded), strict=True):
            assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def test_surrogate_protocol_and_compile_once():
    from probkit.bo.protocol import Posterior

    rng = np.random.default_rng(3)
    s = FBNNSurrogate(widths=(16,), prior="fixed", num_chains=2, num_burnin=200,
                      num_samples=8, thinning=10)
    f1 = s.fit(rng.uniform(size=(6, 2)), rng.normal(size=6), key=KEY)
    f2 = s.fit(rng.uniform(size=(7, 2)), rng.normal(size=7), key=KEY)
    xq = jnp.asarray(rng.uniform(size=(5, 2)))
    post = f1.posterior(xq)
    assert isinstance(post, Posterior)
    assert post.mean.shape == post.variance.shape == (5,)
    assert post.sample(KEY, 3).shape == (3, 5)

    traces = []

    @eqx.filter_jit
    def acq(fitted, x):
        traces.append(1)
        return jnp.min(fitted.posterior(x).mean)

    acq(f1, xq)
    acq(f2, xq)
    assert len(traces) == 1
