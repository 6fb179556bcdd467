"""Loop-free draws (probkit.draws): the same distributions as jax.random.gamma / scipy (KS
tests), and no while loop in the compiled program."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

from probkit import draws

N = 20_000


@pytest.mark.parametrize("alpha", [0.3, 1.0, 3.0, 50.0])
def test_gamma_matches_scipy_and_jax_random_gamma(alpha):
    g = np.asarray(draws.gamma(jax.random.key(0), alpha, (N,)), np.float64)
    assert np.all(g > 0)
    assert st.kstest(g, st.gamma(alpha).cdf).pvalue > 1e-3
    ref = np.asarray(jax.random.gamma(jax.random.key(1), alpha, (N,)), np.float64)
    assert st.ks_2samp(g, ref).pvalue > 1e-3


def test_gamma_broadcasts_a_concentration_per_element_and_reproduces():
    alpha = jnp.array([0.5, 2.0, 9.0])
    g = np.asarray(draws.gamma(jax.random.key(2), alpha, (N, 3)))
    np.testing.assert_allclose(g.mean(0), alpha, rtol=0.05)
    np.testing.assert_allclose(g.var(0), alpha, rtol=0.1)
    np.testing.assert_array_equal(draws.gamma(jax.random.key(2), alpha, (N, 3)), g)


def test_student_t_and_the_numpyro_dispatch():
    t = np.asarray(draws.student_t(jax.random.key(3), 3.0, (N,)), np.float64)
    assert st.kstest(t, st.t(3.0).cdf).pvalue > 1e-3
    g = np.asarray(draws.sample(dist.Gamma(3.0, 6.0), jax.random.key(4), (N,)), np.float64)
    assert st.kstest(g, st.gamma(3.0, scale=1 / 6.0).cdf).pvalue > 1e-3
    ig = np.asarray(draws.sample(dist.InverseGamma(4.0, 2.0), jax.random.key(5), (N,)))
    assert st.kstest(ig, st.invgamma(4.0, scale=2.0).cdf).pvalue > 1e-3
    ln = draws.sample(dist.LogNormal(0.0, 1.0), jax.random.key(6), (3,))   # passed through
    np.testing.assert_array_equal(ln, dist.LogNormal(0.0, 1.0).sample(jax.random.key(6), (3,)))


def _loops(f) -> set[str]:
    """Functions of ``f``'s lowered program holding a while loop, the PRNG's threefry hash (a
    fixed-count loop) excepted."""
    text = jax.jit(f).lower(jax.random.key(0)).as_text()
    where, found = None, set()
    for line in text.splitlines():
        head = re.match(r"\s*func\.func (?:private |public )?@(\w+)", line)
        if head:
            where = head.group(1)
        if "stablehlo.while" in line and not where.startswith("threefry"):
            found.add(where)
    return found


def test_no_rejection_loop_in_the_compiled_draw():
    """The point of the module: jax.random.gamma's program has a rejection loop, ours none."""
    assert _loops(lambda k: draws.gamma(k, 2.0, (128,))) == set()
    assert _loops(lambda k: draws.student_t(k, 3.0, (128,))) == set()
    assert _loops(lambda k: jax.random.gamma(k, 2.0, (128,))) != set()
