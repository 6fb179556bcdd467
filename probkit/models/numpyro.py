r"""Any NumPyro regression model as a probkit family, through the HMC engine.

A user's model ``model(x, y=None)`` with inputs ``x`` ``(n, d)``, a site holding the latent
regression function at ``x`` (``numpyro.deterministic("f", ...)``) and an observed site ``y``
becomes a family: :class:`Regressor` samples the posterior with BlackJAX NUTS
(:func:`probkit.inference.hmc.run`) and keeps ``max_draws`` evenly thinned draws; the posterior
at new inputs is the model re-run on every kept draw (joint function draws,
:class:`probkit.posterior.Empirical`); the predictive adds the likelihood of the observed site,
:math:`\frac1S\sum_s N(y; \mu_s(x), \sigma_s^2(x))` (:class:`probkit.posterior.Mixture`) when it is
Normal (other likelihoods: ``posterior`` and ``to_arviz`` work, ``predict`` says it needs a
Normal site).

**Compile once per capacity.** The data are padded to a capacity (the next power of two >= 32)
and the padded observations are masked out of the likelihood (only the observed site is masked;
priors are untouched), so the sampler compiles once per capacity instead of once per data size,
as the exact GP does — a BO run recompiles at ``n = 33, 65, ...`` only. The model's latent
variables must not grow with ``n`` (weights of a parametric model or a BNN, not a latent GP
vector). Padded rows repeat the first input, so the model sees only finite inputs.

Examples
--------
>>> import jax, numpy as np, numpyro, numpyro.distributions as dist
>>> from probkit.models.numpyro import Regressor
>>> def line(x, y=None):
...     w = numpyro.sample("w", dist.Normal(0, 1).expand([2]).to_event(1))
...     f = numpyro.deterministic("f", w[0] + w[1] * x[:, 0])
...     numpyro.sample("y", dist.Normal(f, 0.1), obs=y)
>>> x = np.linspace(0, 1, 10)[:, None]
>>> fam = Regressor(line, num_warmup=200, num_samples=200, num_chains=1, max_draws=100)
>>> fitted = fam.fit(x, 1 + 2 * x[:, 0], key=jax.random.key(0), progress_bar=False)
>>> bool(abs(float(fitted.predict(np.array([[0.5]])).mean[0]) - 2.0) < 0.1)
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro import handlers
from numpyro.primitives import Messenger

from probkit._checks import check_key, check_positive_int, check_regression_data
from probkit.models.base import Family, Fitted, check_inputs
from probkit.posterior import Empirical, Mixture

__all__ = ["Regressor", "RegressorFitted"]


class _MaskObserved(Messenger):
    """Mask the log density of one observed site (padded rows contribute nothing)."""

    def __init__(self, fn, site: str, mask: Array):
        self.site, self.mask = site, mask
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.site and msg["is_observed"]:
            msg["fn"] = msg["fn"].mask(self.mask)


@functools.lru_cache(maxsize=64)
def _padded_model(model: Callable, obs: str) -> Callable:
    """``model(x, y)`` with the observed site masked by a third argument (one function per model,
    so the HMC engine's compile cache is hit on every refit)."""

    def padded(x, y, mask):
        with _MaskObserved(None, obs, mask):
            model(x, y)

    padded.__name__ = f"padded_{getattr(model, '__name__', 'model')}"
    return padded


def _capacity(n: int) -> int:
    return max(32, 1 << max(n - 1, 1).bit_length())


def _latent_sites(model: Callable, x: np.ndarray, y: np.ndarray) -> tuple[str, ...]:
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(jnp.asarray(x), jnp.asarray(y))
    return tuple(name for name, s in tr.items() if s["type"] == "sample" and not s["is_observed"])


@eqx.filter_jit
def _rerun(model, site, obs, draws, x, key):
    """The model at ``x`` under every draw: the latent site, and the observed site's law."""

    def one(draw, k):
        tr = handlers.trace(handlers.substitute(handlers.seed(model, k), data=draw)).get_trace(
            x, None)
        if site not in tr:
            raise ValueError(f"site: the model has no site {site!r} (record the regression "
                             "function with numpyro.deterministic)")
        f = jnp.reshape(tr[site]["value"], (x.shape[0],))
        law = tr[obs]["fn"] if obs in tr else None
        if isinstance(law, dist.Normal):
            return f, jnp.broadcast_to(law.loc, f.shape), jnp.broadcast_to(law.scale, f.shape)
        return f, jnp.full_like(f, jnp.nan), jnp.full_like(f, jnp.nan)

    num = next(iter(draws.values())).shape[0]
    return jax.vmap(one)(draws, jax.random.split(key, num))


class RegressorFitted(Fitted):
    """Posterior draws of a NumPyro model's latent sites, with the (padded) data."""

    draws: dict
    x: Array
    y: Array
    mask: Array
    model: Callable = eqx.field(static=True)
    site: str = eqx.field(static=True)
    obs: str = eqx.field(static=True)

    def _at(self, x):
        if not isinstance(x, jax.core.Tracer):
            x = check_inputs("x", x, self.x.shape[1])
        with jax.enable_x64(True):
            return _rerun(self.model, self.site, self.obs, self.draws,
                          jnp.asarray(x, jnp.float64), jax.random.key(0))

    def posterior(self, x) -> Empirical:
        """Joint function draws ``(S, q)`` of the latent site at ``x`` ``(q, d)``."""
        return Empirical(self._at(x)[0])

    def predict(self, x) -> Mixture:
        """The predictive of ``y``: one Normal per draw (the model's observed site)."""
        _, loc, scale = self._at(x)
        if not isinstance(loc, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(scale))):
            raise ValueError(f"model: predict needs a Normal likelihood at site {self.obs!r}; "
                             "use posterior(x) for the latent function")
        return Mixture(loc, scale)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.mask)
        return np.asarray(self.x)[mask], np.asarray(self.y)[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        total = next(iter(self.draws.values())).shape[0]
        idx = np.asarray(jax.random.randint(key, (num_samples,), 0, total))
        return {k: np.asarray(v)[idx] for k, v in self.draws.items()}

    def _log_likelihood(self, draws, x, y) -> np.ndarray:
        from numpyro.infer import log_likelihood

        with jax.enable_x64(True):
            ll = log_likelihood(self.model, {k: jnp.asarray(v) for k, v in draws.items()},
                                jnp.asarray(x), jnp.asarray(y))
        return np.asarray(ll[self.obs]).reshape(len(next(iter(draws.values()))), -1)


class Regressor(Family):
    """Any NumPyro regression model, fitted by NUTS (see module notes).

    Parameters
    ----------
    model : callable
        ``model(x, y=None)``, defined at module level (so a fitted model can be saved).
    site : str
        The deterministic site holding the latent function at ``x`` (default ``"f"``).
    obs : str
        The observed site (default ``"y"``).
    num_warmup, num_samples, num_chains : int
        NUTS settings of :func:`probkit.inference.hmc.run`.
    max_draws : int
        Draws kept (thinned evenly; default 128): fixed, so BO compiles once.
    engine : {"hmc"}
        BlackJAX NUTS with window adaptation.
    """

    name = "numpyro"
    engines = {"hmc": "BlackJAX NUTS on the model (probkit.inference.hmc)"}

    model: Callable = eqx.field(static=True)
    site: str = eqx.field(static=True, default="f")
    obs: str = eqx.field(static=True, default="y")
    num_warmup: int = eqx.field(static=True, default=500)
    num_samples: int = eqx.field(static=True, default=500)
    num_chains: int = eqx.field(static=True, default=2)
    max_draws: int = eqx.field(static=True, default=128)
    engine: str = eqx.field(static=True, default="hmc")

    def __check_init__(self):
        if not callable(self.model):
            raise ValueError(f"model: expected a NumPyro model (callable), got {self.model!r}")
        for name in ("num_warmup", "num_samples", "num_chains", "max_draws"):
            check_positive_int(name, getattr(self, name))

    def fit(self, x, y, *, key, progress_bar: bool = True, **run_options) -> RegressorFitted:
        """Sample the posterior given ``x`` ``(n, d)``, ``y`` ``(n,)``; keep ``max_draws`` draws.

        ``run_options`` go to :func:`probkit.inference.hmc.run` (``dense_mass``,
        ``target_accept``, ...).
        """
        from probkit.inference.hmc import run

        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        n, cap = x.shape[0], _capacity(x.shape[0])
        xp = np.concatenate([x, np.repeat(x[:1], cap - n, 0)])
        yp = np.concatenate([y, np.zeros(cap - n)])
        mask = np.arange(cap) < n
        latent = _latent_sites(self.model, xp, yp)  # padded: no new shapes, no compiles
        if not latent:
            raise ValueError("model: it has no latent sample sites to infer")
        with jax.enable_x64(True):
            res = run(_padded_model(self.model, self.obs), jnp.asarray(xp), jnp.asarray(yp),
                      jnp.asarray(mask), key=key, num_warmup=self.num_warmup,
                      num_samples=self.num_samples, num_chains=self.num_chains,
                      progress_bar=progress_bar, log_likelihood=False, **run_options)
            draws = {k: jnp.asarray(v).reshape((-1,) + v.shape[2:])
                     for k, v in res.posterior.items() if k in latent}
            total = next(iter(draws.values())).shape[0]
            idx = np.unique(np.linspace(0, total - 1, min(self.max_draws, total)).astype(int))
            draws = {k: v[idx] for k, v in draws.items()}
            return RegressorFitted(draws, jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(mask),
                                   self.model, self.site, self.obs)

