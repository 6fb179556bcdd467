"""Any NumPyro regression model as a family. Run: ``python docs/examples/numpyro_family.py OUT``."""

import pathlib
import sys

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit.models.numpyro import Regressor


def cubic(x, y=None):
    """A cubic trend with a learned noise scale; ``f`` is the latent regression function."""
    w = numpyro.sample("w", dist.Normal(0.0, 2.0).expand([4]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    t = x[:, 0]
    f = numpyro.deterministic("f", w[0] + w[1] * t + w[2] * t**2 + w[3] * t**3)
    numpyro.sample("y", dist.Normal(f, sigma), obs=y)


rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-1, 1, 30))[:, None]
y = 0.5 - x[:, 0] + 1.5 * x[:, 0] ** 3 + 0.2 * rng.normal(size=30)
fam = Regressor(cubic, num_warmup=500, num_samples=500, num_chains=2)
fitted = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)   # BlackJAX NUTS

grid = np.linspace(-1.2, 1.2, 200)[:, None]
f = fitted.posterior(grid)           # Empirical: the model re-run on every kept draw
pred = fitted.predict(grid)          # Mixture: adds the Normal likelihood of the site "y"
idata = fitted.to_arviz(key=jax.random.key(1))
print(idata.posterior["w"].mean(("chain", "draw")).values)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.fill_between(grid[:, 0], *pred.interval(0.95), color="tab:blue", alpha=0.15,
                    label="95% predictive of y")
    ax.fill_between(grid[:, 0], *f.interval(0.95), color="tab:blue", alpha=0.35,
                    label="95% posterior of f")
    ax.plot(grid[:, 0], f.mean, lw=1.5, label="posterior mean")
    ax.plot(x[:, 0], y, "k.", label="data")
    ax.set_title("A NumPyro model as a probkit family (NUTS)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "numpyro_family.png", dpi=100)
