"""BurrXII against scipy.stats.burr12."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from numpyro.infer import MCMC, NUTS

from probkit.distributions import BurrXII


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("c,d,scale", [(2.0, 3.0, 1.0), (0.7, 1.5, 2.5), (5.0, 0.4, 0.3)])
def test_log_prob_cdf_icdf_match_scipy(c, d, scale):
    ref = st.burr12(c, d, scale=scale)
    x = np.geomspace(1e-3, 50.0, 37)
    b = BurrXII(c, d, scale)
    np.testing.assert_allclose(b.log_prob(jnp.asarray(x)), ref.logpdf(x), rtol=1e-10)
    np.testing.assert_allclose(b.cdf(jnp.asarray(x)), ref.cdf(x), rtol=1e-10, atol=1e-300)
    q = np.linspace(0.01, 0.99, 21)
    np.testing.assert_allclose(b.icdf(jnp.asarray(q)), ref.ppf(q), rtol=1e-10)


def test_moments_match_scipy():
    b = BurrXII(2.0, 3.0, 1.5)
    ref = st.burr12(2.0, 3.0, scale=1.5)
    np.testing.assert_allclose(b.mean, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(b.variance, ref.var(), rtol=1e-10)
    assert np.isinf(BurrXII(1.0, 0.8).mean)  # c d <= 1: no mean


def test_samples_follow_the_law():
    b = BurrXII(jnp.array([2.0, 0.7]), 3.0, jnp.array([1.0, 2.0]))
    x = np.asarray(b.sample(jax.random.key(0), (20000,)))
    assert x.shape == (20000, 2) and b.batch_shape == (2,)
    for j, (c, s) in enumerate([(2.0, 1.0), (0.7, 2.0)]):
        assert st.kstest(x[:, j], st.burr12(c, 3.0, scale=s).cdf).pvalue > 1e-3


def test_validation_and_numpyro_model():
    with pytest.raises(ValueError):
        BurrXII(-1.0, 2.0, validate_args=True)
    assert BurrXII(2.0, 3.0).support is dist.constraints.positive

    def model():
        numpyro.sample("s", BurrXII(2.0, 3.0))

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.key(1))
    s = np.asarray(mcmc.get_samples()["s"])
    assert abs(np.median(s) - st.burr12(2.0, 3.0).median()) < 0.1
