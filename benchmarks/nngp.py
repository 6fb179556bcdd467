"""Scale mixtures of NNGPs (Lee et al., ICLR 2022): UCI regression, heavy-tailed synthetic data,
timing at n = 1000 and out-of-distribution classification on sklearn digits.

Regression (boston, concrete, energy, wine, yacht; the 10 standard splits of
``probkit.datasets.load_uci``). Each training split is divided once more (seeded by the split)
into a fitting part (85%) and a validation part (15%). Every model's continuous
hyperparameters are fitted by maximising its marginal likelihood on the fitting part; the discrete
one (NNGP depth in {1, 3}) is chosen by validation NLL; the chosen model (fitted on the fitting
part; no refit, to keep the run modest on a shared 2-core machine) is evaluated once on the test
split, which is never used for any choice. Methods:

* ``probkit-gp-rbf``: GP with an ARD RBF kernel, Gaussian scale (no discrete choice);
* ``probkit-nngp``: ReLU NNGP, Gaussian scale (fitted readout variance);
* ``probkit-ntk``: the NTK-GP predictor (``predictor="ntk"``: the infinite-width ReLU network
  trained by gradient flow, Lee et al. 2019) with the hyperparameters, noise ridge and scale
  that the NNGP marginal likelihood fits, depth chosen the same way;
* ``probkit-tp``: ReLU NNGP with ``s2 ~ InverseGamma(2, b)``, ``b`` fitted (Student-t process);
* ``probkit-burr``: ReLU NNGP with ``s2 ~ BurrXII(2, 1, scale)``, ``scale`` fitted (quadrature).

Metrics: test RMSE and NLL (per point, original units), mean +- standard error over splits.

Heavy-tailed synthetic set (the paper's syn-t, smaller): x = linspace(-150, 150, 300), f from a GP
with RBF kernel (lengthscale 1), y = f + 0.8 Cauchy noise (RandomState(761)); 10 random 80/20
train/test splits with the same validation protocol.

Timing: ``fit`` + ``predict`` (1000 test points) of the Student-t NNGP at n = 1000, d = 8, first
call (with compilation) and a second call with the same shapes.

Classification: sklearn ``digits`` (8x8), classes 1, 4, 8 held out; train on 70% of the other
seven classes, test on the remaining 30% clean and with additive Gaussian pixel noise (sd 0.1 and
0.3 on [0, 1] pixels); predictive entropy on the held-out classes (higher = more uncertain). Sparse
variational NNGP (ReLU, depth 2, 200 inducing points) with an inverse-gamma scale
(``probkit-svtp``) vs a Gaussian scale (``probkit-svgp``), 3 seeds.

Run ``python benchmarks/nngp.py`` (full) or ``python benchmarks/nngp.py --quick``.
"""

from __future__ import annotations

import os

# OpenBLAS/LAPACK oversubscribes threads on this shared machine (a 235 x 235 Cholesky took 0.4-0.8 s
# with default threading and 2-11 ms single-threaded): set before numpy/jax load LAPACK.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row, write_results  # noqa: E402

from probkit.datasets import load_uci  # noqa: E402
from probkit.distributions import BurrXII  # noqa: E402
from probkit.kernels import NNGP, RBF  # noqa: E402
from probkit.models import nngp  # noqa: E402


def methods(d: int):
    """name -> (list of candidate (setting, Regressor settings))."""
    depths = (1, 3)
    return {
        "probkit-gp-rbf": [("ard", dict(kernel=RBF(np.ones(d)), scale_prior=None))],
        "probkit-nngp": [(f"depth={L}", dict(kernel=NNGP(L, "relu", 2.0, 0.1), scale_prior=None))
                         for L in depths],
        "probkit-ntk": [(f"depth={L}", dict(kernel=NNGP(L, "relu", 2.0, 0.1), scale_prior=None,
                                            predictor="ntk"))
                        for L in depths],
        "probkit-tp": [(f"depth={L}", dict(kernel=NNGP(L, "relu", 2.0, 0.1),
                                           scale_prior=dist.InverseGamma(2.0, 2.0)))
                       for L in depths],
        "probkit-burr": [(f"depth={L}", dict(kernel=NNGP(L, "relu", 2.0, 0.1),
                                             scale_prior=BurrXII(2.0, 1.0, 1.0),
                                             engine="quadrature"))
                         for L in depths],
    }


def evaluate(model, x, y):
    pred = model.predict(x, full_cov=False)
    rmse = float(np.sqrt(np.mean((np.asarray(pred.mean) - y) ** 2)))
    return rmse, float(-np.mean(np.asarray(pred.log_prob(y))))


def run_split(x_tr, y_tr, x_te, y_te, seed, fit_kw, names=None):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y_tr))
    n_val = max(int(0.15 * len(y_tr)), 5)
    va, fi = perm[:n_val], perm[n_val:]
    out = {}
    for name, cands in methods(x_tr.shape[1]).items():
        if names and name not in names:
            continue
        t0 = time.time()
        fitted, scores = [], []
        for _, kw in cands:
            m = nngp.Regressor(**kw, **fit_kw).fit(x_tr[fi], y_tr[fi], key=jax.random.key(seed),
                                                   progress_bar=False)
            fitted.append(m)
            scores.append(evaluate(m, x_tr[va], y_tr[va])[1] if len(cands) > 1 else 0.0)
        best = int(np.nanargmin(scores))
        setting = cands[best][0]
        rmse, nll = evaluate(fitted[best], x_te, y_te)
        out[name] = (rmse, nll, setting, time.time() - t0)
    return out


def se(v):
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None


def summarise(rows, dataset, results, quick):
    lines = []
    for name in results[0]:
        r = np.array([res[name][0] for res in results])
        nl = np.array([res[name][1] for res in results])
        secs = float(np.mean([res[name][3] for res in results]))
        chosen = ",".join(sorted({res[name][2] for res in results}))
        setting = f"splits={len(results)},chosen={chosen}"
        rows.append(row(dataset, name, setting, "rmse", r.mean(), se(r), secs))
        rows.append(row(dataset, name, setting, "nll", nl.mean(), se(nl), secs))
        lines.append(f"{dataset:10s} {name:16s} rmse {r.mean():.3f} +- {se(r) or 0:.3f}  "
                     f"nll {nl.mean():.3f} +- {se(nl) or 0:.3f}  [{chosen}] {secs:.1f}s/split")
    print("\n".join(lines), flush=True)


def syn_t(seed=761, n=300):
    rs = np.random.RandomState(seed)
    x = np.linspace(-150, 150, n)
    k = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2) + 1e-8 * np.eye(n)
    f = np.linalg.cholesky(k) @ rs.randn(n)
    y = f + 0.8 * rs.standard_cauchy(n)
    return x[:, None], y


def timing(fit_kw):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.1 * rng.standard_normal(2000)
    out = []
    for attempt in ("first call (compiles)", "second call"):
        t = time.time()
        m = nngp.Regressor(kernel=NNGP(2, "relu", 2.0, 0.1),
                           scale_prior=dist.InverseGamma(2.0, 2.0), **fit_kw).fit(
            x[:1000], y[:1000], key=jax.random.key(0), progress_bar=False)
        p = m.predict(x[1000:], full_cov=False)
        np.asarray(p.log_prob(y[1000:]))
        out.append((attempt, time.time() - t))
        print(f"timing n=1000 {attempt}: {out[-1][1]:.2f}s", flush=True)
    return out


def digits_ood(seeds, quick):
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data / 16.0, data.target
    held = np.isin(y, [1, 4, 8])
    keep = np.array(sorted(set(range(10)) - {1, 4, 8}))
    relabel = {c: i for i, c in enumerate(keep)}
    x_in, y_in = x[~held], np.array([relabel[c] for c in y[~held]])
    x_out = x[held]
    res = {"probkit-svtp": [], "probkit-svgp": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y_in))
        ntr = int(0.7 * len(y_in))
        tr, te = perm[:ntr], perm[ntr:]
        noise = rng.standard_normal(x_in[te].shape)
        x_noisy = {sd: x_in[te] + sd * noise for sd in (0.1, 0.3)}
        for name, sm in (("probkit-svtp", "inverse_gamma"), ("probkit-svgp", "gaussian")):
            t = time.time()
            clf = nngp.Classifier(kernel=NNGP(2, "relu", 2.0, 0.1), scale_model=sm,
                                  num_inducing=200, num_epochs=20 if quick else 60,
                                  batch_size=100, learning_rate=1e-2, num_mc=16,
                                  standardize=False).fit(  # pixels are already in [0, 1]
                x_in[tr], y_in[tr], key=jax.random.key(seed), progress_bar=False)
            k = jax.random.key(100 + seed)
            clean = clf.evaluate(x_in[te], y_in[te], key=k)
            ood = clf.evaluate(x_out, np.array([], int), key=k)
            out = {"clean_accuracy": clean["accuracy"], "clean_nll": clean["nll"],
                   "clean_entropy": clean["entropy"]}
            for sd, xn in x_noisy.items():
                noisy = clf.evaluate(xn, y_in[te], key=k)
                out.update({f"noise{sd}_accuracy": noisy["accuracy"],
                            f"noise{sd}_nll": noisy["nll"],
                            f"noise{sd}_entropy": noisy["entropy"]})
            out.update(heldout_entropy=ood["entropy"], seconds=time.time() - t)
            res[name].append(out)
            print(name, seed, {k: round(v, 3) for k, v in res[name][-1].items()}, flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--splits", type=int, default=None)
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--part", choices=("all", "uci", "extra"), default="all",
                    help="run only the UCI part or only the synthetic/timing/digits part "
                         "(writes nngp_<part>.json; merge with --merge)")
    ap.add_argument("--methods", nargs="*", default=None,
                    help="run only these methods of the UCI part (writes nngp_uci_<tag>.json)")
    ap.add_argument("--tag", default="subset", help="file tag with --methods")
    ap.add_argument("--merge", action="store_true",
                    help="merge results/nngp_uci.json and nngp_extra.json into nngp.json")
    args = ap.parse_args(argv)
    if args.merge:
        import json

        from _common import RESULTS

        docs = [json.loads((RESULTS / f"nngp_{p}.json").read_text()) for p in ("uci", "extra")]
        rows = docs[0]["rows"] + docs[1]["rows"]
        write_results("nngp", rows, parts=[d["command"] for d in docs])
        return
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "probkit-jax"))
    quick = args.quick
    fit_kw = dict(num_steps=60 if quick else 100, refine_steps=50 if quick else 60,
                  learning_rate=0.05, max_fit_points=300)
    # smallest first (yacht, boston, energy, concrete, wine)
    datasets = args.datasets or (["yacht"] if quick else
                                 ["yacht", "boston", "energy", "concrete", "wine"])
    if args.part == "extra":
        datasets = []
    nsplit = args.splits or (2 if quick else 10)
    uci_name = "nngp_uci" if not args.methods else f"nngp_uci_{args.tag}"
    rows = []
    t_all = time.time()
    for name in datasets:
        results = []
        for split in range(nsplit):
            d = load_uci(name, split)
            results.append(run_split(d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                                     split, fit_kw, names=args.methods))
            print(name, split, {k: tuple(np.round(v[:2], 3)) for k, v in results[-1].items()},
                  f"{time.time() - t_all:.0f}s", flush=True)
        summarise(rows, name, results, quick)
        if args.part == "uci":  # keep what is done if the run is stopped
            write_results(uci_name, rows, quick=quick)
    if args.part == "uci":
        write_results(uci_name, rows, quick=quick)
        return
    # heavy-tailed synthetic set
    x, y = syn_t()
    results = []
    for split in range(2 if quick else 10):
        rng = np.random.default_rng(1000 + split)
        perm = rng.permutation(len(y))
        ntr = int(0.8 * len(y))
        tr, te = perm[:ntr], perm[ntr:]
        results.append(run_split(x[tr], y[tr], x[te], y[te], split, fit_kw,
                                 names=None if not quick else ("probkit-nngp", "probkit-tp")))
    summarise(rows, "syn-cauchy", results, quick)
    for attempt, secs in timing(fit_kw):
        rows.append(row("synthetic-d8", "probkit-tp", f"n=1000,m_test=1000,{attempt}",
                        "seconds", secs, None, secs))
    if not args.skip_digits:
        res = digits_ood([0] if quick else [0, 1, 2], quick)
        for name, lst in res.items():
            for metric in lst[0]:
                if metric == "seconds":
                    continue
                v = np.array([r[metric] for r in lst])
                se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
                rows.append(row("digits-ood", name, "heldout=1,4,8,M=200,epochs=60",
                                metric, v.mean(), se,
                                float(np.mean([r["seconds"] for r in lst]))))
    print(f"total {time.time() - t_all:.0f}s")
    write_results("nngp_extra" if args.part == "extra" else "nngp", rows, quick=quick)


if __name__ == "__main__":
    main()
