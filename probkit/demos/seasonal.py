r"""Demo section: a seasonal series (monthly Mauna Loa CO2) with an O(n) state-space GP.

The model, on CO2 less a least-squares quadratic and scaled (:math:`y`), at times :math:`t` in
years since 1958,

.. math::

    y_k = f(t_k) + \epsilon_k, \qquad \epsilon_k \sim \mathcal N(0, \sigma_n^2), \qquad
    f \sim \mathcal{GP}(0,\; k_{\rm trend} + k_{\rm season} + k_{\rm short}),

with a smooth trend :math:`k_{\rm trend} = \text{Matern-5/2}(\ell_{\rm tr}, \sigma^2_{\rm tr})`,
a quasi-periodic yearly cycle :math:`k_{\rm season} = \text{Periodic}(\ell_{\rm per},
p = 1\,\text{yr}) \times \text{Matern-1/2}(\ell_{\rm dec}, \sigma^2_{\rm s})` whose shape may
drift over decades (the Matern-1/2 decay keeps the state small: :math:`2J + 1` instead of
:math:`2(2J + 1)` for Matern-3/2, which makes NUTS about 2.5 times faster here), and
short-term irregularities :math:`k_{\rm short} = \text{Matern-1/2}(\ell_{\rm sh},
\sigma^2_{\rm sh})` (the decomposition of Rasmussen &
Williams 2006, section 5.4.3, with Markovian kernels so that the likelihood is a Kalman filter,
Hartikainen & Särkkä 2010; the periodic factor is Solin & Särkkä's 2014 harmonic series with
:data:`ORDER` harmonics). The section fits the hyperparameters by MAP (Adam on the
unconstrained log-posterior, :mod:`probkit.inference.optimize`), draws 10-year forecast bands
with :func:`probkit.inference.kalman.gp_posterior` and checks the state-space log-likelihood
against a dense Cholesky GP. ``examples/seasonal_co2.py`` samples the same model with NUTS.

All computations need float64: call the functions here inside ``with jax.enable_x64(True):``
(:func:`demo` does so itself).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.util import potential_energy

from probkit.datasets import load_co2
from probkit.distributions import StateSpaceGP
from probkit.inference import optimize
from probkit.inference.kalman import gp_posterior
from probkit.kernels import Matern12, Matern52, Periodic
from probkit.statespace import as_sde

__all__ = ["ORDER", "T0", "PRIORS", "SITES", "co2_data", "to_ppm", "co2_kernel", "co2_sde",
           "co2_model", "fit_map", "forecast", "dense_log_likelihood", "plot_forecast",
           "demo"]

#: Harmonics of the yearly periodic factor in the fitted model (state dimension
#: ``3 + (2 ORDER + 1) + 1 = 13``); 4 harmonics resolve the asymmetric CO2 cycle.
ORDER = 4
#: Origin of the time axis (years).
T0 = 1958.0

#: Priors of the hyperparameters: times in years; ``y`` is the CO2 minus a least-squares
#: quadratic in time, scaled to unit variance (1 unit is about 2.2 ppm, most of it the yearly
#: cycle); lengthscales in years except the periodic one (relative to the period).
PRIORS = {
    "trend_lengthscale": dist.LogNormal(float(np.log(10.0)), 0.7),
    "trend_variance": dist.LogNormal(float(np.log(0.1)), 1.0),
    "season_lengthscale": dist.LogNormal(0.0, 0.4),
    "season_decay": dist.LogNormal(float(np.log(20.0)), 0.7),
    "season_variance": dist.LogNormal(float(np.log(0.5)), 1.0),
    "short_lengthscale": dist.LogNormal(0.0, 0.7),
    "short_variance": dist.LogNormal(float(np.log(0.02)), 1.5),
    "noise": dist.LogNormal(float(np.log(0.01)), 1.5),
}
#: Names of the hyperparameter sample sites, in a fixed order.
SITES = tuple(PRIORS)


def co2_data(stop: float | None = None) -> dict[str, np.ndarray]:
    """The monthly CO2 series on the model's scale.

    The GP has mean zero; the series is first reduced by a least-squares quadratic in time
    (a fixed mean function, fitted once: the growth of CO2 accelerates over the record, and a
    zero-mean GP alone would let a 10-year forecast revert to the average level), then scaled
    to unit variance.

    Parameters
    ----------
    stop : float, optional
        Keep months before this decimal year (default: all of 1958-2001).

    Returns
    -------
    dict
        ``t`` (years since :data:`T0`), ``y`` (scaled residuals), ``coef`` (quadratic,
        highest power first, in ``t``) and ``scale`` (ppm): ``co2 = polyval(coef, t) + scale *
        y``; ``time`` and ``co2`` as loaded.
    """
    d = load_co2(stop=stop)
    t = d["time"] - T0
    coef = np.polyfit(t, d["co2"], 2)
    resid = d["co2"] - np.polyval(coef, t)
    scale = float(resid.std())
    return {"t": t, "y": resid / scale, "coef": coef, "scale": scale, "time": d["time"],
            "co2": d["co2"]}


def to_ppm(data: dict, t, y, var=None):
    """Back to ppm: ``polyval(coef, t) + scale * y`` (and ``scale**2 * var`` if given)."""
    ppm = np.polyval(data["coef"], t) + data["scale"] * np.asarray(y)
    return ppm if var is None else (ppm, data["scale"] ** 2 * np.asarray(var))


def co2_kernel(theta) -> Matern52:
    """The dense kernel ``trend + season + short`` for hyperparameters ``theta`` (a mapping
    with the keys of :data:`SITES`; ``noise`` is not used)."""
    return (Matern52(theta["trend_lengthscale"], theta["trend_variance"])
            + Periodic(theta["season_lengthscale"], 1.0, period=1.0)
            * Matern12(theta["season_decay"], theta["season_variance"])
            + Matern12(theta["short_lengthscale"], theta["short_variance"]))


def co2_sde(theta, order: int = ORDER):
    """State-space form of :func:`co2_kernel` with ``order`` harmonics in the periodic factor."""
    return as_sde(co2_kernel(theta), periodic_order=order)


def co2_model(t, y=None, *, order: int = ORDER):
    """NumPyro model: hyperparameters from :data:`PRIORS`, ``y ~ StateSpaceGP`` (O(n) Kalman
    log-likelihood; ``order`` harmonics in the periodic factor)."""
    theta = {name: numpyro.sample(name, prior) for name, prior in PRIORS.items()}
    return numpyro.sample("y", StateSpaceGP(co2_sde(theta, order), t, theta["noise"]), obs=y)


def _neg_log_posterior(u, key, t, y):
    del key
    return potential_energy(co2_model, (t, y), {}, u)


def fit_map(t, y, *, key: jax.Array, num_steps: int = 300,
            learning_rate: float = 0.05) -> dict[str, float]:
    """MAP hyperparameters of :func:`co2_model` (in the log-parametrisation NumPyro samples
    in), by Adam from the prior medians.

    Parameters
    ----------
    t, y : array, shape (n,)
        Sorted times and standardised observations.
    key : PRNG key
        Passed to the optimiser (the loss itself is deterministic).
    num_steps : int
        Adam steps.
    learning_rate : float
        Adam step size.

    Returns
    -------
    dict
        Hyperparameters by site name (constrained values, floats).
    """
    dtype = jnp.result_type(float)
    u0 = {name: jnp.asarray(prior.loc, dtype) for name, prior in PRIORS.items()}
    res = optimize.run(_neg_log_posterior, u0, key=key,
                       args=(jnp.asarray(t, dtype), jnp.asarray(y, dtype)),
                       num_steps=num_steps, learning_rate=learning_rate, progress_bar=False)
    return {name: float(jnp.exp(v)) for name, v in res.params.items()}


def forecast(draws: list, t, y, test_t, *, order: int = ORDER):
    """Predictive mean and variance of ``y`` at ``test_t``, averaged over hyperparameter draws.

    For each draw the exact GP posterior at ``test_t`` comes from
    :func:`probkit.inference.kalman.gp_posterior` (O(n)); the draws are combined as an equally
    weighted mixture (law of total variance), observation noise included.

    Parameters
    ----------
    draws : list of dict
        Hyperparameters by site name (one dict per draw; one dict for a plug-in forecast).
    t, y : array, shape (n,)
        Training times and standardised observations.
    test_t : array, shape (m,)
        Times to predict at.
    order : int
        Harmonics of the periodic factor.

    Returns
    -------
    mean, var : ndarray, shape (m,)
    """
    means, second = [], []
    for theta in draws:
        post = gp_posterior(co2_sde(theta, order), t, y, theta["noise"], test_times=test_t)
        m, v = np.asarray(post.test_mean), np.asarray(post.test_var) + float(theta["noise"])
        means.append(m)
        second.append(v + m ** 2)
    mean = np.mean(means, axis=0)
    return mean, np.mean(second, axis=0) - mean ** 2


def dense_log_likelihood(kernel, t, y, noise) -> float:
    r""":math:`\log \mathcal N(y; 0, K + \sigma_n^2 I)` by a dense Cholesky factorisation
    (O(n^3); float64 needed). ``kernel`` is a dense kernel of :mod:`probkit.kernels`, or any
    callable ``kernel(x1, x2)`` on ``(n, 1)`` inputs."""
    x = jnp.asarray(t)[:, None]
    y = jnp.asarray(y)
    K = kernel(x, x) + noise * jnp.eye(y.shape[0], dtype=y.dtype)
    chol = jnp.linalg.cholesky(K)
    alpha = jax.scipy.linalg.solve_triangular(chol, y, lower=True)
    return float(-0.5 * alpha @ alpha - jnp.sum(jnp.log(jnp.diag(chol)))
                 - 0.5 * y.shape[0] * np.log(2.0 * np.pi))


def plot_forecast(path: Path, data: dict, fit: tuple, fc: tuple, title: str) -> None:
    """Two panels: the whole record with the 10-year forecast, and its last 12 years."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tf, mf, vf), (tt, mt, vt) = fit, fc
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for ax, lo in zip(axes, (-np.inf, data["time"][-1] - 12.0), strict=True):
        ax.plot(data["time"][data["time"] > lo], data["co2"][data["time"] > lo], "k.", ms=2,
                label="monthly CO2 (Scripps)")
        for tx, m, v, col, lab in ((tf, mf, vf, "C0", "fit"), (tt, mt, vt, "C3", "forecast")):
            keep = tx + T0 > lo
            mm, vv = to_ppm(data, tx[keep], m[keep], v[keep])
            x, sd = tx[keep] + T0, np.sqrt(vv)
            ax.plot(x, mm, color=col, lw=1, label=f"{lab} mean")
            ax.fill_between(x, mm - 2 * sd, mm + 2 * sd, color=col, alpha=0.3,
                            label=f"{lab} +-2 sd")
        ax.set_xlabel("year")
        ax.set_ylabel("CO2 (ppm)")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].set_title(title, fontsize=9)
    axes[1].set_title("last 12 years and the forecast", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo(out: Path, *, key: jax.Array, num_steps: int = 300) -> str:
    """MAP fit of the CO2 model, 10-year forecast bands, figure ``seasonal_co2_map.png``, and the
    dense-vs-state-space log-likelihood check; returns a text report.

    Parameters
    ----------
    out : Path
        Folder for the figure.
    key : PRNG key
        For the optimiser.
    num_steps : int
        Adam steps of the MAP fit (fewer for a quick smoke run).
    """
    with jax.enable_x64(True):
        data = co2_data()
        t, y = data["t"], data["y"]
        t0 = time.perf_counter()
        theta = fit_map(t, y, key=key, num_steps=num_steps)
        t_fit = time.perf_counter() - t0
        step = 1.0 / 12.0
        test_t = t[-1] + step * np.arange(1, 121)
        fit_t = np.linspace(t[0], t[-1], 600)
        fc = forecast([theta], t, y, test_t)
        fitted = forecast([theta], t, y, fit_t)
        ll_ss = float(StateSpaceGP(co2_sde(theta), t, theta["noise"]).log_prob(jnp.asarray(y)))
        ll_hi = float(StateSpaceGP(co2_sde(theta, order=16), t, theta["noise"]).log_prob(
            jnp.asarray(y)))
        ll_dense = dense_log_likelihood(co2_kernel(theta), t, y, theta["noise"])
    path = Path(out) / "seasonal_co2_map.png"
    plot_forecast(path, data, (fit_t, *fitted), (test_t, *fc),
                  "Mauna Loa CO2: MAP state-space GP, trend + quasi-periodic + short-term")
    end, var_end = to_ppm(data, test_t[-1], fc[0][-1], fc[1][-1])
    sd_end = float(np.sqrt(var_end))
    lines = [f"{len(t)} months, 1958-2001; MAP by {num_steps} Adam steps in {t_fit:.1f} s",
             "  " + ", ".join(f"{k} {v:.4g}" for k, v in theta.items()),
             f"forecast Dec 2011: {end:.1f} +- {2 * sd_end:.1f} ppm (2 sd)",
             f"log p(y): state space ({ORDER} harmonics) {ll_ss:.6f}, (16 harmonics) "
             f"{ll_hi:.6f}, dense Cholesky {ll_dense:.6f}; |16-harmonic - dense| = "
             f"{abs(ll_hi - ll_dense):.2e}",
             f"figure: {path}"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(demo(Path("."), key=jax.random.key(0)))
