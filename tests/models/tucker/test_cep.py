"""FunBaT's CEP engine (probkit.models.tucker.cep, .factors, .data): one epoch against dense
brute-force Gaussian algebra, the two factor solvers, padding that keeps one compilation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit import kernels, statespace
from probkit.models import tucker
from probkit.models.tucker import cep

# ----------------------------------------------------------------------------- oracles


def matern32(x1, x2, ls, var):
    r = np.sqrt(3.0) * np.abs(x1[:, None] - x2[None, :]) / ls
    return var * (1.0 + r) * np.exp(-r)


def dense_posterior(grid, prec, shift, ls, var, gram=None):
    """Exact Gaussian q(u) ∝ prod_r GP(u_r) prod_i exp(-u_i'L_i u_i/2 + eta_i'u_i), dense, with
    Matern-3/2 factors or the prior covariance ``gram`` of the grid."""
    n, R = shift.shape
    gram = matern32(grid, grid, ls, var) if gram is None else gram
    prior = np.kron(gram, np.eye(R))
    P = np.linalg.inv(prior)
    for i in range(n):
        P[i * R:(i + 1) * R, i * R:(i + 1) * R] += prec[i]
    S = np.linalg.inv(P)
    mean = (S @ shift.reshape(-1)).reshape(n, R)
    cov = np.stack([S[i * R:(i + 1) * R, i * R:(i + 1) * R] for i in range(n)])
    return mean, cov


def core_pair_moments(core_mean, core_cov, R, K):
    """E[W[idx] W[idx']] as a dict over index tuples (row-major vec of W)."""
    flat = lambda idx: int(np.ravel_multi_index(idx, (R,) * K))  # noqa: E731
    s2 = core_cov + np.outer(core_mean, core_mean)
    return lambda a, b: s2[flat(a), flat(b)]


def brute_messages(k, pos, y, means, covs, ew, tau, R, K, G):
    """Per-coordinate sums of tau E[a a'] and tau y E[a] by explicit sums over index tuples."""
    lam = np.zeros((G, R, R))
    eta = np.zeros((G, R))
    tuples = list(itertools.product(range(R), repeat=K))
    for n in range(len(y)):
        Ea = np.zeros(R)
        Eaa = np.zeros((R, R))
        for a in tuples:
            w = np.prod([means[j][pos[n, j], a[j]] for j in range(K) if j != k])
            Ea[a[k]] += w * ew.mean[a]
            for b in tuples:
                m2 = np.prod([covs[j][pos[n, j], a[j], b[j]]
                              + means[j][pos[n, j], a[j]] * means[j][pos[n, j], b[j]]
                              for j in range(K) if j != k])
                Eaa[a[k], b[k]] += ew(a, b) * m2
        lam[pos[n, k]] += tau * Eaa
        eta[pos[n, k]] += tau * y[n] * Ea
    return lam, eta


def brute_full(pos, y, means, covs, ew, R, K):
    """sum_n E[z z'] entries weighted by E[W W'] -> sum E f^2, and sum y E f, by brute force."""
    tuples = list(itertools.product(range(R), repeat=K))
    sum_f2 = sum_yf = 0.0
    Ezz = np.zeros((R**K, R**K))
    Ez = np.zeros(R**K)
    for n in range(len(y)):
        for ia, a in enumerate(tuples):
            za = np.prod([means[j][pos[n, j], a[j]] for j in range(K)])
            Ez[ia] += y[n] * za
            sum_yf += y[n] * ew.mean[a] * za
            for ib, b in enumerate(tuples):
                m2 = np.prod([covs[j][pos[n, j], a[j], b[j]]
                              + means[j][pos[n, j], a[j]] * means[j][pos[n, j], b[j]]
                              for j in range(K)])
                Ezz[ia, ib] += m2
                sum_f2 += ew(a, b) * m2
    return sum_f2, sum_yf, Ezz, Ez


def _padded(a, size, fill):
    """``a`` with ``size - len(a)`` rows of ``fill`` appended (the grid padding's state)."""
    extra = np.broadcast_to(fill, (size - len(a),) + a.shape[1:])
    return np.concatenate([a, extra])


def random_problem(rng, K, R, sizes, n, cp):
    grids = [np.sort(rng.uniform(0, 1, s)) for s in sizes]
    pos = np.stack([np.concatenate([np.arange(s), rng.integers(0, s, n - s)]) for s in sizes], 1)
    pos = pos[rng.permutation(n)]
    x = np.stack([grids[k][pos[:, k]] for k in range(K)], 1)
    y = rng.normal(size=n)
    config = tucker.TuckerConfig(rank=R, num_modes=K, cp=cp, damping_factors=0.0,
                                 damping_noise=0.0, damping_core=0.0, a0=1.5, b0=0.7,
                                 core_prior_var=2.0, chunk=3)   # several chunks + padding
    data = tucker.prepare_data(x, y, config)
    means = [rng.normal(size=(s, R)) for s in sizes]
    covs = []
    for s in sizes:
        B = rng.normal(size=(s, R, R)) * 0.3
        covs.append(B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(R))
    P = R**K
    if cp:
        core_mean = np.zeros((R,) * K)
        core_mean[(np.arange(R),) * K] = 1.0
        core_mean, core_cov = core_mean.reshape(-1), np.zeros((P, P))
    else:
        core_mean = rng.normal(size=P)
        B = rng.normal(size=(P, P)) * 0.2
        core_cov = B @ B.T + 0.05 * np.eye(P)
    # The engine's grids are padded (unobserved points after the last coordinate): pad the state.
    size = [len(g) for g in data.grids]
    state = tucker.CEPState(
        tuple(_padded(m, g, 0.0) for m, g in zip(means, size, strict=True)),
        tuple(_padded(c, g, np.eye(R)) for c, g in zip(covs, size, strict=True)),
        tuple(np.zeros((g, R, R)) for g in size), tuple(np.zeros((g, R)) for g in size),
        core_mean, core_cov, np.zeros((P, P)), np.zeros(P), np.asarray(3.0), np.asarray(2.3))
    return config, data, state, pos, y, means, covs


@pytest.mark.parametrize("cp,K,R,sizes", [(False, 3, 2, (5, 4, 6)), (True, 2, 2, (7, 5))])
def test_one_epoch_equals_dense_brute_force(x64, cp, K, R, sizes):
    """Every update of one CEP epoch (damping 0) against dense Gaussian algebra: each mode's
    conditional posterior (Kalman smoother vs dense Matern Gram matrix), core and noise."""
    rng = np.random.default_rng(1)
    config, data, state0, pos, y, means, covs = random_problem(rng, K, R, sizes, 40, cp)
    ls, var = np.array([0.3, 0.5, 0.2])[:K], np.array([1.0, 0.7, 1.3])[:K]
    step = jax.jit(tucker.cep_step, static_argnames="config")
    out = step(jax.tree.map(jnp.asarray, state0), jax.tree.map(jnp.asarray, data),
               tuple(kernels.Matern32(jnp.asarray(a), jnp.asarray(b))
                     for a, b in zip(ls, var, strict=True)), config=config)
    ew = core_pair_moments(state0.core_mean, state0.core_cov, R, K)
    ew.mean = state0.core_mean.reshape((R,) * K)
    tau = float(state0.tau)
    for k in range(K):
        s = sizes[k]
        lam, eta = brute_messages(k, pos, y, means, covs, ew, tau, R, K, s)
        np.testing.assert_allclose(out.msg_prec[k][:s], lam, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(out.msg_shift[k][:s], eta, rtol=1e-9, atol=1e-10)
        m, c = dense_posterior(data.grids[k][:s], lam, eta, ls[k], var[k])
        np.testing.assert_allclose(out.mean[k][:s], m, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(out.cov[k][:s], c, rtol=1e-8, atol=1e-9)
        means[k], covs[k] = m, c                     # the next mode conditions on this one
    sum_f2, sum_yf, Ezz, Ez = brute_full(pos, y, means, covs, ew, R, K)
    if not cp:
        prec = tau * Ezz + np.eye(R**K) / config.core_prior_var
        core_cov = np.linalg.inv(prec)
        core_mean = core_cov @ (tau * Ez)
        np.testing.assert_allclose(out.core_cov, core_cov, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out.core_mean, core_mean, rtol=1e-8, atol=1e-10)
        ew = core_pair_moments(core_mean, core_cov, R, K)
        ew.mean = core_mean.reshape((R,) * K)
        sum_f2, sum_yf, _, _ = brute_full(pos, y, means, covs, ew, R, K)
    b = 0.5 * np.sum(y**2) - sum_yf + 0.5 * sum_f2
    np.testing.assert_allclose(out.tau, (config.a0 + len(y) / 2) / (config.b0 + b), rtol=1e-9)


def test_kalman_and_dense_mode_solvers_agree(x64):
    """The two factor solvers of the engine (smoother vs dense reference) on one mode, with
    Matern 1/2 and 5/2 and grid points without messages."""
    rng = np.random.default_rng(2)
    n, R = 9, 3
    grid = jnp.asarray(np.sort(rng.uniform(size=n)))
    observed = jnp.asarray(rng.uniform(size=n) < 0.7)
    B = rng.normal(size=(n, R, R))
    prec = jnp.asarray(B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(R))
    shift = jnp.asarray(rng.normal(size=(n, R)))
    solve = jax.jit(tucker.mode_posterior, static_argnames="config")
    for kernel in (kernels.Matern12, kernels.Matern52):
        out = []
        for solver in ("kalman", "dense"):
            cfg = tucker.TuckerConfig(rank=R, num_modes=1, mode_solver=solver)
            out.append(solve(grid, observed, prec, shift, kernel(jnp.asarray(0.4),
                                                                  jnp.asarray(1.3)), config=cfg))
        np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["quasi-periodic", "periodic+trend", "sho", "cosine+celerite"])
def test_seasonal_factor_kernels_match_the_dense_posterior(x64, name):
    """A mode's factor posterior under the seasonal kernels (state-space forms of issue 16)
    against the dense Gaussian with the exact kernel: equal up to the truncation of the
    periodic series (its bound is 1e-8 of the variance) amplified by the messages."""
    kern = {"quasi-periodic": kernels.Periodic(0.8, 1.2, period=0.3) * kernels.Matern32(0.9),
            "periodic+trend": kernels.Periodic(1.0, 0.7, period=0.25) + kernels.Matern52(2.0),
            "sho": kernels.SHO(omega0=12.0, quality=3.0, sigma=1.1),
            "cosine+celerite": kernels.Cosine(period=0.4, variance=0.5)
            + kernels.Celerite(a=1.0, b=0.3, c=2.0, d=5.0)}[name]
    rng = np.random.default_rng(5)
    n, R = 30, 2
    grid = np.sort(rng.uniform(size=n))
    observed = rng.uniform(size=n) < 0.8
    B = rng.normal(size=(n, R, R))
    prec = (B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(R)) * observed[:, None, None]
    shift = rng.normal(size=(n, R)) * observed[:, None]
    cfg = tucker.TuckerConfig(rank=R, num_modes=1)
    sde = statespace.as_sde(kern)
    m, c = jax.jit(tucker.mode_posterior, static_argnames="config")(
        jnp.asarray(grid), jnp.asarray(observed), jnp.asarray(prec), jnp.asarray(shift), sde,
        config=cfg)
    dm, dc = dense_posterior(grid, prec, shift, None, None, gram=np.asarray(kern(grid, grid)))
    tol = 1e-6 if "periodic" in name else 1e-8
    np.testing.assert_allclose(m, dm, rtol=tol, atol=tol)
    np.testing.assert_allclose(c, dc, rtol=tol, atol=tol)


def test_factor_marginals_at_grid_points_and_duplicates(x64):
    """Query coordinates equal to grid points (zero-length smoother steps) give the grid's own
    smoothed marginals; a query twice gives the same answer twice."""
    rng = np.random.default_rng(3)
    n, R = 8, 2
    grid = jnp.asarray(np.sort(rng.uniform(size=n)))
    B = rng.normal(size=(n, R, R))
    prec = jnp.asarray(B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(R))
    shift = jnp.asarray(rng.normal(size=(n, R)))
    cfg = tucker.TuckerConfig(rank=R, num_modes=1)
    obs = jnp.ones(n, bool)
    kern = kernels.Matern32(jnp.asarray(0.3), jnp.asarray(1.0))
    m, c = tucker.mode_posterior(grid, obs, prec, shift, kern, cfg)
    q = jnp.asarray([grid[2], grid[5], grid[2], grid[0]])
    qm, qc = tucker.factor_marginals(grid, obs, prec, shift, kern, q, cfg)
    np.testing.assert_allclose(qm, m[jnp.array([2, 5, 2, 0])], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(qc, c[jnp.array([2, 5, 2, 0])], rtol=1e-7, atol=1e-10)


def test_similar_data_sizes_share_one_compiled_epoch():
    """Grids, rows and prefix levels are padded to powers of two, so the refits of a BO loop
    (one more point each) reuse the compiled epoch."""
    rng = np.random.default_rng(4)
    fam = tucker.FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.3, num_steps=2)
    x = rng.uniform(size=(7, 2))
    fam.fit(x[:5], x[:5, 0], key=jax.random.key(0), progress_bar=False)
    size = cep._epoch._cache_size()
    for n in (6, 7):
        fam.fit(x[:n], x[:n, 0], key=jax.random.key(0), progress_bar=False)
    assert cep._epoch._cache_size() == size
