"""Stable special functions: log h (scaled expected improvement) against closed forms,
quadrature and its asymptotic expansion; log1mexp."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from probkit.special import log1mexp, log_h


def _log_h(z):
    with jax.enable_x64(True):
        return np.asarray(log_h(jnp.asarray(z, dtype=jnp.float64)))


def _log_h_quad(z):
    """Independent reference: h(z) = int_0^inf Phi(z - s) ds, scaled by Phi(z)."""
    lz = special.log_ndtr(z)
    val, _ = integrate.quad(lambda s: np.exp(special.log_ndtr(z - s) - lz), 0, np.inf,
                            epsabs=0, epsrel=1e-12, limit=200)
    return lz + math.log(val)


def test_log_h_equals_log_of_closed_form_where_representable():
    z = np.linspace(-20, 8, 281)
    ref = np.log(stats.norm.pdf(z) + z * stats.norm.cdf(z))
    np.testing.assert_allclose(_log_h(z), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("z", [-30.0, -40.0, -100.0, -1e3])
def test_log_h_matches_quadrature_in_the_tail(z):
    np.testing.assert_allclose(_log_h(z), _log_h_quad(z), rtol=1e-9)


def test_finite_where_ei_underflows():
    z = np.array([-40.0, -1e3, -1e5, -1e8, -1e150])
    with np.errstate(all="ignore"):
        naive = stats.norm.pdf(z) + z * stats.norm.cdf(z)
    assert np.all(naive == 0.0)  # EI itself underflows
    lh = _log_h(z)
    assert np.all(np.isfinite(lh))
    assert np.all(np.diff(lh) < 0)  # still ordered: log-EI keeps ranking candidates
    # Asymptotic expansion -z^2/2 - log(2 pi)/2 - 2 log|z| for |z| -> inf.
    big = z[2:]
    np.testing.assert_allclose(lh[2:], -big**2 / 2 - 0.5 * math.log(2 * math.pi)
                               - 2 * np.log(-big), rtol=1e-9)
    with jax.enable_x64(True):
        g = jax.vmap(jax.grad(log_h))(jnp.asarray(z))
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g) > 0)


def test_log1mexp_matches_numpy_on_both_branches():
    a = np.array([-1e-10, -1e-3, -0.5, -math.log(2.0), -1.0, -10.0, -50.0])
    with jax.enable_x64(True):
        got = np.asarray(log1mexp(jnp.asarray(a)))
    ref = np.array([math.log(-math.expm1(v)) for v in a])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-20)
    # where 1 - e^a rounds to 1, the series log(1 - x) = -x - x^2/2 - ... is still resolved
    np.testing.assert_allclose(got[-1], -math.exp(-50.0), rtol=1e-12)
