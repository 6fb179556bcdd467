"""Test functions: known optima, vectorisation, bad input."""

import jax
import numpy as np
import pytest
from scipy.optimize import minimize

from probkit.bo import functions as F

PROBLEMS = [F.forrester(), F.branin(), F.hartmann6(), F.ackley(10), F.levy(2), F.levy(5)]


def _f(problem, x):
    with jax.enable_x64(True):
        return np.asarray(problem(np.asarray(x, dtype=np.float64)), dtype=np.float64)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_value_at_optimizers(problem):
    assert problem.optimizers.shape[1] == problem.dim == problem.bounds.shape[0]
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    assert ((problem.optimizers >= lo) & (problem.optimizers <= hi)).all()
    np.testing.assert_allclose(_f(problem, problem.optimizers), problem.optimum, atol=1e-7)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_optimizers_are_minima(problem):
    # No random point in the box is lower, and a local search from x* does not improve.
    rng = np.random.default_rng(0)
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    x = lo + rng.uniform(size=(20000, problem.dim)) * (hi - lo)
    assert _f(problem, x).min() >= problem.optimum - 1e-9
    for xs in problem.optimizers:
        res = minimize(lambda z: float(_f(problem, z)), xs, method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-14})
        assert res.fun >= problem.optimum - 1e-8


def test_known_values():
    np.testing.assert_allclose(F.branin().optimum, 0.397887, atol=1e-6)
    np.testing.assert_allclose(F.hartmann6().optimum, -3.32237, atol=1e-5)
    np.testing.assert_allclose(F.forrester().optimum, -6.02074, atol=1e-5)
    # Dense grid: the 1-D Forrester minimum is the global one.
    g = np.linspace(0, 1, 200001)[:, None]
    i = np.argmin(_f(F.forrester(), g))
    np.testing.assert_allclose(g[i, 0], F.forrester().optimizers[0, 0], atol=1e-5)
    np.testing.assert_allclose(_f(F.ackley(3), np.zeros(3)), 0.0, atol=1e-12)


def test_vectorised_equals_pointwise():
    p = F.hartmann6()
    x = np.random.default_rng(1).uniform(size=(5, 6))
    np.testing.assert_allclose(_f(p, x), [float(_f(p, xi)) for xi in x], rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="x"):
        F.branin()(np.zeros(3))
    with pytest.raises(ValueError, match="dim"):
        F.levy(0)
