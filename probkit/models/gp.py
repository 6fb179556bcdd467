r"""Exact Gaussian-process regression: type-II MAP hyperparameters, or their posterior by NUTS.

The exact GP family of probkit: the BO default surrogate and the DKF's GP learner.

Model (Rasmussen & Williams 2006, ch. 2 and 5): :math:`y_i = m + f(x_i) + \epsilon_i`,
:math:`f \sim GP(0, k_\theta)`, :math:`\epsilon_i \sim N(0, \sigma_n^2)` with an ARD RBF or Matern
kernel from :mod:`probkit.kernels`. The hyperparameters
:math:`\phi = (\log \ell_{1:d}, \log \sigma_f^2, \log(\sigma_n^2 - \sigma_{\min}^2), m)` maximise

.. math::
    \log p(y \mid \phi) + \log p(\phi), \qquad
    \log p(y\mid\phi) = -\tfrac12 r^\top K_y^{-1} r - \sum_i \log L_{ii} - \tfrac n2 \log 2\pi,

with :math:`K_y = K + \sigma_n^2 I = L L^\top`, :math:`r = y - m`, by L-BFGS in the
log parameters from several starts (``scipy.optimize`` L-BFGS-B on the jitted loss and gradient
by default, or ``optax.lbfgs`` with the starts ``jax.vmap``-ed); the best start wins. With
``priors=True`` (default) weak priors on the scale of unit-cube inputs and standardised outputs
regularise the fit: :math:`\log \ell_j \sim N(\sqrt2 + \tfrac12\log d, 3)` (Hvarfner et al.
2024, the BoTorch >= 0.12 default), :math:`\log\sigma_f^2 \sim N(0, 1.5^2)`,
:math:`\log\sigma_n^2 \sim N(-8, 2^2)`, :math:`m \sim N(0, 1)`; ``priors=False`` gives plain
type-II maximum likelihood.

The posterior at new points is :math:`\mu_* = m + K_{*x} K_y^{-1} r`,
:math:`\Sigma_* = K_{**} - K_{*x} K_y^{-1} K_{x*}` (latent :math:`f`: ``posterior``); the
predictive of :math:`y` adds :math:`\sigma_n^2 I` (``predict``).

**Fully Bayesian** (``engine="nuts"``): the same priors and marginal likelihood as a NumPyro
model (:func:`gp_model`) sampled by NUTS (:func:`probkit.inference.hmc.run`), and the posterior
at new points the equally weighted mixture over ``max_draws`` evenly thinned draws
:math:`\phi_s` of the exact GP posteriors, :math:`\frac1S\sum_s N(\mu_*(\phi_s),
\sigma^2_*(\phi_s))` (marginals; the approach of BoTorch's fully Bayesian GPs, Eriksson &
Jankowiak 2021), which integrates over the hyperparameter uncertainty that MAP ignores on small
data.

**Compile once.** Data are padded to a *capacity* (a power of two >= 32, or the ``capacity``
argument): padded rows get an identity block in :math:`K_y` and zero residual, which leaves the
likelihood and posterior exactly unchanged, so fitting and the acquisition optimiser compile once
per capacity instead of once per data size. Everything runs in float64 (``jax.enable_x64``
inside the calls; the global JAX config is not changed).

Examples
--------
>>> import jax, jax.numpy as jnp, numpy as np
>>> from probkit.models.gp import GP
>>> x = np.linspace(0, 1, 8)[:, None]
>>> fitted = GP(kernel="rbf").fit(x, np.sin(6 * x[:, 0]), key=jax.random.key(0))
>>> post = fitted.posterior(np.array([[0.5]]))
>>> bool(abs(float(post.mean[0]) - np.sin(3.0)) < 0.05)
True
>>> lo, hi = fitted.predict(np.array([[0.5]])).interval(0.95)
>>> bool(lo[0] < np.sin(3.0) < hi[0])
True
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jax import Array

from probkit._checks import (
    check_choice,
    check_key,
    check_positive,
    check_positive_int,
    check_regression_data,
)
from probkit.kernels import RBF, Matern12, Matern32, Matern52
from probkit.models.base import Family, Fitted, check_inputs
from probkit.posterior import Gaussian, Mixture, export

__all__ = ["GP", "GPParams", "GPData", "GPFitted", "GPMixtureFitted", "KERNELS", "pad_data",
           "log_marginal_likelihood", "log_prior", "prior", "gp_model", "fit_params",
           "condition"]

#: Kernel names accepted by :class:`GP`.
KERNELS = {"rbf": RBF, "matern12": Matern12, "matern32": Matern32, "matern52": Matern52}

# Box on the log parameters (unit-cube inputs, standardised outputs): keeps L-BFGS away from
# numerically singular corners.
_LOG_LS = (-6.0, 5.0)
_LOG_VAR = (-6.0, 8.0)
_LOG_NOISE = (-25.0, 2.0)


class GPParams(NamedTuple):
    """GP hyperparameters in the unconstrained (log) parametrisation."""

    log_lengthscale: Array  # (d,)
    log_variance: Array  # ()
    log_noise: Array  # () ; noise variance = noise_floor + exp(log_noise)
    mean: Array  # ()


class GPData(NamedTuple):
    """Training data padded to a fixed capacity ``m`` (``mask`` marks the ``n`` real rows)."""

    x: Array  # (m, d)
    y: Array  # (m,)
    mask: Array  # (m,) bool


def _capacity(n: int, capacity: int | None) -> int:
    if capacity is not None and n <= capacity:
        return capacity
    return max(32, 1 << max(n - 1, 1).bit_length())


def pad_data(x, y, capacity: int | None = None) -> GPData:
    """Pad ``x`` ``(n, d)``, ``y`` ``(n,)`` to ``m = capacity`` rows (or the next power of 2 >= 32).

    If ``n > capacity`` the next power of two is used instead (a new compile, never an error).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    m = _capacity(n, capacity)
    xp = np.zeros((m, d))
    yp = np.zeros(m)
    xp[:n], yp[:n] = x, y
    # Padded rows are masked out of every computation; any finite value will do.
    xp[n:] = 0.5
    return GPData(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(np.arange(m) < n))


def _kernel(kernel_cls, params: GPParams):
    ls = jnp.exp(jnp.clip(params.log_lengthscale, *_LOG_LS))
    return kernel_cls(lengthscale=ls, variance=jnp.exp(jnp.clip(params.log_variance, *_LOG_VAR)))


def _noise(params: GPParams, noise_floor: float) -> Array:
    return noise_floor + jnp.exp(jnp.clip(params.log_noise, *_LOG_NOISE))


def _gram(kernel_cls, params: GPParams, data: GPData, noise_floor: float) -> Array:
    """Padded :math:`K_y`: the real block plus an identity block for the padding."""
    mask = data.mask
    both = mask[:, None] & mask[None, :]
    k = _kernel(kernel_cls, params)(data.x, data.x)
    m = mask.shape[0]
    eye = jnp.eye(m, dtype=k.dtype)
    return jnp.where(both, k, 0.0) + eye * jnp.where(mask, _noise(params, noise_floor), 1.0)


def log_marginal_likelihood(params: GPParams, data: GPData, kernel_cls=Matern52,
                            noise_floor: float = 1e-6) -> Array:
    """Exact :math:`\\log p(y \\mid \\phi)` of the real rows of padded ``data``."""
    ky = _gram(kernel_cls, params, data, noise_floor)
    chol = jnp.linalg.cholesky(ky)
    r = jnp.where(data.mask, data.y - params.mean, 0.0)
    a = jsl.solve_triangular(chol, r, lower=True)
    n = jnp.sum(data.mask)
    return -0.5 * a @ a - jnp.sum(jnp.log(jnp.diagonal(chol))) - 0.5 * n * math.log(2 * math.pi)


def prior(d: int) -> GPParams:
    """The weak hyperpriors for unit-cube inputs and standardised outputs (module docstring), one
    NumPyro distribution per field of :class:`GPParams`."""
    return GPParams(dist.Normal(math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3)).expand([d])
                    .to_event(1), dist.Normal(0.0, 1.5), dist.Normal(-8.0, 2.0),
                    dist.Normal(0.0, 1.0))


def log_prior(params: GPParams) -> Array:
    """Log density of :func:`prior` at ``params``."""
    dists = prior(params.log_lengthscale.shape[-1])
    return sum(d.log_prob(v) for d, v in zip(dists, params, strict=True))


def gp_model(data: GPData, kernel_cls=Matern52, noise_floor: float = 1e-6) -> None:
    """The hyperparameter posterior as a NumPyro model (engine ``"nuts"``): the sites of
    :class:`GPParams` under :func:`prior` and the exact marginal likelihood of the (padded)
    ``data`` as a factor.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro import handlers
    >>> from probkit.models.gp import gp_model, pad_data
    >>> data = pad_data(np.linspace(0, 1, 5)[:, None], np.sin(np.linspace(0, 3, 5)))
    >>> tr = handlers.trace(handlers.seed(gp_model, 0)).get_trace(data)
    >>> sorted(tr)
    ['log_lengthscale', 'log_noise', 'log_variance', 'marginal_likelihood', 'mean']
    """
    dists = prior(data.x.shape[1])
    params = GPParams(*(numpyro.sample(name, d) for name, d in zip(GPParams._fields, dists,
                                                                    strict=True)))
    numpyro.factor("marginal_likelihood",
                   log_marginal_likelihood(params, data, kernel_cls, noise_floor))


def _initial_params(key: Array, d: int, num_restarts: int, y_mean: Array,
                    log_noise0: float = -8.0) -> GPParams:
    """Start 0 at moderate values (log noise ``log_noise0``), the others spread log-uniformly."""
    k1, k2, k3 = jax.random.split(key, 3)
    ls = jax.random.uniform(k1, (num_restarts, d), minval=math.log(0.05), maxval=math.log(2.0))
    ls = ls.at[0].set(math.log(0.3))
    var = jax.random.uniform(k2, (num_restarts,), minval=-1.0, maxval=1.5).at[0].set(0.0)
    noise = jax.random.uniform(k3, (num_restarts,), minval=-12.0, maxval=-4.0).at[0].set(
        log_noise0)
    mean = jnp.full((num_restarts,), y_mean)
    return GPParams(ls, var, noise, mean)


def fit_params(data: GPData, key: Array, *, kernel_cls=Matern52, num_restarts: int = 4,
               num_steps: int = 100, priors: bool = True, noise_floor: float = 1e-6,
               log_noise0: float = -8.0) -> tuple[GPParams, Array]:
    """Multi-start L-BFGS on the negative log marginal likelihood (+ log prior).

    Pure and jit-compatible (``kernel_cls``, ``num_restarts``, ``num_steps``, ``priors`` and
    ``noise_floor`` static). Returns the best parameters and their objective value (the negative
    log posterior up to a constant); starts that end non-finite are discarded. ``log_noise0`` is
    the first start's ``log_noise`` (the others are random).
    """
    d = data.x.shape[1]
    n = jnp.maximum(jnp.sum(data.mask), 1)
    y_mean = jnp.sum(jnp.where(data.mask, data.y, 0.0)) / n

    def loss(p: GPParams) -> Array:
        val = -log_marginal_likelihood(p, data, kernel_cls, noise_floor)
        if priors:
            val = val - log_prior(p)
        return val / n

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def run_one(p0: GPParams):
        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            grad = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=num_steps)
        return p, loss(p)

    starts = _initial_params(key, d, num_restarts, y_mean, log_noise0)
    params, values = jax.vmap(run_one)(starts)
    values = jnp.where(jnp.isfinite(values), values, jnp.inf)
    best = jnp.argmin(values)
    return jax.tree.map(lambda a: a[best], params), values[best]


class GPFitted(Fitted):
    """A GP conditioned on (padded) data: ``posterior(x)`` over ``f``, ``predict(x)`` over ``y``
    (both joint Gaussians, :class:`probkit.posterior.Gaussian`)."""

    params: GPParams
    x: Array
    y: Array
    mask: Array
    alpha: Array
    chol: Array
    kernel_cls: type = eqx.field(static=True)
    noise_floor: float = eqx.field(static=True)

    @property
    def kernel(self):
        """The fitted :mod:`probkit.kernels` kernel."""
        with jax.enable_x64(True):
            return _kernel(self.kernel_cls, self.params)

    @property
    def noise(self) -> Array:
        """Fitted noise variance."""
        with jax.enable_x64(True):
            return _noise(self.params, self.noise_floor)

    @property
    def noise_variance(self) -> np.ndarray:
        """Fitted noise variance (NumPy float64)."""
        return np.asarray(self.noise)

    def _cross(self, x):
        """Checked query points and :math:`K_{*x}` (padding columns zero); call inside x64."""
        if not isinstance(x, jax.core.Tracer):
            x = check_inputs("x", x, self.x.shape[1])
        x = jnp.asarray(x, dtype=jnp.float64)
        return x, jnp.where(self.mask[None, :], self.kernel(x, self.x), 0.0)

    def _mean_and_whitened(self, x):
        """Query points, posterior mean and :math:`L^{-1} K_{x*}`; call inside x64."""
        x, ks = self._cross(x)
        return x, self.params.mean + ks @ self.alpha, jsl.solve_triangular(self.chol, ks.T,
                                                                           lower=True)

    def _moments(self, x):
        with jax.enable_x64(True):
            x, mean, v = self._mean_and_whitened(x)
            return mean, self.kernel(x, x) - v.T @ v

    def marginals(self, x) -> tuple[Array, Array]:
        """Posterior mean and marginal variance of ``f`` at ``x`` ``(q, d)``, without the
        ``(q, q)`` covariance (pure; the mixture of :class:`GPMixtureFitted` vmaps it)."""
        with jax.enable_x64(True):
            x, mean, v = self._mean_and_whitened(x)
            return mean, jnp.maximum(self.kernel.diag(x) - jnp.sum(v * v, axis=0), 0.0)

    def posterior_mean(self, x) -> Array:
        """Posterior mean :math:`\\mu_*` of ``f`` at ``x`` ``(q, d)`` alone: O(n) per point, no
        covariance (for many query points, e.g. the DKF's GP learner)."""
        with jax.enable_x64(True):
            _, ks = self._cross(x)
            mean = self.params.mean + ks @ self.alpha
        return export(mean)

    def posterior(self, x) -> Gaussian:
        """Joint posterior of the latent function at ``x`` ``(q, d)``."""
        mean, cov = self._moments(x)
        return Gaussian(mean, cov=cov)

    def predict(self, x) -> Gaussian:
        """Joint predictive of ``y`` at ``x``: the posterior plus the noise variance."""
        mean, cov = self._moments(x)
        with jax.enable_x64(True):
            return Gaussian(mean, cov=cov + self.noise * jnp.eye(mean.shape[0], dtype=cov.dtype))

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.mask)
        return np.asarray(self.x)[mask], np.asarray(self.y)[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        x, _ = self.observed()
        f = self.posterior(x).sample(key, (num_samples,))
        return {"f": np.asarray(f)}


class GPMixtureFitted(Fitted):
    """An exact GP with NUTS draws of its hyperparameters (engine ``"nuts"``): ``components``
    is a :class:`GPFitted` whose every array has a leading draw axis ``S``; ``posterior(x)`` and
    ``predict(x)`` are the equally weighted :class:`~probkit.posterior.Mixture` of the draws'
    exact GP marginals (their exact log-EI is
    :meth:`~probkit.posterior.Mixture.log_expected_improvement`)."""

    components: GPFitted
    num_divergent: Array

    def _marginals(self, x):
        """Per-draw means, latent variances ``(S, q)`` and noise variances ``(S,)``."""
        if not isinstance(x, jax.core.Tracer):
            x = check_inputs("x", x, self.components.x.shape[-1])
        with jax.enable_x64(True):
            return jax.vmap(lambda c: (*c.marginals(x), c.noise))(self.components)

    def posterior(self, x) -> Mixture:
        """Posterior of the latent function at ``x`` ``(q, d)``: one GP per draw."""
        mean, var, _ = self._marginals(x)
        with jax.enable_x64(True):
            return Mixture(mean, jnp.sqrt(var))

    def predict(self, x) -> Mixture:
        """Predictive of ``y`` at ``x``: each draw's posterior plus its noise variance."""
        mean, var, noise = self._marginals(x)
        with jax.enable_x64(True):
            return Mixture(mean, jnp.sqrt(var + noise[:, None]))

    @property
    def noise_variance(self) -> np.ndarray:
        """Posterior mean of the noise variance (NumPy float64)."""
        with jax.enable_x64(True):
            return np.asarray(jnp.mean(jax.vmap(lambda c: c.noise)(self.components)))

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.components.mask[0])
        return np.asarray(self.components.x[0])[mask], np.asarray(self.components.y[0])[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """Hyperparameters of ``num_samples`` draws (with replacement) and, for each, ``f`` at
        the training inputs from that draw's exact GP posterior."""
        x, _ = self.observed()
        total = self.components.alpha.shape[0]
        k_idx, k_f = jax.random.split(key)
        idx = np.asarray(jax.random.randint(k_idx, (num_samples,), 0, total))
        pick = jax.tree.map(lambda a: a[idx], self.components)
        with jax.enable_x64(True):
            f = jax.vmap(lambda c, k: c.posterior(x).sample(k))(
                pick, jax.random.split(k_f, num_samples))
            return {"f": np.asarray(f), "noise": np.asarray(jax.vmap(lambda c: c.noise)(pick)),
                    "lengthscale": np.asarray(jnp.exp(pick.params.log_lengthscale)),
                    "variance": np.asarray(jnp.exp(pick.params.log_variance)),
                    "mean": np.asarray(pick.params.mean)}


def condition(params: GPParams, data: GPData, kernel_cls=Matern52,
              noise_floor: float = 1e-6) -> GPFitted:
    """Cholesky factor and weights :math:`K_y^{-1} r` for given hyperparameters (pure)."""
    chol = jnp.linalg.cholesky(_gram(kernel_cls, params, data, noise_floor))
    r = jnp.where(data.mask, data.y - params.mean, 0.0)
    alpha = jsl.cho_solve((chol, True), r)
    return GPFitted(params, data.x, data.y, data.mask, alpha, chol, kernel_cls, noise_floor)


@eqx.filter_jit
def _fit_and_condition(data, key, kernel_cls, num_restarts, num_steps, priors, noise_floor,
                       log_noise0):
    params, _ = fit_params(data, key, kernel_cls=kernel_cls, num_restarts=num_restarts,
                           num_steps=num_steps, priors=priors, noise_floor=noise_floor,
                           log_noise0=log_noise0)
    return condition(params, data, kernel_cls, noise_floor)


@eqx.filter_jit
def _condition_jit(params, data, kernel_cls, noise_floor):
    return condition(params, data, kernel_cls, noise_floor)


@partial(jax.jit, static_argnames=("kernel_cls", "priors", "noise_floor"))
def _loss_and_grad(flat, data, kernel_cls, priors, noise_floor):
    d = data.x.shape[1]
    n = jnp.maximum(jnp.sum(data.mask), 1)

    def loss(f):
        p = GPParams(f[:d], f[d], f[d + 1], f[d + 2])
        val = -log_marginal_likelihood(p, data, kernel_cls, noise_floor)
        if priors:
            val = val - log_prior(p)
        return val / n

    return jax.value_and_grad(loss)(flat)


def _fit_scipy(data: GPData, key, kernel_cls, num_restarts, num_steps, priors, noise_floor,
               log_noise0=-8.0):
    """L-BFGS-B (scipy) on the jitted loss, one start after the other; best start wins."""
    from scipy.optimize import minimize as sp_minimize

    d = data.x.shape[1]
    mask = np.asarray(data.mask)
    # Same starting rule as _initial_params, drawn with NumPy (no extra compile).
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    flat0 = np.empty((num_restarts, d + 3))
    flat0[:, :d] = rng.uniform(math.log(0.05), math.log(2.0), (num_restarts, d))
    flat0[:, d] = rng.uniform(-1.0, 1.5, num_restarts)
    flat0[:, d + 1] = rng.uniform(-12.0, -4.0, num_restarts)
    flat0[:, d + 2] = np.asarray(data.y)[mask].mean()
    flat0[0, :d], flat0[0, d], flat0[0, d + 1] = math.log(0.3), 0.0, log_noise0
    box = [_LOG_LS] * d + [_LOG_VAR, _LOG_NOISE, (-10.0, 10.0)]

    def fun(f):
        v, g = _loss_and_grad(jnp.asarray(f), data, kernel_cls=kernel_cls, priors=priors,
                              noise_floor=noise_floor)
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v) or not np.all(np.isfinite(g)):
            return 1e10, np.zeros_like(f)
        return v, g

    best_v, best_f = np.inf, flat0[0]
    for f0 in flat0:
        r = sp_minimize(fun, np.clip(f0, [b[0] for b in box], [b[1] for b in box]), jac=True,
                        method="L-BFGS-B", bounds=box, options={"maxiter": num_steps})
        if np.isfinite(r.fun) and r.fun < best_v:
            best_v, best_f = r.fun, r.x
    best_f = jnp.asarray(best_f)
    return GPParams(best_f[:d], best_f[d], best_f[d + 1], best_f[d + 2])


class GP(Family):
    """Exact GP regression: ``GP(...).fit(x, y, key=key) -> GPFitted``.

    Parameters
    ----------
    kernel : {"matern52", "matern32", "matern12", "rbf"}
        ARD kernel from :mod:`probkit.kernels` (default Matern-5/2, as in BoTorch / Li et al. 2024).
    num_restarts : int
        L-BFGS starts (default 2: a fixed moderate start and a random one).
    num_steps : int
        Maximum L-BFGS iterations per start (default 100).
    priors : bool
        MAP with weak hyperpriors (default) or plain maximum marginal likelihood.
    noise_floor : float
        Smallest noise variance (default 1e-6 on the standardised scale).
    noise_init : float, optional
        Noise variance above ``noise_floor`` of the first L-BFGS start (default :math:`e^{-8}`,
        near noiseless like BO objectives; give a larger value for noisy data, whose likelihood
        is flat in the noise near zero).
    capacity : int, optional
        Pad data to this many rows (one compile while ``n <= capacity``); default: the next power
        of two >= 32.
    engine : {"map", "nuts"}
        Type-II MAP hyperparameters (:class:`GPFitted`), or NUTS draws of them under the same
        priors (:class:`GPMixtureFitted`; ``priors`` must be on).
    num_warmup, num_samples, num_chains : int
        NUTS settings (engine ``"nuts"``; defaults 500, 500, 2).
    max_draws : int
        Draws kept for prediction, evenly thinned (engine ``"nuts"``; default 32: each costs a
        Cholesky factor of the padded data in memory and a triangular solve per prediction).
    optimizer : {"scipy", "optax"}
        ``"scipy"`` (default): L-BFGS-B from :func:`scipy.optimize.minimize` on the jitted loss and
        gradient, starts one after the other (fast on CPU: few loss evaluations).
        ``"optax"``: :func:`fit_params`, ``optax.lbfgs`` with all starts ``vmap``-ed inside one
        compiled program (pure JAX; better on accelerators).
    """

    name = "gp"
    engines = {"map": "type-II MAP hyperparameters (L-BFGS), exact posterior",
               "nuts": "NUTS over the hyperparameters (probkit.inference.hmc), a mixture of "
                       "exact GP posteriors"}

    kernel: str = eqx.field(static=True, default="matern52")
    num_restarts: int = eqx.field(static=True, default=2)
    num_steps: int = eqx.field(static=True, default=100)
    priors: bool = eqx.field(static=True, default=True)
    noise_floor: float = eqx.field(static=True, default=1e-6)
    noise_init: float | None = eqx.field(static=True, default=None)
    capacity: int | None = eqx.field(static=True, default=None)
    optimizer: str = eqx.field(static=True, default="scipy")
    engine: str = eqx.field(static=True, default="map")
    num_warmup: int = eqx.field(static=True, default=500)
    num_samples: int = eqx.field(static=True, default=500)
    num_chains: int = eqx.field(static=True, default=2)
    max_draws: int = eqx.field(static=True, default=32)

    def __check_init__(self):
        check_choice("optimizer", self.optimizer, ("scipy", "optax"))
        check_choice("kernel", self.kernel, tuple(KERNELS))
        check_positive_int("num_restarts", self.num_restarts)
        check_positive_int("num_steps", self.num_steps)
        check_positive("noise_floor", self.noise_floor)
        if self.noise_init is not None:
            check_positive("noise_init", self.noise_init)
        if self.capacity is not None:
            check_positive_int("capacity", self.capacity)
        check_positive_int("num_warmup", self.num_warmup, minimum=0)
        for name in ("num_samples", "num_chains", "max_draws"):
            check_positive_int(name, getattr(self, name))
        if self.engine == "nuts" and not self.priors:
            raise ValueError("priors: engine 'nuts' samples the hyperparameters under the "
                             "priors; priors=False (maximum likelihood) has no posterior")

    def fit(self, x, y, *, key, progress_bar: bool = True) -> GPFitted | GPMixtureFitted:
        """Fit the hyperparameters to ``x`` ``(n, d)``, ``y`` ``(n,)`` and condition on the data.

        ``progress_bar``: the NUTS engine's bar; a MAP fit takes well under a second at the
        sizes an exact GP serves, so it shows none."""
        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        with jax.enable_x64(True):
            data = pad_data(x, y, self.capacity)
            kernel_cls = KERNELS[self.kernel]
            if self.engine == "nuts":
                return self._fit_nuts(data, kernel_cls, key, progress_bar)
            log_noise0 = -8.0 if self.noise_init is None else math.log(self.noise_init)
            if self.optimizer == "optax":
                return _fit_and_condition(data, key, kernel_cls, self.num_restarts,
                                          self.num_steps, self.priors, self.noise_floor,
                                          log_noise0)
            params = _fit_scipy(data, key, kernel_cls, self.num_restarts, self.num_steps,
                                self.priors, self.noise_floor, log_noise0)
            return _condition_jit(params, data, kernel_cls, self.noise_floor)

    def _fit_nuts(self, data: GPData, kernel_cls, key, progress_bar: bool) -> GPMixtureFitted:
        from probkit.inference import hmc

        res = hmc.run(gp_model, data, kernel_cls=kernel_cls, noise_floor=self.noise_floor,
                      key=key, num_warmup=self.num_warmup, num_samples=self.num_samples,
                      num_chains=self.num_chains, log_likelihood=False,
                      progress_bar=progress_bar)
        total = self.num_chains * self.num_samples
        keep = np.linspace(0, total - 1, min(self.max_draws, total)).round().astype(int)
        flat = {k: jnp.asarray(v).reshape(total, *np.shape(v)[2:])
                for k, v in res.posterior.items()}  # (chain, draw, ...) -> (draw, ...)
        draws = GPParams(*(flat[name][keep] for name in GPParams._fields))
        components = _condition_draws(draws, data, kernel_cls, self.noise_floor)
        return GPMixtureFitted(components,
                               jnp.asarray(int(np.sum(res.sample_stats["diverging"]))))


@eqx.filter_jit
def _condition_draws(draws, data, kernel_cls, noise_floor):
    return jax.vmap(lambda p: condition(p, data, kernel_cls, noise_floor))(draws)
