r"""Baselines of the DKF: exact discriminative moments, the Kalman-filter decoder, metrics.

* :func:`gaussian_mixture_moments`: the exact :math:`f(x) = E[z \mid x]` and
  :math:`Q(x) = \mathrm{Var}[z \mid x]` of a Gaussian-mixture observation model (the paper's
  simulation, Sec. 4.2), so the filter can be checked without a learner;
* :func:`fit_linear_observation` and :func:`kalman_decode`: the linear-Gaussian Kalman filter the
  paper compares with on neural data (Sec. 4.5);
* :func:`nrmse` and :func:`mean_absolute_angle`: the paper's decoding metrics.

Examples
--------
>>> import numpy as np
>>> from probkit.models.dkf import nrmse
>>> nrmse(np.zeros(3), np.ones(3))
1.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from probkit._checks import as_array, check_positive, check_rows, check_same_length, check_spd
from probkit.inference.kalman import kalman_filter
from probkit.models.dkf.dynamics import DynamicsParams, make_dynamics
from probkit.statespace import LGSSM

__all__ = ["gaussian_mixture_moments", "fit_linear_observation", "kalman_decode", "nrmse",
           "mean_absolute_angle"]


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
    S = check_spd("S", S, d)
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
    x = check_rows("x", x, ndim=(2,), allow_nan_rows=False)
    z = check_rows("z", z, ndim=(2,), allow_nan_rows=False)
    check_same_length(x=x, z=z)
    H = np.linalg.lstsq(z, x, rcond=None)[0].T
    Lam = np.atleast_2d(np.cov(x - z @ H.T, rowvar=False))
    return H, 0.5 * (Lam + Lam.T)


def kalman_decode(dynamics: DynamicsParams, H, Lam, x):
    """Kalman filter of the linear-Gaussian model (the paper's KF baseline).

    :math:`z_0\\sim N(0,S)`, dynamics from ``dynamics``, emissions
    :math:`x_t = Hz_t + N(0,\\Lambda)`;
    NaN rows of ``x`` are skipped. Returns :class:`probkit.inference.kalman.FilterResult`
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
    Lam = check_spd("Lam", Lam, H.shape[0])
    x = check_rows("x", x, ndim=(2,), allow_nan_rows=True)
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
