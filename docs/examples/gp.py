"""The exact GP family: fit, predict, bands. Run: ``python docs/examples/gp.py OUT_DIR``."""

import pathlib
import sys

import jax
import numpy as np

from probkit.models.gp import GP

rng = np.random.default_rng(1)
x = np.sort(rng.uniform(0, 1, 25))[:, None]
y = np.sin(8 * x[:, 0]) + 0.5 * x[:, 0] + 0.1 * rng.normal(size=25)
fitted = GP(kernel="matern52").fit(x, y, key=jax.random.key(0), progress_bar=False)

grid = np.linspace(-0.1, 1.1, 300)[:, None]
f = fitted.posterior(grid)                        # Gaussian over the latent f (joint)
pred = fitted.predict(grid)                       # ... and over y (adds the noise variance)
draws = f.sample(jax.random.key(1), (3,))         # joint function draws, shape (3, 300)
print("mean log predictive density at the data:", float(np.mean(fitted.predict(x).log_prob(y))))

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    lo, hi = pred.interval(0.95)
    ax.fill_between(grid[:, 0], lo, hi, color="tab:blue", alpha=0.15, label="95% predictive of y")
    ax.fill_between(grid[:, 0], *f.interval(0.95), color="tab:blue", alpha=0.35,
                    label="95% posterior of f")
    ax.plot(grid[:, 0], f.mean, color="tab:blue", lw=1.5, label="posterior mean")
    ax.plot(grid[:, 0], np.asarray(draws).T, lw=0.7, color="tab:orange")
    ax.plot([], [], lw=0.7, color="tab:orange", label="joint draws of f")
    ax.plot(x[:, 0], y, "k.", label="data")
    ax.set_title("Exact GP (Matern-5/2, type-II MAP)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "gp.png", dpi=100)
