r"""Surrogates built from probkit's model families and engines.

* :class:`NumPyroSurrogate` — any NumPyro regression model ``model(x, y=None)`` that records its
  latent regression function at the inputs as a site (``numpyro.deterministic("f", ...)``): the
  posterior is sampled by the HMC engine (:func:`probkit.inference.hmc.run`), and the posterior at
  new inputs is the model re-run on every kept draw (:class:`numpyro.infer.Predictive`), giving a
  :class:`~probkit.bo.protocol.SamplePosterior` of whole function draws (joint over the points).
  The number of kept draws is fixed (``max_draws``), so the acquisition optimiser compiles once.
  The model's latent variables must not grow with ``n`` (weights of a parametric model or a BNN,
  not a latent GP vector).

* :class:`StudentTNNGPSurrogate` — the scale-mixture NNGP of :mod:`probkit.models.nngp` (default:
  the Student-t process with a depth-3 ReLU NNGP kernel, the "I-BNN" of Li et al. 2024 with heavy
  tails, here with one first-layer weight variance per input and the normalised kernel; see the
  class); its fitted model's ``posterior`` already follows the protocol (``ScaleMixtureNormal``
  with ``mean``, ``variance`` and joint ``sample``). The data are padded with a mask to a
  capacity (the next power of two >= 32), so the fit and the acquisition optimiser compile once
  per capacity, not once per data size.

* :class:`PFNSurrogate` — a prior-data fitted network (:mod:`probkit.inference.pfn`; default the
  shipped ``"gp-bo"`` model, a GP prior with hyperpriors for ``d <= 6``): ``fit`` encodes the
  training set once (padded to the network's capacity, so the acquisition compiles once), and
  ``posterior`` runs only the query tokens against that encoding, giving bar distributions of
  ``y`` at the points (``mean``, ``variance`` and samples; samples are independent across points,
  as a PFN predicts marginals).

The functional-prior BNN (:mod:`probkit.models.fbnn`) and the martingale-posterior NP
(:mod:`probkit.models.mpnp`) provide their own surrogates next to their models.

Examples
--------
>>> import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
>>> from probkit.bo.surrogates import NumPyroSurrogate
>>> def quadratic(x, y=None):
...     w = numpyro.sample("w", dist.Normal(0, 1).expand([3]).to_event(1))
...     f = numpyro.deterministic("f", w[0] + w[1] * x[:, 0] + w[2] * x[:, 0] ** 2)
...     numpyro.sample("y", dist.Normal(f, 0.1), obs=y)
>>> x = np.linspace(0, 1, 10)[:, None]
>>> s = NumPyroSurrogate(quadratic, num_warmup=200, num_samples=200, num_chains=1)
>>> post = s.fit(x, (x[:, 0] - 0.5) ** 2, key=jax.random.key(0)).posterior(x[:3])
>>> post.sample(jax.random.key(1), 4).shape
(4, 3)
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from probkit._checks import (
    check_key,
    check_positive_int,
    check_regression_data,
)
from probkit.bo.protocol import SamplePosterior

__all__ = ["NumPyroSurrogate", "NumPyroFitted", "StudentTNNGPSurrogate", "PFNSurrogate"]


class NumPyroFitted(eqx.Module):
    """Posterior draws of a NumPyro model's latent sites; ``posterior(x)`` re-runs the model."""

    draws: dict
    model: Callable = eqx.field(static=True)
    site: str = eqx.field(static=True)

    def posterior(self, x) -> SamplePosterior:
        """Function draws ``(S, q)`` of the site at ``x`` ``(q, d)``."""
        from numpyro.infer import Predictive

        pred = Predictive(self.model, posterior_samples=self.draws, return_sites=[self.site],
                          batch_ndims=1)
        with jax.enable_x64(True):
            out = pred(jax.random.key(0), jnp.asarray(x, dtype=jnp.float64))
        if self.site not in out:
            raise ValueError(f"site: the model has no site {self.site!r} (record the regression "
                             "function with numpyro.deterministic)")
        f = out[self.site]
        return SamplePosterior(f.reshape(f.shape[0], -1))


class NumPyroSurrogate:
    """Any NumPyro regression model as a BO surrogate, through the HMC engine.

    Parameters
    ----------
    model : callable
        ``model(x, y=None)`` with inputs ``x`` ``(n, d)`` and a site named ``site`` holding the
        latent function at ``x`` (shape ``(n,)``).
    site : str
        Name of that site (default ``"f"``).
    num_warmup, num_samples, num_chains : int
        HMC settings for :func:`probkit.inference.hmc.run`.
    max_draws : int
        Draws kept (thinned evenly) for the acquisition (default 128).
    run : callable, optional
        Engine with the signature of :func:`probkit.inference.hmc.run` (default that function).
    **run_kwargs
        Further engine options (``dense_mass``, ``target_accept``, ...).
    """

    def __init__(self, model: Callable, *, site: str = "f", num_warmup: int = 500,
                 num_samples: int = 500, num_chains: int = 2, max_draws: int = 128,
                 run: Callable | None = None, **run_kwargs):
        if not callable(model):
            raise ValueError(f"model: expected a NumPyro model (callable), got {type(model)}")
        self.model = model
        self.site = site
        self.num_warmup = check_positive_int("num_warmup", num_warmup)
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.num_chains = check_positive_int("num_chains", num_chains)
        self.max_draws = check_positive_int("max_draws", max_draws)
        self.run = run
        self.run_kwargs = run_kwargs

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return (f"NumPyroSurrogate(model={name}, site={self.site!r}, num_warmup={self.num_warmup}"
                f", num_samples={self.num_samples}, num_chains={self.num_chains}, "
                f"max_draws={self.max_draws})")

    def fit(self, x, y, *, key) -> NumPyroFitted:
        """Sample the posterior given ``x`` ``(n, d)``, ``y`` ``(n,)``; keep ``max_draws`` draws."""
        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        run = self.run
        if run is None:
            from probkit.inference.hmc import run
        with jax.enable_x64(True):
            res = run(self.model, jnp.asarray(x), jnp.asarray(y), key=key,
                      num_warmup=self.num_warmup, num_samples=self.num_samples,
                      num_chains=self.num_chains, progress_bar=False, **self.run_kwargs)
            draws = {}
            for name, v in res.posterior.items():
                if name == self.site:
                    continue
                v = jnp.asarray(v)
                draws[name] = v.reshape((-1,) + v.shape[2:])
            if not draws:
                raise ValueError("model: the engine returned no latent draws")
            total = next(iter(draws.values())).shape[0]
            idx = np.unique(np.linspace(0, total - 1, min(self.max_draws, total)).astype(int))
            draws = {k: v[idx] for k, v in draws.items()}
        return NumPyroFitted(draws, self.model, self.site)


class StudentTNNGPSurrogate:
    """Scale-mixture (default Student-t) NNGP regression from :mod:`probkit.models.nngp`.

    Parameters
    ----------
    capacity : int, optional
        Pad the data to this many rows (masked; results equal the unpadded fit up to
        rounding) so that fitting and the acquisition optimiser compile once while
        ``n <= capacity``. Default (and when ``n`` exceeds it): the next power of two >= 32,
        so a BO run recompiles only at ``n = 33, 65, 129, ...``.
    **fit_kwargs
        Passed to :func:`probkit.models.nngp.fit` (``kernel``, ``scale_prior``, ``num_steps``,
        ``refine_steps``, ...). Defaults: ``InverseGamma(2, 2)`` scale prior (a Student-t
        process), marginal-likelihood fitting, and the kernel
        ``NNGP(3, "relu", input_weight_variance=[2.0] * d, normalize=True)``: a depth-3 ReLU
        NNGP with one first-layer weight variance per input (fitted: relevance determination)
        and unit prior variance everywhere. The plain ReLU NNGP's prior variance grows with
        :math:`\\lVert x\\rVert^2`, so log-EI on it favours the corners of the box; on
        Hartmann-6 the median log10 regret after 50 evaluations was 0.43 with the plain kernel
        (no progress over the initial design) and -0.89 with this one (``BENCHMARKS.md``,
        Bayesian optimisation: ``bo_h6.json`` and ``bo_nngp.json``).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.bo.surrogates import StudentTNNGPSurrogate
    >>> x = np.random.default_rng(0).uniform(size=(10, 2))
    >>> fitted = StudentTNNGPSurrogate(num_steps=20, refine_steps=10).fit(
    ...     x, np.sin(4 * x).sum(1), key=jax.random.key(0))
    >>> fitted.n, fitted.capacity, fitted.posterior(x[:3]).mean.shape
    (10, 32, (3,))
    """

    def __init__(self, *, capacity: int | None = None, **fit_kwargs):
        self.capacity = None if capacity is None else check_positive_int("capacity", capacity)
        self.fit_kwargs = fit_kwargs

    def __repr__(self) -> str:
        kw = dict(self.fit_kwargs, **({} if self.capacity is None else
                                      {"capacity": self.capacity}))
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(kw.items()))
        return f"StudentTNNGPSurrogate({args})"

    def fit(self, x, y, *, key):
        """Fit by marginal likelihood on the data padded to the capacity; returns the
        ``NNGPRegression`` (its ``posterior`` is the protocol's)."""
        from probkit.kernels import NNGP
        from probkit.models.nngp import fit

        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        n, d = x.shape
        cap = self.capacity
        if cap is None or n > cap:
            cap = max(32, 1 << (n - 1).bit_length())
        kwargs = dict(self.fit_kwargs)
        if "kernel" not in kwargs:
            kwargs["kernel"] = NNGP(3, "relu", 2.0, 0.1, 1.0, input_weight_variance=np.full(d, 2.0),
                                    normalize=True)
        return fit(x, y, key=key, capacity=cap, **kwargs)


class PFNSurrogate:
    """A prior-data fitted network as a surrogate: no fitting, one forward pass per posterior.

    Parameters
    ----------
    pfn : PFN or str
        A :class:`probkit.inference.pfn.PFN` or the name of a shipped one (default ``"gp-bo"``:
        Matern-5/2 GP prior with hyperpriors, ``d <= 6``, up to 127 observations, outputs
        standardised per dataset).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.bo.surrogates import PFNSurrogate
    >>> x = np.random.default_rng(0).uniform(size=(10, 2))
    >>> fitted = PFNSurrogate().fit(x, np.sin(4 * x).sum(1), key=jax.random.key(0))
    >>> fitted.posterior(x[:3]).mean.shape
    (3,)
    """

    def __init__(self, pfn="gp-bo"):
        from probkit.inference.pfn import PFN, load_pretrained

        if isinstance(pfn, str):
            pfn = load_pretrained(pfn)
        if not isinstance(pfn, PFN):
            raise ValueError(f"pfn: expected a PFN or the name of a shipped one, got {pfn!r}")
        self.pfn = pfn

    def __repr__(self) -> str:
        return f"PFNSurrogate(prior={self.pfn.config.prior!r})"

    def fit(self, x, y, *, key):
        """Encode ``x`` ``(n, d)``, ``y`` ``(n,)`` once (a
        :class:`probkit.inference.pfn.model.ConditionedPFN`, padded to the network's capacity);
        ``key`` is unused: a PFN needs no fitting."""
        check_key("key", key)
        x, y = check_regression_data(x, y)
        return self.pfn.condition(x, y)
