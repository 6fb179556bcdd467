"""Demo section: eight schools (non-centred) with the BlackJAX NUTS engine, read in ArviZ."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit.inference import hmc
from probkit.result import import_arviz, loo_elpd

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    """Non-centred eight schools (Rubin 1981; Gelman et al., BDA3 ch. 5)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def demo(out: Path, *, key: jax.Array, progress_bar: bool = True) -> str:
    """Sample eight schools, save the ArviZ netCDF file and a trace plot; return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    az = import_arviz()
    res = hmc.run(eight_schools, SIGMA, y=Y, key=key, num_warmup=1000, num_samples=1000,
                  num_chains=4, target_accept=0.9, progress_bar=progress_bar)
    idata = res.to_arviz()
    idata.to_netcdf(str(out / "eight_schools.nc"))
    az.plot_trace(idata, var_names=["mu", "tau"])
    plt.tight_layout()
    plt.savefig(out / "eight_schools_trace.png", dpi=100)
    plt.close("all")
    table = az.summary(idata, var_names=["mu", "tau", "theta"]).to_string()
    # PSIS-LOO's Pareto k-hat > 0.7 means leaving that school out changes the posterior too
    # much for importance sampling (Vehtari et al. 2017): ArviZ warns; the demo reports it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto",
                                category=UserWarning)
        loo = az.loo(idata, pointwise=True)
    elpd, se = loo_elpd(loo)
    high_k = int((np.asarray(loo.pareto_k) > 0.7).sum())
    ndiv = int(res.sample_stats["diverging"].sum())
    return (f"{table}\n\ndivergences: {ndiv}; elpd_loo = {elpd:.2f} (se {se:.2f}; Pareto "
            f"k-hat > 0.7 for {high_k} of {Y.shape[0]} schools); sampling took "
            f"{res.attrs['seconds']:.1f} s\nwrote eight_schools.nc and eight_schools_trace.png")
