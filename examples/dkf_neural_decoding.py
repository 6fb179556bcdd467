"""Decode hand velocity from motor-cortex activity: Kalman filter vs discriminative Kalman filter.

Flint et al. (2012) macaque reaching data, trial 1, as in Burkhart et al., "The discriminative
Kalman filter for Bayesian filtering with nonlinear and nongaussian observation models", Neural
Computation 32(5), 2020, Sec. 4.5: 10 z-scored principal components of binned spike counts
(x_t) and 2-D hand velocity (z_t); train on rows 0..4999, test on rows 5000..5999.

* Kalman filter: x_t = H z_t + N(0, Lam), H by least squares.
* DKF: p(z_t | x_t) ~= N(f(x_t), Q(x_t)) learned by Nadaraya-Watson (default) or an MLP, combined
  with the same latent dynamics z_t = A z_{t-1} + N(0, G) (A, G by least squares).

Run ``python examples/dkf_neural_decoding.py [--learner mlp] [--out DIR]``; writes
``dkf_neural_decoding.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from probkit.datasets import load_flint  # noqa: E402
from probkit.models import dkf  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learner", choices=["nw", "mlp", "gp"], default="nw")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=250, help="test steps shown in the figure")
    args = parser.parse_args(argv)

    d = load_flint(protocol_split=True)
    x_train, z_train, x_test, z_test = d["x_train"], d["z_train"], d["x_test"], d["z_test"]

    # Kalman filter baseline (dynamics by least squares, as in the DKF)
    dynamics = dkf.fit_dynamics(z_train)
    H, Lam = dkf.fit_linear_observation(x_train, z_train)
    kf = np.asarray(dkf.kalman_decode(dynamics, H, Lam, x_test).filtered_mean)

    # DKF: the same kind of dynamics (fitted on the centred states) and a learned p(z | x)
    model = dkf.DKF(learner=args.learner).fit(x_train, z_train, key=jax.random.key(args.seed))
    out = model.predict(x_test)                  # filtering distribution of the states
    dk = np.asarray(out.mean)
    sd = np.sqrt(np.asarray(out.variance))

    scores = {name: (dkf.nrmse(pred, z_test), dkf.mean_absolute_angle(pred, z_test))
              for name, pred in (("Kalman filter", kf), (f"DKF ({args.learner})", dk))}
    for name, (e, a) in scores.items():
        print(f"{name:16s} NRMSE {e:.3f}   mean abs. angle {a:.3f} rad")
    label = {name: f"{name}: NRMSE {e:.3f}, angle {a:.3f} rad" for name, (e, a) in scores.items()}

    w = slice(0, args.window)
    t = np.arange(5000, 5000 + z_test.shape[0])[w]
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for i, ax in enumerate(axes):
        ax.plot(t, z_test[w, i], color="black", lw=1.5, label="true")
        ax.plot(t, kf[w, i], color="tab:blue", lw=1, label=label["Kalman filter"])
        ax.plot(t, dk[w, i], color="tab:red", lw=1, label=label[f"DKF ({args.learner})"])
        ax.fill_between(t, dk[w, i] - 2 * sd[w, i], dk[w, i] + 2 * sd[w, i], color="tab:red",
                        alpha=0.15, lw=0)
        ax.set_ylabel(["x-velocity", "y-velocity"][i])
    axes[0].legend(loc="upper right", ncol=3, fontsize=7)
    axes[0].set_title("Hand velocity decoded from M1 (Flint 2012, trial 1, test rows "
                      "5000-5999; shaded: DKF +- 2 sd; metrics on all 1000 test steps)", fontsize=9)
    axes[1].set_xlabel("time step")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "dkf_neural_decoding.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
