r"""A fitted scale-mixture NNGP regression: the :class:`~probkit.models.base.Fitted` of
:class:`probkit.models.nngp.Regressor`.

The fitted model holds the standardised training data, the fitted kernel, noise ratio
:math:`\varepsilon` and scale prior, and the one eigendecomposition of the training Gram matrix.
At query points :math:`x_*` it computes the unit-scale moments :math:`\mu_*, S_*`
(:func:`~probkit.models.nngp.predictive_moments`) and the scale posterior, and returns a
:class:`~probkit.models.nngp.ScaleMixtureNormal`: over the latent :math:`f` (``posterior``) or
over :math:`y`, with :math:`\varepsilon` added to :math:`S_*` (``predict``: the noise is scaled
by :math:`s^2` too). Everything is jitted with the model as an argument, so a padded model
(``capacity``) serves every data size up to its capacity with the same compiled programs.

With ``predictor="ntk"`` (:class:`~probkit.models.nngp.Regressor`) the moments are those of the
NTK-GP instead: the distribution, over random initialisations, of the infinite-width network
trained to convergence by gradient flow on the squared loss (Lee et al. 2019, eq. 16), see
:func:`ntk_solve` and :class:`NNGPRegression`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array

from probkit._checks import check_key
from probkit.kernels import NNGP, NTK, Kernel
from probkit.models.base import Fitted, check_inputs
from probkit.models.nngp.model import check_scale_prior, scale_mixture_model
from probkit.models.nngp.predictive import ScaleMixtureNormal
from probkit.models.nngp.spectral import (
    ScalePosterior,
    Spectral,
    log_marginal,
    mask_gram,
    masked_quad_stats,
    predictive_moments,
    scale_posterior,
    spectral,
)
from probkit.result import Result
from probkit.special import normal_logpdf

__all__ = ["NNGPRegression", "NTKSolve", "ntk_solve"]

PREDICTORS = ("nngp", "ntk")


class NTKSolve(NamedTuple):
    """What the NTK-GP predictor keeps of the training data (standardised units).

    With :math:`A = \\Theta + \\varepsilon I` (:math:`\\Theta` the NTK Gram matrix of the
    training inputs, :math:`K` the NNGP one; both of :func:`~probkit.models.nngp.mask_gram` form
    when padded): ``inv`` :math:`= A^{-1}`, ``alpha`` :math:`= A^{-1}y`, ``mid``
    :math:`= A^{-1}KA^{-1}`.
    """

    inv: Array
    alpha: Array
    mid: Array


def _as_ntk(kernel: NNGP) -> NTK:
    """The NTK of the network whose NNGP kernel is ``kernel`` (same parameters)."""
    return NTK(kernel.depth, kernel.activation, kernel.weight_variance, kernel.bias_variance,
               kernel.last_weight_variance, kernel.input_weight_variance)


def ntk_solve(kernel: NNGP, x: Array, y: Array, noise, mask: Array | None = None) -> NTKSolve:
    """:class:`NTKSolve` of the training data ``x`` ``(n, d)``, ``y`` ``(n,)`` for the network
    whose NNGP kernel is ``kernel`` (one eigendecomposition of :math:`\\Theta`, O(n^3)).

    ``noise`` is the ridge :math:`\\varepsilon > 0` added to :math:`\\Theta`; ``mask`` marks the
    real rows of padded data (padded rows then decouple, as in
    :func:`~probkit.models.nngp.mask_gram`).
    """
    gram, theta = _as_ntk(kernel).nngp_and_ntk(x, x)
    if mask is not None:
        gram, theta, y = mask_gram(gram, mask), mask_gram(theta, mask), jnp.where(mask, y, 0.0)
    evals, evecs = jnp.linalg.eigh(theta)
    inv = (evecs / (jnp.maximum(evals, 0.0) + noise)) @ evecs.T
    inv = 0.5 * (inv + inv.T)
    mid = inv @ gram @ inv
    return NTKSolve(inv, inv @ y, 0.5 * (mid + mid.T))


_ntk_solve_jit = eqx.filter_jit(ntk_solve)


class NNGPRegression(Fitted):
    """A fitted scale-mixture NNGP regression (returned by ``Regressor.fit``); an equinox Module.

    Inputs and targets are z-scored with training statistics internally; every output is in
    data units. ``posterior(x)`` (latent ``f``) and ``predict(x)`` (``y``) are
    :class:`~probkit.models.nngp.ScaleMixtureNormal` distributions; also
    :meth:`log_marginal_likelihood`, :meth:`scale_posterior`, :meth:`sample_scale` (HMC on
    ``s2``/noise, O(n) per step) and the inherited ``to_arviz`` and ``save``.

    Attributes
    ----------
    kernel : Kernel
        Fitted kernel (unit amplitude).
    noise : Array
        Noise ratio :math:`\\varepsilon` (standardised units).
    scale_prior : numpyro Distribution or None
        Fitted scale prior (``None``: Gaussian model with constant ``scale``).
    scale : Array
        Constant :math:`s^2` of the Gaussian model (1 for scale mixtures).
    sp : Spectral
        The one eigendecomposition of the training Gram matrix (of the
        :func:`~probkit.models.nngp.mask_gram` matrix when padded; :meth:`unpad` gives that of
        the real rows).
    x_train, y_train : Array
        Standardised training data, padded to ``capacity`` rows when ``mask`` is set.
    history : array
        Mean negative log marginal likelihood per dispatch of the optimiser (both stages).
    mask : Array or None
        Boolean mask of the real rows (``capacity``), ``None`` when unpadded. Padded models
        evaluate every ``n`` up to the capacity with the same compiled programs.
    scale_draws : Array or None
        Posterior draws of :math:`s^2` (the ``"hmc"`` engine); they replace the closed form or
        quadrature as the scale posterior.
    closed_form : bool
        Integrate an inverse-gamma scale in closed form (``False``: by quadrature, the
        ``"quadrature"`` engine).
    predictor : {"nngp", "ntk"}
        ``"nngp"``: the Bayesian posterior of the NNGP (above). ``"ntk"``: the NTK-GP, the
        distribution over random initialisations of the infinite-width network (with NNGP
        kernel ``kernel`` and tangent kernel :math:`\\Theta` of :class:`probkit.kernels.NTK`)
        trained to convergence by gradient flow on
        :math:`\\tfrac12\\lVert f(X) - y\\rVert^2 + \\tfrac\\varepsilon2\\lVert\\theta -
        \\theta_0\\rVert^2` (the ridge pulls towards the initial parameters; Lee et al. 2019,
        eq. 16, is :math:`\\varepsilon \\to 0`). With :math:`A = \\Theta + \\varepsilon I` it is
        Gaussian with mean :math:`\\Theta_{*n}A^{-1}y` and covariance
        :math:`s^2(K_{**} - \\Theta_{*n}A^{-1}K_{n*} - K_{*n}A^{-1}\\Theta_{n*} +
        \\Theta_{*n}A^{-1}KA^{-1}\\Theta_{n*})`; ``predict`` adds the observation noise
        :math:`s^2\\varepsilon`. The hyperparameters, :math:`\\varepsilon` and :math:`s^2` are
        those fitted by the NNGP marginal likelihood (:meth:`log_marginal_likelihood` is that
        of the NNGP model).
    ntk : NTKSolve or None
        The training-data solves of the ``"ntk"`` predictor (:func:`ntk_solve`).
    """

    kernel: Kernel
    noise: Array
    scale_prior: Any
    scale: Array
    x_train: Array
    y_train: Array
    sp: Spectral
    x_loc: Array
    x_unit: Array
    y_loc: Array
    y_unit: Array
    history: Array
    mask: Array | None = None
    scale_draws: Array | None = None
    num_nodes: int = eqx.field(static=True, default=128)
    closed_form: bool = eqx.field(static=True, default=True)
    ntk: NTKSolve | None = None
    predictor: str = eqx.field(static=True, default="nngp")

    def __check_init__(self):
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor: expected one of {PREDICTORS}, got {self.predictor!r}")
        if self.predictor == "ntk" and (self.ntk is None or self.scale_prior is not None
                                        or type(self.kernel) is not NNGP):
            raise ValueError("predictor: 'ntk' needs its NTKSolve, a Gaussian scale "
                             "(scale_prior=None) and an NNGP kernel")

    @property
    def n(self) -> int:
        """Number of (real) training points."""
        if self.mask is None:
            return int(self.y_train.shape[0])
        return int(np.sum(np.asarray(self.mask)))

    @property
    def capacity(self) -> int:
        """Rows of the (padded) training arrays; equals :attr:`n` when unpadded."""
        return int(self.y_train.shape[0])

    def unpad(self) -> NNGPRegression:
        """The same fitted model on the real rows only (one new eigendecomposition, O(n^3)).

        Returns ``self`` when the model is not padded.
        """
        if self.mask is None:
            return self
        keep = np.flatnonzero(np.asarray(self.mask))
        with jax.enable_x64(True):
            xs, ys = self.x_train[keep], self.y_train[keep]
            sp = spectral(self.kernel(xs, xs), ys)
            ntk = (None if self.ntk is None
                   else _ntk_solve_jit(self.kernel, xs, ys, self.noise, None))
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(x_train=xs, y_train=ys, sp=sp, mask=None, ntk=ntk)
        return NNGPRegression(**fields)

    def _x(self, x) -> Array:
        if isinstance(x, jax.core.Tracer):
            return x if x.ndim == 2 else x[:, None]
        return jnp.asarray(check_inputs("x", x, self.x_train.shape[1]))

    def scale_posterior(self) -> ScalePosterior:
        """Posterior of :math:`s^2` given the training data (standardised units)."""
        with jax.enable_x64(True):
            return _scale_posterior_jit(self)

    def log_marginal_likelihood(self) -> float:
        """:math:`\\log p(y)` of the training targets in data units."""
        with jax.enable_x64(True):
            return float(_lml_jit(self))

    def posterior(self, x, *, full_cov: bool = True) -> ScaleMixtureNormal:
        """Posterior of the latent :math:`f` at ``x`` ``(m, d)``: a
        :class:`~probkit.models.nngp.ScaleMixtureNormal` (joint samples with ``full_cov``)."""
        with jax.enable_x64(True):
            return _posterior_jit(self, self._x(x), full_cov, False)

    def predict(self, x, *, full_cov: bool = True) -> ScaleMixtureNormal:
        """Predictive of :math:`y` at ``x`` ``(m, d)``: exact ``log_prob``, ``cdf``, ``icdf``;
        ``full_cov=False`` skips the ``(m, m)`` covariance (then samples are independent across
        points given :math:`s^2`)."""
        with jax.enable_x64(True):
            return _posterior_jit(self, self._x(x), full_cov, True)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        keep = slice(None) if self.mask is None else np.asarray(self.mask)
        x = np.asarray(self.x_loc + self.x_unit * self.x_train)[keep]
        y = np.asarray(self.y_loc + self.y_unit * self.y_train)[keep]
        return x, y

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """Joint draws of :math:`(s^2, f)` at the training inputs (``s2`` in standardised
        units; omitted for the Gaussian model, where it is a constant)."""
        x, _ = self.observed()
        post = self.posterior(x)
        s2, f = post.sample_with_scale(key, (num_samples,))
        draws = {"f": np.asarray(f)}
        if post.kind != "fixed":
            draws = {"s2": np.asarray(s2), **draws}
        return draws

    def _log_likelihood(self, draws, x, y) -> np.ndarray:
        """:math:`\\log\\mathcal N(y_i; f_i, s^2\\varepsilon u_y^2)` per draw: the noise is
        scaled by the same :math:`s^2` as the function."""
        f = np.asarray(draws["f"], np.float64)
        s2 = np.asarray(draws.get("s2", np.full(f.shape[0], float(self.scale))), np.float64)
        sd = np.sqrt(s2[:, None] * float(self.noise)) * float(self.y_unit)
        with jax.enable_x64(True):
            return np.asarray(normal_logpdf(jnp.asarray(y, jnp.float64), f, sd))

    def sample_scale(self, *, key, noise_prior: dist.Distribution | None = None,
                     num_warmup: int = 500, num_samples: int = 1000, num_chains: int = 2,
                     progress_bar: bool = False) -> Result:
        """HMC (probkit's BlackJAX NUTS) on ``s2`` (and ``noise`` with ``noise_prior``) with the
        fitted kernel: :func:`~probkit.models.nngp.scale_mixture_model`, O(n) per step
        (standardised units)."""
        from probkit.inference import hmc

        check_key("key", key)
        if self.scale_prior is None:
            raise ValueError("scale_prior: the Gaussian model has no random scale to sample")
        check_scale_prior("noise_prior", noise_prior)
        with jax.enable_x64(True):
            return hmc.run(scale_mixture_model, self.unpad().sp, scale_prior=self.scale_prior,
                           noise=None if noise_prior is not None else self.noise,
                           noise_prior=noise_prior, key=key, num_warmup=num_warmup,
                           num_samples=num_samples, num_chains=num_chains,
                           progress_bar=progress_bar)


def _model_q(model: NNGPRegression):
    """(q, logdet, n) of the real rows; ``n`` traced when padded."""
    return masked_quad_stats(model.sp, model.noise, model.mask)


def _model_scale(model: NNGPRegression, q, n) -> ScalePosterior:
    if model.scale_draws is not None:  # HMC draws: equally weighted nodes
        t = jnp.log(model.scale_draws)
        return ScalePosterior("quadrature", (t, jnp.full_like(t, -jnp.log(t.shape[0]))))
    return scale_posterior(q, n, model.scale_prior, model.scale, num_nodes=model.num_nodes,
                           closed_form=model.closed_form)


@eqx.filter_jit
def _scale_posterior_jit(model: NNGPRegression) -> ScalePosterior:
    q, _, n = _model_q(model)
    return _model_scale(model, q, n)


@eqx.filter_jit
def _lml_jit(model: NNGPRegression):
    q, logdet, n = _model_q(model)
    lml = log_marginal(q, logdet, n, model.scale_prior, model.scale,
                       num_nodes=model.num_nodes, closed_form=model.closed_form)
    return lml - n * jnp.log(model.y_unit)


def _ntk_moments(model: NNGPRegression, xs: Array, full_cov: bool):
    """Unit-scale mean, variances and covariance of the NTK-GP at ``xs`` (standardised)."""
    kx, tx = _as_ntk(model.kernel).nngp_and_ntk(xs, model.x_train)
    if model.mask is not None:
        kx, tx = (jnp.where(model.mask[None, :], a, 0.0) for a in (kx, tx))
    kdiag = model.kernel.diag(xs)
    b = tx @ model.ntk.inv  # Theta_{*n} A^{-1}
    c = tx @ model.ntk.mid  # Theta_{*n} A^{-1} K A^{-1}
    mean = tx @ model.ntk.alpha
    # as in predictive_moments: below eps * prior variance the difference is rounding
    var = jnp.maximum(kdiag - 2.0 * jnp.sum(b * kx, 1) + jnp.sum(c * tx, 1),
                      jnp.finfo(kdiag.dtype).eps * kdiag)
    cov = None
    if full_cov:
        cross = b @ kx.T
        cov = model.kernel(xs, xs) - cross - cross.T + c @ tx.T
        cov = 0.5 * (cov + cov.T)
    return mean, var, cov


@eqx.filter_jit
def _posterior_jit(model: NNGPRegression, x, full_cov: bool, include_noise: bool):
    xs = (x - model.x_loc) / model.x_unit
    if model.predictor == "ntk":
        mean, var, cov = _ntk_moments(model, xs, full_cov)
    else:
        kx = model.kernel(xs, model.x_train)
        if model.mask is not None:
            kx = jnp.where(model.mask[None, :], kx, 0.0)
        kdiag = model.kernel.diag(xs)
        kss = model.kernel(xs, xs) if full_cov else None
        mom = predictive_moments(model.sp, model.noise, kx, kdiag, kss)
        mean, var, cov = mom.mean, mom.var, mom.cov
    if include_noise:
        var = var + model.noise
        if cov is not None:
            cov = cov + model.noise * jnp.eye(cov.shape[0], dtype=cov.dtype)
    q, _, n = _model_q(model)
    sc = _model_scale(model, q, n)
    return ScaleMixtureNormal(mean, var, cov, tuple(sc.params), sc.kind, model.y_loc,
                              model.y_unit)
