"""Gaussian NNGP vs Student-t process (scale-mixture NNGP) on 1-D data with Cauchy noise.

Lee et al., "Scale Mixtures of Neural Network Gaussian Processes", ICLR 2022. Both models use a
2-layer ReLU NNGP kernel whose hyperparameters are fitted by maximising the marginal likelihood;
the Gaussian model has a fixed (fitted) output scale, the Student-t process draws it from an
inverse gamma, s2 ~ IG(2, b), and integrates it out in closed form. A third panel uses a Burr XII
scale prior (exact quadrature on log s2). The figure shows the 95% predictive bands.

Run: ``python examples/nngp_heavy_tails.py --out figures/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from probkit.distributions import BurrXII  # noqa: E402
from probkit.kernels import NNGP  # noqa: E402
from probkit.models import nngp  # noqa: E402


def data(n, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n))
    return x[:, None], np.sin(2 * x) + 0.5 * x + 0.15 * rng.standard_cauchy(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".", help="folder for nngp_heavy_tails.png")
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    x, y = data(args.n, 0)
    x_test, y_test = data(1000, 1)
    grid = np.linspace(-3.2, 3.2, 200)[:, None]
    key = jax.random.key(0)
    kernel = NNGP(2, "relu", weight_variance=2.0, bias_variance=0.1)
    priors = {"Gaussian NNGP": (None, "closed_form"),
              "Student-t process, s2 ~ IG(2, b)": (dist.InverseGamma(2.0, 2.0), "closed_form"),
              "Burr XII scale prior (quadrature)": (BurrXII(2.0, 1.0, 1.0), "quadrature")}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (name, (prior, engine)) in zip(axes, priors.items(), strict=True):
        model = nngp.Regressor(kernel=kernel, scale_prior=prior, engine=engine).fit(x, y, key=key)
        pred = model.predict(grid)
        test = model.predict(x_test, full_cov=False)
        lo, hi = test.interval(0.95)
        cover = np.mean((y_test > lo) & (y_test < hi))
        nll = -np.mean(test.log_prob(y_test))
        ax.fill_between(grid[:, 0], *pred.interval(0.95), alpha=0.3,
                        label="95% predictive band")
        ax.plot(grid[:, 0], pred.mean, lw=2, label="predictive mean")
        ax.scatter(x[:, 0], y, s=10, c="k", label=f"{args.n} points (Cauchy noise)")
        ax.set_ylim(-4, 4)
        ax.set_title(f"{name}\ntest NLL {nll:.3f}, 95% coverage {cover:.2f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        print(f"{name:40s} test NLL {nll:.3f}  coverage {cover:.3f}  "
              f"log p(y) {model.log_marginal_likelihood():.2f}")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "nngp_heavy_tails.png", dpi=120)
    print(f"wrote {out / 'nngp_heavy_tails.png'}")


if __name__ == "__main__":
    main()
