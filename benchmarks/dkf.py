"""Discriminative Kalman filter: the paper's synthetic study and the Flint neural-decoding data.

Burkhart et al., Neural Computation 32(5), 2020, Secs. 4.2 and 4.5.

Synthetic (Sec. 4.2, the authors' code values): latent dimension 10, S = I,
A = 0.95 I - 0.05 (all entries), G = S - A S A^T; observations a two-component Gaussian mixture
(pi = 1/2 each) with H2 = -H1 (H1 entries N(0, 1/10), drawn once at 1000 rows, the first n used),
noise I vs 5 I; exact f and Q (closed form); 1e4 test steps; n in {10, 100, 1000}. Compared with a
bootstrap (SIR) particle filter with 1000 particles (systematic resampling every step), the
unfiltered f(x_t), the robust DKF and predicting 0. Wall time per 1e4 steps after compilation.
Each positive-definiteness fix is reported; the authors' code for this section uses "clip".

Flint (Sec. 4.5): trial 1 (probkit.datasets.load_flint), train rows 0..4999, test 5000..5999;
A, G by least squares, S the empirical covariance; Kalman filter with x = Hz + noise (H by least
squares) vs the family ``dkf.DKF`` with Nadaraya-Watson, MLP and GP learners (Q from held-out
residuals for NW/GP, the covariance head for the MLP; states centred inside fit). Metrics
NRMSE = RMSE / RMS(z_test) and mean absolute angle (rad).

Run: ``python benchmarks/dkf.py`` (full) or ``python benchmarks/dkf.py --quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402

from probkit.datasets import load_flint  # noqa: E402
from probkit.models import dkf  # noqa: E402

D = 10


def synthetic_data(T: int, n_max: int = 1000, seed: int = 42):
    """The Sec. 4.2 set-up: one z path and one full observation matrix for all n."""
    rng = np.random.default_rng(seed)
    S = np.eye(D)
    A = 0.95 * np.eye(D) - 0.05 * np.ones((D, D))
    G = S - A @ S @ A.T
    H1 = rng.normal(0.0, np.sqrt(1.0 / D), size=(n_max, D))
    Lg = np.linalg.cholesky(G)
    z = np.zeros((T, D))
    prev = rng.normal(size=D)                        # z_1 ~ N(0, S)
    z[0] = prev
    for t in range(1, T):
        prev = A @ prev + Lg @ rng.normal(size=D)
        z[t] = prev
    comp = rng.integers(0, 2, size=T)                # component 0: (H1, I), 1: (-H1, 5 I)
    sign = np.where(comp == 0, 1.0, -1.0)[:, None]
    sd = np.where(comp == 0, 1.0, np.sqrt(5.0))[:, None]
    x = sign * (z @ H1.T) + sd * rng.normal(size=(T, n_max))
    return dkf.DynamicsParams(A, G, S), H1, z, x


@partial(jax.jit, static_argnums=(1,))
def bootstrap_pf(key, m, Htx, xx, HtH, n, A, Lg, lam):
    """SIR particle filter for the mixture model, with sufficient statistics H'x_t and |x_t|^2.

    log N(x; s H z, lam I) = -n/2 log(2 pi lam) - (|x|^2 - 2 s (H'x).z + z'H'Hz) / (2 lam).
    """
    d = A.shape[0]
    k0, key = jax.random.split(key)
    parts = jax.random.normal(k0, (m, d))            # z_0 ~ N(0, S = I)

    def step(carry, inp):
        parts, key = carry
        hx, x2 = inp
        k1, k2, key = jax.random.split(key, 3)
        parts = parts @ A.T + jax.random.normal(k1, parts.shape) @ Lg.T
        lin = parts @ hx
        quad = jnp.einsum("md,de,me->m", parts, HtH, parts)
        logs = []
        for s, lv in ((1.0, lam[0]), (-1.0, lam[1])):
            logs.append(-0.5 * n * jnp.log(2 * jnp.pi * lv) - (x2 - 2 * s * lin + quad) / (2 * lv))
        logw = jnp.logaddexp(logs[0], logs[1])
        w = jax.nn.softmax(logw)
        est = w @ parts
        u = (jax.random.uniform(k2) + jnp.arange(m)) / m     # systematic resampling
        idx = jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, m - 1)
        return (parts[idx], key), est

    _, ests = jax.lax.scan(step, (parts, key), (Htx, xx))
    return ests


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def run_synthetic(ns, T, num_particles, rows, quick):
    dyn, H1, z, x_full = synthetic_data(T)
    setting = f"T={T}"
    rows.append(row("synthetic-gm", "predict-zero", f"n=all,{setting}", "rmse", rmse(0 * z, z)))
    print(f"predict 0: {rmse(0 * z, z):.4f}")
    for n in ns:
        x = x_full[:, :n]
        H = np.stack([H1[:n], -H1[:n]])
        noise = np.stack([np.eye(n), 5.0 * np.eye(n)])
        t0 = time.perf_counter()
        f, Q = dkf.gaussian_mixture_moments(x, H, noise, np.array([0.5, 0.5]), dyn.S)
        f, Q = np.asarray(f), np.asarray(Q)
        t_moments = time.perf_counter() - t0
        s = f"n={n},{setting}"
        rows.append(row("synthetic-gm", "probkit-f(x)", s, "rmse", rmse(f, z)))
        msg = [f"n={n}: f(x) {rmse(f, z):.4f}"]
        for fix in dkf.PD_FIXES:
            dkf.dkf_filter(dyn, f, Q, pd_fix=fix)                  # compile (once per shape)
            secs = np.inf
            for _ in range(3):                                     # best of 3 (shared CPU)
                t0 = time.perf_counter()
                out = dkf.dkf_filter(dyn, f, Q, pd_fix=fix)       # returns NumPy arrays
                secs = min(secs, time.perf_counter() - t0)
            # the authors' code for Sec. 4.2 clips the generalised eigenvalues ("clip"); the
            # package default ("inflate") is their code for Sec. 4.5 -- all three are reported
            name = f"probkit-dkf-pdfix-{fix}"
            rows.append(row("synthetic-gm", name, s, "rmse", rmse(out.mean, z),
                            seconds=secs * 1e4 / T))
            msg.append(f"DKF[{fix}] {rmse(out.mean, z):.4f} ({int(out.pd_fixed.sum())} fixed, "
                       f"{secs * 1e4 / T:.2f} s/1e4 steps)")
        out = dkf.dkf_filter(dyn, f, Q, robust=True)
        rows.append(row("synthetic-gm", "probkit-dkf-robust", s, "rmse", rmse(out.mean, z)))
        msg.append(f"robust {rmse(out.mean, z):.4f}")
        rows.append(row("synthetic-gm", "probkit-dkf-moments", s, "seconds",
                        t_moments * 1e4 / T, seconds=t_moments * 1e4 / T))
        msg.append(f"exact f,Q {t_moments * 1e4 / T:.2f} s/1e4")
        if num_particles:
            with jax.enable_x64(True):
                args = (jnp.asarray(x @ H1[:n]), jnp.asarray(np.sum(x**2, 1)),
                        jnp.asarray(H1[:n].T @ H1[:n]), float(n), jnp.asarray(dyn.A),
                        jnp.asarray(np.linalg.cholesky(dyn.G)), jnp.asarray([1.0, 5.0]))
                bootstrap_pf(jax.random.key(0), num_particles, *args).block_until_ready()
                errs, t0 = [], time.perf_counter()
                seeds = 1 if quick else 3
                for seed in range(seeds):
                    errs.append(rmse(bootstrap_pf(jax.random.key(seed), num_particles, *args), z))
                secs = (time.perf_counter() - t0) / seeds
            se = float(np.std(errs, ddof=1) / np.sqrt(seeds)) if seeds > 1 else None
            rows.append(row("synthetic-gm", "bootstrap-pf", f"{s},m={num_particles}", "rmse",
                            float(np.mean(errs)), stderr=se, seconds=secs * 1e4 / T))
            msg.append(f"PF(m={num_particles}) {np.mean(errs):.4f}")
        print(", ".join(msg), flush=True)


def run_flint(rows, quick):
    d = load_flint(protocol_split=True)
    xtr, ztr, xte, zte = d["x_train"], d["z_train"], d["x_test"], d["z_test"]
    dyn = dkf.fit_dynamics(ztr)
    H, Lam = dkf.fit_linear_observation(xtr, ztr)
    kf = np.asarray(dkf.kalman_decode(dyn, H, Lam, xte).filtered_mean)
    base = {"nrmse": dkf.nrmse(kf, zte), "maae": dkf.mean_absolute_angle(kf, zte)}
    for metric, v in base.items():
        rows.append(row("flint-trial1", "probkit-kalman", "train=0..4999,test=5000..5999",
                        metric, v))
    print(f"Kalman filter: NRMSE {base['nrmse']:.4f}, MAAE {base['maae']:.4f}")
    seeds = [0] if quick else [0, 1, 2]
    learners = {
        "nw": dkf.NadarayaWatson(),
        "mlp": dkf.MLPLearner(num_steps=300 if quick else 1000),
    }
    if not quick:
        learners["gp"] = dkf.GaussianProcess(max_opt_points=600, num_steps=30)
    for name, learner in learners.items():
        res: dict[str, list] = {}
        for seed in (seeds if name != "gp" else [0]):
            t0 = time.perf_counter()
            # the family fits its own dynamics (least squares on the centred states)
            fitted = dkf.DKF(learner=learner).fit(xtr, ztr, key=jax.random.key(seed),
                                                  progress_bar=False)
            f, _ = fitted.moments(xte)
            secs = time.perf_counter() - t0
            outs = {f"probkit-{name}-unfiltered": f}
            for variant, kw in (("dkf", {}), ("dkf-robust", {"robust": True}),
                                ("dkf-pdfix-robust", {"pd_fix": "robust"})):
                pred = dataclasses.replace(fitted, **kw).predict(xte)
                outs[f"probkit-{variant}-{name}"] = np.asarray(pred.mean)
            for method, pred in outs.items():
                for metric, fn in (("nrmse", dkf.nrmse), ("maae", dkf.mean_absolute_angle)):
                    res.setdefault((method, metric), []).append(fn(pred, zte))
            res.setdefault(("fit", "seconds"), []).append(secs)
        fit_secs = float(np.mean(res.pop(("fit", "seconds"))))
        for (method, metric), vals in res.items():
            se = float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else None
            v = float(np.mean(vals))
            rows.append(row("flint-trial1", method, f"seeds={len(vals)}", metric, v, stderr=se,
                            seconds=fit_secs if method.startswith("probkit-dkf-") else None))
            rows.append(row("flint-trial1", method, f"seeds={len(vals)}",
                            f"{metric}_change_vs_kalman", v / base[metric] - 1.0))
            print(f"{method:28s} {metric}: {v:.4f} ({v / base[metric] - 1:+.1%})"
                  + (f" +- {se:.4f}" if se else ""), flush=True)
        print(f"  ({name}: fit + predict {fit_secs:.1f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (< 2 min)")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    t0 = time.perf_counter()
    if args.quick:
        run_synthetic([10, 100], 2000, 1000, rows, quick=True)
    else:
        run_synthetic([10, 100, 1000], 10_000, 1000, rows, quick=False)
    run_flint(rows, args.quick)
    print(f"total {time.perf_counter() - t0:.0f} s")
    write_results("dkf", rows, quick=args.quick)


if __name__ == "__main__":
    main()
