r"""The FunBaT family: configuration, the two engines, and the fitted models.

``FunBaT(...).fit(x, y, key=key)`` returns a :class:`CEPFitted` (engine ``"cep"``) or a
:class:`NUTSFitted` (engine ``"nuts"``); both keep the family contract of
:mod:`probkit.models.base`.
"""

from __future__ import annotations

import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probkit._checks import (
    as_array,
    check_choice,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
    check_regression_data,
)
from probkit.kernels import Kernel
from probkit.models.base import Family, Fitted, check_inputs
from probkit.models.tucker.cep import CEPState, cp_core, f_moments, mean_f, run_cep
from probkit.models.tucker.data import (
    TuckerConfig,
    bucket,
    check_damping,
    check_nu,
    factor_kernels,
    gram,
    per_mode,
    prepare_data,
)
from probkit.models.tucker.factors import factor_marginals, sym
from probkit.models.tucker.model import JITTER, tucker_model
from probkit.posterior import Empirical, Gaussian, Mixture, export
from probkit.statespace import SDE, as_sde

__all__ = ["FunBaT", "CEPFitted", "NUTSFitted"]

#: Relative jitter of the conditional covariance of NUTS factors at new coordinates.
_COND_JITTER = 1e-6
#: Smallest latent variance returned (standardised units), so the predictive scale is positive.
_MIN_VAR = 1e-12


def _setting(value):
    """A hyperparameter as a hashable static value: a float, or a tuple of floats per mode."""
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr.ravel())


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with its last row repeated up to ``size`` rows."""
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)])


class FunBaT(Family):
    r"""Functional Bayesian Tucker decomposition over continuous coordinates (Fang et al. 2024).

    :math:`y_n = \operatorname{vec}(\mathcal W)^\top (u^1(x_{n1}) \otimes \cdots \otimes
    u^K(x_{nK})) + \varepsilon_n` with GP factors per mode (Matern by default, any kernel with
    a state-space form through ``kernel``; see :mod:`probkit.models.tucker`).

    Parameters
    ----------
    rank : int
        :math:`R`, latent functions per mode (core :math:`R^K`).
    cp : bool
        FunBaT-CP: the core is fixed to the super-diagonal of ones.
    nu : {0.5, 1.5, 2.5}
        Matern smoothness of every latent function.
    lengthscale, variance : float or sequence of K floats
        Matern hyperparameters per mode (fixed, as in the paper); scale each coordinate to a range
        matched to ``lengthscale`` (e.g. [0, 1]).
    kernel : kernel or sequence of K kernels, optional
        The factor prior instead of the Matern one (then ``nu``, ``lengthscale`` and
        ``variance`` are not used): one kernel of :mod:`probkit.kernels` for every mode or one
        per mode. Engine ``"cep"`` needs a state-space form (Matern, Cosine, Periodic, SHO,
        Celerite and their sums and products: :func:`probkit.statespace.as_sde`), e.g.
        ``Matern32(0.3) * Periodic(1.0, 0.5, period=0.25)`` for a quasi-periodic coordinate;
        engine ``"nuts"`` takes any kernel (dense Gram matrices). Fixed, like the Matern
        hyperparameters; hyperparameters are cast to float64.
    num_steps : int
        CEP epochs (engine ``"cep"``; a fixed number, as in the paper).
    damping : float or (factors, noise, core)
        Weight on the old messages, in [0, 1) (engine ``"cep"``).
    a0, b0 : float
        Gamma prior of the noise precision (of standardised ``y``).
    core_prior_var : float
        Prior variance of the core entries (Tucker only).
    standardize : bool
        Centre and scale ``y`` by its training mean and std (predictions are in original units).
    mode_solver : {"kalman", "dense"}
        ``"dense"`` replaces each smoother by the dense GP posterior (a reference; O(I^3)).
    num_warmup, num_samples, num_chains : int
        NUTS settings (engine ``"nuts"``; :func:`probkit.inference.hmc.run`).
    engine : {"cep", "nuts"}
        Conditional EP with one Kalman smoother per mode, or NUTS on :func:`tucker_model`
        (dense Gram matrices: small data only).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models.tucker import FunBaT
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(300, 2))
    >>> y = np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])
    >>> fam = FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.3, num_steps=30)
    >>> fitted = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)
    >>> pred = fitted.predict(rng.uniform(size=(5, 2)))
    >>> pred.mean.shape, pred.variance.shape
    ((5,), (5,))

    A periodic first coordinate (weekly data, say) and a smooth second one:

    >>> from probkit.kernels import Matern32, Periodic
    >>> yp = np.sin(4 * np.pi * x[:, 0]) * x[:, 1]
    >>> fam = FunBaT(rank=1, cp=True, num_steps=30,
    ...              kernel=(Periodic(0.5, 1.0, period=0.5), Matern32(0.5, 1.0)))
    >>> fitted = fam.fit(x, yp, key=jax.random.key(0), progress_bar=False)
    >>> bool(np.sqrt(np.mean((fitted.predict(x).mean - yp) ** 2)) < 0.1)
    True
    """

    name = "funbat"
    engines = {
        "cep": "conditional EP, one Kalman filter + RTS smoother per mode (Fang et al. 2024)",
        "nuts": "NUTS on the NumPyro tucker_model (probkit.inference.hmc); small data",
    }

    rank: int = eqx.field(static=True, default=2)
    cp: bool = eqx.field(static=True, default=False)
    nu: float = eqx.field(static=True, default=0.5)
    lengthscale: float | tuple = eqx.field(static=True, default=0.1, converter=_setting)
    variance: float | tuple = eqx.field(static=True, default=1.0, converter=_setting)
    kernel: Kernel | SDE | tuple | None = None
    num_steps: int = eqx.field(static=True, default=100)
    damping: float | tuple = eqx.field(static=True, default=0.5, converter=_setting)
    a0: float = eqx.field(static=True, default=1.0)
    b0: float = eqx.field(static=True, default=1.0)
    core_prior_var: float = eqx.field(static=True, default=1.0)
    standardize: bool = eqx.field(static=True, default=True)
    mode_solver: str = eqx.field(static=True, default="kalman")
    num_warmup: int = eqx.field(static=True, default=500)
    num_samples: int = eqx.field(static=True, default=500)
    num_chains: int = eqx.field(static=True, default=2)
    engine: str = eqx.field(static=True, default="cep")

    def __check_init__(self):
        check_positive_int("rank", self.rank)
        check_nu(self.nu)
        check_positive("lengthscale", self.lengthscale)
        check_positive("variance", self.variance)
        if self.kernel is not None:
            kernels = self.kernel if isinstance(self.kernel, tuple | list) else (self.kernel,)
            for kern in factor_kernels(kernels, len(kernels)):
                if self.engine == "cep":
                    as_sde(kern)   # a ValueError naming `kernel` if it has no state-space form
        check_positive_int("num_steps", self.num_steps)
        check_damping(self.damping)
        for name in ("a0", "b0", "core_prior_var"):
            check_positive(name, getattr(self, name))
        check_choice("mode_solver", self.mode_solver, ("kalman", "dense"))
        check_positive_int("num_warmup", self.num_warmup, minimum=0)
        check_positive_int("num_samples", self.num_samples)
        check_positive_int("num_chains", self.num_chains)

    def _config(self, num_modes: int) -> TuckerConfig:
        return TuckerConfig(self.rank, num_modes, bool(self.cp), *check_damping(self.damping),
                            float(self.a0), float(self.b0), float(self.core_prior_var),
                            self.mode_solver)

    def fit(self, x, y, *, key, progress_bar: bool = True) -> CEPFitted | NUTSFitted:
        """Condition on coordinates ``x`` ``(n, K)`` (one column per mode) and ``y`` ``(n,)``.

        Raises
        ------
        ValueError
            Naming the argument: non-finite, empty or mis-shaped ``x``/``y``, a non-key ``key``,
            a ``lengthscale``/``variance``/``kernel`` whose length differs from the columns of
            ``x``.
        FloatingPointError
            If the CEP iteration diverges (raise the damping or the lengthscale).
        """
        key = check_key("key", key)
        x, y = check_regression_data(x, y)
        K = x.shape[1]
        ls = per_mode("lengthscale", self.lengthscale, K)
        var = per_mode("variance", self.variance, K)
        with jax.enable_x64(True):
            kernels = jax.tree.map(_float64, factor_kernels(self.kernel, K, self.nu, ls, var))
        if self.standardize:
            y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
        else:
            y_mean, y_scale = 0.0, 1.0
        ys = (y - y_mean) / y_scale
        config = self._config(K)
        start = time.perf_counter()
        if self.engine == "nuts":
            return self._fit_nuts(x, y, ys, kernels, config, y_mean, y_scale, key, progress_bar,
                                  start)
        np_data = prepare_data(x, ys, config)
        with jax.enable_x64(True):
            data = jax.tree.map(jnp.asarray, np_data)
            # State-space forms built here, from concrete hyperparameters (a periodic kernel's
            # truncation order is chosen from its lengthscale), then passed into the epochs.
            sdes = tuple(as_sde(kern) for kern in kernels)
            state, trace = run_cep(data, sdes, config, key=key,
                                   num_steps=self.num_steps, progress_bar=progress_bar)
            if not np.all(np.isfinite(trace["rmse"])):
                raise FloatingPointError("fit: the CEP iteration diverged (non-finite training "
                                         "error); increase damping or the lengthscale")
            size = data.positions.shape[0]
            trace = {"rmse": jnp.asarray(trace["rmse"] * y_scale), "tau": jnp.asarray(trace["tau"])}
            return CEPFitted(config, sdes, data.grids,
                             data.observed, state, jnp.asarray(_pad_rows(x, size)),
                             jnp.asarray(np.concatenate([y, np.zeros(size - len(y))])),
                             jnp.arange(size) < len(y), jnp.asarray(y_mean),
                             jnp.asarray(y_scale), trace,
                             jnp.asarray(time.perf_counter() - start))

    def _fit_nuts(self, x, y, ys, kernels, config, y_mean, y_scale, key, progress_bar, start):
        from probkit.inference import hmc

        K, R = config.num_modes, config.rank
        grids = tuple(np.unique(x[:, k]) for k in range(K))
        model = _bound_model(R, config.cp, config.a0, config.b0, config.core_prior_var)
        with jax.enable_x64(True):
            res = hmc.run(model, jnp.asarray(x), jnp.asarray(ys),
                          grids=tuple(jnp.asarray(g) for g in grids), kernel=kernels, key=key,
                          num_warmup=self.num_warmup, num_samples=self.num_samples,
                          num_chains=self.num_chains, log_likelihood=False,
                          progress_bar=progress_bar)
            post = res.posterior
            S = self.num_chains * self.num_samples
            us = tuple(jnp.asarray(post[f"u{k}"]).reshape(S, len(grids[k]), R) for k in range(K))
            if config.cp:
                core = jnp.broadcast_to(cp_core(R, K, jnp.float64), (S, R**K))
            else:
                core = jnp.asarray(post["core"]).reshape(S, R**K)
            return NUTSFitted(config, kernels, tuple(jnp.asarray(g) for g in grids), us, core,
                              jnp.asarray(post["tau"]).reshape(S), jnp.asarray(x),
                              jnp.asarray(y), jnp.asarray(y_mean), jnp.asarray(y_scale),
                              jax.random.fold_in(key, 1),
                              jnp.asarray(int(np.sum(res.sample_stats["diverging"]))),
                              jnp.asarray(time.perf_counter() - start))


@functools.lru_cache(maxsize=64)
def _bound_model(rank, cp, a0, b0, core_prior_var):
    """:func:`tucker_model` with its static settings bound, one object per settings (so the
    NUTS program compiled for them is reused by later fits; the kernels are arguments)."""
    return functools.partial(tucker_model, rank=rank, cp=cp, a0=a0, b0=b0,
                             core_prior_var=core_prior_var)


def _float64(leaf):
    """A floating kernel hyperparameter in float64 (call inside ``jax.enable_x64``)."""
    arr = jnp.asarray(leaf)
    return arr.astype(jnp.float64) if jnp.issubdtype(arr.dtype, jnp.floating) else arr


class _FunBaTFitted(Fitted):
    """What both engines' fitted models share: query checks, units, noise variance."""

    def _query(self, x):
        """Checked query coordinates padded to a power of two (concrete ``x``), float64."""
        if isinstance(x, jax.core.Tracer):
            return x, None
        x = check_inputs("x", x, self.config.num_modes)
        return _pad_rows(x, bucket(len(x))), len(x)


class CEPFitted(_FunBaTFitted):
    """FunBaT fitted by conditional EP (see :class:`FunBaT`; fields are the CEP state, and
    ``sdes``, each mode's factor prior in the state-space form the smoothers used).

    ``predict(x)`` and ``posterior(x)`` are Gaussian with independent marginals: the latent
    :math:`f` has mean :math:`E[\\mathcal W]^\\top \\bigotimes_k E[u^k]` and variance
    :math:`\\operatorname{tr}(E[WW^\\top] \\bigotimes_k E[u^k u^{k\\top}]) - \\text{mean}^2`; the
    predictive adds :math:`E[1/\\tau]`. Coordinates unseen in training enter each mode's smoother
    as observation-free steps.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models.tucker import FunBaT
    >>> x = np.random.default_rng(0).uniform(size=(40, 2))
    >>> fitted = FunBaT(rank=1, cp=True, num_steps=10).fit(
    ...     x, x[:, 0] * x[:, 1], key=jax.random.key(0), progress_bar=False)
    >>> mean, cov = fitted.factors(0, np.array([0.25, 0.5]))
    >>> mean.shape, cov.shape, fitted.grid(0).shape
    ((2, 1), (2, 1, 1), (40,))
    """

    config: TuckerConfig = eqx.field(static=True)
    sdes: tuple
    grids: tuple
    observed_grid: tuple
    state: CEPState
    x: Array
    y: Array
    mask: Array
    y_mean: Array
    y_scale: Array
    trace: dict
    seconds: Array

    @property
    def noise_shape_rate(self) -> tuple[Array, Array]:
        """Shape and rate of :math:`q(\\tau)` (precision of standardised ``y``)."""
        with jax.enable_x64(True):
            shape_rate = (self.config.a0 + 0.5 * jnp.sum(self.mask),
                          self.config.b0 + self.state.noise_rate)
        return export(shape_rate[0]), export(shape_rate[1])

    @property
    def noise_variance(self) -> Array:
        """:math:`E[1/\\tau]` in units of ``y`` squared."""
        with jax.enable_x64(True):
            a, b = self.noise_shape_rate
            var = b / (a - 1.0) * self.y_scale**2
        return export(var)

    def grid(self, mode: int) -> np.ndarray:
        """Sorted unique training coordinates of mode ``mode``."""
        return np.asarray(self.grids[mode])[np.asarray(self.observed_grid[mode])]

    def _mode(self, k: int, coords):
        return factor_marginals(self.grids[k], self.observed_grid[k], self.state.msg_prec[k],
                                self.state.msg_shift[k], self.sdes[k], coords, self.config)

    def factors(self, mode: int, coords) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean ``(n, R)`` and covariance ``(n, R, R)`` of mode ``mode``'s factors at
        ``coords`` ``(n,)`` (standardised units)."""
        K = self.config.num_modes
        if not (isinstance(mode, int | np.integer) and 0 <= mode < K):
            raise ValueError(f"mode: expected an integer in 0..{K - 1}, got {mode!r}")
        coords = check_finite("coords", as_array("coords", coords, ndim=1))
        n = len(coords)
        with jax.enable_x64(True):
            m, c = _factors_jit(self, int(mode), jnp.asarray(_pad_rows(coords, bucket(n))))
            return np.asarray(m[:n]), np.asarray(c[:n])

    def _latent(self, x) -> tuple[Array, Array]:
        """Mean and variance of f at (unchecked) ``x`` in units of y; pure, jittable."""
        with jax.enable_x64(True):
            x = jnp.asarray(x, jnp.float64)
            moments = [self._mode(k, x[:, k]) for k in range(self.config.num_modes)]
            mean, var = f_moments([m for m, _ in moments], [c for _, c in moments],
                                  self.state.core_mean, self.state.core_cov, self.config)
            return (mean * self.y_scale + self.y_mean,
                    jnp.maximum(var, _MIN_VAR) * self.y_scale**2)

    def _moments(self, x, noise: bool):
        xq, n = self._query(x)
        with jax.enable_x64(True):
            if n is None:
                mean, var = self._latent(xq)
            else:
                mean, var = _latent_jit(self, jnp.asarray(xq))
                mean, var = mean[:n], var[:n]
            if noise:
                var = var + self.noise_variance
            return Gaussian(mean, scale=jnp.sqrt(var))

    def posterior(self, x) -> Gaussian:
        """Posterior of the latent ``f`` at ``x`` ``(n, K)`` (independent Gaussian marginals)."""
        return self._moments(x, noise=False)

    def predict(self, x) -> Gaussian:
        """Predictive of ``y`` at ``x`` ``(n, K)``: the posterior plus :math:`E[1/\\tau]`."""
        return self._moments(x, noise=True)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.mask)
        return np.asarray(self.x)[mask], np.asarray(self.y)[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """``f`` at the training inputs, the noise variance and (Tucker) the core, drawn from the
        Gaussian/Gamma approximation (units of ``y``; the core in standardised units)."""
        x, _ = self.observed()
        k_f, k_tau, k_core = jax.random.split(key, 3)
        f = self.posterior(x).sample(k_f, (num_samples,))
        with jax.enable_x64(True):
            a, b = self.noise_shape_rate
            tau = jax.random.gamma(k_tau, a, (num_samples,), jnp.float64) / b
            draws = {"f": np.asarray(f), "noise": np.asarray(self.y_scale**2 / tau)}
            if not self.config.cp:
                R, K = self.config.rank, self.config.num_modes
                cov = self.state.core_cov
                chol = jnp.linalg.cholesky(cov + 1e-12 * jnp.eye(cov.shape[0], dtype=cov.dtype))
                eps = jax.random.normal(k_core, (num_samples, cov.shape[0]), jnp.float64)
                core = self.state.core_mean + eps @ chol.T
                draws["core"] = np.asarray(core).reshape((num_samples,) + (R,) * K)
        return draws


@eqx.filter_jit
def _latent_jit(fitted: CEPFitted, x):
    return fitted._latent(x)


@eqx.filter_jit
def _factors_jit(fitted: CEPFitted, mode: int, coords):
    return fitted._mode(mode, coords)


class NUTSFitted(_FunBaTFitted):
    """FunBaT sampled by NUTS: draws of every factor at the unique training coordinates, the core
    and the noise precision (standardised units).

    At new coordinates each draw's factors are drawn from their GP conditional given the draw at
    the training grid (jointly over the query points, from the stored ``key``, so ``posterior``
    is deterministic): ``posterior(x)`` is the :class:`~probkit.posterior.Empirical` ensemble of
    ``f`` and ``predict(x)`` the :class:`~probkit.posterior.Mixture` adding each draw's noise.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.models.tucker import FunBaT
    >>> x = np.random.default_rng(0).uniform(size=(12, 2))
    >>> fam = FunBaT(rank=1, cp=True, nu=1.5, lengthscale=0.5, engine="nuts", num_warmup=100,
    ...              num_samples=50)
    >>> fitted = fam.fit(x, x[:, 0] + x[:, 1], key=jax.random.key(0), progress_bar=False)
    >>> fitted.predict(x[:3]).loc.shape
    (100, 3)
    """

    config: TuckerConfig = eqx.field(static=True)
    kernels: tuple
    grids: tuple
    u: tuple
    core: Array
    tau: Array
    x: Array
    y: Array
    y_mean: Array
    y_scale: Array
    key: Array
    num_divergent: Array
    seconds: Array

    def _f_draws(self, x) -> Array:
        """Draws ``(S, m)`` of f at (unchecked) ``x`` ``(m, K)``, standardised units; jittable."""
        cfg = self.config
        with jax.enable_x64(True):
            x = jnp.asarray(x, jnp.float64)
            m = x.shape[0]
            keys = jax.random.split(self.key, cfg.num_modes)
            us = []
            for k, (g, u) in enumerate(zip(self.grids, self.u, strict=True)):
                kern, c = self.kernels[k], x[:, k]
                kgg = gram(kern, g, g)
                var = jnp.mean(jnp.diag(kgg))
                kcg = gram(kern, c, g)
                chol = jnp.linalg.cholesky(kgg + JITTER * var * jnp.eye(g.shape[0]))
                a = jax.scipy.linalg.cho_solve((chol, True), kcg.T)  # (I, m)
                cond = gram(kern, c, c) - kcg @ a
                lc = jnp.linalg.cholesky(sym(cond) + _COND_JITTER * var * jnp.eye(m))
                eps = jax.random.normal(keys[k], (u.shape[0], m, cfg.rank), jnp.float64)
                us.append(jnp.einsum("im,sir->smr", a, u) + jnp.einsum("mj,sjr->smr", lc, eps))
            pos = jnp.broadcast_to(jnp.arange(m)[:, None], (m, cfg.num_modes))
            return jax.vmap(lambda us, w: mean_f(us, w, pos, cfg))(tuple(us), self.core)

    def _draws(self, x) -> Array:
        xq, n = self._query(x)
        with jax.enable_x64(True):
            if n is None:
                f = self._f_draws(xq)
            else:
                f = _f_draws_jit(self, jnp.asarray(xq))[:, :n]
            return f * self.y_scale + self.y_mean

    def posterior(self, x) -> Empirical:
        """Posterior draws of the latent ``f`` at ``x`` ``(n, K)``."""
        return Empirical(self._draws(x))

    def predict(self, x) -> Mixture:
        """Predictive of ``y`` at ``x``: one Gaussian per draw, noise :math:`1/\\tau` per draw."""
        f = self._draws(x)
        with jax.enable_x64(True):
            return Mixture(f, (self.y_scale / jnp.sqrt(self.tau))[:, None])

    @property
    def noise_variance(self) -> Array:
        """Posterior mean of the noise variance, in units of ``y`` squared."""
        with jax.enable_x64(True):
            var = jnp.mean(1.0 / self.tau) * self.y_scale**2
        return export(var)

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.x), np.asarray(self.y)

    def _posterior_draws(self, key, num_samples: int) -> dict[str, np.ndarray]:
        """``num_samples`` of the NUTS draws (without replacement while there are enough): ``f``
        at the training inputs, the noise variance, and (Tucker) the core."""
        total = self.tau.shape[0]
        idx = np.asarray(jax.random.choice(key, total, (num_samples,),
                                           replace=num_samples > total))
        x = np.asarray(self.x)
        pos = jnp.asarray(np.stack([np.searchsorted(np.asarray(g), x[:, k])
                                    for k, g in enumerate(self.grids)], 1))
        with jax.enable_x64(True):
            us = tuple(u[idx] for u in self.u)
            f = jax.vmap(lambda us, w: mean_f(us, w, pos, self.config))(us, self.core[idx])
            draws = {"f": np.asarray(f * self.y_scale + self.y_mean),
                     "noise": np.asarray(self.y_scale**2 / self.tau[idx])}
            if not self.config.cp:
                R, K = self.config.rank, self.config.num_modes
                draws["core"] = np.asarray(self.core[idx]).reshape((num_samples,) + (R,) * K)
        return draws


@eqx.filter_jit
def _f_draws_jit(fitted: NUTSFitted, x):
    return fitted._f_draws(x)
