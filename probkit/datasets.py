"""Loaders for the small real datasets shipped in ``probkit/data`` (provenance in its README).

* :func:`load_uci` -- the UCI regression sets with the 10 standard train/test splits
  (Hernandez-Lobato & Adams 2015): boston, concrete, energy, wine, yacht.
* :func:`load_tensor` -- continuous-indexed tensors of the FunBaT paper (Fang et al. 2024).
* :func:`load_flint` -- Flint 2012 macaque reach, trial 1, as used by the discriminative
  Kalman filter paper (Burkhart et al. 2020).
* :func:`load_co2` -- monthly Mauna Loa atmospheric CO2, 1958-2001 (Keeling & Whorf 2004),
  a seasonal series for the state-space GPs.

Examples
--------
>>> from probkit.datasets import load_uci
>>> d = load_uci("yacht", split=0)
>>> d["x_train"].shape[1]
6
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["UCI_NAMES", "TENSOR_NAMES", "load_uci", "load_tensor", "load_flint",
           "load_co2"]

UCI_NAMES = ("boston", "concrete", "energy", "wine", "yacht")
TENSOR_NAMES = {"funbat_synthetic_r1": "funbat_synthetic_r1.npz",
                "us_temp": "us_temp_15x95x267.npz"}


def _data_path(*parts: str):
    return resources.files("probkit").joinpath("data", *parts)


def load_uci(name: str, split: int = 0) -> dict[str, np.ndarray]:
    """One of the 10 standard train/test splits of a UCI regression set.

    Parameters
    ----------
    name : {"boston", "concrete", "energy", "wine", "yacht"}
    split : int
        Split index in ``0..9``.

    Returns
    -------
    dict
        ``x_train``, ``y_train``, ``x_test``, ``y_test`` as float64 arrays (features and
        targets in original units; ``y`` is 1-D).
    """
    if name not in UCI_NAMES:
        raise ValueError(f"name: unknown UCI set {name!r}; choose one of {UCI_NAMES}")
    if not (isinstance(split, int) and 0 <= split <= 9):
        raise ValueError(f"split: expected an integer in 0..9, got {split!r}")
    base = ("uci", name)
    data = np.loadtxt(_data_path(*base, "data.txt"))
    feat = np.loadtxt(_data_path(*base, "index_features.txt"), dtype=int, ndmin=1)
    targ = int(np.loadtxt(_data_path(*base, "index_target.txt"), dtype=int))
    tr = np.loadtxt(_data_path(*base, "original", f"index_train_{split}.txt"), dtype=int)
    te = np.loadtxt(_data_path(*base, "original", f"index_test_{split}.txt"), dtype=int)
    x, y = data[:, feat], data[:, targ]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def load_tensor(name: str) -> dict[str, np.ndarray]:
    """A continuous-indexed tensor dataset of the FunBaT paper, as a dict of arrays.

    ``"funbat_synthetic_r1"``: ``tr_ind_CONTI``/``te_ind_CONTI`` (coordinates in [0, 1]),
    ``tr_y``/``te_y``, true factor curves ``U1_traj_true``, ``U2_traj_true``.
    ``"us_temp"``: integer grid indices per mode and 5 folds ``fold{k}_{tr,te}_{ind,y}``,
    grid ``shape`` (15, 95, 267).
    """
    if name not in TENSOR_NAMES:
        raise ValueError(f"name: unknown tensor set {name!r}; choose one of {list(TENSOR_NAMES)}")
    with _data_path("tensor", TENSOR_NAMES[name]).open("rb") as fh, np.load(fh) as npz:
        return {k: npz[k] for k in npz.files}


def load_flint(protocol_split: bool = False) -> dict[str, np.ndarray]:
    """Flint 2012 trial 1: ``x`` (7792, 10) neural features and ``z`` (7792, 2) hand velocity.

    With ``protocol_split=True`` return the DKF paper's split instead: ``x_train``, ``z_train``
    (rows 0..4999) and ``x_test``, ``z_test`` (rows 5000..5999).
    """
    folder = ("neural_decoding",)
    x = np.loadtxt(_data_path(*folder, "flint_trial1_x.csv"), delimiter=",")
    z = np.loadtxt(_data_path(*folder, "flint_trial1_z.csv"), delimiter=",")
    if protocol_split:
        return {"x_train": x[:5000], "z_train": z[:5000], "x_test": x[5000:6000],
                "z_test": z[5000:6000]}
    return {"x": x, "z": z}


def load_co2(start: float | None = None, stop: float | None = None) -> dict[str, np.ndarray]:
    """Monthly mean atmospheric CO2 at Mauna Loa, March 1958 - December 2001 (521 months).

    Means of the weekly values of the Scripps record (Keeling & Whorf 2004) within each
    calendar month; the 5 months without any weekly value are absent, so the times are
    sorted but not evenly spaced (provenance in ``probkit/data/README.md``).

    Parameters
    ----------
    start, stop : float, optional
        Keep the months with ``start <= time < stop`` (decimal years; default: all).

    Returns
    -------
    dict
        ``time`` (float64, decimal year of mid-month, ``year + (month - 0.5) / 12``),
        ``co2`` (float64, ppm), ``year``, ``month`` (1..12) and ``n_weeks`` (number of
        weekly values averaged), all 1-D of the same length.

    Raises
    ------
    ValueError
        ``start`` or ``stop`` not a finite number, or a window that keeps no month.

    Examples
    --------
    >>> from probkit.datasets import load_co2
    >>> d = load_co2()
    >>> d["co2"].shape, int(d["year"][0]), int(d["month"][0]), float(d["co2"][0])
    ((521,), 1958, 3, 316.1)
    >>> bool(load_co2(start=1990.0)["time"].min() > 1990.0)
    True
    """
    bounds = {}
    for name, value in (("start", start), ("stop", stop)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                        | np.floating):
            raise ValueError(f"{name}: expected a number (decimal year) or None, got {value!r}")
        if not np.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        bounds[name] = float(value)
    lines = [ln for ln in _data_path("co2", "co2_monthly.csv").read_text().splitlines()
             if ln and not ln.startswith("#")]
    # lines[0] is the header "year,month,co2,n_weeks"
    table = np.loadtxt(lines[1:], delimiter=",", ndmin=2)
    year, month = table[:, 0].astype(int), table[:, 1].astype(int)
    out = {"time": year + (month - 0.5) / 12.0, "co2": table[:, 2], "year": year,
           "month": month, "n_weeks": table[:, 3].astype(int)}
    keep = np.ones(year.shape[0], dtype=bool)
    if "start" in bounds:
        keep &= out["time"] >= bounds["start"]
    if "stop" in bounds:
        keep &= out["time"] < bounds["stop"]
    if not keep.any():
        raise ValueError(f"start, stop: the window [{start}, {stop}) keeps no month of the "
                         "record (1958.2 - 2002.0)")
    return {k: v[keep] for k, v in out.items()}
