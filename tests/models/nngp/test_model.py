"""The NumPyro models: log densities against dense Gaussians, HMC on the scale against the
quadrature posterior (the ``"hmc"`` engine too)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

from probkit.distributions import BurrXII
from probkit.kernels import NNGP
from probkit.models import nngp

pytestmark = pytest.mark.usefixtures("x64")


def _assert_matches_quadrature(draws, sc):
    t, lw = sc.params
    exact = float(np.sum(np.exp(lw + t)))
    sd = float(np.sqrt(np.sum(np.exp(lw) * (np.exp(t) - exact) ** 2)))
    assert abs(draws.mean() - exact) < 0.1 * sd + 4 * sd / np.sqrt(400)


def test_hmc_on_scale_matches_quadrature(fitted):
    x, y, model = fitted
    prior = BurrXII(2.0, 1.0, 1.5)
    burr = eqx.tree_at(lambda m: m.scale_prior, model, prior)
    res = burr.sample_scale(key=jax.random.key(4), num_warmup=300, num_samples=1000,
                            num_chains=2)
    draws = res.posterior["s2"]
    assert draws.shape == (2, 1000)
    _assert_matches_quadrature(draws, burr.scale_posterior())


def test_hmc_engine_mixes_over_its_draws(fitted):
    """engine="hmc": the fitted model keeps the NUTS draws of s2 and its predictive is the
    equally weighted mixture over them."""
    x, y, _ = fitted
    family = nngp.Regressor(kernel=NNGP(2, "relu", 2.0, 0.1), scale_prior=BurrXII(2.0, 1.0, 1.5),
                            num_steps=30, refine_steps=20, engine="hmc", num_warmup=300,
                            num_samples=1000)
    model = family.fit(x, y, key=jax.random.key(4), progress_bar=False)
    assert model.scale_draws.shape == (2000,)
    pred = model.predict(x[:3])
    assert pred.kind == "quadrature" and pred.scale_params[0].shape == (2000,)
    np.testing.assert_allclose(pred.mean_s2(), np.mean(model.scale_draws), rtol=1e-12)
    _assert_matches_quadrature(np.asarray(model.scale_draws),
                               dataclasses.replace(model, scale_draws=None).scale_posterior())


def test_scale_mixture_model_is_a_numpyro_model(fitted):
    from numpyro.infer.util import log_density

    x, y, model = fitted
    sp = model.sp
    ld, _ = log_density(nngp.scale_mixture_model, (sp,),
                        {"scale_prior": dist.Gamma(2.0, 1.0), "noise": model.noise},
                        {"s2": 0.7})
    q, logdet = nngp.quad_stats(sp, model.noise)
    expect = dist.Gamma(2.0, 1.0).log_prob(0.7) + nngp.gaussian_log_marginal(q, logdet, len(y), 0.7)
    np.testing.assert_allclose(ld, expect, rtol=1e-10)
    ld2, _ = log_density(nngp.nngp_model, (jnp.asarray(x), jnp.asarray(y)),
                         {"depth": 2, "scale_prior": dist.Gamma(2.0, 1.0), "noise": 0.1,
                          "jitter": 0.0}, {"s2": 0.7})
    kk = NNGP(2, "relu", 2.0, 0.1)(jnp.asarray(x), jnp.asarray(x))
    ref = st.multivariate_normal(np.zeros(len(y)), 0.7 * (np.asarray(kk) + 0.1 * np.eye(len(y)))
                                 ).logpdf(y) + float(dist.Gamma(2.0, 1.0).log_prob(0.7))
    np.testing.assert_allclose(ld2, ref, rtol=1e-9)
