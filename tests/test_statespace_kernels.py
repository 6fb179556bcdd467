"""Oscillatory state-space kernels (issue 16): Cosine, Periodic (truncated series), SHO and
Celerite terms, quasi-periodic products and trend + season sums, against their dense kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm
from scipy.special import ive

from probkit.distributions import StateSpaceGP
from probkit.inference.ep import ep_statespace_gp
from probkit.inference.kalman import gp_posterior
from probkit.kernels import (
    RBF,
    SHO,
    Celerite,
    Cosine,
    Matern12,
    Matern32,
    Matern52,
    Periodic,
    Product,
    Sum,
)
from probkit.statespace import (
    SHOSDE,
    TRACED_PERIODIC_ORDER,
    CeleriteSDE,
    CosineSDE,
    PeriodicSDE,
    ProductSDE,
    SumSDE,
    as_sde,
    matern_sde,
    periodic_order,
)
from tests.inference.test_ep import _dense_ep, _grid_moments, _poisson_loglik
from tests.inference.test_kalman import _dense_gp

TWO_PI = 2.0 * np.pi

# (name, dense kernel factory): built inside the tests, under the x64 fixture.
KERNELS = {
    "cosine": lambda: Cosine(period=1.3, variance=2.0),
    "periodic": lambda: Periodic(lengthscale=1.0, variance=1.3, period=2.0),
    "sho-overdamped": lambda: SHO(omega0=2.0, quality=0.3, sigma=1.2),
    "sho-critical": lambda: SHO(omega0=2.0, quality=0.5, sigma=1.2),
    "sho-underdamped": lambda: SHO(omega0=TWO_PI, quality=20.0, sigma=0.7),
    "celerite": lambda: Celerite(a=1.0, b=0.2, c=0.5, d=2.0),
    "celerite-boundary": lambda: Celerite(a=1.0, b=0.25, c=0.5, d=2.0),  # a c = b d
    "celerite-d0": lambda: Celerite(a=0.8, b=-0.3, c=0.7, d=0.0),
    "quasi-periodic": lambda: Periodic(1.0, 1.0, period=1.0) * Matern32(3.0, 1.0),
    "trend+season": lambda: Matern52(5.0, 1.0) + Periodic(1.0, 0.5, period=1.0) * Matern32(3.0,
                                                                                          1.0),
    "cosine*matern12+sho": lambda: Cosine(0.8, 1.0) * Matern12(2.0, 0.5) + SHO(3.0, 2.0, 0.4),
}


def _uneven_times(n=40, seed=0, span=6.0):
    return np.sort(np.random.default_rng(seed).uniform(0.0, span, n))


def _variance(sde) -> float:
    return float(sde.kernel(0.0))


def _bound(sde) -> float:
    """Bound on max |k_sde - k_dense| from the truncated periodic parts (0 elsewhere)."""
    if isinstance(sde, PeriodicSDE):
        return float(sde.truncation_error())
    if isinstance(sde, SumSDE):
        return sum(_bound(p) for p in sde.parts)
    if isinstance(sde, ProductSDE):
        b1, b2 = _bound(sde.left), _bound(sde.right)
        return b1 * _variance(sde.right) + _variance(sde.left) * b2 + b1 * b2
    return 0.0


# ----------------------------------------------------------------------------- dense kernels


def test_dense_kernels_match_their_closed_forms(x64):
    tau = np.linspace(0.0, 4.0, 81)
    x0, x = jnp.zeros((1, 1)), jnp.asarray(tau)[:, None]

    def row(k):
        return np.asarray(k(x0, x))[0]

    np.testing.assert_allclose(row(Cosine(1.3, 2.0)), 2.0 * np.cos(TWO_PI * tau / 1.3),
                               rtol=1e-13, atol=1e-14)
    a, b, c, d = 1.0, 0.2, 0.5, 2.0
    np.testing.assert_allclose(row(Celerite(a, b, c, d)),
                               np.exp(-c * tau) * (a * np.cos(d * tau) + b * np.sin(d * tau)),
                               rtol=1e-13, atol=1e-15)
    # SHO, celerite's eq. 23 in its three regimes; Q = 1/2 is Matern-3/2 with lambda = omega0.
    w0, s = 2.0, 1.2
    for q in (0.3, 0.5, 0.7, 20.0):
        eta = np.sqrt(abs(1.0 - 1.0 / (4 * q * q)))
        e = np.exp(-w0 * tau / (2 * q))
        if q < 0.5:
            ref = e * (np.cosh(eta * w0 * tau) + np.sinh(eta * w0 * tau) / (2 * eta * q))
        elif q == 0.5:
            ref = e * (1 + w0 * tau)
        else:
            ref = e * (np.cos(eta * w0 * tau) + np.sin(eta * w0 * tau) / (2 * eta * q))
        np.testing.assert_allclose(row(SHO(w0, q, s)), s**2 * ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(row(SHO(w0, 0.5, s)), row(Matern32(np.sqrt(3.0) / w0, s**2)),
                               rtol=1e-13, atol=1e-15)
    # Continuous (value and gradient) through critical damping.
    for q in (0.5 - 1e-9, 0.5 + 1e-9):
        np.testing.assert_allclose(row(SHO(w0, q, s)), row(SHO(w0, 0.5, s)), atol=1e-8)

    def k1(q):
        return SHO(w0, q, s)(jnp.zeros(1), jnp.full(1, 0.7))[0, 0]

    g = [float(jax.grad(k1)(q)) for q in (0.5 - 1e-7, 0.5, 0.5 + 1e-7)]
    assert np.all(np.isfinite(g)) and np.ptp(g) < 1e-5


def test_sum_and_product_operators_and_positive_definiteness(x64):
    t = _uneven_times(30)
    x = jnp.asarray(t)[:, None]
    m, p = Matern52(2.0, 1.0), Periodic(1.0, 0.5, period=1.0)
    k = m + p * Matern32(3.0, 1.0)
    assert isinstance(k, Sum) and isinstance(k.kernel2, Product)
    np.testing.assert_allclose(k(x, x), m(x, x) + p(x, x) * Matern32(3.0, 1.0)(x, x),
                               rtol=1e-14)
    np.testing.assert_allclose(k.diag(x), np.full(30, 1.5), rtol=1e-14)
    with pytest.raises(TypeError):
        _ = m * 2.0
    for make in KERNELS.values():
        K = np.asarray(make()(x, x))
        assert np.linalg.eigvalsh(K).min() > -1e-10 * np.abs(K).max()


# ----------------------------------------------------------------------------- SDE vs dense


@pytest.mark.parametrize("name", list(KERNELS))
def test_sde_covariance_matches_dense_kernel(x64, name):
    kern = KERNELS[name]()
    sde = as_sde(kern)
    F, P = sde.F, sde.Pinf
    # Stationary covariance solves the Lyapunov equation; L Qc L' is a PSD diffusion.
    np.testing.assert_allclose(F @ P + P @ F.T + sde.L @ sde.Qc @ sde.L.T, 0.0, atol=1e-12)
    qc = np.asarray(sde.L @ sde.Qc @ sde.L.T)
    assert np.linalg.eigvalsh(qc).min() > -1e-12 * max(1.0, np.abs(qc).max())
    for dt in (0.0, 0.01, 0.37, 2.2):
        # scipy's expm (jax's loses ~1e-8 on undamped rotations of ~10 rad).
        np.testing.assert_allclose(sde.transition(dt), expm(np.asarray(F) * dt),
                                   rtol=1e-10, atol=1e-12)
    t = _uneven_times()
    K = np.asarray(kern(jnp.asarray(t)[:, None], jnp.asarray(t)[:, None]))
    # The SDE holds the dense kernel it was built from (one set of hyperparameters).
    np.testing.assert_array_equal(sde.dense(jnp.asarray(t), jnp.asarray(t)), K)
    err = np.max(np.abs(np.asarray(sde.gram(t, t)) - K)) / K[0, 0]
    bound = _bound(sde) / K[0, 0]
    assert bound < 1e-8  # the order chosen for the periodic part meets 1e-8 of the variance
    assert err <= bound + 1e-12, (err, bound)  # exact (to rounding) where nothing is truncated


# ----------------------------------------------------------------------------- periodic series


@pytest.mark.parametrize("ell", [0.5, 0.7, 1.0, 2.0])
def test_periodic_truncation_bound_holds_and_is_tight(x64, ell):
    z = ell**-2
    order = periodic_order(ell)
    sde = PeriodicSDE(ell, 1.7, period=3.0)
    assert sde.order == order and sde.state_dim == 2 * order + 1
    # The coefficients are 2 I_j(z) e^-z (j = 0 halved) up to aliases bounded in the notes.
    ref = 1.7 * ive(np.arange(order + 1), z) * np.where(np.arange(order + 1) == 0, 1.0, 2.0)
    np.testing.assert_allclose(sde.coefficients, ref, rtol=1e-12, atol=1e-15)
    tail = 1.7 * 2.0 * ive(np.arange(order + 1, order + 400), z).sum()
    bound = float(sde.truncation_error())
    assert tail <= bound <= 1.2 * tail + 1e-300  # an upper bound, and nearly the exact tail
    assert bound <= 1e-8 * 1.7
    if order > 1:  # the smallest such order
        assert float(PeriodicSDE(ell, 1.7, 3.0, order=order - 1).truncation_error()) > 1e-8 * 1.7
    # The bound holds at every lag (attained at multiples of the period).
    tau = np.linspace(0.0, 6.0, 601)
    dense = np.asarray(Periodic(ell, 1.7, 3.0)(jnp.zeros((1, 1)), jnp.asarray(tau)[:, None]))[0]
    err = np.abs(np.asarray(jax.vmap(sde.kernel)(jnp.asarray(tau))) - dense)
    assert err.max() <= bound * (1 + 1e-9) + 1e-15
    np.testing.assert_allclose(err.max(), tail, rtol=1e-3)


def test_periodic_order_table_and_bound_monotone(x64):
    assert [periodic_order(ell) for ell in (2.0, 1.0, 0.7, 0.5)] == [5, 8, 10, 14]
    b = [float(PeriodicSDE(0.6, 1.0, 1.0, order=j).truncation_error()) for j in range(1, 30)]
    assert np.all(np.diff(b) <= 0) and b[-1] < 1e-15
    assert TRACED_PERIODIC_ORDER == 12
    assert float(PeriodicSDE(0.56, 1.0, 1.0, order=12).truncation_error()) < 1e-8


# ----------------------------------------------------------------------------- process covariance


def _rate(sde):
    k = sde.dense
    if isinstance(sde, SHOSDE):
        return float(k.omega0 * (1 + 1 / k.quality))
    return float(k.c + k.d)


def _oscillators():
    return [SHOSDE(2.0, q, 1.3) for q in (0.05, 0.3, 0.5, 1 / np.sqrt(2), 5.0, 50.0)] + [
        CeleriteSDE(*p) for p in ((1.0, 0.2, 0.5, 2.0), (1.0, 0.25, 0.5, 2.0),
                                  (1.0, -0.2, 0.5, 0.0), (1.0, 0.0, 0.01, 3.0),
                                  (2.0, 1.0, 3.0, 0.1))]


# The SDE is a pytree argument: one compilation per class and dtype, not per parameter set.
_PROCESS_COV = jax.jit(lambda sde, dt: jax.vmap(sde.process_cov)(dt))
_TRANSITIONS = jax.jit(lambda sde, dt: jax.vmap(sde.transition)(dt))


@pytest.mark.parametrize("idx", range(11))
def test_oscillator_process_cov_is_accurate_in_both_dtypes_down_to_tiny_steps(idx):
    # As for the Matern SDEs: float64 agrees with Pinf - A Pinf A' to that formula's own
    # rounding; float32 is within 2e-6 of the entries' scale sqrt(Q_ii Q_jj) of float64 for
    # 1e-8 <= rho dt <= 300 (measured: below 5e-7).
    x = np.geomspace(1e-8, 300.0, 60)
    with jax.enable_x64(True):
        sde = _oscillators()[idx]
        dt = jnp.asarray(x / _rate(sde))
        q64 = np.asarray(_PROCESS_COV(sde, dt))
        a = jax.vmap(sde.transition)(dt)
        naive = np.asarray(sde.Pinf - a @ sde.Pinf @ jnp.swapaxes(a, 1, 2))
        pinf = float(np.max(np.abs(np.asarray(sde.Pinf))))
    scale = np.sqrt(np.einsum("tii,tjj->tij", np.abs(q64), np.abs(q64)))
    np.testing.assert_array_less(np.abs(q64 - naive), 1e-13 * pinf)
    sde32 = _oscillators()[idx]
    q32 = np.asarray(_PROCESS_COV(sde32, jnp.asarray(dt, jnp.float32)), np.float64)
    np.testing.assert_array_less(np.abs(q32 - q64), 2e-6 * scale + 1e-30)


@pytest.mark.parametrize("idx", [1, 2, 4, 6, 7])
def test_oscillator_process_cov_matches_quadrature_in_float64(x64, idx):
    # Relative accuracy where the difference formula cannot tell (tiny steps): against
    # composite Gauss-Legendre quadrature of int_0^dt A(s) L Qc L' A(s)' ds.
    sde = _oscillators()[idx]
    B = np.asarray(sde.L @ sde.Qc @ sde.L.T)
    u, w = np.polynomial.legendre.leggauss(16)
    for x in np.geomspace(1e-8, 10.0, 19):
        dt = x / _rate(sde)
        edges = np.linspace(0.0, dt, 21)  # 20 panels of rho h <= 1/2, 16 nodes each
        s = ((edges[:-1, None] + edges[1:, None]) / 2 + (np.diff(edges)[:, None] / 2) * u).ravel()
        ws = (np.diff(edges)[:, None] / 2 * w).ravel()
        A = np.asarray(_TRANSITIONS(sde, jnp.asarray(s)))
        ref = np.einsum("n,nij,jk,nlk->il", ws, A, B, A)
        q = np.asarray(_PROCESS_COV(sde, jnp.asarray([dt]))[0])
        scale = np.sqrt(np.outer(np.abs(np.diag(ref)), np.abs(np.diag(ref))))
        assert np.max(np.abs(q - ref) / scale) < 1e-12, x


def test_critical_sho_process_cov_equals_matern32(x64):
    w0 = 2.0
    sho, m = SHOSDE(w0, 0.5, 1.3), matern_sde(1.5, np.sqrt(3.0) / w0, 1.3**2)
    dt = jnp.asarray(np.geomspace(1e-8, 100.0, 40) / w0)
    qs, qm = (np.asarray(_PROCESS_COV(s, dt)) for s in (sho, m))
    scale = np.sqrt(np.einsum("tii,tjj->tij", np.abs(qm), np.abs(qm)))
    assert np.max(np.abs(qs - qm) / scale) < 1e-12
    np.testing.assert_allclose(jax.vmap(sho.transition)(dt), jax.vmap(m.transition)(dt),
                               rtol=1e-12, atol=1e-15)


def test_rotations_have_zero_process_noise(x64):
    for sde in (CosineSDE(1.3, 2.0), PeriodicSDE(1.0, 1.0, 2.0)):
        np.testing.assert_array_equal(sde.process_cov(0.37), 0.0)
        A = sde.transition(0.37)
        np.testing.assert_allclose(A @ sde.Pinf @ A.T, sde.Pinf, atol=1e-15)


# ----------------------------------------------------------------------------- GP users


GP_CASES = ["periodic", "quasi-periodic", "trend+season", "sho-underdamped", "sho-overdamped",
            "celerite", "cosine*matern12+sho"]


@pytest.mark.parametrize("name", GP_CASES)
def test_statespace_gp_and_gp_posterior_match_dense_gp(x64, name):
    kern = KERNELS[name]()
    rng = np.random.default_rng(1)
    t = _uneven_times(50, seed=2)
    y = np.sin(TWO_PI * t) + 0.2 * t + 0.3 * rng.normal(size=50)
    ts = np.array([0.37, 2.5, 6.3])
    noise = 0.05
    # An order that makes the periodic truncation negligible, for a 1e-8 comparison ...
    sde = as_sde(kern, periodic_order=14)
    ll, mean_all, var_all = _dense_gp(kern, t, y, noise, ts)
    mean, tmean, tvar = mean_all[:len(t)], mean_all[len(t):], var_all[len(t):]
    lp = float(StateSpaceGP(sde, t, noise).log_prob(y))
    np.testing.assert_allclose(lp, ll, rtol=1e-10)
    post = gp_posterior(sde, t, y, noise, test_times=ts)
    np.testing.assert_allclose(float(post.log_likelihood), ll, rtol=1e-10)
    np.testing.assert_allclose(post.mean, mean, rtol=0, atol=1e-8 * np.abs(mean).max())
    np.testing.assert_allclose(post.test_mean, tmean, rtol=0, atol=1e-8 * np.abs(mean).max())
    np.testing.assert_allclose(post.test_var, tvar, rtol=1e-8, atol=1e-12)
    if "periodic" in name or "season" in name:  # ... and the default order, within its bound
        lp_default = float(StateSpaceGP(kern, t, noise).log_prob(y))
        np.testing.assert_allclose(lp_default, ll, rtol=1e-6)


def test_traced_hyperparameters_value_and_gradient_match_dense(x64):
    t = _uneven_times(40, seed=3)
    y = np.cos(TWO_PI * t / 2.0) + 0.1 * np.random.default_rng(4).normal(size=40)

    def loglik(ls, period, q):
        k = Periodic(ls, 1.0, period) + SHO(3.0, q, 0.3)
        return StateSpaceGP(k, t, 0.02).log_prob(y)

    def dense(ls, period, q):
        k = Periodic(ls, 1.0, period) + SHO(3.0, q, 0.3)
        K = k(jnp.asarray(t)[:, None], jnp.asarray(t)[:, None]) + 0.02 * jnp.eye(40)
        cho = jnp.linalg.cholesky(K)
        a = jax.scipy.linalg.solve_triangular(cho, jnp.asarray(y), lower=True)
        return -0.5 * a @ a - jnp.sum(jnp.log(jnp.diag(cho))) - 20 * jnp.log(2 * jnp.pi)

    args = (0.8, 2.0, 3.0)
    # Traced lengthscale: order TRACED_PERIODIC_ORDER (bound 2e-11 of the variance at 0.8).
    val, grad = jax.jit(jax.value_and_grad(loglik, argnums=(0, 1, 2)))(*args)
    dval, dgrad = jax.value_and_grad(dense, argnums=(0, 1, 2))(*args)
    np.testing.assert_allclose(float(val), float(dval), rtol=1e-9)
    np.testing.assert_allclose(np.array(grad), np.array(dgrad), rtol=1e-6)


@pytest.mark.parametrize("name", ["periodic", "quasi-periodic"])
def test_ep_poisson_on_a_periodic_kernel_matches_dense_ep(x64, name):
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 6, 40))
    y = rng.poisson(3.0 * np.exp(np.sin(TWO_PI * t))).astype(float)
    kern = KERNELS[name]()
    res = ep_statespace_gp(kern, t, y, "poisson", tol=1e-10, max_iter=500)
    assert bool(res.converged)
    assert np.all(np.isfinite(res.mean)) and np.isfinite(float(res.log_marginal_likelihood))
    K = np.asarray(kern(jnp.asarray(t)[:, None], jnp.asarray(t)[:, None]))
    mu, var, _, _ = _dense_ep(K, y, _grid_moments(_poisson_loglik),
                              iters=int(res.num_iterations) + 40)
    np.testing.assert_allclose(res.mean, mu, atol=2e-5)
    np.testing.assert_allclose(res.var, var, rtol=2e-4, atol=1e-7)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, name", [
    (lambda: Cosine(period=0.0), "period"),
    (lambda: Cosine(1.0, variance=-1.0), "variance"),
    (lambda: SHO(omega0=-1.0, quality=1.0), "omega0"),
    (lambda: SHO(1.0, quality=float("nan")), "quality"),
    (lambda: SHO(1.0, 1.0, sigma=0.0), "sigma"),
    (lambda: SHO(jnp.ones(2), 1.0), "omega0"),
    (lambda: Celerite(a=-1.0), "a"),
    (lambda: Celerite(b=float("inf")), "b"),
    (lambda: Celerite(c=0.0), "c"),
    (lambda: Celerite(d=-1.0), "d"),
    (lambda: Celerite(a=1.0, b=0.6, c=0.5, d=1.0), "a, b, c, d"),
    (lambda: CosineSDE(period=-2.0), "period"),
    (lambda: PeriodicSDE(lengthscale=0.0), "lengthscale"),
    (lambda: PeriodicSDE(1.0, 1.0, period=float("inf")), "period"),
    (lambda: PeriodicSDE(1.0, 1.0, 1.0, order=0), "order"),
    (lambda: PeriodicSDE(1.0, 1.0, 1.0, order=2.5), "order"),
    (lambda: PeriodicSDE(0.05, 1.0, 1.0), "lengthscale"),  # needs > 64 harmonics
    (lambda: SHOSDE(1.0, -0.5), "quality"),
    (lambda: CeleriteSDE(1.0, 2.0, 1.0, 1.0), "a, b, c, d"),
    (lambda: as_sde(Periodic(jnp.ones(2), 1.0, 1.0)), "kernel"),
    (lambda: as_sde(Matern32() + RBF()), "kernel"),
    (lambda: as_sde(Cosine(jnp.ones(2))), "kernel"),
    (lambda: SHO(1.0, 1.0)(jnp.ones((3, 2)), jnp.ones((3, 2))), "x1"),
    (lambda: Celerite()(jnp.ones(3), jnp.ones((3, 2))), "x2"),
])
def test_bad_hyperparameters_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        make()


def test_traced_hyperparameters_are_not_checked():
    t = jnp.linspace(0.0, 1.0, 4)
    out = jax.jit(lambda a, b: Celerite(a, b, 1.0, 1.0)(t, t))(1.0, 0.5)
    assert out.shape == (4, 4)
    pinf = jax.jit(lambda ls: PeriodicSDE(ls, 1.0, 1.0).Pinf)(1.0)
    assert pinf.shape == (2 * TRACED_PERIODIC_ORDER + 1,) * 2
