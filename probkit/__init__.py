"""probkit: NumPyro model families from recent Bayesian ML research, with inference engines built for them.

The public face of the package: it re-exports only. Subpackages hold the work:
``probkit.kernels``, ``probkit.statespace``, ``probkit.distributions``, ``probkit.result``,
``probkit.inference`` (``hmc``, ``message_passing``, ``pfn``), ``probkit.models``, ``probkit.bo``,
``probkit.datasets``.
"""

from probkit.result import Result

__version__ = "0.1.0"
__all__ = ["Result", "__version__"]
