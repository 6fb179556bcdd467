"""Tests of the discriminative Kalman filter (probkit.models.dkf)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

from probkit.inference.message_passing import LGSSM, kalman_filter
from probkit.kernels import RBF, Matern32
from probkit.models import dkf


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _lgssm_data(T=150, D=3, P=5, seed=0):
    rng = np.random.default_rng(seed)
    A = 0.8 * np.eye(D) + 0.05 * rng.normal(size=(D, D))
    G = 0.3 * np.eye(D) + 0.05 * np.ones((D, D))
    dyn = dkf.make_dynamics(A, G)
    H = rng.normal(size=(P, D))
    B = rng.normal(size=(P, P))
    Lam = 0.3 * B @ B.T / P + 0.5 * np.eye(P)
    z = np.zeros((T, D))
    prev = rng.multivariate_normal(np.zeros(D), dyn.S)
    for t in range(T):
        prev = A @ prev + rng.multivariate_normal(np.zeros(D), G)
        z[t] = prev
    x = z @ H.T + rng.multivariate_normal(np.zeros(P), Lam, size=T)
    return dyn, H, Lam, x, z


def _linear_moments(dyn, H, Lam, x):
    """f(x) = (S^-1 + H'Lam^-1 H)^-1 H'Lam^-1 x, Q = (S^-1 + H'Lam^-1 H)^-1, in numpy."""
    HtLi = np.linalg.solve(Lam, H).T
    Q = np.linalg.inv(np.linalg.inv(dyn.S) + HtLi @ H)
    f = x @ (Q @ HtLi).T
    return f, np.broadcast_to(Q, (x.shape[0],) + Q.shape).copy()


# ------------------------------------------------------------------ filter vs Kalman filter

def test_dkf_equals_kalman_filter_for_linear_gaussian_observations():
    dyn, H, Lam, x, _ = _lgssm_data()
    x[[7, 40, 41]] = np.nan                      # missing rows skip the update in both
    f, Q = _linear_moments(dyn, H, Lam, np.nan_to_num(x))
    f[[7, 40, 41]] = np.nan
    params = LGSSM(jnp.zeros(3), jnp.asarray(dyn.S), jnp.asarray(dyn.A), jnp.asarray(dyn.G),
                   jnp.asarray(H), jnp.asarray(Lam))
    ref = kalman_filter(params, jnp.asarray(x))
    for pd_fix in dkf.PD_FIXES:       # Q^-1 - S^-1 = H'Lam^-1 H > 0: no fix is ever applied
        out = dkf.dkf_filter(dyn, f, Q, pd_fix=pd_fix)
        assert out.mean.dtype == jnp.float64
        np.testing.assert_allclose(out.mean, ref.filtered_mean, atol=1e-8, rtol=0)
        np.testing.assert_allclose(out.cov, ref.filtered_cov, atol=1e-8, rtol=0)
        assert not np.any(out.pd_fixed)
    # the exact mixture moments with one component are the same linear moments
    f2, Q2 = dkf.gaussian_mixture_moments(np.nan_to_num(x), H[None], Lam[None], np.ones(1), dyn.S)
    np.testing.assert_allclose(f2[~np.isnan(f[:, 0])], f[~np.isnan(f[:, 0])], atol=1e-10)
    np.testing.assert_allclose(Q2, Q, atol=1e-10)


def test_dkf_matches_direct_recursion_and_pd_fixes():
    """The paper's recursion written out densely, with each PD fix, robust variant and batching."""
    rng = np.random.default_rng(1)
    D, T = 2, 40
    dyn = dkf.make_dynamics(np.array([[0.9, 0.1], [-0.1, 0.8]]), 0.3 * np.eye(2))
    f = rng.normal(size=(T, D))
    W = rng.normal(size=(T, D, D))
    Q = 0.4 * W @ np.swapaxes(W, 1, 2) + 0.05 * np.eye(D)      # some exceed S: fixes needed
    Sinv = np.linalg.inv(dyn.S)

    def direct(robust, fix):
        mu, Sig = np.zeros(D), dyn.S
        means, fixed = [], []
        for t in range(T):
            M = dyn.A @ Sig @ dyn.A.T + dyn.G
            Qt, minus = Q[t], (0.0 if robust else Sinv)
            e = np.linalg.eigvals(np.linalg.solve(dyn.S, Qt)).real
            bad = (not robust) and e.max() >= 1 - 1e-6
            fixed.append(bad)
            info_f = np.linalg.solve(Qt, f[t])
            if bad and fix == "robust":
                minus = 0.0
            elif bad and fix == "inflate":
                Qt = np.linalg.inv(np.linalg.inv(Qt) + Sinv)
                info_f = np.linalg.solve(Qt, f[t])
            elif bad and fix == "clip":
                E, V = np.linalg.eig(np.linalg.solve(dyn.S, Qt))
                Qt = (dyn.S @ V @ np.diag(np.minimum(E.real, 1 - 1e-6)) @ np.linalg.inv(V)).real
                Qt = 0.5 * (Qt + Qt.T)
                info_f = np.linalg.solve(Qt, f[t])
            prec = np.linalg.inv(Qt) + np.linalg.inv(M) - minus
            Sig = np.linalg.inv(prec)
            mu = Sig @ (info_f + np.linalg.solve(M, dyn.A @ mu))
            means.append(mu)
        return np.array(means), np.array(fixed)

    for fix in dkf.PD_FIXES:
        ref, ref_fixed = direct(False, fix)
        out = dkf.dkf_filter(dyn, f, Q, pd_fix=fix)
        assert ref_fixed.any() and not ref_fixed.all()
        np.testing.assert_array_equal(out.pd_fixed, ref_fixed)
        np.testing.assert_allclose(out.mean, ref, rtol=1e-5, atol=1e-6)
    ref, _ = direct(True, "robust")
    batched = dkf.dkf_filter(dyn, np.stack([f, f[::-1]]), np.stack([Q, Q[::-1]]), robust=True)
    np.testing.assert_allclose(batched.mean[0], ref, atol=1e-8)
    single = dkf.dkf_filter(dyn, f[::-1], Q[::-1], robust=True)
    np.testing.assert_allclose(batched.mean[1], single.mean, atol=1e-12)


def test_gaussian_mixture_moments_against_scipy():
    from scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(12)
    n, d = 7, 3
    H = rng.normal(size=(2, n, d))
    noise = np.stack([np.eye(n), 5.0 * np.eye(n)])
    S = 0.7 * np.eye(d) + 0.1
    x = rng.normal(size=(4, n))
    f, Q = dkf.gaussian_mixture_moments(x, H, noise, np.array([0.3, 0.7]), S)
    w, fs, Qs = [], [], []
    for l, pi in enumerate([0.3, 0.7]):             # conditioning of the joint Gaussian
        C = H[l] @ S @ H[l].T + noise[l]
        K = S @ H[l].T @ np.linalg.inv(C)
        w.append(pi * mvn(np.zeros(n), C).pdf(x))
        fs.append(x @ K.T)
        Qs.append(S - K @ H[l] @ S)
    w = np.array(w) / np.sum(w, 0)
    f_ref = sum(w[l][:, None] * fs[l] for l in range(2))
    Q_ref = sum(w[l][:, None, None] * (Qs[l] + np.einsum("ni,nj->nij", fs[l], fs[l]))
                for l in range(2)) - np.einsum("ni,nj->nij", f_ref, f_ref)
    np.testing.assert_allclose(f, f_ref, atol=1e-12)
    np.testing.assert_allclose(Q, Q_ref, atol=1e-12)


# ------------------------------------------------------------------ dynamics

def test_fit_dynamics_least_squares_and_lyapunov():
    rng = np.random.default_rng(2)
    A = np.array([[0.9, 0.05], [-0.1, 0.7]])
    G = np.array([[0.3, 0.1], [0.1, 0.2]])
    S = dkf.make_dynamics(A, G).S
    np.testing.assert_allclose(S, A @ S @ A.T + G, atol=1e-12)
    z = np.zeros((2, 3000, 2))
    for b in range(2):
        prev = rng.multivariate_normal(np.zeros(2), S)
        for t in range(3000):
            prev = A @ prev + rng.multivariate_normal(np.zeros(2), G)
            z[b, t] = prev
    fit = dkf.fit_dynamics(z)
    prev, nxt = z[:, :-1].reshape(-1, 2), z[:, 1:].reshape(-1, 2)
    A_ls = np.linalg.lstsq(prev, nxt, rcond=None)[0].T
    np.testing.assert_allclose(fit.A, A_ls, atol=1e-10)
    np.testing.assert_allclose(fit.G, np.cov(nxt - prev @ A_ls.T, rowvar=False), atol=1e-10)
    np.testing.assert_allclose(fit.S, np.cov(z.reshape(-1, 2), rowvar=False), atol=1e-10)
    np.testing.assert_allclose(fit.A, A, atol=0.05)
    lyap = dkf.fit_dynamics(list(z), stationary="lyapunov")
    np.testing.assert_allclose(lyap.S, lyap.A @ lyap.S @ lyap.A.T + lyap.G, atol=1e-10)


def test_dynamics_model_log_density_matches_scipy():
    from scipy.stats import multivariate_normal as mvn

    rng = np.random.default_rng(3)
    A = np.array([[0.5, 0.1], [0.0, 0.6]])
    G = np.array([[0.4, 0.1], [0.1, 0.3]])
    z = rng.normal(size=(6, 2))
    S = dkf.make_dynamics(A, G).S
    logp = jax.jit(lambda z, A, G: numpyro.infer.util.log_density(
        dkf.dynamics_model, (z,), {"A": A, "G": G}, {})[0])(z, A, G)
    ref = mvn(np.zeros(2), S).logpdf(z[0]) + sum(mvn(A @ z[t - 1], G).logpdf(z[t])
                                                 for t in range(1, 6))
    np.testing.assert_allclose(float(logp), ref, rtol=1e-10)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(dkf.dynamics_model, 0)).get_trace(
        num_steps=7, dim=2)
    assert tr["z_path"]["value"].shape == (7, 2) and tr["A"]["value"].shape == (2, 2)


@pytest.mark.slow
def test_dynamics_sampled_with_probkit_hmc():
    rng = np.random.default_rng(11)
    z = np.zeros((200, 1))
    for t in range(1, 200):
        z[t] = 0.7 * z[t - 1] + 0.5 * rng.normal()
    res = dkf.sample_dynamics(z, key=jax.random.key(0), num_warmup=100, num_samples=100,
                              num_chains=1, progress_bar=False)
    assert res.posterior["A"].shape == (1, 100, 1, 1) and res.posterior["G"].shape == (1, 100, 1, 1)
    ls = dkf.fit_dynamics(z)
    assert abs(float(res.posterior["A"].mean()) - ls.A[0, 0]) < 0.05
    assert abs(float(res.posterior["G"].mean()) - ls.G[0, 0]) < 0.05
    assert int(np.sum(res.sample_stats["diverging"])) == 0


# ------------------------------------------------------------------ learners vs numpy

def _nw_numpy(xt, yt, h, xq):
    out = np.zeros((len(xq), yt.shape[1]))
    for i, q in enumerate(xq):
        w = np.exp(-np.sum((xt - q) ** 2, 1) / (2 * h**2))
        out[i] = w @ yt / w.sum()
    return out


def test_nadaraya_watson_against_numpy():
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(240, 2))
    z = np.column_stack([np.sin(2 * x[:, 0]), x[:, 1] ** 2]) + 0.2 * rng.normal(size=(240, 2))
    np.testing.assert_allclose(dkf.nw_predict(x, z, 0.4, x[:9]), _nw_numpy(x, z, 0.4, x[:9]),
                               rtol=1e-10)
    # leave-one-out error and its minimiser
    loo = np.mean([np.sum((_nw_numpy(np.delete(x, i, 0), np.delete(z, i, 0), 0.3, x[i:i + 1])
                           - z[i]) ** 2) for i in range(len(x))])
    np.testing.assert_allclose(dkf.nw_loo_error(x, z, 0.3), loo, rtol=1e-10)
    h = dkf.nw_select_bandwidth(x, z)
    grid = np.exp(np.linspace(np.log(h) - 1, np.log(h) + 1, 21))
    assert dkf.nw_loo_error(x, z, h) <= min(dkf.nw_loo_error(x, z, g) for g in grid) + 1e-9
    # the learner: f on the training share, Q from the held-out residuals
    nw = dkf.NadarayaWatson(covariance="nw").fit(x, z, key=jax.random.key(0))
    s = nw._state
    xq = rng.uniform(-2, 2, size=(5, 2))
    f, Q = nw.predict(xq)
    np.testing.assert_allclose(f, _nw_numpy(s["x"], s["z"], float(s["bandwidth"]), xq), rtol=1e-10)
    tr_rows = {tuple(r) for r in s["x"]}
    ho = np.array([i for i in range(len(x)) if tuple(x[i]) not in tr_rows])
    assert len(ho) == 72 and len(s["x"]) == 168
    r = z[ho] - _nw_numpy(s["x"], s["z"], float(s["bandwidth"]), x[ho])
    rr = np.einsum("ni,nj->nij", r, r).reshape(len(ho), 4)
    Q_ref = _nw_numpy(x[ho], rr, float(s["cov_bandwidth"]), xq).reshape(5, 2, 2)
    Q_ref += float(s["cov_jitter"]) * np.eye(2)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-9, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(np.asarray(Q)) > 0)
    const = dkf.NadarayaWatson(covariance="constant", bandwidth=0.5).fit(x, z,
                                                                        key=jax.random.key(0))
    r = z[ho] - _nw_numpy(s["x"], s["z"], 0.5, x[ho])    # same split: same key
    np.testing.assert_allclose(const.predict(xq)[1][0], (r.T @ r / len(r)) + const._state[
        "cov_jitter"] * np.eye(2), rtol=1e-9)


def test_gaussian_process_against_numpy():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, size=(120, 2))
    z = np.column_stack([np.sin(x[:, 0]), np.cos(x[:, 1])]) + 0.1 * rng.normal(size=(120, 2))
    kern = Matern32(lengthscale=np.array([0.8, 1.3]), variance=1.5)
    gp = dkf.GaussianProcess(kern, noise=0.05, optimize=False).fit(x, z, key=jax.random.key(1))
    xt = gp._state["x"]
    zt = np.array([z[np.flatnonzero((x == row).all(1))[0]] for row in xt])
    xq = rng.uniform(-2, 2, size=(7, 2))

    def m32(a, b):
        r = np.sqrt(np.sum(((a[:, None] - b[None]) / np.array([0.8, 1.3])) ** 2, -1))
        return 1.5 * (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)

    K = m32(xt, xt) + (0.05 + 1e-8) * np.eye(len(xt))
    ref = m32(xq, xt) @ np.linalg.solve(K, zt - zt.mean(0)) + zt.mean(0)
    np.testing.assert_allclose(gp.predict(xq)[0], ref, rtol=1e-8, atol=1e-10)
    # hyperparameter fit: the marginal likelihood improves on the initial values
    fitted = dkf.GaussianProcess(RBF(lengthscale=np.ones(2)), max_iter=20).fit(
        x, z, key=jax.random.key(1))
    assert fitted._state["kernel_leaf0"].shape == (2, 2)
    assert np.all(fitted._state["noise"] < 0.1)          # true noise variance 0.01


def test_mlp_learner_fits_heteroscedastic_data():
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, size=(600, 1))
    sd = 0.05 + 0.3 * (x[:, 0] > 0)
    z = np.sin(2 * x) + sd[:, None] * rng.normal(size=(600, 1))
    m = dkf.MLPLearner(width=16, num_steps=400, learning_rate=2e-2).fit(x, z, key=jax.random.key(0))
    f, Q = m.predict(np.array([[-1.0], [1.0]]))
    np.testing.assert_allclose(f[:, 0], np.sin([-2.0, 2.0]), atol=0.15)
    assert Q[1, 0, 0] > 4 * Q[0, 0, 0]                    # learned the larger noise for x > 0
    assert m.history.shape == (400,)


# ------------------------------------------------------------------ save / load

@pytest.mark.parametrize("make", [
    lambda: dkf.NadarayaWatson(),
    lambda: dkf.NadarayaWatson(covariance="constant"),
    lambda: dkf.MLPLearner(width=8, num_steps=30),
    lambda: dkf.GaussianProcess(Matern32(lengthscale=np.ones(3)), max_iter=5),
])
def test_save_load_is_bit_for_bit(make, tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(80, 3))
    z = np.column_stack([x[:, 0] - x[:, 1], np.tanh(x[:, 2])]) + 0.1 * rng.normal(size=(80, 2))
    learner = make().fit(x, z, key=jax.random.key(3))
    path = tmp_path / "learner.bin"
    learner.save(path)
    for loaded in (type(learner).load(path), dkf.load_learner(path)):
        assert type(loaded) is type(learner)
        for a, b in zip(learner.predict(x), loaded.predict(x), strict=True):
            assert np.asarray(a).dtype == np.asarray(b).dtype == np.float64
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------ convenience API, end to end

def test_convenience_filter_handles_missing_rows_and_trials():
    dyn, H, Lam, x, z = _lgssm_data(T=300, D=2, P=4, seed=8)
    model = dkf.DiscriminativeKalmanFilter(dkf.NadarayaWatson(), dynamics="lstsq")
    model.fit(x[:200], z[:200], key=jax.random.key(0))
    xt = x[200:].copy()
    xt[5] = np.nan
    out = model.filter(xt)
    f, Q = model.moments(xt)
    assert np.isnan(f[5]).all() and not np.isnan(out.mean).any()
    np.testing.assert_allclose(out.mean[5], model.dynamics_.A @ out.mean[4], atol=1e-12)
    err = np.sqrt(np.mean((out.mean - z[200:]) ** 2))
    raw = np.sqrt(np.mean((np.nan_to_num(f) - z[200:]) ** 2))
    assert err < raw < np.sqrt(np.mean(z[200:] ** 2))
    both = model.filter(np.stack([xt, x[200:]]))
    np.testing.assert_allclose(both.mean[0], out.mean, atol=1e-12)
    # given dynamics are used as they are
    fixed = dkf.DiscriminativeKalmanFilter(dkf.NadarayaWatson(bandwidth=0.5), dynamics=dyn)
    fixed.fit(np.stack([x[:100], x[100:200]]), np.stack([z[:100], z[100:200]]),
              key=jax.random.key(0))
    np.testing.assert_array_equal(fixed.dynamics_.A, dyn.A)


def test_kalman_baseline_helpers():
    dyn, H, Lam, x, z = _lgssm_data(T=4000, D=2, P=3, seed=9)
    H_fit, Lam_fit = dkf.fit_linear_observation(x, z)
    np.testing.assert_allclose(H_fit, np.linalg.lstsq(z, x, rcond=None)[0].T, atol=1e-12)
    np.testing.assert_allclose(H_fit, H, atol=0.05)
    assert dkf.kalman_decode(dyn, H, Lam, x[:10]).filtered_mean.shape == (10, 2)
    v = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert dkf.mean_absolute_angle(v, np.array([[0.0, 1.0], [0.0, -1.0]])) == pytest.approx(
        0.75 * np.pi)
    assert dkf.nrmse(np.zeros_like(z), z) == pytest.approx(1.0)


# ------------------------------------------------------------------ bad input

def test_bad_inputs_raise_value_errors_naming_the_argument():
    dyn, H, Lam, x, z = _lgssm_data(T=60, D=2, P=3, seed=10)
    f, Q = _linear_moments(dyn, H, Lam, x)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="^x, z: lengths differ"):
        dkf.DiscriminativeKalmanFilter().fit(x[:50], z, key=key)
    with pytest.raises(ValueError, match="^x, z: lengths differ"):
        dkf.NadarayaWatson().fit(x[:50], z, key=key)
    with pytest.raises(ValueError, match="^A: expected shape"):
        dkf.make_dynamics(np.ones((2, 3)), np.eye(2))
    with pytest.raises(ValueError, match="^A: expected an array with ndim"):
        dkf.make_dynamics(np.ones(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^G: expected shape \(2, 2\)"):
        dkf.make_dynamics(0.5 * np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="^G: must be positive definite"):
        dkf.make_dynamics(0.5 * np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="^G: must be symmetric"):
        dkf.make_dynamics(0.5 * np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="^A: spectral radius"):
        dkf.make_dynamics(1.1 * np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="^f: expected last dimension 3"):
        dkf.dkf_filter(dkf.DynamicsParams(np.eye(3) * 0.5, np.eye(3), np.eye(3) / 0.75), f, Q)
    bad = f.copy()
    bad[3, 0] = np.nan                                   # partly NaN row
    with pytest.raises(ValueError, match="^f: row"):
        dkf.dkf_filter(dyn, bad, Q)
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="^f: contains inf"):
        dkf.dkf_filter(dyn, bad, Q)
    badQ = Q.copy()
    badQ[4] = -np.eye(2)
    with pytest.raises(ValueError, match="^Q: every Q"):
        dkf.dkf_filter(dyn, f, badQ)
    badQ[4] = np.nan
    with pytest.raises(ValueError, match="^Q: contains NaN"):
        dkf.dkf_filter(dyn, f, badQ)
    model = dkf.DiscriminativeKalmanFilter().fit(x, z, key=key)
    xb = x.copy()
    xb[2, 1] = np.nan
    with pytest.raises(ValueError, match="^x: row"):
        model.filter(xb)
    xb[2] = np.inf
    with pytest.raises(ValueError, match="^x: contains inf"):
        model.filter(xb)
    zb = z.copy()
    zb[0, 0] = np.nan
    with pytest.raises(ValueError, match="^z: contains NaN"):
        dkf.fit_dynamics(zb)
    with pytest.raises(ValueError, match="^z: contains NaN"):
        dkf.DiscriminativeKalmanFilter().fit(x, zb, key=key)
    for learner in (dkf.NadarayaWatson(), dkf.MLPLearner(), dkf.GaussianProcess()):
        with pytest.raises(ValueError, match="^learner: .* not fitted"):
            learner.predict(x)
    with pytest.raises(ValueError, match="^learner: .* not fitted"):
        dkf.DiscriminativeKalmanFilter().filter(x)
    with pytest.raises(ValueError, match="^x: expected 3 columns"):
        model.learner.predict(x[:, :2])
    with pytest.raises(ValueError, match="^pd_fix:"):
        dkf.dkf_filter(dyn, f, Q, pd_fix="nope")
    with pytest.raises(ValueError, match="^key:"):
        dkf.NadarayaWatson().fit(x, z, key=0)
    with pytest.raises(ValueError, match="^kernel:"):
        dkf.GaussianProcess(kernel="rbf")
