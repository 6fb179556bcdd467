r"""Functional Bayesian Tucker decomposition (FunBaT) with state-space GP factors.

Fang, Yu, Wang, Li, Kirby & Zhe, "Functional Bayesian Tucker Decomposition for
Continuous-indexed Tensor Data", ICLR 2024 (arXiv:2311.04829).

Model
-----
An entry :math:`n` has continuous coordinates :math:`x_n = (x_{n1}, \dots, x_{nK})` (one per
mode) and a value

.. math::

    y_n = \operatorname{vec}(\mathcal W)^\top
          \big(u^1(x_{n1}) \otimes \cdots \otimes u^K(x_{nK})\big) + \varepsilon_n,
    \qquad \varepsilon_n \sim \mathcal N(0, \tau^{-1}),

with :math:`u^k = (u^k_1, \dots, u^k_R)` independent GPs per mode: Matern in the paper
(lengthscale :math:`\ell_k`, variance :math:`s^2_k`, smoothness :math:`\nu \in \{1/2, 3/2,
5/2\}`), here any kernel with a state-space form (``FunBaT(kernel=...)``: periodic,
quasi-periodic, SHO/celerite terms, sums and products),
core :math:`\operatorname{vec}\mathcal W \sim \mathcal N(0, \sigma_W^2 I)` of size
:math:`R^K` and :math:`\tau \sim \mathrm{Gamma}(a_0, b_0)`. The CP variant fixes
:math:`\mathcal W` to the super-diagonal of ones, so the Kronecker product becomes a
Hadamard product: :math:`y_n = \sum_r \prod_k u^k_r(x_{nk}) + \varepsilon_n`.

The family :class:`FunBaT` (``name = "funbat"``) has two engines:

* ``"cep"`` (default) -- conditional expectation propagation, the paper's engine
  (:mod:`~probkit.models.tucker.cep`): factor messages summed per unique coordinate enter one
  Kalman filter + RTS smoother per mode (:mod:`~probkit.models.tucker.factors`, on
  :func:`probkit.inference.kalman.rts_smoother`); the core and the noise are updated in closed
  form. Prediction at coordinates never seen in training inserts them into each mode's sorted
  grid as observation-free steps of the smoother (exact interpolation and extrapolation under the
  fitted messages);
* ``"nuts"`` -- :func:`tucker_model`, the model in NumPyro (dense, non-centred GP factors on the
  unique coordinates), sampled by :func:`probkit.inference.hmc.run`; for small data.

Modules: :mod:`~probkit.models.tucker.data` (settings, checks, data layout),
:mod:`~probkit.models.tucker.factors` (one mode's smoother), :mod:`~probkit.models.tucker.cep`
(the CEP updates and epoch loop), :mod:`~probkit.models.tucker.model` (the NumPyro model),
:mod:`~probkit.models.tucker.api` (the family and the fitted models).

Differences from the authors' code: the GP prior is counted once (no extra :math:`I/v` per
coordinate), the core prior :math:`N(0, \sigma_W^2 I)` is used and its covariance enters the
factor and noise messages, prediction at new coordinates is exact smoothing, and all randomness
comes from the explicit ``key``.

Examples
--------
>>> import jax, numpy as np, probkit
>>> from probkit.models.tucker import FunBaT
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(size=(200, 2))
>>> y = np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1]) + 0.05 * rng.normal(size=200)
>>> fitted = FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.3, num_steps=30).fit(
...     x, y, key=jax.random.key(0), progress_bar=False)
>>> pred = fitted.predict(x[:4])
>>> idata = fitted.to_arviz(key=jax.random.key(1), num_samples=100)
>>> path = fitted.save(__import__("tempfile").mkdtemp() + "/funbat.pk")
>>> bool(np.array_equal(probkit.load(path).predict(x[:4]).mean, pred.mean))
True
"""

from probkit.models.tucker.api import CEPFitted, FunBaT, NUTSFitted
from probkit.models.tucker.cep import CEPState, cep_init, cep_step, run_cep
from probkit.models.tucker.data import TuckerConfig, TuckerData, prepare_data
from probkit.models.tucker.factors import factor_marginals, mode_posterior
from probkit.models.tucker.model import tucker_model

__all__ = ["FunBaT", "CEPFitted", "NUTSFitted", "TuckerConfig", "TuckerData", "CEPState",
           "prepare_data", "cep_init", "cep_step", "run_cep", "mode_posterior",
           "factor_marginals", "tucker_model"]
