r"""NumPyro models of the scale-mixture NNGP and the checks and kernel helpers its families share.

Model (Lee, Yun, Yang & Lee, ICLR 2022). With a kernel :math:`K` (the NNGP kernel of
:class:`probkit.kernels.NNGP` with readout variance 1 by default) and a random scale
:math:`s^2 \sim H`,

.. math::

    s^2 \sim H, \qquad f \mid s^2 \sim \mathcal{GP}(0, s^2 K), \qquad
    y_i \mid f, s^2 \sim \mathcal N(f(x_i), s^2\varepsilon),

so that :math:`y \mid s^2 \sim \mathcal N(0, s^2 (K + \varepsilon I))`.

* :func:`scale_mixture_model` — the kernel fixed: :math:`s^2` (and optionally
  :math:`\varepsilon`) on the rotated data of one eigendecomposition, :math:`O(n)` per
  log-density evaluation (what the ``"hmc"`` engine of :class:`probkit.models.nngp.Regressor`
  samples);
* :func:`nngp_model` — the generative model with random kernel hyperparameters (a Cholesky
  factorisation per evaluation).

Both are plain NumPyro models: NumPyro's own NUTS or SVI run on them too.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

from probkit.kernels import NNGP, Kernel, Stationary, as_2d
from probkit.models.nngp.spectral import Spectral

__all__ = ["scale_mixture_model", "nngp_model", "check_scale_prior"]


def scale_mixture_model(sp: Spectral, *, scale_prior: dist.Distribution, noise=None,
                        noise_prior: dist.Distribution | None = None) -> None:
    """NumPyro model for :math:`s^2` (and optionally :math:`\\varepsilon`) with the kernel fixed.

    The rotated data :math:`\\tilde y = U^\\top y` are independent,
    :math:`\\tilde y_i \\sim \\mathcal N(0, s^2(\\lambda_i + \\varepsilon))`, so every
    log-density evaluation (every HMC step) is O(n). Sites: ``s2``, ``noise`` (if
    ``noise_prior``), observed ``y_rot``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> from probkit.kernels import NNGP
    >>> from probkit.models.nngp import scale_mixture_model, spectral
    >>> from probkit.inference import hmc
    >>> with jax.enable_x64(True):
    ...     x = jnp.linspace(-2, 2, 30)[:, None]; y = jnp.sin(x[:, 0])
    ...     sp = spectral(NNGP(2)(x, x), y)
    ...     res = hmc.run(scale_mixture_model, sp, scale_prior=dist.Gamma(2.0, 2.0), noise=0.01,
    ...                   key=jax.random.key(0), num_warmup=200, num_samples=200,
    ...                   num_chains=1, progress_bar=False)
    >>> res.posterior["s2"].shape
    (1, 200)
    """
    s2 = numpyro.sample("s2", scale_prior)
    if noise_prior is not None:
        noise = numpyro.sample("noise", noise_prior)
    elif noise is None:
        raise ValueError("noise: give a fixed noise or a noise_prior")
    sd = jnp.sqrt(s2 * (sp.evals + noise))
    numpyro.sample("y_rot", dist.Normal(0.0, sd), obs=sp.y_rot)


def nngp_model(x: Array, y: Array | None = None, *, depth: int = 3, activation: str = "relu",
               scale_prior: dist.Distribution | None = None,
               weight_variance_prior: dist.Distribution | None = None,
               bias_variance_prior: dist.Distribution | None = None,
               noise_prior: dist.Distribution | None = None, weight_variance=2.0,
               bias_variance=0.1, noise=0.1, jitter: float = 1e-8) -> None:
    """Generative NumPyro model of the scale-mixture NNGP with random kernel hyperparameters.

    ``s2 ~ scale_prior`` (1 if ``None``), optionally ``weight_variance``, ``bias_variance``,
    ``noise`` from their priors (fixed values otherwise), ``f ~ GP(0, s2 K)`` and
    ``y ~ N(f, s2 noise)`` with ``f`` integrated out:
    ``y ~ MultivariateNormal(0, s2 (K + noise I))``. Sampling kernel hyperparameters changes
    ``K``, so each step costs a Cholesky factorisation, O(n^3); with the kernel fixed use
    :func:`scale_mixture_model` (O(n) per step). Run inside ``jax.enable_x64(True)``.
    """
    x = as_2d(x)
    s2 = 1.0 if scale_prior is None else numpyro.sample("s2", scale_prior)
    sw2 = (weight_variance if weight_variance_prior is None
           else numpyro.sample("weight_variance", weight_variance_prior))
    sb2 = (bias_variance if bias_variance_prior is None
           else numpyro.sample("bias_variance", bias_variance_prior))
    eps = noise if noise_prior is None else numpyro.sample("noise", noise_prior)
    k = NNGP(depth, activation, sw2, sb2, 1.0)
    gram = k(x, x)
    n = x.shape[0]
    cov = s2 * (gram + (eps + jitter) * jnp.eye(n, dtype=gram.dtype))
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(n, gram.dtype), cov), obs=y)


def check_scale_prior(name: str, prior) -> None:
    """``ValueError`` naming ``name`` unless ``prior`` is ``None`` or a continuous NumPyro
    distribution supported on :math:`(0, \\infty)` with valid parameters."""
    if prior is None:
        return
    if not isinstance(prior, dist.Distribution):
        raise ValueError(f"{name}: expected a numpyro Distribution or None, got "
                         f"{type(prior).__name__}")
    sup = prior.support
    ok = (isinstance(sup, constraints._GreaterThan) and not sup.is_discrete
          and float(np.asarray(sup.lower_bound)) >= 0.0 and prior.event_shape == ()
          and prior.batch_shape == ())
    if not ok:
        raise ValueError(f"{name}: the scale prior must be a scalar continuous distribution on "
                         f"(0, inf); {type(prior).__name__} has support {sup}")
    for arg, con in prior.arg_constraints.items():
        value = getattr(prior, arg, None)
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        if not bool(np.all(np.asarray(con(jnp.asarray(value))))):
            raise ValueError(f"{name}: parameter {arg}={np.asarray(value)} violates {con}")


def _kernel_trainable(kernel: Kernel):
    """Filter spec: every array leaf except the amplitude (it lives in the scale s2)."""
    spec = jax.tree_util.tree_map(eqx.is_inexact_array, kernel)
    if isinstance(kernel, NNGP):
        spec = eqx.tree_at(lambda k: k.last_weight_variance, spec, False)
    elif isinstance(kernel, Stationary):
        spec = eqx.tree_at(lambda k: k.variance, spec, False)
    return spec


def _unit_amplitude(kernel: Kernel) -> Kernel:
    if isinstance(kernel, NNGP):
        return eqx.tree_at(lambda k: k.last_weight_variance, kernel, jnp.asarray(1.0))
    if isinstance(kernel, Stationary):
        return eqx.tree_at(lambda k: k.variance, kernel, jnp.asarray(1.0))
    return kernel
