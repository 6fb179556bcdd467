"""The FunBaT family (probkit.models.tucker.api): the shipped synthetic set, prediction at
unseen coordinates against the dense GP, ArviZ, the NUTS engine, bad input."""

import jax
import numpy as np
import pytest

import probkit
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
    for name, value in (("nu", 1.0), ("damping", 1.0), ("engine", "svi"),
                        ("mode_solver", "lu")):
        with pytest.raises(ValueError, match=f"^{name}"):
            tucker.FunBaT(**{name: value})


def test_predict_rejects_wrong_number_of_columns(synthetic_fit):
    _, fitted = synthetic_fit
    with pytest.raises(ValueError, match="^x: expected 2 input columns"):
        fitted.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="^x"):
        fitted.predict(np.array([[0.1, np.nan]]))
