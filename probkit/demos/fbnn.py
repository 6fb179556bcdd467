"""Demo section of ``probkit demo``: a BNN prior matched to a GP in Wasserstein distance."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from probkit.kernels import RBF
from probkit.models.fbnn import (
    FBNN,
    GaussianPrior,
    GPTarget,
    marginal_wasserstein,
    match_prior,
    mlp_template,
    sample_functions,
)


def demo(out: pathlib.Path, *, key) -> str:
    """Match a 1x32 tanh BNN's Gaussian prior to GP(0, RBF(1, 1)) on a grid, then SGHMC.

    A small version of ``examples/fbnn_prior_matching.py`` (Tran et al., JMLR 2022): 40 outer
    iterations of the critic/prior alternation on a 16-point grid, starting from a deliberately
    mis-scaled N(0, 0.1^2) weight prior; prior function draws before and after beside the GP's,
    and the posteriors under the initial and the matched prior on 40 noisy points of a function
    drawn from the target GP.
    Writes ``fbnn.png`` into ``out`` and returns a short text summary.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k_match, k_eval, k_data, k_post = jax.random.split(key, 4)
    net = mlp_template(1, (32,), "tanh")
    grid = jnp.linspace(-3, 3, 16)[:, None]
    target = GPTarget(RBF(1.0, 1.0))
    prior0 = GaussianPrior.init(2, 0.1)        # a deliberately mis-scaled N(0, 0.1^2) prior
    fit = match_prior(prior0, net, target, grid, key=k_match, num_steps=40, num_samples=96,
                      num_critic_steps=30, learning_rate=0.1, measurement_points=grid,
                      progress_bar=False)
    kf, kg = jax.random.split(k_eval)
    fine = jnp.linspace(-3, 3, 100)[:, None]
    gp = target.sample(kg, grid, 1000)
    w0 = float(marginal_wasserstein(sample_functions(kf, prior0, net, grid, 1000), gp))
    w1 = float(marginal_wasserstein(sample_functions(kf, fit.prior, net, grid, 1000), gp))

    # data: a draw of the target GP (in standardised x) at 40 points with a gap, plus noise
    rng = np.random.default_rng(int(jax.random.randint(k_data, (), 0, 2**31 - 1)))
    x = np.r_[rng.uniform(-3, -0.7, 20), rng.uniform(0.7, 3, 20)][:, None]
    xg = np.linspace(-3.5, 3.5, 150)
    both = np.r_[x[:, 0], xg][:, None] / x.std()
    k = np.asarray(RBF(1.0, 1.0)(both, both), dtype=np.float64) + 1e-6 * np.eye(len(both))
    f_all = np.linalg.cholesky(k) @ rng.normal(size=len(both))
    y, f_true = f_all[:40] + 0.1 * rng.normal(size=40), f_all[40:]
    sghmc = dict(num_chains=2, num_warmup=600, num_samples=20, thinning=20)
    posts = {name: FBNN((32,), "tanh", prior=pr, **sghmc).fit(x, y, key=k_post,
                                                              progress_bar=False)
             for name, pr in (("initial", prior0), ("matched", fit.prior))}
    rmse = {name: float(np.sqrt(np.mean((p.predict(xg[:, None]).mean - f_true) ** 2)))
            for name, p in posts.items()}

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    for a, f, title in ((ax[0], sample_functions(kf, prior0, net, fine, 8), "initial prior"),
                        (ax[1], sample_functions(kf, fit.prior, net, fine, 8), "matched prior"),
                        (ax[2], target.sample(kg, fine, 8), "target GP, RBF(1, 1)")):
        a.plot(fine[:, 0], np.asarray(f).T, lw=1)
        a.set_title(title)
        a.set_ylim(-3.5, 3.5)
    for (name, post), color in zip(posts.items(), ("tab:gray", "tab:blue"), strict=True):
        pred = post.predict(xg[:, None])
        m, v = np.asarray(pred.mean), np.asarray(pred.variance)
        ax[3].fill_between(xg, m - 2 * np.sqrt(v), m + 2 * np.sqrt(v), color=color, alpha=0.2)
        ax[3].plot(xg, m, color=color, lw=1.5, label=f"{name} prior")
    ax[3].plot(xg, f_true, "k--", lw=1, label="true f")
    ax[3].plot(x[:, 0], y, "k.", ms=4)
    ax[3].legend(fontsize=7)
    ax[3].set_title("posterior (SGHMC): initial vs matched prior")
    for a in ax[:3]:
        a.set_xlabel("standardised x")
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fbnn.png", dpi=100)
    plt.close(fig)
    return "\n".join([
        "Functional-prior BNN (Tran et al. 2022): 1x32 tanh prior matched to GP(RBF(1, 1))",
        f"  critic W1 during matching: {np.mean(fit.distances[:5]):.2f} -> "
        f"{np.mean(fit.distances[-5:]):.2f}",
        f"  per-point 1-D W1 from samples: {w0:.3f} (initial) -> {w1:.3f} (matched), "
        f"{w0 / w1:.1f}x lower",
        f"  posterior RMSE to the true function: initial prior {rmse['initial']:.3f}, "
        f"matched prior {rmse['matched']:.3f}",
        f"  figure: {out / 'fbnn.png'}",
    ])
