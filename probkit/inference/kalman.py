r"""Kalman filter and RTS smoother (sequential and parallel in time), exact state-space GP.

This module is the one home of the Kalman filter in probkit: the state-space GP
distribution, the functional Tucker model and the discriminative Kalman filter all call it.
The building blocks it shares with the associative-scan versions
(:mod:`probkit.inference.parallel`) are in :mod:`probkit.inference.kalman_steps`; EP on
top of it is :mod:`probkit.inference.ep`.

Model (a linear-Gaussian state-space model, :class:`~probkit.statespace.LGSSM`)
-------------------------------------------------------------------------------
.. math::

    z_{-1} \sim \mathcal N(\mu_0, \Sigma_0), \qquad
    z_t = A_t z_{t-1} + q_t,\; q_t \sim \mathcal N(0, Q_t), \qquad
    y_t = H_t z_t + r_t,\; r_t \sim \mathcal N(0, R_t), \qquad t = 0, \dots, T-1.

``initial_mean``/``initial_cov`` describe the state *before* the first step: every step,
the first included, predicts and then updates.  For a state-space GP with stationary
covariance :math:`P_\infty` take the initial state ``(0, Pinf)`` and ``dt_0 = 0`` so that
:math:`A_0 = I`, :math:`Q_0 = 0` (see :func:`probkit.statespace.to_lgssm`).  A row of
``emissions`` holding any NaN skips the update at that step (the state passes through
predicted; its log-likelihood term is 0).

Parameters may be time-invariant (``A: (D, D)``) or time-varying (``A: (T, D, D)``), each
independently.  All low-level functions are pure and jittable; shape errors are raised
(from static shapes) as :class:`ValueError` naming the argument, and so are bad concrete
values (inf in ``emissions``, non-finite parameters, a negative variance on the diagonal of
``initial_cov`` or ``emission_cov``); traced values are not checked.  Batches of independent
series: pass ``emissions`` of shape ``(B, T, P)`` (parameters shared), or
``jax.vmap(kalman_filter, in_axes=(LGSSM(0, 0, None, None, None, None), 0))`` etc. for
batched parameters.

Algorithms
----------
* Sequential filter: ``lax.scan`` over the predict/update steps of
  :mod:`probkit.inference.kalman_steps` (Cholesky/Joseph form for vector observations, an
  elementwise symmetric form without LAPACK calls for scalar ones).
* Sequential smoother: Rauch-Tung-Striebel backward ``lax.scan``.
* Parallel filter/smoother (``parallel=True``): ``lax.associative_scan``, see
  :mod:`probkit.inference.parallel`.  Both agree to ~1e-12 in float64.
* State-space GP log-likelihood (:func:`gp_log_likelihood`, used by
  :class:`probkit.distributions.StateSpaceGP`): its ``jax.grad`` with respect to a few
  hyperparameters runs in forward mode (:mod:`probkit.inference.forward_gradient`: one pass
  carrying the tangents, no backward scan), about 2x faster than reverse mode on a CPU
  (``benchmarks/statespace.py``: the ``probkit-statespace-gp`` vs ``probkit-kalman-scan`` rows).
* Scans of at least ``UNROLL_FROM`` steps are unrolled ``UNROLL`` steps per iteration (fewer
  loop iterations for XLA to dispatch); shorter series keep the rolled loop, which compiles
  faster.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.kalman import kalman_filter, rts_smoother
>>> from probkit.statespace import LGSSM
>>> params = LGSSM(jnp.zeros(1), jnp.eye(1), 0.9 * jnp.eye(1), 0.1 * jnp.eye(1),
...                jnp.eye(1), 0.5 * jnp.eye(1))
>>> y = jnp.array([[0.3], [jnp.nan], [-0.2], [0.1]])
>>> kalman_filter(params, y).filtered_mean.shape
(4, 1)
>>> bool(jnp.allclose(rts_smoother(params, y).smoothed_mean,
...                   rts_smoother(params, y, parallel=True).smoothed_mean, atol=1e-5))
True
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from probkit.inference.forward_gradient import forward_gradient
from probkit.inference.kalman_steps import (
    FilterResult,
    SmootherResult,
    _check_params,
    _mm,
    _mv,
    _predict,
    _smoother_gains,
    _sym,
    _update,
    _update_scalar,
)
from probkit.inference.parallel import _filter_par, _smoother_par
from probkit.statespace import LGSSM

__all__ = [
    "FilterResult",
    "SmootherResult",
    "kalman_filter",
    "rts_smoother",
    "log_marginal_likelihood",
    "GPPosterior",
    "gp_posterior",
    "gp_log_likelihood",
    "UNROLL",
    "UNROLL_FROM",
]

#: Steps per iteration of the sequential scans of long series (``lax.scan(..., unroll=...)``).
UNROLL = 4
#: Series length from which the scans are unrolled (below it compile time dominates).
UNROLL_FROM = 4096


def _unroll(T: int) -> int:
    return UNROLL if T >= UNROLL_FROM else 1


# ----------------------------------------------------------------------------- sequential


def _filter_seq(params: LGSSM, emissions: Array, mask: Array) -> FilterResult:
    T, P = emissions.shape
    names = ("transition_matrix", "transition_cov", "emission_matrix", "emission_cov")
    varying = tuple(n for n in names if getattr(params, n).ndim == 3)
    xs = {n: getattr(params, n) for n in varying}

    def step(carry, inp):
        m, Pc = carry
        x, y, obs = inp
        A, Q, H, R = (x[n] if n in x else getattr(params, n) for n in names)
        mp, Pp = _predict(m, Pc, A, Q)
        if P == 1:
            mf, Pf, ll = _update_scalar(mp, Pp, H[0], R[0, 0], y[0], obs)
        else:
            mf, Pf, ll = _update(mp, Pp, H, R, y, obs)
        return (mf, Pf), (ll, mf, Pf, mp, Pp)

    init = (params.initial_mean, _sym(params.initial_cov))
    _, (ll, mf, Pf, mp, Pp) = lax.scan(step, init, (xs, emissions, mask), unroll=_unroll(T))
    return FilterResult(jnp.sum(ll), ll, mf, Pf, mp, Pp)


def _smoother_seq(params: LGSSM, filt: FilterResult) -> tuple[Array, Array, Array]:
    T = filt.filtered_mean.shape[0]
    if T == 1:
        D = filt.filtered_mean.shape[1]
        return filt.filtered_mean, filt.filtered_cov, jnp.zeros((0, D, D), filt.filtered_cov.dtype)
    G = _smoother_gains(params, filt)

    def step(carry, inp):
        ms_next, Ps_next = carry
        m, P, mp_next, Pp_next, g = inp
        ms = m + _mv(g, ms_next - mp_next)
        Ps = _sym(P + _mm(_mm(g, Ps_next - Pp_next), g.T))
        cross = _mm(g, Ps_next)  # Cov(z_t, z_{t+1} | y)
        return (ms, Ps), (ms, Ps, cross)

    last = (filt.filtered_mean[-1], filt.filtered_cov[-1])
    inputs = (filt.filtered_mean[:-1], filt.filtered_cov[:-1], filt.predicted_mean[1:],
              filt.predicted_cov[1:], G)
    _, (ms, Ps, cross) = lax.scan(step, last, inputs, reverse=True, unroll=_unroll(T))
    ms = jnp.concatenate([ms, last[0][None]], 0)
    Ps = jnp.concatenate([Ps, last[1][None]], 0)
    return ms, Ps, cross


# ----------------------------------------------------------------------------- public


def _check_values(params: LGSSM, emissions) -> None:
    """Eager checks of concrete inputs: numeric ``emissions`` without inf (NaN marks a missing
    observation), finite parameters, non-negative variances on the diagonals of ``initial_cov``
    and ``emission_cov``. Traced values (inside ``jit``/``vmap``) are skipped."""
    from probkit._checks import as_array

    if not isinstance(emissions, jax.core.Tracer):
        y = as_array("emissions", emissions)
        if np.any(np.isinf(y)):
            raise ValueError(f"emissions: contains inf at {int(np.sum(np.isinf(y)))} entries "
                             "(a missing observation is a row of NaN)")
    if not isinstance(params, LGSSM):
        return  # reported by the shape checks
    for name in LGSSM._fields:
        value = getattr(params, name)
        if isinstance(value, jax.core.Tracer):
            continue
        arr = as_array(f"params.{name}", value)
        bad = ~np.isfinite(arr)
        if np.any(bad):
            raise ValueError(f"params.{name}: contains NaN or inf at {int(np.sum(bad))} "
                             "entries")
        if name in ("initial_cov", "emission_cov") and arr.ndim >= 2:
            diag = np.diagonal(arr, axis1=-2, axis2=-1)
            if np.any(diag < 0):
                raise ValueError(f"params.{name}: must be positive semi-definite, but a "
                                 f"diagonal entry (a variance) is {float(diag.min()):.3g}")


def _batched(fn, params, emissions, parallel):
    emissions = jnp.asarray(emissions)
    if emissions.ndim == 3:
        return jax.vmap(lambda y: fn(params, y, parallel=parallel, validate=False))(emissions)
    return None


def kalman_filter(params: LGSSM, emissions: Array, *, parallel: bool = False,
                  validate: bool = True) -> FilterResult:
    r"""Kalman filter with missing observations (NaN rows) and the log marginal likelihood.

    Predict :math:`m^-_t = A_t m_{t-1}`, :math:`P^-_t = A_t P_{t-1} A_t^\top + Q_t`; update
    with :math:`S_t = H_t P^-_t H_t^\top + R_t` (Cholesky), :math:`K_t = P^-_t H_t^\top S_t^{-1}`,
    :math:`m_t = m^-_t + K_t (y_t - H_t m^-_t)` and the Joseph form
    :math:`P_t = (I - K_t H_t) P^-_t (I - K_t H_t)^\top + K_t R_t K_t^\top`;
    :math:`\log p(y_t \mid y_{<t}) = \log \mathcal N(y_t; H_t m^-_t, S_t)`.

    Parameters
    ----------
    params : LGSSM
        Model parameters, time-invariant or with a leading time axis of length ``T``.
    emissions : Array, shape (T, P), (T,) (P = 1) or (B, T, P)
        Observations; a row holding any NaN is treated as missing. With a leading batch
        axis the filter is vmapped over independent series sharing ``params``.
    parallel : bool
        Use the associative-scan (parallel-in-time) filter of Särkkä & García-Fernández
        (2021) instead of ``lax.scan``. Same result to rounding; faster on GPU for long T.
    validate : bool
        Check concrete values eagerly (see Raises); traced values are never checked.

    Returns
    -------
    FilterResult
        (With a batch axis, every field gains a leading axis ``B``.)

    Raises
    ------
    ValueError
        If a shape is inconsistent, ``params`` is not an :class:`LGSSM`, ``emissions`` is not
        numeric or holds inf, a parameter holds NaN or inf, or ``initial_cov`` or
        ``emission_cov`` has a negative diagonal entry (the message names the argument).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.kalman import kalman_filter
    >>> from probkit.statespace import LGSSM
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), jnp.zeros((1, 1)), jnp.eye(1), jnp.eye(1))
    >>> round(float(kalman_filter(p, jnp.zeros((1, 1))).log_likelihood), 5)  # log N(0; 0, 2)
    -1.26551
    """
    if validate:
        _check_values(params, emissions)
    out = _batched(kalman_filter, params, emissions, parallel)
    if out is not None:
        return out
    params, emissions, mask = _check_params(params, emissions)
    return (_filter_par if parallel else _filter_seq)(params, emissions, mask)


def rts_smoother(params: LGSSM, emissions: Array, *, parallel: bool = False,
                 validate: bool = True) -> SmootherResult:
    r"""Kalman filter followed by the Rauch-Tung-Striebel smoother.

    Backward pass: :math:`G_t = P_t A_{t+1}^\top (P^-_{t+1})^{-1}`,
    :math:`m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1})`,
    :math:`P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t^\top`,
    :math:`\mathrm{Cov}(z_t, z_{t+1} \mid y) = G_t P^s_{t+1}`.

    Parameters
    ----------
    params, emissions, parallel, validate
        As for :func:`kalman_filter` (``parallel`` applies to both passes).

    Returns
    -------
    SmootherResult

    Raises
    ------
    ValueError
        As :func:`kalman_filter`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.kalman import rts_smoother
    >>> from probkit.statespace import LGSSM
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), 0.1 * jnp.eye(1), jnp.eye(1), jnp.eye(1))
    >>> rts_smoother(p, jnp.ones((5, 1))).smoothed_cov.shape
    (5, 1, 1)
    """
    if validate:
        _check_values(params, emissions)
    out = _batched(rts_smoother, params, emissions, parallel)
    if out is not None:
        return out
    params, emissions, mask = _check_params(params, emissions)
    filt = (_filter_par if parallel else _filter_seq)(params, emissions, mask)
    ms, Ps, cross = (_smoother_par if parallel else _smoother_seq)(params, filt)
    return SmootherResult(*filt, ms, Ps, cross)


def log_marginal_likelihood(params: LGSSM, emissions: Array, *, parallel: bool = False,
                            validate: bool = True) -> Array:
    """:math:`\\log p(y_{0:T-1})` by the Kalman filter (NaN rows marginalised out).

    Parameters
    ----------
    params, emissions, parallel, validate
        As for :func:`kalman_filter`.

    Raises
    ------
    ValueError
        As :func:`kalman_filter`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.inference.kalman import log_marginal_likelihood
    >>> from probkit.statespace import LGSSM
    >>> p = LGSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), jnp.zeros((1, 1)), jnp.eye(1), jnp.eye(1))
    >>> round(float(log_marginal_likelihood(p, jnp.zeros((1, 1)))), 5)
    -1.26551
    """
    return kalman_filter(params, emissions, parallel=parallel, validate=validate).log_likelihood


# ----------------------------------------------------------------------------- state-space GP


class GPPosterior(NamedTuple):
    """Posterior marginals of a state-space GP :math:`f` (see :func:`gp_posterior`).

    Attributes
    ----------
    mean, var : Array, shape (T,)
        Posterior mean and variance of :math:`f(t_k)` at the training times.
    test_mean, test_var : Array, shape (T*,)
        The same at ``test_times`` (empty when none were given).
    log_likelihood : Array, scalar
        :math:`\\log p(y)` (Gaussian likelihood).
    """

    mean: Array
    var: Array
    test_mean: Array
    test_var: Array
    log_likelihood: Array


def _check_series(times, y) -> np.ndarray:
    """Check ``times`` (1-D, finite, strictly increasing) and a concrete ``y`` of the same
    length (NaN allowed: missing); returns ``y`` as a NumPy array."""
    from probkit._checks import as_array, check_finite
    from probkit.statespace import check_times

    check_times("times", times)
    yv = check_finite("y", as_array("y", y, ndim=1), allow_nan=True)
    if yv.shape[0] != np.shape(times)[0]:
        raise ValueError(f"y: expected length {np.shape(times)[0]} (= len(times)), "
                         f"got {yv.shape[0]}")
    return yv


def _merge_times(times: Array, test_times: Array | None):
    """Sorted union of training and test times, and the positions of each in it."""
    n = times.shape[0]
    if test_times is None:
        return times, jnp.arange(n), jnp.arange(0)
    allt = jnp.concatenate([times, test_times])
    order = jnp.argsort(allt, stable=True)
    pos = jnp.argsort(order)  # position of each original entry in the merged array
    return allt[order], pos[:n], pos[n:]


def _gp_posterior(sde, times, y, noise, test_times, parallel):
    """Jittable core of :func:`gp_posterior` (no validation)."""
    from probkit.statespace import to_lgssm

    merged, itrain, itest = _merge_times(times, test_times)
    T = merged.shape[0]
    dtype = jnp.result_type(merged, y)
    ym = jnp.full((T,), jnp.nan, dtype).at[itrain].set(y)
    noise = jnp.broadcast_to(jnp.asarray(noise, dtype), y.shape)
    # Observation-free test points get a placeholder noise of 1 (their rows are NaN: skipped).
    nm = jnp.ones((T,), dtype).at[itrain].set(noise)
    params = to_lgssm(sde, merged, nm, validate=False)
    res = rts_smoother(params, ym[:, None], parallel=parallel, validate=False)
    H = params.emission_matrix
    mean = (res.smoothed_mean @ H.T)[:, 0]
    var = jnp.einsum("pd,tde,pe->t", H, res.smoothed_cov, H)
    return GPPosterior(mean[itrain], var[itrain], mean[itest], var[itest], res.log_likelihood)


_gp_posterior_jit = jax.jit(_gp_posterior, static_argnums=(5,))


def gp_posterior(kernel, times: Array, y: Array, noise, *, test_times: Array | None = None,
                 parallel: bool = False) -> GPPosterior:
    r"""Exact posterior marginals and :math:`\log p(y)` of a 1-D Matern GP in O(T).

    :math:`y_k = f(t_k) + \epsilon_k`, :math:`\epsilon_k \sim \mathcal N(0, \text{noise}_k)`,
    :math:`f \sim \mathcal{GP}(0, k)`. Test points are inserted as observation-free steps
    of the filter/smoother. NaN entries of ``y`` are missing observations.

    Parameters
    ----------
    kernel : probkit.statespace.SDE or a kernel with a state-space form
        (:func:`probkit.statespace.as_sde`: Matern, Cosine, Periodic, SHO, Celerite, sums and
        products).
    times : Array, shape (T,)
        Strictly increasing, finite.
    y : Array, shape (T,)
    noise : float or Array of shape (T,)
        Observation-noise variance(s), > 0.
    test_times : Array, shape (T*,), optional
        Any finite order; may coincide with training times.
    parallel : bool
        Associative-scan filter/smoother.

    Returns
    -------
    GPPosterior

    Raises
    ------
    ValueError
        Bad ``times`` (NaN, unsorted, duplicated), ``y`` of the wrong length or with inf,
        non-positive ``noise``, non-finite ``test_times``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.kernels import Matern32
    >>> from probkit.inference.kalman import gp_posterior
    >>> t = jnp.linspace(0.0, 1.0, 20)
    >>> post = gp_posterior(Matern32(0.3, 1.0), t, jnp.sin(6 * t), 0.01,
    ...                     test_times=jnp.array([0.55]))
    >>> post.test_mean.shape
    (1,)
    """
    from probkit._checks import as_array, check_finite, check_positive
    from probkit.statespace import as_sde

    yv = _check_series(times, y)
    if not isinstance(noise, jax.core.Tracer):
        nz = check_positive("noise", noise)
        if nz.ndim > 1 or (nz.ndim == 1 and nz.shape[0] != yv.shape[0]):
            raise ValueError(f"noise: expected a scalar or shape ({yv.shape[0]},), got {nz.shape}")
    if test_times is not None:
        check_finite("test_times", as_array("test_times", test_times, ndim=1))
        test_times = jnp.asarray(test_times, jnp.result_type(jnp.asarray(times), float))
    return _gp_posterior_jit(as_sde(kernel), jnp.asarray(times, jnp.result_type(float)),
                         jnp.asarray(yv), noise, test_times, parallel)


def _sde_log_likelihood(sde, times: Array, noise, y: Array, parallel: bool) -> Array:
    from probkit.statespace import to_lgssm

    params = to_lgssm(sde, times, noise, validate=False)
    return kalman_filter(params, y[:, None], parallel=parallel, validate=False).log_likelihood


_SDE_LOG_LIKELIHOOD = {
    p: forward_gradient(functools.partial(_sde_log_likelihood, parallel=p))
    for p in (False, True)
}


def gp_log_likelihood(kernel, times: Array, y: Array, noise, *, parallel: bool = False,
                      validate: bool = True) -> Array:
    r""":math:`\log p(y)` of a 1-D state-space GP, :math:`y_k = f(t_k) + \epsilon_k`, in O(T),
    with a fast gradient.

    The value is :func:`log_marginal_likelihood` of :func:`probkit.statespace.to_lgssm`.
    ``jax.grad`` with respect to the kernel's hyperparameters and the noise (at most
    :data:`probkit.inference.forward_gradient.MAX_TANGENTS` numbers) is computed in forward
    mode, in the same pass as the value; with respect to more (the data ``y`` of a latent
    series, per-step noise) in reverse mode. Forward-mode transformations of this function
    (``jax.jvp``, ``jax.hessian``) are not available; use :func:`log_marginal_likelihood`
    for them.

    Parameters
    ----------
    kernel : probkit.statespace.SDE or a kernel with a state-space form
    times : Array, shape (T,)
        Strictly increasing, finite.
    y : Array, shape (T,)
        NaN entries are missing observations.
    noise : float or Array of shape (T,)
        Observation-noise variance(s), > 0.
    parallel : bool
        Associative-scan filter.
    validate : bool
        Check concrete ``times`` and ``y`` eagerly (traced values are never checked).

    Raises
    ------
    ValueError
        Bad ``times``, a ``y`` of the wrong length or with inf, a kernel without a
        state-space form.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import Matern52
    >>> from probkit.inference.kalman import gp_log_likelihood
    >>> t = jnp.linspace(0.0, 5.0, 50)
    >>> y = jnp.sin(t)
    >>> def nll(log_ls):
    ...     return -gp_log_likelihood(Matern52(jnp.exp(log_ls), 1.0), t, y, 0.1)
    >>> value, grad = jax.value_and_grad(nll)(0.0)
    >>> bool(jnp.isfinite(grad))
    True
    """
    from probkit.statespace import as_sde

    if validate and not isinstance(y, jax.core.Tracer):
        _check_series(times, y)
    return _SDE_LOG_LIKELIHOOD[bool(parallel)](as_sde(kernel), jnp.asarray(times),
                                              jnp.asarray(noise), jnp.asarray(y))
