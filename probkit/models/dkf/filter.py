r"""The DKF recursion as pseudo-observations of the package's one Kalman filter.

With :math:`M_t = A\Sigma_{t-1}A^\top + G` the filter of Burkhart et al. (2020) is

.. math::

    \Sigma_t = (Q(x_t)^{-1} + M_t^{-1} - S^{-1})^{-1}, \qquad
    \mu_t = \Sigma_t\bigl(Q(x_t)^{-1} f(x_t) + M_t^{-1} A \mu_{t-1}\bigr),

from :math:`\mu_0 = 0, \Sigma_0 = S`; the *robust* DKF drops :math:`-S^{-1}`.

One Kalman recursion
--------------------
The DKF update *is* a Kalman update with identity emission matrix, a pseudo-observation
:math:`y_t = R_t Q_t^{-1} f(x_t)` and the time-varying emission covariance
:math:`R_t = (Q_t^{-1} - S^{-1})^{-1}` (robust variant: :math:`R_t = Q_t`, :math:`y_t = f(x_t)`):
the Kalman posterior precision is :math:`M^{-1} + R^{-1}` and its information vector
:math:`M^{-1}A\mu + R^{-1}y`. :func:`dkf_filter` therefore builds ``(y_t, R_t)`` and calls
:func:`probkit.inference.kalman.kalman_filter` -- the package's only Kalman recursion.
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

Examples
--------
>>> import numpy as np
>>> from probkit.models.dkf import dkf_filter, make_dynamics
>>> dyn = make_dynamics(0.9 * np.eye(1), 0.19 * np.eye(1))
>>> f, Q = np.ones((3, 1)), np.full((3, 1, 1), 0.5)
>>> filt, smooth = dkf_filter(dyn, f, Q), dkf_filter(dyn, f, Q, smooth=True)
>>> bool(np.all(smooth.cov <= filt.cov + 1e-12))
True
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.linalg import solve_triangular

from probkit._checks import as_array, check_positive, check_rows
from probkit.inference.kalman import kalman_filter, rts_smoother
from probkit.models.dkf.dynamics import DynamicsParams, make_dynamics
from probkit.statespace import LGSSM

__all__ = ["PD_FIXES", "DKFResult", "pseudo_observations", "dkf_filter"]

#: The fixes for steps where :math:`Q^{-1} - S^{-1}` is not positive definite.
PD_FIXES = ("robust", "clip", "inflate")


class DKFResult(NamedTuple):
    """Output of :func:`dkf_filter`.

    Attributes
    ----------
    mean : (..., T, D) filtered means :math:`\\mu_t` (smoothed ones with ``smooth=True``).
    cov : (..., T, D, D) filtered covariances :math:`\\Sigma_t` (or smoothed).
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


def _dkf_core(A, G, S, f, Q, eps, robust, fix_code, smooth):
    d = A.shape[0]
    miss = jnp.any(jnp.isnan(f), -1) | jnp.any(jnp.isnan(Q), (-1, -2))
    f0 = jnp.where(miss[:, None], 0.0, f)
    Q0 = jnp.where(miss[:, None, None], 0.5 * S, Q)
    y, R, fixed = _pseudo_obs(f0, Q0, S, robust, fix_code, eps)
    y = jnp.where(miss[:, None], jnp.nan, y)
    params = LGSSM(initial_mean=jnp.zeros(d, A.dtype), initial_cov=S, transition_matrix=A,
                   transition_cov=G, emission_matrix=jnp.eye(d, dtype=A.dtype), emission_cov=R)
    if smooth:
        out = rts_smoother(params, y)
        return DKFResult(out.smoothed_mean, out.smoothed_cov, fixed & ~miss)
    out = kalman_filter(params, y)
    return DKFResult(out.filtered_mean, out.filtered_cov, fixed & ~miss)


@functools.partial(jax.jit, static_argnames="smooth")
def _dkf_batched(A, G, S, f, Q, eps, robust, fix_code, smooth):
    core = functools.partial(_dkf_core, smooth=smooth)
    return jax.vmap(core, in_axes=(None, None, None, 0, 0, None, None, None))(
        A, G, S, f, Q, eps, robust, fix_code)


def _check_moments(f, Q, d: int) -> tuple[np.ndarray, np.ndarray]:
    f = check_rows("f", f, ndim=(2, 3), allow_nan_rows=True)
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
               eps: float = 1e-6, smooth: bool = False) -> DKFResult:
    """Run the discriminative Kalman filter (or smoother) on given discriminative moments.

    Parameters
    ----------
    dynamics : DynamicsParams
        ``A``, ``G``, ``S`` (see :func:`make_dynamics` / :func:`~probkit.models.dkf.fit_dynamics`).
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
    smooth : bool
        Return the smoothed moments of :math:`p(z_t \\mid x_{1:T})` (Rauch-Tung-Striebel on the
        same pseudo-observations) instead of the filtered ones of :math:`p(z_t \\mid x_{1:t})`.

    Returns
    -------
    DKFResult
        NumPy float64 arrays ``mean`` (…, T, D), ``cov`` (…, T, D, D), ``pd_fixed`` (…, T).

    Notes
    -----
    One jitted, vmapped call per shape (batched over trials), running
    :func:`probkit.inference.kalman.kalman_filter` (or
    :func:`~probkit.inference.kalman.rts_smoother`) on the pseudo-observations of
    :func:`pseudo_observations`. Under the DKF's observation model the pseudo-observations are
    an exact linear-Gaussian likelihood of :math:`z_t`, so the smoother is the exact posterior
    of the path under that model.

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
                           jnp.asarray(PD_FIXES.index(pd_fix), jnp.int32), smooth=bool(smooth))
    out = DKFResult(*(np.asarray(a) for a in out))   # NumPy float64, whatever the x64 flag
    if single:
        out = DKFResult(*(a[0] for a in out))
    return out
