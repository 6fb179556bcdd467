"""Any NumPyro regression model as a family: NUTS posterior, predictions by re-running the model,
compile once per capacity."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit import bo
from probkit.bo.acquisition import optimize_acquisition
from probkit.models.numpyro import Regressor
from probkit.posterior import Empirical, Mixture
from tests.compiles import count_compiles


def quadratic(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 3.0).expand([3]).to_event(1))
    f = numpyro.deterministic("f", w[0] + w[1] * x[:, 0] + w[2] * x[:, 0] ** 2)
    numpyro.sample("y", dist.Normal(f, 0.05), obs=y)


FAMILY = Regressor(quadratic, num_warmup=150, num_samples=100, num_chains=2, max_draws=64)


def test_posterior_through_hmc_and_acquisition():
    x = np.linspace(0, 1, 12)[:, None]
    y = 4 * (x[:, 0] - 0.6) ** 2
    fitted = FAMILY.fit(x, y, key=jax.random.key(0), progress_bar=False)
    xs = np.array([[0.1], [0.6], [0.9]])
    post = fitted.posterior(xs)
    assert isinstance(post, Empirical) and post.draws.shape == (64, 3)
    np.testing.assert_allclose(np.asarray(post.mean), 4 * (xs[:, 0] - 0.6) ** 2, atol=0.1)
    pred = fitted.predict(xs)
    assert isinstance(pred, Mixture)
    np.testing.assert_allclose(pred.variance, np.asarray(post.variance) + 0.05**2, rtol=1e-5)
    res = optimize_acquisition(bo.LogEI(), fitted, float(y.min()), x[np.argmin(y)],
                               key=jax.random.key(2), num_raw=64, num_restarts=2, num_steps=30)
    np.testing.assert_allclose(np.asarray(res.x)[0, 0], 0.6, atol=0.1)


def test_padding_leaves_the_posterior_exact_and_refits_do_not_recompile():
    """The conjugate case: with fixed noise the posterior of w is Gaussian and known exactly; the
    masked padded rows must not change it, and n -> n + 1 (same capacity) compiles nothing."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(15, 1))
    y = 1 + 2 * x[:, 0] - x[:, 0] ** 2 + 0.05 * rng.normal(size=15)
    fam = Regressor(quadratic, num_warmup=300, num_samples=1000, num_chains=2, max_draws=2000)
    fitted = fam.fit(x[:14], y[:14], key=jax.random.key(1), progress_bar=False)
    phi = np.stack([np.ones(14), x[:14, 0], x[:14, 0] ** 2], 1)
    prec = phi.T @ phi / 0.05**2 + np.eye(3) / 9.0
    mean = np.linalg.solve(prec, phi.T @ y[:14] / 0.05**2)
    w = np.asarray(fitted.draws["w"])
    sd = np.sqrt(np.diag(np.linalg.inv(prec)))
    np.testing.assert_array_less(np.abs(w.mean(0) - mean), 6 * sd / np.sqrt(200))
    np.testing.assert_allclose(w.std(0), sd, rtol=0.25)
    with count_compiles() as compiles:
        fam.fit(x, y, key=jax.random.key(2), progress_bar=False)
    assert compiles == [], f"{len(compiles)} recompilations for n=15 after n=14"
