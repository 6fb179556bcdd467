"""Amortised inference with a PFN: shipped weights vs NUTS, and a PFN trained on your own prior.

Left panel: one dataset from the 1-D GP prior with hyperpriors; the shipped ``gp1d-hyper`` PFN's
predictive (one forward pass) beside the GP predictive averaged over NUTS draws of the
hyperparameters (probkit's HMC engine). Right panel: a PFN trained for ``--seconds`` on the prior
predictive of a NumPyro Bayesian linear regression, beside the exact conjugate predictive.

    python examples/pfn_amortised_inference.py --out . --seconds 60
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit.inference.hmc import run
from probkit.inference.pfn import init, load_pretrained, train
from probkit.inference.pfn.pretrained import prior as shipped_prior
from probkit.kernels import Matern52
from probkit.priors import NumPyroPrior

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE = 0.3


def gp_model(x, y=None):
    """The hyperprior GP of the shipped ``gp1d-hyper`` PFN, as a NumPyro model."""
    ls = numpyro.sample("lengthscale", dist.Gamma(3.0, 6.0))
    var = numpyro.sample("variance", dist.Gamma(2.0, 2.0))
    noise = numpyro.sample("noise", dist.Gamma(2.0, 50.0))
    k = Matern52(ls, var)(x, x) + (noise + 1e-6 * var) * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), k), obs=y)


def blr(x):
    """A user's prior: y = b + w x + noise with (b, w) ~ N(0, I) and known noise."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(w[0] + w[1] * x[:, 0], NOISE))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    key = jax.random.key(0)
    grid = jnp.linspace(0, 1, 150)[:, None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))

    # 1. shipped PFN vs NUTS on the hyperprior GP
    pfn, prior = load_pretrained("gp1d-hyper"), shipped_prior("gp1d-hyper")
    data = prior.sample(key, 1, 15)
    xt, yt = data.x[0], data.y[0]
    t0 = time.perf_counter()
    pred = pfn.predict(xt, yt, grid)
    band = np.asarray(pred.quantile(jnp.array([0.05, 0.95])))
    t_pfn = time.perf_counter() - t0
    with jax.enable_x64(True):
        x64, y64 = jnp.asarray(xt, jnp.float64), jnp.asarray(yt, jnp.float64)
        t0 = time.perf_counter()
        res = run(gp_model, x64, y64, key=jax.random.key(1), num_warmup=300, num_samples=300,
                  num_chains=2, progress_bar=False)
        post = {k: jnp.asarray(v).reshape(-1) for k, v in res.posterior.items()}
        means, variances = jax.vmap(lambda ls, v, nz: prior.predictive(
            x64, y64, jnp.asarray(grid, jnp.float64),
            {"lengthscale": ls[None], "variance": v, "noise": nz}))(
            post["lengthscale"], post["variance"], post["noise"])
        t_nuts = time.perf_counter() - t0
    eps = np.random.default_rng(0).normal(size=(20,) + means.shape)  # 20 per posterior draw
    draws = (np.asarray(means) + np.sqrt(np.asarray(variances)) * eps).reshape(-1, means.shape[1])
    g = np.asarray(grid[:, 0])
    ax = axes[0]
    ax.fill_between(g, *np.percentile(draws, [5, 95], axis=0), alpha=0.25, color="C0",
                    label=f"NUTS 90% ({t_nuts:.1f} s incl. compile)")
    ax.plot(g, band[0], "C3--", lw=1, label=f"PFN 90% ({t_pfn * 1e3:.0f} ms incl. compile)")
    ax.plot(g, band[1], "C3--", lw=1)
    ax.plot(g, np.asarray(pred.mean), "C3", lw=1)
    ax.plot(np.asarray(xt[:, 0]), np.asarray(yt), "k.")
    ax.set_title("GP with hyperpriors: shipped PFN vs NUTS")
    ax.legend(fontsize=7)

    # 2. a PFN trained on a user's NumPyro prior
    uprior = NumPyroPrior(blr, input_dim=1)
    upfn = init(uprior, key=jax.random.key(2), max_points=30, num_buckets=80, emsize=48,
                num_layers=2, num_heads=4, prior_name="blr")
    fit = train(upfn, uprior, key=jax.random.key(3), time_budget=args.seconds, batch_size=64,
                learning_rate=2e-3, steps_per_dispatch=20)
    d = uprior.sample(jax.random.key(4), 1, 6)
    xt, yt = np.asarray(d.x[0], np.float64), np.asarray(d.y[0], np.float64)
    upred = fit.pfn.predict(xt, yt, grid)
    phi = np.column_stack([np.ones(len(xt)), xt[:, 0]])
    phg = np.column_stack([np.ones(len(g)), g])
    cov = np.linalg.inv(np.eye(2) + phi.T @ phi / NOISE**2)
    m = phg @ (cov @ phi.T @ yt / NOISE**2)
    s = np.sqrt(np.einsum("ij,jk,ik->i", phg, cov, phg) + NOISE**2)
    ax = axes[1]
    ax.fill_between(g, m - 1.645 * s, m + 1.645 * s, alpha=0.25, color="C0",
                    label="exact conjugate 90%")
    q = np.asarray(upred.quantile(jnp.array([0.05, 0.95])))
    ax.plot(g, q[0], "C3--", lw=1, label=f"PFN 90% ({fit.steps} steps, {fit.seconds:.0f} s)")
    ax.plot(g, q[1], "C3--", lw=1)
    ax.plot(xt[:, 0], yt, "k.")
    ax.set_title("Your NumPyro prior: Bayesian linear regression")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = args.out / "pfn_amortised_inference.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
