"""Linear-Gaussian state-space models: exact discretisation of an SDE at sorted times, sampling."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from probkit._checks import as_array, check_finite, check_positive, check_sorted
from probkit.statespace.convert import as_sde

__all__ = ["LGSSM", "check_times", "discretise", "to_lgssm", "sample_lgssm"]


class LGSSM(NamedTuple):
    """Parameters of a linear-Gaussian state-space model.

    .. math::
        z_{-1} \\sim \\mathcal N(\\mu_0, \\Sigma_0),\\quad z_t = A_t z_{t-1} + \\mathcal N(0, Q_t),
        \\quad y_t = H_t z_t + \\mathcal N(0, R_t),\\quad t = 0..T-1.

    The initial state is the state *before* the first step; every step predicts then updates.
    Each matrix is either time-invariant or has a leading time axis of length ``T``.
    (The parameters taken by :func:`probkit.inference.kalman.kalman_filter` and
    :func:`~probkit.inference.kalman.rts_smoother`.)

    Attributes
    ----------
    initial_mean : Array, shape (D,)
    initial_cov : Array, shape (D, D)
    transition_matrix : Array, shape (D, D) or (T, D, D)
        Entry ``t`` maps :math:`z_{t-1} \\to z_t`.
    transition_cov : Array, shape (D, D) or (T, D, D)
    emission_matrix : Array, shape (P, D) or (T, P, D)
    emission_cov : Array, shape (P, P) or (T, P, P)
    """

    initial_mean: Array
    initial_cov: Array
    transition_matrix: Array
    transition_cov: Array
    emission_matrix: Array
    emission_cov: Array


def check_times(name: str, times) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``times`` is 1-D, finite, strictly increasing.

    Skipped for traced values (inside ``jit``), where the check cannot run.
    """
    if isinstance(times, jax.core.Tracer):
        return
    arr = as_array(name, times, ndim=1)
    check_finite(name, arr)
    check_sorted(name, arr, strict=True)


def discretise(kernel, times: Array, *, validate: bool = True) -> tuple[Array, Array]:
    """Exact transition matrices and process covariances between consecutive ``times``.

    Parameters
    ----------
    kernel : SDE or a kernel with a state-space form (:func:`as_sde`)
    times : Array, shape (T,)
        Non-decreasing, finite inputs (a repeated time is a zero-length step: ``A = I``,
        ``Q = 0``).
    validate : bool
        Check concrete ``times`` eagerly (traced values are never checked, so the function
        stays jittable).

    Returns
    -------
    A, Q : Array, shapes (T, D, D)
        ``A[k] = expm(F (t_k - t_{k-1}))``, ``Q[k] = Pinf - A[k] Pinf A[k]'`` (computed by
        :meth:`SDE.process_cov`, without cancellation for Matern kernels), with ``dt_0 = 0``
        (``A[0] = I``, ``Q[0] = 0``).

    Raises
    ------
    ValueError
        ``kernel`` has no state-space form; ``times`` is not 1-D, empty, non-finite or
        decreasing somewhere (with ``validate``).
    """
    sde = as_sde(kernel)
    if validate and not isinstance(times, jax.core.Tracer):
        check_sorted("times", times, strict=False)
    times = jnp.asarray(times)
    if not jnp.issubdtype(times.dtype, jnp.floating):
        times = times.astype(jnp.result_type(float))
    dt = jnp.concatenate([jnp.zeros((1,), times.dtype), jnp.diff(times)])
    A = jax.vmap(sde.transition)(dt)
    Q = jax.vmap(sde.process_cov)(dt)
    return A, Q


def to_lgssm(kernel, times: Array, noise, *, validate: bool = True) -> LGSSM:
    """State-space GP ``y_k = f(t_k) + N(0, noise_k)`` as an :class:`LGSSM`.

    Parameters
    ----------
    kernel : SDE or a kernel with a state-space form (:func:`as_sde`)
        The GP prior.
    times : Array, shape (T,)
        Strictly increasing, finite inputs.
    noise : float or Array of shape (T,)
        Observation-noise variance (per step allowed; must be > 0 where observed).
    validate : bool
        Check ``times`` (and a concrete ``noise``) eagerly; checks are skipped for traced
        values, so the function stays jittable.

    Returns
    -------
    LGSSM
        initial ``(0, Pinf)``, ``A, Q`` of shape ``(T, D, D)`` from :func:`discretise`,
        ``H`` of shape ``(1, D)``, ``R`` of shape ``(1, 1)`` or ``(T, 1, 1)``.

    Raises
    ------
    ValueError
        ``times`` has NaN, is unsorted or has duplicates; ``noise`` is negative or has the wrong
        length.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from probkit.statespace import matern_sde, to_lgssm
    >>> p = to_lgssm(matern_sde(0.5, 1.0, 1.0), jnp.array([0.0, 1.0]), 0.1)
    >>> round(float(p.transition_matrix[1, 0, 0]), 5)   # exp(-1)
    0.36788
    """
    sde = as_sde(kernel)
    if validate:
        check_times("times", times)
        if not isinstance(noise, jax.core.Tracer):
            nz = check_positive("noise", noise, allow_zero=True)
            if nz.ndim > 1 or (nz.ndim == 1 and nz.shape[0] != np.shape(times)[0]):
                raise ValueError(f"noise: expected a scalar or shape ({np.shape(times)[0]},), "
                                 f"got {nz.shape}")
    A, Q = discretise(sde, times, validate=False)
    Pinf = sde.Pinf
    D = Pinf.shape[0]
    dtype = jnp.result_type(A, Pinf)
    noise = jnp.asarray(noise, dtype)
    R = noise.reshape(-1, 1, 1) if noise.ndim == 1 else noise.reshape(1, 1)
    return LGSSM(jnp.zeros(D, dtype), Pinf.astype(dtype), A.astype(dtype), Q.astype(dtype),
                 sde.H.astype(dtype), R)


def _psd_sqrt(S: Array) -> Array:
    """A square root ``B``, ``B B' = S``, of a symmetric PSD ``S`` (eigh: singular S is fine)."""
    w, V = jnp.linalg.eigh(0.5 * (S + S.T))
    return V * jnp.sqrt(jnp.clip(w, 0.0))


def sample_lgssm(params: LGSSM, num_steps: int, *, key: Array) -> tuple[Array, Array]:
    """Draw ``(states, emissions)`` of shapes ``(T, D)``, ``(T, P)`` from an :class:`LGSSM` exactly.

    Uses symmetric square roots (``eigh``), so singular ``Q_t`` (e.g. ``Q_0 = 0``) and zero
    observation noise are fine.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.statespace import matern_sde, to_lgssm, sample_lgssm
    >>> p = to_lgssm(matern_sde(1.5, 1.0, 1.0), jnp.linspace(0, 1, 5), 0.01)
    >>> z, y = sample_lgssm(p, 5, key=jax.random.key(0))
    >>> z.shape, y.shape
    ((5, 2), (5, 1))
    """
    T = int(num_steps)
    D = params.initial_mean.shape[0]
    H0 = jnp.asarray(params.emission_matrix)
    P = H0.shape[-2]
    k0, k1, k2 = jax.random.split(key, 3)
    dtype = jnp.result_type(params.initial_mean, params.initial_cov)
    z0 = params.initial_mean + _psd_sqrt(params.initial_cov) @ jax.random.normal(k0, (D,), dtype)
    eps_z = jax.random.normal(k1, (T, D), dtype)
    eps_y = jax.random.normal(k2, (T, P), dtype)

    def at(x, t, nd):
        x = jnp.asarray(x)
        return x[t] if x.ndim > nd else x

    def step(z, t):
        A = at(params.transition_matrix, t, 2)
        Q = at(params.transition_cov, t, 2)
        H = at(params.emission_matrix, t, 2)
        R = at(params.emission_cov, t, 2)
        z = A @ z + _psd_sqrt(Q) @ eps_z[t]
        y = H @ z + _psd_sqrt(R) @ eps_y[t]
        return z, (z, y)

    _, (zs, ys) = lax.scan(step, z0, jnp.arange(T))
    return zs, ys
