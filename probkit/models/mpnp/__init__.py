r"""Neural processes and martingale-posterior neural processes (MPNP).

A neural process (NP) maps a context set :math:`Z_c = \{(x_i, y_i)\}_{i \in c}` to a predictive
distribution at any target inputs; it is trained on many datasets drawn from a stochastic-process
prior (:mod:`probkit.priors`). The martingale-posterior NP (Lee, Yun, Nam, Fong & Lee,
*Martingale Posterior Neural Processes*, ICLR 2023) gets its uncertainty from generated pseudo
contexts: :math:`p(y \mid x, Z_c) \approx \frac1K\sum_k p(y \mid x, \mathrm{enc}(Z_c \cup
Z'^{(k)}))`, :math:`Z'^{(k)} = g(Z_c, \varepsilon^{(k)})`.

* :mod:`~probkit.models.mpnp.networks` — CNP/CANP, NP, the pseudo-context generator and MPNP
  on :mod:`equinox.nn` (masked attention);
* :mod:`~probkit.models.mpnp.training` — the BNP task protocol, losses, evaluation, and
  :func:`train` on :func:`probkit.inference.optimize.run`;
* :mod:`~probkit.models.mpnp.family` — :class:`NeuralProcess`, the model family: ``fit``
  conditions a trained network (default: the shipped weights) on a context set and returns a
  :class:`NeuralProcessFitted` (mixture ``predict``, ``posterior``, ArviZ, save/load; a BO
  surrogate as it is).

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.mpnp import NeuralProcess
>>> x = np.linspace(0, 1, 8)[:, None]
>>> fitted = NeuralProcess(model="mpnp", num_samples=8).fit(x, np.sin(6 * x[:, 0]),
...                                                        key=jax.random.key(0))
>>> pred = fitted.predict(x[:3])
>>> pred.mean.shape, pred.sample(jax.random.key(1), (4,)).shape
((3,), (4, 3))
"""

from probkit.models.mpnp.family import (
    OUTPUT_SCALE,
    PRETRAINED,
    TRAINING_RANGE,
    NeuralProcess,
    NeuralProcessFitted,
    load_network,
    load_pretrained,
    posterior_predictive_model,
    save_network,
)
from probkit.models.mpnp.networks import (
    CNP,
    KINDS,
    MPNP,
    NETWORKS,
    NP,
    SIGMA_FLOOR,
    Generator,
    Network,
    make_network,
)
from probkit.models.mpnp.training import (
    Tasks,
    batch_loss,
    bnp_prior,
    evaluate,
    make_eval_tasks,
    sample_tasks,
    train,
)

__all__ = [
    "NeuralProcess", "NeuralProcessFitted", "PRETRAINED", "TRAINING_RANGE", "OUTPUT_SCALE",
    "load_pretrained", "load_network", "save_network", "posterior_predictive_model",
    "CNP", "NP", "MPNP", "Generator", "Network", "NETWORKS", "KINDS", "SIGMA_FLOOR",
    "make_network",
    "Tasks", "bnp_prior", "sample_tasks", "make_eval_tasks", "batch_loss", "evaluate", "train",
]
