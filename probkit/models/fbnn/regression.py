r"""BNN regression under a (GP-matched) functional prior: the fBNN family.

:class:`FBNN` standardises the data, optionally matches the weight prior to a target GP
(:func:`~probkit.models.fbnn.match_prior`), and samples the posterior of

.. math::

    y_i = f_\theta(x_i) + \varepsilon_i,\quad \varepsilon_i \sim N(0, \sigma_n^2),\quad
    \theta \sim p_\psi(\theta)

with adaptive SGHMC (engine ``"sghmc"``, default: :func:`probkit.inference.sgmcmc.sample` with
the minibatch gradient :math:`\frac{N}{B}\sum_{i \in \mathcal{B}} \nabla \log p(y_i \mid \theta)
+ \nabla \log p_\psi(\theta)`, several chains vmapped, thinning, hierarchical prior variances
Gibbs-updated) or NUTS (engine ``"nuts"``, :func:`probkit.inference.hmc.run` on
:func:`~probkit.models.fbnn.bnn_model`; small networks). The noise variance
:math:`\sigma_n^2` (standardised scale) is fixed (0.1 in the UCI setting of Tran et al. 2022)
or, with ``learn_noise=True``, inferred under :math:`\sigma_n^2 \sim \mathrm{InvGamma}(a, b)`:
SGHMC Gibbs-updates it from its conjugate conditional given the network,

.. math::

    \sigma_n^2 \mid \theta, y \sim \mathrm{InvGamma}\Big(a + \frac n2,\;
    b + \frac12 \sum_{i=1}^n (y_i - f_\theta(x_i))^2\Big)

(on all ``n`` points, every ``gibbs_every`` transitions), NUTS samples it with the weights.
A fixed variance that is too large makes the predictive too wide (energy: RMSE 1.13 with the
NLL of a standard deviation near 3); the learned one calibrates it.

The fitted :class:`FBNNFitted` holds fixed-shape draws (``num_chains * num_samples`` networks):
``posterior(x)`` is the :class:`~probkit.posterior.Empirical` ensemble of function draws,
``predict(x)`` the :class:`~probkit.posterior.Mixture` of one Gaussian per draw (noise
:math:`\sigma_n^2`), both in the original units. Training data are padded to a power-of-two
capacity, so in Bayesian optimisation SGHMC and the acquisition compile once per capacity.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.fbnn import FBNN
>>> x = np.linspace(-2, 2, 40)[:, None]; y = np.sin(2 * x[:, 0])
>>> fitted = FBNN(widths=(20,), prior="fixed", num_chains=2, num_warmup=200, num_samples=10,
...               thinning=20).fit(x, y, key=jax.random.key(0), progress_bar=False)
>>> fitted.predict(x[:3]).loc.shape
(20, 3)
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree

from probkit._checks import (
    as_array,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
    check_regression_data,
)
from probkit.draws import gamma
from probkit.inference import sgmcmc
from probkit.inference.progress import ProgressBar
from probkit.kernels import RBF
from probkit.models.base import Family, Fitted, check_inputs
from probkit.models.fbnn.matching import GPTarget, PriorFit, match_prior
from probkit.models.fbnn.network import (
    MLP,
    GaussianPrior,
    InvGammaPrior,
    LayerVariances,
    bnn_model,
    gaussian_log_prior,
    mlp_template,
)
from probkit.posterior import Empirical, Mixture

__all__ = ["FBNN", "FBNNFitted", "uci_target", "PRIORS"]

PRIORS = ("fixed", "gaussian", "invgamma", "fixed-invgamma")
_MATCHED = ("gaussian", "invgamma")


def uci_target(in_dim: int, hyperpriors: bool = True) -> GPTarget:
    r"""The paper's UCI target: RBF-ARD, :math:`\ell = \sqrt{2D}`, :math:`\sigma^2 = 1`.

    With ``hyperpriors``: :math:`\ell \sim \mathrm{LogNormal}(\log\sqrt{2D}, 1)` per dimension
    and :math:`\sigma^2 \sim \mathrm{LogNormal}(0.1, 1)`, redrawn for every function sample.
    """
    ell = math.sqrt(2 * in_dim)
    kernel = RBF(jnp.full((in_dim,), ell, dtype=jnp.float32), jnp.float32(1.0))
    hp = {"lengthscale": dist.LogNormal(math.log(ell), 1.0),
          "variance": dist.LogNormal(0.1, 1.0)} if hyperpriors else None
    return GPTarget(kernel, hyperpriors=hp)


def _capacity(n: int) -> int:
    return 1 << max(int(n - 1).bit_length(), 3)


def _safe_std(x: np.ndarray) -> np.ndarray:
    s = x.std(0)
    return np.where(s > 0, s, 1.0)


class FBNNFitted(Fitted):
    """Posterior draws of a BNN (see :class:`FBNN`).

    Besides the fields below it holds the training data in original units, padded to the
    capacity (``x``, ``y`` and ``mask``, which marks the real rows).

    Attributes
    ----------
    nets : MLP
        Stacked networks, every leaf ``(C, S, ...)``, on the standardised scale.
    variances : LayerVariances
        Prior layer variances per draw ``(C, S, L)`` (Gibbs draws for hierarchical priors).
    prior : GaussianPrior or InvGammaPrior
        The weight prior the posterior was sampled under (matched, when matching ran).
    distances : Array
        The matching's critic distance per outer step (empty without matching).
    x_mean, x_std, y_mean, y_std : Array
        Standardisation.
    noise_var : Array
        Noise variance per draw ``(C, S)`` on the standardised scale (constant when fixed).
    learned_noise : bool
        Whether ``noise_var`` was inferred (it is then in the ArviZ posterior as ``noise``).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models.fbnn import FBNN
    >>> x = np.random.default_rng(0).uniform(size=(8, 2)); y = x.sum(1)
    >>> fitted = FBNN.for_bo(widths=(16,), num_warmup=100, num_samples=8, thinning=10,
    ...                      num_chains=2).fit(x, y, key=jax.random.key(0), progress_bar=False)
    >>> fitted.posterior(x[:3]).sample(jax.random.key(1), 4).shape
    (4, 3)
    """

    nets: MLP
    variances: LayerVariances
    prior: GaussianPrior | InvGammaPrior
    distances: jax.Array
    x: jax.Array
    y: jax.Array
    mask: jax.Array
    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array
    noise_var: jax.Array
    learned_noise: bool = eqx.field(static=True, default=False)

    @property
    def num_draws(self) -> int:
        """Number of posterior draws (chains times draws per chain)."""
        return int(np.prod(self.variances.w.shape[:2]))

    @property
    def noise_variance(self) -> np.ndarray:
        """The noise variance in units of ``y`` squared: one per draw ``(C * S,)`` when
        learned, a scalar when fixed."""
        var = np.asarray(self.noise_var * self.y_std**2).reshape(-1)
        return var if self.learned_noise else var[0]

    def _latent(self, x) -> jax.Array:
        """Function draws ``(C * S, q)`` at (unchecked) ``x``, original units; jittable."""
        xs = (jnp.asarray(x, jnp.float32) - self.x_mean) / self.x_std
        flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), self.nets)
        f = eqx.filter_vmap(lambda net: net(xs))(flat)
        return f * self.y_std + self.y_mean

    def _draws(self, x) -> jax.Array:
        if isinstance(x, jax.core.Tracer):
            return self._latent(x)
        return _latent_jit(self, jnp.asarray(check_inputs("x", x, self.x.shape[1]), jnp.float32))

    def posterior(self, x) -> Empirical:
        """Function draws at ``x`` ``(q, d)`` (joint over the points)."""
        return Empirical(self._draws(x))

    def predict(self, x) -> Mixture:
        """Predictive of ``y`` at ``x``: one Gaussian per draw with that draw's noise."""
        scale = jnp.sqrt(self.noise_var).reshape(-1, 1) * self.y_std
        return Mixture(self._draws(x), scale)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.mask)
        return np.asarray(self.x)[mask], np.asarray(self.y)[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """``num_samples`` of the draws (all of them, in chain order, when ``num_samples`` is
        their number; otherwise sorted random ones): ``f`` at the training inputs, the weights
        ``W{l}``, ``b{l}``, for hierarchical priors the layer variances and, when learned, the
        noise variance ``noise`` (units of ``y`` squared)."""
        total = self.num_draws
        idx = np.sort(np.asarray(jax.random.choice(key, total, (num_samples,),
                                                   replace=num_samples > total)))
        x, _ = self.observed()
        flat = lambda a: np.asarray(a).reshape((total,) + a.shape[2:])[idx]  # noqa: E731
        draws = {"f": np.asarray(self._draws(x))[idx]}
        for i, (w, b) in enumerate(zip(self.nets.weights, self.nets.biases, strict=True)):
            draws[f"W{i}"], draws[f"b{i}"] = flat(w), flat(b)
        if self.prior.hierarchical:
            draws["var_W"], draws["var_b"] = flat(self.variances.w), flat(self.variances.b)
        if self.learned_noise:
            draws["noise"] = self.noise_variance[idx]
        return draws


@eqx.filter_jit
def _latent_jit(fitted: FBNNFitted, x):
    return fitted._latent(x)


def _sghmc_program(prior, template, xp, yp, n, keys, *, noise_var, noise_prior, batch_size,
                   num_warmup, num_samples, thinning, step_size, mdecay, gibbs_every,
                   noise_correction, progress_rate):
    """All chains of SGHMC on the padded standardised data (one compiled program).

    The auxiliary Gibbs state is ``(layer variances, noise variance, Gibbs sweeps done)``;
    ``noise_prior`` is ``None`` (fixed noise) or the inverse-gamma ``(a, b)`` of a learned noise
    variance, which is held at ``noise_var`` for the first half of the warm-up (the network
    first fits the data under that likelihood) and Gibbs-updated from then on.
    """
    _, unravel = ravel_pytree(template)
    cap = xp.shape[0]
    full = cap <= batch_size
    mask = jnp.arange(cap) < n

    noise_start = num_warmup // (2 * gibbs_every)

    def grad_fn(theta, aux, k):
        var, s2, _ = aux
        if full:
            xb, yb, w = xp, yp, mask.astype(xp.dtype)
        else:
            idx = jax.random.randint(k, (batch_size,), 0, n)
            xb, yb = xp[idx], yp[idx]
            w = jnp.full((batch_size,), n / batch_size, dtype=xp.dtype)

        def logpost(th):
            net = unravel(th)
            ll = -0.5 * (yb - net(xb)) ** 2 / s2
            return jnp.sum(w * ll) + gaussian_log_prior(net, var)

        return jax.grad(logpost)(theta)

    def gibbs(k, theta, aux):
        var, s2, sweeps = aux
        k_var, k_noise = jax.random.split(k)
        net = unravel(theta)
        if prior.hierarchical:
            var = prior.gibbs(k_var, net, var)
        if noise_prior is not None:
            a, b = noise_prior
            ssr = jnp.sum(jnp.where(mask, (yp - net(xp)) ** 2, 0.0))
            draw = (b + ssr / 2) / gamma(k_noise, a + n / 2, dtype=xp.dtype)
            s2 = jnp.where(sweeps >= noise_start, draw, s2)
        return var, s2, sweeps + 1

    use_gibbs = prior.hierarchical or noise_prior is not None

    def chain(k):
        k0, k1 = jax.random.split(k)
        net0, var0 = prior.sample(k0, template)
        theta0, _ = ravel_pytree(net0)
        return sgmcmc.sample(k1, theta0, grad_fn, aux=(var0, jnp.float32(noise_var), jnp.int32(0)),
                             num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                             step_size=step_size, mdecay=mdecay,
                             gibbs_fn=gibbs if use_gibbs else None, gibbs_every=gibbs_every,
                             noise_correction=noise_correction, progress_rate=progress_rate)

    thetas, (variances, noise, _) = jax.vmap(chain)(keys)
    nets = jax.vmap(jax.vmap(unravel))(thetas)
    return nets, variances, noise


_sghmc_jit = eqx.filter_jit(_sghmc_program)


class FBNN(Family):
    r"""BNN regression with a functional (GP-matched) prior.

    Parameters
    ----------
    widths : tuple of int
        Hidden-layer widths (paper's UCI setting: ``(100,)``; ``()`` is Bayesian linear
        regression).
    activation : str
        ``"tanh"``, ``"relu"``, ``"erf"``, ...
    prior : {"gaussian", "invgamma", "fixed", "fixed-invgamma"} or a prior object
        ``"fixed"``: N(0, 1) on the unscaled weights (FG); ``"fixed-invgamma"``: per-layer
        variance ~ InvGamma(1, 1) (FH); ``"gaussian"``/``"invgamma"``: these families matched
        to ``target`` at every fit (GPiG/GPiH, starting from N(0, 1) and InvGamma(3, 3)); a
        :class:`GaussianPrior` or :class:`InvGammaPrior` instance (e.g. from :meth:`match` or
        :func:`~probkit.models.fbnn.load_prior`) is used as it is.
    target : GPTarget, optional
        Target GP prior on the standardised inputs (default :func:`uci_target`).
    noise_var : float
        Noise variance on the standardised scale: the fixed value, or the starting value of
        every chain when ``learn_noise``.
    learn_noise : bool
        Infer the noise variance under the inverse-gamma prior ``noise_prior`` (see the module
        docstring) instead of fixing it.
    noise_prior : (float, float)
        Shape and rate :math:`(a, b)` of that prior on the standardised scale (default
        ``(2, 0.1)``: mean 0.1, the paper's fixed value, and a heavy right tail).
    matching : dict, optional
        Keyword arguments of :func:`match_prior` (``num_steps``, ``num_critic_steps``,
        ``learning_rate``, ...).
    engine : {"sghmc", "nuts"}
    num_chains, num_warmup, num_samples, thinning : int
        Chains, warm-up transitions, kept draws per chain and transitions per kept draw (both
        engines).
    batch_size, step_size, mdecay, gibbs_every
        SGHMC settings (:func:`probkit.inference.sgmcmc.sample`). The default friction
        ``mdecay=0.01`` (the paper's) mixes fast but runs warm where the minibatch noise is
        large; with a long budget ``mdecay=0.1`` is closer to the exact posterior (energy,
        100 tanh units, learned noise, 82k transitions: noise s.d. 0.48 against NUTS's 0.40,
        0.76 with 0.01: ``benchmarks/sghmc_vs_nuts.py``; ``benchmarks/fbnn.py`` uses it), and
        too slow for short runs.
    noise_correction : bool
        SGHMC's minibatch-noise correction (:func:`probkit.inference.sgmcmc.step`).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models.fbnn import FBNN
    >>> x = np.random.default_rng(0).uniform(-2, 2, (30, 1)); y = np.sin(x[:, 0])
    >>> fam = FBNN(widths=(10,), prior="gaussian", num_chains=2, num_warmup=100,
    ...            num_samples=5, thinning=10,
    ...            matching=dict(num_steps=3, num_critic_steps=5, num_samples=16))
    >>> fitted = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)
    >>> fitted.distances.shape, fitted.posterior(x[:4]).mean.shape
    ((3,), (4,))
    """

    name = "fbnn"
    engines = {
        "sghmc": "adaptive SGHMC on minibatches (probkit.inference.sgmcmc), chains vmapped",
        "nuts": "NUTS on bnn_model (probkit.inference.hmc); small networks",
    }

    widths: tuple = eqx.field(static=True, default=(100,), converter=tuple)
    activation: str = eqx.field(static=True, default="tanh")
    prior: str | GaussianPrior | InvGammaPrior = "gaussian"
    target: GPTarget | None = None
    noise_var: float = eqx.field(static=True, default=1e-3)
    learn_noise: bool = eqx.field(static=True, default=False)
    noise_prior: tuple = eqx.field(static=True, default=(2.0, 0.1), converter=tuple)
    matching: dict | None = None
    engine: str = eqx.field(static=True, default="sghmc")
    num_chains: int = eqx.field(static=True, default=4)
    num_warmup: int = eqx.field(static=True, default=2000)
    num_samples: int = eqx.field(static=True, default=30)
    thinning: int = eqx.field(static=True, default=200)
    batch_size: int = eqx.field(static=True, default=32)
    step_size: float = eqx.field(static=True, default=0.01)
    mdecay: float = eqx.field(static=True, default=0.01)
    gibbs_every: int = eqx.field(static=True, default=20)
    noise_correction: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        for w in self.widths:
            check_positive_int("widths", w)
        if isinstance(self.prior, str) and self.prior not in PRIORS:
            raise ValueError(f"prior: expected one of {PRIORS} or a prior object, "
                             f"got {self.prior!r}")
        if not isinstance(self.prior, str | GaussianPrior | InvGammaPrior):
            raise ValueError(f"prior: expected a name or GaussianPrior/InvGammaPrior, "
                             f"got {type(self.prior).__name__}")
        if self.target is not None and not isinstance(self.target, GPTarget):
            raise ValueError(f"target: expected a GPTarget, got {type(self.target).__name__}")
        for nm in ("noise_var", "step_size", "mdecay"):
            check_positive(nm, getattr(self, nm))
        if len(self.noise_prior) != 2:
            raise ValueError(f"noise_prior: expected (shape, rate), got {self.noise_prior!r}")
        check_positive("noise_prior", np.asarray(self.noise_prior, dtype=float))
        for nm in ("num_chains", "num_samples", "thinning", "batch_size", "gibbs_every"):
            check_positive_int(nm, getattr(self, nm))
        check_positive_int("num_warmup", self.num_warmup, minimum=0)

    @classmethod
    def for_bo(cls, **overrides) -> FBNN:
        """The configuration for Bayesian optimisation (overridable by keyword).

        2 x 50 tanh, the fixed N(0, 1) prior (no matching per fit), noise variance 1e-3 of the
        standardised outputs, 4 SGHMC chains of 1000 warm-up transitions and 25 draws thinned
        by 50. BO objectives are usually close to noiseless: on Branin after 100 evaluations the
        median log10 regret was -0.18 with the UCI noise 0.1 (4 seeds,
        ``benchmarks/results/bo_bh.json``) and -2.73 with 1e-3 (5 seeds, ``bo_fbnn.json``;
        random search -0.44). For a matched prior in BO, match once (:meth:`match`) and pass
        the prior object, so that it is not matched again at every step.
        """
        settings = dict(widths=(50, 50), activation="tanh", prior="fixed", noise_var=1e-3,
                        num_chains=4, num_warmup=1000, num_samples=25, thinning=50,
                        batch_size=32, step_size=0.01, mdecay=0.01)
        return cls(**{**settings, **overrides})

    def initial_prior(self, num_layers: int):
        """The prior before matching (or the given prior object)."""
        if not isinstance(self.prior, str):
            return self.prior
        if self.prior in ("fixed", "gaussian"):
            return GaussianPrior.init(num_layers, 1.0)
        if self.prior == "invgamma":          # official 1-D initialisation of GPiH
            return InvGammaPrior.init(num_layers, 3.0, 3.0)
        return InvGammaPrior.init(num_layers, 1.0, 1.0)

    def match(self, x, *, key, progress_bar: bool = True) -> PriorFit:
        """Match the prior family to the target GP on standardised ``x`` (``self`` unchanged)."""
        key = check_key("key", key)
        x = check_finite("x", as_array("x", x, ndim=2))
        xs = (x - x.mean(0)) / _safe_std(x)
        template = mlp_template(x.shape[1], self.widths, self.activation)
        target = self.target or uci_target(x.shape[1])
        return match_prior(self.initial_prior(template.num_layers), template, target, xs,
                           key=key, progress_bar=progress_bar, **(self.matching or {}))

    def fit(self, x, y, *, key, progress_bar: bool = True) -> FBNNFitted:
        """Condition on ``x`` ``(n, d)``, ``y`` ``(n,)`` (matching the prior first when
        ``prior`` is ``"gaussian"`` or ``"invgamma"``).

        Raises
        ------
        ValueError
            ``x``/``y`` with NaN or inf, wrong ndim, different lengths or empty, a non-key
            ``key`` (named).
        """
        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        k_match, k_post = jax.random.split(key)
        template = mlp_template(x.shape[1], self.widths, self.activation)
        distances = np.zeros(0, np.float32)
        if isinstance(self.prior, str) and self.prior in _MATCHED:
            fit = self.match(x, key=k_match, progress_bar=progress_bar)
            prior, distances = fit.prior, fit.distances
        else:
            prior = self.initial_prior(template.num_layers)
        n, d = x.shape
        xm, xsd = x.mean(0), _safe_std(x)
        ym, ysd = float(y.mean()), float(y.std()) or 1.0
        xs = jnp.asarray((x - xm) / xsd, jnp.float32)
        ys = jnp.asarray((y - ym) / ysd, jnp.float32)
        if self.engine == "nuts":
            nets, var, noise = self._nuts(prior, template, xs, ys, k_post, progress_bar)
        else:
            nets, var, noise = self._sghmc(prior, template, xs, ys, k_post, progress_bar)
        cap = _capacity(n)
        xp = np.concatenate([x, np.repeat(x[:1], cap - n, 0)])
        yp = np.concatenate([y, np.zeros(cap - n)])
        return FBNNFitted(nets, var, prior, jnp.asarray(distances, jnp.float32),
                          jnp.asarray(xp, jnp.float32), jnp.asarray(yp, jnp.float32),
                          jnp.arange(cap) < n, jnp.asarray(xm, jnp.float32),
                          jnp.asarray(xsd, jnp.float32), jnp.float32(ym), jnp.float32(ysd),
                          jnp.asarray(noise, jnp.float32), self.learn_noise)

    def _sghmc(self, prior, template, xs, ys, key, progress_bar):
        n, d = xs.shape
        cap = _capacity(n)
        xp = jnp.zeros((cap, d), jnp.float32).at[:n].set(xs)
        yp = jnp.zeros((cap,), jnp.float32).at[:n].set(ys)
        total = self.num_warmup + self.num_samples * self.thinning
        if progress_bar:
            ProgressBar.open(total, f"fBNN SGHMC {self.num_chains} chains")
        try:
            out = _sghmc_jit(
                prior, template, xp, yp, jnp.int32(n), jax.random.split(key, self.num_chains),
                noise_var=self.noise_var, batch_size=self.batch_size,
                noise_prior=self.noise_prior if self.learn_noise else None,
                num_warmup=self.num_warmup, num_samples=self.num_samples,
                thinning=self.thinning, step_size=self.step_size, mdecay=self.mdecay,
                gibbs_every=self.gibbs_every, noise_correction=self.noise_correction,
                progress_rate=max(total // 50, 1))
            return jax.block_until_ready(out)
        finally:
            if progress_bar:
                ProgressBar.close()

    def _nuts(self, prior, template, xs, ys, key, progress_bar):
        from probkit.inference import hmc

        res = hmc.run(bnn_model, xs, ys, key=key, prior=prior, widths=self.widths,
                      activation=self.activation, noise_var=self.noise_var,
                      noise_prior=self.noise_prior if self.learn_noise else None,
                      num_warmup=self.num_warmup, num_samples=self.num_samples * self.thinning,
                      thinning=self.thinning, num_chains=self.num_chains,
                      progress_bar=progress_bar, log_likelihood=False)
        p = {k: jnp.asarray(v) for k, v in res.posterior.items()}
        L = template.num_layers
        nets = MLP(tuple(p[f"W{i}"] for i in range(L)), tuple(p[f"b{i}"] for i in range(L)),
                   template.activation)
        lead = p["W0"].shape[:2]
        if prior.hierarchical:
            var = LayerVariances(jnp.stack([p[f"var_W{i}"] for i in range(L)], -1),
                                 jnp.stack([p[f"var_b{i}"] for i in range(L)], -1))
        else:
            v = prior.variances()
            var = LayerVariances(jnp.broadcast_to(v.w, lead + (L,)),
                                 jnp.broadcast_to(v.b, lead + (L,)))
        noise = p["noise_var"] if self.learn_noise else jnp.full(lead, self.noise_var)
        return nets, var, noise
