r"""Wasserstein-1 matching of a BNN weight prior to a target GP prior in function space.

The hyperparameters :math:`\psi` of a weight prior are chosen by

.. math::

    \psi^\star = \arg\min_\psi W_1\big(p_{GP}(f(X_M)),\; p_{\psi}(f(X_M))\big),
    \qquad
    W_1(p, q) = \sup_{\lVert\phi\rVert_L \le 1}
    \mathbb{E}_{q}[\phi(f)] - \mathbb{E}_{p}[\phi(f)]

(Kantorovich-Rubinstein duality), where :math:`X_M` is a random set of :math:`M` measurement
points (by default 70% training inputs and 30% uniform in their bounding box). The dual is
estimated with a critic :math:`\phi: \mathbb{R}^M \to \mathbb{R}` (an :class:`equinox.nn.MLP`,
``M -> 200 -> 200 -> 1``, softplus) trained, freshly initialised at every outer iteration, by
minimising

.. math::

    -\big(\overline{\phi(f_{BNN})} - \overline{\phi(f_{GP})}\big)
    + \lambda\, \overline{(\lVert\nabla\phi(\hat f)\rVert - 1)^2},
    \qquad \hat f = \epsilon f_{BNN} + (1 - \epsilon) f_{GP},\ \epsilon \sim U(0, 1)

(gradient penalty of Gulrajani et al. 2017) with Adam (the official code: Adagrad; see
:func:`fit_critic`). The prior step then descends
:math:`\overline{\phi(f_{BNN}(\psi))} - \overline{\phi(f_{GP})}` in :math:`\psi` with RMSprop,
differentiating reparameterised BNN draws. The outer loop is
:func:`probkit.inference.optimize.run` (the package's one training loop); the inner critic loop,
which runs inside the outer loss, is one ``lax.scan``. Target functions are drawn by
:class:`probkit.priors.GPPrior`.

:func:`marginal_wasserstein` and :func:`sliced_wasserstein` compute exact 1-D Wasserstein
distances between samples, an independent check of the critic's estimate.

Reference: Tran, Rossi, Milios, Filippone, JMLR 23 (2022), Sec. 3-4 and Algorithm 1.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.kernels import RBF
>>> from probkit.models.fbnn import GaussianPrior, GPTarget, match_prior, mlp_template
>>> net = mlp_template(1, (20,), "tanh")
>>> x = jnp.linspace(-3, 3, 20)[:, None]
>>> fit = match_prior(GaussianPrior.init(2), net, GPTarget(RBF(1.0, 1.0)), x,
...                   key=jax.random.key(0), num_steps=3, num_critic_steps=5,
...                   num_samples=16, measurement_points=x, progress_bar=False)
>>> fit.distances.shape
(3,)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax import Array

from probkit._checks import (
    as_array,
    check_choice,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
)
from probkit.inference import optimize
from probkit.kernels import Kernel, Periodic, Stationary
from probkit.models.fbnn.network import MLP
from probkit.priors import GPPrior

__all__ = ["GPTarget", "check_kernel", "critic_init", "fit_critic", "critic_wasserstein",
           "measurement_set", "sample_functions", "PriorFit", "MatchingLoss", "match_prior",
           "marginal_wasserstein", "sliced_wasserstein"]

_POSITIVE = ("lengthscale", "variance", "weight_variance")
_NONNEGATIVE = ("bias_variance",)


def check_kernel(kernel, name: str = "kernel") -> Kernel:
    """Raise ``ValueError`` naming ``name`` unless ``kernel`` has valid hyperparameters."""
    if not isinstance(kernel, Kernel):
        raise ValueError(f"{name}: expected a probkit.kernels.Kernel, got {type(kernel).__name__}")
    for attr in _POSITIVE + _NONNEGATIVE:
        if hasattr(kernel, attr):
            value = getattr(kernel, attr)
            if isinstance(value, jax.core.Tracer):
                continue
            try:
                check_positive(f"{name}.{attr}", np.asarray(value),
                               allow_zero=attr in _NONNEGATIVE)
            except ValueError as err:
                raise ValueError(f"{name}: invalid hyperparameter ({err})") from None
    return kernel


def _content(value):
    """A hashable description of a hyperparameter: the number, or a distribution's class and
    parameters (so equal targets built apart compare equal)."""
    if isinstance(value, dist.Distribution):
        return (type(value).__qualname__,) + tuple(
            (k, tuple(np.ravel(np.asarray(getattr(value, k))).tolist()))
            for k in sorted(value.arg_constraints))
    return value


_GP_PRIORS: dict = {}


def _gp_prior(kernel_cls, hyper: dict, noise: float, input_dim: int) -> GPPrior:
    """One :class:`GPPrior` per content: targets that describe the same GP share it, so the
    compiled matching step (which treats it as a constant) is reused."""
    key = (kernel_cls, tuple((k, _content(v)) for k, v in sorted(hyper.items())), noise,
           input_dim)
    if key not in _GP_PRIORS:
        _GP_PRIORS[key] = GPPrior(kernel_cls, **hyper, noise=noise, input_dim=input_dim)
    return _GP_PRIORS[key]


class GPTarget(eqx.Module):
    r"""A GP prior :math:`f \sim GP(0, k)` to match, optionally with hyperpriors.

    Function draws come from :class:`probkit.priors.GPPrior` (the package's GP function
    sampler). With ``hyperpriors`` (a dict mapping ``"lengthscale"``, ``"variance"`` or
    ``"period"`` to NumPyro distributions) the hyperparameters are re-drawn for every function
    sample, so the target is the hierarchical GP (as in the paper's UCI experiments; a
    lengthscale hyperprior is drawn once per input dimension of the kernel's lengthscale).

    Parameters
    ----------
    kernel : probkit.kernels.Kernel
        A stationary kernel (RBF, Matern) or ``Periodic``; its lengthscale is a scalar or one
        value per input dimension (ARD; a lengthscale hyperprior replaces it by one draw per
        dimension).
    hyperpriors : dict, optional
    noise_var : float
        Variance of white noise added to the draws (0: latent function).
    jitter : float
        Diagonal jitter relative to the kernel variance (added to ``noise_var``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.kernels import RBF
    >>> from probkit.models.fbnn import GPTarget
    >>> GPTarget(RBF(0.6)).sample(jax.random.key(0), jnp.zeros((4, 1)), 7).shape
    (7, 4)
    """

    kernel: Kernel
    hyperpriors: dict | None
    noise_var: float = eqx.field(static=True)
    jitter: float = eqx.field(static=True)
    prior: GPPrior = eqx.field(static=True)

    def __init__(self, kernel: Kernel, hyperpriors: dict | None = None, noise_var: float = 0.0,
                 jitter: float = 1e-4):
        check_kernel(kernel)
        if not isinstance(kernel, Stationary | Periodic):
            raise ValueError(f"kernel: expected a stationary or periodic kernel with a "
                             f"lengthscale and a variance, got {type(kernel).__name__}")
        names = ("lengthscale", "variance") + (("period",) if isinstance(kernel, Periodic)
                                               else ())
        for attr in hyperpriors or {}:
            if attr not in names:
                raise ValueError(f"hyperpriors: kernel has no hyperparameter {attr!r}")
        check_positive("noise_var", noise_var, allow_zero=True)
        check_positive("jitter", jitter, allow_zero=True)
        ls = np.ravel(np.asarray(kernel.lengthscale, dtype=np.float64))
        hyper = {nm: (hyperpriors or {}).get(nm, float(np.ravel(getattr(kernel, nm))[0]))
                 for nm in names}
        if "lengthscale" not in (hyperpriors or {}) and not np.all(ls == ls[0]):
            hyper["lengthscale"] = tuple(ls.tolist())            # ARD
        base_var = float(np.ravel(np.asarray(kernel.variance))[0])
        self.kernel = kernel
        self.hyperpriors = hyperpriors
        self.noise_var = float(noise_var)
        self.jitter = float(jitter)
        self.prior = _gp_prior(type(kernel), hyper, self.noise_var + self.jitter * base_var,
                               int(ls.size))

    def sample(self, key: Array, x: Array, num: int) -> Array:
        """``num`` function draws at ``x`` ``(M, d)``: shape ``(num, M)``."""
        x = jnp.asarray(x)
        return self.prior.sample_at(key, jnp.broadcast_to(x, (num,) + x.shape)).y


# --- critic ---------------------------------------------------------------------------------


def critic_init(key: Array, in_dim: int, width: int = 200, depth: int = 2) -> eqx.nn.MLP:
    """The critic :math:`\\phi: R^M \\to R`, an :class:`equinox.nn.MLP` (softplus, ``depth``
    hidden layers of ``width``) with Xavier-normal weights and N(0, 1) biases (as in the
    official code)."""
    mlp = eqx.nn.MLP(in_dim, 1, width, depth, activation=jax.nn.softplus, key=key)
    keys = jax.random.split(key, 2 * len(mlp.layers))
    layers = []
    for i, layer in enumerate(mlp.layers):
        a, b = layer.in_features, layer.out_features
        std = math.sqrt(2.0 / (a + b))
        w = (std * jax.random.normal(keys[2 * i], (a, b))).T
        layers.append(eqx.tree_at(lambda lin: (lin.weight, lin.bias), layer,
                                  (w, jax.random.normal(keys[2 * i + 1], (b,)))))
    return eqx.tree_at(lambda m: m.layers, mlp, tuple(layers))


def _phi(critic: eqx.nn.MLP, f: Array) -> Array:
    """Critic values of a bank of function vectors ``(n, M)``: ``(n,)``."""
    return jax.vmap(critic)(f)[:, 0]


def _critic_loss(critic, f_bnn, f_gp, eps, penalty):
    gap = jnp.mean(_phi(critic, f_bnn)) - jnp.mean(_phi(critic, f_gp))
    fhat = eps[:, None] * f_bnn + (1.0 - eps[:, None]) * f_gp
    g = jax.vmap(jax.grad(lambda f: critic(f)[0]))(fhat)
    norm = jnp.sqrt(jnp.sum(g**2, axis=-1) + 1e-12)
    return -gap + penalty * jnp.mean((norm - 1.0) ** 2)


_CRITIC_OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad}


def fit_critic(key: Array, f_bnn: Array, f_gp: Array, *, num_steps: int,
               learning_rate: float = 0.01, penalty: float = 10.0, width: int = 200,
               depth: int = 2, optimizer: str = "adam") -> eqx.nn.MLP:
    """Train a freshly initialised critic on two sample banks ``(n, M)``.

    One ``lax.scan`` of optax steps: the critic is trained inside every outer step of
    :func:`match_prior`, i.e. inside the loss that :func:`probkit.inference.optimize.run`
    differentiates, where that (host-driven) loop cannot run. ``optimizer`` is ``"adam"``
    (default) or ``"adagrad"`` (the official code's choice, with ``learning_rate=0.02``); from a
    fresh initialisation Adam reaches the same critic value in about a quarter of the steps,
    which is what makes the matching affordable on a CPU.
    """
    k_init, k_loop = jax.random.split(key)
    params, static = eqx.partition(critic_init(k_init, f_bnn.shape[-1], width, depth),
                                   eqx.is_array)
    opt = _CRITIC_OPTIMIZERS[optimizer](learning_rate)

    def step(carry, k):
        p, s = carry
        eps = jax.random.uniform(k, (f_bnn.shape[0],), dtype=f_bnn.dtype)
        g = jax.grad(lambda q: _critic_loss(eqx.combine(q, static), f_bnn, f_gp, eps,
                                            penalty))(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)),
                                  jax.random.split(k_loop, num_steps))
    return eqx.combine(params, static)


def critic_wasserstein(key: Array, a: Array, b: Array, *, num_steps: int = 500,
                       learning_rate: float = 0.01, penalty: float = 10.0,
                       optimizer: str = "adam") -> Array:
    r"""Critic estimate of :math:`W_1` between sample sets ``a`` and ``b`` of shape ``(n, M)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from probkit.models.fbnn import critic_wasserstein
    >>> a = jax.random.normal(jax.random.key(0), (256, 2))
    >>> float(critic_wasserstein(jax.random.key(1), a, a + 1.0, num_steps=200)) > 1.0
    True
    """
    critic = _fit_critic_jit(key, a, b, num_steps=num_steps, learning_rate=learning_rate,
                             penalty=penalty, optimizer=optimizer)
    return jnp.mean(_phi(critic, a)) - jnp.mean(_phi(critic, b))


_fit_critic_jit = eqx.filter_jit(fit_critic)


# --- exact 1-D distances (independent checks) ---------------------------------------------


def marginal_wasserstein(a: Array, b: Array) -> Array:
    r"""Mean over points of the exact 1-D :math:`W_1` between the empirical marginals.

    For equal sample sizes :math:`W_1 = \frac1n \sum_i |a_{(i)} - b_{(i)}|` (sorted samples).
    ``a``, ``b``: ``(n, M)``; returns a scalar.
    """
    return jnp.mean(jnp.abs(jnp.sort(a, axis=0) - jnp.sort(b, axis=0)))


def sliced_wasserstein(key: Array, a: Array, b: Array, num_projections: int = 256) -> Array:
    r"""Sliced :math:`W_1`: mean over random unit directions :math:`u` of
    :math:`W_1(u^\top a, u^\top b)`, computed exactly by sorting."""
    u = jax.random.normal(key, (a.shape[-1], num_projections), dtype=a.dtype)
    u = u / jnp.linalg.norm(u, axis=0)
    return marginal_wasserstein(a @ u, b @ u)


# --- the matching loop ----------------------------------------------------------------------


def measurement_set(key: Array, x: Array, num_points: int, real_ratio: float = 0.7,
                    lower: Array | None = None, upper: Array | None = None) -> Array:
    """``round(real_ratio * num_points)`` rows of ``x`` plus uniform points in its bounding box."""
    n_real = int(round(real_ratio * num_points))
    k1, k2 = jax.random.split(key)
    lo = jnp.min(x, axis=0) if lower is None else lower
    hi = jnp.max(x, axis=0) if upper is None else upper
    idx = jax.random.choice(k1, x.shape[0], (n_real,), replace=n_real > x.shape[0])
    unif = jax.random.uniform(k2, (num_points - n_real, x.shape[1]), dtype=x.dtype)
    return jnp.concatenate([x[idx], lo + (hi - lo) * unif], axis=0)


def sample_functions(key: Array, prior, template: MLP, x: Array, num: int) -> Array:
    """``num`` reparameterised prior function draws at ``x``: ``(num, n)``."""
    def one(k):
        net, _ = prior.sample(k, template)
        return net(x)

    return jax.vmap(one)(jax.random.split(key, num))


class PriorFit(NamedTuple):
    """Result of :func:`match_prior`: the matched ``prior``, the distance curve (the critic's
    :math:`W_1` estimate per outer step, before its update) and the ``settings``."""

    prior: object
    distances: np.ndarray
    settings: dict


class MatchingLoss(eqx.Module):
    r"""The loss of one outer step of :func:`match_prior`, ``loss(prior, key, x, fixed_points)``.

    Draws a measurement set (or takes ``fixed_points``), GP and BNN function draws, trains a
    fresh critic on them (:func:`fit_critic`, the BNN draws held fixed), and returns
    :math:`\overline{\phi(f_{BNN}(\psi))} - \overline{\phi(f_{GP})}`, whose gradient in the
    prior's hyperparameters :math:`\psi` flows through the reparameterised BNN draws only. A
    module of static settings, so refits with the same settings reuse the compiled step.
    """

    template: MLP
    target: GPTarget
    num_samples: int = eqx.field(static=True)
    num_points: int = eqx.field(static=True)
    real_ratio: float = eqx.field(static=True)
    num_critic_steps: int = eqx.field(static=True)
    critic_learning_rate: float = eqx.field(static=True)
    penalty: float = eqx.field(static=True)
    critic_optimizer: str = eqx.field(static=True)

    def __call__(self, prior, key, x, fixed_points):
        k_m, k_gp, k_bnn, k_c = jax.random.split(key, 4)
        if fixed_points is None:
            xm = measurement_set(k_m, x, self.num_points, self.real_ratio)
        else:
            xm = fixed_points
        f_gp = self.target.sample(k_gp, xm, self.num_samples)
        f_bnn = sample_functions(k_bnn, prior, self.template, xm, self.num_samples)
        critic = fit_critic(k_c, jax.lax.stop_gradient(f_bnn), f_gp,
                            num_steps=self.num_critic_steps,
                            learning_rate=self.critic_learning_rate, penalty=self.penalty,
                            optimizer=self.critic_optimizer)
        return jnp.mean(_phi(critic, f_bnn)) - jnp.mean(_phi(critic, f_gp))


@functools.lru_cache(maxsize=1)
def _rmsprop():
    # RMSprop's direction; a non-finite prior gradient (e.g. an extreme inverse-gamma draw)
    # skips that update. Built once, so the compiled step is reused.
    return optax.apply_if_finite(optax.scale_by_rms(), max_consecutive_errors=1_000_000)


def match_prior(prior, template: MLP, target: GPTarget, x, *, key: Array, num_steps: int = 200,
                num_samples: int = 128, num_points: int = 100, real_ratio: float = 0.7,
                num_critic_steps: int = 200, critic_learning_rate: float = 0.01,
                penalty: float = 10.0, learning_rate: float = 0.05,
                critic_optimizer: str = "adam", measurement_points=None,
                progress_bar: bool = True) -> PriorFit:
    r"""Fit the hyperparameters of ``prior`` so that BNN functions match ``target`` in :math:`W_1`.

    The outer loop is :func:`probkit.inference.optimize.run` on :class:`MatchingLoss` with
    RMSprop (one step per dispatch, so every step's distance is kept); the critic's inner loop
    is the ``lax.scan`` of :func:`fit_critic` inside the loss.

    Parameters
    ----------
    prior : GaussianPrior or InvGammaPrior
        Initial prior (its array leaves are optimised).
    template : MLP
        Architecture (:func:`~probkit.models.fbnn.mlp_template`).
    target : GPTarget
        Target GP prior.
    x : array of shape (n, d)
        Inputs from which measurement sets are drawn (ignored if ``measurement_points``).
    key : PRNG key
    num_steps : int
        Outer (prior) steps, RMSprop with ``learning_rate``.
    num_samples : int
        Function draws per side and step.
    num_points : int
        Size ``M`` of each random measurement set; ``real_ratio`` of them are rows of ``x``.
    num_critic_steps, critic_learning_rate, penalty : int, float, float
        Critic steps per outer step, their learning rate and the gradient penalty weight
        :math:`\lambda`.
    critic_optimizer : {"adam", "adagrad"}
        The critic's optimiser (the official code: Adagrad, ``critic_learning_rate=0.02``; see
        :func:`fit_critic`).
    measurement_points : array of shape (M, d), optional
        A fixed measurement set (e.g. a grid for 1-D problems).
    progress_bar : bool
        A tqdm bar over the outer steps with the running distance.

    Returns
    -------
    PriorFit

    Raises
    ------
    ValueError
        Non-finite ``x``, ``num_points`` < 1 or an empty ``measurement_points``, invalid
        ``target`` kernel, non-positive counts.
    """
    key = check_key("key", key)
    if not isinstance(target, GPTarget):
        raise ValueError(f"target: expected a GPTarget, got {type(target).__name__}")
    check_kernel(target.kernel, "target")
    for nm, v in (("num_steps", num_steps), ("num_samples", num_samples),
                  ("num_critic_steps", num_critic_steps)):
        check_positive_int(nm, v)
    fixed = None
    if measurement_points is not None:
        mp = as_array("measurement_points", measurement_points, ndim=2)
        if mp.shape[0] == 0:
            raise ValueError("measurement_points: the measurement set is empty (0 points)")
        fixed = jnp.asarray(check_finite("measurement_points", mp), dtype=jnp.float32)
        num_points = fixed.shape[0]
        xj = fixed
    else:
        if isinstance(num_points, int) and num_points == 0:
            raise ValueError("num_points: the measurement set is empty (0 points)")
        check_positive_int("num_points", num_points)
        xj = jnp.asarray(check_finite("x", as_array("x", x, ndim=2)), dtype=jnp.float32)
    check_choice("critic_optimizer", critic_optimizer, tuple(_CRITIC_OPTIMIZERS))
    if not 0.0 <= real_ratio <= 1.0:
        raise ValueError(f"real_ratio: must lie in [0, 1], got {real_ratio}")
    loss = MatchingLoss(template, target, num_samples, num_points, float(real_ratio),
                        num_critic_steps, float(critic_learning_rate), float(penalty),
                        critic_optimizer)
    out = optimize.run(loss, prior, key=key, args=(xj, fixed), num_steps=num_steps,
                       learning_rate=float(learning_rate), transform=_rmsprop(),
                       steps_per_dispatch=1, progress_bar=progress_bar,
                       desc="fBNN prior matching")
    settings = dict(num_steps=num_steps, num_samples=num_samples, num_points=num_points,
                    real_ratio=real_ratio, num_critic_steps=num_critic_steps,
                    critic_learning_rate=critic_learning_rate, penalty=penalty,
                    learning_rate=learning_rate, critic_optimizer=critic_optimizer)
    return PriorFit(out.params, out.losses, settings)
