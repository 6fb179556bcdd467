"""PFN engine: the bar distribution against numerical integration, the attention structure
(exchangeable training set, independent queries), training against an exact conjugate posterior,
checkpoint resume, save/load, the shipped weights against the exact GP, and bad input."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import integrate, stats

import probkit
import probkit.models.gp
from probkit.inference.pfn import (
    PFN,
    bar,
    init,
    load,
    load_pretrained,
    predict_batch,
    train,
)
from probkit.inference.pfn.network import attention_mask
from probkit.inference.pfn.pretrained import prior as shipped_prior
from probkit.priors import GPPrior, NumPyroPrior

BLR_NOISE = 0.3


def _blr(x):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(w[0] + w[1] * x[:, 0], BLR_NOISE))


def _blr_exact(xt, yt, xq):
    phi = np.column_stack([np.ones(len(xt)), xt[:, 0]])
    phq = np.column_stack([np.ones(len(xq)), xq[:, 0]])
    cov = np.linalg.inv(np.eye(2) + phi.T @ phi / BLR_NOISE**2)
    m = cov @ phi.T @ yt / BLR_NOISE**2
    return phq @ m, np.einsum("ij,jk,ik->i", phq, cov, phq) + BLR_NOISE**2


@pytest.fixture(scope="module")
def tiny():
    prior = GPPrior("rbf", lengthscale=0.3, noise=0.05)
    return init(prior, key=jax.random.key(0), max_points=12, num_buckets=30, emsize=16,
                num_layers=1, num_heads=2)


@pytest.fixture(scope="module")
def borders():
    return bar.borders_from_samples(jax.random.normal(jax.random.key(0), (20_000,)), 40)


# ------------------------------------------------------------------ bar distribution


def test_borders_have_equal_prior_mass(borders):
    s = np.random.default_rng(1).normal(size=200_000)
    counts = np.histogram(s, np.asarray(borders))[0] / s.size
    np.testing.assert_allclose(counts[1:-1], 1 / 40, atol=0.004)


def test_bar_density_integrates_to_one_with_matching_moments(borders):
    """Integrate the density piecewise (midpoint rule inside each bucket, where it is constant
    or smooth; a long smooth grid for each half-normal tail) and compare moments."""
    logits = jax.random.normal(jax.random.key(2), (3, borders.shape[0] - 1)) * 2
    with jax.enable_x64(True):
        b = np.asarray(borders, np.float64)
        edges = np.concatenate([[b[1] - 60.0], b[1:-1], [b[-2] + 60.0]])
        pieces = [np.linspace(lo, hi, 4001 if i in (0, len(edges) - 2) else 21)
                  for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
        mids = np.concatenate([0.5 * (g[1:] + g[:-1]) for g in pieces])
        widths = np.concatenate([np.diff(g) for g in pieces])
        l64 = jnp.asarray(logits, jnp.float64)
        dens = np.asarray(jnp.exp(bar.logpdf(l64[:, None, :], jnp.asarray(b), mids)))
        np.testing.assert_allclose(dens @ widths, 1.0, atol=1e-6)
        m1 = dens @ (widths * mids)
        m2 = dens @ (widths * mids**2)
        np.testing.assert_allclose(bar.mean(l64, jnp.asarray(b)), m1, atol=1e-5)
        np.testing.assert_allclose(bar.variance(l64, jnp.asarray(b)), m2 - m1**2, rtol=1e-4)


def test_bar_tails_are_half_normal_with_quartile_scale(borders):
    logits = jnp.zeros(borders.shape[0] - 1)
    p_edge = 1 / logits.shape[0]
    s = float(borders[1] - borders[0]) / stats.norm.ppf(0.75)
    y = float(borders[1]) - np.array([0.1, 1.0, 3.0])
    ref = np.log(p_edge * stats.halfnorm.pdf(float(borders[1]) - y, scale=s))
    np.testing.assert_allclose(bar.logpdf(logits, borders, jnp.asarray(y)), ref, rtol=1e-5)
    # half the tail mass lies inside the original outer bucket
    np.testing.assert_allclose(bar.cdf(logits, borders, borders[0]), p_edge / 2, rtol=1e-5)


@pytest.mark.parametrize("best", [-40.0, -6.0, -1.3, 0.0, 0.4, 2.0, 2.5, 9.0])
def test_bar_log_expected_improvement_matches_quadrature(borders, best):
    """Exact log E[(best - y)+] against scipy quadrature of the density, from far below the
    support (left tail, where EI itself is ~1e-20 or less) through the buckets to past the
    right tail's attachment point; the gradient in ``best`` is the CDF at ``best``."""
    logits = jax.random.normal(jax.random.key(5), (borders.shape[0] - 1,))
    with jax.enable_x64(True):
        b = jnp.asarray(borders, jnp.float64)
        lg = jnp.asarray(logits, jnp.float64)
        got = float(bar.log_expected_improvement(lg, b, best))
        grad = float(jax.grad(lambda v: bar.log_expected_improvement(lg, b, v))(best))
        cdf = float(bar.cdf(lg, b, best))

    def integrand(y):
        return (best - y) * float(jnp.exp(bar.logpdf(lg, b, jnp.float64(y))))

    with jax.enable_x64(True):
        pts = sorted({*np.asarray(b).tolist(), best})
        pts = [p for p in pts if p < best] + [best]
        ref, _ = integrate.quad(integrand, min(best, float(b[0])) - 40.0, best, points=pts[:-1],
                                limit=400, epsabs=0, epsrel=1e-11)
    np.testing.assert_allclose(got, np.log(ref), rtol=1e-6)
    np.testing.assert_allclose(grad, cdf / np.exp(got), rtol=1e-6)


def test_quantile_inverts_cdf_and_samples_follow_it(borders):
    logits = jax.random.normal(jax.random.key(3), (borders.shape[0] - 1,))
    q = jnp.array([1e-4, 0.01, 0.2, 0.5, 0.77, 0.99, 0.9999])
    np.testing.assert_allclose(bar.cdf(logits, borders, bar.quantile(logits, borders, q)), q,
                               rtol=1e-4, atol=1e-6)
    draws = np.asarray(bar.sample(jax.random.key(4), logits, borders, 20_000))
    cdf = lambda v: np.asarray(bar.cdf(logits, borders, jnp.asarray(v)))  # noqa: E731
    assert stats.kstest(draws, cdf).pvalue > 0.01


# ------------------------------------------------------------------ network structure


def test_attention_mask_queries_see_training_set_and_themselves_only():
    m = np.asarray(attention_mask(jnp.asarray(2), 4, 3))
    assert m[:, :2].all() and not m[:, 2:4][~np.eye(7, dtype=bool)[:, 2:4]].any()
    assert np.array_equal(m[4:, 4:], np.eye(3, dtype=bool))


def test_predictions_are_exchangeable_in_training_set_and_independent_across_queries(tiny):
    rng = np.random.default_rng(5)
    xt, yt, xq = rng.uniform(size=(6, 1)), rng.normal(size=6), rng.uniform(size=(4, 1))
    base = tiny.predict(xt, yt, xq)
    perm = rng.permutation(6)
    np.testing.assert_allclose(tiny.predict(xt[perm], yt[perm], xq).logits, base.logits,
                               atol=1e-5)
    alone = tiny.predict(xt, yt, xq[:1])  # other queries do not change query 0
    np.testing.assert_allclose(alone.logits[0], base.logits[0], atol=1e-5)


def test_padding_contents_are_ignored(tiny):
    rng = np.random.default_rng(6)
    xt, yt, xq = rng.uniform(size=(3, 1)), rng.normal(size=3), rng.uniform(size=(2, 1))
    xp, yp, n, xqp, d = tiny.pad(xt, yt, xq)
    from probkit.inference.pfn.model import _predict

    a = _predict(tiny, xp, yp, n, xqp, d)
    b = _predict(tiny, xp.at[5:].set(9.0), yp.at[5:].set(-7.0), n, xqp, d)
    np.testing.assert_array_equal(a.logits, b.logits)


def test_batch_prediction_equals_single_predictions(tiny):
    data = GPPrior("rbf", lengthscale=0.3).sample(jax.random.key(7), 3, 9)
    pb = predict_batch(tiny, data.x[:, :5], data.y[:, :5], data.x[:, 5:])
    for i in range(3):
        single = tiny.predict(data.x[i, :5], data.y[i, :5], data.x[i, 5:])
        np.testing.assert_allclose(pb.logits[i], single.logits, atol=1e-5)
        np.testing.assert_allclose(pb.mean[i], single.mean, atol=1e-5)


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def blr_pfn():
    prior = NumPyroPrior(_blr, input_dim=1)
    pfn = init(prior, key=jax.random.key(8), max_points=25, num_buckets=60, emsize=32,
               num_layers=2, num_heads=4)
    res = train(pfn, prior, key=jax.random.key(9), num_steps=600, batch_size=64, learning_rate=2e-3,
                steps_per_dispatch=50, progress_bar=False)
    return prior, res


def test_training_learns_the_conjugate_posterior_predictive(blr_pfn):
    """A tiny version of the benchmark: a PFN trained ~30 s on the user's NumPyro BLR prior
    approaches the exact conjugate predictive (the full 10-minute run: benchmarks/pfn.py)."""
    prior, res = blr_pfn
    assert res.losses[-3:].mean() < res.losses[:3].mean() - 0.3
    n = 8
    data = prior.sample(jax.random.key(10), 300, n + 10)
    xt, yt, xq, yq = data.x[:, :n], data.y[:, :n], data.x[:, n:], data.y[:, n:]
    nll_pfn = -np.asarray(predict_batch(res.pfn, xt, yt, xq).log_prob(yq)).mean()
    xt, yt, xq, yq = (np.asarray(a, np.float64) for a in (xt, yt, xq, yq))
    nll_ex = np.mean([stats.norm.logpdf(yq[i], m, np.sqrt(v)).mean()
                      for i, (m, v) in enumerate(_blr_exact(xt[i], yt[i], xq[i])
                                                 for i in range(300))]) * -1
    nll_prior = -np.mean(stats.norm.logpdf(yq, 0, np.sqrt(1 + xq[..., 0] ** 2 + BLR_NOISE**2)))
    assert nll_pfn - nll_ex < 0.35, (nll_pfn, nll_ex)
    assert nll_pfn < nll_prior - 0.4, (nll_pfn, nll_prior)


_RESUME = dict(num_steps=40, batch_size=8, steps_per_dispatch=10, checkpoint_every=10,
               progress_bar=False)


def _resume_setup():
    prior = NumPyroPrior(_blr, input_dim=1)
    pfn = init(prior, key=jax.random.key(11), max_points=10, num_buckets=20, emsize=16,
               num_layers=1, num_heads=2, num_border_datasets=500)
    return prior, pfn


def test_resume_in_a_new_process_equals_uninterrupted_training(tmp_path):
    """A run on a user's NumPyro prior is killed (os._exit, no cleanup) in a subprocess right
    after its second checkpoint; the same call here resumes it, and the result equals an
    uninterrupted run bit for bit. A changed prior is refused by content."""
    ck = tmp_path / "ck.pk"
    code = textwrap.dedent(f"""
        import os, jax
        from probkit import _io
        from probkit.inference.pfn import train
        from tests.inference.test_pfn import _RESUME, _resume_setup
        real, calls = _io.save, []
        def save_then_die(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                os._exit(3)
        _io.save = save_then_die
        prior, pfn = _resume_setup()
        train(pfn, prior, key=jax.random.key(12), checkpoint={str(ck)!r}, **_RESUME)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).parents[2], timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    assert probkit.load(ck).step == 20
    prior, pfn = _resume_setup()
    resumed = train(pfn, prior, key=jax.random.key(12), checkpoint=ck, **_RESUME)
    full = train(pfn, prior, key=jax.random.key(12), **_RESUME)
    assert resumed.steps == 40
    for a, b in zip(jax.tree_util.tree_leaves(full.pfn), jax.tree_util.tree_leaves(resumed.pfn),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    other = GPPrior("rbf", lengthscale=0.3, noise=0.05)
    with pytest.raises(ValueError, match="checkpoint.*settings"):
        train(pfn, other, key=jax.random.key(12), checkpoint=ck, **_RESUME)


def test_data_parallel_training_matches_one_device():
    """The same training on two (forced host) devices, batch sharded, gives the same losses."""
    code = textwrap.dedent("""
        import jax
        from probkit.priors import GPPrior
        from probkit.inference.pfn import init, train
        prior = GPPrior("rbf", lengthscale=0.3, noise=0.05)
        pfn = init(prior, key=jax.random.key(0), max_points=10, num_buckets=20, emsize=16,
                   num_layers=1, num_heads=2)
        res = train(pfn, prior, key=jax.random.key(1), num_steps=10, batch_size=8,
                    steps_per_dispatch=5, progress_bar=False)
        print(len(jax.devices()), repr(res.losses.tolist()))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=pathlib.Path(__file__).parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    devices, losses = r.stdout.strip().split(" ", 1)
    assert int(devices) == 2
    prior = GPPrior("rbf", lengthscale=0.3, noise=0.05)
    pfn = init(prior, key=jax.random.key(0), max_points=10, num_buckets=20, emsize=16,
               num_layers=1, num_heads=2)
    one = train(pfn, prior, key=jax.random.key(1), num_steps=10, batch_size=8, steps_per_dispatch=5,
                progress_bar=False)
    np.testing.assert_allclose(eval(losses), one.losses, rtol=1e-4)


# ------------------------------------------------------------------ save / load / results


def test_save_load_is_bit_for_bit_and_rejects_bad_files(tiny, tmp_path):
    path = tiny.save(tmp_path / "m.pfn", note="test")
    loaded = load(path)
    assert isinstance(loaded, PFN) and loaded.config == tiny.config
    assert probkit.read_header(path)["metadata"]["note"] == "test"
    x = jnp.linspace(0, 1, 5)[:, None]
    np.testing.assert_array_equal(loaded.predict(x, x[:, 0], x).logits,
                                  tiny.predict(x, x[:, 0], x).logits)
    raw = path.read_bytes()
    (tmp_path / "cut.pfn").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.pfn.*truncated"):
        load(tmp_path / "cut.pfn")
    (tmp_path / "junk.pfn").write_bytes(b"not a model\n123")
    with pytest.raises(ValueError, match="junk.pfn.*not a probkit file"):
        load(tmp_path / "junk.pfn")
    gp = probkit.models.gp.GP().fit(np.zeros((2, 1)), np.zeros(2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="other.pk.*expected PFN"):
        load(gp.save(tmp_path / "other.pk"))
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pfn")


# ------------------------------------------------------------------ shipped weights


def test_shipped_gp_pfn_is_close_to_the_exact_gp():
    pfn, prior = load_pretrained("gp1d-rbf"), shipped_prior("gp1d-rbf")
    n = 20
    data = prior.sample(jax.random.key(13), 200, n + 10)
    xt, yt, xq, yq = data.x[:, :n], data.y[:, :n], data.x[:, n:], data.y[:, n:]
    nll_pfn = -float(predict_batch(pfn, xt, yt, xq).log_prob(yq).mean())
    mean, var = jax.vmap(prior.predictive)(xt, yt, xq)
    nll_gp = -float(jax.scipy.stats.norm.logpdf(yq, mean, jnp.sqrt(var)).mean())
    assert nll_pfn - nll_gp < 0.15, (nll_pfn, nll_gp)


def test_shipped_bo_pfn_serves_every_dimension_up_to_six():
    pfn = load_pretrained("gp-bo")
    rng = np.random.default_rng(14)
    for d in (1, 3, 6):
        x = rng.uniform(size=(12, d))
        y = np.sin(3 * x).sum(1)
        pred = pfn.predict(x, y, x[:2])
        assert np.all(np.abs(pred.mean - y[:2]) < 3 * np.sqrt(pred.variance) + 0.2)
    with pytest.raises(ValueError, match="x_test: input dimension 7"):
        pfn.predict(rng.uniform(size=(3, 7)), np.zeros(3), rng.uniform(size=(1, 7)))


def test_load_pretrained_rejects_unknown_name():
    with pytest.raises(ValueError, match="name"):
        load_pretrained("gp9d")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("case,name", [
    ("too_many_points", "x_train"),
    ("too_many_dims", "x_test"),
    ("nan_x", "x_train"),
    ("nan_y", "y_train"),
    ("length", "x_train"),
    ("dim_mismatch", "x_train"),
    ("outside_box", "x_test: inputs in .*trained on"),
])
def test_bad_input_raises_naming_argument(tiny, case, name):
    xt, yt, xq = np.zeros((4, 1)), np.zeros(4), np.zeros((2, 1))
    if case == "too_many_points":
        xt, yt = np.zeros((20, 1)), np.zeros(20)
    elif case == "too_many_dims":
        xt, xq = np.zeros((4, 2)), np.zeros((2, 2))
    elif case == "nan_x":
        xt[1] = np.nan
    elif case == "nan_y":
        yt[0] = np.nan
    elif case == "length":
        yt = np.zeros(3)
    elif case == "dim_mismatch":
        xt = np.zeros((4, 2))
        tiny = load_pretrained("gp-bo")
    elif case == "outside_box":
        xq = np.array([[0.5], [1.7]])
    with pytest.raises(ValueError, match=name):
        tiny.predict(xt, yt, xq)


def test_train_rejects_bad_arguments(tiny):
    prior = GPPrior("rbf")
    with pytest.raises(ValueError, match="num_steps"):
        train(tiny, prior, key=jax.random.key(0))
    with pytest.raises(ValueError, match="prior"):
        train(tiny, GPPrior("rbf", input_dim=3), key=jax.random.key(0), num_steps=2)
    with pytest.raises(ValueError, match="num_buckets"):
        bar.borders_from_samples(np.arange(100.0), 2)
