"""The regression family: predictive against the quadrature path, scipy's t and a dense GP,
samples and ArviZ, padding to a capacity, relevance determination, save/load and bad inputs."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

import probkit
from probkit.distributions import BurrXII
from probkit.kernels import NNGP
from probkit.models import nngp
from probkit.result import group_names
from tests.models.nngp.conftest import FAMILY, ig_as_transformed

pytestmark = pytest.mark.usefixtures("x64")


def test_t_predictive_equals_quadrature_path(fitted):
    x, y, model = fitted
    ig_quad = ig_as_transformed(2.0, model.scale_prior.rate)
    quad_model = eqx.tree_at(lambda m: m.scale_prior, model, ig_quad)
    xt = np.linspace(-2.5, 2.5, 9)[:, None] * np.array([[1.0, -0.5]])
    yt = np.sin(2 * xt[:, 0]) + 0.5
    probs = (0.05, 0.5, 0.95)
    p_t, p_q = model.predict(xt), quad_model.predict(xt)
    assert model.posterior(xt).kind == "inverse_gamma"
    assert quad_model.posterior(xt).kind == "quadrature"
    np.testing.assert_allclose(p_q.log_prob(yt), p_t.log_prob(yt), rtol=0, atol=1e-6)
    np.testing.assert_allclose(p_q.variance, p_t.variance, rtol=1e-6)
    np.testing.assert_allclose(p_q.quantile(probs), p_t.quantile(probs), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(quad_model.log_marginal_likelihood(),
                               model.log_marginal_likelihood(), rtol=1e-9)
    # the quadrature engine on the inverse gamma itself: the same numbers
    engine_q = dataclasses.replace(model, closed_form=False)
    assert engine_q.predict(xt).kind == "quadrature"
    np.testing.assert_allclose(engine_q.predict(xt).log_prob(yt), p_t.log_prob(yt), rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(engine_q.log_marginal_likelihood(),
                               model.log_marginal_likelihood(), rtol=1e-9)
    # the t quantiles are those of scipy's t with 2a + n degrees of freedom
    a2, b2 = p_t.scale_params
    ref = st.t(df=2 * a2, loc=p_t.mean, scale=np.sqrt(b2 / a2 * p_t.unit_var) * model.y_unit)
    np.testing.assert_allclose(p_t.quantile(probs), ref.ppf(np.array([[0.05], [0.5], [0.95]])),
                               rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(p_t.cdf(yt), ref.cdf(yt), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(2 * a2, 2 * 2.0 + x.shape[0])


def test_predictive_moments_equal_dense_gp(fitted):
    x, y, model = fitted
    gauss = eqx.tree_at(lambda m: (m.scale_prior, m.scale), model, (None, jnp.float64(0.8)),
                        is_leaf=lambda v: v is None)
    xt = np.array([[0.1, 0.2], [-1.0, 1.5], [2.0, -0.3]])
    post = gauss.posterior(xt)
    xs = (x - np.asarray(model.x_loc)) / np.asarray(model.x_unit)
    xts = (xt - np.asarray(model.x_loc)) / np.asarray(model.x_unit)
    k = model.kernel
    knn = np.asarray(k(jnp.asarray(xs), jnp.asarray(xs))) + float(model.noise) * np.eye(len(xs))
    ksn = np.asarray(k(jnp.asarray(xts), jnp.asarray(xs)))
    kss = np.asarray(k(jnp.asarray(xts), jnp.asarray(xts)))
    ys = (y - float(model.y_loc)) / float(model.y_unit)
    mean = ksn @ np.linalg.solve(knn, ys)
    cov = kss - ksn @ np.linalg.solve(knn, ksn.T)
    np.testing.assert_allclose(post.mean, float(model.y_loc) + float(model.y_unit) * mean,
                               rtol=1e-8)
    np.testing.assert_allclose(post.variance, 0.8 * float(model.y_unit) ** 2 * np.diag(cov),
                               rtol=1e-6)
    np.testing.assert_allclose(post.unit_cov, cov, atol=1e-9)


def test_fit_predict_samples_and_arviz(fitted):
    x, y, model = fitted
    assert np.isfinite(model.log_marginal_likelihood())
    assert model.history[-1] <= model.history[0] + 1e-12
    xt = np.linspace(-2, 2, 7)[:, None] * np.ones((1, 2))
    pred = model.predict(xt)
    samples = np.asarray(pred.sample(jax.random.key(1), (4000,)))
    quantiles = np.asarray(pred.quantile((0.1, 0.9)))
    assert samples.shape == (4000, 7) and quantiles.shape == (2, 7)
    assert np.all(quantiles[0] < pred.mean) and np.all(pred.mean < quantiles[1])
    np.testing.assert_allclose(samples.mean(0), pred.mean,
                               atol=5 * np.sqrt(pred.variance.max() / 4000))
    np.testing.assert_allclose(samples.var(0), pred.variance, rtol=0.15)
    # BO Surrogate protocol: posterior(x) with .mean, .variance, .sample(key, n) joint draws
    post = model.posterior(xt)
    draws = post.sample(jax.random.key(2), 3)
    assert post.mean.shape == (7,) and post.variance.shape == (7,) and draws.shape == (3, 7)
    res = model.to_result(xt, np.zeros(7), key=jax.random.key(3), num_samples=50, num_chains=1)
    idata = res.to_arviz()
    names = set(group_names(idata))
    assert "posterior_predictive" in names and "log_likelihood" in names
    assert res.predictions["y"].shape == (1, 50, 7)
    assert res.posterior["s2"].shape == (1, 50) and res.posterior["f"].shape == (1, 50, len(y))


def test_log_likelihood_scales_the_noise_with_the_draw(fitted):
    """Given a draw (s2, f), y_i ~ N(f_i, s2 * noise) in standardised units."""
    x, y, model = fitted
    draws = {"s2": np.array([0.5, 2.0]), "f": np.stack([y, y + 0.1])}
    ll = model._log_likelihood(draws, x, y)
    sd = np.sqrt(draws["s2"][:, None] * float(model.noise)) * float(model.y_unit)
    np.testing.assert_allclose(ll, st.norm(draws["f"], sd).logpdf(y), rtol=1e-12)


def test_save_load_is_bit_for_bit_for_every_engine(fitted, tmp_path):
    x, y, model = fitted
    burr = dataclasses.replace(model, scale_prior=BurrXII(2.0, 1.0, 1.5))
    for i, m in enumerate((model, burr, dataclasses.replace(model, closed_form=False))):
        back = probkit.load(m.save(tmp_path / f"m{i}.pk"))
        a, b = m.predict(x[:4]), back.predict(x[:4])
        assert a.kind == b.kind
        np.testing.assert_array_equal(a.log_prob(y[:4]), b.log_prob(y[:4]))
        np.testing.assert_array_equal(a.icdf(0.9), b.icdf(0.9))


def _assert_same_model(padded, plain, xt, yt):
    assert padded.n == plain.n and padded.capacity > plain.n
    pp, pu = padded.posterior(xt), plain.posterior(xt)
    assert pp.kind == pu.kind
    np.testing.assert_allclose(pp.mean, pu.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(pp.variance, pu.variance, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(pp.unit_cov, pu.unit_cov, rtol=1e-8, atol=1e-12)
    for a, b in zip(pp.scale_params, pu.scale_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(pp.log_prob(yt), pu.log_prob(yt), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(padded.log_marginal_likelihood(), plain.log_marginal_likelihood(),
                               rtol=1e-10)
    q, logdet, n = nngp.masked_quad_stats(padded.sp, padded.noise, padded.mask)
    q0, logdet0 = nngp.quad_stats(plain.sp, plain.noise)
    np.testing.assert_allclose([q, logdet, n], [q0, logdet0, plain.n], rtol=1e-9)


def test_padding_to_capacity_equals_unpadded(fitted):
    """Masked padding (one compile for every n <= capacity) changes no result: the fitted
    Student-t model (same Adam path) and a quadrature scale prior with fixed hyperparameters."""
    x, y, plain = fitted
    xt = np.array([[0.1, 0.2], [-1.0, 1.5], [2.0, -0.3], [2.5, 2.5]])
    yt = np.array([0.2, -1.0, 0.5, 3.0])
    padded = dataclasses.replace(FAMILY, capacity=40).fit(x, y, key=jax.random.key(0),
                                                         progress_bar=False)
    assert padded.capacity == 40 and padded.x_train.shape == (40, 2) and padded.n == len(y)
    np.testing.assert_allclose(padded.history, plain.history, rtol=1e-8)
    np.testing.assert_allclose(padded.noise, plain.noise, rtol=1e-8)
    np.testing.assert_allclose(padded.scale_prior.rate, plain.scale_prior.rate, rtol=1e-8)
    _assert_same_model(padded, plain, xt, yt)
    # unpad() (used by sample_scale): the real rows and their own eigendecomposition
    un = padded.unpad()
    assert un.mask is None and un.capacity == len(y) and plain.unpad() is plain
    np.testing.assert_allclose(un.sp.evals, plain.sp.evals, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(un.y_train, plain.y_train, rtol=1e-12)
    # quadrature prior (Gamma), fixed kernel and noise
    kw = dict(kernel=NNGP(2, "relu", 1.5, 0.2), scale_prior=dist.Gamma(2.0, 2.0), noise=0.05,
              fit_hyperparameters=False, engine="quadrature")
    plain_q = nngp.Regressor(**kw).fit(x, y, key=jax.random.key(0), progress_bar=False)
    padded_q = nngp.Regressor(capacity=40, **kw).fit(x, y, key=jax.random.key(0),
                                                     progress_bar=False)
    assert padded_q.posterior(xt).kind == "quadrature"
    _assert_same_model(padded_q, plain_q, xt, yt)


def test_fit_learns_input_relevance():
    """Per-input first-layer variances (ARD) are fitted by the marginal likelihood: the input
    the function depends on gets a far larger variance than the irrelevant one."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, size=(60, 2))
    y = np.sin(2 * x[:, 0]) + 0.05 * rng.normal(size=60)
    m = nngp.Regressor(depth=2, ard=True, normalize=True, num_steps=150, refine_steps=20).fit(
        x, y, key=jax.random.key(0), progress_bar=False)
    v = np.asarray(m.kernel.input_weight_variance)
    assert v.shape == (2,) and v[0] > 10 * v[1], v


@pytest.mark.parametrize("kwargs,name", [
    (dict(x=np.zeros((5, 1)), y=np.zeros(4)), "x, y"),
    (dict(x=np.array([[0.0], [np.nan]]), y=np.zeros(2)), "x"),
    (dict(x=np.zeros((2, 1)), y=np.array([0.0, np.inf])), "y"),
    (dict(noise=0.0), "noise"),
    (dict(noise=-1.0), "noise"),
    (dict(scale_prior=dist.Normal(0.0, 1.0)), "scale_prior"),
    (dict(scale_prior=dist.Bernoulli(0.5)), "scale_prior"),
    (dict(scale_prior=dist.Gamma(-1.0, 2.0, validate_args=False)), "scale_prior"),
    (dict(scale_prior=dist.Gamma(2.0, 0.0, validate_args=False)), "scale_prior"),
    (dict(scale_prior=BurrXII(2.0, -1.0, validate_args=False)), "scale_prior"),
    (dict(scale_prior="student"), "scale_prior"),
    (dict(fit_prior=("nope",)), "fit_prior"),
    (dict(kernel="rbf"), "kernel"),
    (dict(kernel=NNGP(2), depth=2), "kernel"),
    (dict(capacity=2), "capacity"),
    (dict(capacity=0), "capacity"),
    (dict(capacity="big"), "capacity"),
    (dict(scale_prior=dist.Gamma(2.0, 2.0)), "engine"),
    (dict(scale_prior=None, engine="quadrature"), "engine"),
    (dict(engine="laplace"), "engine"),
    (dict(activation="tanh"), "activation"),
])
def test_fit_rejects_bad_input(kwargs, name):
    args = dict(x=np.zeros((3, 1)) + np.arange(3)[:, None], y=np.arange(3.0))
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(ValueError, match=f"^{name}"):
        nngp.Regressor(**args).fit(x, y, key=jax.random.key(0), progress_bar=False)


def test_other_entry_points_reject_bad_input(fitted):
    x, y, model = fitted
    with pytest.raises(ValueError, match="^x"):
        model.predict(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="^x"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="^y"):
        model.to_arviz(np.zeros((2, 2)), np.zeros(3), key=jax.random.key(0), num_samples=8)
    with pytest.raises(ValueError, match="^key"):
        FAMILY.fit(x, y, key=0)
