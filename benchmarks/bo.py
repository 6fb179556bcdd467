"""Bayesian optimisation benchmark: log10 simple regret vs evaluations (issue 9).

Methods, on the same seeds and the same scrambled-Sobol initial designs:

* ``random-search`` — uniform random points after the initial design;
* ``probkit-gp-logei`` — :class:`probkit.bo.GP` (Matern-5/2, MAP) + analytic log-EI;
* ``probkit-nngp-logei`` — Student-t NNGP surrogate (:meth:`probkit.models.nngp.Regressor.for_bo`,
  padded: compiles once per capacity);
* ``probkit-pfn-logei`` — the shipped BO PFN (:class:`probkit.models.pfn.Regressor`,
  ``d <= 6`` only);
* ``probkit-fbnn-logei`` — BNN surrogate (:meth:`probkit.models.fbnn.FBNN.for_bo`, 2 x 50 tanh,
  fixed Gaussian prior, SGHMC draws);
* ``botorch-gp-qlogei`` — BoTorch ``SingleTaskGP`` (its defaults) + ``qLogExpectedImprovement``
  (q=1), ``optimize_acqf`` with 10 restarts / 512 raw samples (needs the ``bench`` extra).

Problems (Li, Rudner & Wilson 2024 settings, sequential q=1): Branin (100 evaluations),
Hartmann-6 (100), Ackley-10 (200), ``n_init=10``. Rows: metric ``log10_regret`` (median over seeds,
with quartiles, mean and s.e. as extra fields), setting ``evals=N``; metric ``seconds_per_iter``
(median seconds of one surrogate fit + acquisition optimisation). One PNG per problem goes to
``benchmarks/results/bo_<problem>.png``. Both JAX and torch run single-threaded (shared machine).

Usage::

    python benchmarks/bo.py                 # full run
    python benchmarks/bo.py --quick         # Branin, 20 evaluations, 2 seeds (< 2 min)
    python benchmarks/bo.py --problems ackley10 --seeds 3 --deadline-minutes 40
    python benchmarks/bo.py --replot benchmarks/results/bo_*_curves.json   # merge runs' plots
    python benchmarks/bo.py --problems ackley10 --seeds 2 --first-seed 3 --tag _b  # seeds 3, 4
    python benchmarks/bo.py --merge _ab benchmarks/results/bo_a_curves.json \
        benchmarks/results/bo_b_curves.json   # pool the seeds of two runs into bo_ab.json
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import qmc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, row, write_results  # noqa: E402

from probkit import bo  # noqa: E402
from probkit.models import nngp  # noqa: E402
from probkit.models.fbnn import FBNN  # noqa: E402
from probkit.models.pfn import Regressor as PFNRegressor  # noqa: E402

SETTINGS = {"branin": (100, 10, (10, 25, 50, 75, 100)),
            "hartmann6": (100, 10, (10, 25, 50, 75, 100)),
            "ackley10": (200, 10, (10, 50, 100, 150, 200))}


def initial_design(problem, n_init, seed):
    with warnings.catch_warnings():  # n_init = 10 is not a power of two: balance warning only
        warnings.simplefilter("ignore", UserWarning)
        u = qmc.Sobol(problem.dim, scramble=True, seed=seed).random(n_init)
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    return lo + u * (hi - lo)


def evaluate(problem, x):
    with jax.enable_x64(True):
        return np.asarray(problem(np.atleast_2d(x)), dtype=np.float64)


def run_random(problem, budget, x0, seed):
    rng = np.random.default_rng(10_000 + seed)
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    x = np.concatenate([x0, lo + rng.uniform(size=(budget - len(x0), problem.dim)) * (hi - lo)])
    return evaluate(problem, x), []


def run_probkit(problem, budget, x0, seed, surrogate=None):
    opt = bo.BayesOpt(problem.bounds, n_init=len(x0), surrogate=surrogate,
                      key=jax.random.key(seed), progress_bar=False)
    opt.tell(x0, evaluate(problem, x0))
    times = []
    while len(opt.history) < budget:
        t0 = time.perf_counter()
        x = opt.ask(1)
        times.append(time.perf_counter() - t0)
        opt.tell(x, evaluate(problem, x))
    return opt.y, times


#: Model-family surrogates (method name -> factory, largest input dimension served).
SURROGATES = {
    "probkit-nngp-logei": (lambda: nngp.Regressor.for_bo(), None),
    "probkit-pfn-logei": (lambda: PFNRegressor("gp-bo"), 6),
    "probkit-fbnn-logei": (lambda: FBNN.for_bo(), None),
}


def run_botorch(problem, budget, x0, seed):
    import torch
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    xs = [*(x0 - lo) / (hi - lo)]
    ys = [*evaluate(problem, x0)]
    unit = torch.stack([torch.zeros(problem.dim), torch.ones(problem.dim)]).double()
    times = []
    while len(ys) < budget:
        t0 = time.perf_counter()
        tx = torch.tensor(np.array(xs), dtype=torch.double)
        ty = -torch.tensor(np.array(ys), dtype=torch.double)[:, None]  # BoTorch maximises
        model = SingleTaskGP(tx, ty)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            acq = qLogExpectedImprovement(model, best_f=ty.max())
            cand, _ = optimize_acqf(acq, bounds=unit, q=1, num_restarts=10, raw_samples=512)
        times.append(time.perf_counter() - t0)
        u = cand.detach().numpy()[0]
        xs.append(u)
        ys.append(float(evaluate(problem, lo + u * (hi - lo))[0]))
    return np.array(ys), times


def regret_curve(problem, ys):
    return np.log10(np.maximum(bo.best_so_far(ys) - problem.optimum, 1e-12))


def summarise(problem_name, method, curves, times, checkpoints):
    rows = []
    c = np.stack(curves)
    for n in checkpoints:
        v = c[:, n - 1]
        r = row(problem_name, method, f"evals={n}", "log10_regret", float(np.median(v)),
                stderr=float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None,
                seconds=float(np.median(times)) if times else None)
        r.update(q25=float(np.percentile(v, 25)), q75=float(np.percentile(v, 75)),
                 mean=float(np.mean(v)), n_seeds=len(v))
        rows.append(r)
    if times:
        rows.append(row(problem_name, method, f"evals={checkpoints[-1]}", "seconds_per_iter",
                        float(np.median(times)), seconds=float(np.sum(times) / len(curves))))
    return rows


def plot(problem_name, curves_by_method, budget):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    t = np.arange(1, budget + 1)
    for method, curves in curves_by_method.items():
        c = np.stack(curves)
        line, = ax.plot(t, np.median(c, 0), label=f"{method} ({len(curves)} seeds)")
        lo, hi = np.percentile(c, [25, 75], axis=0)
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("log10 simple regret")
    ax.set_title(f"{problem_name}: median and quartiles")
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / f"bo_{problem_name}.png", dpi=120)
    plt.close(fig)


def _load_curves(path):
    """``{problem: {method: [curve, ...]}}`` and the per-run iteration seconds (``_seconds``,
    absent in files written before it was recorded)."""
    doc = json.loads(Path(path).read_text())
    seconds = doc.pop("_seconds", {})
    return doc, seconds


def replot(files):
    """One figure per problem from saved curves (later files win for a method seen twice)."""
    merged = {}
    for f in files:
        for problem, methods in _load_curves(f)[0].items():
            for method, curves in methods.items():
                merged.setdefault(problem, {})[method] = [np.asarray(c) for c in curves]
    for problem, methods in merged.items():
        plot(problem, methods, SETTINGS[problem][0])
        print(f"plotted {problem}: {sorted(methods)}")


def merge(tag, files):
    """Pool the runs of several invocations (e.g. seeds split over processes with
    ``--first-seed``) into ``bo<tag>.json`` and its curves; seconds per iteration come from the
    runs that recorded them."""
    curves, seconds = {}, {}
    for f in files:
        c, s = _load_curves(f)
        for problem, methods in c.items():
            for method, runs in methods.items():
                curves.setdefault(problem, {}).setdefault(method, []).extend(runs)
        for problem, methods in s.items():
            for method, runs in methods.items():
                seconds.setdefault(problem, {}).setdefault(method, []).extend(runs)
    rows = []
    for problem, methods in curves.items():
        for method, runs in methods.items():
            times = [t for run in seconds.get(problem, {}).get(method, []) for t in run]
            length = min(len(r) for r in runs)  # --quick runs are shorter
            checkpoints = sorted({n for n in SETTINGS[problem][2] if n <= length} | {length})
            rows += summarise(problem, method, [np.asarray(r) for r in runs], times, checkpoints)
    write_results("bo" + tag, rows, merged_from=[str(f) for f in files])
    (RESULTS / f"bo{tag}_curves.json").write_text(json.dumps({**curves, "_seconds": seconds}))
    for r in rows:
        print(f"  {r['dataset']:10s} {r['method']:22s} {r['setting']:10s} {r['metric']:16s} "
              f"{r['value']:.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replot", nargs="+", metavar="CURVES_JSON",
                    help="only redraw the plots from these *_curves.json files")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--problems", nargs="+", default=list(SETTINGS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--merge", nargs="+", metavar=("TAG", "CURVES_JSON"),
                    help="only pool the runs of these *_curves.json files into bo<TAG>.json")
    ap.add_argument("--methods", nargs="+",
                    default=["random-search", "probkit-gp-logei", *SURROGATES,
                             "botorch-gp-qlogei"])
    ap.add_argument("--deadline-minutes", type=float, default=None,
                    help="start no new run after this many minutes (partial results are kept)")
    ap.add_argument("--tag", default="", help="suffix of the results file (bo<tag>.json)")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(args.replot)
    if args.merge:
        return merge(args.merge[0], args.merge[1:])
    settings = dict(SETTINGS)
    if args.quick:
        args.problems, args.seeds = ["branin"], 2
        settings["branin"] = (20, 10, (10, 15, 20))
    t_start = time.time()
    runners = {"random-search": run_random, "probkit-gp-logei": run_probkit}
    for name, (factory, _) in SURROGATES.items():
        runners[name] = lambda *a, f=factory: run_probkit(*a, surrogate=f())
    if "botorch-gp-qlogei" in args.methods:
        try:
            import botorch  # noqa: F401

            runners["botorch-gp-qlogei"] = run_botorch
        except ImportError:
            print("botorch not installed: skipping botorch-gp-qlogei "
                  "(pip install 'probkit[bench]')")
    runners = {k: v for k, v in runners.items() if k in args.methods}
    print("methods:", list(runners))
    done_rows, curves_json, seconds_json, stopped = [], {}, {}, False

    def flush(name, curves, times, budget, checkpoints, final=False):
        """Write everything finished so far (after every run: partial results survive)."""
        rows = list(done_rows)
        for method in runners:
            if curves[method]:
                rows += summarise(name, method, curves[method], times[method], checkpoints)
        curves_json[name] = {m: [c.tolist() for c in v] for m, v in curves.items() if v}
        seconds_json[name] = {m: v for m, v in run_times.items() if v}
        plot(name, {m: v for m, v in curves.items() if v}, budget)
        write_results("bo" + args.tag, rows, quick=args.quick, partial=stopped or not final)
        (RESULTS / f"bo{args.tag}{'_quick' if args.quick else ''}_curves.json").write_text(
            json.dumps({**curves_json, "_seconds": seconds_json}))
        return rows

    for name in args.problems:
        problem = bo.PROBLEMS[name]()
        budget, n_init, checkpoints = settings[name]
        curves = {m: [] for m in runners}
        times = {m: [] for m in runners}
        run_times = {m: [] for m in runners}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            x0 = initial_design(problem, n_init, seed)
            for method, fn in runners.items():
                max_dim = SURROGATES.get(method, (None, None))[1]
                if max_dim is not None and problem.dim > max_dim:
                    continue  # e.g. the shipped BO PFN serves d <= 6
                if args.deadline_minutes and time.time() - t_start > 60 * args.deadline_minutes:
                    stopped = True
                    break
                t0 = time.time()
                ys, ts = fn(problem, budget, x0, seed)
                curves[method].append(regret_curve(problem, ys))
                times[method].extend(ts)
                run_times[method].append([round(t, 5) for t in ts])
                print(f"{name} seed={seed} {method}: final log10 regret "
                      f"{curves[method][-1][-1]:.2f}, {time.time() - t0:.0f} s, "
                      f"{np.median(ts) if ts else 0:.2f} s/iter", flush=True)
                flush(name, curves, times, budget, checkpoints)
            if stopped:
                break
        rows = flush(name, curves, times, budget, checkpoints, final=True)
        done_rows = rows
        for r in rows:
            if r["dataset"] == name:
                print(f"  {r['method']:22s} {r['setting']:10s} {r['metric']:16s} {r['value']:.3f}"
                      + (f"  [{r['q25']:.2f}, {r['q75']:.2f}]" if "q25" in r else ""))
        if stopped:
            print("deadline reached: remaining runs skipped")
            break

if __name__ == "__main__":
    main()
