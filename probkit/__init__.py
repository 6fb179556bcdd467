"""probkit: NumPyro model families from recent Bayesian ML research, with their engines.

The public face of the package: it re-exports only. The work lives in ``probkit.kernels``,
``probkit.statespace``, ``probkit.priors``, ``probkit.distributions``, ``probkit.result``,
``probkit.posterior``, ``probkit.inference`` (``hmc``, ``message_passing``, ``sbc``, ``pfn``),
``probkit.models`` (``nngp``, ``tucker``, ``dkf``, ``fbnn``, ``mpnp``), ``probkit.bo`` and
``probkit.datasets``.
"""

from probkit.result import Result

__version__ = "0.1.0"
__all__ = ["Result", "__version__"]
