"""FunBaT (probkit.models.tucker): CEP updates against dense brute-force Gaussian algebra,
the shipped synthetic set, prediction at unseen coordinates, the NumPyro model, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Predictive

from probkit.datasets import load_tensor
from probkit.models import tucker

# ----------------------------------------------------------------------------- oracles


def matern32(x1, x2, ls, var):
    r = np.sqrt(3.0) * np.abs(x1[:, None] - x2[None, :]) / ls
    return var * (1.0 + r) * np.exp(-r)


def dense_posterior(grid, prec, shift, ls, var):
    """Exact Gaussian q(u) ∝ prod_r GP(u_r) prod_i exp(-u_i'L_i u_i/2 + eta_i'u_i), dense."""
    n, R = shift.shape
    prior = np.kron(matern32(grid, grid, ls, var), np.eye(R))
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


def random_problem(rng, K, R, sizes, n, cp):
    grids = [np.sort(rng.uniform(0, 1, s)) for s in sizes]
    pos = np.stack([np.concatenate([np.arange(s), rng.integers(0, s, n - s)]) for s in sizes], 1)
    pos = pos[rng.permutation(n)]
    index = np.stack([grids[k][pos[:, k]] for k in range(K)], 1)
    y = rng.normal(size=n)
    config = tucker.TuckerConfig(rank=R, num_modes=K, cp=cp, nu=1.5, damping_factors=0.0,
                                 damping_noise=0.0, damping_core=0.0, a0=1.5, b0=0.7,
                                 core_prior_var=2.0, chunk=3)   # several chunks + padding
    data = tucker.prepare_data(index, y, config)
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
    state = tucker.CEPState(tuple(means), tuple(covs),
                            tuple(np.zeros((s, R, R)) for s in sizes),
                            tuple(np.zeros((s, R)) for s in sizes), core_mean, core_cov,
                            np.zeros((P, P)), np.zeros(P), np.asarray(3.0), np.asarray(2.3))
    return config, data, state, pos, y


@pytest.mark.parametrize("cp,K,R,sizes", [(False, 3, 2, (5, 4, 6)), (True, 2, 2, (7, 5))])
def test_one_epoch_equals_dense_brute_force(x64, cp, K, R, sizes):
    """Every update of one CEP epoch (damping 0) against dense Gaussian algebra: each mode's
    conditional posterior (Kalman smoother vs dense Matern Gram matrix), core and noise."""
    rng = np.random.default_rng(1)
    config, data, state0, pos, y = random_problem(rng, K, R, sizes, 40, cp)
    ls, var = np.array([0.3, 0.5, 0.2])[:K], np.array([1.0, 0.7, 1.3])[:K]
    step = jax.jit(tucker.cep_step, static_argnames="config")
    out = step(jax.tree.map(jnp.asarray, state0), jax.tree.map(jnp.asarray, data),
               jnp.asarray(ls), jnp.asarray(var), config=config)
    means, covs = [np.array(m) for m in state0.mean], [np.array(c) for c in state0.cov]
    ew = core_pair_moments(state0.core_mean, state0.core_cov, R, K)
    ew.mean = state0.core_mean.reshape((R,) * K)
    tau = float(state0.tau)
    for k in range(K):
        lam, eta = brute_messages(k, pos, y, means, covs, ew, tau, R, K, sizes[k])
        np.testing.assert_allclose(out.msg_prec[k], lam, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(out.msg_shift[k], eta, rtol=1e-9, atol=1e-10)
        m, c = dense_posterior(data.grids[k], lam, eta, ls[k], var[k])
        np.testing.assert_allclose(out.mean[k], m, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(out.cov[k], c, rtol=1e-8, atol=1e-9)
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


# ----------------------------------------------------------------------------- synthetic set


@pytest.fixture(scope="module")
def synthetic_fit():
    d = load_tensor("funbat_synthetic_r1")
    fitted = tucker.fit(d["tr_ind_CONTI"], d["tr_y"], rank=1, cp=True, nu=1.5, lengthscale=0.1,
                        variance=0.5, num_epochs=100, damping=(0.1, 0.2, 0.5),
                        standardize=False, key=jax.random.key(0))
    return d, fitted


def test_cp_rank1_synthetic_rmse(synthetic_fit):
    """Measured 0.0036 (authors: about 0.004); the issue's target is 0.006."""
    d, fitted = synthetic_fit
    pred = fitted.predict(d["te_ind_CONTI"])
    rmse = np.sqrt(np.mean((pred.mean - d["te_y"]) ** 2))
    assert rmse <= 0.006
    assert np.all(pred.variance > 0)
    # the noise-inclusive variance adds E[1/tau]
    a, b = fitted.noise_shape_rate
    noisy = fitted.predict(d["te_ind_CONTI"][:5], include_noise=True)
    np.testing.assert_allclose(noisy.variance - pred.variance[:5], b / (a - 1), rtol=1e-10)


def test_prediction_at_unseen_coordinates_equals_dense_gp(synthetic_fit, x64):
    """Inserting new coordinates as observation-free smoother steps is exact GP conditioning:
    compare with the dense posterior over train grid + new points (interpolation and both
    extrapolation sides)."""
    _, fitted = synthetic_fit
    new = np.array([-0.3, 0.01234, 0.5001, 0.77777, 1.4])
    for k in range(2):
        grid = fitted.grids[k]
        merged = np.concatenate([grid, new])
        prec = np.concatenate([fitted.state.msg_prec[k], np.zeros((len(new), 1, 1))])
        shift = np.concatenate([fitted.state.msg_shift[k], np.zeros((len(new), 1))])
        m, c = dense_posterior(merged, prec, shift, 0.1, 0.5)
        fm, fc = fitted.factors(k, new)
        np.testing.assert_allclose(fm, m[len(grid):], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(fc, c[len(grid):], rtol=1e-7, atol=1e-9)
        # at training coordinates the smoother reproduces the fitted marginals
        gm, _ = fitted.factors(k, grid[::7])
        np.testing.assert_allclose(gm, fitted.state.mean[k][::7], rtol=1e-8, atol=1e-12)
    # far from the data the factors revert to the prior: variance -> s^2
    _, far = fitted.factors(0, np.array([50.0]))
    np.testing.assert_allclose(far[0, 0, 0], 0.5, rtol=1e-6)
    pred = fitted.predict(np.array([[50.0, 0.3], [0.3, 0.3]]))
    assert pred.variance[0] > 10 * pred.variance[1]


def test_result_for_arviz(synthetic_fit):
    d, fitted = synthetic_fit
    res = fitted.to_result(d["te_ind_CONTI"][:30], d["te_y"][:30], key=jax.random.key(1),
                           num_draws=50)
    assert res.posterior_predictive["y"].shape == (1, 50, 30)
    assert res.log_likelihood["y"].shape == (1, 50, 30)
    idata = res.to_arviz()
    assert "posterior_predictive" in idata.groups()


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
    for nu in (0.5, 2.5):
        out = []
        for solver in ("kalman", "dense"):
            cfg = tucker.TuckerConfig(rank=R, num_modes=1, nu=nu, mode_solver=solver)
            out.append(tucker._mode_posterior_jit(grid, observed, prec, shift, 0.4, 1.3, cfg))
        np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- NumPyro model


def test_numpyro_model_likelihood_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 3))
    R = 2
    draws = Predictive(tucker.tucker_model, num_samples=1)(jax.random.key(0), x, rank=R)
    assert draws["y"].shape == (1, 12)
    params = {k: v[0] for k, v in draws.items() if k in ("u0_white", "u1_white", "u2_white",
                                                         "core", "tau")}
    tr = handlers.trace(handlers.substitute(tucker.tucker_model, params)).get_trace(
        x, y=np.zeros(12), rank=R)
    us = [np.asarray(tr[f"u{k}"]["value"]) for k in range(3)]
    W = np.asarray(params["core"])
    f = np.zeros(12)
    for n in range(12):
        vals = [us[k][np.searchsorted(np.unique(x[:, k]), x[n, k])] for k in range(3)]
        f[n] = np.einsum("abc,a,b,c->", W, *vals)
    np.testing.assert_allclose(tr["y"]["fn"].loc, f, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_naming_argument():
    x = np.random.default_rng(0).uniform(size=(20, 2))
    y = np.sin(x[:, 0])
    key = jax.random.key(0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="^index"):
        tucker.fit(bad, y, rank=1, key=key)
    with pytest.raises(ValueError, match="^rank"):
        tucker.fit(x, y, rank=0, key=key)
    ybad = y.copy()
    ybad[0] = np.inf
    with pytest.raises(ValueError, match="^y"):
        tucker.fit(x, ybad, rank=1, key=key)
    ybad[0] = np.nan
    with pytest.raises(ValueError, match="^y"):
        tucker.fit(x, ybad, rank=1, key=key)
    with pytest.raises(ValueError, match="^lengthscale"):   # 3 values for a 2-column index
        tucker.fit(x, y, rank=1, lengthscale=[0.1, 0.2, 0.3], key=key)
    with pytest.raises(ValueError, match="^index"):
        tucker.tucker_model(bad, y, rank=1)
    with pytest.raises(ValueError, match="^rank"):
        tucker.tucker_model(x, y, rank=0)


def test_predict_rejects_wrong_number_of_columns(synthetic_fit):
    _, fitted = synthetic_fit
    with pytest.raises(ValueError, match="^index: expected 2 columns"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="^index"):
        fitted.predict(np.array([[0.1, np.nan]]))
