"""Tests of Nadaraya-Watson regression (probkit.models.dkf.nadaraya_watson)."""

from __future__ import annotations

import numpy as np
import pytest

from probkit.models import dkf
from tests.models.dkf._helpers import nw_numpy

pytestmark = pytest.mark.usefixtures("x64")


def test_nadaraya_watson_against_numpy():
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(240, 2))
    z = np.column_stack([np.sin(2 * x[:, 0]), x[:, 1] ** 2]) + 0.2 * rng.normal(size=(240, 2))
    np.testing.assert_allclose(dkf.nw_predict(x, z, 0.4, x[:9]), nw_numpy(x, z, 0.4, x[:9]),
                               rtol=1e-10)
    # leave-one-out error and its minimiser
    loo = np.mean([np.sum((nw_numpy(np.delete(x, i, 0), np.delete(z, i, 0), 0.3, x[i:i + 1])
                           - z[i]) ** 2) for i in range(len(x))])
    np.testing.assert_allclose(dkf.nw_loo_error(x, z, 0.3), loo, rtol=1e-10)
    h = dkf.nw_select_bandwidth(x, z)
    grid = np.exp(np.linspace(np.log(h) - 1, np.log(h) + 1, 21))
    assert dkf.nw_loo_error(x, z, h) <= min(dkf.nw_loo_error(x, z, g) for g in grid) + 1e-9
