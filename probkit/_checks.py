"""Input validation shared by every public entry point.

Each helper checks one property of one user-supplied argument eagerly (outside ``jit``)
and raises a :class:`ValueError` (or :class:`TypeError`) whose message starts with the
argument's name, says what was expected and what came. Nothing here imports the rest of
probkit, so every floor of the package may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

__all__ = [
    "as_array",
    "check_choice",
    "check_finite",
    "check_key",
    "check_positive",
    "check_positive_int",
    "check_regression_data",
    "check_rows",
    "check_same_length",
    "check_sorted",
    "check_spd",
    "check_square",
]


def as_array(name: str, value, *, ndim: int | Sequence[int] | None = None,
             dtype=None) -> np.ndarray:
    """Convert ``value`` to a NumPy array and check its number of dimensions.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : array_like
        User data.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    dtype : numpy dtype, optional
        Dtype to convert to (default: keep a float dtype, convert integers to float64).

    Returns
    -------
    numpy.ndarray
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name}: expected concrete data, got a traced value; "
                        "call this function outside jax.jit")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: could not convert to a numeric array ({err})") from None
    if dtype is None and not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name}: expected numeric data, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(f"{name}: expected an array with ndim in {allowed}, "
                             f"got shape {arr.shape}")
    return arr


def check_finite(name: str, value, *, allow_nan: bool = False) -> np.ndarray:
    """Raise ``ValueError`` if ``value`` holds inf, or NaN unless ``allow_nan``.

    Returns the input as a NumPy array.
    """
    arr = as_array(name, value)
    if arr.size == 0:
        raise ValueError(f"{name}: expected non-empty data, got shape {arr.shape}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if np.any(bad):
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"{name}: contains {what} at {int(np.sum(bad))} entries "
                         f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    return arr


def check_positive(name: str, value, *, allow_zero: bool = False) -> np.ndarray:
    """Raise ``ValueError`` unless every entry of ``value`` is finite and > 0 (>= 0)."""
    arr = as_array(name, value)
    ok = np.isfinite(arr) & ((arr >= 0) if allow_zero else (arr > 0))
    if not np.all(ok):
        bound = "non-negative" if allow_zero else "positive"
        shown = arr if arr.size < 8 else arr.ravel()[:8]
        raise ValueError(f"{name}: must be finite and {bound}, got {shown}")
    return arr


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_same_length(**arrays) -> int:
    """Raise ``ValueError`` unless all given arrays share their leading dimension."""
    lengths = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"{', '.join(lengths)}: lengths differ ({desc})")
    return next(iter(lengths.values()))


def check_sorted(name: str, value, *, strict: bool = True) -> np.ndarray:
    """Raise ``ValueError`` unless a 1-D array is (strictly) increasing."""
    arr = check_finite(name, as_array(name, value, ndim=1))
    d = np.diff(arr)
    bad = d <= 0 if strict else d < 0
    if np.any(bad):
        i = int(np.argmax(bad))
        kind = "strictly increasing (no duplicates)" if strict else "non-decreasing"
        raise ValueError(f"{name}: must be {kind}; entry {i + 1} ({arr[i + 1]}) "
                         f"follows {arr[i]}")
    return arr


def check_key(name: str, key) -> jax.Array:
    """Raise ``TypeError``-free ``ValueError`` unless ``key`` is one JAX PRNG key.

    Both new-style typed keys (``jax.random.key``, shape ``()``) and raw ``uint32[2]`` keys
    (``jax.random.PRNGKey``) are accepted; an array of keys (``jax.random.split(key, n)``) is
    not.
    """
    if isinstance(key, jax.Array | np.ndarray):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == np.uint32 and key.shape == (2,):
            return jax.numpy.asarray(key)
    raise ValueError(f"{name}: expected a JAX PRNG key (jax.random.key(0) or "
                     f"jax.random.PRNGKey(0)), got {type(key).__name__} "
                     f"{getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}")


def check_regression_data(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate regression data: finite, non-empty ``x`` of shape ``(n, d)`` and ``y`` ``(n,)``."""
    x = check_finite("x", as_array("x", x, ndim=2))
    y = check_finite("y", as_array("y", y, ndim=1))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x, y: lengths differ (x has {x.shape[0]}, y has {y.shape[0]})")
    if x.shape[0] == 0:
        raise ValueError("x: empty data (0 rows); at least one observation is needed")
    return x, y


def check_choice(name: str, value, choices: Sequence) -> object:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name}: expected one of {sorted(map(str, choices))}, got {value!r}")
    return value


def check_square(name: str, value, dim: int | None = None) -> np.ndarray:
    """Raise ``ValueError`` unless ``value`` is a finite square matrix (``(dim, dim)`` if given)."""
    arr = as_array(name, value, ndim=2)
    if arr.shape[0] != arr.shape[1] or (dim is not None and arr.shape[0] != dim):
        want = f"({dim}, {dim})" if dim is not None else "a square (D, D) matrix"
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def check_spd(name: str, value, dim: int | None = None) -> np.ndarray:
    """Raise ``ValueError`` unless ``value`` is a symmetric positive definite matrix.

    Symmetry is checked to a tolerance relative to the largest entry, definiteness by a
    Cholesky factorisation; the message gives the asymmetry or the smallest eigenvalue.
    """
    arr = check_square(name, value, dim)
    scale = max(1.0, float(np.max(np.abs(arr))))
    if not np.allclose(arr, arr.T, rtol=1e-8, atol=1e-10 * scale):
        raise ValueError(f"{name}: must be symmetric (max |{name} - {name}^T| = "
                         f"{float(np.max(np.abs(arr - arr.T))):.3g})")
    try:
        np.linalg.cholesky(arr)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name}: must be positive definite (smallest eigenvalue "
                         f"{float(np.linalg.eigvalsh(arr)[0]):.3g})") from None
    return arr


def check_rows(name: str, value, *, ndim: int | Sequence[int], allow_nan_rows: bool = False
               ) -> np.ndarray:
    """Non-empty data with no inf; NaN only as whole rows (last axis) if ``allow_nan_rows``.

    For sequences where a row of NaN marks a missing observation (a filter skips its update);
    a partly NaN row is always an error.
    """
    arr = as_array(name, value, ndim=ndim)
    if arr.size == 0:
        raise ValueError(f"{name}: expected non-empty data, got shape {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name}: contains inf at {int(np.sum(np.isinf(arr)))} entries")
    nan = np.isnan(arr)
    if not allow_nan_rows and nan.any():
        raise ValueError(f"{name}: contains NaN at {int(nan.sum())} entries "
                         f"(first at index {tuple(int(i) for i in np.argwhere(nan)[0])})")
    partial = nan.any(-1) & ~nan.all(-1)
    if partial.any():
        idx = tuple(int(i) for i in np.argwhere(partial)[0])
        raise ValueError(f"{name}: row {idx} is partly NaN; a missing observation must be a "
                         "whole row of NaN (non-finite values elsewhere are not allowed)")
    return arr


def check_hyperparameter(name: str, value, *, scalar: bool = False):
    """``value`` as a JAX array, checked finite and positive (and a scalar, with ``scalar``)
    unless it is traced: a sampler's proposal inside a model is left to the model's support."""
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value)):
        arr = check_positive(name, value)
        if scalar and arr.ndim:
            raise ValueError(f"{name}: expected a scalar, got shape {arr.shape}")
    return jax.numpy.asarray(value)
