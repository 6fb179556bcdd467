"""The pure layer: closed forms vs scipy, quadrature vs closed forms and importance sampling,
the padded Gram matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from scipy.special import gammaln

from probkit.distributions import BurrXII
from probkit.kernels import NNGP
from probkit.models import nngp
from probkit.models.nngp.spectral import _chol_stats
from tests.models.nngp.conftest import ig_as_transformed, problem

pytestmark = pytest.mark.usefixtures("x64")


def test_student_t_log_marginal_matches_scipy():
    x, y = problem(30, seed=1)
    a, b, eps = 2.5, 1.7, 0.05
    k = NNGP(3, "erf", 1.5, 0.2)(jnp.asarray(x), jnp.asarray(x))
    amat = np.asarray(k) + eps * np.eye(30)
    ref = st.multivariate_t(loc=np.zeros(30), shape=(b / a) * amat, df=2 * a).logpdf(y)
    q, logdet = nngp.quad_stats(nngp.spectral(k, jnp.asarray(y)), eps)
    got = nngp.student_t_log_marginal(q, logdet, 30, a, b)
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    q2, logdet2 = _chol_stats(k, jnp.asarray(y), eps)
    np.testing.assert_allclose(nngp.log_marginal(q2, logdet2, 30, dist.InverseGamma(a, b)),
                               ref, rtol=1e-8)
    gauss = st.multivariate_normal(np.zeros(30), 0.7 * amat).logpdf(y)
    np.testing.assert_allclose(nngp.log_marginal(q, logdet, 30, None, 0.7), gauss, rtol=1e-10)


def test_quadrature_evidence_equals_inverse_gamma_closed_form():
    for n, q in [(1, 0.3), (5, 2.0), (40, 55.0), (500, 480.0)]:
        a, b = 2.0, 3.0
        quad = nngp.scale_quadrature(q, n, ig_as_transformed(a, b))
        # int IG(s|a,b) s^(-n/2) exp(-q/(2s)) ds = b^a Gamma(a+n/2) / (Gamma(a) (b+q/2)^(a+n/2))
        exact = (a * np.log(b) - gammaln(a) + gammaln(a + n / 2) - (a + n / 2) * np.log(b + q / 2))
        np.testing.assert_allclose(quad.log_integral, exact, rtol=0, atol=1e-9)
        mean_s2 = np.sum(np.exp(quad.log_weights + quad.log_s2))
        np.testing.assert_allclose(mean_s2, (b + q / 2) / (a + n / 2 - 1), rtol=1e-6)
        # the quadrature switch of the inverse gamma itself gives the same evidence
        ig = dist.InverseGamma(a, b)
        np.testing.assert_allclose(
            nngp.log_marginal(q, 0.0, n, ig, closed_form=False),
            nngp.log_marginal(q, 0.0, n, ig), rtol=0, atol=1e-9)


def test_burr_quadrature_matches_importance_sampling():
    n, q = 12, 7.0
    prior = BurrXII(2.0, 1.5, 1.3)
    quad = nngp.scale_quadrature(q, n, prior)
    s2 = np.asarray(prior.sample(jax.random.key(7), (1_000_000,)))
    logw = -0.5 * n * np.log(s2) - 0.5 * q / s2
    w = np.exp(logw - logw.max())
    num = len(w)
    # evidence ln E_prior[w] with a delta-method standard error
    ev = np.log(w.mean()) + logw.max()
    ev_se = w.std() / w.mean() / np.sqrt(num)
    assert abs(float(quad.log_integral) - ev) < 4 * ev_se, (float(quad.log_integral), ev, ev_se)
    # self-normalised posterior mean of s2 and predictive density at a test residual
    wn = w / w.sum()
    nodes, wq = np.exp(np.asarray(quad.log_s2)), np.exp(np.asarray(quad.log_weights))
    for fn in (lambda s: s, lambda s: st.norm.pdf(0.9, scale=np.sqrt(s * 0.4))):
        g = fn(s2)
        est = np.sum(wn * g)
        se = np.sqrt(np.sum(wn**2 * (g - est) ** 2))
        qv = float(np.sum(wq * fn(nodes)))
        assert abs(qv - est) < 4 * se, (qv, est, se)


def test_padded_mask_gram_log_determinant():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(17, 17))
    k = a @ a.T / 17
    mask = np.arange(17) < 12
    km = np.asarray(nngp.mask_gram(jnp.asarray(k), jnp.asarray(mask)))
    np.testing.assert_array_equal(km[:12, :12], k[:12, :12])
    np.testing.assert_array_equal(km[12:, :12], 0.0)
    np.testing.assert_array_equal(km[12:, 12:], np.eye(5))
    eps = 0.3
    ld = np.linalg.slogdet(km + eps * np.eye(17))[1]
    np.testing.assert_allclose(ld, np.linalg.slogdet(k[:12, :12] + eps * np.eye(12))[1]
                               + 5 * np.log1p(eps), rtol=1e-12)
