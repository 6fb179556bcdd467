"""Message passing on a state-space GP: exact regression in O(T), then EP for Poisson counts.

Run from the repository root: ``python docs/examples/message_passing.py OUT_DIR``; it writes
``message_passing.png`` into ``OUT_DIR`` (default: the current directory).
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from probkit.inference.ep import ep_statespace_gp
from probkit.inference.kalman import gp_posterior
from probkit.kernels import Matern32

rng = np.random.default_rng(0)

# 1. Gaussian likelihood: 5000 irregular times, exact posterior by one filter + smoother pass.
t = np.sort(rng.uniform(0.0, 10.0, 5000))
f = np.sin(1.3 * t) + 0.5 * np.sin(4.1 * t)
y = f + 0.3 * rng.normal(size=t.size)
grid = np.linspace(-0.5, 10.5, 600)                   # observation-free filter steps
with jax.enable_x64(True):
    post = gp_posterior(Matern32(0.5, 1.0), jnp.asarray(t), jnp.asarray(y), 0.09,
                        test_times=jnp.asarray(grid))
    mean, sd = np.asarray(post.test_mean), np.sqrt(np.asarray(post.test_var))

# 2. Poisson counts y ~ Poisson(exp f(t)): EP sweeps, each one filter + smoother pass.
tc = np.sort(rng.uniform(0.0, 10.0, 300))
rate = np.exp(1.0 + np.sin(tc))
counts = rng.poisson(rate).astype(float)
ep = ep_statespace_gp(Matern32(1.0, 1.0), jnp.asarray(tc), jnp.asarray(counts), "poisson",
                      test_times=jnp.asarray(grid))
lo, hi = (np.exp(ep.test_mean + s * 2 * np.sqrt(ep.test_var)) for s in (-1, 1))
print(f"exact GP: log p(y) = {float(post.log_likelihood):.1f} on {t.size} points")
print(f"EP: {int(ep.num_iterations)} sweeps, converged: {bool(ep.converged)}")

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
    ax[0].plot(t, y, ".", color="0.6", ms=1, label="5000 observations")
    ax[0].fill_between(grid, mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="posterior +- 2 sd")
    ax[0].plot(grid, mean, lw=1.5, label="posterior mean")
    ax[0].set_title("Matern-3/2 GP regression: Kalman filter + RTS smoother")
    ax[0].legend(fontsize=7, loc="lower left")
    ax[1].plot(tc, counts, "k.", ms=3, label="counts")
    ax[1].fill_between(grid, lo, hi, alpha=0.3, label="exp(f): +- 2 sd")
    ax[1].plot(grid, np.exp(ep.test_mean), lw=1.5, label="exp(posterior mean of f)")
    ax[1].plot(tc, rate, "k--", lw=1, label="true rate")
    ax[1].set_title("Poisson counts: expectation propagation")
    ax[1].legend(fontsize=7, loc="upper right")
    for a in ax:
        a.set_xlabel("t")
    fig.tight_layout()
    fig.savefig(out / "message_passing.png", dpi=100)
