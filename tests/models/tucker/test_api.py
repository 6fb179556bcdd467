"""The FunBaT family (probkit.models.tucker.api): the shipped synthetic set, prediction at
unseen coordinates against the dense GP, ArviZ, the NUTS engine, bad input."""

import jax
import numpy as np
import pytest

import probkit
from probkit import kernels
from probkit.datasets import load_tensor
from probkit.models import tucker
from probkit.models.tucker.cep import mean_f
from probkit.result import group_names
from tests.models.tucker.test_cep import dense_posterior


@pytest.fixture(scope="module")
def synthetic_fit():
    d = load_tensor("funbat_synthetic_r1")
    fam = tucker.FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.1, variance=0.5, num_steps=100,
                        damping=(0.1, 0.2, 0.5), standardize=False)
    return d, fam.fit(d["tr_ind_CONTI"], d["tr_y"], key=jax.random.key(0), progress_bar=False)


def test_cp_rank1_synthetic_rmse(synthetic_fit):
    """Measured 0.0036 (authors: about 0.004); the issue's target is 0.006."""
    d, fitted = synthetic_fit
    post = fitted.posterior(d["te_ind_CONTI"])
    rmse = np.sqrt(np.mean((post.mean - d["te_y"]) ** 2))
    assert rmse <= 0.006
    assert np.all(post.variance > 0)
    # the predictive of y adds E[1/tau]
    a, b = fitted.noise_shape_rate
    noisy = fitted.predict(d["te_ind_CONTI"][:5])
    np.testing.assert_allclose(noisy.variance - post.variance[:5], b / (a - 1), rtol=1e-10)


def test_prediction_at_unseen_coordinates_equals_dense_gp(synthetic_fit, x64):
    """Inserting new coordinates as observation-free smoother steps is exact GP conditioning:
    compare with the dense posterior over train grid + new points (interpolation and both
    extrapolation sides)."""
    _, fitted = synthetic_fit
    new = np.array([-0.3, 0.01234, 0.5001, 0.77777, 1.4])
    for k in range(2):
        grid = fitted.grid(k)
        obs = np.asarray(fitted.observed_grid[k])
        merged = np.concatenate([grid, new])
        prec = np.concatenate([np.asarray(fitted.state.msg_prec[k])[obs],
                               np.zeros((len(new), 1, 1))])
        shift = np.concatenate([np.asarray(fitted.state.msg_shift[k])[obs],
                                np.zeros((len(new), 1))])
        m, c = dense_posterior(merged, prec, shift, 0.1, 0.5)
        fm, fc = fitted.factors(k, new)
        np.testing.assert_allclose(fm, m[len(grid):], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(fc, c[len(grid):], rtol=1e-7, atol=1e-9)
        # at training coordinates the smoother reproduces the fitted marginals
        gm, _ = fitted.factors(k, grid[::7])
        np.testing.assert_allclose(gm, np.asarray(fitted.state.mean[k])[obs][::7], rtol=1e-8,
                                   atol=1e-12)
    # far from the data the factors revert to the prior: variance -> s^2
    _, far = fitted.factors(0, np.array([50.0]))
    np.testing.assert_allclose(far[0, 0, 0], 0.5, rtol=1e-6)
    post = fitted.posterior(np.array([[50.0, 0.3], [0.3, 0.3]]))
    assert post.variance[0] > 10 * post.variance[1]


def test_to_arviz(synthetic_fit):
    d, fitted = synthetic_fit
    idata = fitted.to_arviz(d["te_ind_CONTI"][:30], d["te_y"][:30], key=jax.random.key(1),
                            num_samples=50, num_chains=2)
    assert idata.predictions["y"].shape == (2, 25, 30)
    assert idata.log_likelihood["y"].shape == (2, 25, len(d["tr_y"]))
    assert "posterior_predictive" in group_names(idata)
    assert set(idata.posterior.data_vars) == {"f", "noise"}      # CP: no core to infer


def test_tucker_posterior_draws_hold_the_core_and_reload_bit_for_bit(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(40, 2))
    y = np.sin(3 * x[:, 0]) * x[:, 1]
    fitted = tucker.FunBaT(rank=2, lengthscale=0.3, num_steps=10).fit(
        x, y, key=jax.random.key(0), progress_bar=False)
    draws = fitted._posterior_draws(jax.random.key(1), 7)
    assert draws["core"].shape == (7, 2, 2) and draws["f"].shape == (7, 40)
    back = probkit.load(fitted.save(tmp_path / "tucker.pk"))
    np.testing.assert_array_equal(back.predict(x).variance, fitted.predict(x).variance)


def test_nuts_engine_draws_interpolate_and_reload(tmp_path):
    """NUTS on the NumPyro model: the posterior at the training coordinates is the draws' own f
    (the GP conditional there has zero variance), the predictive is wider, and it fits the data."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 2))
    y = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1])
    fam = tucker.FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.5, engine="nuts",
                        num_warmup=150, num_samples=50)
    fitted = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)
    assert isinstance(fitted, tucker.NUTSFitted)
    pos = np.stack([np.searchsorted(np.asarray(g), x[:, k])
                    for k, g in enumerate(fitted.grids)], 1)
    with jax.enable_x64(True):
        exact = jax.vmap(lambda u, w: mean_f(u, w, pos, fitted.config))(fitted.u, fitted.core)
        exact = np.asarray(exact) * float(fitted.y_scale) + float(fitted.y_mean)
    post = fitted.posterior(x)
    np.testing.assert_allclose(post.draws, exact, atol=2e-2 * np.std(y))
    assert np.sqrt(np.mean((post.mean - y) ** 2)) < 0.5 * np.std(y)
    x_new = rng.uniform(size=(5, 2))
    pred = fitted.predict(x_new)
    assert np.all(fitted.posterior(x_new).variance < pred.variance)
    back = probkit.load(fitted.save(tmp_path / "nuts.pk"))
    np.testing.assert_array_equal(back.predict(x_new).loc, pred.loc)


def test_matern_settings_and_the_same_kernels_give_the_same_fit():
    """``nu``/``lengthscale``/``variance`` per mode are the default ``kernel``: passing the
    Matern kernels themselves reproduces the fit bit for bit."""
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(50, 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2
    key = jax.random.key(0)
    a = tucker.FunBaT(rank=2, nu=2.5, lengthscale=(0.3, 0.6), variance=(1.0, 0.5),
                      num_steps=8).fit(x, y, key=key, progress_bar=False)
    with jax.enable_x64(True):
        kern = (kernels.Matern52(np.float64(0.3), np.float64(1.0)),
                kernels.Matern52(np.float64(0.6), np.float64(0.5)))
    b = tucker.FunBaT(rank=2, kernel=kern, num_steps=8).fit(x, y, key=key, progress_bar=False)
    xq = rng.uniform(-0.2, 1.2, size=(9, 2))
    np.testing.assert_array_equal(a.predict(xq).mean, b.predict(xq).mean)
    np.testing.assert_array_equal(a.predict(xq).variance, b.predict(xq).variance)


def test_periodic_factor_extrapolates_a_seasonal_coordinate_and_reloads(tmp_path):
    """A periodic factor kernel (the state-space series of issue 16) carries a seasonal
    coordinate beyond the training range, where a Matern factor reverts to its prior mean."""
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(300, 2))
    f = lambda x: np.sin(2 * np.pi * x[:, 0] / 0.25) * (1.0 + x[:, 1])  # noqa: E731
    y = f(x) + 0.05 * rng.normal(size=300)
    xt = np.stack([rng.uniform(1.0, 1.5, 200), rng.uniform(size=200)], 1)
    key = jax.random.key(0)
    seasonal = tucker.FunBaT(rank=1, cp=True, num_steps=40, kernel=(
        kernels.Periodic(0.5, 1.0, period=0.25), kernels.Matern32(1.0, 1.0)))
    fit_p = seasonal.fit(x, y, key=key, progress_bar=False)
    fit_m = tucker.FunBaT(rank=1, cp=True, num_steps=40, nu=1.5, lengthscale=(0.1, 1.0)).fit(
        x, y, key=key, progress_bar=False)
    rmse = [np.sqrt(np.mean((fit.predict(xt).mean - f(xt)) ** 2)) for fit in (fit_p, fit_m)]
    assert rmse[0] < 0.1 < 0.5 < rmse[1], rmse
    back = probkit.load(fit_p.save(tmp_path / "seasonal.pk"))
    np.testing.assert_array_equal(back.predict(xt).variance, fit_p.predict(xt).variance)


def test_numpyro_model_takes_any_kernel(x64):
    """The NUTS engine's model builds each mode's factors from the kernel's dense Gram matrix,
    so kernels without a state-space form (RBF) work there."""
    from numpyro import handlers

    rng = np.random.default_rng(8)
    x = rng.uniform(size=(15, 2))
    kern = kernels.RBF(np.float64(0.4), np.float64(0.8))
    tr = handlers.trace(handlers.seed(tucker.tucker_model, 0)).get_trace(x, rank=2, kernel=kern)
    g = np.unique(x[:, 1])
    gram = 0.8 * np.exp(-0.5 * (g[:, None] - g[None, :]) ** 2 / 0.4**2)
    chol = np.linalg.cholesky(gram + 1e-8 * 0.8 * np.eye(len(g)))
    # (the RBF Gram matrix is nearly singular: its Cholesky factor agrees to rounding x cond)
    np.testing.assert_allclose(tr["u1"]["value"], chol @ np.asarray(tr["u1_white"]["value"]),
                               rtol=1e-6, atol=1e-8)
    tucker.FunBaT(kernel=kern, engine="nuts")          # accepted: dense Gram matrices


def test_bad_input_raises_naming_argument():
    x = np.random.default_rng(0).uniform(size=(20, 2))
    y = np.sin(x[:, 0])
    key = jax.random.key(0)
    fam = tucker.FunBaT(rank=1)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="^x"):
        fam.fit(bad, y, key=key)
    with pytest.raises(ValueError, match="^rank"):
        tucker.FunBaT(rank=0)
    ybad = y.copy()
    ybad[0] = np.inf
    with pytest.raises(ValueError, match="^y"):
        fam.fit(x, ybad, key=key)
    ybad[0] = np.nan
    with pytest.raises(ValueError, match="^y"):
        fam.fit(x, ybad, key=key)
    with pytest.raises(ValueError, match="^lengthscale"):   # 3 values for 2 columns of x
        tucker.FunBaT(rank=1, lengthscale=[0.1, 0.2, 0.3]).fit(x, y, key=key)
    with pytest.raises(ValueError, match="^kernel"):   # 3 kernels for 2 columns of x
        tucker.FunBaT(kernel=[kernels.Matern12()] * 3).fit(x, y, key=key)
    with pytest.raises(ValueError, match="^kernel"):   # no state-space form for CEP
        tucker.FunBaT(kernel=kernels.RBF())
    for name, value in (("nu", 1.0), ("damping", 1.0), ("engine", "svi"),
                        ("mode_solver", "lu"), ("kernel", 0.3)):
        with pytest.raises(ValueError, match=f"^{name}"):
            tucker.FunBaT(**{name: value})


def test_predict_rejects_wrong_number_of_columns(synthetic_fit):
    _, fitted = synthetic_fit
    with pytest.raises(ValueError, match="^x: expected 2 input columns"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="^x"):
        fitted.predict(np.array([[0.1, np.nan]]))
