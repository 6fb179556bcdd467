r"""Functional-prior Bayesian neural networks (Tran, Rossi, Milios, Filippone, JMLR 2022).

A BNN's weight prior is fitted so that its distribution over functions at measurement points
matches a target GP prior in Wasserstein-1 distance (a Lipschitz critic with gradient penalty,
alternating critic and prior steps); the posterior under the matched prior is sampled with
adaptive SGHMC (:mod:`probkit.inference.sgmcmc`: BlackJAX diffusion, minibatches, vmapped
chains, thinning) or NUTS.

* :mod:`~probkit.models.fbnn.network` -- :class:`MLP` (NTK parameterisation), the prior
  families :class:`GaussianPrior` and :class:`InvGammaPrior`, the NumPyro :func:`bnn_model`,
  :func:`save_prior`/:func:`load_prior`;
* :mod:`~probkit.models.fbnn.matching` -- :class:`GPTarget` (draws through
  :class:`probkit.priors.GPPrior`), the critic (an :class:`equinox.nn.MLP`), :func:`match_prior`
  (on :func:`probkit.inference.optimize.run`), exact 1-D checks :func:`marginal_wasserstein`,
  :func:`sliced_wasserstein`;
* :mod:`~probkit.models.fbnn.regression` -- the family :class:`FBNN` (``name = "fbnn"``,
  engines ``"sghmc"`` and ``"nuts"``; :meth:`FBNN.for_bo` is the BO configuration) and its
  fitted :class:`FBNNFitted`.

Examples
--------
>>> import jax, numpy as np, probkit
>>> from probkit.models.fbnn import FBNN
>>> x = np.linspace(-2, 2, 30)[:, None]; y = np.sin(2 * x[:, 0])
>>> fitted = FBNN(widths=(16,), prior="fixed", num_chains=2, num_warmup=100, num_samples=5,
...               thinning=10).fit(x, y, key=jax.random.key(0), progress_bar=False)
>>> pred = fitted.predict(x[:4])                      # Mixture over y, batch shape (4,)
>>> idata = fitted.to_arviz(key=jax.random.key(1), num_samples=10, num_chains=2)
>>> path = fitted.save(__import__("tempfile").mkdtemp() + "/fbnn.pk")
>>> bool(np.array_equal(probkit.load(path).predict(x[:4]).mean, pred.mean))
True
"""

from probkit.models.fbnn.matching import (
    GPTarget,
    MatchingLoss,
    PriorFit,
    check_kernel,
    critic_init,
    critic_wasserstein,
    fit_critic,
    marginal_wasserstein,
    match_prior,
    measurement_set,
    sample_functions,
    sliced_wasserstein,
)
from probkit.models.fbnn.network import (
    ACTIVATIONS,
    MLP,
    GaussianPrior,
    InvGammaPrior,
    LayerVariances,
    bnn_model,
    gaussian_log_prior,
    load_prior,
    mlp_template,
    save_prior,
    softplus_inv,
)
from probkit.models.fbnn.regression import FBNN, PRIORS, FBNNFitted, uci_target

__all__ = [
    "ACTIVATIONS", "MLP", "GaussianPrior", "InvGammaPrior", "LayerVariances", "bnn_model",
    "gaussian_log_prior", "mlp_template", "softplus_inv", "save_prior", "load_prior",
    "GPTarget", "PriorFit", "MatchingLoss", "check_kernel", "critic_init", "critic_wasserstein",
    "fit_critic", "marginal_wasserstein", "match_prior", "measurement_set", "sample_functions",
    "sliced_wasserstein",
    "FBNN", "PRIORS", "FBNNFitted", "uci_target",
]
