r"""The discriminative Kalman filter (DKF).

Burkhart, Brandman, Franco, Hochberg & Harrison, "The discriminative Kalman filter for
Bayesian filtering with nonlinear and nongaussian observation models", *Neural Computation*
32(5):969-1017 (2020); M. C. Burkhart, "A discriminative approach to Bayesian filtering with
applications to human neural decoding", PhD thesis, Brown University (2019).

Model
-----
A stationary linear-Gaussian latent process and a *discriminative* observation model:

.. math::

    z_0 \sim \mathcal N(0, S), \qquad z_t = A z_{t-1} + \varepsilon_t,\;
    \varepsilon_t \sim \mathcal N(0, G), \qquad S = A S A^\top + G,

    p(z_t \mid x_t) \approx \mathcal N\bigl(z_t;\, f(x_t),\, Q(x_t)\bigr),

so that by Bayes' rule :math:`p(x_t\mid z_t) \propto \mathcal N(z_t; f, Q) / \mathcal N(z_t; 0, S)`.
With :math:`M_t = A\Sigma_{t-1}A^\top + G` the filter is

.. math::

    \Sigma_t = (Q(x_t)^{-1} + M_t^{-1} - S^{-1})^{-1}, \qquad
    \mu_t = \Sigma_t\bigl(Q(x_t)^{-1} f(x_t) + M_t^{-1} A \mu_{t-1}\bigr),

started from :math:`\mu_0 = 0, \Sigma_0 = S`. The *robust* DKF drops :math:`-S^{-1}`.

Implementation: one Kalman recursion
------------------------------------
The DKF update *is* a Kalman update with identity emission matrix, a pseudo-observation
:math:`y_t = R_t Q_t^{-1} f(x_t)` and the time-varying emission covariance
:math:`R_t = (Q_t^{-1} - S^{-1})^{-1}` (robust variant: :math:`R_t = Q_t`, :math:`y_t = f(x_t)`):
the Kalman posterior precision is :math:`M^{-1} + R^{-1}` and its information vector
:math:`M^{-1}A\mu + R^{-1}y`. :func:`dkf_filter` therefore builds ``(y_t, R_t)`` and calls
:func:`probkit.inference.message_passing.kalman_filter` -- the package's only Kalman recursion.
Everything is computed in the generalised eigenbasis of :math:`(Q_t, S)`: with
:math:`S = LL^\top` and :math:`L^{-1}QL^{-\top} = V\,\mathrm{diag}(e)\,V^\top`,
:math:`R = LV\mathrm{diag}(e/(1-e))V^\top L^\top` and
:math:`y = LV\mathrm{diag}(1/(1-e))V^\top L^{-1}f`.

Positive-definiteness fix
-------------------------
:math:`Q^{-1} - S^{-1} \succ 0` (all generalised eigenvalues :math:`e < 1`) is needed. Where it
fails, ``pd_fix`` chooses one of the three fixes the authors use:

* ``"inflate"`` (**default**; the authors' code for the real-data Sec. 4.5 and their public
  Python/JAX classes): :math:`Q \leftarrow (Q^{-1} + S^{-1})^{-1}` at that step, i.e. the update
  uses precision :math:`Q^{-1}` and information :math:`(Q^{-1} + S^{-1})f`;
* ``"robust"`` (the paper's text, Sec. 2): use the robust update at that step;
* ``"clip"`` (their MATLAB code for the simulations, Secs. 4.2-4.4): clip the generalised
  eigenvalues of :math:`(Q, S)` at :math:`1 - \epsilon`, forcing :math:`Q \preceq S` (the code
  clips at 1, which makes :math:`R` infinite in that direction; :math:`\epsilon` = ``eps`` keeps
  it finite).

The default was chosen because it is what produced the paper's neural-decoding results; on
the Gaussian-mixture simulation ``"clip"`` is clearly better (``benchmarks/dkf.py`` reports
all three), so pass ``pd_fix="clip"`` for model-matched simulations. ``DKFResult.pd_fixed``
marks the steps where a fix was applied.

Learners for :math:`(f, Q)`
---------------------------
:class:`NadarayaWatson` (Gaussian kernel, leave-one-out bandwidth), :class:`MLPLearner`
(equinox network with a mean head and a Cholesky covariance head, Gaussian NLL, optax) and
:class:`GaussianProcess` (one GP per latent dimension, any :mod:`probkit.kernels` kernel).
Where a learner gives no covariance, :math:`Q(x)` is learned from held-out residuals
:math:`r = z - f(x)` (Sec. 4.5: 70/30 split, Nadaraya-Watson regression of :math:`rr^\top` on
:math:`x` with a leave-one-out bandwidth). All learners save and reload exactly.

Numerics run in float64 inside ``jax.enable_x64(True)``; the global JAX configuration is
never changed.

Examples
--------
>>> import numpy as np, jax
>>> from probkit.models.dkf import DiscriminativeKalmanFilter, NadarayaWatson
>>> rng = np.random.default_rng(0)
>>> z = np.zeros((300, 1)); x = np.zeros((300, 3))
>>> for t in range(1, 300):
...     z[t] = 0.9 * z[t - 1] + 0.3 * rng.normal(size=1)
>>> x = np.tanh(z @ np.ones((1, 3))) + 0.1 * rng.normal(size=(300, 3))
>>> dkf = DiscriminativeKalmanFilter(NadarayaWatson()).fit(x[:200], z[:200], key=jax.random.key(0))
>>> out = dkf.filter(x[200:])
>>> out.mean.shape
(100, 1)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import scipy.optimize
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular

from probkit import kernels as _kernels
from probkit._checks import (
    as_array,
    check_key,
    check_positive,
    check_positive_int,
    check_same_length,
)
from probkit.inference.message_passing import LGSSM, kalman_filter

__all__ = [
    "DynamicsParams",
    "DKFResult",
    "make_dynamics",
    "stationary_covariance",
    "dynamics_model",
    "fit_dynamics",
    "sample_dynamics",
    "pseudo_observations",
    "dkf_filter",
    "gaussian_mixture_moments",
    "fit_linear_observation",
    "kalman_decode",
    "nw_predict",
    "nw_loo_error",
    "nw_select_bandwidth",
    "NadarayaWatson",
    "MLPLearner",
    "GaussianProcess",
    "load_learner",
    "DiscriminativeKalmanFilter",
    "nrmse",
    "mean_absolute_angle",
]

PD_FIXES = ("robust", "clip", "inflate")
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------

def _check_square(name: str, value, dim: int | None = None) -> np.ndarray:
    arr = as_array(name, value, ndim=2)
    if arr.shape[0] != arr.shape[1] or (dim is not None and arr.shape[0] != dim):
        want = f"({dim}, {dim})" if dim is not None else "a square (D, D) matrix"
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _check_spd(name: str, value, dim: int | None = None) -> np.ndarray:
    arr = _check_square(name, value, dim)
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


def _check_rows(name: str, value, *, ndim: Sequence[int], allow_nan_rows: bool) -> np.ndarray:
    """Finite data; if ``allow_nan_rows``, whole rows (last axis) of NaN mark missing steps."""
    arr = as_array(name, value, ndim=tuple(ndim))
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


# --------------------------------------------------------------------------------------
# Dynamics: parameters, NumPyro model, least squares and HMC
# --------------------------------------------------------------------------------------

class DynamicsParams(NamedTuple):
    """Latent dynamics :math:`z_t = A z_{t-1} + \\mathcal N(0, G)` with stationary covariance ``S``.

    Attributes
    ----------
    A : (D, D) transition matrix.
    G : (D, D) process-noise covariance (the paper's :math:`\\Gamma`).
    S : (D, D) stationary covariance of :math:`z` (prior of :math:`z_0`).
    """

    A: Array
    G: Array
    S: Array


def stationary_covariance(A: Array, G: Array) -> Array:
    """Solve the discrete Lyapunov equation :math:`S = A S A^\\top + G`.

    Uses :math:`(I - A\\otimes A)\\,\\mathrm{vec}(S) = \\mathrm{vec}(G)` (row-major vec), a
    :math:`D^2` linear system; traceable, so usable inside NumPyro models.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> S = stationary_covariance(0.5 * jnp.eye(2), 0.75 * jnp.eye(2))
    >>> bool(jnp.allclose(S, jnp.eye(2)))
    True
    """
    A = jnp.asarray(A)
    G = jnp.asarray(G)
    d = A.shape[-1]
    vec = jnp.linalg.solve(jnp.eye(d * d, dtype=A.dtype) - jnp.kron(A, A), G.reshape(-1))
    S = vec.reshape(d, d)
    return 0.5 * (S + S.T)


def make_dynamics(A, G, S=None) -> DynamicsParams:
    """Validate ``A``, ``G`` (and ``S``) and return :class:`DynamicsParams` (float64).

    ``S`` defaults to the solution of :math:`S = ASA^\\top + G`, which needs the spectral
    radius of ``A`` below 1.

    Raises
    ------
    ValueError
        Naming ``A``, ``G`` or ``S``: wrong dimensions, non-finite, ``G``/``S`` not symmetric
        positive definite, or ``A`` not stable when ``S`` is not given.

    Examples
    --------
    >>> import numpy as np
    >>> p = make_dynamics(0.5 * np.eye(2), 0.75 * np.eye(2))
    >>> np.allclose(p.S, np.eye(2))
    True
    """
    A = _check_square("A", A)
    d = A.shape[0]
    G = _check_spd("G", G, d)
    if S is None:
        rho = float(np.max(np.abs(np.linalg.eigvals(A))))
        if rho >= 1.0:
            raise ValueError(f"A: spectral radius {rho:.4g} >= 1, so no stationary covariance "
                             "exists; pass S explicitly")
        with jax.enable_x64(True):
            S = np.asarray(stationary_covariance(jnp.asarray(A), jnp.asarray(G)))
    S = _check_spd("S", S, d)
    return DynamicsParams(A.astype(np.float64), G.astype(np.float64), S.astype(np.float64))


def _as_trials(name: str, z, ndim_row: int = 2) -> list[np.ndarray]:
    """(T, D), (B, T, D) or a list of (T_b, D) arrays -> list of 2-D arrays."""
    if isinstance(z, list | tuple):
        trials = [as_array(f"{name}[{i}]", zi, ndim=2) for i, zi in enumerate(z)]
        if not trials:
            raise ValueError(f"{name}: empty list of trials")
        dims = {t.shape[1] for t in trials}
        if len(dims) != 1:
            raise ValueError(f"{name}: trials have different dimensions {sorted(dims)}")
        return trials
    arr = as_array(name, z, ndim=(2, 3))
    return [arr] if arr.ndim == 2 else list(arr)


def dynamics_model(z=None, *, num_steps: int | None = None, dim: int | None = None,
                   A=None, G=None, A_scale: float = 0.5, G_scale: float = 1.0) -> None:
    """NumPyro model of the latent dynamics :math:`z_0\\sim N(0,S)`, :math:`z_t = Az_{t-1}+N(0,G)`.

    Sites: ``A`` (Normal(0, ``A_scale``) entries), ``G_corr`` (LKJ-Cholesky, concentration 2;
    absent for ``D = 1``),
    ``G_sd`` (HalfNormal(``G_scale``)), deterministic ``G`` and ``S``; observed ``z0`` and ``z``
    (the transitions). ``A``/``G`` given as arrays are fixed instead of sampled. ``S`` solves
    :math:`S = ASA^\\top + G`; an unstable ``A`` (no such ``S``) has zero density.

    Parameters
    ----------
    z : array (T, D) or (B, T, D), optional
        Observed latent path(s), one per trial; ``None`` samples a path of ``num_steps``.
    num_steps, dim : int, optional
        Length and dimension when ``z`` is None.
    A, G : array, optional
        Fixed values instead of priors.

    Examples
    --------
    >>> import jax, numpyro
    >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(dynamics_model, 0)).get_trace(
    ...     num_steps=5, dim=2)
    >>> tr["z_path"]["value"].shape
    (5, 2)
    """
    if z is not None:
        z = jnp.asarray(z)
        dim = z.shape[-1]
    elif num_steps is None or dim is None:
        raise ValueError("num_steps, dim: both are needed when z is None")
    if A is None:
        A = numpyro.sample("A", dist.Normal(0.0, A_scale).expand([dim, dim]).to_event(2))
    if G is None:
        sd = numpyro.sample("G_sd", dist.HalfNormal(G_scale).expand([dim]).to_event(1))
        corr = (numpyro.sample("G_corr", dist.LKJCholesky(dim, 2.0)) if dim > 1
                else jnp.ones((1, 1)))
        Lg = sd[:, None] * corr
        G = numpyro.deterministic("G", Lg @ Lg.T)
    A = jnp.asarray(A)
    G = jnp.asarray(G)
    S = numpyro.deterministic("S", stationary_covariance(A, G))
    Ls = jnp.linalg.cholesky(S)
    stable = jnp.all(jnp.isfinite(Ls)) & jnp.all(jnp.diagonal(Ls) > 0)
    Ls = jnp.where(stable, Ls, jnp.eye(dim, dtype=Ls.dtype))
    numpyro.factor("stable", jnp.where(stable, 0.0, -jnp.inf))
    Lg = jnp.linalg.cholesky(G)
    if z is None:
        z0 = numpyro.sample("z0", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Ls))
        with numpyro.plate("time", num_steps - 1):
            eps = numpyro.sample("eps", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Lg))

        def step(prev, e):
            new = A @ prev + e
            return new, new

        _, rest = jax.lax.scan(step, z0, eps)
        numpyro.deterministic("z_path", jnp.concatenate([z0[None], rest], 0))
        return
    batch = z.shape[:-2]
    with numpyro.plate_stack("trials", batch):
        numpyro.sample("z0", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Ls),
                       obs=z[..., 0, :])
    pred = jnp.einsum("ij,...tj->...ti", A, z[..., :-1, :])
    numpyro.sample("z", dist.MultivariateNormal(pred, scale_tril=Lg).to_event(len(batch) + 1),
                   obs=z[..., 1:, :])


def sample_dynamics(z, *, key, **hmc_kwargs):
    """Posterior draws of ``A`` and ``G`` from :func:`dynamics_model` by probkit's HMC engine.

    Parameters
    ----------
    z : array (T, D) or (B, T, D)
        Observed latent paths (equal-length trials).
    key : jax.random key
    **hmc_kwargs
        Passed to :func:`probkit.inference.hmc.run` (``num_warmup``, ``num_samples``,
        ``num_chains``, ``progress_bar``, ...).

    Returns
    -------
    probkit.result.Result
    """
    from probkit.inference import hmc

    check_key("key", key)
    arr = as_array("z", z, ndim=(2, 3))
    if not np.all(np.isfinite(arr)):
        raise ValueError("z: contains NaN or inf")
    # init at the prior median (A = 0, stable) rather than uniform(-2, 2) (often unstable)
    hmc_kwargs.setdefault("init_strategy", numpyro.infer.init_to_median(num_samples=15))
    with jax.enable_x64(True):
        return hmc.run(dynamics_model, jnp.asarray(arr, jnp.float64), key=key, **hmc_kwargs)


def fit_dynamics(z, *, method: str = "lstsq", stationary: str = "empirical", key=None,
                 **hmc_kwargs) -> DynamicsParams:
    """Fit ``A``, ``G`` and ``S`` from latent paths.

    ``method="lstsq"`` (default, Sec. 4.5): :math:`A = (\\sum_t z_t z_{t-1}^\\top)
    (\\sum_t z_{t-1}z_{t-1}^\\top)^{-1}` (regressing :math:`z_t` on :math:`z_{t-1}`; the authors'
    Python example regresses the reverse way, which we do not copy), :math:`G` the covariance of
    the residuals :math:`z_t - Az_{t-1}`. ``method="hmc"``: posterior means of ``A`` and ``G``
    under :func:`dynamics_model` (needs ``key``; ``hmc_kwargs`` go to
    :func:`probkit.inference.hmc.run`).

    ``stationary="empirical"`` (the paper): ``S`` is the sample covariance of ``z``;
    ``"lyapunov"``: ``S`` solves :math:`S = ASA^\\top + G`.

    Parameters
    ----------
    z : array (T, D), (B, T, D) or list of (T_b, D) arrays (trials)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = np.zeros((2000, 1))
    >>> for t in range(1, 2000):
    ...     z[t] = 0.8 * z[t - 1] + rng.normal()
    >>> round(float(fit_dynamics(z).A[0, 0]), 1)
    0.8
    """
    if method not in ("lstsq", "hmc"):
        raise ValueError(f"method: expected 'lstsq' or 'hmc', got {method!r}")
    if stationary not in ("empirical", "lyapunov"):
        raise ValueError(f"stationary: expected 'empirical' or 'lyapunov', got {stationary!r}")
    trials = _as_trials("z", z)
    for i, t in enumerate(trials):
        if not np.all(np.isfinite(t)):
            raise ValueError(f"z: contains NaN or inf (trial {i}); latent training paths "
                             "must be finite")
        if t.shape[0] < 2:
            raise ValueError(f"z: each trial needs at least 2 steps, trial {i} has {t.shape[0]}")
    d = trials[0].shape[1]
    prev = np.concatenate([t[:-1] for t in trials])
    nxt = np.concatenate([t[1:] for t in trials])
    if prev.shape[0] < d + 1:
        raise ValueError(f"z: need more than {d} transitions to fit a {d}x{d} transition matrix")
    if method == "lstsq":
        A = np.linalg.solve(prev.T @ prev, prev.T @ nxt).T
        G = np.atleast_2d(np.cov(nxt - prev @ A.T, rowvar=False))
    else:
        if key is None:
            raise ValueError("key: method='hmc' needs a JAX PRNG key")
        lens = {t.shape[0] for t in trials}
        if len(lens) != 1:
            raise ValueError("z: method='hmc' needs equal-length trials")
        res = sample_dynamics(np.stack(trials), key=key, **hmc_kwargs)
        A = np.asarray(res.posterior["A"]).reshape(-1, d, d).mean(0)
        G = np.asarray(res.posterior["G"]).reshape(-1, d, d).mean(0)
    G = 0.5 * (G + G.T)
    if stationary == "empirical":
        S = np.atleast_2d(np.cov(np.concatenate(trials), rowvar=False))
        return make_dynamics(A, G, S)
    return make_dynamics(A, G)


# --------------------------------------------------------------------------------------
# The filter
# --------------------------------------------------------------------------------------

class DKFResult(NamedTuple):
    """Output of :func:`dkf_filter`.

    Attributes
    ----------
    mean : (..., T, D) filtered means :math:`\\mu_t`.
    cov : (..., T, D, D) filtered covariances :math:`\\Sigma_t`.
    pd_fixed : (..., T) bool, steps where :math:`Q^{-1}-S^{-1}` was not positive definite and
        ``pd_fix`` was applied (always False for the robust filter and for missing steps).
    """

    mean: Array
    cov: Array
    pd_fixed: Array


def pseudo_observations(f: Array, Q: Array, S: Array, *, robust: bool = False,
                        pd_fix: str = "inflate", eps: float = 1e-6):
    """Kalman pseudo-observations ``(y, R, fixed)`` equivalent to the DKF update.

    Pure and traceable. ``f`` (T, D) and ``Q`` (T, D, D) without missing rows;
    :math:`R = (Q^{-1} - S^{-1})^{-1}`, :math:`y = R Q^{-1} f` (robust: :math:`R = Q`,
    :math:`y = f`), computed in the generalised eigenbasis of :math:`(Q, S)`; ``fixed`` marks
    the steps where a generalised eigenvalue was :math:`\\ge 1 - \\epsilon` and ``pd_fix``
    applied (see the module docstring).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> y, R, fixed = pseudo_observations(jnp.ones((1, 1)), 0.5 * jnp.ones((1, 1, 1)),
    ...                                   jnp.eye(1))
    >>> float(R[0, 0, 0]), float(y[0, 0]), bool(fixed[0])
    (1.0, 2.0, False)
    """
    if pd_fix not in PD_FIXES:
        raise ValueError(f"pd_fix: expected one of {PD_FIXES}, got {pd_fix!r}")
    return _pseudo_obs(f, Q, S, jnp.asarray(robust), jnp.asarray(PD_FIXES.index(pd_fix)), eps)


def _pseudo_obs(f, Q, S, robust, fix_code, eps):
    """:func:`pseudo_observations` with ``robust`` and the fix as traced values (one compile)."""
    L = jnp.linalg.cholesky(S)
    solve = functools.partial(solve_triangular, L, lower=True)
    # Qw = L^-1 Q L^-T for every step
    Qw = jax.vmap(lambda q: solve(solve(q).T))(Q)
    Qw = 0.5 * (Qw + jnp.swapaxes(Qw, -1, -2))
    e, V = jnp.linalg.eigh(Qw)
    fw = solve(f.T).T                                        # L^-1 f, (T, D)
    ok = jnp.all(e < 1.0 - eps, axis=-1)
    safe = jnp.where(ok[:, None], e, 0.5)
    h_std, g_std = safe / (1.0 - safe), 1.0 / (1.0 - safe)
    ec = jnp.minimum(e, 1.0 - eps)
    # fixes: 0 robust update, 1 clip eigenvalues at 1 - eps, 2 inflate Q <- (Q^-1 + S^-1)^-1
    # (whose generalised eigenvalues e / (1 + e) are < 1, so R = Q and y = L V (1 + e) V' L^-1 f)
    h_fix = jnp.select([fix_code == 0, fix_code == 1], [e, ec / (1.0 - ec)], e)
    g_fix = jnp.select([fix_code == 0, fix_code == 1], [jnp.ones_like(e), 1.0 / (1.0 - ec)],
                       1.0 + e)
    use_std = ok[:, None] & ~robust
    h = jnp.where(robust, e, jnp.where(use_std, h_std, h_fix))
    g = jnp.where(robust, 1.0, jnp.where(use_std, g_std, g_fix))
    fixed = ~ok & ~robust
    LV = L @ V                                               # (T, D, D)
    R = jnp.einsum("tik,tk,tjk->tij", LV, h, LV)
    R = 0.5 * (R + jnp.swapaxes(R, -1, -2))
    y = jnp.einsum("tik,tk,tjk,tj->ti", LV, g, V, fw)
    return y, R, fixed


def _dkf_core(A, G, S, f, Q, eps, robust, fix_code):
    d = A.shape[0]
    miss = jnp.any(jnp.isnan(f), -1) | jnp.any(jnp.isnan(Q), (-1, -2))
    f0 = jnp.where(miss[:, None], 0.0, f)
    Q0 = jnp.where(miss[:, None, None], 0.5 * S, Q)
    y, R, fixed = _pseudo_obs(f0, Q0, S, robust, fix_code, eps)
    y = jnp.where(miss[:, None], jnp.nan, y)
    params = LGSSM(initial_mean=jnp.zeros(d, A.dtype), initial_cov=S, transition_matrix=A,
                   transition_cov=G, emission_matrix=jnp.eye(d, dtype=A.dtype), emission_cov=R)
    out = kalman_filter(params, y)
    return DKFResult(out.filtered_mean, out.filtered_cov, fixed & ~miss)


@jax.jit
def _dkf_batched(A, G, S, f, Q, eps, robust, fix_code):
    return jax.vmap(_dkf_core, in_axes=(None, None, None, 0, 0, None, None, None))(
        A, G, S, f, Q, eps, robust, fix_code)


def _check_moments(f, Q, d: int) -> tuple[np.ndarray, np.ndarray]:
    f = _check_rows("f", f, ndim=(2, 3), allow_nan_rows=True)
    if f.shape[-1] != d:
        raise ValueError(f"f: expected last dimension {d} (the latent dimension of A), "
                         f"got {f.shape}")
    Q = as_array("Q", Q, ndim=(3, 4))
    if Q.shape != f.shape + (d,):
        raise ValueError(f"Q: expected shape {f.shape + (d,)} to match f, got {Q.shape}")
    miss = np.isnan(f).all(-1)
    Qv = Q[~miss]
    if not np.all(np.isfinite(Qv)):
        raise ValueError("Q: contains NaN or inf at steps where f is observed")
    atol = 1e-9 * max(1.0, float(np.abs(Qv).max(initial=0.0)))
    if not np.allclose(Qv, np.swapaxes(Qv, -1, -2), rtol=1e-6, atol=atol):
        raise ValueError("Q: every Q(x_t) must be symmetric")
    try:
        np.linalg.cholesky(Qv)
    except np.linalg.LinAlgError:
        bad = int(np.argmin(np.linalg.eigvalsh(Qv)[:, 0]))
        raise ValueError(f"Q: every Q(x_t) must be positive definite (observed step {bad} "
                         "is not)") from None
    return f, Q


def dkf_filter(dynamics: DynamicsParams, f, Q, *, robust: bool = False, pd_fix: str = "inflate",
               eps: float = 1e-6) -> DKFResult:
    """Run the discriminative Kalman filter on given discriminative moments.

    Parameters
    ----------
    dynamics : DynamicsParams
        ``A``, ``G``, ``S`` (see :func:`make_dynamics` / :func:`fit_dynamics`).
    f : array (T, D) or (B, T, D)
        :math:`f(x_t)` per step (and trial); a row of NaN marks a missing observation
        (the update is skipped: predict only).
    Q : array (T, D, D) or (B, T, D, D)
        :math:`Q(x_t)`, symmetric positive definite at observed steps.
    robust : bool
        Drop the :math:`-S^{-1}` term (robust DKF).
    pd_fix : {"robust", "clip", "inflate"}
        Fix for steps where :math:`Q^{-1} - S^{-1}` is not positive definite (module docstring).
    eps : float
        Eigenvalue margin for that test and for ``"clip"``.

    Returns
    -------
    DKFResult
        NumPy float64 arrays ``mean`` (…, T, D), ``cov`` (…, T, D, D), ``pd_fixed`` (…, T).

    Notes
    -----
    One jitted, vmapped call per shape (batched over trials), running
    :func:`probkit.inference.message_passing.kalman_filter` on the pseudo-observations of
    :func:`pseudo_observations`.

    Examples
    --------
    >>> import numpy as np
    >>> dyn = make_dynamics(0.9 * np.eye(2), 0.19 * np.eye(2))
    >>> out = dkf_filter(dyn, np.zeros((5, 2)), np.tile(0.5 * np.eye(2), (5, 1, 1)))
    >>> out.mean.shape, out.cov.shape
    ((5, 2), (5, 2, 2))
    """
    if not isinstance(dynamics, DynamicsParams):
        raise ValueError(f"dynamics: expected DynamicsParams, got {type(dynamics).__name__}")
    if pd_fix not in PD_FIXES:
        raise ValueError(f"pd_fix: expected one of {PD_FIXES}, got {pd_fix!r}")
    check_positive("eps", eps)
    dyn = make_dynamics(dynamics.A, dynamics.G, dynamics.S)
    d = dyn.A.shape[0]
    f, Q = _check_moments(f, Q, d)
    single = f.ndim == 2
    if single:
        f, Q = f[None], Q[None]
    with jax.enable_x64(True):
        out = _dkf_batched(*(jnp.asarray(a, jnp.float64) for a in (dyn.A, dyn.G, dyn.S, f, Q)),
                           jnp.float64(eps), jnp.asarray(bool(robust)),
                           jnp.asarray(PD_FIXES.index(pd_fix), jnp.int32))
    out = DKFResult(*(np.asarray(a) for a in out))   # NumPy float64, whatever the x64 flag
    if single:
        out = DKFResult(*(a[0] for a in out))
    return out


# --------------------------------------------------------------------------------------
# Exact discriminative moments of Gaussian(-mixture) observation models; Kalman baseline
# --------------------------------------------------------------------------------------

@jax.jit
def _gm_moments(x, H, noise_cov, log_weights, S):
    Sinv = jnp.linalg.inv(S)

    _, logdet_S = jnp.linalg.slogdet(S)

    def component(Hl, Ll):
        # Woodbury: C = H S H' + Lam, C^-1 = Lam^-1 - Lam^-1 H D H' Lam^-1 with
        # D = (H' Lam^-1 H + S^-1)^-1, log|C| = log|Lam| + log|S| - log|D| (no P x P x N solve)
        Linv = jnp.linalg.inv(Ll)
        Linv = 0.5 * (Linv + Linv.T)
        Lx = x @ Linv                                            # (N, P)
        Dl = jnp.linalg.inv(Hl.T @ Linv @ Hl + Sinv)
        Dl = 0.5 * (Dl + Dl.T)
        u = Lx @ Hl                                              # H' Lam^-1 x, (N, D)
        quad = jnp.sum(x * Lx, -1) - jnp.einsum("nd,de,ne->n", u, Dl, u)
        logdet = jnp.linalg.slogdet(Ll)[1] + logdet_S - jnp.linalg.slogdet(Dl)[1]
        logpdf = -0.5 * (quad + logdet + x.shape[1] * jnp.log(2 * jnp.pi))
        return logpdf, Dl, u @ Dl                                # V x = D H' Lam^-1 x

    logpdf, Dl, Vx = jax.vmap(component)(H, noise_cov)       # (L, N), (L, D, D), (L, N, D)
    w = jax.nn.softmax(log_weights[:, None] + logpdf, axis=0)  # (L, N)
    f = jnp.einsum("ln,lnd->nd", w, Vx)
    Q = (jnp.einsum("ln,lde->nde", w, Dl) + jnp.einsum("ln,lnd,lne->nde", w, Vx, Vx)
         - f[:, :, None] * f[:, None, :])
    return f, 0.5 * (Q + jnp.swapaxes(Q, -1, -2))


def gaussian_mixture_moments(x, H, noise_cov, weights, S) -> tuple[np.ndarray, np.ndarray]:
    """Exact :math:`f(x) = E[z|x]`, :math:`Q(x) = Var[z|x]` for Gaussian-mixture observations.

    For :math:`z \\sim N(0, S)` and :math:`p(x|z) = \\sum_l \\pi_l N(x; H_l z, \\Lambda_l)`:
    :math:`D_l = (H_l^\\top\\Lambda_l^{-1}H_l + S^{-1})^{-1}`,
    :math:`V_l = D_l H_l^\\top\\Lambda_l^{-1}`,
    :math:`w_l \\propto \\pi_l N(x; 0, H_l S H_l^\\top + \\Lambda_l)`,
    :math:`f = \\sum_l w_l V_l x`,
    :math:`Q = \\sum_l w_l (D_l + V_l x x^\\top V_l^\\top) - ff^\\top`
    (Burkhart et al. 2020, Sec. 4.2).
    One component with weight 1 is the linear-Gaussian case, for which the DKF equals the Kalman
    filter.

    Parameters
    ----------
    x : (N, P) observations.
    H : (L, P, D) emission matrices.
    noise_cov : (L, P, P) noise covariances.
    weights : (L,) mixture weights.
    S : (D, D) prior (stationary) covariance of z.

    Returns
    -------
    f : (N, D), Q : (N, D, D) float64.

    Examples
    --------
    >>> import numpy as np
    >>> f, Q = gaussian_mixture_moments(np.ones((1, 1)), np.ones((1, 1, 1)), np.ones((1, 1, 1)),
    ...                                 np.ones(1), np.eye(1))
    >>> float(f[0, 0]), float(Q[0, 0, 0])
    (0.5, 0.5)
    """
    H = as_array("H", H, ndim=3)
    n_comp, p, d = H.shape
    x = as_array("x", x, ndim=2)
    if x.shape[1] != p:
        raise ValueError(f"x: expected {p} columns to match H, got {x.shape}")
    noise_cov = as_array("noise_cov", noise_cov, ndim=3)
    if noise_cov.shape != (n_comp, p, p):
        raise ValueError(f"noise_cov: expected shape {(n_comp, p, p)}, got {noise_cov.shape}")
    weights = check_positive("weights", as_array("weights", weights, ndim=1))
    if weights.shape != (n_comp,):
        raise ValueError(f"weights: expected shape {(n_comp,)}, got {weights.shape}")
    S = _check_spd("S", S, d)
    with jax.enable_x64(True):
        f, Q = _gm_moments(*(jnp.asarray(a, jnp.float64) for a in
                             (x, H, noise_cov, np.log(weights / weights.sum()), S)))
        return np.asarray(f), np.asarray(Q)


def fit_linear_observation(x, z) -> tuple[np.ndarray, np.ndarray]:
    """The Kalman-filter baseline's observation model :math:`x = Hz + N(0, \\Lambda)`.

    ``H`` by least squares of ``x`` on ``z`` (no intercept), ``Lambda`` the covariance of the
    residuals (Burkhart et al. 2020, Sec. 4.5).

    Returns
    -------
    H : (P, D), Lam : (P, P)

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(500, 2))
    >>> H, Lam = fit_linear_observation(z @ np.ones((2, 3)), z)
    >>> np.allclose(H, 1.0)
    True
    """
    x = _check_rows("x", x, ndim=(2,), allow_nan_rows=False)
    z = _check_rows("z", z, ndim=(2,), allow_nan_rows=False)
    check_same_length(x=x, z=z)
    H = np.linalg.lstsq(z, x, rcond=None)[0].T
    Lam = np.atleast_2d(np.cov(x - z @ H.T, rowvar=False))
    return H, 0.5 * (Lam + Lam.T)


def kalman_decode(dynamics: DynamicsParams, H, Lam, x):
    """Kalman filter of the linear-Gaussian model (the paper's KF baseline).

    :math:`z_0\\sim N(0,S)`, dynamics from ``dynamics``, emissions
    :math:`x_t = Hz_t + N(0,\\Lambda)`;
    NaN rows of ``x`` are skipped. Returns :class:`probkit.inference.message_passing.FilterResult`
    (float64).

    Examples
    --------
    >>> import numpy as np
    >>> dyn = make_dynamics(0.9 * np.eye(1), 0.19 * np.eye(1))
    >>> out = kalman_decode(dyn, np.ones((2, 1)), np.eye(2), np.zeros((4, 2)))
    >>> out.filtered_mean.shape
    (4, 1)
    """
    dyn = make_dynamics(dynamics.A, dynamics.G, dynamics.S)
    d = dyn.A.shape[0]
    H = as_array("H", H, ndim=2)
    if H.shape[1] != d:
        raise ValueError(f"H: expected shape (P, {d}), got {H.shape}")
    Lam = _check_spd("Lam", Lam, H.shape[0])
    x = _check_rows("x", x, ndim=(2,), allow_nan_rows=True)
    if x.shape[1] != H.shape[0]:
        raise ValueError(f"x: expected {H.shape[0]} columns, got {x.shape}")
    with jax.enable_x64(True):
        params = LGSSM(initial_mean=jnp.zeros(d), initial_cov=jnp.asarray(dyn.S),
                       transition_matrix=jnp.asarray(dyn.A), transition_cov=jnp.asarray(dyn.G),
                       emission_matrix=jnp.asarray(H), emission_cov=jnp.asarray(Lam))
        return jax.tree.map(np.asarray, kalman_filter(params, jnp.asarray(x)))


def nrmse(pred, true) -> float:
    """Normalised RMSE: RMSE over all entries / RMS of ``true`` (predicting 0 gives 1)."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.sqrt(np.mean((pred - true) ** 2)) / np.sqrt(np.mean(true**2)))


def mean_absolute_angle(pred, true) -> float:
    """Mean absolute angle (radians, in [0, pi]) between predicted and true 2-D vectors."""
    pred, true = np.asarray(pred), np.asarray(true)
    ang = np.arctan2(pred[..., 1], pred[..., 0]) - np.arctan2(true[..., 1], true[..., 0])
    return float(np.mean(np.abs(np.angle(np.exp(1j * ang)))))


# --------------------------------------------------------------------------------------
# Nadaraya-Watson regression (pure functions)
# --------------------------------------------------------------------------------------

@jax.jit
def _nw_predict(x_train, y_train, bandwidth, x_query):
    logits = -_kernels.sqdist(x_query, x_train) / (2.0 * bandwidth**2)
    return jax.nn.softmax(logits, axis=-1) @ y_train


@jax.jit
def _nw_loo(x, y, d2, bandwidth):
    logits = -d2 / (2.0 * bandwidth**2)
    logits = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, logits)
    pred = jax.nn.softmax(logits, axis=-1) @ y
    return jnp.mean(jnp.sum((pred - y) ** 2, -1))


def nw_predict(x_train, y_train, bandwidth: float, x_query) -> np.ndarray:
    """Nadaraya-Watson regression with a Gaussian kernel.

    :math:`\\hat y(x) = \\sum_i w_i(x) y_i` with
    :math:`w_i \\propto \\exp(-\\lVert x - x_i\\rVert^2 / (2h^2))`
    (normalised in log space, so far-away queries get their nearest neighbours' values rather
    than 0/0).

    Examples
    --------
    >>> import numpy as np
    >>> float(nw_predict(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), 1e-3,
    ...                  np.array([[0.9]]))[0, 0])
    2.0
    """
    with jax.enable_x64(True):
        return np.asarray(_nw_predict(jnp.asarray(x_train, jnp.float64),
                                      jnp.asarray(y_train, jnp.float64), jnp.float64(bandwidth),
                                      jnp.asarray(x_query, jnp.float64)))


def nw_loo_error(x, y, bandwidth: float) -> float:
    """Leave-one-out mean squared error (summed over outputs) of :func:`nw_predict`."""
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        d2 = _kernels.sqdist(x, x)
        return float(_nw_loo(x, jnp.asarray(y, jnp.float64), d2, jnp.float64(bandwidth)))


def nw_select_bandwidth(x, y, *, bounds: tuple[float, float] | None = None) -> float:
    """Bandwidth :math:`h` minimising the leave-one-out error (1-D search on :math:`\\log h`).

    The default search range is the median pairwise distance times ``[1e-2, 1e1]`` (a coarse
    grid first, then Brent's method around the best grid point).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-2, 2, size=(200, 1)); y = np.sin(2 * x) + 0.1 * rng.normal(size=(200, 1))
    >>> 0.01 < nw_select_bandwidth(x, y) < 1.0
    True
    """
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        yj = jnp.asarray(y, jnp.float64)
        d2 = _kernels.sqdist(xj, xj)
        if bounds is None:
            med = float(jnp.sqrt(jnp.median(d2[jnp.triu_indices(xj.shape[0], 1)])))
            med = med if med > 0 else 1.0
            bounds = (1e-2 * med, 1e1 * med)

        def loss(logh):
            return float(_nw_loo(xj, yj, d2, jnp.float64(np.exp(logh))))

        grid = np.linspace(np.log(bounds[0]), np.log(bounds[1]), 16)
        vals = [loss(g) for g in grid]
        i = int(np.nanargmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = scipy.optimize.minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                                             options={"xatol": 1e-3})
        best = res.x if res.fun <= vals[i] else grid[i]
        return float(np.exp(best))


# --------------------------------------------------------------------------------------
# Learners
# --------------------------------------------------------------------------------------

def _check_xz(x, z) -> tuple[np.ndarray, np.ndarray]:
    x = _check_rows("x", x, ndim=(2,), allow_nan_rows=False)
    z = _check_rows("z", z, ndim=(2,), allow_nan_rows=False)
    check_same_length(x=x, z=z)
    return x.astype(np.float64), z.astype(np.float64)


def _split(n: int, holdout: float, key) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(key, n))
    n_hold = max(int(round(holdout * n)), 2)
    if n - n_hold < 2:
        raise ValueError(f"x: too few rows ({n}) for a {holdout:.0%} hold-out split")
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


class _ResidualCov(NamedTuple):
    """Q(x) from held-out residuals: NW regression of r r' on x (or the constant mean of r r')."""

    x: np.ndarray         # (M, P) hold-out inputs (empty (0, P) for constant)
    rr: np.ndarray        # (M, D*D) vec(r r')
    bandwidth: np.ndarray  # () NW bandwidth (0 for constant)
    const: np.ndarray     # (D, D) mean r r'
    jitter: np.ndarray    # () added to the diagonal


def _fit_residual_cov(x_hold, resid, kind: str) -> _ResidualCov:
    d = resid.shape[1]
    rr = (resid[:, :, None] * resid[:, None, :]).reshape(len(resid), d * d)
    const = rr.mean(0).reshape(d, d)
    jitter = np.float64(1e-6 * np.trace(const) / d)
    if kind == "constant":
        return _ResidualCov(np.zeros((0, x_hold.shape[1])), np.zeros((0, d * d)), np.float64(0.0),
                            const, jitter)
    h = nw_select_bandwidth(x_hold, rr)
    return _ResidualCov(x_hold, rr, np.float64(h), const, jitter)


def _predict_residual_cov(state: _ResidualCov, x) -> np.ndarray:
    d = state.const.shape[0]
    with jax.enable_x64(True):
        if state.x.shape[0] == 0:
            Q = jnp.broadcast_to(jnp.asarray(state.const), (x.shape[0], d, d))
        else:
            Q = nw_predict(state.x, state.rr, float(state.bandwidth), x).reshape(-1, d, d)
        Q = 0.5 * (Q + jnp.swapaxes(Q, -1, -2))
        return np.asarray(Q + state.jitter * jnp.eye(d))


class _Learner:
    """Shared API: ``fit(x, z, *, key) -> self``, ``predict(x) -> (f, Q)``, ``save``/``load``."""

    _state: Any = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has been called."""
        return self._state is not None

    def _check_predict(self, x) -> np.ndarray:
        if not self.fitted:
            raise ValueError(f"learner: this {type(self).__name__} is not fitted; call "
                             "fit(x, z, key=...) (or load a saved one) before predict(x)")
        x = _check_rows("x", x, ndim=(2,), allow_nan_rows=False)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} columns (as in training), got {x.shape}")
        return x.astype(np.float64)

    def predict_mean(self, x) -> np.ndarray:
        """Only :math:`f(x)`."""
        return self.predict(x)[0]


class NadarayaWatson(_Learner):
    """Nadaraya-Watson learner of :math:`p(z|x) \\approx N(f(x), Q(x))` (Burkhart et al., Sec. 4.5).

    ``f`` is Gaussian-kernel regression of ``z`` on ``x`` with the bandwidth minimising the
    leave-one-out error (:func:`nw_select_bandwidth`) on a ``1 - holdout`` share of the training
    rows; ``Q`` is Nadaraya-Watson regression of :math:`rr^\\top` on ``x`` over the residuals
    ``r = z - f(x)`` of the held-out rows (``covariance="nw"``, its own LOO bandwidth) or their
    mean (``covariance="constant"``). A tiny jitter (1e-6 of the mean residual variance) keeps
    ``Q`` positive definite.

    Parameters
    ----------
    bandwidth : float, optional
        Fixed bandwidth for ``f`` instead of the LOO choice.
    holdout : float
        Share of the rows used for ``Q`` (0.3 in the paper).
    covariance : {"nw", "constant"}

    Examples
    --------
    >>> import numpy as np, jax
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)); z = x[:, :1] + 0.1 * rng.normal(size=(200, 1))
    >>> f, Q = NadarayaWatson().fit(x, z, key=jax.random.key(0)).predict(x[:3])
    >>> f.shape, Q.shape
    ((3, 1), (3, 1, 1))
    """

    def __init__(self, *, bandwidth: float | None = None, holdout: float = 0.3,
                 covariance: str = "nw") -> None:
        if bandwidth is not None:
            check_positive("bandwidth", bandwidth)
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout: expected a share in (0, 1), got {holdout}")
        if covariance not in ("nw", "constant"):
            raise ValueError(f"covariance: expected 'nw' or 'constant', got {covariance!r}")
        self.bandwidth, self.holdout, self.covariance = bandwidth, holdout, covariance
        self._state = None

    @property
    def in_dim(self) -> int:
        return self._state["x"].shape[1]

    def fit(self, x, z, *, key) -> NadarayaWatson:
        """Fit ``f`` on the training share and ``Q`` on the held-out residuals."""
        x, z = _check_xz(x, z)
        check_key("key", key)
        tr, ho = _split(len(x), self.holdout, key)
        h = self.bandwidth if self.bandwidth is not None else nw_select_bandwidth(x[tr], z[tr])
        resid = z[ho] - np.asarray(nw_predict(x[tr], z[tr], h, x[ho]))
        cov = _fit_residual_cov(x[ho], resid, self.covariance)
        self._state = {"x": x[tr], "z": z[tr], "bandwidth": np.float64(h), **_cov_arrays(cov)}
        return self

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``f(x)`` (N, D) and ``Q(x)`` (N, D, D), float64."""
        x = self._check_predict(x)
        s = self._state
        f = nw_predict(s["x"], s["z"], float(s["bandwidth"]), x)
        return f, _predict_residual_cov(_cov_from_arrays(s), x)

    def save(self, path) -> None:
        """Save to ``.npz`` (arrays plus a JSON header); reloads bit-for-bit."""
        _save_npz(path, self, {"bandwidth_arg": self.bandwidth, "holdout": self.holdout,
                               "covariance": self.covariance}, self._state)

    @classmethod
    def load(cls, path) -> NadarayaWatson:
        """Load a learner written by :meth:`save`."""
        header, arrays = _load_npz(path, cls)
        obj = cls(bandwidth=header["bandwidth_arg"], holdout=header["holdout"],
                  covariance=header["covariance"])
        obj._state = arrays
        return obj


def _cov_arrays(cov: _ResidualCov) -> dict[str, np.ndarray]:
    return {f"cov_{k}": np.asarray(v) for k, v in cov._asdict().items()}


def _cov_from_arrays(s: dict) -> _ResidualCov:
    return _ResidualCov(**{k: s[f"cov_{k}"] for k in _ResidualCov._fields})


def _save_npz(path, obj, header: dict, arrays: dict) -> None:
    if not obj.fitted:
        raise ValueError(f"learner: this {type(obj).__name__} is not fitted; nothing to save")
    head = {"format": "probkit.models.dkf", "class": type(obj).__name__,
            "version": _FORMAT_VERSION, **header}
    with open(Path(path), "wb") as fh:  # exact path: np.savez would append .npz to a str
        np.savez(fh, header=np.asarray(json.dumps(head)), **arrays)


def _load_npz(path, cls) -> tuple[dict, dict]:
    with np.load(Path(path), allow_pickle=False) as npz:
        header = json.loads(npz["header"].item())
        arrays = {k: npz[k] for k in npz.files if k != "header"}
    if header.get("class") != cls.__name__:
        raise ValueError(f"path: {path} holds a {header.get('class')!r}, not a {cls.__name__}")
    return header, arrays


class _Scaler(NamedTuple):
    x_mean: Array
    x_scale: Array
    z_mean: Array
    z_scale: Array


class _MLPNet(eqx.Module):
    """Trunk MLP (tanh) with a mean head and a Cholesky-factor head."""

    trunk: eqx.nn.MLP
    mean_head: eqx.nn.Linear
    chol_head: eqx.nn.Linear
    out_dim: int = eqx.field(static=True)

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.trunk = eqx.nn.MLP(in_dim, width, width, depth - 1, activation=jnp.tanh,
                                final_activation=jnp.tanh, key=k1)
        self.mean_head = eqx.nn.Linear(width, out_dim, key=k2)
        self.chol_head = eqx.nn.Linear(width, out_dim * (out_dim + 1) // 2, key=k3)
        self.out_dim = out_dim

    def __call__(self, x: Array) -> tuple[Array, Array]:
        h = self.trunk(x)
        d = self.out_dim
        raw = self.chol_head(h)
        rows, cols = jnp.tril_indices(d)
        L = jnp.zeros((d, d), raw.dtype).at[rows, cols].set(raw)
        diag = jax.nn.softplus(jnp.diagonal(L) + 0.5) + 1e-3
        L = L - jnp.diag(jnp.diagonal(L)) + jnp.diag(diag)
        return self.mean_head(h), L


def _gauss_nll(net, x, z):
    m, L = jax.vmap(net)(x)
    r = solve_triangular(L, (z - m)[..., None], lower=True)[..., 0]
    logdet = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    return jnp.mean(0.5 * jnp.sum(r**2, -1) + logdet)


@eqx.filter_jit
def _train_mlp(net, xt, zt, xv, zv, num_steps, lr, weight_decay):
    opt = optax.adamw(lr, weight_decay=weight_decay)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    opt_state = opt.init(params)

    def loss(p, x, z):
        return _gauss_nll(eqx.combine(p, static), x, z)

    def step(carry, _):
        p, s, best_p, best_v = carry
        g = jax.grad(loss)(p, xt, zt)
        upd, s = opt.update(g, s, p)
        p = optax.apply_updates(p, upd)
        v = loss(p, xv, zv)
        better = v < best_v
        best_p = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best_p)
        return (p, s, best_p, jnp.where(better, v, best_v)), v

    init = (params, opt_state, params, loss(params, xv, zv))
    (_, _, best, best_v), hist = jax.lax.scan(step, init, None, length=num_steps)
    return eqx.combine(best, static), best_v, hist


class MLPLearner(_Learner):
    """Equinox MLP learner: a tanh trunk with a mean head and a covariance head.

    The covariance head outputs a lower-triangular Cholesky factor :math:`L(x)` (softplus
    diagonal), :math:`Q(x) = L(x)L(x)^\\top`. Inputs and targets are standardised; training
    minimises the Gaussian negative log-likelihood :math:`-\\log N(z; f(x), Q(x))` with optax
    AdamW (weight decay stands in for the paper's Bayesian-regularised Levenberg-Marquardt),
    full batch, on a ``1 - holdout`` share of the rows; the parameters with the best held-out
    NLL are kept (early stopping).

    Parameters
    ----------
    width, depth : int
        Hidden width and number of hidden layers.
    num_steps : int
        Optimiser steps.
    learning_rate, weight_decay : float
    holdout : float
        Validation share for early stopping.

    Examples
    --------
    >>> import numpy as np, jax
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)); z = np.tanh(x[:, :1]) + 0.1 * rng.normal(size=(200, 1))
    >>> m = MLPLearner(num_steps=50).fit(x, z, key=jax.random.key(0))
    >>> m.predict(x[:2])[1].shape
    (2, 1, 1)
    """

    def __init__(self, *, width: int = 32, depth: int = 2, num_steps: int = 1000,
                 learning_rate: float = 3e-3, weight_decay: float = 1e-3,
                 holdout: float = 0.3) -> None:
        self.width = check_positive_int("width", width)
        self.depth = check_positive_int("depth", depth)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.learning_rate = float(check_positive("learning_rate", learning_rate))
        self.weight_decay = float(check_positive("weight_decay", weight_decay, allow_zero=True))
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout: expected a share in (0, 1), got {holdout}")
        self.holdout = holdout
        self._state = None
        self.history: np.ndarray | None = None

    @property
    def in_dim(self) -> int:
        return self._state[1].x_mean.shape[0]

    def _hyper(self, in_dim: int, out_dim: int) -> dict:
        return {"in_dim": in_dim, "out_dim": out_dim, "width": self.width, "depth": self.depth,
                "num_steps": self.num_steps, "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay, "holdout": self.holdout}

    def fit(self, x, z, *, key) -> MLPLearner:
        """Train on ``(x, z)`` (float64), early-stopped on a held-out share."""
        x, z = _check_xz(x, z)
        check_key("key", key)
        k_split, k_init = jax.random.split(key)
        tr, ho = _split(len(x), self.holdout, k_split)
        with jax.enable_x64(True):
            sc = _Scaler(*(jnp.asarray(a) for a in (x[tr].mean(0), x[tr].std(0) + 1e-12,
                                                      z[tr].mean(0), z[tr].std(0) + 1e-12)))
            xs = (jnp.asarray(x) - sc.x_mean) / sc.x_scale
            zs = (jnp.asarray(z) - sc.z_mean) / sc.z_scale
            net = _MLPNet(x.shape[1], z.shape[1], self.width, self.depth, key=k_init)
            net, _, hist = _train_mlp(net, xs[tr], zs[tr], xs[ho], zs[ho], self.num_steps,
                                      self.learning_rate, self.weight_decay)
        self.history = np.asarray(hist)
        self._state = (net, sc)
        return self

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``f(x)`` (N, D) and ``Q(x) = L L^T`` (N, D, D), float64."""
        x = self._check_predict(x)
        net, sc = self._state
        with jax.enable_x64(True):
            m, L = jax.vmap(net)((jnp.asarray(x) - sc.x_mean) / sc.x_scale)
            f = sc.z_mean + sc.z_scale * m
            L = sc.z_scale[:, None] * L
            return np.asarray(f), np.asarray(L @ jnp.swapaxes(L, -1, -2))

    def save(self, path) -> None:
        """Write a JSON header line, then ``eqx.tree_serialise_leaves`` of (network, scaler)."""
        if not self.fitted:
            raise ValueError("learner: this MLPLearner is not fitted; nothing to save")
        net, sc = self._state
        head = {"format": "probkit.models.dkf", "class": "MLPLearner", "version": _FORMAT_VERSION,
                **self._hyper(int(sc.x_mean.shape[0]), int(sc.z_mean.shape[0]))}
        with open(Path(path), "wb") as fh:
            fh.write((json.dumps(head) + "\n").encode())
            eqx.tree_serialise_leaves(fh, (net, sc))

    @classmethod
    def load(cls, path) -> MLPLearner:
        """Load a learner written by :meth:`save` (exact)."""
        with open(Path(path), "rb") as fh:
            head = json.loads(fh.readline().decode())
            if head.get("class") != "MLPLearner":
                raise ValueError(f"path: {path} holds a {head.get('class')!r}, not an MLPLearner")
            obj = cls(width=head["width"], depth=head["depth"], num_steps=head["num_steps"],
                      learning_rate=head["learning_rate"], weight_decay=head["weight_decay"],
                      holdout=head["holdout"])
            with jax.enable_x64(True):
                din, dout = head["in_dim"], head["out_dim"]
                net = _MLPNet(din, dout, head["width"], head["depth"], key=jax.random.key(0))
                sc = _Scaler(jnp.zeros(din), jnp.zeros(din), jnp.zeros(dout), jnp.zeros(dout))
                skeleton = (net, sc)
                obj._state = eqx.tree_deserialise_leaves(fh, skeleton)
        return obj


def _gp_nll(theta, treedef, x, y):
    """Negative log marginal likelihood of one zero-mean GP; theta = log(kernel leaves, noise)."""
    *log_leaves, log_noise = theta
    k = jax.tree_util.tree_unflatten(treedef, [jnp.exp(a) for a in log_leaves])
    K = k(x, x) + (jnp.exp(log_noise) + 1e-8) * jnp.eye(x.shape[0], dtype=x.dtype)
    L = jnp.linalg.cholesky(K)
    a = solve_triangular(L, y, lower=True)
    return 0.5 * a @ a + jnp.sum(jnp.log(jnp.diagonal(L))) + 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)


class GaussianProcess(_Learner):
    """GP learner: one GP regression per latent dimension, any :mod:`probkit.kernels` kernel.

    Each output :math:`z_d` (centred) gets its own kernel hyperparameters and noise variance,
    fitted by maximising the log marginal likelihood (L-BFGS on log-parameters, on at most
    ``max_opt_points`` rows); :math:`f_d(x) = k(x, X)(K + \\sigma_d^2 I)^{-1}(z_d - \\bar z_d) +
    \\bar z_d`. ``Q`` comes from held-out residuals as in :class:`NadarayaWatson` (Sec. 4.5).

    Parameters
    ----------
    kernel : probkit.kernels.Kernel, optional
        Initial kernel (default ``RBF`` with unit ARD lengthscales); all its array leaves must
        be positive (they are optimised in log space).
    noise : float
        Initial noise variance.
    optimize : bool
        Fit hyperparameters (else use ``kernel`` and ``noise`` as given).
    max_opt_points, max_iter : int
    holdout : float
    covariance : {"nw", "constant"}

    Examples
    --------
    >>> import numpy as np, jax
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 2)); z = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(100, 1))
    >>> gp = GaussianProcess(max_iter=10).fit(x, z, key=jax.random.key(0))
    >>> gp.predict(x[:2])[0].shape
    (2, 1)
    """

    def __init__(self, kernel: _kernels.Kernel | None = None, *, noise: float = 0.1,
                 optimize: bool = True, max_opt_points: int = 1000, max_iter: int = 50,
                 holdout: float = 0.3, covariance: str = "nw") -> None:
        if kernel is not None and not isinstance(kernel, _kernels.Kernel):
            raise ValueError("kernel: expected a probkit.kernels.Kernel, got "
                             f"{type(kernel).__name__}")
        self.kernel = kernel
        self.noise = float(check_positive("noise", noise))
        self.optimize = bool(optimize)
        self.max_opt_points = check_positive_int("max_opt_points", max_opt_points, minimum=2)
        self.max_iter = check_positive_int("max_iter", max_iter)
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout: expected a share in (0, 1), got {holdout}")
        if covariance not in ("nw", "constant"):
            raise ValueError(f"covariance: expected 'nw' or 'constant', got {covariance!r}")
        self.holdout, self.covariance = holdout, covariance
        self._state = None

    @property
    def in_dim(self) -> int:
        return self._state["x"].shape[1]

    def _kernel_stack(self, s: dict):
        """The per-output kernels as one pytree with a leading output axis."""
        skeleton = getattr(_kernels, str(s["kernel_class"]))()
        treedef = jax.tree_util.tree_structure(skeleton)
        return treedef, [s[f"kernel_leaf{i}"] for i in range(treedef.num_leaves)]

    def fit(self, x, z, *, key) -> GaussianProcess:
        """Fit hyperparameters and the GP means on the training share, ``Q`` on the hold-out."""
        x, z = _check_xz(x, z)
        check_key("key", key)
        k_split, k_sub = jax.random.split(key)
        tr, ho = _split(len(x), self.holdout, k_split)
        xt, zt = x[tr], z[tr]
        kernel = self.kernel if self.kernel is not None else _kernels.RBF(
            lengthscale=np.ones(x.shape[1]), variance=1.0)
        name = type(kernel).__name__
        if getattr(_kernels, name, None) is not type(kernel):
            raise ValueError(f"kernel: {name} is not a probkit.kernels class (needed to save/load)")
        leaves, treedef = jax.tree_util.tree_flatten(kernel)
        d = z.shape[1]
        z_mean = zt.mean(0)
        with jax.enable_x64(True):
            theta0 = [np.log(np.asarray(leaf, np.float64)) for leaf in leaves]
            theta0.append(np.log(self.noise))
            thetas = [[t.copy() for t in theta0] for _ in range(d)]
            if self.optimize:
                m = min(self.max_opt_points, len(xt))
                sub = np.sort(np.asarray(jax.random.permutation(k_sub, len(xt)))[:m])
                xs = jnp.asarray(xt[sub])
                vg = jax.jit(jax.value_and_grad(lambda th, y: _gp_nll(th, treedef, xs, y)))
                for j in range(d):
                    y = jnp.asarray(zt[sub, j] - z_mean[j])
                    flat, unravel = ravel_pytree([jnp.asarray(t) for t in theta0])

                    def fun(v, y=y, unravel=unravel):
                        val, g = vg(unravel(jnp.asarray(v)), y)
                        return float(val), np.asarray(ravel_pytree(g)[0])

                    res = scipy.optimize.minimize(fun, np.asarray(flat), jac=True,
                                                  method="L-BFGS-B",
                                                  bounds=[(-10.0, 10.0)] * flat.size,
                                                  options={"maxiter": self.max_iter})
                    thetas[j] = [np.asarray(a) for a in unravel(jnp.asarray(res.x))]
            # stack per-output parameters; the Gram solve on the full training share
            leaf_stack = [np.stack([np.exp(thetas[j][i]) for j in range(d)])
                          for i in range(len(leaves))]
            noise = np.array([float(np.exp(thetas[j][-1])) for j in range(d)])
            alpha = np.asarray(_gp_alpha(treedef, [jnp.asarray(a) for a in leaf_stack],
                                         jnp.asarray(noise), jnp.asarray(xt),
                                         jnp.asarray(zt - z_mean)))
        state = {"x": xt, "alpha": alpha, "z_mean": z_mean, "noise": noise,
                 "kernel_class": np.asarray(name),
                 **{f"kernel_leaf{i}": a for i, a in enumerate(leaf_stack)}}
        f_ho = np.asarray(_gp_mean(treedef, [jnp.asarray(a) for a in leaf_stack], jnp.asarray(xt),
                                   jnp.asarray(alpha), jnp.asarray(z_mean), jnp.asarray(x[ho])))
        cov = _fit_residual_cov(x[ho], z[ho] - f_ho, self.covariance)
        self._state = {**state, **_cov_arrays(cov)}
        return self

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``f(x)`` (N, D) and ``Q(x)`` (N, D, D), float64."""
        x = self._check_predict(x)
        s = self._state
        treedef, leaves = self._kernel_stack(s)
        with jax.enable_x64(True):
            f = _gp_mean(treedef, [jnp.asarray(a) for a in leaves], jnp.asarray(s["x"]),
                         jnp.asarray(s["alpha"]), jnp.asarray(s["z_mean"]), jnp.asarray(x))
        return np.asarray(f), _predict_residual_cov(_cov_from_arrays(s), x)

    def save(self, path) -> None:
        """Save to ``.npz`` (arrays plus a JSON header); reloads bit-for-bit."""
        _save_npz(path, self, {"noise_init": self.noise, "optimize": self.optimize,
                               "max_opt_points": self.max_opt_points, "max_iter": self.max_iter,
                               "holdout": self.holdout, "covariance": self.covariance}, self._state)

    @classmethod
    def load(cls, path) -> GaussianProcess:
        """Load a learner written by :meth:`save`."""
        header, arrays = _load_npz(path, cls)
        obj = cls(noise=header["noise_init"], optimize=header["optimize"],
                  max_opt_points=header["max_opt_points"], max_iter=header["max_iter"],
                  holdout=header["holdout"], covariance=header["covariance"])
        obj._state = arrays
        return obj


@functools.partial(jax.jit, static_argnums=0)
def _gp_alpha(treedef, leaves, noise, x, y):
    def one(lv, nz, yd):
        k = jax.tree_util.tree_unflatten(treedef, lv)
        K = k(x, x) + (nz + 1e-8) * jnp.eye(x.shape[0], dtype=x.dtype)
        return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(K), True), yd)

    return jax.vmap(one, in_axes=(0, 0, 1), out_axes=1)(leaves, noise, y)


@functools.partial(jax.jit, static_argnums=0)
def _gp_mean(treedef, leaves, x, alpha, z_mean, xq):
    def one(lv, ad):
        return jax.tree_util.tree_unflatten(treedef, lv)(xq, x) @ ad

    return jax.vmap(one, in_axes=(0, 1), out_axes=1)(leaves, alpha) + z_mean


_LEARNERS = {"NadarayaWatson": NadarayaWatson, "MLPLearner": MLPLearner,
             "GaussianProcess": GaussianProcess}


def load_learner(path):
    """Load any learner saved by ``.save`` (NW/GP ``.npz`` or the MLP's header + leaves file)."""
    path = Path(path)
    with open(path, "rb") as fh:
        start = fh.read(1)
    if start == b"{":
        return MLPLearner.load(path)
    with np.load(path, allow_pickle=False) as npz:
        cls = json.loads(npz["header"].item())["class"]
    if cls not in _LEARNERS:
        raise ValueError(f"path: unknown learner class {cls!r} in {path}")
    return _LEARNERS[cls].load(path)


# --------------------------------------------------------------------------------------
# Convenience API
# --------------------------------------------------------------------------------------

class DiscriminativeKalmanFilter:
    """Fit dynamics and a discriminative learner, then filter: the thin API over :func:`dkf_filter`.

    Parameters
    ----------
    learner : NadarayaWatson | MLPLearner | GaussianProcess, optional
        Default ``NadarayaWatson()``.
    robust : bool
        Robust DKF (no :math:`-S^{-1}`).
    pd_fix : {"robust", "clip", "inflate"}
    dynamics : {"lstsq", "hmc"} or DynamicsParams
        How to get ``A``, ``G`` (a given :class:`DynamicsParams` is used as is).
    stationary : {"empirical", "lyapunov"}
        How :func:`fit_dynamics` sets ``S``.
    hmc_kwargs : dict, optional
        For ``dynamics="hmc"``.

    Examples
    --------
    >>> import numpy as np, jax
    >>> rng = np.random.default_rng(1)
    >>> z = np.cumsum(0.1 * rng.normal(size=(400, 2)), 0) * 0.5
    >>> x = np.hstack([z, z**2]) + 0.05 * rng.normal(size=(400, 4))
    >>> dkf = DiscriminativeKalmanFilter().fit(x[:300], z[:300], key=jax.random.key(0))
    >>> dkf.filter(x[300:]).mean.shape
    (100, 2)
    """

    def __init__(self, learner=None, *, robust: bool = False, pd_fix: str = "inflate",
                 dynamics: str | DynamicsParams = "lstsq", stationary: str = "empirical",
                 hmc_kwargs: dict | None = None, eps: float = 1e-6) -> None:
        learner = NadarayaWatson() if learner is None else learner
        if not isinstance(learner, _Learner):
            raise ValueError(f"learner: expected NadarayaWatson, MLPLearner or GaussianProcess, "
                             f"got {type(learner).__name__}")
        if pd_fix not in PD_FIXES:
            raise ValueError(f"pd_fix: expected one of {PD_FIXES}, got {pd_fix!r}")
        if not (isinstance(dynamics, DynamicsParams) or dynamics in ("lstsq", "hmc")):
            raise ValueError("dynamics: expected 'lstsq', 'hmc' or DynamicsParams, got "
                             f"{dynamics!r}")
        self.learner, self.robust, self.pd_fix = learner, bool(robust), pd_fix
        self.dynamics, self.stationary = dynamics, stationary
        self.hmc_kwargs = dict(hmc_kwargs or {})
        self.eps = eps
        self.dynamics_: DynamicsParams | None = None

    def fit(self, x, z, *, key) -> DiscriminativeKalmanFilter:
        """Fit the dynamics on ``z`` and the learner on the rows ``(x_t, z_t)``.

        ``x`` (T, P) or (B, T, P) and ``z`` (T, D) or (B, T, D) with the same leading axes;
        training data must be finite.
        """
        check_key("key", key)
        x = _check_rows("x", x, ndim=(2, 3), allow_nan_rows=False)
        z = _check_rows("z", z, ndim=(2, 3), allow_nan_rows=False)
        if x.ndim != z.ndim:
            raise ValueError(f"x, z: both (T, .) or both (B, T, .); got {x.shape} and {z.shape}")
        if x.shape[:-1] != z.shape[:-1]:
            raise ValueError(f"x, z: lengths differ (x has {x.shape[:-1]}, z has {z.shape[:-1]})")
        k_dyn, k_learn = jax.random.split(key)
        if isinstance(self.dynamics, DynamicsParams):
            self.dynamics_ = make_dynamics(*self.dynamics)
        else:
            self.dynamics_ = fit_dynamics(z, method=self.dynamics, stationary=self.stationary,
                                          key=k_dyn, **self.hmc_kwargs)
        self.learner.fit(x.reshape(-1, x.shape[-1]), z.reshape(-1, z.shape[-1]), key=k_learn)
        return self

    def moments(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``f(x_t)``, ``Q(x_t)`` for (T, P) or (B, T, P) inputs; NaN rows stay NaN."""
        if self.dynamics_ is None:
            raise ValueError("learner: this DiscriminativeKalmanFilter is not fitted; call "
                             "fit first")
        x = _check_rows("x", x, ndim=(2, 3), allow_nan_rows=True)
        flat = x.reshape(-1, x.shape[-1])
        miss = np.isnan(flat).all(-1)
        d = self.dynamics_.A.shape[0]
        f = np.full((flat.shape[0], d), np.nan)
        Q = np.full((flat.shape[0], d, d), np.nan)
        if (~miss).any():
            fo, Qo = self.learner.predict(flat[~miss])
            f[~miss], Q[~miss] = np.asarray(fo), np.asarray(Qo)
        return f.reshape(x.shape[:-1] + (d,)), Q.reshape(x.shape[:-1] + (d, d))

    def filter(self, x) -> DKFResult:
        """Filtered means and covariances for observations ``x`` (T, P) or (B, T, P)."""
        f, Q = self.moments(x)
        return dkf_filter(self.dynamics_, f, Q, robust=self.robust, pd_fix=self.pd_fix,
                          eps=self.eps)
