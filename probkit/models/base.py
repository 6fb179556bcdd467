r"""The family contract that every probkit model family keeps, and the engine registry.

A *family* is a small configuration object (an :class:`equinox.Module` whose fields are the
model's and engine's settings). ``family.fit(x, y, *, key, progress_bar=True)`` conditions it on
data and returns a :class:`Fitted`, never mutating the family. A *fitted* model is an immutable
equinox Module (a pytree, so it can be passed through ``jax.jit``) with

* ``predict(x)`` — the predictive distribution of ``y`` at ``x`` (a NumPyro ``Distribution`` with
  batch shape ``(n,)``, from :mod:`probkit.posterior` or the family's own);
* ``posterior(x)`` — the posterior of the latent function ``f`` at ``x`` (joint over the points
  where the family supports it);
* ``to_arviz(x=None, y=None, *, key, num_samples=1000)`` — ArviZ data: ``posterior`` (what was
  inferred), ``posterior_predictive`` (replicated training data), ``log_likelihood`` and
  ``observed_data`` (of the training data only), and at new ``x`` the ``predictions`` group with
  the held-out ``y`` in ``predictions_constant_data`` (never in ``log_likelihood``, so ``az.loo``
  only ever sees training data);
* ``save(path)`` — one file (:mod:`probkit._io`); :func:`probkit.load` gives back an object whose
  predictions are bit-for-bit the same.

The Bayesian-optimisation ``Surrogate`` protocol is this contract: any family whose inputs are
points in a box goes into :func:`probkit.bo.minimize` as ``surrogate=family``.

Each family declares its engines once, in the class attribute ``engines`` (name -> description;
the first is the default), and takes ``engine=`` where it has more than one. :func:`registry`
collects them; the README's family x engine table is tested against it.

Subclasses implement ``fit`` (family) and ``predict``, ``posterior``, ``observed`` and
``_posterior_draws`` (fitted); the rest has defaults here.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.gp import GP
>>> x = np.linspace(0, 1, 12)[:, None]
>>> fitted = GP().fit(x, np.sin(6 * x[:, 0]), key=jax.random.key(0), progress_bar=False)
>>> pred = fitted.predict(x[:3])
>>> pred.batch_shape, pred.sample(jax.random.key(1), (4,)).shape
((3,), (4, 3))
"""

from __future__ import annotations

import abc
import pathlib
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from probkit import _io
from probkit._checks import as_array, check_choice, check_finite, check_key, check_positive_int
from probkit.result import Result
from probkit.special import normal_logpdf

__all__ = ["Family", "Fitted", "registry", "check_inputs", "split_chains"]

_FAMILIES: dict[str, type[Family]] = {}


def registry() -> dict[str, dict[str, str]]:
    """Every registered family (``name`` -> its ``engines``), importing all family modules."""
    import importlib

    for module in ("gp", "nngp", "tucker", "fbnn", "mpnp", "dkf", "numpyro", "pfn"):
        try:
            importlib.import_module(f"probkit.models.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"probkit.models.{module}":
                raise
    return {name: dict(cls.engines) for name, cls in sorted(_FAMILIES.items())}


def check_inputs(name: str, x, dim: int | None = None) -> np.ndarray:
    """Check query or training inputs: a finite, non-empty ``(n, d)`` array (1-D means d = 1)."""
    arr = as_array(name, x, ndim=(1, 2))
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty (shape {arr.shape}); at least one point is needed")
    check_finite(name, arr)
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: expected {dim} input columns (as in training), got "
                         f"{arr.shape[1]}")
    return arr


def split_chains(a, num_chains: int) -> np.ndarray:
    """Reshape ``S`` independent draws ``(S, ...)`` into ``(num_chains, S // num_chains, ...)``."""
    a = np.asarray(a)
    s = a.shape[0] - a.shape[0] % num_chains
    return a[:s].reshape((num_chains, s // num_chains) + a.shape[1:])


class Family(eqx.Module):
    """A model family's configuration; ``fit`` returns a :class:`Fitted` (see module notes).

    Subclasses set the class attributes ``name`` (registry key) and ``engines`` (engine name ->
    one-line description, default first); a family with several engines has a field ``engine``
    checked against them.
    """

    name: ClassVar[str] = ""
    engines: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _FAMILIES[cls.__dict__["name"]] = cls

    def __check_init__(self):
        if "engine" in {f.name for f in self.__dataclass_fields__.values()}:
            check_choice("engine", self.engine, tuple(self.engines))

    @abc.abstractmethod
    def fit(self, x, y, *, key, progress_bar: bool = True) -> Fitted:
        """Condition on inputs ``x`` ``(n, d)`` and outputs ``y`` ``(n,)``."""


class Fitted(eqx.Module):
    """A family conditioned on data (see module notes)."""

    @abc.abstractmethod
    def predict(self, x):
        """Predictive distribution of ``y`` at ``x`` (batch shape ``(n,)``)."""

    @abc.abstractmethod
    def posterior(self, x):
        """Posterior of the latent ``f`` at ``x`` (batch shape ``(n,)``)."""

    @abc.abstractmethod
    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        """The training data ``(x, y)`` the model was conditioned on (unpadded)."""

    @abc.abstractmethod
    def _posterior_draws(self, key, num_samples: int) -> dict[str, Any]:
        """Draws ``{name: (num_samples, ...)}`` of what was inferred (parameters, latent values)."""

    def _log_likelihood(self, draws: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pointwise log-likelihood ``(num_samples, n)`` of the training data under each draw.

        Default: Gaussian noise, ``log N(y_i; f_i, noise)`` with draws ``f`` of the latent
        function at the training inputs and the variance ``draws["noise"]`` (per draw) or
        ``self.noise_variance``.
        """
        f = np.asarray(draws["f"], np.float64)
        noise = np.asarray(draws.get("noise", self.noise_variance), np.float64)
        noise = noise.reshape(noise.shape + (1,) * (f.ndim - noise.ndim))
        with jax.enable_x64(True):
            return np.asarray(normal_logpdf(jnp.asarray(y, jnp.float64), f, jnp.sqrt(noise)))

    def to_arviz(self, x=None, y=None, *, key, num_samples: int = 1000, num_chains: int = 4):
        """ArviZ data of the fit (``InferenceData`` on ArviZ 0.x, ``DataTree`` on 1.x).

        Parameters
        ----------
        x : array ``(m, d)``, optional
            New inputs: their predictive draws go to the ``predictions`` group.
        y : array ``(m,)``, optional
            Held-out outputs at ``x`` (shaped like the training ``y``), stored in
            ``predictions_constant_data`` (not in ``log_likelihood``).
        key : PRNG key
        num_samples : int
            Draws in total, split into ``num_chains`` chains of independent draws.
        num_chains : int
            Chains (ArviZ's diagnostics need at least two).
        """
        return self.to_result(x, y, key=key, num_samples=num_samples,
                              num_chains=num_chains).to_arviz()

    def to_result(self, x=None, y=None, *, key, num_samples: int = 1000,
                  num_chains: int = 4) -> Result:
        """The :class:`probkit.Result` behind :meth:`to_arviz`."""
        key = check_key("key", key)
        num_samples = check_positive_int("num_samples", num_samples)
        num_chains = check_positive_int("num_chains", num_chains)
        if num_samples < num_chains:
            raise ValueError(f"num_samples: {num_samples} draws cannot fill {num_chains} chains")
        k_post, k_rep, k_new = jax.random.split(key, 3)
        x_tr, y_tr = self.observed()
        draws = self._posterior_draws(k_post, num_samples)
        ll = self._log_likelihood(draws, x_tr, y_tr)
        rep = self.predict(x_tr).sample(k_rep, (num_samples,))
        groups: dict[str, Any] = {
            "posterior": {k: split_chains(v, num_chains) for k, v in draws.items()},
            "log_likelihood": {"y": split_chains(ll, num_chains)},
            "posterior_predictive": {"y": split_chains(rep, num_chains)},
            "observed_data": {"y": np.asarray(y_tr)},
            "constant_data": {"x": np.asarray(x_tr)},
        }
        if x is not None:
            x = check_inputs("x", x, np.asarray(x_tr).shape[1] if np.ndim(x_tr) == 2 else None)
            groups["predictions"] = {
                "y": split_chains(self.predict(x).sample(k_new, (num_samples,)), num_chains)}
            groups["predictions_constant_data"] = {"x": x}
            if y is not None:
                y = check_finite("y", as_array("y", y, ndim=np.ndim(y_tr)))
                if y.shape[0] != x.shape[0]:
                    raise ValueError(f"y: {y.shape[0]} held-out outputs for {x.shape[0]} inputs")
                groups["predictions_constant_data"]["y"] = y
        elif y is not None:
            raise ValueError("y: held-out outputs need their inputs x")
        return Result(**groups, attrs={"family": type(self).__qualname__,
                                       "inference": "independent posterior draws"})

    def save(self, path, **metadata) -> pathlib.Path:
        """Save to ``path`` (one file; :func:`probkit.load` reads it back bit-for-bit).
        Keyword arguments are stored as JSON metadata in the header."""
        return _io.save(path, self, metadata=metadata)
