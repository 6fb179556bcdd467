r"""Functional-prior Bayesian neural networks (Tran, Rossi, Milios, Filippone, JMLR 2022).

A BNN's weight prior is fitted so that its distribution over functions at measurement points
matches a target GP prior in Wasserstein-1 distance (a Lipschitz critic with gradient penalty,
alternating critic and prior steps); the posterior under the matched prior is sampled with
adaptive SGHMC (BlackJAX diffusion, minibatches, vmapped chains, thinning) or NUTS.

* :mod:`~probkit.models.fbnn.network` -- :class:`MLP` (NTK parameterisation), the prior
  families :class:`GaussianPrior` and :class:`InvGammaPrior`, the NumPyro :func:`bnn_model`;
* :mod:`~probkit.models.fbnn.matching` -- :class:`GPTarget`, the critic, :func:`match_prior`,
  exact 1-D checks :func:`marginal_wasserstein`, :func:`sliced_wasserstein`;
* :mod:`~probkit.models.fbnn.sghmc` -- :func:`sghmc_sample` and Springenberg's adaptation;
* :mod:`~probkit.models.fbnn.regression` -- :class:`FBNN`, :class:`FBNNPosterior`,
  :func:`save_prior`/:func:`load_prior`, and the BO :class:`FBNNSurrogate`.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.fbnn import FBNN
>>> x = np.linspace(-2, 2, 30)[:, None]; y = np.sin(2 * x[:, 0])
>>> post = FBNN(widths=(16,), prior="fixed", num_chains=2, num_burnin=100, num_samples=5,
...             thinning=10).fit(x, y, key=jax.random.key(0))
>>> post.latent(x).shape
(10, 30)
"""

from probkit.models.fbnn.matching import (
    GPTarget,
    PriorFit,
    check_kernel,
    critic_apply,
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
    mlp_template,
    softplus_inv,
)
from probkit.models.fbnn.regression import (
    FBNN,
    PRIORS,
    FBNNPosterior,
    FBNNSurrogate,
    load_prior,
    save_prior,
    uci_target,
)
from probkit.models.fbnn.sghmc import (
    AdaptState,
    SGHMCState,
    adapt_init,
    adapt_update,
    sghmc_sample,
)

__all__ = [
    "ACTIVATIONS", "MLP", "GaussianPrior", "InvGammaPrior", "LayerVariances", "bnn_model",
    "gaussian_log_prior", "mlp_template", "softplus_inv",
    "GPTarget", "PriorFit", "check_kernel", "critic_apply", "critic_init", "critic_wasserstein",
    "fit_critic", "marginal_wasserstein", "match_prior", "measurement_set", "sample_functions",
    "sliced_wasserstein",
    "FBNN", "PRIORS", "FBNNPosterior", "FBNNSurrogate", "load_prior",
    "save_prior", "uci_target",
    "AdaptState", "SGHMCState", "adapt_init", "adapt_update", "sghmc_sample",
]
