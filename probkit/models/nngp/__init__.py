r"""Scale mixtures of neural-network Gaussian processes (Lee, Yun, Yang & Lee, ICLR 2022).

Model (regression). With a kernel :math:`K` (by default the NNGP kernel of
:class:`probkit.kernels.NNGP` with readout variance 1) and a random scale :math:`s^2 \sim H`,

.. math::

    s^2 \sim H, \qquad f \mid s^2 \sim \mathcal{GP}(0, s^2 K), \qquad
    y_i \mid f, s^2 \sim \mathcal N(f(x_i), s^2\varepsilon),

so that :math:`y \mid s^2 \sim \mathcal N(0, s^2 A)` with :math:`A = K + \varepsilon I`. Write
:math:`q = y^\top A^{-1} y`, :math:`\mu_* = K_{*n}A^{-1}y` and
:math:`S_* = K_{**} - K_{*n}A^{-1}K_{n*}`. Three kinds of scale:

* **Gaussian** (``scale_prior=None``): :math:`s^2` is a fitted constant (the readout variance),
  the ordinary NNGP/GP: :math:`f_* \mid y \sim \mathcal N(\mu_*, s^2 S_*)`.
* **Inverse gamma** :math:`H = \mathrm{IG}(a, b)`: the Student-t process (Shah et al. 2014), in
  closed form: :math:`y \sim t_{2a}(0, (b/a)A)`,
  :math:`s^2 \mid y \sim \mathrm{IG}(a + n/2, b + q/2)` and
  :math:`f_* \mid y \sim t_{2a+n}(\mu_*, \tfrac{2b+q}{2a+n} S_*)`.
* **Any other** NumPyro distribution on :math:`(0,\infty)` (Gamma, LogNormal, HalfCauchy,
  :class:`probkit.distributions.BurrXII`, ...): exact 1-D quadrature of the posterior of
  :math:`\log s^2`, or NUTS on :math:`s^2`; the predictive is the mixture
  :math:`\sum_k w_k\,\mathcal N(\mu_*, s_k^2 S_*)`.

All three reuse one eigendecomposition of :math:`K`, so each quadrature node, optimiser step on
:math:`(\varepsilon, H)` or HMC step of :func:`scale_mixture_model` is :math:`O(n)`.

Families (the contract of :mod:`probkit.models.base`):

* :class:`Regressor` (``"nngp"``; engines ``"closed_form"``, ``"quadrature"``, ``"hmc"``) ->
  :class:`NNGPRegression`, whose ``predict``/``posterior`` are :class:`ScaleMixtureNormal`
  distributions; :meth:`Regressor.for_bo` is its Bayesian-optimisation configuration;
* ``Regressor(predictor="ntk", scale_prior=None)``: the same fit, predicting with the NTK-GP
  (the infinite-width network trained by gradient flow, Lee et al. 2019) instead;
* :class:`Classifier` (``"nngp-classifier"``): sparse variational posterior with a shared scale
  -> :class:`NNGPClassifier`, whose ``predict`` is :class:`ClassProbabilities`.

Modules: :mod:`~probkit.models.nngp.spectral` (pure functions: closed forms, quadrature,
padding), :mod:`~probkit.models.nngp.model` (NumPyro models),
:mod:`~probkit.models.nngp.predictive`, :mod:`~probkit.models.nngp.fitted`,
:mod:`~probkit.models.nngp.regression`, :mod:`~probkit.models.nngp.classifier`.

Examples
--------
>>> import jax, numpy as np, tempfile, pathlib, probkit
>>> from probkit.models import nngp
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(-3, 3, (40, 1)); y = np.sin(x[:, 0]) + 0.1 * rng.standard_cauchy(40)
>>> fitted = nngp.Regressor(num_steps=50).fit(x, y, key=jax.random.key(0), progress_bar=False)
>>> pred = fitted.predict(np.linspace(-3, 3, 5)[:, None])
>>> pred.mean.shape, pred.quantile([0.05, 0.95]).shape
((5,), (2, 5))
>>> idata = fitted.to_arviz(key=jax.random.key(1), num_samples=100)
>>> path = fitted.save(pathlib.Path(tempfile.mkdtemp()) / "nngp.pk")
>>> bool((probkit.load(path).predict(x[:3]).mean == fitted.predict(x[:3]).mean).all())
True
"""

from probkit.models.nngp.classifier import (
    Classifier,
    ClassProbabilities,
    NNGPClassifier,
    SVParams,
)
from probkit.models.nngp.fitted import NNGPRegression, NTKSolve, ntk_solve
from probkit.models.nngp.model import check_scale_prior, nngp_model, scale_mixture_model
from probkit.models.nngp.predictive import ScaleMixtureNormal
from probkit.models.nngp.regression import Regressor
from probkit.models.nngp.spectral import (
    PredictiveMoments,
    ScalePosterior,
    ScaleQuadrature,
    Spectral,
    gaussian_log_marginal,
    log_marginal,
    log_scale_integrand,
    mask_gram,
    masked_quad_stats,
    predictive_moments,
    quad_stats,
    scale_posterior,
    scale_quadrature,
    spectral,
    student_t_log_marginal,
)

__all__ = [
    "Regressor", "NNGPRegression", "ScaleMixtureNormal", "Classifier", "NNGPClassifier",
    "ClassProbabilities", "SVParams", "Spectral", "ScalePosterior", "ScaleQuadrature",
    "PredictiveMoments", "spectral", "quad_stats", "mask_gram", "masked_quad_stats",
    "gaussian_log_marginal", "student_t_log_marginal", "log_scale_integrand",
    "scale_quadrature", "log_marginal", "scale_posterior", "predictive_moments", "nngp_model",
    "scale_mixture_model", "check_scale_prior", "NTKSolve", "ntk_solve",
]
