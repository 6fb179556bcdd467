"""Amortised inference with a prior-data fitted network (PFN).

Müller, Hollmann, Pineda Arango, Grabocka, Hutter, "Transformers Can Do Bayesian Inference",
ICLR 2022; Müller et al., "PFNs4BO", ICML 2023.

A PFN is a transformer trained on datasets drawn from a prior (:mod:`probkit.priors`) to output
the posterior predictive of held-out points as a bar distribution; afterwards one forward pass
replaces posterior inference. Modules:

* :mod:`~probkit.inference.pfn.bar` — the bar (Riemann) distribution with half-normal tails;
* :mod:`~probkit.inference.pfn.network` — the equinox transformer and its attention mask;
* :mod:`~probkit.inference.pfn.model` — :class:`PFN`, :class:`BarPrediction`, load;
* :mod:`~probkit.inference.pfn.train` — the loss and the training loop (checkpoints, resume);
* :mod:`~probkit.inference.pfn.pretrained` — the weights shipped with probkit.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.pfn import load_pretrained
>>> pfn = load_pretrained("gp1d-hyper")
>>> pred = pfn.predict(jnp.array([[0.2], [0.6]]), jnp.array([0.5, -0.3]), jnp.array([[0.4]]))
>>> pred.quantile(jnp.array([0.05, 0.95])).shape
(2, 1)
"""

from probkit.inference.pfn.model import PFN, BarPrediction, PFNConfig, load, predict_batch
from probkit.inference.pfn.pretrained import PRETRAINED, load_pretrained
from probkit.inference.pfn.train import TrainResult, batch_loss, init, train

__all__ = ["PFN", "PFNConfig", "BarPrediction", "init", "train", "batch_loss", "TrainResult",
           "load", "predict_batch", "load_pretrained", "PRETRAINED"]
