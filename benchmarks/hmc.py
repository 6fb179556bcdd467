"""probkit's BlackJAX NUTS engine vs numpyro.infer.NUTS, same models, chains and draws.

For each model both samplers run three times with fresh keys after a first (compiling) call;
the table reports the compile time (first call minus the median refit), the median wall time
of a refit with same-shaped data (what a user pays when refitting), and the minimum over
parameters of ESS_bulk per second of that refit. Also simulation-based calibration of the
engine on a small hierarchical model (Talts et al. 2018).

    python benchmarks/hmc.py            # full run (writes benchmarks/results/hmc.json)
    python benchmarks/hmc.py --quick    # reduced, < 2 minutes
"""

from __future__ import annotations

import argparse
import statistics
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import row, write_results
from numpyro.infer import MCMC, NUTS

from probkit.inference import hmc
from probkit.inference.sbc import rank_uniformity_pvalues, simulation_based_calibration


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def logistic(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def hierarchical(x, group, num_groups, y=None):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    sd_a = numpyro.sample("sd_a", dist.HalfNormal(2.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", num_groups):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    a = mu_a + sd_a * z
    numpyro.sample("y", dist.Normal(a[group] + beta * x, sigma), obs=y)


def datasets():
    rng = np.random.default_rng(0)
    es = ((jnp.array([15.0, 10, 16, 11, 9, 11, 10, 18]),),
          {"y": jnp.array([28.0, 8, -3, 7, -1, 1, 18, 12])})
    x = rng.normal(size=(1000, 10))
    w = rng.normal(size=10)
    ylog = (rng.uniform(size=1000) < 1 / (1 + np.exp(-(x @ w + 0.5)))).astype(np.int32)
    lr = ((jnp.asarray(x),), {"y": jnp.asarray(ylog)})
    g = 60
    group = np.repeat(np.arange(g), 10)
    a = 1.0 + 0.8 * rng.normal(size=g)
    xh = rng.normal(size=group.size)
    yh = a[group] + 0.5 * xh + 0.7 * rng.normal(size=group.size)
    hr = ((jnp.asarray(xh), jnp.asarray(group), g), {"y": jnp.asarray(yh)})
    return {"eight_schools": (eight_schools, *es), "logistic_n1000_d10": (logistic, *lr),
            "hierarchical_60_groups": (hierarchical, *hr)}


def min_ess(posterior: dict) -> float:
    idata = az.from_dict(posterior={k: np.asarray(v) for k, v in posterior.items()})
    ess = az.ess(idata, method="bulk")
    return float(min(float(ess[v].min()) for v in ess.data_vars))


def run_probkit(model, args, kwargs, key, n):
    t = time.perf_counter()
    res = hmc.run(model, *args, key=key, num_warmup=n, num_samples=n, num_chains=4,
                  progress_bar=False, log_likelihood=False, **kwargs)
    return time.perf_counter() - t, res.posterior, int(res.sample_stats["diverging"].sum())


def run_numpyro(model, args, kwargs, key, n):
    mcmc = MCMC(NUTS(model), num_warmup=n, num_samples=n, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    t = time.perf_counter()
    mcmc.run(key, *args, extra_fields=("diverging",), **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    seconds = time.perf_counter() - t
    return seconds, samples, int(mcmc.get_extra_fields()["diverging"].sum())


def sbc(num_replications: int):
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        with numpyro.plate("group", 4):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(mu + tau * eta, 1.0), obs=y)

    t = time.perf_counter()
    out = simulation_based_calibration(model, key=jax.random.key(2018), observed="y",
                                       num_replications=num_replications, num_warmup=300,
                                       num_draws=99, thinning=3)
    seconds = time.perf_counter() - t
    pvals = rank_uniformity_pvalues(out, num_bins=10)
    return {k: np.atleast_1d(v).tolist() for k, v in pvals.items()}, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 300 if opts.quick else 1000
    repeats = 1 if opts.quick else 3
    rows = []
    for name, (model, args, kwargs) in datasets().items():
        per_method = {}
        for method, runner in (("probkit-nuts", run_probkit), ("numpyro-nuts", run_numpyro)):
            first, _, _ = runner(model, args, kwargs, jax.random.key(100), n)
            times, rates, divs = [], [], []
            for r in range(repeats):
                secs, post, ndiv = runner(model, args, kwargs, jax.random.key(r), n)
                times.append(secs)
                rates.append(min_ess(post) / secs)
                divs.append(ndiv)
            med_t = statistics.median(times)
            med_rate = statistics.median(rates)
            per_method[method] = med_rate
            setting = f"chains=4,warmup={n},draws={n},repeats={repeats}"
            rows += [row(name, method, setting, "ess_bulk_per_s", med_rate, seconds=med_t),
                     row(name, method, setting, "seconds", med_t),
                     row(name, method, setting, "compile_seconds", max(first - med_t, 0.0)),
                     row(name, method, setting, "divergences", statistics.median(divs))]
            print(f"{name:24s} {method:13s} refit {med_t:6.2f} s  first {first:6.2f} s  "
                  f"min ESS_bulk/s {med_rate:8.1f}  divergences {divs}", flush=True)
        ratio = per_method["probkit-nuts"] / per_method["numpyro-nuts"]
        rows.append(row(name, "probkit-nuts", f"chains=4,warmup={n},draws={n}",
                        "ess_bulk_per_s_ratio", ratio))
        print(f"{name:24s} ratio probkit/numpyro ESS/s = {ratio:.2f}", flush=True)
    reps = 40 if opts.quick else 200
    pvals, secs = sbc(reps)
    worst = min(min(v) for v in pvals.values())
    rows.append(row("sbc_hierarchical_4_groups", "probkit-nuts", f"replications={reps},draws=99",
                    "min_chi2_pvalue", worst, seconds=secs))
    print(f"SBC ({reps} replications, {secs:.1f} s): chi-square p-values {pvals}")
    write_results("hmc", rows, quick=opts.quick, sbc_pvalues=pvals)


if __name__ == "__main__":
    main()
