"""Loaders for the small real datasets shipped in ``probkit/data`` (provenance in its README).

* :func:`load_uci` -- the UCI regression sets with the 10 standard train/test splits
  (Hernandez-Lobato & Adams 2015): boston, concrete, energy, wine, yacht.
* :func:`load_tensor` -- continuous-indexed tensors of the FunBaT paper (Fang et al. 2024).
* :func:`load_flint` -- Flint 2012 macaque reach, trial 1, as used by the discriminative
  Kalman filter paper (Burkhart et al. 2020).

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

__all__ = ["UCI_NAMES", "TENSOR_NAMES", "load_uci", "load_tensor", "load_flint"]

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
