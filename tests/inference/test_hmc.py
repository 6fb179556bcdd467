"""BlackJAX NUTS engine: exact posteriors, reproducibility, devices, NumPyro integration, errors."""

import os
import subprocess
import sys
import textwrap

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, Predictive

from probkit.demos.hmc import SIGMA, Y, eight_schools
from probkit.inference import hmc
from probkit.result import group_names

KW = {"num_warmup": 500, "num_samples": 1000, "num_chains": 4, "progress_bar": False}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def normal_known_sigma(y=None):
    mu = numpyro.sample("mu", dist.Normal(1.0, 2.0))
    numpyro.sample("y", dist.Normal(mu, 1.5), obs=y)


eight_schools_noncentered = eight_schools
EIGHT_Y, EIGHT_SIGMA = Y, SIGMA


def test_conjugate_normal_within_4_mcse():
    y = jnp.asarray(np.random.default_rng(1).normal(0.7, 1.5, size=20))
    res = hmc.run(normal_known_sigma, y=y, key=jax.random.key(0), **KW)
    prec = 1 / 2.0**2 + y.size / 1.5**2
    post_mean = (1.0 / 2.0**2 + float(y.sum()) / 1.5**2) / prec
    post_sd = prec**-0.5
    idata = res.to_arviz()
    mcse_mean = float(az.mcse(idata, var_names=["mu"])["mu"])
    mcse_sd = float(az.mcse(idata, var_names=["mu"], method="sd")["mu"])
    draws = res.posterior["mu"]
    assert abs(draws.mean() - post_mean) < 4 * mcse_mean
    assert abs(draws.std() - post_sd) < 4 * mcse_sd
    # every NUTS transition costs at least one gradient, warm-up included
    assert res.attrs["warmup_n_grad"] >= KW["num_warmup"] * KW["num_chains"]


def test_linear_regression_recovers_coefficients():
    rng = np.random.default_rng(2)
    x = rng.normal(size=1000)
    y = 3.0 * x + rng.normal(size=1000)

    def model(x, y=None):
        a = numpyro.sample("a", dist.Normal(0.0, 10.0))
        b = numpyro.sample("b", dist.Normal(0.0, 10.0))
        s = numpyro.sample("sigma", dist.HalfNormal(5.0))
        numpyro.sample("y", dist.Normal(a + b * x, s), obs=y)

    res = hmc.run(model, jnp.asarray(x), y=jnp.asarray(y), key=jax.random.key(3), **KW)
    assert abs(res.posterior["b"].mean() - 3.0) < 0.1
    assert abs(res.posterior["sigma"].mean() - 1.0) < 0.1
    assert res.log_likelihood["y"].shape == (4, 1000, 1000)


def test_eight_schools_noncentered_no_divergences():
    # At target_accept=0.8 both this engine and numpyro.infer.NUTS leave 0-3 divergences in
    # 4000 draws here (measured over 4 seeds); 0.9 removes them, as Stan's manual advises.
    res = hmc.run(eight_schools_noncentered, EIGHT_SIGMA, y=EIGHT_Y, key=jax.random.key(4),
                  target_accept=0.9, **KW)
    assert int(res.sample_stats["diverging"].sum()) == 0
    rhat = az.rhat(res.to_arviz())
    assert max(float(rhat[v].max()) for v in ("mu", "tau", "eta")) <= 1.01
    assert res.posterior["theta"].shape == (4, 1000, 8)  # deterministic site kept
    for stat in ("lp", "acceptance_rate", "step_size", "tree_depth", "n_steps", "energy"):
        assert res.sample_stats[stat].shape == (4, 1000)


def test_same_key_same_draws_and_different_key_differs():
    kw = dict(KW, num_warmup=100, num_samples=100)
    a = hmc.run(eight_schools_noncentered, EIGHT_SIGMA, y=EIGHT_Y, key=jax.random.key(5), **kw)
    b = hmc.run(eight_schools_noncentered, EIGHT_SIGMA, y=EIGHT_Y, key=jax.random.key(5), **kw)
    c = hmc.run(eight_schools_noncentered, EIGHT_SIGMA, y=EIGHT_Y, key=jax.random.key(6), **kw)
    np.testing.assert_array_equal(a.posterior["mu"], b.posterior["mu"])
    assert not np.allclose(a.posterior["mu"], c.posterior["mu"])


def test_raw_uint32_key_accepted_and_dense_mass():
    y = jnp.asarray(np.random.default_rng(7).normal(size=10))
    res = hmc.run(normal_known_sigma, y=y, key=jax.random.PRNGKey(0), dense_mass=True,
                  **dict(KW, num_samples=200, num_warmup=200))
    assert np.isfinite(res.posterior["mu"]).all()


def test_refit_same_shapes_reuses_compiled_program():
    y = jnp.asarray(np.random.default_rng(8).normal(size=10))
    kw = dict(KW, num_warmup=50, num_samples=50)
    hmc.run(normal_known_sigma, y=y, key=jax.random.key(0), **kw)
    before = len(hmc._PROGRAMS)
    res = hmc.run(normal_known_sigma, y=y + 1.0, key=jax.random.key(1), **kw)
    assert len(hmc._PROGRAMS) == before
    assert res.attrs["seconds"] < 2.0


def test_mcmc_kernel_in_numpyro_mcmc_predictive_and_arviz():
    y = jnp.asarray(np.random.default_rng(10).normal(0.7, 1.5, size=20))
    kernel = hmc.BlackJAXNUTS(normal_known_sigma)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=1000, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(11), y=y, extra_fields=("diverging", "accept_prob"))
    mu = mcmc.get_samples()["mu"]
    prec = 1 / 4.0 + y.size / 1.5**2
    post_mean = (1.0 / 4.0 + float(y.sum()) / 1.5**2) / prec
    assert abs(float(mu.mean()) - post_mean) < 5 * prec**-0.5 / np.sqrt(300)
    assert abs(float(mu.std()) - prec**-0.5) < 0.1 * prec**-0.5
    pred = Predictive(normal_known_sigma, mcmc.get_samples())(jax.random.key(12))
    assert pred["y"].shape == (2000,)
    idata = az.from_numpyro(mcmc, log_likelihood=True)  # the default differs: 0.x on, 1.x off
    assert {"posterior", "log_likelihood"} <= set(group_names(idata))


def test_parallel_sequential_and_vectorized_run_the_same_chains():
    # Chain c gets the same key and initial point whichever way the chains are laid out
    # (sharded over two CPU devices, one after another, or vmapped), so the first transitions
    # agree up to float32 rounding; later ones drift apart, as any chaotic trajectory does
    # under different reductions. Without warm-up the step size is fixed, so the first five
    # draws are compared.
    code = textwrap.dedent("""
        import jax, numpy as np
        from probkit.inference import hmc
        import tests.inference.test_hmc as t
        kw = dict(num_warmup=0, num_samples=5, num_chains=4, progress_bar=False)
        runs = {m: hmc.run(t.eight_schools_noncentered, t.EIGHT_SIGMA, y=t.EIGHT_Y,
                           key=jax.random.key(0), chain_method=m, **kw)
                for m in ("parallel", "sequential", "vectorized", "auto")}
        print(*(r.attrs["num_devices"] for r in runs.values()))
        print(runs["auto"].attrs["chain_method"])
        mu = {m: r.posterior["mu"] for m, r in runs.items()}
        print(float(np.abs(mu["parallel"] - mu["vectorized"]).max()),
              float(np.abs(mu["sequential"] - mu["vectorized"]).max()),
              float(np.abs(mu["auto"] - mu["sequential"]).max()),
              float(np.abs(np.diff(mu["vectorized"], axis=1)).max()))
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT)
    devices, auto, diffs = out.stdout.strip().splitlines()[-3:]
    assert devices.split() == ["2", "1", "1", "1"]
    assert auto == "sequential"  # on a CPU
    parallel, sequential, same, moved = map(float, diffs.split())
    assert parallel < 1e-4 and sequential < 1e-4 and same == 0.0
    assert moved > 0.1  # the chains do move, so the agreement is not trivial


# ------------------------------------------------------------------------------ bad input


def test_discrete_latent_site_named():
    def model(y=None):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    with pytest.raises(ValueError, match="'z'.*discrete.*enumerat"):
        hmc.run(model, y=jnp.ones(3), key=jax.random.key(0), progress_bar=False)


def test_non_finite_initial_density_names_site():
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Uniform(mu - 1.0, mu + 1.0), obs=y)
        numpyro.sample("w", dist.Exponential(1.0), obs=-1.0)

    # NumPyro itself warns about the out-of-support observation; probkit names the site.
    with (pytest.warns(UserWarning, match="Out-of-support"),
          pytest.raises(ValueError, match="initial log density.*'w'")):
        hmc.run(model, y=jnp.zeros(3), key=jax.random.key(0), progress_bar=False)


@pytest.mark.parametrize("kw, name", [({"num_samples": 0}, "num_samples"),
                                      ({"num_chains": 0}, "num_chains"),
                                      ({"num_warmup": -1}, "num_warmup"),
                                      ({"chain_method": "threads"}, "chain_method"),
                                      ({"target_accept": 1.5}, "target_accept")])
def test_bad_settings(kw, name):
    with pytest.raises(ValueError, match=name):
        hmc.run(normal_known_sigma, y=jnp.ones(3), key=jax.random.key(0), progress_bar=False,
                **kw)


@pytest.mark.parametrize("key", [0, np.arange(3), "seed"])
def test_key_must_be_prng_key(key):
    with pytest.raises(ValueError, match="key"):
        hmc.run(normal_known_sigma, y=jnp.ones(3), key=key, progress_bar=False)


def test_nan_in_observed_data_names_site():
    y = jnp.array([0.0, jnp.nan, 1.0])
    with pytest.raises(ValueError, match="observed site 'y'.*NaN"):
        hmc.run(normal_known_sigma, y=y, key=jax.random.key(0), progress_bar=False)


def test_empty_observed_data_names_site():
    with pytest.raises(ValueError, match="observed site 'y'.*empty"):
        hmc.run(normal_known_sigma, y=jnp.zeros(0), key=jax.random.key(0), progress_bar=False)
