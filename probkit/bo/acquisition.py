r"""Acquisition functions and their optimisation over the unit cube (minimisation convention).

All acquisitions are *maximised*; they read the posterior of a minimisation problem, so the
improvement of a value :math:`f` over the incumbent :math:`y^*` is :math:`(y^* - f)_+`.

* :class:`LogEI` — analytic log expected improvement in the numerically stable form of Ament et al.
  (2023, "Unexpected improvements to expected improvement for Bayesian optimization", NeurIPS,
  eq. 9): with :math:`z = (y^* - \mu)/\sigma`,
  :math:`\mathrm{EI} = \sigma h(z)`, :math:`h(z) = \varphi(z) + z\Phi(z)`, and

  .. math::
      \log h(z) = \begin{cases}
        \log(\varphi(z) + z\Phi(z)) & z > -1\\
        -z^2/2 - c_1 + \operatorname{log1mexp}(\log(\operatorname{erfcx}(-z/\sqrt2)|z|) + c_2)
            & -1/\sqrt{\epsilon} < z \le -1\\
        -z^2/2 - c_1 - 2\log|z| & z \le -1/\sqrt{\epsilon}
      \end{cases}

  with :math:`c_1 = \log(2\pi)/2`, :math:`c_2 = \log(\pi/2)/2`; finite (with useful gradients)
  where EI itself underflows to 0.
* :class:`UCB` — (lower) confidence bound :math:`-(\mu - \sqrt\beta\,\sigma)`.
* :class:`QLogEI` — Monte Carlo batch log-EI over ``q`` points from joint posterior samples
  (Ament et al. 2023, sec. 4): :math:`\log \frac1S\sum_s \operatorname{smax}_j
  \tau_0\,\mathrm{softplus}((y^*-f_{sj})/\tau_0)` with a log-sum-exp smooth max of temperature
  :math:`\tau_{\max}`; the base samples are fixed during one optimisation (common random numbers).
* :class:`Thompson` — Thompson sampling: a joint posterior draw over a candidate set (Sobol-like
  uniform points plus perturbations of the incumbent), minimised over the set; ``q`` independent
  draws give a batch.

:func:`optimize_acquisition` maximises an acquisition over :math:`[0,1]^{q\times d}`: random raw
candidates (a quarter of them Gaussian perturbations of the incumbent), the best ``num_restarts``
refined by projected Adam with a cosine step-size decay, all in one ``equinox.filter_jit`` that
takes the fitted surrogate as an argument (its arrays traced, anything else static), so it
compiles once per (surrogate shape, ``q``, ``d``).

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.bo.acquisition import log_h
>>> bool(jnp.isfinite(log_h(jnp.array(-100.0))))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.scipy.stats import norm

from probkit._checks import (
    as_array,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
)
from probkit.special import log_ei, log_h

__all__ = ["log_h", "log_ei", "ei", "LogEI", "UCB", "QLogEI", "QUCB", "Thompson",
           "AcquisitionResult", "check_acquisition", "check_options", "optimize_acquisition"]


def ei(mean: Array, variance: Array, best: Array) -> Array:
    """Plain expected improvement :math:`\\sigma h(z)` (underflows to 0 for :math:`z \\ll 0`)."""
    sigma = jnp.sqrt(variance)
    z = (best - mean) / sigma
    return sigma * (norm.pdf(z) + z * norm.cdf(z))


def _log_softplus(x: Array) -> Array:
    """:math:`\\log\\log(1+e^x)`, equal to :math:`x` to double precision for :math:`x < -30`."""
    safe = jnp.where(x < -30.0, 0.0, x)
    return jnp.where(x < -30.0, x, jnp.log(jax.nn.softplus(safe)))


class LogEI(eqx.Module):
    """Analytic log expected improvement (one point; ``q > 1`` uses :class:`QLogEI`).

    Gaussian log-EI from the posterior's ``mean`` and ``variance``, unless the posterior
    computes its own exact value with a method ``log_expected_improvement(best)`` (a PFN's bar
    distribution does: :meth:`probkit.inference.pfn.BarPrediction.log_expected_improvement`).
    """

    kind = "analytic"

    def __call__(self, posterior, best: Array, key: Array) -> Array:
        exact = getattr(posterior, "log_expected_improvement", None)
        if exact is not None:
            return jnp.sum(exact(best))
        return jnp.sum(log_ei(posterior.mean, posterior.variance, best))

    def batch(self) -> QLogEI:
        return QLogEI()


class UCB(eqx.Module):
    """Lower confidence bound for minimisation, maximised as :math:`-\\mu + \\sqrt\\beta\\,\\sigma`.

    Parameters
    ----------
    beta : float
        Exploration weight (default 2.0; Srinivas et al. 2010).
    """

    beta: float = 2.0
    kind = "analytic"

    def __check_init__(self):
        check_positive("beta", self.beta)

    def __call__(self, posterior, best: Array, key: Array) -> Array:
        return jnp.sum(-posterior.mean + jnp.sqrt(self.beta * posterior.variance))

    def batch(self) -> QUCB:
        return QUCB(beta=self.beta)


class QLogEI(eqx.Module):
    """Monte Carlo batch log-EI from joint samples (qLogEI, Ament et al. 2023).

    Parameters
    ----------
    num_samples : int
        Posterior samples ``S`` (default 128).
    tau_relu, tau_max : float
        Temperatures of the smoothed improvement and of the smooth max over the batch
        (defaults 1e-6 and 1e-2, as in BoTorch).
    """

    num_samples: int = eqx.field(static=True, default=128)
    tau_relu: float = 1e-6
    tau_max: float = 1e-2
    kind = "mc"

    def __check_init__(self):
        check_positive_int("num_samples", self.num_samples)
        check_positive("tau_relu", self.tau_relu)
        check_positive("tau_max", self.tau_max)

    def __call__(self, posterior, best: Array, key: Array) -> Array:
        f = posterior.sample(key, self.num_samples)  # (S, q)
        log_imp = math.log(self.tau_relu) + _log_softplus((best - f) / self.tau_relu)
        smax = self.tau_max * jax.nn.logsumexp(log_imp / self.tau_max, axis=-1)
        return jax.nn.logsumexp(smax) - math.log(self.num_samples)

    def batch(self) -> QLogEI:
        return self


class QUCB(eqx.Module):
    """Monte Carlo batch UCB (Wilson et al. 2017): :math:`\\frac1S\\sum_s\\max_j(-\\mu_j +
    \\sqrt{\\beta\\pi/2}\\,|f_{sj}-\\mu_j|)`."""

    beta: float = 2.0
    num_samples: int = eqx.field(static=True, default=128)
    kind = "mc"

    def __check_init__(self):
        check_positive("beta", self.beta)
        check_positive_int("num_samples", self.num_samples)

    def __call__(self, posterior, best: Array, key: Array) -> Array:
        mu = posterior.mean
        f = posterior.sample(key, self.num_samples)
        vals = -mu + math.sqrt(self.beta * math.pi / 2.0) * jnp.abs(f - mu)
        return jnp.mean(jnp.max(vals, axis=-1))

    def batch(self) -> QUCB:
        return self


class Thompson(eqx.Module):
    """Thompson sampling over a random candidate set of ``num_candidates`` points.

    The draw is joint over the candidate set (``posterior.sample``), so its cost is that of one
    joint posterior over ``num_candidates`` points (a Cholesky factorisation for a GP).
    """

    num_candidates: int = eqx.field(static=True, default=1024)
    kind = "thompson"

    def __check_init__(self):
        check_positive_int("num_candidates", self.num_candidates)

    def batch(self) -> Thompson:
        return self


#: The ``kind`` of every acquisition :func:`optimize_acquisition` knows how to maximise.
_KINDS = ("analytic", "mc", "thompson")


def check_acquisition(acquisition):
    """Raise ``ValueError`` naming ``acquisition`` unless it is one :func:`optimize_acquisition`
    can maximise (its ``kind`` is known); return it."""
    if getattr(acquisition, "kind", None) not in _KINDS:
        raise ValueError("acquisition: expected LogEI, UCB, QLogEI, QUCB or Thompson, got "
                         f"{type(acquisition).__name__}")
    return acquisition


#: The tuning options of :func:`optimize_acquisition` and how each is checked.
_OPTIONS = {"num_raw": "int", "num_restarts": "int", "num_steps": "int", "lr": "positive",
            "local_scale": "non-negative"}


def check_options(options: dict, *, prefix: str = "") -> dict:
    """Check tuning options of :func:`optimize_acquisition` (``num_raw``, ``num_restarts``,
    ``num_steps``: integers >= 1; ``lr`` > 0; ``local_scale`` >= 0); ``prefix`` names the dict
    they came in (``"acq_options"`` for :class:`probkit.bo.BayesOpt`). Returns ``options``."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"{prefix or 'options'}: unknown option(s) {unknown}; expected some of "
                         f"{list(_OPTIONS)}")
    for name, value in options.items():
        label = f"{prefix}['{name}']" if prefix else name
        if _OPTIONS[name] == "int":
            check_positive_int(label, value)
        else:
            check_positive(label, value, allow_zero=_OPTIONS[name] == "non-negative")
    return options


class AcquisitionResult(NamedTuple):
    """Maximiser ``x`` (``(q, d)``, unit cube) and the acquisition value there."""

    x: Array
    value: Array


def _raw_candidates(key, num, q, d, x_best, local_scale):
    k1, k2 = jax.random.split(key)
    uniform = jax.random.uniform(k1, (num, q, d), dtype=x_best.dtype)
    n_local = num // 4
    local = x_best + local_scale * jax.random.normal(k2, (n_local, q, d), dtype=x_best.dtype)
    return uniform.at[:n_local].set(jnp.clip(local, 0.0, 1.0))


@eqx.filter_jit
def _optimize(acq, fitted, best, x_best, key, q, num_raw, num_restarts, num_steps, lr,
              local_scale):
    d = x_best.shape[-1]
    k_raw, k_mc = jax.random.split(key)
    if acq.kind == "thompson":
        cand = _raw_candidates(k_raw, acq.num_candidates, 1, d, x_best, local_scale)[:, 0]
        draws = fitted.posterior(cand).sample(k_mc, q)  # (q, C)
        idx = jnp.argmin(draws, axis=-1)
        return AcquisitionResult(cand[idx], -jnp.min(draws, axis=-1).sum())

    def value(x):  # x: (q, d)
        return acq(fitted.posterior(x), best, k_mc)

    raw = _raw_candidates(k_raw, num_raw, q, d, x_best, local_scale)
    raw_vals = jax.vmap(value)(raw)
    raw_vals = jnp.where(jnp.isfinite(raw_vals), raw_vals, -jnp.inf)
    _, top = jax.lax.top_k(raw_vals, num_restarts)
    starts = raw[top]

    sched = optax.cosine_decay_schedule(lr, num_steps, alpha=0.02)
    opt = optax.adam(sched)
    neg_grad = jax.grad(lambda x: -value(x))

    def run_one(x0):
        def step(carry, _):
            x, state = carry
            g = neg_grad(x)
            g = jnp.where(jnp.isfinite(g), g, 0.0)
            upd, state = opt.update(g, state, x)
            return (jnp.clip(optax.apply_updates(x, upd), 0.0, 1.0), state), None

        (x, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None, length=num_steps)
        return x

    xs = jax.vmap(run_one)(starts)
    vals = jax.vmap(value)(xs)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    # Keep the best raw point too, in case gradient steps made every start worse.
    xs = jnp.concatenate([xs, raw[top[:1]]])
    vals = jnp.concatenate([vals, raw_vals[top[:1]]])
    i = jnp.argmax(vals)
    return AcquisitionResult(xs[i], vals[i])


def optimize_acquisition(acquisition, fitted, best, x_best, *, key, q: int = 1,
                         num_raw: int = 512, num_restarts: int = 8, num_steps: int = 100,
                         lr: float = 0.02, local_scale: float = 0.05) -> AcquisitionResult:
    """Maximise ``acquisition`` over ``[0, 1]^(q x d)`` by multi-start projected Adam.

    Parameters
    ----------
    acquisition : LogEI, UCB, QLogEI, QUCB or Thompson
        For ``q > 1`` an analytic acquisition is replaced by its batch form (``.batch()``).
    fitted : Fitted
        The conditioned surrogate (see :mod:`probkit.bo.protocol`), inputs in the unit cube.
    best : float
        Incumbent (lowest observed standardised value).
    x_best : Array of shape (d,)
        Incumbent location in the unit cube; a quarter of the raw candidates perturb it.
    key : jax.Array
        PRNG key (raw candidates and the fixed Monte Carlo base samples).
    q : int
        Batch size.
    num_raw, num_restarts, num_steps, lr, local_scale
        Raw candidates, gradient starts, Adam steps, peak step size, incumbent perturbation scale.

    Returns
    -------
    AcquisitionResult
        ``x`` of shape ``(q, d)`` and the acquisition value.

    Raises
    ------
    ValueError
        Naming the argument, before anything is compiled: an ``acquisition`` that is none of
        the above, a ``fitted`` without ``posterior``, a non-finite ``best``, an ``x_best`` that
        is not a finite point of the unit cube, a non-key ``key``, ``q``, ``num_raw``,
        ``num_restarts`` or ``num_steps`` below 1, a non-positive ``lr`` or a negative
        ``local_scale``.
    """
    check_acquisition(acquisition)
    if not callable(getattr(fitted, "posterior", None)):
        raise ValueError("fitted: expected a fitted surrogate with posterior(x) (see "
                         f"probkit.bo.Fitted), got {type(fitted).__name__}")
    best_arr = as_array("best", best, ndim=0)
    if not np.isfinite(best_arr):
        raise ValueError(f"best: must be finite, got {float(best_arr)}")
    xb = check_finite("x_best", as_array("x_best", x_best, ndim=1))
    if np.any((xb < -1e-9) | (xb > 1.0 + 1e-9)):
        raise ValueError(f"x_best: must lie in the unit cube [0, 1]^d, got {xb.tolist()}")
    key = check_key("key", key)
    q = check_positive_int("q", q)
    check_options({"num_raw": num_raw, "num_restarts": num_restarts, "num_steps": num_steps,
                   "lr": lr, "local_scale": local_scale})
    if q > 1 and acquisition.kind == "analytic":
        acquisition = acquisition.batch()
    num_restarts = min(num_restarts, num_raw)  # checked by check_options
    with jax.enable_x64(True):
        x_best = jnp.asarray(xb, dtype=jnp.float64).reshape(1, 1, -1)[0]
        best = jnp.asarray(best, dtype=jnp.float64)
        return _optimize(acquisition, fitted, best, x_best, key, q, num_raw, num_restarts,
                         num_steps, lr, local_scale)

