"""Matern state-space forms (probkit.statespace) against their closed-form kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.kernels import RBF, Matern12, Matern32, Matern52
from probkit.statespace import (
    MaternSDE,
    as_sde,
    discretise,
    matern_sde,
    to_lgssm,
)

KERNELS = [Matern12, Matern32, Matern52]


def _k(kernel, tau):
    return float(kernel(jnp.zeros((1, 1)), jnp.full((1, 1), tau))[0, 0])


@pytest.mark.parametrize("cls", KERNELS)
def test_sde_matches_kernel(x64, cls):
    kern = cls(lengthscale=0.7, variance=1.3)
    sde = as_sde(kern)
    F, L, Qc, P = sde.F, sde.L, sde.Qc, sde.Pinf
    # Stationary covariance solves the Lyapunov equation.
    np.testing.assert_allclose(F @ P + P @ F.T + L @ Qc @ L.T, 0.0, atol=1e-12)
    for tau in (0.0, 0.05, 0.3, 1.7):
        np.testing.assert_allclose(float(sde.kernel(tau)), _k(kern, tau), rtol=1e-12, atol=1e-14)
        # Closed-form expm equals the generic one.
        np.testing.assert_allclose(sde.transition(tau), jax.scipy.linalg.expm(F * tau),
                                   rtol=1e-12, atol=1e-14)


def test_sum_and_product(x64):
    a, b, c = Matern32(0.5, 1.0), Matern12(2.0, 0.7), Matern52(1.0, 0.5)
    sde = as_sde(a) * as_sde(b) + as_sde(c)
    assert sde.state_dim == 2 * 1 + 3
    P = sde.Pinf
    np.testing.assert_allclose(sde.F @ P + P @ sde.F.T + sde.L @ sde.Qc @ sde.L.T, 0.0,
                               atol=1e-12)
    for tau in (0.0, 0.3, 1.1):
        np.testing.assert_allclose(float(sde.kernel(tau)), _k(a, tau) * _k(b, tau) + _k(c, tau),
                                   rtol=1e-12)
        np.testing.assert_allclose(sde.transition(tau), jax.scipy.linalg.expm(sde.F * tau),
                                   rtol=1e-10, atol=1e-13)


def test_discretise_and_lgssm(x64):
    t = jnp.array([0.0, 0.1, 0.25, 1.0])
    A, Q = discretise(matern_sde(1.5, 0.5, 2.0), t)
    np.testing.assert_allclose(A[0], np.eye(2))
    np.testing.assert_allclose(Q[0], 0.0, atol=1e-15)
    p1 = to_lgssm(Matern32(0.5, 2.0), t, 0.1)
    p2 = to_lgssm(matern_sde(1.5, 0.5, 2.0), t, jnp.full(4, 0.1))
    for u, v in zip(p1, p2, strict=True):
        np.testing.assert_allclose(np.broadcast_to(u, np.shape(v)), v)


@pytest.mark.parametrize("times, match", [
    ([0.0, np.nan, 1.0], "times"),
    ([0.0, 2.0, 1.0], "times"),
    ([0.0, 1.0, 1.0], "times"),
    ([[0.0, 1.0]], "times"),
])
def test_bad_times(times, match):
    with pytest.raises(ValueError, match=match):
        to_lgssm(Matern32(), times, 0.1)


def test_bad_kernel_and_noise():
    with pytest.raises(ValueError, match="kernel"):
        to_lgssm(RBF(), [0.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="kernel"):
        as_sde(Matern32(lengthscale=jnp.ones(2)))
    with pytest.raises(ValueError, match="nu"):
        MaternSDE(2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="noise"):
        to_lgssm(Matern32(), [0.0, 1.0], -0.1)
    with pytest.raises(ValueError, match="noise"):
        to_lgssm(Matern32(), [0.0, 1.0], jnp.ones(3))


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_process_cov_is_accurate_in_both_dtypes_down_to_tiny_steps(nu):
    # The module notes' claims: float64 agrees with Pinf - A Pinf A' to that formula's own
    # rounding (eps * |Pinf|, absolute: it cancels for small steps), and float32 is within 2e-6
    # of the entries' scale sqrt(Q_ii Q_jj) of the float64 values for 1e-8 <= lam dt <= 300.
    from probkit.statespace import matern_sde

    x = np.geomspace(1e-8, 300.0, 60)
    with jax.enable_x64(True):
        sde = matern_sde(nu, 0.7, 1.3)
        dt = jnp.asarray(x) / sde.lam
        q64 = np.asarray(jax.vmap(sde.process_cov)(dt))
        a = jax.vmap(sde.transition)(dt)
        naive = np.asarray(sde.Pinf - a @ sde.Pinf @ jnp.swapaxes(a, 1, 2))
        pinf = float(np.max(np.abs(np.asarray(sde.Pinf))))
    scale = np.sqrt(np.einsum("tii,tjj->tij", np.abs(q64), np.abs(q64)))
    np.testing.assert_array_less(np.abs(q64 - naive), 1e-13 * pinf)
    sde32 = matern_sde(nu, 0.7, 1.3)
    q32 = np.asarray(jax.vmap(sde32.process_cov)(jnp.asarray(dt, jnp.float32)), np.float64)
    np.testing.assert_array_less(np.abs(q32 - q64), 2e-6 * scale + 1e-30)
