r"""Functional Bayesian Tucker decomposition (FunBaT) with state-space GP factors.

Fang, Yu, Wang, Li, Kirby & Zhe, "Functional Bayesian Tucker Decomposition for
Continuous-indexed Tensor Data", ICLR 2024 (arXiv:2311.04829).

Model
-----
An entry :math:`n` has a continuous index :math:`(i^n_1, \dots, i^n_K)` and a value

.. math::

    y_n = \operatorname{vec}(\mathcal W)^\top
          \big(u^1(i^n_1) \otimes \cdots \otimes u^K(i^n_K)\big) + \varepsilon_n,
    \qquad \varepsilon_n \sim \mathcal N(0, \tau^{-1}),

with :math:`u^k = (u^k_1, \dots, u^k_R)` independent Matern GPs per mode (lengthscale
:math:`\ell_k`, variance :math:`s^2_k`, smoothness :math:`\nu \in \{1/2, 3/2, 5/2\}`),
core :math:`\operatorname{vec}\mathcal W \sim \mathcal N(0, \sigma_W^2 I)` of size
:math:`R^K` and :math:`\tau \sim \mathrm{Gamma}(a_0, b_0)`. The CP variant fixes
:math:`\mathcal W` to the super-diagonal of ones, so the Kronecker product becomes a
Hadamard product: :math:`y_n = \sum_r \prod_k u^k_r(i^n_k) + \varepsilon_n`.

Two ways to fit it:

* :func:`tucker_model` -- the model written in NumPyro (dense, non-centred GP factors on the
  unique coordinates), for NUTS/SVI on small data;
* :func:`fit` -- conditional expectation propagation (CEP), the paper's engine, with
  :math:`q = \prod_k q(u^k) \, q(\mathcal W) \, q(\tau)`. One epoch:

  1. for each mode :math:`k`, the message of datum :math:`n` to :math:`u^k(i^n_k)` is
     Gaussian with precision :math:`E[\tau] E[a_n a_n^\top]` and shift
     :math:`E[\tau] y_n E[a_n]`, :math:`a_n = \mathcal W_{(k)} \bigotimes_{j \ne k} u^j(i^n_j)`,
     where :math:`E[a_n a_n^\top]_{rs} = \sum_{pq} E[\mathcal W_{(k)rp}\mathcal W_{(k)sq}]
     \big(\bigotimes_{j\ne k} E[u^j u^{j\top}]\big)_{pq}` uses the full core covariance.
     Messages are summed per unique coordinate value (segment sums), damped
     (:math:`\Lambda \leftarrow \rho\Lambda_{old} + (1-\rho)\Lambda_{new}`), and enter *one*
     Kalman filter + RTS smoother (:func:`probkit.inference.message_passing.rts_smoother`)
     over the sorted unique coordinates as whitened pseudo-observations
     :math:`L_i^{-1}\eta_i = L_i^\top H x_i + e`, :math:`e \sim \mathcal N(0, I)`,
     :math:`\Lambda_i = L_i L_i^\top` (equivalent to observing :math:`\Lambda_i^{-1}\eta_i`
     with covariance :math:`\Lambda_i^{-1}`, without inverting :math:`\Lambda_i`);
     :math:`H` selects the :math:`R` function values from the stacked state.
  2. core: :math:`\Sigma_W = (\Lambda_W + \sigma_W^{-2} I)^{-1}`,
     :math:`\mu_W = \Sigma_W \eta_W` with damped :math:`\Lambda_W = E[\tau]\sum_n E[z_n z_n^\top]`,
     :math:`\eta_W = E[\tau] \sum_n y_n E[z_n]`, :math:`z_n = \bigotimes_k u^k(i^n_k)`;
  3. noise: :math:`q(\tau) = \mathrm{Gamma}(a_0 + N/2, b_0 + \tfrac12\sum_n E[(y_n - f_n)^2])`
     with the expected squared error using the core *and* factor covariances (damped sum).

  The per-coordinate sums run up a tree of index prefixes (leaves: unique index tuples), so
  the :math:`R^{2(K-1)}` Kronecker moments are formed once per unique pair
  :math:`(i_k, i_{a_1})`, streamed in chunks; memory is
  :math:`O(N R^{K} + \sum_k I_k R^{2(K-1)} + R^{2K})`, never :math:`O(N R^{2K})`. The core's
  sufficient statistics are assembled from the last mode's per-coordinate sums, so no pass
  over the data builds :math:`R^{2K}` objects.

Prediction at coordinates never seen in training inserts them into each mode's sorted grid
as observation-free (NaN) steps of the filter/smoother, started at the smallest coordinate
from the stationary state; the smoothed marginals are exact for interpolation and
extrapolation under the fitted messages. Predictive mean
:math:`E[\mathcal W]^\top \bigotimes_k E[u^k]` and variance
:math:`\operatorname{tr}(E[WW^\top] \bigotimes_k E[u^k u^{k\top}]) - \text{mean}^2`
(plus :math:`E[1/\tau]` with ``include_noise``).

Differences from the authors' code (see the paper note): the GP prior is counted once (no
extra :math:`I/v` per coordinate), the core prior :math:`N(0, \sigma_W^2 I)` is used and its
covariance enters the factor and noise messages, prediction at new coordinates is exact
smoothing, and all randomness comes from the explicit ``key``.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models import tucker
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(size=(300, 2))
>>> y = np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])
>>> fitted = tucker.fit(x, y, rank=1, cp=True, nu=1.5, lengthscale=0.3, num_epochs=30,
...                     key=jax.random.key(0))
>>> pred = fitted.predict(rng.uniform(size=(5, 2)))
>>> pred.mean.shape, pred.variance.shape
((5,), (5,))
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array, lax
from jax.scipy.linalg import solve_triangular

from probkit import statespace
from probkit._checks import as_array, check_finite, check_key, check_positive, check_positive_int
from probkit.inference.message_passing import LGSSM, rts_smoother
from probkit.kernels import Matern12, Matern32, Matern52
from probkit.result import Result

__all__ = [
    "TuckerConfig",
    "TuckerData",
    "CEPState",
    "Prediction",
    "TuckerFit",
    "tucker_model",
    "prepare_data",
    "cep_init",
    "cep_step",
    "mode_posterior",
    "fit",
]

_MATERN = {0.5: Matern12, 1.5: Matern32, 2.5: Matern52}
_CHUNK_FLOATS = 2**21  # floats per streamed chunk of Kronecker moments


# ----------------------------------------------------------------------------- containers


class TuckerConfig(NamedTuple):
    """Static settings of the CEP engine (hashable: a change recompiles, data changes do not).

    Attributes
    ----------
    rank : int
        :math:`R`, the number of latent functions per mode (core :math:`R^K`).
    num_modes : int
        :math:`K`.
    cp : bool
        Fix the core to the super-diagonal of ones (FunBaT-CP).
    nu : float
        Matern smoothness, 0.5, 1.5 or 2.5.
    damping_factors, damping_noise, damping_core : float
        Weight :math:`\\rho` on the *old* message in the damped update, in [0, 1).
    a0, b0 : float
        Gamma prior of the noise precision.
    core_prior_var : float
        :math:`\\sigma_W^2`.
    mode_solver : {"kalman", "dense"}
        Factor posterior by the Kalman/RTS smoother (O(I R^3 d^3)) or, as an exact
        reference, by a dense Gaussian solve with the Matern Gram matrix (O(I^3 R^3)).
    chunk : int
        Keys per streamed chunk when forming the Kronecker moments (0: automatic, about
        2M floats per chunk).
    """

    rank: int
    num_modes: int
    cp: bool = False
    nu: float = 0.5
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
        power of two N' >= N, like the tree levels, so similar sizes share one compilation).
    y : Array, shape (N',)
    grids : tuple of Array, shapes (I_k,)
        Sorted unique training coordinates per mode.
    observed : tuple of Array, shapes (I_k,) bool
        Whether a grid point carries data (all True for training grids).
    leaf_count, leaf_ysum : tuple (per mode) of Array, shapes (n_leaf,)
        Number of data and sum of ``y`` per unique index tuple.
    levels : tuple (per mode) of tuple of (coord, parent) int32 arrays
        From the leaves up: ``coord`` is the grid position of the level's mode for each key,
        ``parent`` the key's prefix one level up (level 1 parents are positions in mode k).
    sum_y2 : Array, scalar
        Sum of squared targets.
    num_data : Array, scalar
        :math:`N`.
    chunk : int
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


class CEPState(NamedTuple):
    """Approximate posterior and damped message sums of the CEP iteration.

    Attributes
    ----------
    mean, cov : tuple of Array, shapes (I_k, R), (I_k, R, R)
        Marginals of :math:`q(u^k(i))` at each mode's grid points.
    msg_prec, msg_shift : tuple of Array, shapes (I_k, R, R), (I_k, R)
        Damped data messages summed per coordinate (natural parameters).
    core_mean, core_cov : Array, shapes (R^K,), (R^K, R^K)
        :math:`q(\\operatorname{vec}\\mathcal W)` (for CP: the fixed super-diagonal, zero cov).
    core_prec, core_shift : Array
        Damped core messages :math:`\\Lambda_W, \\eta_W`.
    noise_rate : Array, scalar
        Damped :math:`\\sum_n b_n` (so :math:`q(\\tau) = \\mathrm{Gamma}(a_0 + N/2, b_0 +` this).
    tau : Array, scalar
        :math:`E[\\tau]`.
    """

    mean: tuple
    cov: tuple
    msg_prec: tuple
    msg_shift: tuple
    core_mean: Array
    core_cov: Array
    core_prec: Array
    core_shift: Array
    noise_rate: Array
    tau: Array


class Prediction(NamedTuple):
    """Predictive moments at query coordinates (in the units of ``y``).

    Attributes
    ----------
    mean : numpy.ndarray, shape (n,)
    variance : numpy.ndarray, shape (n,)
        Of the latent :math:`f`, plus :math:`E[1/\\tau]` when ``include_noise``.
    """

    mean: np.ndarray
    variance: np.ndarray


# ----------------------------------------------------------------------------- validation


def _check_index(name: str, index, num_modes: int | None = None) -> np.ndarray:
    arr = as_array(name, index, ndim=2)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (n, K) array, got shape {arr.shape}")
    if num_modes is not None and arr.shape[1] != num_modes:
        raise ValueError(f"{name}: expected {num_modes} columns (one per mode), "
                         f"got {arr.shape[1]} (shape {arr.shape})")
    return check_finite(name, arr).astype(np.float64)


def _per_mode(name: str, value, num_modes: int) -> np.ndarray:
    arr = check_positive(name, np.atleast_1d(as_array(name, value)).astype(np.float64))
    if arr.ndim != 1 or arr.shape[0] not in (1, num_modes):
        raise ValueError(f"{name}: expected a scalar or one value per mode ({num_modes}), "
                         f"got shape {arr.shape}; does index have the right number of columns?")
    return np.broadcast_to(arr, (num_modes,)).copy()


def _check_nu(nu) -> float:
    if float(nu) not in _MATERN:
        raise ValueError(f"nu: expected 0.5, 1.5 or 2.5, got {nu!r}")
    return float(nu)


def _check_damping(name: str, value) -> float:
    v = float(value)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name}: expected a weight in [0, 1), got {value!r}")
    return v


def _chunk_size(config: TuckerConfig) -> int:
    if config.chunk:
        return int(config.chunk)
    P = config.rank if config.cp else config.rank ** (config.num_modes - 1)
    return int(max(1, _CHUNK_FLOATS // max(P * P, 1)))


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
    # Pad every level to a power-of-two number of keys (zero counts, parent 0): new data of
    # a similar size then reuses the compiled epoch.
    count, ysum = _pad(count, _bucket(len(count))), _pad(ysum, _bucket(len(ysum)))
    levels = [(_pad(c, _bucket(len(c))), _pad(p, _bucket(len(p)))) for c, p in levels]
    return count, ysum, tuple(levels)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


def prepare_data(index, y, config: TuckerConfig) -> TuckerData:
    """Validate training data and lay it out for :func:`cep_step` (eager, NumPy).

    Parameters
    ----------
    index : array_like, shape (N, K)
        Continuous coordinates, finite.
    y : array_like, shape (N,)
        Finite targets.
    config : TuckerConfig

    Returns
    -------
    TuckerData
        (NumPy arrays; convert inside a float64 context.)
    """
    index = _check_index("index", index, config.num_modes)
    y = check_finite("y", as_array("y", y, ndim=1)).astype(np.float64)
    if y.shape[0] != index.shape[0]:
        raise ValueError(f"y: expected {index.shape[0]} values (rows of index), got {y.shape[0]}")
    grids, pos = [], []
    for k in range(config.num_modes):
        g, inv = np.unique(index[:, k], return_inverse=True)
        grids.append(g)
        pos.append(inv.reshape(-1).astype(np.int32))
    pos = np.stack(pos, 1)
    trees = [_prefix_tree(pos, y, k) for k in range(config.num_modes)]
    n = _bucket(len(y))
    return TuckerData(_pad(pos, n), _pad(y, n), tuple(grids),
                      tuple(np.ones(len(g), bool) for g in grids),
                      tuple(t[0] for t in trees), tuple(t[1] for t in trees),
                      tuple(t[2] for t in trees), np.asarray(np.sum(y * y)),
                      np.asarray(float(len(y))))


# ----------------------------------------------------------------------------- numerics


def _sym(m: Array) -> Array:
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def _kron_vec(a: Array, b: Array) -> Array:
    """Row-wise Kronecker product of (n, p) and (n, q) -> (n, p q)."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def _kron_mat(a: Array, b: Array) -> Array:
    """Row-wise Kronecker product of (n, p, p) and (n, q, q) -> (n, pq, pq)."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(n, p * q, p * q)


def _core_tensor_second(core_mean: Array, core_cov: Array, rank: int, num_modes: int,
                        k: int) -> Array:
    """E[W_(k)rp W_(k)sq] as (R, R, P, P), P = R^(K-1), other modes in increasing order."""
    s2 = core_cov + jnp.outer(core_mean, core_mean)
    K = num_modes
    t = s2.reshape((rank,) * (2 * K))
    others = [j for j in range(K) if j != k]
    t = jnp.transpose(t, [k, K + k] + others + [K + j for j in others])
    P = rank ** (K - 1)
    return t.reshape(rank, rank, P, P)


def _mode_stats(k: int, means, seconds, data: TuckerData, config: TuckerConfig):
    r"""Per-coordinate sums over the data of mode ``k``.

    Returns ``g (I_k, P)`` = :math:`\sum_{n \in i} y_n E[z^{-k}_n]` and ``G (I_k, P, P)`` =
    :math:`\sum_{n \in i} E[z^{-k}_n z^{-k\top}_n]`, with :math:`z^{-k}` the Kronecker (Tucker,
    P = R^(K-1), other modes in increasing order) or Hadamard (CP, P = R) product of the other
    modes' factors. Sums run up the prefix tree of :class:`TuckerData`; the top level is
    streamed in chunks so memory stays O(chunk P^2).
    """
    R = config.rank
    size = means[k].shape[0]
    others = [j for j in range(config.num_modes) if j != k]
    count, ysum = data.leaf_count[k], data.leaf_ysum[k]
    dtype = ysum.dtype
    if config.cp:
        vec = ysum[:, None] * jnp.ones((1, R), dtype)
        mat = count[:, None, None] * jnp.ones((1, R, R), dtype)
    else:
        vec, mat = ysum[:, None], count[:, None, None]
    levels = data.levels[k]
    for depth, (coord, parent) in enumerate(levels):
        j = others[len(levels) - 1 - depth]
        num = size if depth == len(levels) - 1 else levels[depth + 1][0].shape[0]

        def up(vec, mat, coord, parent, j=j, num=num):
            m, M = means[j][coord], seconds[j][coord]
            if config.cp:
                cv, cm = m * vec, M * mat
            else:
                cv, cm = _kron_vec(m, vec), _kron_mat(M, mat)
            return (jax.ops.segment_sum(cv, parent, num_segments=num),
                    jax.ops.segment_sum(cm, parent, num_segments=num))

        if depth < len(levels) - 1:
            vec, mat = up(vec, mat, coord, parent)
            continue
        # top level: stream over chunks of keys
        n = coord.shape[0]
        b = min(n, _chunk_size(config))
        c = -(-n // b)
        padn = c * b - n
        xs = [jnp.concatenate([x, jnp.zeros((padn,) + x.shape[1:], x.dtype)])
              .reshape((c, b) + x.shape[1:]) for x in (vec, mat, coord, parent)]

        def body(carry, xs):
            gv, gm = up(*xs)
            return (carry[0] + gv, carry[1] + gm), None

        P = vec.shape[1] * R if not config.cp else R
        init = (jnp.zeros((size, P), dtype), jnp.zeros((size, P, P), dtype))
        (vec, mat), _ = lax.scan(body, init, xs)
    return vec, mat


def _mode_lgssm(grid: Array, lengthscale: Array, variance: Array, nu: float,
                rank: int) -> tuple[LGSSM, Array]:
    """Prior of the R stacked latent functions of one mode as a (partial) LGSSM.

    Returns the LGSSM with identity emission placeholders and the selection matrix
    ``H (R, R d)`` (state order: function-major).
    """
    sde = statespace.matern_sde(nu, lengthscale, variance)
    A, Q = statespace.discretise(sde, grid)
    d = sde.order
    eye = jnp.eye(rank, dtype=grid.dtype)
    kron_t = jax.vmap(lambda a: jnp.kron(eye, a))
    H = jnp.kron(eye, sde.H.astype(grid.dtype))
    params = LGSSM(jnp.zeros(rank * d, grid.dtype), jnp.kron(eye, sde.Pinf.astype(grid.dtype)),
                   kron_t(A.astype(grid.dtype)), kron_t(Q.astype(grid.dtype)), H, eye)
    return params, H


def _whiten(prec: Array, shift: Array, observed: Array) -> tuple[Array, Array]:
    """Cholesky factors L (I, R, R) of the message precisions and L^{-1} eta (NaN if unobserved)."""
    R = prec.shape[-1]
    scale = jnp.trace(prec, axis1=-2, axis2=-1)[:, None, None] / R
    eye = jnp.eye(R, dtype=prec.dtype)
    L = jnp.linalg.cholesky(_sym(prec) + (1e-10 * scale + 1e-300) * eye)
    L = jnp.where(observed[:, None, None], L, eye)
    obs = jax.vmap(lambda l, e: solve_triangular(l, e, lower=True))(L, shift)
    return L, jnp.where(observed[:, None], obs, jnp.nan)


def _posterior_kalman(grid, observed, prec, shift, lengthscale, variance, config):
    params, H = _mode_lgssm(grid, lengthscale, variance, config.nu, config.rank)
    L, obs = _whiten(prec, shift, observed)
    params = params._replace(emission_matrix=jnp.swapaxes(L, -1, -2) @ H)
    sm = rts_smoother(params, obs)
    mean = sm.smoothed_mean @ H.T
    cov = H @ sm.smoothed_cov @ H.T
    return mean, _sym(cov)


def _posterior_dense(grid, observed, prec, shift, lengthscale, variance, config):
    """Exact Gaussian posterior of the stacked (I R) factor values with the dense Gram matrix."""
    R, n = config.rank, grid.shape[0]
    Kxx = _gram(grid, lengthscale, variance, config.nu)
    Pm = jnp.kron(Kxx, jnp.eye(R, dtype=grid.dtype))
    L, _ = _whiten(prec, shift, observed)
    L = jnp.where(observed[:, None, None], L, 0.0)
    Lb = _block_diag(L)
    PL = Pm @ Lb
    M = jnp.eye(n * R, dtype=grid.dtype) + Lb.T @ PL
    cM = jnp.linalg.cholesky(_sym(M))
    X = jax.scipy.linalg.cho_solve((cM, True), PL.T)
    Sig = _sym(Pm - PL @ X)
    eta = jnp.where(observed[:, None], shift, 0.0).reshape(-1)
    mean = (Sig @ eta).reshape(n, R)
    blocks = Sig.reshape(n, R, n, R)
    cov = blocks[jnp.arange(n), :, jnp.arange(n), :]
    return mean, _sym(cov)


def _gram(x: Array, lengthscale, variance, nu: float) -> Array:
    """Matern Gram matrix of 1-D inputs (the dense reference path and the NumPyro model)."""
    return _MATERN[nu](lengthscale, variance)(x, x)


def _block_diag(blocks: Array) -> Array:
    n, R, _ = blocks.shape
    out = jnp.zeros((n, R, n, R), blocks.dtype)
    out = out.at[jnp.arange(n), :, jnp.arange(n), :].set(blocks)
    return out.reshape(n * R, n * R)


def mode_posterior(grid: Array, observed: Array, prec: Array, shift: Array,
                   lengthscale: Array, variance: Array, config: TuckerConfig
                   ) -> tuple[Array, Array]:
    r"""Marginals of one mode's factors given summed Gaussian messages per grid point.

    :math:`q(u) \propto \prod_r \mathcal{GP}(u_r; 0, k_\nu) \prod_i
    \exp(-\tfrac12 u(x_i)^\top\Lambda_i u(x_i) + \eta_i^\top u(x_i))` over the sorted grid
    ``x``; grid points with ``observed = False`` carry no message (prediction points).

    Parameters
    ----------
    grid : Array, shape (I,)
        Strictly increasing coordinates.
    observed : Array, shape (I,) bool
    prec, shift : Array, shapes (I, R, R), (I, R)
        :math:`\Lambda_i, \eta_i`.
    lengthscale, variance : Array, scalars
        Matern hyperparameters of this mode.
    config : TuckerConfig
        Uses ``rank``, ``nu`` and ``mode_solver``.

    Returns
    -------
    mean, cov : Array, shapes (I, R), (I, R, R)
    """
    solver = {"kalman": _posterior_kalman, "dense": _posterior_dense}[config.mode_solver]
    return solver(grid, observed, prec, shift, lengthscale, variance, config)


# ----------------------------------------------------------------------------- CEP


def _second_moments(mean, cov):
    return tuple(c + m[:, :, None] * m[:, None, :] for m, c in zip(mean, cov, strict=True))


def _cp_core(rank: int, num_modes: int, dtype) -> Array:
    w = jnp.zeros((rank,) * num_modes, dtype)
    w = w.at[(jnp.arange(rank),) * num_modes].set(1.0)
    return w.reshape(-1)


def cep_init(data: TuckerData, config: TuckerConfig, *, key: Array) -> CEPState:
    """Initial CEP state, as the authors' code but from an explicit key.

    Factor means and the core mean are U(0, 1), factor covariances I, messages
    :math:`10^{-3} I` and :math:`10^{-3} U(0, 1)`, :math:`E[\\tau] = 1`.
    """
    R, K = config.rank, config.num_modes
    dtype = data.y.dtype
    keys = jax.random.split(key, 2 * K + 1)
    mean, cov, prec, shift = [], [], [], []
    for k, g in enumerate(data.grids):
        n = g.shape[0]
        mean.append(jax.random.uniform(keys[2 * k], (n, R), dtype))
        cov.append(jnp.broadcast_to(jnp.eye(R, dtype=dtype), (n, R, R)))
        prec.append(jnp.broadcast_to(1e-3 * jnp.eye(R, dtype=dtype), (n, R, R)))
        shift.append(1e-3 * jax.random.uniform(keys[2 * k + 1], (n, R), dtype))
    P = R**K
    if config.cp:
        core_mean = _cp_core(R, K, dtype)
    else:
        core_mean = jax.random.uniform(keys[-1], (P,), dtype)
    zeros = jnp.zeros((P, P), dtype)
    a = config.a0 + 0.5 * data.num_data
    return CEPState(tuple(mean), tuple(cov), tuple(prec), tuple(shift), core_mean, zeros,
                    zeros, jnp.zeros(P, dtype), jnp.asarray(a - config.b0, dtype),
                    jnp.asarray(1.0, dtype))


def cep_step(state: CEPState, data: TuckerData, lengthscale: Array, variance: Array,
             config: TuckerConfig) -> CEPState:
    """One epoch of conditional EP: every mode in turn, then the core, then the noise.

    Pure and jittable (``config`` static). See the module docstring for the updates.
    """
    R, K = config.rank, config.num_modes
    mean, cov = list(state.mean), list(state.cov)
    prec, shift = list(state.msg_prec), list(state.msg_shift)
    tau = state.tau
    rho_u = config.damping_factors
    for k in range(K):
        seconds = _second_moments(mean, cov)
        g, G = _mode_stats(k, mean, seconds, data, config)
        if config.cp:
            lam_new, eta_new = tau * G, tau * g
        else:
            s2 = _core_tensor_second(state.core_mean, state.core_cov, R, K, k)
            wk = jnp.moveaxis(state.core_mean.reshape((R,) * K), k, 0).reshape(R, -1)
            lam_new = tau * jnp.einsum("rspq,ipq->irs", s2, G)
            eta_new = tau * g @ wk.T
        prec[k] = _sym(rho_u * prec[k] + (1.0 - rho_u) * lam_new)
        shift[k] = rho_u * shift[k] + (1.0 - rho_u) * eta_new
        mean[k], cov[k] = mode_posterior(data.grids[k], data.observed[k], prec[k], shift[k],
                                         lengthscale[k], variance[k], config)
    # Sufficient statistics over all modes from the last mode's per-coordinate sums.
    mk, Mk = mean[K - 1], cov[K - 1] + mean[K - 1][:, :, None] * mean[K - 1][:, None, :]
    if config.cp:
        core_mean, core_cov = state.core_mean, state.core_cov
        core_prec, core_shift = state.core_prec, state.core_shift
        sum_yf = jnp.sum(g * mk)
        sum_f2 = jnp.sum(G * Mk)
    else:
        sum_yz = jnp.einsum("ip,ir->pr", g, mk).reshape(-1)
        sum_zz = jnp.einsum("ipq,irs->prqs", G, Mk).reshape(R**K, R**K)
        rho_w = config.damping_core
        core_prec = _sym(rho_w * state.core_prec + (1.0 - rho_w) * tau * sum_zz)
        core_shift = rho_w * state.core_shift + (1.0 - rho_w) * tau * sum_yz
        eye = jnp.eye(R**K, dtype=core_prec.dtype)
        chol = jnp.linalg.cholesky(core_prec + eye / config.core_prior_var)
        core_cov = _sym(jax.scipy.linalg.cho_solve((chol, True), eye))
        core_mean = core_cov @ core_shift
        sum_yf = core_mean @ sum_yz
        sum_f2 = jnp.sum((core_cov + jnp.outer(core_mean, core_mean)) * sum_zz)
    b_new = 0.5 * data.sum_y2 - sum_yf + 0.5 * sum_f2
    rho_t = config.damping_noise
    noise_rate = rho_t * state.noise_rate + (1.0 - rho_t) * b_new
    tau = (config.a0 + 0.5 * data.num_data) / (config.b0 + noise_rate)
    return CEPState(tuple(mean), tuple(cov), tuple(prec), tuple(shift), core_mean, core_cov,
                    core_prec, core_shift, noise_rate, tau)


@functools.partial(jax.jit, static_argnames=("config",))
def _epoch(state, data, lengthscale, variance, config):
    return cep_step(state, data, lengthscale, variance, config)


@functools.partial(jax.jit, static_argnames=("config",))
def _init(data, key, config):
    return cep_init(data, config, key=key)


def _train_rmse(state: CEPState, data: TuckerData, config: TuckerConfig) -> Array:
    f = _mean_f(tuple(state.mean), state.core_mean, data.positions, config)
    r = jnp.where(jnp.arange(f.shape[0]) < data.num_data, data.y - f, 0.0)
    return jnp.sqrt(jnp.sum(r * r) / data.num_data)


def _mean_f(means, core_mean, positions, config):
    R, K = config.rank, config.num_modes
    if config.cp:
        z = jnp.ones((positions.shape[0], R), core_mean.dtype)
        for k in range(K):
            z = z * means[k][positions[:, k]]
        return z.sum(-1)
    z = jnp.ones((positions.shape[0], 1), core_mean.dtype)
    for k in range(K):
        z = _kron_vec(z, means[k][positions[:, k]])
    return z @ core_mean


def _second_f(seconds, core_mean, core_cov, positions, config):
    """E[f^2] per query point, streamed so memory stays O(B R^(2K-2))."""
    R, K = config.rank, config.num_modes
    if config.cp:
        Z = jnp.ones((positions.shape[0], R, R), core_mean.dtype)
        for k in range(K):
            Z = Z * seconds[k][positions[:, k]]
        return Z.sum((-1, -2))
    s2 = (core_cov + jnp.outer(core_mean, core_mean)).reshape((R,) * (2 * K))
    # Order axes (a_1, b_1, ..., a_K, b_K) and contract mode by mode.
    s2 = jnp.transpose(s2, [a for k in range(K) for a in (k, K + k)])

    def one(pos):
        t = s2
        for k in range(K):
            t = jnp.tensordot(seconds[k][pos[k]], t, axes=((0, 1), (0, 1)))
        return t

    b = max(1, _CHUNK_FLOATS // max(R ** (2 * K - 2), 1))
    n = positions.shape[0]
    c = -(-n // b)
    pad = jnp.concatenate([positions, jnp.zeros((c * b - n, K), positions.dtype)])
    out = lax.map(jax.vmap(one), pad.reshape(c, b, K))
    return out.reshape(-1)[:n]


# ----------------------------------------------------------------------------- NumPyro model


def tucker_model(index, y=None, *, rank: int, lengthscale=0.1, variance=1.0, nu: float = 0.5,
                 cp: bool = False, a0: float = 1.0, b0: float = 1.0,
                 core_prior_var: float = 1.0, grids: Sequence | None = None):
    r"""FunBaT as a NumPyro model (for NUTS/SVI on small data).

    Sites: ``u{k}_white`` (I_k, R) standard normal and the deterministic ``u{k}`` =
    :math:`L_k` ``u{k}_white`` (non-centred Matern GP values at the mode's unique
    coordinates, :math:`L_k L_k^\top = K_k + 10^{-8} s_k^2 I`), ``core`` (R,)*K
    :math:`\sim N(0, \sigma_W^2)` unless ``cp``, ``tau`` :math:`\sim \mathrm{Gamma}(a_0, b_0)`,
    and ``y`` :math:`\sim N(f, \tau^{-1})` in a ``data`` plate. The dense Gram matrices cost
    :math:`O(I_k^3)`: for large data use :func:`fit`.

    Parameters
    ----------
    index : array_like, shape (N, K)
        Coordinates. Concrete unless ``grids`` is given.
    y : array_like, shape (N,), optional
        Observations (``None`` samples from the prior predictive).
    rank : int
    lengthscale, variance : float or sequence of K floats
    nu : {0.5, 1.5, 2.5}
    cp : bool
        Core fixed to the super-diagonal of ones.
    a0, b0, core_prior_var : float
    grids : sequence of K sorted arrays, optional
        The unique coordinates per mode; ``index`` may then be traced.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro.infer import Predictive
    >>> from probkit.models.tucker import tucker_model
    >>> x = np.random.default_rng(0).uniform(size=(20, 2))
    >>> draws = Predictive(tucker_model, num_samples=3)(jax.random.key(0), x, rank=2)
    >>> draws["y"].shape
    (3, 20)
    """
    rank = check_positive_int("rank", rank)
    nu = _check_nu(nu)
    if grids is None:
        index = _check_index("index", index)
        grids = [np.unique(index[:, k]) for k in range(index.shape[1])]
    K = len(grids)
    if jnp.ndim(index) != 2 or jnp.shape(index)[1] != K:
        raise ValueError(f"index: expected shape (N, {K}) (one column per mode), "
                         f"got {jnp.shape(index)}")
    ls = _per_mode("lengthscale", lengthscale, K)
    var = _per_mode("variance", variance, K)
    index = jnp.asarray(index)
    n = index.shape[0]
    factors = []
    for k, g in enumerate(grids):
        g = jnp.asarray(g)
        gram = _gram(g, ls[k], var[k], nu) + 1e-8 * var[k] * jnp.eye(g.shape[0])
        chol = jnp.linalg.cholesky(gram)
        white = numpyro.sample(f"u{k}_white",
                               dist.Normal(0.0, 1.0).expand([g.shape[0], rank]).to_event(2))
        u = numpyro.deterministic(f"u{k}", chol @ white)
        pos = jnp.clip(jnp.searchsorted(g, index[:, k]), 0, g.shape[0] - 1)
        factors.append(u[pos])
    if cp:
        f = functools.reduce(lambda a, b: a * b, factors).sum(-1)
    else:
        core = numpyro.sample("core", dist.Normal(0.0, math.sqrt(core_prior_var))
                              .expand([rank] * K).to_event(K))
        z = jnp.ones((n, 1))
        for u in factors:
            z = _kron_vec(z, u)
        f = z @ core.reshape(-1)
    tau = numpyro.sample("tau", dist.Gamma(a0, b0))
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Normal(f, 1.0 / jnp.sqrt(tau)), obs=y)


# ----------------------------------------------------------------------------- convenience API


@dataclasses.dataclass(frozen=True)
class TuckerFit:
    """A fitted FunBaT model (returned by :func:`fit`).

    Attributes
    ----------
    config : TuckerConfig
    lengthscale, variance : numpy.ndarray, shape (K,)
    grids : tuple of numpy.ndarray
        Sorted unique training coordinates per mode.
    state : CEPState
        Final CEP state (NumPy arrays), in standardised units of ``y``.
    y_mean, y_scale : float
        Standardisation of ``y`` (0 and 1 when ``standardize=False``).
    num_data : int
    trace : dict
        Per-epoch ``rmse`` (training, original units) and ``tau``.
    seconds : float
        Wall time of the fit (compilation included).
    """

    config: TuckerConfig
    lengthscale: np.ndarray
    variance: np.ndarray
    grids: tuple
    state: CEPState
    y_mean: float
    y_scale: float
    num_data: int
    trace: dict
    seconds: float

    @property
    def noise_shape_rate(self) -> tuple[float, float]:
        """Shape and rate of :math:`q(\\tau)` (standardised units)."""
        return (self.config.a0 + 0.5 * self.num_data,
                self.config.b0 + float(self.state.noise_rate))

    def factors(self, mode: int, coords) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (n, R) and covariance (n, R, R) of mode ``mode``'s factors at ``coords``.

        Coordinates absent from training are inserted as observation-free smoother steps.
        """
        K = self.config.num_modes
        if not (isinstance(mode, int | np.integer) and 0 <= mode < K):
            raise ValueError(f"mode: expected an integer in 0..{K - 1}, got {mode!r}")
        coords = check_finite("coords", as_array("coords", coords, ndim=1))
        with jax.enable_x64(True):
            m, c, pos = self._mode_at(int(mode), coords)
            return np.asarray(m[pos]), np.asarray(c[pos])

    def _mode_at(self, k: int, coords: np.ndarray):
        grid, msg_prec, msg_shift = self.grids[k], self.state.msg_prec[k], self.state.msg_shift[k]
        merged, inv = np.unique(np.concatenate([grid, coords]), return_inverse=True)
        inv = inv.reshape(-1)
        # Pad to a power-of-two length with observation-free steps after the last point
        # (they change no earlier smoothed marginal) so new query sizes rarely recompile.
        size = _bucket(len(merged))
        merged = np.concatenate([merged, merged[-1] + np.arange(1, size - len(merged) + 1)])
        R = self.config.rank
        observed = np.zeros(len(merged), bool)
        observed[inv[: len(grid)]] = True
        prec = np.broadcast_to(np.eye(R), (len(merged), R, R)).copy()
        shift = np.zeros((len(merged), R))
        prec[inv[: len(grid)]] = msg_prec
        shift[inv[: len(grid)]] = msg_shift
        m, c = _mode_posterior_jit(jnp.asarray(merged), jnp.asarray(observed),
                                   jnp.asarray(prec), jnp.asarray(shift),
                                   jnp.asarray(self.lengthscale[k]),
                                   jnp.asarray(self.variance[k]), self.config)
        return m, c, inv[len(grid):]

    def predict(self, index, *, include_noise: bool = False) -> Prediction:
        """Predictive mean and variance at coordinates ``index`` (n, K), in units of ``y``.

        Parameters
        ----------
        index : array_like, shape (n, K)
            Any finite coordinates (seen in training or not).
        include_noise : bool
            Add :math:`E[1/\\tau]` to the variance (predictive of a new observation).

        Returns
        -------
        Prediction
        """
        index = _check_index("index", index, self.config.num_modes)
        K = self.config.num_modes
        with jax.enable_x64(True):
            means, seconds, pos = [], [], []
            for k in range(K):
                m, c, p = self._mode_at(k, index[:, k])
                means.append(m)
                seconds.append(c + m[:, :, None] * m[:, None, :])
                pos.append(p)
            n = index.shape[0]
            pos = np.stack(pos, 1).astype(np.int32)
            pos = jnp.asarray(np.concatenate([pos, np.zeros((_bucket(n) - n, K), np.int32)]))
            core_mean = jnp.asarray(self.state.core_mean)
            core_cov = jnp.asarray(self.state.core_cov)
            mean, second = _predict_jit(tuple(means), tuple(seconds), core_mean, core_cov, pos,
                                        self.config)
            mean, second = np.asarray(mean)[:n], np.asarray(second)[:n]
        var = np.maximum(second - mean**2, 0.0)
        if include_noise:
            a, b = self.noise_shape_rate
            var = var + b / (a - 1.0)
        return Prediction(mean * self.y_scale + self.y_mean, var * self.y_scale**2)

    def to_result(self, index, y=None, *, key, num_draws: int = 500) -> Result:
        """Posterior-predictive draws at ``index`` as a :class:`probkit.result.Result`.

        ``posterior``: draws of ``tau`` (original units: precision of y) and, for Tucker,
        ``core``; ``posterior_predictive["y"]`` (1, S, n) drawn from the Gaussian predictive
        (marginally per point); with ``y``: ``observed_data`` and pointwise
        ``log_likelihood["y"]`` :math:`\\log N(y_n; f^{(s)}_n, 1/\\tau^{(s)})` for ``az.loo``.
        """
        key = check_key("key", key)
        num_draws = check_positive_int("num_draws", num_draws)
        pred = self.predict(index)
        a, b = self.noise_shape_rate
        k1, k2, k3, k4 = jax.random.split(key, 4)
        with jax.enable_x64(True):
            tau = np.asarray(jax.random.gamma(k1, a, (num_draws,)) / b) / self.y_scale**2
            f = pred.mean + np.sqrt(pred.variance) * np.asarray(
                jax.random.normal(k2, (num_draws, len(pred.mean))))
            ypp = f + np.asarray(jax.random.normal(k3, f.shape)) / np.sqrt(tau)[:, None]
            posterior = {"tau": tau[None]}
            if not self.config.cp:
                R, K = self.config.rank, self.config.num_modes
                cc = np.asarray(self.state.core_cov)
                chol = np.linalg.cholesky(cc + 1e-12 * np.eye(len(cc)))
                eps = np.asarray(jax.random.normal(k4, (num_draws, len(cc))))
                core = np.asarray(self.state.core_mean) + eps @ chol.T
                posterior["core"] = core.reshape((1, num_draws) + (R,) * K)
        kwargs = {}
        if y is not None:
            y = check_finite("y", as_array("y", y, ndim=1))
            if y.shape[0] != len(pred.mean):
                raise ValueError(f"y: expected {len(pred.mean)} values (rows of index), "
                                 f"got {y.shape[0]}")
            ll = 0.5 * (np.log(tau)[:, None] - np.log(2 * np.pi) - tau[:, None] * (y - f) ** 2)
            kwargs = {"observed_data": {"y": y}, "log_likelihood": {"y": ll[None]}}
        return Result(posterior=posterior, posterior_predictive={"y": ypp[None]},
                      attrs={"engine": "probkit-funbat-cep", "rank": self.config.rank,
                             "cp": self.config.cp, "nu": self.config.nu,
                             "epochs": len(self.trace["rmse"])}, **kwargs)


def _bucket(n: int) -> int:
    """Smallest power of two >= max(n, 16): padded sizes keep recompilation rare."""
    return max(16, 1 << (int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("config",))
def _mode_posterior_jit(grid, observed, prec, shift, lengthscale, variance, config):
    return mode_posterior(grid, observed, prec, shift, lengthscale, variance, config)


@functools.partial(jax.jit, static_argnames=("config",))
def _predict_jit(means, seconds, core_mean, core_cov, positions, config):
    return (_mean_f(means, core_mean, positions, config),
            _second_f(seconds, core_mean, core_cov, positions, config))


def fit(index, y, *, rank: int, key, cp: bool = False, nu: float = 0.5, lengthscale=0.1,
        variance=1.0, num_epochs: int = 100, damping: float | Sequence[float] = 0.5,
        a0: float = 1.0, b0: float = 1.0, core_prior_var: float = 1.0,
        standardize: bool = True, mode_solver: str = "kalman",
        progress_bar: bool = False) -> TuckerFit:
    r"""Fit FunBaT (or FunBaT-CP) by conditional EP with one Kalman smoother per mode.

    Parameters
    ----------
    index : array_like, shape (N, K)
        Continuous coordinates (finite; scale each mode to a range matched to
        ``lengthscale``, e.g. [0, 1]).
    y : array_like, shape (N,)
        Finite targets.
    rank : int
        :math:`R >= 1`.
    key : jax.random.key
        Initialisation.
    cp : bool
        FunBaT-CP (core fixed to the super-diagonal of ones).
    nu : {0.5, 1.5, 2.5}
        Matern smoothness of every latent function.
    lengthscale, variance : float or sequence of K floats
        Matern hyperparameters per mode (fixed, as in the paper).
    num_epochs : int
        CEP epochs (fixed number, as in the paper).
    damping : float or (factors, noise, core)
        Weight on the old messages.
    a0, b0 : float
        Gamma prior of the noise precision (of standardised ``y``).
    core_prior_var : float
        Prior variance of the core entries (Tucker only).
    standardize : bool
        Centre and scale ``y`` by its training mean and std (predictions are returned in
        original units).
    mode_solver : {"kalman", "dense"}
        ``"dense"`` replaces the smoother by the dense GP posterior (reference; O(I^3)).
    progress_bar : bool
        Show a tqdm bar over epochs.

    Returns
    -------
    TuckerFit
        With ``.predict(index)``, ``.factors(mode, coords)`` and ``.to_result(...)``.

    Raises
    ------
    ValueError
        Naming the argument: NaN/inf coordinates (``index``), NaN/inf ``y``, ``rank`` < 1,
        hyperparameters whose length differs from the number of columns of ``index``, etc.
    """
    rank = check_positive_int("rank", rank)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    key = check_key("key", key)
    nu = _check_nu(nu)
    index = _check_index("index", index)
    K = index.shape[1]
    ls = _per_mode("lengthscale", lengthscale, K)
    var = _per_mode("variance", variance, K)
    damp = np.atleast_1d(np.asarray(damping, dtype=np.float64))
    if damp.shape not in ((1,), (3,)):
        raise ValueError(f"damping: expected a float or (factors, noise, core), got {damping!r}")
    damp = [_check_damping("damping", d) for d in np.broadcast_to(damp, (3,))]
    if mode_solver not in ("kalman", "dense"):
        raise ValueError(f"mode_solver: expected 'kalman' or 'dense', got {mode_solver!r}")
    a0 = float(check_positive("a0", a0))
    b0 = float(check_positive("b0", b0))
    core_prior_var = float(check_positive("core_prior_var", core_prior_var))
    config = TuckerConfig(rank, K, bool(cp), nu, *damp, a0, b0, core_prior_var, mode_solver)
    y = check_finite("y", as_array("y", y, ndim=1)).astype(np.float64)
    if standardize:
        y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
    else:
        y_mean, y_scale = 0.0, 1.0
    np_data = prepare_data(index, (y - y_mean) / y_scale, config)
    t0 = time.perf_counter()
    rmse, taus = [], []
    with jax.enable_x64(True):
        data = jax.tree.map(jnp.asarray, np_data)
        ls_j, var_j = jnp.asarray(ls), jnp.asarray(var)
        state = _init(data, key, config)
        epochs = range(num_epochs)
        if progress_bar:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="FunBaT CEP")
        for _ in epochs:
            state = _epoch(state, data, ls_j, var_j, config)
            rmse.append(_train_rmse_jit(state, data, config))
            taus.append(state.tau)
        state = jax.tree.map(np.asarray, state)
        rmse = np.asarray(jnp.stack(rmse)) * y_scale
        taus = np.asarray(jnp.stack(taus))
    if not np.all(np.isfinite(rmse)):
        raise FloatingPointError("fit: the CEP iteration diverged (non-finite training error); "
                                 "increase damping or the lengthscale")
    return TuckerFit(config, ls, var, tuple(np_data.grids), state, y_mean, y_scale,
                     int(np_data.num_data), {"rmse": rmse, "tau": taus},
                     time.perf_counter() - t0)


_train_rmse_jit = jax.jit(_train_rmse, static_argnames=("config",))
