r"""Learners of the discriminative model :math:`p(z \mid x) \approx N(f(x), Q(x))` of the DKF.

A learner is a small configuration (an equinox Module); ``learner.fit(x, z, *, key,
progress_bar=True)`` returns an immutable fitted learner whose ``moments(x)`` gives
:math:`f(x)` ``(N, D)`` and :math:`Q(x)` ``(N, D, D)`` in float64:

* :class:`NadarayaWatson` — Gaussian-kernel regression with a leave-one-out bandwidth
  (Burkhart et al. 2020, Sec. 4.5);
* :class:`MLPLearner` — an :class:`equinox.nn.MLP` with a mean and a Cholesky-factor output,
  trained on the Gaussian negative log-likelihood by :func:`probkit.inference.optimize.run`;
* :class:`GaussianProcess` — one exact GP per latent dimension, the package's
  :mod:`probkit.models.gp`.

Where a learner gives no covariance (NW, GP), :math:`Q(x)` is learned from held-out residuals
:math:`r = z - f(x)` (Sec. 4.5: a 70/30 split, Nadaraya-Watson regression of :math:`rr^\top` on
:math:`x` with its own leave-one-out bandwidth, or their mean). Fitted learners are pytrees and
are saved with the fitted DKF (:mod:`probkit._io`).

Examples
--------
>>> import numpy as np, jax
>>> from probkit.models.dkf import NadarayaWatson
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 2)); z = x[:, :1] + 0.1 * rng.normal(size=(200, 1))
>>> f, Q = NadarayaWatson().fit(x, z, key=jax.random.key(0)).moments(x[:3])
>>> f.shape, Q.shape
((3, 1), (3, 1, 1))
"""

from __future__ import annotations

import abc
import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.scipy.linalg import solve_triangular

from probkit._checks import (
    check_choice,
    check_key,
    check_positive,
    check_positive_int,
    check_rows,
    check_same_length,
)
from probkit.inference import optimize
from probkit.models import gp as _gp
from probkit.models.dkf.nadaraya_watson import nw_predict, nw_select_bandwidth

__all__ = ["Learner", "LearnerFitted", "ResidualCov", "NadarayaWatson", "NWFitted", "MLPLearner",
           "MLPFitted", "GaussianProcess", "GPLearnerFitted", "LEARNERS"]


# ------------------------------------------------------------------ shared parts


def _check_xz(x, z) -> tuple[np.ndarray, np.ndarray]:
    x = check_rows("x", x, ndim=2)
    z = check_rows("z", z, ndim=2)
    check_same_length(x=x, z=z)
    return x.astype(np.float64), z.astype(np.float64)


def _split(n: int, holdout: float, key) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(key, n))
    n_hold = max(int(round(holdout * n)), 2)
    if n - n_hold < 2:
        raise ValueError(f"x: too few rows ({n}) for a {holdout:.0%} hold-out split")
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


class ResidualCov(NamedTuple):
    r""":math:`Q(x)` from held-out residuals: NW regression of :math:`rr^\top` on ``x``
    (or, with no hold-out inputs, the constant mean of :math:`rr^\top`), plus a jitter."""

    x: np.ndarray          # (M, P) hold-out inputs ((0, P) for a constant Q)
    rr: np.ndarray         # (M, D*D) vec(r r')
    bandwidth: np.ndarray  # () NW bandwidth (0 for a constant Q)
    const: np.ndarray      # (D, D) mean r r'
    jitter: np.ndarray     # () added to the diagonal


def _fit_residual_cov(x_hold, resid, kind: str) -> ResidualCov:
    d = resid.shape[1]
    rr = (resid[:, :, None] * resid[:, None, :]).reshape(len(resid), d * d)
    const = rr.mean(0).reshape(d, d)
    jitter = np.float64(1e-6 * np.trace(const) / d)
    if kind == "constant":
        return ResidualCov(np.zeros((0, x_hold.shape[1])), np.zeros((0, d * d)), np.float64(0.0),
                           const, jitter)
    h = nw_select_bandwidth(x_hold, rr)
    return ResidualCov(x_hold, rr, np.float64(h), const, jitter)


def _predict_residual_cov(state: ResidualCov, x) -> np.ndarray:
    d = state.const.shape[0]
    with jax.enable_x64(True):
        if state.x.shape[0] == 0:
            Q = jnp.broadcast_to(jnp.asarray(state.const), (x.shape[0], d, d))
        else:
            Q = nw_predict(state.x, state.rr, float(state.bandwidth), x).reshape(-1, d, d)
        Q = 0.5 * (Q + jnp.swapaxes(Q, -1, -2))
        return np.asarray(Q + state.jitter * jnp.eye(d))


class _Scaler(NamedTuple):
    """Affine maps of the learner's data: ``(x - x_mean) / x_scale``, ``(z - z_mean) / z_scale``."""

    x_mean: Array
    x_scale: Array
    z_mean: Array
    z_scale: Array


def _check_holdout(holdout: float) -> None:
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout: expected a share in (0, 1), got {holdout}")


class LearnerFitted(eqx.Module):
    """A fitted learner: ``moments(x) -> (f, Q)``."""

    @property
    @abc.abstractmethod
    def in_dim(self) -> int:
        """Number of observation columns it was fitted on."""

    @abc.abstractmethod
    def _moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``moments`` on checked float64 rows."""

    def moments(self, x) -> tuple[np.ndarray, np.ndarray]:
        """:math:`f(x)` ``(N, D)`` and :math:`Q(x)` ``(N, D, D)``, float64, at finite rows ``x``."""
        x = check_rows("x", x, ndim=2)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} columns (as in training), got {x.shape}")
        return self._moments(x.astype(np.float64))


class Learner(eqx.Module):
    """A learner's configuration: ``fit(x, z, *, key, progress_bar=True) -> LearnerFitted``."""

    @abc.abstractmethod
    def fit(self, x, z, *, key, progress_bar: bool = True) -> LearnerFitted:
        """Fit on rows ``x`` ``(N, P)``, ``z`` ``(N, D)``."""


# ------------------------------------------------------------------ Nadaraya-Watson learner


class NWFitted(LearnerFitted):
    """Fitted :class:`NadarayaWatson`: the training share, its bandwidth and the residual Q."""

    x: np.ndarray
    z: np.ndarray
    bandwidth: np.ndarray
    cov: ResidualCov

    @property
    def in_dim(self) -> int:
        return self.x.shape[1]

    def _moments(self, x):
        f = nw_predict(self.x, self.z, float(self.bandwidth), x)
        return f, _predict_residual_cov(self.cov, x)


class NadarayaWatson(Learner):
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
    >>> NadarayaWatson(bandwidth=0.5).fit(x, z, key=jax.random.key(0)).moments(x[:3])[0].shape
    (3, 1)
    """

    bandwidth: float | None = eqx.field(static=True, default=None)
    holdout: float = eqx.field(static=True, default=0.3)
    covariance: str = eqx.field(static=True, default="nw")

    def __check_init__(self):
        if self.bandwidth is not None:
            check_positive("bandwidth", self.bandwidth)
        _check_holdout(self.holdout)
        check_choice("covariance", self.covariance, ("nw", "constant"))

    def fit(self, x, z, *, key, progress_bar: bool = True) -> NWFitted:
        """Fit ``f`` on the training share and ``Q`` on the held-out residuals (no bar: the
        bandwidth searches are a few seconds)."""
        x, z = _check_xz(x, z)
        key = check_key("key", key)
        tr, ho = _split(len(x), self.holdout, key)
        h = self.bandwidth if self.bandwidth is not None else nw_select_bandwidth(x[tr], z[tr])
        resid = z[ho] - nw_predict(x[tr], z[tr], h, x[ho])
        return NWFitted(x[tr], z[tr], np.float64(h),
                        _fit_residual_cov(x[ho], resid, self.covariance))


# ------------------------------------------------------------------ MLP learner


def _identity(h):
    return h


def _mean_and_chol(out: Array, d: int) -> tuple[Array, Array]:
    """Split one network output into the mean and a Cholesky factor with softplus diagonal."""
    rows, cols = jnp.tril_indices(d)
    L = jnp.zeros((d, d), out.dtype).at[rows, cols].set(out[d:])
    diag = jax.nn.softplus(jnp.diagonal(L) + 0.5) + 1e-3
    return out[:d], L - jnp.diag(jnp.diagonal(L)) + jnp.diag(diag)


def _gauss_nll(net, x, z):
    m, L = jax.vmap(lambda xi: _mean_and_chol(net(xi), z.shape[-1]))(x)
    r = solve_triangular(L, (z - m)[..., None], lower=True)[..., 0]
    logdet = jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    return jnp.mean(0.5 * jnp.sum(r**2, -1) + logdet)


def _mlp_loss(net, key, x_train, z_train, x_val, z_val):
    """Gradient of the training NLL; *value* of the held-out NLL (what ``keep_best`` compares)."""
    train = _gauss_nll(net, x_train, z_train)
    return train + jax.lax.stop_gradient(_gauss_nll(net, x_val, z_val) - train)


@functools.lru_cache
def _adamw(weight_decay: float) -> optax.GradientTransformation:
    """AdamW's direction without the learning rate (built once per value: no recompiles)."""
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay))


class MLPFitted(LearnerFitted):
    """Fitted :class:`MLPLearner`: network, standardisation and held-out NLL of each step."""

    net: eqx.nn.MLP
    scaler: _Scaler
    history: np.ndarray

    @property
    def in_dim(self) -> int:
        return self.scaler.x_mean.shape[0]

    def _moments(self, x):
        sc = self.scaler
        d = sc.z_mean.shape[0]
        with jax.enable_x64(True):
            m, L = jax.vmap(lambda xi: _mean_and_chol(self.net(xi), d))(
                (jnp.asarray(x) - sc.x_mean) / sc.x_scale)
            f = sc.z_mean + sc.z_scale * m
            L = sc.z_scale[:, None] * L
            return np.asarray(f), np.asarray(L @ jnp.swapaxes(L, -1, -2))


class MLPLearner(Learner):
    """Equinox MLP learner: one :class:`equinox.nn.MLP` (tanh) for the mean and the covariance.

    The network maps standardised ``x`` to ``D + D(D+1)/2`` outputs: the mean :math:`f(x)` and
    a lower-triangular Cholesky factor :math:`L(x)` (softplus diagonal),
    :math:`Q(x) = L(x)L(x)^\\top`.
    Training minimises the Gaussian negative log-likelihood :math:`-\\log N(z; f(x), Q(x))` with
    AdamW (weight decay stands in for the paper's Bayesian-regularised Levenberg-Marquardt), full
    batch, on a ``1 - holdout`` share of the rows, through :func:`probkit.inference.optimize.run`;
    the parameters with the best held-out NLL are kept (early stopping, one step per dispatch).

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
    >>> m = MLPLearner(num_steps=50).fit(x, z, key=jax.random.key(0), progress_bar=False)
    >>> m.moments(x[:2])[1].shape
    (2, 1, 1)
    """

    width: int = eqx.field(static=True, default=32)
    depth: int = eqx.field(static=True, default=2)
    num_steps: int = eqx.field(static=True, default=1000)
    learning_rate: float = eqx.field(static=True, default=3e-3)
    weight_decay: float = eqx.field(static=True, default=1e-3)
    holdout: float = eqx.field(static=True, default=0.3)

    def __check_init__(self):
        check_positive_int("width", self.width)
        check_positive_int("depth", self.depth)
        check_positive_int("num_steps", self.num_steps)
        check_positive("learning_rate", self.learning_rate)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        _check_holdout(self.holdout)

    def fit(self, x, z, *, key, progress_bar: bool = True) -> MLPFitted:
        """Train on ``(x, z)`` (float64), early-stopped on a held-out share."""
        x, z = _check_xz(x, z)
        key = check_key("key", key)
        k_split, k_init = jax.random.split(key)
        tr, ho = _split(len(x), self.holdout, k_split)
        d = z.shape[1]
        with jax.enable_x64(True):
            sc = _Scaler(*(jnp.asarray(a) for a in (x[tr].mean(0), x[tr].std(0) + 1e-12,
                                                      z[tr].mean(0), z[tr].std(0) + 1e-12)))
            xs = (jnp.asarray(x) - sc.x_mean) / sc.x_scale
            zs = (jnp.asarray(z) - sc.z_mean) / sc.z_scale
            net = eqx.nn.MLP(x.shape[1], d + d * (d + 1) // 2, self.width, self.depth,
                             activation=jnp.tanh, final_activation=_identity, key=k_init)
            out = optimize.run(_mlp_loss, net, args=(xs[tr], zs[tr], xs[ho], zs[ho]),
                               num_steps=self.num_steps, learning_rate=self.learning_rate,
                               transform=_adamw(float(self.weight_decay)), steps_per_dispatch=1,
                               progress_bar=progress_bar, desc="DKF MLP learner", keep_best=True)
        return MLPFitted(out.params, sc, out.losses)


# ------------------------------------------------------------------ GP learner


def _gp_mean(gps, scaler: _Scaler, x) -> np.ndarray:
    """:math:`f(x)` in the units of ``z`` from the GPs on scaled ``x`` and standardised ``z``."""
    xu = (x - scaler.x_mean) / scaler.x_scale
    with jax.enable_x64(True):
        f = np.stack([np.asarray(g.posterior_mean(xu)) for g in gps], axis=1)
    return scaler.z_mean + scaler.z_scale * f


class GPLearnerFitted(LearnerFitted):
    """Fitted :class:`GaussianProcess`: one :class:`probkit.models.gp.GPFitted` per latent
    dimension, the scaling of ``x`` and ``z`` and the residual Q."""

    gps: tuple[_gp.GPFitted, ...]
    scaler: _Scaler
    cov: ResidualCov

    @property
    def in_dim(self) -> int:
        return self.gps[0].x.shape[1]

    @property
    def noise_variance(self) -> np.ndarray:
        """Fitted noise variance of each latent dimension, in the units of ``z``."""
        return self.scaler.z_scale**2 * np.array([float(g.noise_variance) for g in self.gps])

    def _moments(self, x):
        return _gp_mean(self.gps, self.scaler, x), _predict_residual_cov(self.cov, x)


class GaussianProcess(Learner):
    """GP learner: one exact GP (:mod:`probkit.models.gp`) per latent dimension.

    The inputs are scaled to the unit cube of the training share and each output is
    standardised, :math:`\\tilde z_d = (z_d - \\bar z_d)/s_d` (the scales
    :class:`probkit.models.gp.GP` is built for); each output gets its own hyperparameters (ARD
    kernel, constant mean, noise variance), fitted by :class:`probkit.models.gp.GP` on at most
    ``max_opt_points`` rows of the training share (type-II maximum likelihood by default); the
    GP is then conditioned on the whole training share (:func:`probkit.models.gp.condition`):
    :math:`f_d(x) = \\bar z_d + s_d(m_d + k_d(x, X)(K_d + \\sigma_d^2 I)^{-1}(\\tilde z_d - m_d))`.
    ``Q`` comes from held-out residuals as in :class:`NadarayaWatson` (Sec. 4.5).

    Parameters
    ----------
    kernel : {"rbf", "matern52", "matern32", "matern12"}
    optimize : bool
        Fit the hyperparameters; else use ``lengthscale``, ``variance`` and ``noise`` as given
        (mean 0), on the standardised outputs.
    lengthscale, variance, noise : float
        Fixed hyperparameters for ``optimize=False`` (``lengthscale`` in the units of ``x``, a
        float or one per input column; ``variance`` and ``noise`` in standardised units of ``z``);
        the noise variance used is ``noise_floor + noise``. With ``optimize=True``,
        ``noise`` is the noise variance of the first L-BFGS start (``noise_init`` of the GP).
    num_restarts, num_steps : int
        L-BFGS starts and iterations per start (:class:`probkit.models.gp.GP`).
    max_opt_points : int
        Rows used to fit the hyperparameters.
    priors : bool
        Weak hyperpriors of :class:`probkit.models.gp.GP` (default off: maximum likelihood).
    noise_floor : float
        Smallest noise variance (standardised units).
    holdout : float
    covariance : {"nw", "constant"}

    Examples
    --------
    >>> import numpy as np, jax
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 2)); z = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(100, 1))
    >>> gp = GaussianProcess(num_steps=10).fit(x, z, key=jax.random.key(0))
    >>> gp.moments(x[:2])[0].shape
    (2, 1)
    """

    kernel: str = eqx.field(static=True, default="rbf")
    optimize: bool = eqx.field(static=True, default=True)
    lengthscale: float | tuple[float, ...] = eqx.field(static=True, default=1.0)
    variance: float = eqx.field(static=True, default=1.0)
    noise: float = eqx.field(static=True, default=0.1)
    num_restarts: int = eqx.field(static=True, default=2)
    num_steps: int = eqx.field(static=True, default=50)
    max_opt_points: int = eqx.field(static=True, default=1000)
    priors: bool = eqx.field(static=True, default=False)
    noise_floor: float = eqx.field(static=True, default=1e-6)
    holdout: float = eqx.field(static=True, default=0.3)
    covariance: str = eqx.field(static=True, default="nw")

    def __check_init__(self):
        check_choice("kernel", self.kernel, tuple(_gp.KERNELS))
        check_positive("lengthscale", self.lengthscale)
        check_positive("variance", self.variance)
        check_positive("noise", self.noise)
        check_positive_int("max_opt_points", self.max_opt_points, minimum=2)
        _check_holdout(self.holdout)
        check_choice("covariance", self.covariance, ("nw", "constant"))
        # the GP family checks num_restarts, num_steps and noise_floor
        self._family(1)

    def _family(self, capacity: int) -> _gp.GP:
        return _gp.GP(kernel=self.kernel, num_restarts=self.num_restarts,
                      num_steps=self.num_steps, priors=self.priors, noise_floor=self.noise_floor,
                      noise_init=self.noise, capacity=capacity)

    def _fixed_params(self, x_scale: np.ndarray) -> _gp.GPParams:
        in_dim = x_scale.shape[0]
        ls = np.asarray(self.lengthscale, np.float64).reshape(-1)
        if ls.size not in (1, in_dim):
            raise ValueError(f"lengthscale: expected one value or one per input column "
                             f"({in_dim}), got {ls.size}")
        ls = np.broadcast_to(ls, (in_dim,)) / x_scale          # in unit-cube coordinates
        return _gp.GPParams(jnp.log(jnp.asarray(ls)), jnp.log(jnp.float64(self.variance)),
                            jnp.log(jnp.float64(self.noise)), jnp.float64(0.0))

    def fit(self, x, z, *, key, progress_bar: bool = True) -> GPLearnerFitted:
        """Fit the GPs on the training share and ``Q`` on the held-out residuals."""
        x, z = _check_xz(x, z)
        key = check_key("key", key)
        k_split, k_sub, k_fit = jax.random.split(key, 3)
        tr, ho = _split(len(x), self.holdout, k_split)
        low, width = x[tr].min(0), np.ptp(x[tr], 0)
        sc = _Scaler(low, np.where(width > 0, width, 1.0), z[tr].mean(0), z[tr].std(0) + 1e-12)
        xt = (x[tr] - sc.x_mean) / sc.x_scale
        zs = (z[tr] - sc.z_mean) / sc.z_scale
        m = min(self.max_opt_points, len(xt))
        sub = np.sort(np.asarray(jax.random.permutation(k_sub, len(xt)))[:m])
        kernel_cls = _gp.KERNELS[self.kernel]
        gps = []
        with jax.enable_x64(True):
            for j in range(z.shape[1]):
                if self.optimize:
                    hyper = self._family(m).fit(xt[sub], zs[sub, j],
                                                key=jax.random.fold_in(k_fit, j))
                    if m == len(xt):   # fitted on the whole share: already conditioned
                        gps.append(hyper)
                        continue
                    params = hyper.params
                else:
                    params = self._fixed_params(sc.x_scale)
                data = _gp.pad_data(xt, zs[:, j], capacity=len(xt))
                gps.append(_gp.condition(params, data, kernel_cls, self.noise_floor))
        resid = z[ho] - _gp_mean(gps, sc, x[ho])
        return GPLearnerFitted(tuple(gps), sc, _fit_residual_cov(x[ho], resid, self.covariance))


#: Learner names accepted by :class:`probkit.models.dkf.DKF` (``learner=``).
LEARNERS = {"nw": NadarayaWatson, "mlp": MLPLearner, "gp": GaussianProcess}
