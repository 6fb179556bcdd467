"""probkit's four samplers and numpyro.infer.NUTS on a standard model set (issue 18).

Models: eight schools (centred and non-centred), a 100-group varying-intercept regression
(radon-style, simulated), logistic regression n = 10^4, d = 50, a stochastic-volatility model
(T = 500, simulated), Neal's funnel (d = 10) and a 50-D Gaussian with condition number 10^4
(NUTS with a dense mass matrix as well).

For every (model, sampler): one compiling call, then one timed refit with a new key, 4 chains x
(``--warmup`` + ``--draws``). Reported: refit seconds, min ESS_bulk over all scalar
parameters, min ESS_bulk / s, ESS per 1,000 gradient evaluations (probkit: ``n_grad``;
NumPyro: ``num_steps``), divergences, max R-hat, and agreement with reference moments: the
largest ``|mean - reference| / sqrt(mcse^2 + reference_mcse^2)`` over parameters (and the same
for standard deviations), where the reference is analytic (funnel, Gaussian) or a long NumPyro
NUTS run (4 x 4000 after 2000 warm-up) otherwise. A sampler "agrees" when both are below 4.

    python benchmarks/samplers.py                      # full (results/samplers.json)
    python benchmarks/samplers.py --models funnel10 --warmup 500 --draws 500
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import row, write_results
from hmc import eight_schools as eight_schools_noncentred
from hmc import logistic
from numpyro.infer import MCMC, NUTS

from probkit.inference import hmc

SIGMA = jnp.array([15.0, 10, 16, 11, 9, 11, 10, 18])
Y8 = jnp.array([28.0, 8, -3, 7, -1, 1, 18, 12])


def eight_schools_centred(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def varying_intercept(x, county, num_counties, y=None):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1.0))
    with numpyro.plate("county", num_counties):
        a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
    numpyro.sample("y", dist.Normal(a[county] + beta * x, sigma_y), obs=y)


def stochastic_volatility(returns):
    """Kim, Shephard & Chib (1998) in its non-centred form: h_t = mu + sigma z-AR(1)."""
    mu = numpyro.sample("mu", dist.Normal(-1.0, 1.0))
    phi_raw = numpyro.sample("phi_raw", dist.Beta(20.0, 1.5))
    phi = numpyro.deterministic("phi", 2.0 * phi_raw - 1.0)
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([returns.shape[0]]).to_event(1))

    def step(h_prev, z_t):
        h = mu + phi * (h_prev - mu) + sigma * z_t
        return h, h

    h0 = mu + sigma / jnp.sqrt(1.0 - phi**2) * z[0]
    _, h = jax.lax.scan(step, h0, z[1:])
    h = jnp.concatenate([h0[None], h])
    numpyro.sample("r", dist.Normal(0.0, jnp.exp(h / 2.0)), obs=returns)


def funnel(d):
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2.0)).expand([d - 1]).to_event(1))


def ill_conditioned_gaussian(scales):
    """N(0, diag(scales^2)) rotated by a fixed orthogonal matrix (condition number of the
    covariance (max/min scale)^2 = 1e4)."""
    q = np.linalg.qr(np.random.default_rng(3).normal(size=(scales.shape[0],) * 2))[0]
    cov = (q * scales**2) @ q.T
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(scales.shape[0]),
                                                covariance_matrix=jnp.asarray(cov)))


def model_set() -> dict:
    rng = np.random.default_rng(0)
    counties = 100
    county = np.repeat(np.arange(counties), 9)
    xr = rng.integers(0, 2, size=county.size).astype(np.float32)
    a = 1.4 + 0.3 * rng.normal(size=counties)
    yr = a[county] - 0.6 * xr + 0.7 * rng.normal(size=county.size)
    xl = rng.normal(size=(10_000, 50)) / np.sqrt(50)
    wl = rng.normal(size=50)
    yl = (rng.uniform(size=10_000) < 1 / (1 + np.exp(-(xl @ wl)))).astype(np.int32)
    t, h, returns = 500, -1.0, []
    for _ in range(t):
        h = -1.0 + 0.95 * (h + 1.0) + 0.25 * rng.normal()
        returns.append(np.exp(h / 2) * rng.normal())
    scales = np.logspace(0, 2, 50)  # sd 1..100: covariance condition number 1e4
    return {
        "eight_schools_noncentred": (eight_schools_noncentred, (SIGMA,), {"y": Y8}, None),
        "eight_schools_centred": (eight_schools_centred, (SIGMA,), {"y": Y8}, None),
        "varying_intercept_100": (varying_intercept, (jnp.asarray(xr), jnp.asarray(county),
                                                      counties), {"y": jnp.asarray(yr)}, None),
        "logistic_n10000_d50": (logistic, (jnp.asarray(xl, jnp.float32),),
                                {"y": jnp.asarray(yl)}, None),
        "stochastic_volatility_500": (stochastic_volatility,
                                      (jnp.asarray(returns, jnp.float32),), {}, None),
        "funnel10": (funnel, (10,), {}, "funnel"),
        "gaussian50_cond1e4": (ill_conditioned_gaussian, (scales,), {}, scales),
    }


def scalars(posterior: dict, skip=("phi",)) -> dict[str, np.ndarray]:
    """Every scalar parameter as ``(chain, draw)``, named ``site[i]``."""
    out = {}
    for k, v in posterior.items():
        if k in skip:
            continue
        v = np.asarray(v, np.float64)
        flat = v.reshape(v.shape[:2] + (-1,))
        for i in range(flat.shape[-1]):
            out[f"{k}[{i}]" if flat.shape[-1] > 1 else k] = flat[..., i]
    return out


def moments(draws: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float, float]]:
    """``name -> (mean, mcse_mean, sd, mcse_sd)``."""
    idata = az.from_dict(posterior={k: v for k, v in draws.items()})
    mm = az.mcse(idata, method="mean")
    ms = az.mcse(idata, method="sd")
    return {k: (float(v.mean()), float(mm[k]), float(v.std()), float(ms[k]))
            for k, v in draws.items()}


def analytic(kind, names) -> dict[str, tuple[float, float, float, float]]:
    if isinstance(kind, str):  # "funnel"
        # v ~ N(0, 3); x_i | v ~ N(0, e^{v/2}): E x_i = 0, Var x_i = E e^v = e^{9/2}
        return {n: ((0.0, 0.0, 3.0, 0.0) if n == "v" else (0.0, 0.0, np.exp(2.25), 0.0))
                for n in names}
    q = np.linalg.qr(np.random.default_rng(3).normal(size=(kind.shape[0],) * 2))[0]
    sd = np.sqrt(np.diag((q * kind**2) @ q.T))
    return {f"x[{i}]": (0.0, 0.0, float(sd[i]), 0.0) for i in range(kind.shape[0])}


def agreement(est: dict, ref: dict) -> tuple[float, float]:
    """Largest z-scores of the means and of the standard deviations against the reference."""
    zm = max(abs(est[k][0] - ref[k][0]) / np.hypot(est[k][1], ref[k][1]) for k in ref)
    zs = max(abs(est[k][2] - ref[k][2]) / np.hypot(est[k][3], ref[k][3]) for k in ref)
    return float(zm), float(zs)


def run_probkit(model, args, kwargs, key, sampler, warmup, draws, dense=False):
    t = time.perf_counter()
    res = hmc.run(model, *args, key=key, sampler=sampler, num_warmup=warmup,
                  num_samples=draws, num_chains=4, progress_bar=False, log_likelihood=False,
                  dense_mass=dense, **kwargs)
    secs = time.perf_counter() - t
    n_grad = float(np.sum(res.sample_stats["n_grad"]))
    return secs, res.posterior, n_grad, int(np.sum(res.sample_stats["diverging"]))


def run_numpyro(model, args, kwargs, key, warmup, draws, dense=False):
    mcmc = MCMC(NUTS(model, dense_mass=dense), num_warmup=warmup, num_samples=draws,
                num_chains=4, chain_method="vectorized", progress_bar=False)
    t = time.perf_counter()
    mcmc.run(key, *args, extra_fields=("diverging", "num_steps"), **kwargs)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    secs = time.perf_counter() - t
    extra = mcmc.get_extra_fields()
    return secs, samples, float(np.sum(extra["num_steps"])), int(np.sum(extra["diverging"]))


def run_one(lib, sampler, dense, model, args, kwargs, warmup, draws, key):
    if lib == "numpyro":
        return run_numpyro(model, args, kwargs, key, warmup, draws, dense)
    return run_probkit(model, args, kwargs, key, sampler, warmup, draws, dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--samplers", nargs="*",
                        default=["probkit-nuts", "probkit-mams", "probkit-mclmc",
                                 "numpyro-nuts"])
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--reference-draws", type=int, default=4000)
    opts = parser.parse_args()
    rows, summary = [], {}
    for name, (model, args, kwargs, exact) in model_set().items():
        if opts.models and name not in opts.models:
            continue
        methods = list(opts.samplers)
        if name == "gaussian50_cond1e4":
            methods.insert(1, "probkit-nuts-dense")
        if exact is None:
            t = time.perf_counter()
            _, ref_post, _, _ = run_numpyro(model, args, kwargs, jax.random.key(999),
                                            opts.reference_draws // 2, opts.reference_draws)
            ref = moments(scalars(ref_post))
            print(f"{name}: reference NumPyro run {time.perf_counter() - t:.0f} s", flush=True)
        for method in methods:
            lib, _, sampler = method.partition("-")
            dense = sampler.endswith("-dense")
            sampler = sampler.removesuffix("-dense")

            job = (lib, sampler, dense, model, args, kwargs, opts.warmup, opts.draws)
            t0 = time.perf_counter()
            run_one(*job, jax.random.key(1))
            first = time.perf_counter() - t0
            secs, post, n_grad, ndiv = run_one(*job, jax.random.key(2))
            draws = scalars(post)
            est = moments(draws)
            reference = analytic(exact, list(draws)) if exact is not None else ref
            zm, zs = agreement(est, reference)
            idata = az.from_dict(posterior=draws)
            ess = float(np.min(az.ess(idata, method="bulk").to_array()))
            rhat = float(np.max(az.rhat(idata).to_array()))
            setting = f"chains=4,warmup={opts.warmup},draws={opts.draws}"
            vals = {"refit_seconds": secs, "first_call_seconds": first, "min_ess_bulk": ess,
                    "min_ess_bulk_per_s": ess / secs, "ess_per_1000_grad": 1000 * ess / n_grad,
                    "grad_evals": n_grad, "divergences": ndiv, "max_rhat": rhat,
                    "max_z_mean": zm, "max_z_sd": zs}
            rows += [row(name, method, setting, k, v, seconds=secs) for k, v in vals.items()]
            summary.setdefault(name, {})[method] = vals
            print(f"{name:26s} {method:19s} refit {secs:6.1f} s  ESS {ess:7.0f}  ESS/s "
                  f"{ess / secs:8.1f}  ESS/1k grad {1000 * ess / n_grad:6.2f}  div {ndiv:4d}  "
                  f"rhat {rhat:.3f}  z(mean) {zm:5.1f}  z(sd) {zs:5.1f}", flush=True)
        write_results("samplers", rows, summary=summary)  # after every model: nothing lost


if __name__ == "__main__":
    main()
