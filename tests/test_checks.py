"""Input validation helpers: each names the argument in its error."""

import jax
import numpy as np
import pytest

from probkit import _checks as c


def test_finite_positive_sorted_and_lengths():
    with pytest.raises(ValueError, match="^y: contains NaN or inf"):
        c.check_finite("y", [1.0, np.nan])
    assert c.check_finite("y", [1.0, np.nan], allow_nan=True).shape == (2,)
    with pytest.raises(ValueError, match="^y: expected non-empty"):
        c.check_finite("y", [])
    with pytest.raises(ValueError, match="^s: must be finite and positive"):
        c.check_positive("s", [1.0, 0.0])
    with pytest.raises(ValueError, match="^t: must be strictly increasing"):
        c.check_sorted("t", [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="x, y: lengths differ"):
        c.check_same_length(x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(ValueError, match="^x: expected an array with ndim"):
        c.as_array("x", np.zeros((2, 2, 2)), ndim=(1, 2))
    with pytest.raises(ValueError, match="^n: expected an integer >= 1"):
        c.check_positive_int("n", 0)
    with pytest.raises(ValueError, match="^n: expected an integer"):
        c.check_positive_int("n", 2.0)


def test_keys():
    assert c.check_key("key", jax.random.key(0)) is not None
    assert c.check_key("key", jax.random.PRNGKey(0)).shape == (2,)
    for bad in (0, np.zeros(2), np.zeros(3, np.uint32)):
        with pytest.raises(ValueError, match="^key: expected a JAX PRNG key"):
            c.check_key("key", bad)


def test_square_spd_and_rows():
    assert c.check_square("A", np.eye(2), 2).shape == (2, 2)
    with pytest.raises(ValueError, match=r"^A: expected shape \(3, 3\)"):
        c.check_square("A", np.eye(2), 3)
    with pytest.raises(ValueError, match="^A: expected shape a square"):
        c.check_square("A", np.ones((2, 3)))
    with pytest.raises(ValueError, match="^A: contains NaN or inf"):
        c.check_square("A", np.array([[1.0, np.inf], [0.0, 1.0]]))
    assert c.check_spd("S", 2 * np.eye(3)).shape == (3, 3)
    with pytest.raises(ValueError, match="^S: must be symmetric"):
        c.check_spd("S", np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="^S: must be positive definite"):
        c.check_spd("S", np.array([[1.0, 2.0], [2.0, 1.0]]))
    rows = np.zeros((4, 2))
    rows[1] = np.nan                                   # a whole missing row
    assert c.check_rows("x", rows, ndim=2, allow_nan_rows=True).shape == (4, 2)
    with pytest.raises(ValueError, match="^x: contains NaN at 2 entries"):
        c.check_rows("x", rows, ndim=2)
    rows[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"^x: row \(2,\) is partly NaN"):
        c.check_rows("x", rows, ndim=2, allow_nan_rows=True)
    rows[3, 1] = -np.inf
    with pytest.raises(ValueError, match="^x: contains inf"):
        c.check_rows("x", rows, ndim=2, allow_nan_rows=True)
    with pytest.raises(ValueError, match="^x: expected non-empty"):
        c.check_rows("x", np.zeros((0, 2)), ndim=(2, 3))
    with pytest.raises(ValueError, match="^x: expected an array with ndim"):
        c.check_rows("x", np.zeros(3), ndim=(2, 3))
