"""Bayesian optimisation with probkit models as surrogates.

* :mod:`~probkit.bo.protocol` — the ``Surrogate`` / ``Fitted`` / ``Posterior`` protocols: the
  family contract of :mod:`probkit.models.base` (every box-input family is a surrogate; the
  default is the exact GP, :class:`probkit.models.gp.GP`);
* :mod:`~probkit.bo.acquisition` — log-EI (Ament et al. 2023), UCB, qLogEI, qUCB, Thompson sampling,
  and their multi-start optimisation in JAX;
* :mod:`~probkit.bo.optimizer` — ``BayesOpt`` (ask/tell, save/resume), ``minimize``, plots;
* :mod:`~probkit.bo.functions` — Forrester, Branin, Hartmann-6, Ackley, Levy.

Examples
--------
>>> import jax
>>> from probkit import bo
>>> problem = bo.branin()
>>> res = bo.minimize(problem, problem.bounds, budget=15, n_init=8, key=jax.random.key(0),
...                   progress_bar=False)
>>> res.nfev
15
"""

from probkit.bo.acquisition import (
    QUCB,
    UCB,
    LogEI,
    QLogEI,
    Thompson,
    ei,
    log_ei,
    log_h,
    optimize_acquisition,
)
from probkit.bo.functions import PROBLEMS, Problem, ackley, branin, forrester, hartmann6, levy
from probkit.bo.optimizer import BayesOpt, OptimizeResult, best_so_far, minimize, plot_convergence
from probkit.bo.protocol import Fitted, Posterior, Surrogate
from probkit.models.gp import GP

__all__ = [
    "Surrogate", "Fitted", "Posterior", "GP",
    "LogEI", "UCB", "QLogEI", "QUCB", "Thompson", "log_h", "log_ei", "ei", "optimize_acquisition",
    "BayesOpt", "OptimizeResult", "minimize", "best_so_far", "plot_convergence",
    "Problem", "PROBLEMS", "forrester", "branin", "hartmann6", "ackley", "levy",
]
