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

Modules
-------
* :mod:`~probkit.models.dkf.dynamics` — :math:`A, G, S`: least squares, the NumPyro model, HMC;
* :mod:`~probkit.models.dkf.filter` — the recursion as pseudo-observations of the package's one
  Kalman filter (and RTS smoother), with the positive-definiteness fixes;
* :mod:`~probkit.models.dkf.nadaraya_watson`, :mod:`~probkit.models.dkf.learners` — learners of
  :math:`(f, Q)`: Nadaraya-Watson, an :class:`equinox.nn.MLP`, the exact GP of
  :mod:`probkit.models.gp`;
* :mod:`~probkit.models.dkf.baselines` — exact Gaussian-mixture moments, the Kalman decoder,
  the paper's metrics;
* :mod:`~probkit.models.dkf.predictive`, :mod:`~probkit.models.dkf.family` — the family
  :class:`DKF` and its fitted model (predictive distributions per time step).

Numerics run in float64 inside ``jax.enable_x64(True)``; the global JAX configuration is
never changed.

Examples
--------
>>> import numpy as np, jax, tempfile, pathlib, probkit
>>> from probkit.models.dkf import DKF
>>> rng = np.random.default_rng(0)
>>> z = np.zeros((300, 1))
>>> for t in range(1, 300):
...     z[t] = 0.9 * z[t - 1] + 0.3 * rng.normal(size=1)
>>> x = np.tanh(z @ np.ones((1, 3))) + 0.1 * rng.normal(size=(300, 3))
>>> fitted = DKF(learner="nw").fit(x[:200], z[:200], key=jax.random.key(0))
>>> pred = fitted.predict(x[200:])                      # filtering distribution of the states
>>> pred.mean.shape, pred.log_prob(z[200:]).shape
((100, 1), (100,))
>>> idata = fitted.to_arviz(key=jax.random.key(1), num_samples=100)
>>> path = fitted.save(pathlib.Path(tempfile.mkdtemp()) / "dkf.pk")
>>> bool(np.array_equal(probkit.load(path).predict(x[200:]).mean, pred.mean))
True
"""

from probkit.models.dkf.baselines import (
    fit_linear_observation,
    gaussian_mixture_moments,
    kalman_decode,
    mean_absolute_angle,
    nrmse,
)
from probkit.models.dkf.dynamics import (
    DynamicsParams,
    dynamics_model,
    fit_dynamics,
    make_dynamics,
    sample_dynamics,
    stationary_covariance,
)
from probkit.models.dkf.family import DKF, DKFFitted
from probkit.models.dkf.filter import PD_FIXES, DKFResult, dkf_filter, pseudo_observations
from probkit.models.dkf.learners import (
    LEARNERS,
    GaussianProcess,
    GPLearnerFitted,
    Learner,
    LearnerFitted,
    MLPFitted,
    MLPLearner,
    NadarayaWatson,
    NWFitted,
    ResidualCov,
)
from probkit.models.dkf.nadaraya_watson import nw_loo_error, nw_predict, nw_select_bandwidth
from probkit.models.dkf.predictive import StateGaussian

__all__ = [
    "DKF",
    "DKFFitted",
    "StateGaussian",
    "DynamicsParams",
    "DKFResult",
    "PD_FIXES",
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
    "nrmse",
    "mean_absolute_angle",
    "nw_predict",
    "nw_loo_error",
    "nw_select_bandwidth",
    "Learner",
    "LearnerFitted",
    "ResidualCov",
    "LEARNERS",
    "NadarayaWatson",
    "NWFitted",
    "MLPLearner",
    "MLPFitted",
    "GaussianProcess",
    "GPLearnerFitted",
]
