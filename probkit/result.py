"""The one result type that every probkit engine returns, and its conversion to ArviZ.

A :class:`Result` is a plain container of NumPy arrays grouped the way ArviZ groups them:

* ``posterior``: ``{site: (chain, draw, *event)}`` constrained draws (and deterministic sites);
* ``sample_stats``: ``{stat: (chain, draw)}`` e.g. ``diverging``, ``acceptance_rate``,
  ``step_size``, ``tree_depth``, ``n_steps``, ``energy``, ``lp``;
* ``observed_data``: ``{site: (*shape)}``;
* ``log_likelihood``: ``{site: (chain, draw, *obs_shape)}`` pointwise, for ``az.loo``;
* ``posterior_predictive``: ``{site: (chain, draw, *obs_shape)}``;
* ``attrs``: free-form metadata (engine name, timings, settings).

Fitted models of every family build one in :meth:`probkit.models.base.Fitted.to_arviz`
(independent draws split into ``num_chains`` chains, 4 by default).

Examples
--------
>>> import numpy as np
>>> from probkit.result import Result
>>> r = Result(posterior={"mu": np.random.default_rng(0).normal(size=(2, 100))})
>>> idata = r.to_arviz()
>>> group_names(idata)
['posterior']
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Result", "group_names", "import_arviz", "loo_elpd", "to_inference_data"]

_GROUPS = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
           "observed_data", "constant_data", "predictions", "predictions_constant_data")
_DRAWN = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "predictions")


def _as_numpy_dict(d: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    return {} if d is None else {k: np.asarray(v) for k, v in d.items()}


@dataclasses.dataclass(frozen=True)
class Result:
    """Draws, sample statistics and data of one inference run.

    Parameters
    ----------
    posterior : dict of str to array
        Draws per site with leading ``(chain, draw)`` axes.
    sample_stats : dict of str to array, optional
        Per-draw sampler statistics with shape ``(chain, draw)``.
    observed_data : dict of str to array, optional
        The data that were conditioned on.
    log_likelihood : dict of str to array, optional
        Pointwise log-likelihood per observed site, ``(chain, draw, *obs_shape)``.
    posterior_predictive : dict of str to array, optional
        Replicated data, ``(chain, draw, *obs_shape)``.
    constant_data : dict of str to array, optional
        Inputs of the conditioned data (e.g. ``x``).
    predictions : dict of str to array, optional
        Out-of-sample predictive draws at new inputs, ``(chain, draw, *shape)``.
    predictions_constant_data : dict of str to array, optional
        The new inputs and any held-out outputs there (never part of ``log_likelihood``).
    attrs : dict, optional
        Metadata such as the engine name and wall times.
    """

    posterior: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    sample_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    posterior_predictive: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    predictions_constant_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for group in _GROUPS:
            object.__setattr__(self, group, _as_numpy_dict(getattr(self, group)))
        for group in _DRAWN:
            for name, value in getattr(self, group).items():
                if value.ndim < 2:
                    raise ValueError(f"{group}[{name!r}]: expected leading (chain, draw) "
                                     f"axes, got shape {value.shape}")

    def _leading_shape(self) -> tuple[int, ...]:
        first = next(iter({**self.posterior_predictive, **self.posterior}.values()))
        return first.shape

    @property
    def num_chains(self) -> int:
        """Number of chains (leading axis of the draws)."""
        return int(self._leading_shape()[0])

    @property
    def num_draws(self) -> int:
        """Number of draws per chain."""
        return int(self._leading_shape()[1])

    def get_samples(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        """Posterior draws, like ``numpyro.infer.MCMC.get_samples``.

        With ``group_by_chain=False`` the chain and draw axes are merged.
        """
        if group_by_chain:
            return dict(self.posterior)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.posterior.items()}

    def to_arviz(self):
        """Convert to an ArviZ ``InferenceData`` (ArviZ < 1) or ``DataTree`` (ArviZ >= 1)."""
        return to_inference_data({g: getattr(self, g) for g in _GROUPS}, self.attrs)

    def summary(self, var_names=None, **kwargs) -> str:
        """Print and return ArviZ's summary table (mean, sd, interval, ESS, R-hat)."""
        table = import_arviz().summary(self.to_arviz(), var_names=var_names, **kwargs)
        text = table.to_string()
        print(text)
        return text


def import_arviz():
    """Import ArviZ without the notice ArviZ 0.23 prints on import (a ``FutureWarning`` about
    its 1.0 refactor).

    probkit works with both major versions (see :func:`to_inference_data`), so the notice
    asks nothing of its users. Importing ArviZ directly afterwards does not print it either
    (the module is imported once).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor",
                                category=FutureWarning)
        import arviz

    return arviz


def _arviz_major() -> int:
    return int(import_arviz().__version__.split(".")[0])


def _attrs_for_netcdf(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only metadata that netCDF can store (numbers and strings)."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bool | np.bool_):
            out[k] = int(v)
        elif isinstance(v, str | int | float | np.number):
            out[k] = v.item() if isinstance(v, np.number) else v
        else:
            out[k] = str(v)
    return out


def group_names(data) -> list[str]:
    """Names of the groups of ArviZ data, on either major ArviZ version.

    ArviZ 0.x ``InferenceData.groups()`` is a method returning names; ArviZ 1.x data is an
    xarray ``DataTree`` whose ``groups`` is a tuple of paths (``"/"``, ``"/posterior"``, ...).
    This returns the top-level names in both cases.

    Examples
    --------
    >>> import numpy as np
    >>> from probkit.result import Result, group_names
    >>> group_names(Result(posterior={"mu": np.zeros((1, 5))}).to_arviz())
    ['posterior']
    """
    groups = getattr(data, "groups", None)
    if callable(groups):
        return list(groups())
    return list(data.children)


def loo_elpd(loo) -> tuple[float, float]:
    """``(elpd, se)`` of the result of ``arviz.loo``, on either major ArviZ version.

    ArviZ 0.x names the estimate ``elpd_loo`` (an ``ELPDData`` Series); ArviZ 1.x
    (``arviz_stats``) names it ``elpd``. Both name its standard error ``se``.

    Examples
    --------
    >>> import arviz as az, numpy as np
    >>> from probkit.result import Result, loo_elpd
    >>> rng = np.random.default_rng(0)
    >>> res = Result(posterior={"mu": rng.normal(size=(2, 200))},
    ...              log_likelihood={"y": -1.0 + 0.1 * rng.normal(size=(2, 200, 5))},
    ...              observed_data={"y": np.zeros(5)})
    >>> elpd, se = loo_elpd(az.loo(res.to_arviz()))
    >>> bool(-5.5 < elpd < -4.5)
    True
    """
    elpd = loo.elpd_loo if hasattr(loo, "elpd_loo") else loo.elpd
    return float(elpd), float(loo.se)


def to_inference_data(groups: Mapping[str, Mapping[str, Any]], attrs: Mapping[str, Any]
                      | None = None):
    """Build ArviZ data from a plain dict of groups, on either major ArviZ version.

    ArviZ 0.x takes one keyword per group in ``az.from_dict``; ArviZ 1.x takes a single
    dict of groups and returns an xarray ``DataTree``. Empty groups are dropped.
    """
    az = import_arviz()
    present = {g: dict(v) for g, v in groups.items() if v}
    meta = _attrs_for_netcdf(attrs or {})
    if _arviz_major() >= 1:  # pragma: no cover - exercised on Python >= 3.12
        tree = az.from_dict(present)
        tree.attrs.update(meta)
        return tree
    idata = az.from_dict(**present)
    for group in group_names(idata):
        getattr(idata, group).attrs.update(meta)
    return idata
