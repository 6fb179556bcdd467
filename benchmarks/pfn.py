"""PFN vs exact Bayesian inference on data from the PFN's own prior (issue 7).

Three comparisons, each on held-out datasets drawn from the prior (same data for both methods):

1. ``gp1d-rbf`` (shipped weights): 1-D GP, RBF kernel, lengthscale 0.2, output variance 1,
   noise variance 0.01, x ~ U[0, 1]. PFN mean test NLL vs the exact GP posterior predictive,
   n_train in {5, 10, 20, 50}, 1000 datasets of 10 test points each (metric ``nll_gap``).
2. ``gp1d-hyper`` (shipped weights): Matern-5/2 with hyperpriors (lengthscale ~ Gamma(3, 6),
   variance ~ Gamma(2, 2), noise ~ Gamma(2, 50)). PFN vs the GP predictive averaged over NUTS
   draws of the hyperparameters (probkit's HMC engine, 2 chains x 250 warm-up + 250 draws), and the
   wall time per dataset of each.
3. ``blr`` (a user's NumPyro prior): Bayesian linear regression with known noise,
   y = b + w x + eps, (b, w) ~ N(0, I), eps ~ N(0, 0.3^2), x ~ U[0, 1]; a PFN trained from that
   model's prior predictive for ``--blr-seconds`` on this CPU vs the exact conjugate predictive.

    python benchmarks/pfn.py            # full table (about 20 minutes on 2 cores)
    python benchmarks/pfn.py --quick    # reduced, < 2 minutes
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import row, write_results

from probkit.inference.pfn import init, load_pretrained, predict_batch, train
from probkit.inference.pfn.pretrained import prior as shipped_prior
from probkit.priors import NumPyroPrior

NUM_TEST = 10
BLR_NOISE = 0.3


def _split(data, n_train):
    return (data.x[:, :n_train], data.y[:, :n_train], data.x[:, n_train:n_train + NUM_TEST],
            data.y[:, n_train:n_train + NUM_TEST])


def _pfn_nll(pfn, xt, yt, xq, yq, chunk=250):
    out = []
    for i in range(0, xt.shape[0], chunk):
        pred = predict_batch(pfn, xt[i:i + chunk], yt[i:i + chunk], xq[i:i + chunk])
        out.append(-np.asarray(pred.log_prob(yq[i:i + chunk])).mean(1))
    return np.concatenate(out)


def _gaussian_nll(y, mean, var):
    return 0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)


def _mean_se(v):
    v = np.asarray(v)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def fixed_gp(rows, num_datasets, n_trains):
    pfn, prior = load_pretrained("gp1d-rbf"), shipped_prior("gp1d-rbf")
    exact = jax.jit(jax.vmap(lambda a, b, c: prior.predictive(a, b, c)))
    for n in n_trains:
        data = prior.sample(jax.random.key(100 + n), num_datasets, n + NUM_TEST)
        xt, yt, xq, yq = _split(data, n)
        t0 = time.perf_counter()
        nll_pfn = _pfn_nll(pfn, xt, yt, xq, yq)
        t_pfn = time.perf_counter() - t0
        mean, var = exact(xt, yt, xq)
        nll_gp = _gaussian_nll(np.asarray(yq), np.asarray(mean), np.asarray(var)).mean(1)
        gap = nll_pfn - nll_gp
        s = f"n_train={n}"
        rows += [row("gp1d-rbf", "probkit-pfn", s, "nll", *_mean_se(nll_pfn), seconds=t_pfn),
                 row("gp1d-rbf", "exact-gp", s, "nll", *_mean_se(nll_gp)),
                 row("gp1d-rbf", "probkit-pfn", s, "nll_gap", *_mean_se(gap))]
        print(f"gp1d-rbf n={n}: PFN {nll_pfn.mean():.4f}, exact {nll_gp.mean():.4f}, "
              f"gap {gap.mean():.4f} +- {_mean_se(gap)[1]:.4f}")


def _gp_hyper_model(x, y=None):
    ls = numpyro.sample("lengthscale", dist.Gamma(3.0, 6.0))
    var = numpyro.sample("variance", dist.Gamma(2.0, 2.0))
    noise = numpyro.sample("noise", dist.Gamma(2.0, 50.0))
    from probkit.kernels import Matern52

    k = Matern52(lengthscale=ls, variance=var)(x, x) + (noise + 1e-6 * var) * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), k), obs=y)


def nuts_predictive(prior, x, y, x_test, post):
    """GP predictive means and variances at ``x_test``, one per posterior draw."""
    def one(ls, v, nz):
        return prior.predictive(x, y, x_test, {"lengthscale": ls[None], "variance": v, "noise": nz})

    return jax.vmap(one)(post["lengthscale"], post["variance"], post["noise"])


def hyper_gp(rows, num_datasets, n_trains, num_warmup, num_samples):
    from probkit.inference.hmc import run

    pfn, prior = load_pretrained("gp1d-hyper"), shipped_prior("gp1d-hyper")
    for n in n_trains:
        data = prior.sample(jax.random.key(200 + n), num_datasets, n + NUM_TEST)
        xt, yt, xq, yq = _split(data, n)
        nll_pfn = _pfn_nll(pfn, xt, yt, xq, yq)
        t_pfn = []
        for i in range(min(num_datasets, 20)):  # single-dataset forward passes, timed
            pfn.predict(xt[i], yt[i], xq[i]).mean.block_until_ready()
            t0 = time.perf_counter()
            pfn.predict(xt[i], yt[i], xq[i]).mean.block_until_ready()
            t_pfn.append(time.perf_counter() - t0)
        nll_nuts, t_nuts = [], []
        with jax.enable_x64(True):
            for i in range(num_datasets):
                x64, y64 = jnp.asarray(xt[i], jnp.float64), jnp.asarray(yt[i], jnp.float64)
                xq64 = jnp.asarray(xq[i], jnp.float64)
                t0 = time.perf_counter()
                res = run(_gp_hyper_model, x64, y64, key=jax.random.key(i), num_warmup=num_warmup,
                          num_samples=num_samples, num_chains=2, progress_bar=False,
                          log_likelihood=False)
                post = {k: jnp.asarray(v).reshape(-1) for k, v in res.posterior.items()}
                mean, var = nuts_predictive(prior, x64, y64, xq64, post)
                lp = jax.scipy.stats.norm.logpdf(jnp.asarray(yq[i], jnp.float64), mean,
                                                 jnp.sqrt(var))
                lpd = jax.scipy.special.logsumexp(lp, axis=0) - np.log(lp.shape[0])
                nll_nuts.append(-float(lpd.mean()))
                t_nuts.append(time.perf_counter() - t0)
        nll_nuts = np.asarray(nll_nuts)
        diff = nll_pfn - nll_nuts
        tp, tn = float(np.median(t_pfn)), float(np.median(t_nuts[1:] or t_nuts))
        s = f"n_train={n}"
        rows += [row("gp1d-hyper", "probkit-pfn", s, "nll", *_mean_se(nll_pfn), seconds=tp),
                 row("gp1d-hyper", "probkit-nuts", s, "nll", *_mean_se(nll_nuts), seconds=tn),
                 row("gp1d-hyper", "probkit-pfn", s, "nll_gap", *_mean_se(diff)),
                 row("gp1d-hyper", "probkit-pfn", s, "speedup", tn / tp)]
        print(f"gp1d-hyper n={n}: PFN {nll_pfn.mean():.4f} ({tp * 1e3:.1f} ms/dataset), NUTS "
              f"{nll_nuts.mean():.4f} ({tn:.2f} s/dataset), diff {diff.mean():.4f}, "
              f"speed-up {tn / tp:.0f}x")


def blr_model(x):
    """The user's prior: y = b + w x + noise, known noise sd ``BLR_NOISE``."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(w[0] + x[:, 0] * w[1], BLR_NOISE))


def blr_exact(xt, yt, xq):
    """Exact conjugate posterior predictive mean and variance (one dataset)."""
    phi, phq = np.column_stack([np.ones(len(xt)), xt[:, 0]]), np.column_stack(
        [np.ones(len(xq)), xq[:, 0]])
    prec = np.eye(2) + phi.T @ phi / BLR_NOISE**2
    cov = np.linalg.inv(prec)
    m = cov @ phi.T @ yt / BLR_NOISE**2
    return phq @ m, np.einsum("ij,jk,ik->i", phq, cov, phq) + BLR_NOISE**2


def blr(rows, seconds, num_datasets, n_trains):
    prior = NumPyroPrior(blr_model, input_dim=1)
    pfn = init(prior, key=jax.random.key(7), max_points=40, num_buckets=100, emsize=64,
               num_layers=3, num_heads=4, prior_name="blr")
    res = train(pfn, prior, key=jax.random.key(8), time_budget=seconds, batch_size=64,
                learning_rate=1e-3, steps_per_dispatch=20, progress_bar=True)
    print(f"blr: trained {res.steps} steps in {res.seconds:.0f} s")
    for n in n_trains:
        data = prior.sample(jax.random.key(300 + n), num_datasets, n + NUM_TEST)
        xt, yt, xq, yq = (np.asarray(a, np.float64) for a in _split(data, n))
        nll_pfn = _pfn_nll(res.pfn, *(jnp.asarray(a, jnp.float32) for a in (xt, yt, xq, yq)))
        nll_ex = np.array([_gaussian_nll(yq[i], *blr_exact(xt[i], yt[i], xq[i])).mean()
                           for i in range(num_datasets)])
        gap = nll_pfn - nll_ex
        s = f"n_train={n},train_seconds={res.seconds:.0f}"
        rows += [row("blr", "probkit-pfn", s, "nll", *_mean_se(nll_pfn), seconds=res.seconds),
                 row("blr", "exact-conjugate", s, "nll", *_mean_se(nll_ex)),
                 row("blr", "probkit-pfn", s, "nll_gap", *_mean_se(gap))]
        print(f"blr n={n}: PFN {nll_pfn.mean():.4f}, exact {nll_ex.mean():.4f}, gap "
              f"{gap.mean():.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--blr-seconds", type=float, default=540.0)
    p.add_argument("--skip", nargs="*", default=[], choices=["fixed", "hyper", "blr"])
    args = p.parse_args(argv)
    rows: list[dict] = []
    q = args.quick
    if "fixed" not in args.skip:
        fixed_gp(rows, 100 if q else 1000, [5, 20] if q else [5, 10, 20, 50])
    if "hyper" not in args.skip:
        hyper_gp(rows, 3 if q else 100, [10] if q else [10, 30], 100 if q else 250,
                 100 if q else 250)
    if "blr" not in args.skip:
        blr(rows, 20.0 if q else args.blr_seconds, 100 if q else 1000, [5] if q else [5, 20])
    write_results("pfn", rows, quick=q)


if __name__ == "__main__":
    main()
