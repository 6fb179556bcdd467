"""The PFN family: a shipped transformer conditioned on a context in one forward pass.

Run: ``python docs/examples/pfn_family.py OUT_DIR`` (writes ``pfn_family.png``).
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from probkit.models.pfn import Regressor

rng = np.random.default_rng(3)
x = rng.uniform(size=(8, 1))
y = np.sin(6 * x[:, 0]) + 0.5 * x[:, 0]
fitted = Regressor("gp-bo").fit(x, y, key=jax.random.key(0))   # encodes the context once

grid = np.linspace(0, 1, 200)[:, None]
pred = fitted.predict(grid)                     # BarPrediction: exact density and quantiles
q05, q50, q95 = np.asarray(pred.quantile(jnp.array([0.05, 0.5, 0.95])))
at = fitted.predict(np.array([[0.9]]))          # the full bar density at one input
ys = jnp.linspace(-3, 3, 400)
density = np.exp(np.asarray(at.log_prob(ys[:, None])))[:, 0]
print("mean at 0.9:", float(at.mean[0]), " 90% interval:", np.asarray(at.interval(0.9)).ravel())

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    ax[0].fill_between(grid[:, 0], q05, q95, color="tab:blue", alpha=0.3, label="90% interval")
    ax[0].plot(grid[:, 0], q50, color="tab:blue", lw=1.5, label="median")
    ax[0].plot(x[:, 0], y, "k.", ms=8, label="8 context points")
    ax[0].axvline(0.9, color="0.5", ls=":", lw=1)
    ax[0].set_title('PFN family, shipped "gp-bo" network')
    ax[0].legend(fontsize=7, loc="lower left")
    ax[1].plot(np.asarray(ys), density, color="tab:blue")
    ax[1].set_title("bar density of y at x = 0.9")
    ax[1].set_xlabel("y")
    fig.tight_layout()
    fig.savefig(out / "pfn_family.png", dpi=100)
