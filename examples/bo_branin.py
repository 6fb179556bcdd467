"""Bayesian optimisation of the Branin function with probkit's GP surrogate and log-EI.

Runs ask/tell BO (exact Matern-5/2 GP, analytic log expected improvement), saves the history as
JSON, resumes from it to show that the next point is the same, and plots log10 simple regret
against evaluations next to random search.

    python examples/bo_branin.py --budget 40 --out .
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from probkit import bo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problem = bo.branin()

    # Half the budget, save, resume, finish.
    opt = bo.BayesOpt(problem.bounds, n_init=args.n_init, key=jax.random.key(args.seed))
    opt.minimize(problem, args.budget // 2)
    path = opt.save(args.out / "bo_branin_history.json")
    resumed = bo.BayesOpt.load(path)
    print("next point, uninterrupted:", opt.ask(1)[0], " resumed:", resumed.ask(1)[0])
    res = resumed.minimize(problem, args.budget)
    print(f"best {res.fun:.6f} at {res.x}; optimum {problem.optimum:.6f}; "
          f"log10 regret {np.log10(res.fun - problem.optimum):.2f}")

    rng = np.random.default_rng(args.seed)
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    with jax.enable_x64(True):
        rand = np.asarray(problem(lo + rng.uniform(size=(args.budget, 2)) * (hi - lo)))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bo.plot_convergence(res, optimum=problem.optimum, ax=ax, label="GP + log-EI")
    bo.plot_convergence(rand, optimum=problem.optimum, ax=ax, label="random search")
    ax.legend()
    ax.set_title("Branin")
    fig.tight_layout()
    fig.savefig(args.out / "bo_branin.png", dpi=120)
    print("wrote", args.out / "bo_branin.png")


if __name__ == "__main__":
    main()
