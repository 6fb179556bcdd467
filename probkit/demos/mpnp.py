"""Demo section of ``probkit demo``: CNP, NP and MPNP predictive bands on the same context."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from probkit.models import mpnp
from probkit.posterior import Mixture

KINDS = ("cnp", "np", "mpnp")


def get_models(*, key, quick_steps: int = 150) -> tuple[dict, str]:
    """The shipped networks of CNP, NP and MPNP, or (when none ship) tiny networks trained for
    ``quick_steps`` steps on RBF tasks. Returns the networks and a line saying which."""
    try:
        return {k: mpnp.load_pretrained(k) for k in KINDS}, "shipped weights (trained on RBF)"
    except FileNotFoundError:
        pass
    prior = mpnp.bnp_prior("rbf")
    models = {}
    for i, kind in enumerate(KINDS):
        net = mpnp.make_network(kind, key=jax.random.fold_in(key, i), dim_hid=32, dim_lat=32,
                                **({"dim_gen": 32, "num_pseudo": 50} if kind == "mpnp" else {}))
        models[kind] = mpnp.train(net, prior, key=jax.random.fold_in(key, 10 + i),
                                  num_steps=quick_steps, batch_size=16, learning_rate=2e-3,
                                  steps_per_dispatch=quick_steps, progress_bar=False).params
    return models, (f"NO shipped weights: tiny models after a quick {quick_steps}-step training "
                    "run (expect poor fits)")


def bands(network, x_ctx, y_ctx, grid, x_tar, *, key, num_samples: int = 50
          ) -> tuple[Mixture, Mixture]:
    """The network conditioned on the context (on its own scale: protocol tasks live in
    [-2, 2]), predicting at ``grid`` and at ``x_tar`` in one call (one compile per network)."""
    family = mpnp.NeuralProcess(weights=network, num_samples=num_samples, standardise=False)
    both = family.fit(x_ctx, y_ctx, key=key).predict(np.concatenate([grid, x_tar]))
    m = len(grid)
    return (Mixture(both.loc[:, :m], both.scale[:, :m]),
            Mixture(both.loc[:, m:], both.scale[:, m:]))


def figure(models: dict, x_ctx, y_ctx, x_tar, y_tar, path: pathlib.Path, *, key,
           title: str = "", num_samples: int = 50) -> dict:
    """Plot each model's mixture predictive (mean, +-2 sd, MPNP component means) in a row of
    panels; returns each model's mean target log-likelihood per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-2, 2, 200)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), sharey=True)
    scores = {}
    for ax, (kind, model) in zip(np.atleast_1d(axes), models.items(), strict=True):
        pred, at = bands(model, x_ctx, y_ctx, grid, x_tar, key=key, num_samples=num_samples)
        scores[kind] = float(jnp.mean(at.log_prob(y_tar)))
        mean, sd = np.asarray(pred.mean), np.sqrt(np.asarray(pred.variance))
        if kind != "cnp":
            for k in range(min(8, pred.num_components)):
                ax.plot(grid, pred.loc[k], color="tab:orange", lw=0.6, alpha=0.6)
        ax.fill_between(grid, mean - 2 * sd, mean + 2 * sd, color="tab:blue", alpha=0.25,
                        label="mean +- 2 sd")
        ax.plot(grid, mean, color="tab:blue", lw=1.5)
        ax.scatter(x_tar, y_tar, s=8, color="grey", label="targets")
        ax.scatter(x_ctx, y_ctx, s=18, color="k", zorder=3, label="context")
        ax.set_title(f"{kind.upper()}: target ll {scores[kind]:.2f}")
        ax.set_xlabel("x")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return scores


def demo(out: pathlib.Path, *, key) -> str:
    """One RBF task (8 context points, 40 targets) predicted by CNP, NP and MPNP; writes
    ``mpnp.png`` into ``out`` and returns a short summary."""
    k_models, k_task, k_pred = jax.random.split(key, 3)
    models, source = get_models(key=k_models)
    data = mpnp.bnp_prior("rbf").sample(k_task, 1, 48)
    x, y = np.asarray(data.x[0, :, 0]), np.asarray(data.y[0])
    path = pathlib.Path(out) / "mpnp.png"
    scores = figure(models, x[:8], y[:8], x[8:], y[8:], path, key=k_pred,
                    title=f"RBF task, 8 context points; {source}")
    lines = ["Martingale-posterior NP (Lee et al., ICLR 2023) vs CNP and NP, one RBF task",
             f"  models: {source}",
             "  target log-likelihood per point: "
             + ", ".join(f"{k.upper()} {v:.3f}" for k, v in scores.items()),
             f"  figure: {path}"]
    return "\n".join(lines)
