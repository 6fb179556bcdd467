"""PFN weights shipped with probkit, and the priors they were trained on.

Each entry of :data:`PRETRAINED` names a file in ``probkit/inference/pfn/weights/`` and the prior
(:func:`prior`) it learned; ``benchmarks/pfn_train.py`` is the script that produced them (its
settings, seed and wall time are stored in each file's header:
:func:`probkit.read_header`).

* ``gp1d-rbf`` — 1-D GP, RBF kernel, lengthscale 0.2, output variance 1, noise variance 0.01,
  inputs in [0, 1] (the fixed-hyperparameter benchmark against the exact GP);
* ``gp1d-hyper`` — 1-D GP with hyperpriors: Matern-5/2, lengthscale ~ Gamma(3, 6), output variance
  ~ Gamma(2, 2), noise variance ~ Gamma(2, 50) (compared with NUTS over the hyperparameters);
* ``gp-bo`` — GP for optimisation in up to 6 dimensions on [0, 1]^d: Matern-5/2 ARD with
  lengthscales ~ Gamma(3, 6), noise variance ~ LogNormal(-7, 1.5), outputs standardised per
  dataset; up to 127 training points.

All three are 128 wide with 4 layers (about 0.6 M parameters, 2.5 MB each) and were trained
concurrently on one NVIDIA H200 for 200 s each (``python benchmarks/pfn_train.py --name NAME
--time-budget 200``; batch 128, peak learning rate 5e-4): 42,800 steps for ``gp1d-rbf``, but only
2,400 for ``gp1d-hyper`` and 4,800 for ``gp-bo``, whose hyperprior draws made each step about
ten times slower there (most likely the rejection sampler of ``jax.random.gamma``, not verified).
The last two are therefore under-trained: see BENCHMARKS.md for what they reach.
"""

from __future__ import annotations

import importlib.resources

import numpyro.distributions as dist

from probkit.inference.pfn.model import PFN, load
from probkit.priors import GPPrior

__all__ = ["PRETRAINED", "load_pretrained", "prior"]

#: Shipped models: name -> (file name, one-line description).
PRETRAINED: dict[str, tuple[str, str]] = {
    "gp1d-rbf": ("gp1d_rbf.pfn", "1-D GP, RBF, lengthscale 0.2, variance 1, noise 0.01"),
    "gp1d-hyper": ("gp1d_hyper.pfn", "1-D GP, Matern-5/2 with hyperpriors"),
    "gp-bo": ("gp_bo.pfn", "GP with hyperpriors for optimisation, d <= 6"),
}


def prior(name: str) -> GPPrior:
    """The prior a shipped model was trained on (for drawing evaluation data)."""
    if name == "gp1d-rbf":
        return GPPrior("rbf", lengthscale=0.2, variance=1.0, noise=0.01)
    if name == "gp1d-hyper":
        return GPPrior("matern52", lengthscale=dist.Gamma(3.0, 6.0), variance=dist.Gamma(2.0, 2.0),
                       noise=dist.Gamma(2.0, 50.0))
    if name == "gp-bo":
        return GPPrior("matern52", lengthscale=dist.Gamma(3.0, 6.0), variance=1.0,
                       noise=dist.LogNormal(-7.0, 1.5), input_dim=6)
    raise ValueError(f"name: expected one of {sorted(PRETRAINED)}, got {name!r}")


def load_pretrained(name: str) -> PFN:
    """Load a shipped PFN by name (see :data:`PRETRAINED`)."""
    if name not in PRETRAINED:
        raise ValueError(f"name: expected one of {sorted(PRETRAINED)}, got {name!r}")
    folder = importlib.resources.files("probkit.inference.pfn").joinpath("weights")
    ref = folder.joinpath(PRETRAINED[name][0])
    with importlib.resources.as_file(ref) as path:
        if not path.is_file():
            raise ValueError(f"name: the weights of {name!r} are not installed (expected {path})")
        return load(path)
