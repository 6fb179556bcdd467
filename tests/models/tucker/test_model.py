"""FunBaT's NumPyro model (probkit.models.tucker.model): the likelihood against a brute-force
contraction, and its checks."""

import jax
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Predictive

from probkit.models import tucker


def test_numpyro_model_likelihood_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(12, 3))
    R = 2
    draws = Predictive(tucker.tucker_model, num_samples=1)(jax.random.key(0), x, rank=R)
    assert draws["y"].shape == (1, 12)
    params = {k: v[0] for k, v in draws.items() if k in ("u0_white", "u1_white", "u2_white",
                                                         "core", "tau")}
    tr = handlers.trace(handlers.substitute(tucker.tucker_model, params)).get_trace(
        x, y=np.zeros(12), rank=R)
    us = [np.asarray(tr[f"u{k}"]["value"]) for k in range(3)]
    W = np.asarray(params["core"])
    f = np.zeros(12)
    for n in range(12):
        vals = [us[k][np.searchsorted(np.unique(x[:, k]), x[n, k])] for k in range(3)]
        f[n] = np.einsum("abc,a,b,c->", W, *vals)
    np.testing.assert_allclose(tr["y"]["fn"].loc, f, rtol=1e-5, atol=1e-6)


def test_model_rejects_bad_input_naming_the_argument():
    x = np.random.default_rng(0).uniform(size=(20, 2))
    y = np.sin(x[:, 0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="^x"):
        tucker.tucker_model(bad, y, rank=1)
    with pytest.raises(ValueError, match="^rank"):
        tucker.tucker_model(x, y, rank=0)
