"""Predictive bands of CNP, NP and MPNP on the same 1-D contexts (one figure).

Uses the shipped weights (``probkit/models/mpnp/weights``) when present, else trains tiny models
for ``--train-steps`` steps (and says so). Three GP tasks (RBF, Matern-5/2 and RBF with
Student-t noise) are drawn from the protocol prior of the Bootstrapping / Martingale-posterior NP
papers; the figure has one row per task and one column per model.

    python examples/mpnp_1d.py --out .
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from probkit.demos.mpnp import bands, get_models  # noqa: E402
from probkit.models import mpnp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--num-ctx", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=300,
                    help="quick training steps if no weights ship")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    key = jax.random.key(args.seed)
    models, source = get_models(key=jax.random.fold_in(key, 0), quick_steps=args.train_steps)
    print("models:", source)
    grid = np.linspace(-2, 2, 200)
    tasks = ("rbf", "matern52", "student_t")
    fig, axes = plt.subplots(len(tasks), len(models), figsize=(12, 8.5), sharex=True)
    for r, name in enumerate(tasks):
        data = mpnp.bnp_prior(name).sample(jax.random.fold_in(key, 100 + r), 1, 50)
        x, y = np.asarray(data.x[0, :, 0]), np.asarray(data.y[0])
        xc, yc, xt, yt = x[:args.num_ctx], y[:args.num_ctx], x[args.num_ctx:], y[args.num_ctx:]
        for c, (kind, model) in enumerate(models.items()):
            pk = jax.random.fold_in(key, 200 + r)
            pred, at = bands(model, xc, yc, grid, xt, key=pk)
            ll = float(np.mean(at.log_prob(yt)))
            mean, sd = np.asarray(pred.mean), np.sqrt(np.asarray(pred.variance))
            ax = axes[r, c]
            if kind != "cnp":
                for k in range(8):
                    ax.plot(grid, pred.loc[k], color="tab:orange", lw=0.6, alpha=0.6)
            ax.fill_between(grid, mean - 2 * sd, mean + 2 * sd, color="tab:blue", alpha=0.25)
            ax.plot(grid, mean, color="tab:blue")
            ax.scatter(xt, yt, s=6, color="grey")
            ax.scatter(xc, yc, s=16, color="k", zorder=3)
            ax.set_title(f"{kind.upper()} on {name}: target ll {ll:.2f}", fontsize=9)
            print(f"{name:10s} {kind:5s} target ll per point {ll:.3f}")
    fig.suptitle(f"CNP / NP / MPNP, {args.num_ctx} context points; {source}", fontsize=9)
    fig.tight_layout()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "mpnp_1d.png", dpi=110)
    print("wrote", out / "mpnp_1d.png")


if __name__ == "__main__":
    main()
