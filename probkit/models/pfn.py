r"""A prior-data fitted network as a model family: amortised inference in one forward pass.

:class:`Regressor` wraps a trained :class:`probkit.inference.pfn.PFN` (a shipped one by name, or
one a user trained with :func:`probkit.inference.pfn.train` on any prior). Its ``fit`` does no
optimisation: it encodes the context set ``(x, y)`` once (padded to the network's capacity, so a
jitted consumer such as the BO acquisition compiles once), and ``predict(x)`` runs only the query
tokens against that encoding (Müller et al., "Transformers can do Bayesian inference", ICLR
2022), returning the bar distribution of ``y`` at each point
(:class:`probkit.inference.pfn.BarPrediction`: exact density, CDF, quantiles, log-EI).

A PFN models the posterior predictive of ``y`` directly, so ``posterior(x)`` is the same
distribution as ``predict(x)`` (there is no separate latent function), and its samples are
independent across points (marginals). In ``to_arviz`` the ``posterior`` group holds draws of the
predictive at the training inputs, and ``log_likelihood`` the log predictive density of each
training point given the whole context (the same for every draw), so ``az.loo`` reports the
in-sample fit.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.pfn import Regressor
>>> x = np.random.default_rng(0).uniform(size=(10, 2))
>>> fitted = Regressor("gp-bo").fit(x, np.sin(4 * x).sum(1), key=jax.random.key(0))
>>> fitted.predict(x[:3]).mean.shape
(3,)
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax import Array

from probkit._checks import check_key, check_regression_data
from probkit.inference.pfn import PFN, BarPrediction, load_pretrained
from probkit.inference.pfn.model import ConditionedPFN
from probkit.models.base import Family, Fitted, check_inputs

__all__ = ["Regressor", "PFNFitted"]


class PFNFitted(Fitted):
    """A PFN with its context set encoded (:class:`ConditionedPFN`) and the padded data."""

    conditioned: ConditionedPFN
    x: Array
    y: Array
    num_train: Array  # an array, not a static int: one more point must not recompile

    def _check(self, x):
        if isinstance(x, jax.core.Tracer):
            return x
        x = check_inputs("x", x, self.x.shape[1])
        self.conditioned.pfn.check_range("x", x)
        return x

    def predict(self, x) -> BarPrediction:
        """Bar distributions of ``y`` at ``x`` ``(m, d)``."""
        return self.conditioned.predict(self._check(x))

    def posterior(self, x) -> BarPrediction:
        """The same as :meth:`predict`: a PFN predicts ``y`` (see module notes)."""
        return self.predict(x)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.num_train)
        return np.asarray(self.x)[:n], np.asarray(self.y)[:n]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        x, _ = self.observed()
        return {"f": np.asarray(self.predict(x).sample(key, (num_samples,)))}

    def _log_likelihood(self, draws, x, y) -> np.ndarray:
        lp = np.asarray(self.predict(x).log_prob(y), np.float64)
        return np.broadcast_to(lp, (len(draws["f"]), lp.shape[0])).copy()


class Regressor(Family):
    """A trained PFN as a regression family (see module notes).

    Parameters
    ----------
    pfn : str or PFN
        The name of a shipped network (:data:`probkit.inference.pfn.PRETRAINED`; default
        ``"gp-bo"``: Matern-5/2 GP prior with hyperpriors, ``d <= 6``, up to 127 observations,
        outputs standardised per dataset) or a user-trained :class:`PFN`.
    engine : {"amortised"}
        One forward pass of the transformer.

    Raises
    ------
    ValueError
        From ``fit`` and ``predict``: inputs outside the box the network was trained on
        (``pfn.config.x_bounds``, ``[0, 1]`` for the shipped ones), or, for a network trained in
        fixed output units, ``y`` outside its predictive's range. Rescale first (the BO loop
        works in the unit cube and standardises ``y`` itself).
    """

    name = "pfn"
    engines = {"amortised": "one forward pass of a prior-data fitted transformer"}

    pfn: Any = "gp-bo"
    engine: str = eqx.field(static=True, default="amortised")

    def __check_init__(self):
        if not isinstance(self.pfn, str | PFN):
            raise ValueError(f"pfn: expected a PFN or the name of a shipped one, got {self.pfn!r}")

    def network(self) -> PFN:
        """The PFN (loading a shipped one by name)."""
        return load_pretrained(self.pfn) if isinstance(self.pfn, str) else self.pfn

    def fit(self, x, y, *, key, progress_bar: bool = True) -> PFNFitted:
        """Encode the context set ``x`` ``(n, d)``, ``y`` ``(n,)``; ``key`` is unused (a PFN
        needs no fitting) but checked, for the contract."""
        check_key("key", key)
        x, y = check_regression_data(x, y)
        pfn = self.network()
        pfn.check_range("x", x)
        pfn.check_output_range("y", y)
        conditioned = pfn.condition(x, y)
        xp, yp = np.zeros((pfn.config.max_points, x.shape[1])), np.zeros(pfn.config.max_points)
        xp[: len(x)], yp[: len(y)] = x, y
        return PFNFitted(conditioned, xp, yp, np.asarray(len(x), np.int32))
