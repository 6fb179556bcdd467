"""FunBaT benchmark: probkit's CEP + Kalman engine vs discrete Tucker/CP ALS (tensorly) and a
dense-GP factor baseline, on the shipped synthetic set and US-TEMP (5 folds).

Settings (the authors' configs, see the paper note):

* synthetic, FunBaT-CP R=1, Matern 3/2, lengthscale 0.1, variance 0.5, damping 0.1/0.2/0.5,
  100 epochs, 5 seeds (one shipped split);
* US-TEMP, coordinates = grid index scaled to [0, 1] per mode (the npz ships indices only),
  FunBaT-CP R=5: Matern 1/2, l 0.1, s^2 5, damping 0.3/0.8/0.5, 150 epochs, raw y;
  FunBaT (Tucker) R=3: Matern 1/2, l 0.5, s^2 1, damping 0.9/0.9/0.95, 200 epochs, y
  standardised with train statistics; errors in deg F;
* baselines on the same folds: ``tensorly-tucker-als`` / ``tensorly-cp-als`` (masked ALS on the
  discrete 15x95x267 grid, y standardised), ``probkit-funbat-*-dense-gp`` (the same CEP with
  each mode's factor posterior from the dense Matern Gram matrix instead of the Kalman
  smoother: same numbers, O(I^3 R^3) time; US-TEMP fold 0 only);
* memory: FunBaT Tucker R=7 on US-TEMP fold 0 (200 epochs) in a child process, peak RSS.

Run ``python benchmarks/tucker.py`` (full) or ``--quick`` (fold 0, fewer epochs, no dense
baseline and no R=7 probe; about 1-2 min, mostly JIT compilation).
Needs the ``bench`` extra (tensorly).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import numpy as np

from probkit.datasets import load_tensor
from probkit.models import tucker

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402

CP5 = dict(rank=5, cp=True, nu=0.5, lengthscale=0.1, variance=5.0, num_steps=150,
           damping=(0.3, 0.8, 0.5), standardize=False)
TK3 = dict(rank=3, cp=False, nu=0.5, lengthscale=0.5, variance=1.0, num_steps=200,
           damping=(0.9, 0.9, 0.95), standardize=True)
SYN = dict(rank=1, cp=True, nu=1.5, lengthscale=0.1, variance=0.5, num_steps=100,
           damping=(0.1, 0.2, 0.5), standardize=False)


def errors(pred, y):
    r = pred - y
    return float(np.sqrt(np.mean(r**2))), float(np.mean(np.abs(r)))


def run_funbat(xtr, ytr, xte, yte, cfg, seed=0, **over):
    t0 = time.perf_counter()
    fam = tucker.FunBaT(**{**cfg, **over})
    fitted = fam.fit(xtr, ytr, key=jax.random.key(seed), progress_bar=False)
    pred = fitted.posterior(xte)
    return (*errors(pred.mean, yte), time.perf_counter() - t0)


def run_tensorly(shape, itr, ytr, ite, yte, rank, kind, n_iter=100):
    import tensorly as tl
    from tensorly.decomposition import parafac
    from tensorly.decomposition import tucker as tl_tucker

    t0 = time.perf_counter()
    mu, sd = ytr.mean(), ytr.std()
    tensor = np.zeros(tuple(shape))
    mask = np.zeros(tuple(shape), bool)
    idx = tuple(itr.T)
    # average duplicates (none on these grids, but be safe)
    np.add.at(tensor, idx, (ytr - mu) / sd)
    counts = np.zeros(tuple(shape))
    np.add.at(counts, idx, 1.0)
    mask = counts > 0
    tensor[mask] /= counts[mask]
    if kind == "tucker":
        core, factors = tl_tucker(tensor, rank=[rank] * len(shape), mask=mask, n_iter_max=n_iter,
                                  init="random", random_state=0)
        full = tl.tucker_to_tensor((core, factors))
    else:
        cp = parafac(tensor, rank=rank, mask=mask, n_iter_max=n_iter, init="random",
                     random_state=0)
        full = tl.cp_to_tensor(cp)
    pred = full[tuple(ite.T)] * sd + mu
    return (*errors(pred, yte), time.perf_counter() - t0)


def memory_probe(rank: int, epochs: int) -> None:
    """Child-process entry: fit Tucker R=rank on US-TEMP fold 0 and print JSON with peak RSS."""
    d = load_tensor("us_temp")
    shape = d["shape"]
    xtr = d["fold0_tr_ind"] / (shape - 1.0)
    xte = d["fold0_te_ind"] / (shape - 1.0)
    rmse, mae, sec = run_funbat(xtr, d["fold0_tr_y"], xte, d["fold0_te_y"], TK3, rank=rank,
                                num_steps=epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"rmse": rmse, "mae": mae, "seconds": sec, "peak_rss_gb": peak}))


def summarize(rows, dataset, method, setting, per_fold):
    arr = np.asarray(per_fold)  # (folds, 3): rmse, mae, seconds
    n = len(arr)
    se = (lambda v: float(np.std(v, ddof=1) / np.sqrt(n))) if n > 1 else (lambda v: None)
    for j, metric in enumerate(("rmse", "mae")):
        rows.append(row(dataset, method, setting, metric, arr[:, j].mean(), se(arr[:, j]),
                        arr[:, 2].mean()))
    for f, (rm, ma, sec) in enumerate(arr):
        rows.append(row(dataset, method, f"{setting},fold={f}", "rmse", rm, None, sec))
        rows.append(row(dataset, method, f"{setting},fold={f}", "mae", ma, None, sec))
    print(f"{dataset:10s} {method:28s} {setting:6s} rmse {arr[:, 0].mean():.4f} "
          f"+- {arr[:, 0].std():.4f}  mae {arr[:, 1].mean():.4f}  s/fold {arr[:, 2].mean():.1f}",
          flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fold 0, fewer epochs (< 2 min)")
    ap.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-epochs", type=int, default=200, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, args.probe_epochs)
        return
    quick = args.quick
    rows: list[dict] = []

    # ---- synthetic
    d = load_tensor("funbat_synthetic_r1")
    seeds = [0] if quick else range(5)
    res = [run_funbat(d["tr_ind_CONTI"], d["tr_y"], d["te_ind_CONTI"], d["te_y"], SYN, seed=s)
           for s in seeds]
    summarize(rows, "synthetic", "probkit-funbat-cp", "R=1", res)
    if not quick:
        res = [run_funbat(d["tr_ind_CONTI"], d["tr_y"], d["te_ind_CONTI"], d["te_y"], SYN,
                          seed=s, mode_solver="dense") for s in seeds]
        summarize(rows, "synthetic", "probkit-funbat-cp-dense-gp", "R=1", res)
    shape = np.maximum(d["tr_ind_DISCT"].max(0), d["te_ind_DISCT"].max(0)) + 1
    res = [run_tensorly(shape, d["tr_ind_DISCT"], d["tr_y"], d["te_ind_DISCT"], d["te_y"], 1,
                        "cp")]
    summarize(rows, "synthetic", "tensorly-cp-als", "R=1", res)

    # ---- US-TEMP
    u = load_tensor("us_temp")
    shape = u["shape"]
    folds = [0] if quick else range(5)
    ep = {"num_steps": 40} if quick else {}
    data = []
    for f in folds:
        itr, ite = u[f"fold{f}_tr_ind"].astype(int), u[f"fold{f}_te_ind"].astype(int)
        data.append((itr, u[f"fold{f}_tr_y"], ite, u[f"fold{f}_te_y"]))
    scale = lambda i: i / (shape - 1.0)  # noqa: E731
    for name, cfg, method in (("R=5", CP5, "probkit-funbat-cp"),
                              ("R=3", TK3, "probkit-funbat-tucker")):
        res = [run_funbat(scale(a), b, scale(c), e, cfg, **ep) for a, b, c, e in data]
        summarize(rows, "us-temp", method, name, res)
    if not quick:  # dense O(I^3 R^3) factor solves: fold 0 only (same numbers, the time differs)
        res = [run_funbat(scale(a), b, scale(c), e, TK3, mode_solver="dense")
               for a, b, c, e in data[:1]]
        summarize(rows, "us-temp", "probkit-funbat-tucker-dense-gp", "R=3", res)
    n_iter = 30 if quick else 100
    for rank, kind, method in ((5, "cp", "tensorly-cp-als"), (3, "tucker", "tensorly-tucker-als")):
        res = [run_tensorly(shape, a, b, c, e, rank, kind, n_iter) for a, b, c, e in data]
        summarize(rows, "us-temp", method, f"R={rank}", res)

    # ---- memory at R = 7 (child process, so its peak RSS is its own; full run only)
    if quick:
        write_results("tucker", rows, quick=quick)
        return
    epochs = 200
    out = subprocess.run([sys.executable, __file__, "--memory-probe", "7", "--probe-epochs",
                          str(epochs)], capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    setting = f"R=7,fold=0,epochs={epochs}"
    rows.append(row("us-temp", "probkit-funbat-tucker", setting, "peak_rss_gb",
                    probe["peak_rss_gb"], None, probe["seconds"]))
    rows.append(row("us-temp", "probkit-funbat-tucker", setting, "rmse", probe["rmse"], None,
                    probe["seconds"]))
    rows.append(row("us-temp", "probkit-funbat-tucker", setting, "mae", probe["mae"], None,
                    probe["seconds"]))
    print(f"Tucker R=7 fold 0 ({epochs} epochs): {probe}", flush=True)
    write_results("tucker", rows, quick=quick)


if __name__ == "__main__":
    main()
