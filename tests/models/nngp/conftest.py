"""Shared data and the fitted Student-t model of the NNGP tests."""

import jax
import numpy as np
import numpyro.distributions as dist
import pytest

from probkit.kernels import NNGP
from probkit.models import nngp


def problem(n=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    y = np.sin(2 * x[:, 0]) + 0.3 * x[:, 1] + 0.2 * rng.standard_t(2, n)
    return x, y


def ig_as_transformed(a, b):
    """The inverse gamma written so that it is *not* an InverseGamma instance (quadrature path)."""
    return dist.TransformedDistribution(dist.Gamma(a, b), dist.transforms.PowerTransform(-1.0))


#: The Student-t model of the tests (its padded twin in test_regression uses the same settings).
FAMILY = nngp.Regressor(kernel=NNGP(2, "relu", 2.0, 0.1), scale_prior=dist.InverseGamma(2.0, 2.0),
                        num_steps=30, refine_steps=20)


@pytest.fixture(scope="module")
def fitted():
    with jax.enable_x64(True):
        x, y = problem()
        return x, y, FAMILY.fit(x, y, key=jax.random.key(0), progress_bar=False)
