"""probkit.models.fbnn.matching: exact 1-D distances, the critic, the GP target (through
probkit.priors.GPPrior) and the Wasserstein matching of a prior, checked independently."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from probkit.kernels import RBF
from probkit.models.fbnn import (
    GaussianPrior,
    GPTarget,
    critic_init,
    critic_wasserstein,
    marginal_wasserstein,
    match_prior,
    mlp_template,
    sample_functions,
    sliced_wasserstein,
)

KEY = jax.random.key(0)


def test_nan_inputs_rejected():
    x = np.zeros((5, 1))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="^x"):
        match_prior(GaussianPrior.init(2), mlp_template(1, (4,)), GPTarget(RBF()), x, key=KEY)


@pytest.mark.parametrize("field, value", [("lengthscale", -1.0), ("variance", 0.0),
                                          ("variance", np.nan)])
def test_nonpositive_target_kernel_rejected(field, value):
    # The kernel refuses it when built; one edited afterwards (tree_at skips __init__) is
    # refused by the target.
    with pytest.raises(ValueError, match=f"^{field}"):
        RBF(**{field: value})
    bad = eqx.tree_at(lambda k: getattr(k, field), RBF(), jnp.asarray(value))
    with pytest.raises(ValueError, match=f"^kernel: invalid hyperparameter.*{field}"):
        GPTarget(bad)


def test_target_takes_known_hyperparameters_only():
    import numpyro.distributions as dist

    with pytest.raises(ValueError, match="^hyperpriors"):
        GPTarget(RBF(1.0), hyperpriors={"period": dist.LogNormal(0.0, 1.0)})


def test_empty_measurement_set_rejected():
    net, x = mlp_template(1, (4,)), np.zeros((5, 1))
    with pytest.raises(ValueError, match="measurement_points"):
        match_prior(GaussianPrior.init(2), net, GPTarget(RBF()), x, key=KEY,
                    measurement_points=np.zeros((0, 1)))
    with pytest.raises(ValueError, match="num_points"):
        match_prior(GaussianPrior.init(2), net, GPTarget(RBF()), x, key=KEY, num_points=0)


def test_marginal_wasserstein_matches_scipy():
    a = jax.random.normal(KEY, (300, 3))
    b = 2.0 * jax.random.normal(jax.random.key(1), (300, 3)) + 0.5
    expect = np.mean([scipy.stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(3)])
    np.testing.assert_allclose(marginal_wasserstein(a, b), expect, rtol=1e-5)


def test_critic_is_an_equinox_mlp_with_the_official_initialisation():
    import equinox as eqx

    critic = critic_init(KEY, 6, width=9, depth=2)
    assert isinstance(critic, eqx.nn.MLP) and critic(jnp.zeros(6)).shape == (1,)
    w = np.concatenate([np.ravel(layer.weight) for layer in critic.layers[:1]])
    np.testing.assert_allclose(w.std(), np.sqrt(2 / (6 + 9)), rtol=0.3)   # Xavier normal


def test_critic_recovers_known_distance():
    # W1(N(0, I), N(mu, I)) = |mu| (a translation is optimal).
    mu = jnp.array([1.5, -1.0, 0.5, 0.0])
    a = jax.random.normal(KEY, (1024, 4))
    b = jax.random.normal(jax.random.key(1), (1024, 4)) + mu
    est = float(critic_wasserstein(jax.random.key(2), b, a, num_steps=400, learning_rate=0.05))
    assert abs(est - float(jnp.linalg.norm(mu))) < 0.2 * float(jnp.linalg.norm(mu))


def test_gp_target_covariance_and_hyperpriors():
    import numpyro.distributions as dist

    x = jnp.linspace(0, 2, 4)[:, None]
    k = RBF(0.7, 1.5)
    draws = GPTarget(k).sample(KEY, x, 20000)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), k(x, x), atol=0.08)
    ard = RBF(jnp.array([0.4, 2.0]), 1.2)           # one lengthscale per input (ARD)
    x2 = jnp.array([[0.0, 0.0], [0.5, 0.0], [0.0, 1.5], [0.3, 0.8]])
    draws2 = GPTarget(ard).sample(KEY, x2, 20000)
    np.testing.assert_allclose(np.cov(np.asarray(draws2).T), ard(x2, x2), atol=0.07)
    hier = GPTarget(k, hyperpriors={"variance": dist.LogNormal(0.0, 0.5)})
    v = jnp.var(hier.sample(KEY, x, 20000)[:, 0])
    np.testing.assert_allclose(v, np.exp(0.125), rtol=0.08)   # E[LogNormal(0, 0.5)]


def test_matching_reduces_wasserstein_distance_independent_check():
    net = mlp_template(1, (32,), "tanh")
    grid = jnp.linspace(-3, 3, 16)[:, None]
    target = GPTarget(RBF(1.0, 1.0))
    prior0 = GaussianPrior.init(2, 0.1)
    fit = match_prior(prior0, net, target, grid, key=KEY, num_steps=50, num_samples=128,
                      num_critic_steps=50, learning_rate=0.1, measurement_points=grid,
                      progress_bar=False)
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
