"""Shipped datasets load with the documented shapes and provenance facts."""

import numpy as np
import pytest

from probkit import datasets

SIZES = {"boston": (506, 13), "concrete": (1030, 8), "energy": (768, 8), "wine": (1599, 11),
         "yacht": (308, 6)}


@pytest.mark.parametrize("name", datasets.UCI_NAMES)
def test_uci_splits_partition_the_data(name):
    d = datasets.load_uci(name, split=3)
    n, p = SIZES[name]
    assert d["x_train"].shape[1] == d["x_test"].shape[1] == p
    assert d["x_train"].shape[0] + d["x_test"].shape[0] == n
    assert d["y_train"].ndim == 1


def test_boston_target_is_median_value():
    d = datasets.load_uci("boston", split=0)
    y = np.concatenate([d["y_train"], d["y_test"]])
    # MEDV is in $1000s, capped at 50 (Harrison & Rubinfeld 1978)
    assert y.min() == 5.0 and y.max() == 50.0 and np.sum(y == 50.0) == 16


def test_tensor_and_flint():
    syn = datasets.load_tensor("funbat_synthetic_r1")
    assert syn["tr_ind_CONTI"].shape == (675, 2)
    us = datasets.load_tensor("us_temp")
    assert tuple(us["shape"]) == (15, 95, 267) and us["fold4_te_ind"].shape == (11189, 3)
    fl = datasets.load_flint()
    assert fl["x"].shape == (7792, 10) and fl["z"].shape == (7792, 2)


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="name"):
        datasets.load_uci("iris")
    with pytest.raises(ValueError, match="split"):
        datasets.load_uci("yacht", split=10)
    with pytest.raises(ValueError, match="name"):
        datasets.load_tensor("nope")
