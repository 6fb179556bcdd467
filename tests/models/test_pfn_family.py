"""The PFN as a family: conditioning on a context set, and compile once per capacity in BO."""

import jax
import numpy as np

from probkit import bo
from probkit.bo.acquisition import optimize_acquisition
from probkit.models.pfn import Regressor
from tests.compiles import count_compiles


def test_pfn_tracks_data_and_compiles_once():
    """The shipped BO PFN interpolates a smooth function it is conditioned on, its acquisition
    finds the low region, and one more observation compiles nothing (capacity padding)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(31, 2))
    f = lambda z: ((z - 0.3) ** 2).sum(-1)  # noqa: E731
    y = f(x)
    y = (y - y.mean()) / y.std()
    family = Regressor()

    def step(n):
        fitted = family.fit(x[:n], y[:n], key=jax.random.key(0))
        res = optimize_acquisition(bo.LogEI(), fitted, float(y[:n].min()), x[np.argmin(y[:n])],
                                   key=jax.random.key(3), num_raw=64, num_restarts=2,
                                   num_steps=20)
        return fitted, np.asarray(res.x)

    fitted, _ = step(30)
    post = fitted.posterior(x[:30])
    resid = np.asarray(post.mean) - y[:30]
    assert np.sqrt(np.mean(resid**2)) < 0.2  # y has unit variance
    assert post.sample(jax.random.key(1), 4).shape == (4, 30)
    with count_compiles() as compiles:
        _, x_next = step(31)
    assert compiles == [], f"{len(compiles)} recompilations for n=31 after n=30"
    assert f(x_next[0]) < np.percentile(f(x), 25)


def test_inputs_outside_the_trained_box_and_units_are_refused():
    # Raw years into a network trained on [0, 1] would give a constant prediction; the
    # fixed-unit gp1d-rbf network cannot represent outputs of size 1e3.
    import pytest

    years = np.arange(1950.0, 1970.0)[:, None]
    y = np.sin(years[:, 0])
    with pytest.raises(ValueError, match=r"^x: inputs in \[1950, 1969\].*trained on \[0, 1\]"):
        Regressor("gp1d-rbf").fit(years, y, key=jax.random.key(0))
    unit = (years - 1950.0) / 19.0
    with pytest.raises(ValueError, match=r"^y: values in .*fixed output units.*rescale y"):
        Regressor("gp1d-rbf").fit(unit, 1000.0 + y, key=jax.random.key(0))
    fitted = Regressor("gp1d-rbf").fit(unit, y, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^x: inputs in \[1\.5, 1\.5\]"):
        fitted.predict(np.array([[1.5]]))
    assert np.isfinite(np.asarray(fitted.predict(unit[:3]).mean)).all()
