r"""FunBaT settings, checks and the data layout of the CEP engine.

:class:`TuckerConfig` holds the static settings (a change recompiles, new data of the same padded
sizes do not); :func:`prepare_data` turns coordinates ``x`` ``(N, K)`` and targets ``y`` ``(N,)``
into :class:`TuckerData`: the sorted unique coordinates of every mode (its *grid*), each datum's
position in every grid, and per mode a tree of index prefixes over which the CEP messages are
summed. Every array is padded to a power of two (at least 16), so fits on data of similar size
(the steps of a Bayesian-optimisation loop) share one compiled epoch; padded grid points lie after
the last coordinate and carry no message, which leaves every smoothed marginal unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jax import Array

from probkit._checks import as_array, check_choice, check_positive, check_regression_data
from probkit.kernels import Kernel, Matern12, Matern32, Matern52
from probkit.statespace import SDE

__all__ = ["TuckerConfig", "TuckerData", "prepare_data", "bucket", "factor_kernels", "gram",
           "kron_rows", "per_mode", "check_nu", "check_damping"]

MATERN = {0.5: Matern12, 1.5: Matern32, 2.5: Matern52}
#: Floats per streamed chunk of Kronecker moments.
CHUNK_FLOATS = 2**21


class TuckerConfig(NamedTuple):
    r"""Static settings of the CEP engine (hashable: a change recompiles, data changes do not).

    Attributes
    ----------
    rank : int
        :math:`R`, the number of latent functions per mode (core :math:`R^K`).
    num_modes : int
        :math:`K`.
    cp : bool
        Fix the core to the super-diagonal of ones (FunBaT-CP).
    damping_factors, damping_noise, damping_core : float
        Weight :math:`\rho` on the *old* message in the damped update, in [0, 1).
    a0, b0 : float
        Gamma prior of the noise precision.
    core_prior_var : float
        :math:`\sigma_W^2`.
    mode_solver : {"kalman", "dense"}
        Factor posterior by the Kalman/RTS smoother (O(I R^3 d^3)) or, as an exact
        reference, by a dense Gaussian solve with the kernel's Gram matrix (O(I^3 R^3)).
    chunk : int
        Keys per streamed chunk when forming the Kronecker moments (0: automatic, about
        2M floats per chunk).
    """

    rank: int
    num_modes: int
    cp: bool = False
    damping_factors: float = 0.5
    damping_noise: float = 0.5
    damping_core: float = 0.5
    a0: float = 1.0
    b0: float = 1.0
    core_prior_var: float = 1.0
    mode_solver: str = "kalman"
    chunk: int = 0


class TuckerData(NamedTuple):
    """Training data laid out for the engine (see :func:`prepare_data`).

    The per-coordinate sums of mode ``k`` are accumulated over a tree of index prefixes
    ``(i_k)`` <- ``(i_k, i_a1)`` <- ... <- ``(i_k, i_a1, ..., i_a{K-1})`` (the other modes in
    increasing order, leaves = unique index tuples), so the :math:`R^{2(K-1)}` Kronecker
    moments are formed once per unique ``(i_k, i_a1)`` pair rather than once per datum.

    Attributes
    ----------
    positions : Array, shape (N', K) int32
        Position of each datum's coordinate in each mode's grid (padded with zeros to a
        power of two N' >= N).
    y : Array, shape (N',)
    grids : tuple of Array, shapes (I'_k,)
        Sorted unique training coordinates per mode, padded to a power of two with points after
        the last one.
    observed : tuple of Array, shapes (I'_k,) bool
        Whether a grid point carries data (False exactly on the padding).
    leaf_count, leaf_ysum : tuple (per mode) of Array, shapes (n_leaf,)
        Number of data and sum of ``y`` per unique index tuple.
    levels : tuple (per mode) of tuple of (coord, parent) int32 arrays
        From the leaves up: ``coord`` is the grid position of the level's mode for each key,
        ``parent`` the key's prefix one level up (level 1 parents are positions in mode k).
    sum_y2 : Array, scalar
        Sum of squared targets.
    num_data : Array, scalar
        :math:`N`.
    """

    positions: Array
    y: Array
    grids: tuple
    observed: tuple
    leaf_count: tuple
    leaf_ysum: tuple
    levels: tuple
    sum_y2: Array
    num_data: Array


# ----------------------------------------------------------------------------- checks


def per_mode(name: str, value, num_modes: int) -> np.ndarray:
    """A positive scalar or one positive value per mode, as an array ``(num_modes,)``."""
    arr = check_positive(name, np.atleast_1d(as_array(name, value)).astype(np.float64))
    if arr.ndim != 1 or arr.shape[0] not in (1, num_modes):
        raise ValueError(f"{name}: expected a scalar or one value per mode ({num_modes}), "
                         f"got shape {arr.shape}; does x have the right number of columns?")
    return np.broadcast_to(arr, (num_modes,)).copy()


def check_nu(nu) -> float:
    """Matern smoothness: 0.5, 1.5 or 2.5."""
    return float(check_choice("nu", nu, tuple(MATERN)))


def check_damping(damping) -> tuple[float, float, float]:
    """A weight in [0, 1) or three of them (factors, noise, core)."""
    damp = np.atleast_1d(np.asarray(damping, dtype=np.float64))
    if damp.shape not in ((1,), (3,)) or not np.all((damp >= 0.0) & (damp < 1.0)):
        raise ValueError("damping: expected a weight in [0, 1) or three of them (factors, noise, "
                         f"core), got {damping!r}")
    return tuple(float(d) for d in np.broadcast_to(damp, (3,)))


# ----------------------------------------------------------------------------- layout


def bucket(n: int) -> int:
    """Smallest power of two >= max(n, 16): padded sizes keep recompilation rare."""
    return max(16, 1 << (int(n) - 1).bit_length())


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


def chunk_size(config: TuckerConfig) -> int:
    """Keys per streamed chunk of the top prefix level."""
    if config.chunk:
        return int(config.chunk)
    P = config.rank if config.cp else config.rank ** (config.num_modes - 1)
    return int(max(1, CHUNK_FLOATS // max(P * P, 1)))


def _prefix_tree(pos: np.ndarray, y: np.ndarray, k: int):
    """Leaves (unique index tuples) and the prefix levels of mode ``k`` (see TuckerData)."""
    K = pos.shape[1]
    cols = [k] + [j for j in range(K) if j != k]
    keys, leaf = np.unique(pos[:, cols], axis=0, return_inverse=True)
    leaf = leaf.reshape(-1)
    count = np.bincount(leaf, minlength=len(keys)).astype(np.float64)
    ysum = np.bincount(leaf, weights=y, minlength=len(keys))
    levels = []
    for lev in range(K - 1, 0, -1):
        coord = keys[:, lev].astype(np.int32)
        if lev == 1:
            parent = keys[:, 0].astype(np.int32)
        else:
            keys, parent = np.unique(keys[:, :lev], axis=0, return_inverse=True)
            parent = parent.reshape(-1).astype(np.int32)
        levels.append((coord, parent))
    if K == 1:
        count = np.bincount(keys[:, 0], weights=count)
        ysum = np.bincount(keys[:, 0], weights=ysum)
        return count, ysum, ()
    # Every level padded to a power-of-two number of keys (zero counts, parent 0).
    count, ysum = _pad(count, bucket(len(count))), _pad(ysum, bucket(len(ysum)))
    levels = [(_pad(c, bucket(len(c))), _pad(p, bucket(len(p)))) for c, p in levels]
    return count, ysum, tuple(levels)


def _pad_grid(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grid padded with unit-spaced points after its last one, and the observed mask."""
    size = bucket(len(grid))
    extra = grid[-1] + np.arange(1, size - len(grid) + 1, dtype=np.float64)
    return np.concatenate([grid, extra]), np.arange(size) < len(grid)


def prepare_data(x, y, config: TuckerConfig) -> TuckerData:
    """Validate training data and lay it out for :func:`probkit.models.tucker.cep.cep_step`.

    Parameters
    ----------
    x : array_like, shape (N, K)
        Continuous coordinates, finite.
    y : array_like, shape (N,)
        Finite targets.
    config : TuckerConfig

    Returns
    -------
    TuckerData
        NumPy arrays (convert inside a float64 context). Grid lengths ``I'_k``, the number of
        rows ``N'`` and the prefix levels are padded to powers of two.
    """
    x, y = check_regression_data(x, y)
    if x.shape[1] != config.num_modes:
        raise ValueError(f"x: expected {config.num_modes} columns (one per mode), "
                         f"got {x.shape[1]} (shape {x.shape})")
    grids, observed, pos = [], [], []
    for k in range(config.num_modes):
        g, inv = np.unique(x[:, k], return_inverse=True)
        g, obs = _pad_grid(g)
        grids.append(g)
        observed.append(obs)
        pos.append(inv.reshape(-1).astype(np.int32))
    pos = np.stack(pos, 1)
    trees = [_prefix_tree(pos, y, k) for k in range(config.num_modes)]
    n = bucket(len(y))
    return TuckerData(_pad(pos, n), _pad(y, n), tuple(grids), tuple(observed),
                      tuple(t[0] for t in trees), tuple(t[1] for t in trees),
                      tuple(t[2] for t in trees), np.asarray(np.sum(y * y)),
                      np.asarray(float(len(y))))


# ----------------------------------------------------------------------------- shared algebra


def factor_kernels(kernel, num_modes: int, nu: float = 0.5, lengthscale=None,
                   variance=None) -> tuple:
    """The prior kernel of every mode's latent functions.

    ``kernel``: one kernel of :mod:`probkit.kernels` (or an SDE of :mod:`probkit.statespace`)
    for every mode, or a sequence of ``num_modes`` of them; ``None``: Matern-``nu`` with the
    per-mode ``lengthscale`` and ``variance`` (arrays ``(num_modes,)``, possibly traced).

    Raises
    ------
    ValueError
        ``kernel`` is not a kernel, or a sequence of another length than ``num_modes``.
    """
    if kernel is None:
        cls = MATERN[check_nu(nu)]
        return tuple(cls(lengthscale[k], variance[k]) for k in range(num_modes))
    kernels = tuple(kernel) if isinstance(kernel, tuple | list) else (kernel,) * num_modes
    if len(kernels) != num_modes:
        raise ValueError(f"kernel: expected one kernel or one per mode ({num_modes}), "
                         f"got {len(kernels)}; does x have the right number of columns?")
    for k in kernels:
        if not isinstance(k, Kernel | SDE):
            raise ValueError("kernel: expected a kernel of probkit.kernels or an SDE of "
                             f"probkit.statespace, got {type(k).__name__}")
    return kernels


def gram(kernel, x1: Array, x2: Array) -> Array:
    """Covariance matrix of 1-D inputs under a factor kernel (dense kernel or SDE)."""
    return kernel.gram(x1, x2) if isinstance(kernel, SDE) else kernel(x1, x2)


def kron_rows(a: Array, b: Array) -> Array:
    """Row-wise Kronecker product of (n, p) and (n, q) -> (n, p q)."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)

