"""Cases of the family contract test (tests/test_contract.py): one module per family defines
``CASES``, a list of :class:`Case`. Each case is a small dataset and a family configuration that
fits in a few seconds."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Case:
    """A family on a small dataset.

    ``x``/``y`` train, ``x_new``/``y_new`` are held out. ``box``: the family takes points of a box
    as inputs and so runs as a BO surrogate. ``bo_family``: a cheaper configuration for the three
    BO steps (default ``family``). ``bo_skip``: a reason to skip those steps here (a known fault of
    the installed jax), or ``None``. ``exact_log_prob``: ``predict(x).log_prob`` is a normalised
    density (checked by quadrature). ``joint``: ``posterior`` samples are joint over the points.
    """

    name: str
    family: Any
    x: np.ndarray
    y: np.ndarray
    x_new: np.ndarray
    y_new: np.ndarray
    box: bool = True
    bo_family: Any = None
    bo_skip: str | None = None
    exact_log_prob: bool = True
    fit_kwargs: dict = dataclasses.field(default_factory=dict)


def regression_data(n: int = 24, d: int = 2, seed: int = 0, noise: float = 0.1):
    """A smooth function of ``d`` inputs in the unit cube, with ``n`` training and 8 new points."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n + 8, d))
    f = np.sin(3 * x[:, 0]) + (x[:, 1] - 0.5) ** 2 if d > 1 else np.sin(6 * x[:, 0])
    y = f + noise * rng.normal(size=n + 8)
    return x[:n], y[:n], x[n:], y[n:]
