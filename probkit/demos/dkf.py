"""Demo section of ``probkit demo``: the discriminative Kalman filter on neural decoding data."""

from __future__ import annotations

import pathlib

import numpy as np

from probkit.datasets import load_flint
from probkit.models import dkf


def demo(out: pathlib.Path, *, key) -> str:
    """Decode hand velocity (Flint 2012, trial 1): Kalman filter vs DKF with Nadaraya-Watson.

    Trains on rows 0..4999 and tests on 5000..5999 (Burkhart et al. 2020, Sec. 4.5). To stay
    fast, the Nadaraya-Watson bandwidth for f is fixed at 0.65 (the leave-one-out choice on
    this split; ``benchmarks/dkf.py`` selects it by LOO); Q is learned from held-out residuals.
    Writes ``dkf.png`` into ``out`` and returns a short text summary.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = load_flint(protocol_split=True)
    x_train, z_train, x_test, z_test = d["x_train"], d["z_train"], d["x_test"], d["z_test"]
    dynamics = dkf.fit_dynamics(z_train)
    H, Lam = dkf.fit_linear_observation(x_train, z_train)
    kf = np.asarray(dkf.kalman_decode(dynamics, H, Lam, x_test).filtered_mean)
    model = dkf.DKF(learner=dkf.NadarayaWatson(bandwidth=0.65)).fit(x_train, z_train, key=key)
    dk = np.asarray(model.predict(x_test).mean)

    scores = {name: (dkf.nrmse(p, z_test), dkf.mean_absolute_angle(p, z_test))
              for name, p in (("Kalman", kf), ("DKF-NW", dk))}
    t = np.arange(5000, 5200)
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for i, ax in enumerate(axes):
        ax.plot(t, z_test[:200, i], "k", lw=1.5, label="true")
        ax.plot(t, kf[:200, i], color="tab:blue", lw=1, label="Kalman filter")
        ax.plot(t, dk[:200, i], color="tab:red", lw=1, label="DKF (Nadaraya-Watson)")
        ax.set_ylabel(["x-velocity", "y-velocity"][i])
    axes[0].legend(ncol=3, fontsize=8, loc="upper right")
    axes[0].set_title("Discriminative Kalman filter: decoded hand velocity (Flint 2012)")
    axes[1].set_xlabel("test step (100 ms bins)")
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "dkf.png", dpi=110)
    plt.close(fig)
    (k_n, k_a), (d_n, d_a) = scores["Kalman"], scores["DKF-NW"]
    return "\n".join([
        "Discriminative Kalman filter (Burkhart et al. 2020), Flint trial 1, test rows 5000-5999",
        f"  Kalman filter: NRMSE {k_n:.3f}, mean abs. angle {k_a:.3f} rad",
        f"  DKF (NW):      NRMSE {d_n:.3f} ({d_n / k_n - 1:+.0%}), "
        f"mean abs. angle {d_a:.3f} rad ({d_a / k_a - 1:+.0%})",
        f"  figure: {out / 'dkf.png'}",
    ])
