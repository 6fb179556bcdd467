r"""Classification with the scale-mixture NNGP: a sparse variational posterior with one shared
random scale (Lee, Yun, Yang & Lee, ICLR 2022, Sec. 3.3).

Prior: :math:`s^2 \sim \mathrm{IG}(a, b)`, :math:`u_c \mid s^2 \sim \mathcal N(0, s^2 K_{MM})`
at ``M`` inducing inputs for each of the ``C`` classes, :math:`f_c \mid u_c` the GP conditional,
softmax likelihood. Variational posterior :math:`q(s^2) = \mathrm{IG}(a', b')`,
:math:`q(u_c \mid s^2) = \mathcal N(m_c, s^2\,\mathrm{diag}(S_c))`. The ELBO
:math:`\mathbb E_q\log p(y\mid f) - \mathrm{KL}` uses ``num_mc`` reparametrised draws of
:math:`(s^2, f)` per minibatch and the closed-form KL

.. math::

    \tfrac12\sum_c[\mathrm{tr}(K_{MM}^{-1}S_c) + \tfrac{a'}{b'}m_c^\top K_{MM}^{-1}m_c
    - M + \ln|K_{MM}| - \ln|S_c|]
    + \mathrm{KL}(\mathrm{IG}(a',b')\,\|\,\mathrm{IG}(a,b)).

``scale_model="gaussian"`` is the NNGP baseline: a fitted constant :math:`s^2` (trainable readout
variance). Trained with Adam on minibatches (loss -ELBO / N) through
:func:`probkit.inference.optimize.run`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import digamma, gammaln

from probkit._checks import (
    check_choice,
    check_key,
    check_positive,
    check_positive_int,
    check_regression_data,
)
from probkit.inference import optimize
from probkit.kernels import NNGP, Kernel
from probkit.models.base import Family, Fitted, check_inputs
from probkit.models.nngp.model import _kernel_trainable, _unit_amplitude
from probkit.models.nngp.predictive import ScaleMixtureNormal
from probkit.posterior import _numerics

__all__ = ["Classifier", "NNGPClassifier", "ClassProbabilities", "SVParams"]


class SVParams(NamedTuple):
    """Trainable parameters of the sparse variational classifier (unconstrained)."""

    z: Array  # (M, d) inducing inputs
    m: Array  # (C, M) variational means
    log_s: Array  # (C, M) log diagonal variances (per unit scale)
    log_a: Array  # q(s2) = IG(a', b') (inverse-gamma model)
    log_b: Array
    log_scale: Array  # fixed s2 (Gaussian model)
    log_kernel: Any  # log of the kernel's trainable leaves


def _kl_inverse_gamma(aq, bq, a, b):
    return ((aq - a) * digamma(aq) - gammaln(aq) + gammaln(a) + a * (jnp.log(bq) - jnp.log(b))
            + aq * (b - bq) / bq)


class ClassProbabilities(dist.CategoricalProbs):
    """Predictive over the labels ``0..C-1`` at ``n`` points (batch shape ``(n,)``, ``probs``
    ``(n, C)``); with two classes it is the Bernoulli distribution of ``y`` in {0, 1}.

    ``mean`` and ``variance`` are those of the label as a number (for two classes: ``probs[:,
    1]`` and ``p(1 - p)``); samples are independent across points.
    """

    def _params(self) -> tuple:
        return (self.probs,)

    @property
    @_numerics
    def mean(self) -> Array:
        return self.probs @ jnp.arange(self.probs.shape[-1], dtype=self.probs.dtype)

    @property
    @_numerics
    def variance(self) -> Array:
        c = jnp.arange(self.probs.shape[-1], dtype=self.probs.dtype)
        return self.probs @ c**2 - (self.probs @ c) ** 2

    @_numerics
    def log_prob(self, value) -> Array:
        return super().log_prob(jnp.asarray(value).astype(jnp.int32))

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        return super().sample(key, shape).astype(jnp.int32)


class NNGPClassifier(Fitted):
    """A fitted sparse variational (scale-mixture) NNGP classifier (``Classifier.fit``).

    ``predict(x)`` is the Monte Carlo predictive over the labels
    (:class:`ClassProbabilities`, with a fixed key unless one is given, so it is deterministic),
    ``posterior(x)`` the marginal variational posterior of one class's latent function (a
    :class:`~probkit.models.nngp.ScaleMixtureNormal`, Student-t for the inverse-gamma scale).
    """

    params: SVParams
    kstatic: Any
    x_loc: Array
    x_unit: Array
    x_train: np.ndarray
    y_train: np.ndarray
    history: np.ndarray
    scale_model: str = eqx.field(static=True)
    prior_a: float = eqx.field(static=True)
    prior_b: float = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=1000)
    jitter: float = eqx.field(static=True, default=1e-6)

    def _kernel(self, params=None):
        params = self.params if params is None else params
        return _sv_kernel(params, self.kstatic)

    def latent_moments(self, x) -> tuple[Array, Array]:
        """Unit-scale marginal moments of the C latent functions at ``x``: (m, C) each."""
        with jax.enable_x64(True):
            xs = (jnp.asarray(check_inputs("x", x, self.x_train.shape[1]))
                  - self.x_loc) / self.x_unit
            return _sv_moments_jit(self.params, self.kstatic, xs, self.jitter)

    def predict(self, x, *, key=None, num_samples: int | None = None) -> ClassProbabilities:
        """Predictive class probabilities at ``x`` ``(m, d)`` from ``num_samples`` draws of
        :math:`(s^2, f)` (default the fitted model's; ``key`` default ``jax.random.key(0)``)."""
        key = jax.random.key(0) if key is None else check_key("key", key)
        num = self.num_samples if num_samples is None else check_positive_int("num_samples",
                                                                             num_samples)
        mean, var = self.latent_moments(x)
        with jax.enable_x64(True):
            return ClassProbabilities(
                _sv_predict(self.params, mean, var, key, num, self.scale_model))

    def posterior(self, x, *, label: int | None = None) -> ScaleMixtureNormal:
        """Marginal posterior of the latent function of class ``label`` (default the last) at
        ``x``: independent across points given the shared scale."""
        c = self.num_classes - 1 if label is None else int(label)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"label: expected a class in 0..{self.num_classes - 1}, got {c}")
        mean, var = self.latent_moments(x)
        with jax.enable_x64(True):
            p = self.params
            if self.scale_model == "gaussian":
                kind, scale = "fixed", (jnp.exp(p.log_scale),)
            else:
                kind, scale = "inverse_gamma", (jnp.exp(p.log_a), jnp.exp(p.log_b))
            return ScaleMixtureNormal(mean[:, c], var[:, c], None, scale, kind)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_train, self.y_train

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """Draws of :math:`s^2` (inverse-gamma model) and of the latent functions ``f``
        ``(S, n, C)`` at the training inputs from the variational posterior."""
        mean, var = self.latent_moments(self.x_train)
        with jax.enable_x64(True):
            k1, k2 = jax.random.split(key)
            s2 = _sample_s2(self.params, k1, (num_samples, 1, 1), self.scale_model)
            f = mean + jnp.sqrt(s2 * var) * jax.random.normal(k2, (num_samples,) + mean.shape)
            draws = {"f": np.asarray(f)}
            if self.scale_model != "gaussian":
                draws = {"s2": np.asarray(s2[:, 0, 0]), **draws}
            return draws

    def _log_likelihood(self, draws, x, y) -> np.ndarray:
        """Softmax log-likelihood of the training labels under each draw of ``f``."""
        with jax.enable_x64(True):
            logp = jax.nn.log_softmax(jnp.asarray(draws["f"]), axis=-1)
            return np.asarray(jnp.take_along_axis(
                logp, jnp.asarray(y, jnp.int32)[None, :, None], -1)[..., 0])

    def evaluate(self, x, y, *, key, num_samples: int = 1000) -> dict[str, float]:
        """Accuracy, NLL (mean) and mean predictive entropy on labelled data."""
        check_key("key", key)
        p = np.asarray(self.predict(x, key=key, num_samples=num_samples).probs)
        y = np.asarray(y, dtype=int)
        ent = -np.sum(p * np.log(np.clip(p, 1e-300, None)), axis=1)
        out = {"entropy": float(ent.mean())}
        if y.size:
            out["accuracy"] = float(np.mean(p.argmax(1) == y))
            out["nll"] = float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-300, None))))
        return out


def _sv_kernel(params: SVParams, kstatic):
    return eqx.combine(jax.tree_util.tree_map(jnp.exp, params.log_kernel), kstatic)


def _sv_moments(params: SVParams, kstatic, xb, jitter):
    k = _sv_kernel(params, kstatic)
    z = params.z
    mm = z.shape[0]
    kmm = k(z, z) + jitter * jnp.eye(mm, dtype=z.dtype)
    chol = jnp.linalg.cholesky(kmm)
    kmb = k(z, xb)  # (M, B)
    a = jax.scipy.linalg.solve_triangular(chol, kmb, lower=True)  # L^-1 K_MB
    p = jax.scipy.linalg.solve_triangular(chol.T, a, lower=False)  # K_MM^-1 K_MB  (M, B)
    mean = params.m @ p  # (C, B)
    s = jnp.exp(params.log_s)  # (C, M)
    var = s @ (p**2) + (k.diag(xb) - jnp.sum(a**2, 0))[None, :]
    return mean.T, jnp.maximum(var, 1e-12).T  # (B, C)


#: One compiled program per query shape (eagerly, every kernel op compiled on its own: ~10 s).
_sv_moments_jit = eqx.filter_jit(_sv_moments)


def _sample_s2(params: SVParams, key, shape, scale_model):
    if scale_model == "gaussian":
        return jnp.full(shape, jnp.exp(params.log_scale))
    a, b = jnp.exp(params.log_a), jnp.exp(params.log_b)
    return b / jax.random.gamma(key, a, shape)


@eqx.filter_jit
def _sv_predict(params, mean, var, key, num_samples, scale_model):
    k1, k2 = jax.random.split(key)
    s2 = _sample_s2(params, k1, (num_samples, mean.shape[0], 1), scale_model)
    f = mean + jnp.sqrt(s2 * var) * jax.random.normal(k2, (num_samples,) + mean.shape)
    return jnp.mean(jax.nn.softmax(f, axis=-1), axis=0)


def _sv_kl(params: SVParams, kstatic, jitter, scale_model, prior_a, prior_b):
    k = _sv_kernel(params, kstatic)
    z = params.z
    mm = z.shape[0]
    kmm = k(z, z) + jitter * jnp.eye(mm, dtype=z.dtype)
    chol = jnp.linalg.cholesky(kmm)
    kinv_diag = jnp.sum(jax.scipy.linalg.solve_triangular(
        chol, jnp.eye(mm, dtype=z.dtype), lower=True) ** 2, 0)  # diag(K^-1)
    s = jnp.exp(params.log_s)
    alpha = jax.scipy.linalg.solve_triangular(chol, params.m.T, lower=True)  # (M, C)
    maha = jnp.sum(alpha**2, 0)  # m_c^T K^-1 m_c
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    if scale_model == "gaussian":
        inv_s2 = jnp.exp(-params.log_scale)
        kl_ig = 0.0
    else:
        aq, bq = jnp.exp(params.log_a), jnp.exp(params.log_b)
        inv_s2 = aq / bq
        kl_ig = _kl_inverse_gamma(aq, bq, prior_a, prior_b)
    kl_u = 0.5 * jnp.sum(s @ kinv_diag + inv_s2 * maha - mm + logdet - jnp.sum(params.log_s, 1))
    return kl_u + kl_ig


def _elbo_loss(p: SVParams, key, xs, ys, kstatic, jitter, scale_model, prior_a, prior_b,
               batch_size, num_mc, train_inducing):
    """-ELBO / N on a random minibatch of ``batch_size`` rows (drawn without replacement)."""
    n = xs.shape[0]
    kb, k1, k2 = jax.random.split(key, 3)
    idx = jax.random.permutation(kb, n)[:batch_size]
    xb, yb = xs[idx], ys[idx]
    if not train_inducing:
        p = p._replace(z=jax.lax.stop_gradient(p.z))
    mean, var = _sv_moments(p, kstatic, xb, jitter)
    s2 = _sample_s2(p, k1, (num_mc, 1, 1), scale_model)
    f = mean + jnp.sqrt(s2 * var) * jax.random.normal(k2, (num_mc,) + mean.shape)
    ll = jnp.take_along_axis(jax.nn.log_softmax(f, -1), yb[None, :, None], -1)
    kl = _sv_kl(p, kstatic, jitter, scale_model, prior_a, prior_b)
    return -jnp.mean(ll) + kl / n


def _inducing_rows(ya: np.ndarray, c: int, mm: int) -> np.ndarray:
    """Round-robin over the classes, first examples of each class first."""
    n = ya.shape[0]
    order = np.concatenate([np.flatnonzero(ya == k) for k in range(c)])
    per_class = [list(np.flatnonzero(ya == k)) for k in range(c)]
    picks, i = [], 0
    while len(picks) < mm:
        lst = per_class[i % c]
        if lst:
            picks.append(lst.pop(0))
        i += 1
        if i > 10 * n:
            picks += [j for j in order if j not in picks][: mm - len(picks)]
            break
    return np.array(picks)


class Classifier(Family):
    """Sparse variational NNGP classifier with a shared random scale (module notes):
    ``Classifier(...).fit(x, y, key=key)`` with integer labels ``y`` in ``0..C-1``.

    Parameters
    ----------
    kernel : Kernel, optional
        Default ``NNGP(2, "relu", 2.0, 0.1)`` (amplitude set to 1: the scale is :math:`s^2`).
    scale_model : {"inverse_gamma", "gaussian"}
        Random scale with :math:`q(s^2) = \\mathrm{IG}(a', b')`, or a fitted constant.
    prior_a, prior_b : float
        The prior :math:`\\mathrm{IG}(a, b)` of the scale (default 2, 2).
    num_inducing : int
        M (default 200), initialised with training inputs spread over the classes.
    num_classes : int, optional
        Default ``max(y) + 1``.
    batch_size, num_epochs, learning_rate, num_mc : int, int, float, int
        Adam on minibatches: ``num_epochs * (n // batch_size)`` steps, ``num_mc`` draws of
        :math:`(s^2, f)` per step.
    train_inducing : bool
        Also fit the inducing inputs.
    standardize : bool
        z-score the inputs with the training statistics.
    num_samples : int
        Monte Carlo draws of the predictive probabilities.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models import nngp
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-2, 1, (30, 2)), rng.normal(2, 1, (30, 2))])
    >>> y = np.repeat([0, 1], 30)
    >>> fitted = nngp.Classifier(num_inducing=8, num_epochs=20, batch_size=30).fit(
    ...     x, y, key=jax.random.key(0), progress_bar=False)
    >>> pred = fitted.predict(np.array([[-2.0, -2.0], [2.0, 2.0]]))
    >>> pred.batch_shape, (np.asarray(pred.mean) > 0.5).tolist()
    ((2,), [False, True])
    """

    name = "nngp-classifier"
    engines = {"svi": "sparse variational posterior, shared inverse-gamma scale (Adam)"}

    kernel: Kernel | None = None
    scale_model: str = eqx.field(static=True, default="inverse_gamma")
    prior_a: float = eqx.field(static=True, default=2.0)
    prior_b: float = eqx.field(static=True, default=2.0)
    num_inducing: int = eqx.field(static=True, default=200)
    num_classes: int | None = eqx.field(static=True, default=None)
    batch_size: int = eqx.field(static=True, default=100)
    num_epochs: int = eqx.field(static=True, default=100)
    learning_rate: float = eqx.field(static=True, default=1e-2)
    num_mc: int = eqx.field(static=True, default=16)
    train_inducing: bool = eqx.field(static=True, default=True)
    standardize: bool = eqx.field(static=True, default=True)
    num_samples: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        if self.kernel is not None and not isinstance(self.kernel, Kernel):
            raise ValueError(f"kernel: expected a probkit.kernels.Kernel, got "
                             f"{type(self.kernel).__name__}")
        check_choice("scale_model", self.scale_model, ("inverse_gamma", "gaussian"))
        check_positive("prior_a", self.prior_a)
        check_positive("prior_b", self.prior_b)
        for name in ("num_inducing", "batch_size", "num_epochs", "num_mc", "num_samples"):
            check_positive_int(name, getattr(self, name))
        check_positive("learning_rate", self.learning_rate)
        if self.num_classes is not None:
            check_positive_int("num_classes", self.num_classes)

    def fit(self, x, y, *, key, progress_bar: bool = True) -> NNGPClassifier:
        """Maximise the ELBO on ``x`` ``(n, d)`` and labels ``y`` ``(n,)`` in ``0..C-1``."""
        key = check_key("key", key)
        xa, ya = check_regression_data(x, y)
        if not np.all(ya == np.round(ya)) or np.any(ya < 0):
            raise ValueError("y: expected integer class labels >= 0")
        ya = ya.astype(int)
        c = int(ya.max()) + 1 if self.num_classes is None else self.num_classes
        if ya.max() >= c:
            raise ValueError(f"y: labels must be < num_classes={c}")
        kernel = NNGP(2, "relu", 2.0, 0.1, 1.0) if self.kernel is None else self.kernel
        n, d = xa.shape
        with jax.enable_x64(True):
            if self.standardize:
                x_loc, x_unit = xa.mean(0), xa.std(0)
                x_unit = np.where(x_unit > 0, x_unit, 1.0)
            else:
                x_loc, x_unit = np.zeros(d), np.ones(d)
            xs = (xa - x_loc) / x_unit
            mm = min(self.num_inducing, n)
            kernel = jax.tree_util.tree_map(
                lambda v: jnp.asarray(v, jnp.float64) if eqx.is_inexact_array(v) else v,
                _unit_amplitude(kernel))
            kparams, kstatic = eqx.partition(kernel, _kernel_trainable(kernel))
            params = SVParams(
                z=jnp.asarray(xs[_inducing_rows(ya, c, mm)]), m=jnp.zeros((c, mm)),
                log_s=jnp.full((c, mm), jnp.log(1.0)),
                log_a=jnp.log(jnp.float64(self.prior_a)),
                log_b=jnp.log(jnp.float64(self.prior_b)), log_scale=jnp.float64(0.0),
                log_kernel=jax.tree_util.tree_map(jnp.log, kparams))
            jitter = 1e-6
            batch_size = min(self.batch_size, n)
            per_epoch = n // batch_size
            out = optimize.run(
                _elbo_loss, params, key=key,
                args=(jnp.asarray(xs), jnp.asarray(ya), kstatic, jitter, self.scale_model,
                      float(self.prior_a), float(self.prior_b), batch_size, self.num_mc,
                      self.train_inducing),
                num_steps=self.num_epochs * per_epoch, steps_per_dispatch=per_epoch,
                learning_rate=optimize.Constant(jnp.asarray(self.learning_rate, jnp.float64)),
                progress_bar=progress_bar, desc="nngp classifier")
            return NNGPClassifier(
                params=out.params, kstatic=kstatic, x_loc=jnp.asarray(x_loc),
                x_unit=jnp.asarray(x_unit), x_train=xa, y_train=ya, history=out.losses,
                scale_model=self.scale_model, prior_a=float(self.prior_a),
                prior_b=float(self.prior_b), num_classes=c, num_samples=self.num_samples,
                jitter=jitter)
