"""Forward-mode gradients behind jax.grad (probkit.inference.forward_gradient) and the
state-space GP log-likelihood that uses them, against reverse mode and the dense GP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from probkit.distributions import StateSpaceGP
from probkit.inference.forward_gradient import MAX_TANGENTS, forward_gradient
from probkit.inference.kalman import gp_log_likelihood
from probkit.kernels import Matern32, Matern52


def _loss(params, data, scale):
    a, b = params["a"], params["b"]
    return jnp.sum(jnp.sin(a[0] * data + a[1]) * b**2) + jnp.sum(jnp.exp(-scale * data**2))


def test_forward_branch_equals_reverse_mode_for_every_argument_subset(x64):
    params = {"a": jnp.array([0.3, 1.2]), "b": jnp.asarray(0.7, jnp.float32)}
    data = jnp.linspace(-1.0, 2.0, 50)
    scale = jnp.asarray(0.4)
    fast = forward_gradient(_loss)
    for argnums in [(0,), (2,), (0, 2)]:
        g_fast = jax.jit(jax.grad(fast, argnums=argnums))(params, data, scale)
        g_ref = jax.grad(_loss, argnums=argnums)(params, data, scale)
        for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref),
                        strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6 if a.dtype == jnp.float32 else 1e-13)
    v1, _ = jax.value_and_grad(fast)(params, data, scale)
    np.testing.assert_allclose(v1, _loss(params, data, scale), rtol=1e-14)


def test_reverse_branch_for_large_inputs_and_vmap(x64):
    params = {"a": jnp.array([0.3, 1.2]), "b": jnp.asarray(0.7)}
    data = jnp.linspace(-1.0, 2.0, MAX_TANGENTS + 5)  # too many tangents: reverse mode
    fast = forward_gradient(_loss)
    np.testing.assert_allclose(jax.grad(fast, argnums=1)(params, data, 0.4),
                               jax.grad(_loss, argnums=1)(params, data, 0.4), rtol=1e-13)
    scales = jnp.array([0.1, 0.4, 2.0])
    g = jax.vmap(jax.grad(fast, argnums=2), in_axes=(None, None, 0))(params, data, scales)
    ref = jax.vmap(jax.grad(_loss, argnums=2), in_axes=(None, None, 0))(params, data, scales)
    np.testing.assert_allclose(g, ref, rtol=1e-13)


def _dense_loglik(kernel, t, y, noise):
    K = kernel(t[:, None], t[:, None]) + jnp.diag(jnp.broadcast_to(noise, t.shape))
    L = jnp.linalg.cholesky(K)
    a = jax.scipy.linalg.solve_triangular(L, y, lower=True)
    return -0.5 * a @ a - jnp.sum(jnp.log(jnp.diag(L))) - 0.5 * t.shape[0] * jnp.log(2 * jnp.pi)


def test_state_space_gp_gradients_match_the_dense_gp(x64):
    rng = np.random.default_rng(0)
    t = jnp.asarray(np.sort(rng.uniform(0.0, 10.0, 80)))
    y = jnp.asarray(np.sin(t) + 0.3 * rng.normal(size=80))

    def ss(theta, y, noise):
        return StateSpaceGP(Matern52(jnp.exp(theta[0]), jnp.exp(theta[1])), t,
                            noise).log_prob(y)

    def dense(theta, y, noise):
        return _dense_loglik(Matern52(jnp.exp(theta[0]), jnp.exp(theta[1])), t, y, noise)

    theta = jnp.array([0.2, -0.3])
    # hyperparameters and scalar noise: forward mode
    v, g = jax.jit(jax.value_and_grad(ss, argnums=(0, 2)))(theta, y, 0.09)
    vd, gd = jax.value_and_grad(dense, argnums=(0, 2))(theta, y, 0.09)
    np.testing.assert_allclose(v, vd, rtol=1e-11)
    np.testing.assert_allclose(v, multivariate_normal(np.zeros(80), np.asarray(
        Matern52(np.exp(0.2), np.exp(-0.3))(t[:, None], t[:, None])) + 0.09 * np.eye(80))
                               .logpdf(np.asarray(y)), rtol=1e-11)
    for a, b in zip(g, gd, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    # the data of a latent series and per-step noise: reverse mode
    noise = jnp.full(80, 0.09)
    gy, gn = jax.grad(ss, argnums=(1, 2))(theta, y, noise)
    gyd, gnd = jax.grad(dense, argnums=(1, 2))(theta, y, noise)
    np.testing.assert_allclose(gy, gyd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gn, gnd, rtol=1e-9, atol=1e-12)


def test_gp_log_likelihood_batches_and_checks_inputs(x64):
    t = jnp.linspace(0.0, 3.0, 30)
    ys = jnp.stack([jnp.sin(t), jnp.cos(t)])
    d = StateSpaceGP(Matern32(0.7, 1.0), t, 0.1)
    np.testing.assert_allclose(d.log_prob(ys), [gp_log_likelihood(Matern32(0.7, 1.0), t, y, 0.1)
                                                for y in ys], rtol=1e-13)
    with pytest.raises(ValueError, match="^y:"):
        gp_log_likelihood(Matern32(), t, jnp.ones(29), 0.1)
    with pytest.raises(ValueError, match="^times:"):
        gp_log_likelihood(Matern32(), t[::-1], jnp.ones(30), 0.1)
