"""Bayesian optimisation with probkit models as surrogates.

* :mod:`~probkit.bo.protocol` — the ``Surrogate`` / ``Fitted`` / ``Posterior`` protocols and the two
  ready posteriors (joint Gaussian, ensemble of draws);
* :mod:`~probkit.bo.gp` — exact GP surrogate (RBF/Matern, MAP hyperparameters, padded so that it
  compiles once);
* :mod:`~probkit.bo.surrogates` — any NumPyro regression model through the HMC engine (and further
  families);
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
from probkit.bo.gp import GP, GPFitted
from probkit.bo.optimizer import BayesOpt, OptimizeResult, best_so_far, minimize, plot_convergence
from probkit.bo.protocol import Fitted, GaussianPosterior, Posterior, SamplePosterior, Surrogate
from probkit.bo.surrogates import NumPyroSurrogate, PFNSurrogate, StudentTNNGPSurrogate

__all__ = [
    "Surrogate", "Fitted", "Posterior", "GaussianPosterior", "SamplePosterior",
    "GP", "GPFitted", "NumPyroSurrogate", "StudentTNNGPSurrogate", "PFNSurrogate",
    "LogEI", "UCB", "QLogEI", "QUCB", "Thompson", "log_h", "log_ei", "ei", "optimize_acquisition",
    "BayesOpt", "OptimizeResult", "minimize", "best_so_far", "plot_convergence",
    "Problem", "PROBLEMS", "forrester", "branin", "hartmann6", "ackley", "levy",
]
