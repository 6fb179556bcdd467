"""probkit.models.fbnn.regression: the FBNN family on SGHMC (exact linear-regression posterior),
NUTS, ArviZ, save/load and the BO configuration (compile once)."""

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import probkit
from probkit.models.fbnn import FBNN, FBNNFitted, GaussianPrior

KEY = jax.random.key(0)


def test_nan_data_rejected():
    x = np.zeros((5, 1))
    y = np.array([0.0, 1.0, np.nan, 0.0, 1.0])
    with pytest.raises(ValueError, match="^y"):
        FBNN(widths=(4,), prior="fixed").fit(x, y, key=KEY)
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="^x"):
        FBNN(widths=(4,), prior="fixed").fit(x, np.zeros(5), key=KEY)


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="x, y"):
        FBNN(widths=(4,), prior="fixed").fit(np.zeros((5, 1)), np.zeros(4), key=KEY)


def test_bad_settings_name_themselves():
    for name, value in (("prior", "laplace"), ("engine", "vi"), ("noise_var", 0.0),
                        ("noise_prior", (1.0, -1.0)), ("noise_prior", (1.0,)),
                        ("num_chains", 0), ("target", "rbf")):
        with pytest.raises(ValueError, match=f"^{name}"):
            FBNN(**{name: value})


def test_sghmc_matches_exact_linear_regression_posterior():
    rng = np.random.default_rng(0)
    n, d = 256, 3
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5, 0.2]) + 0.3 + 0.5 * rng.normal(size=n)
    prior = GaussianPrior.init(1, 1.0)
    post = FBNN(widths=(), prior=prior, noise_var=0.3, num_chains=8, num_warmup=1000,
                num_samples=200, thinning=10, batch_size=32).fit(x, y, key=KEY,
                                                                 progress_bar=False)
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


def test_fbnn_fit_predict_arviz_and_hierarchical_gibbs(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (60, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=60)
    post = FBNN(widths=(20,), prior="fixed-invgamma", num_chains=2, num_warmup=1500,
                num_samples=20, thinning=20).fit(x, y, key=KEY, progress_bar=False)
    pred = post.predict(x)
    m, v = np.asarray(pred.mean), np.asarray(pred.variance)
    assert m.shape == v.shape == (60,)
    assert np.sqrt(np.mean((m - y) ** 2)) < 0.35
    nll = -np.mean(-0.5 * np.log(2 * np.pi * v) - 0.5 * (y - m) ** 2 / v)  # moment matched
    assert np.isfinite(nll) and np.all(np.isfinite(np.asarray(pred.log_prob(y))))
    assert float(jnp.std(post.variances.w)) > 0                         # Gibbs moved them
    idata = post.to_arviz(key=KEY, num_samples=40, num_chains=2)        # all draws, in order
    assert idata.posterior["W0"].shape == (2, 20, 1, 20)
    assert idata.log_likelihood["y"].shape == (2, 20, 60)
    np.testing.assert_array_equal(idata.posterior["W0"].values, np.asarray(post.nets.weights[0]))
    assert idata.posterior["var_W"].shape == (2, 20, 2)
    assert post.posterior(x[:4]).sample(KEY, 7).shape == (7, 4)
    back = probkit.load(post.save(tmp_path / "fbnn.pk"))
    np.testing.assert_array_equal(back.predict(x).log_prob(y), pred.log_prob(y))


def test_nuts_small_network():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (30, 1))
    y = x[:, 0] ** 2 + 0.1 * rng.normal(size=30)
    post = FBNN(widths=(4,), prior="fixed", engine="nuts", num_chains=2, num_warmup=150,
                num_samples=50, thinning=1).fit(x, y, key=KEY, progress_bar=False)
    assert post.nets.weights[0].shape == (2, 50, 1, 4)
    assert np.sqrt(np.mean((np.asarray(post.predict(x).mean) - y) ** 2)) < 0.6


def test_bo_configuration_and_compile_once():
    from probkit.bo.protocol import Posterior

    rng = np.random.default_rng(3)
    fam = FBNN.for_bo(widths=(16,), num_chains=2, num_warmup=200, num_samples=8, thinning=10)
    assert fam.prior == "fixed" and fam.noise_var == 1e-3
    f1 = fam.fit(rng.uniform(size=(6, 2)), rng.normal(size=6), key=KEY, progress_bar=False)
    f2 = fam.fit(rng.uniform(size=(7, 2)), rng.normal(size=7), key=KEY, progress_bar=False)
    assert isinstance(f1, FBNNFitted)
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


def test_learned_noise_matches_exact_linear_regression_posterior():
    # widths=() is Bayesian linear regression; with sigma^2 ~ InvGamma(a, b) the exact
    # marginal posterior of sigma^2 is p(sigma^2) N(y; 0, Phi Phi^T + sigma^2 I), on a grid
    rng = np.random.default_rng(4)
    n, d = 200, 3
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5, 0.2]) + 0.3 + 0.8 * rng.normal(size=n)
    a, b = 2.0, 0.1
    post = FBNN(widths=(), prior=GaussianPrior.init(1, 1.0), noise_var=1.0, learn_noise=True,
                noise_prior=(a, b), num_chains=8, num_warmup=1000, num_samples=200, thinning=10,
                batch_size=32).fit(x, y, key=KEY, progress_bar=False)
    xs = (x - np.asarray(post.x_mean)) / np.asarray(post.x_std)
    ys = (y - float(post.y_mean)) / float(post.y_std)
    phi = np.c_[xs / np.sqrt(d), np.ones(n)]
    grid = np.linspace(0.05, 1.0, 4000)
    gram = phi @ phi.T
    logp = np.array([stats.multivariate_normal(np.zeros(n), gram + s2 * np.eye(n)).logpdf(ys)
                     for s2 in grid[::20]])
    logp = np.interp(grid, grid[::20], logp) + stats.invgamma(a, scale=b).logpdf(grid)
    w = np.exp(logp - logp.max())
    exact_mean = np.sum(w * grid) / np.sum(w)
    exact_sd = np.sqrt(np.sum(w * (grid - exact_mean) ** 2) / np.sum(w))
    s2 = np.asarray(post.noise_var)                                    # (C, S), standardised
    assert abs(s2.mean() - exact_mean) < 4 * az.mcse(s2) + 0.1 * exact_sd, (s2.mean(), exact_mean)
    np.testing.assert_allclose(s2.std(), exact_sd, rtol=0.3)
    idata = post.to_arviz(key=KEY, num_samples=40, num_chains=2)       # 40 of the draws
    assert np.all(np.isin(idata.posterior["noise"].values, post.noise_variance))


def test_learned_noise_calibrates_the_predictive_on_known_noise():
    # y = sin(x) + N(0, 0.3^2): the learned noise recovers 0.3 and the 95% intervals cover
    # about 95% of fresh data; a fixed noise three times too large over-covers (the check bites)
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, (300, 1))
    y = np.sin(x[:, 0]) + 0.3 * rng.normal(size=300)
    xt = rng.uniform(-3, 3, (2000, 1))
    yt = np.sin(xt[:, 0]) + 0.3 * rng.normal(size=2000)
    coverage = {}
    for learn, noise in ((True, 0.1), (False, 0.9)):
        post = FBNN(widths=(20,), prior="fixed", noise_var=noise, learn_noise=learn,
                    num_chains=2, num_warmup=3000, num_samples=20, thinning=50).fit(
                        x, y, key=KEY, progress_bar=False)
        lo, hi = post.predict(xt).interval(0.95)
        coverage[learn] = np.mean((yt >= np.asarray(lo)) & (yt <= np.asarray(hi)))
        if learn:
            assert abs(np.sqrt(np.median(post.noise_variance)) - 0.3) < 0.03
    assert 0.93 <= coverage[True] <= 0.98, coverage
    assert coverage[False] > 0.99, coverage


def test_nuts_learns_the_noise_too():
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, (80, 1))
    y = x[:, 0] + 0.2 * rng.normal(size=80)
    post = FBNN(widths=(), prior="fixed", engine="nuts", learn_noise=True, num_chains=2,
                num_warmup=300, num_samples=200, thinning=1).fit(x, y, key=KEY,
                                                                 progress_bar=False)
    assert post.noise_var.shape == (2, 200) and post.learned_noise
    assert abs(np.sqrt(np.median(post.noise_variance)) - 0.2) < 0.05
