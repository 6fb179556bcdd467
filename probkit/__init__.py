"""probkit: NumPyro model families from recent Bayesian ML research, with their engines.

The public face of the package: it re-exports only. The work lives in ``probkit.kernels``,
``probkit.statespace``, ``probkit.priors``, ``probkit.distributions``, ``probkit.result``,
``probkit.posterior``, ``probkit.inference`` (``hmc``, ``sgmcmc``, ``kalman``, ``ep``,
``optimize``, ``sbc``, ``pfn``), ``probkit.models`` (``gp``, ``nngp``, ``tucker``, ``dkf``,
``fbnn``, ``mpnp``, ``pfn``, ``numpyro``; the family contract in ``probkit.models.base``),
``probkit.bo`` and ``probkit.datasets``.
``probkit.load(path)`` reads back any saved model, network or checkpoint;
``probkit.enable_compilation_cache()`` keeps compiled programs on disk for later processes.
"""

__version__ = "0.2.0"

from probkit._io import load, read_header  # noqa: E402 - _io reads __version__
from probkit.compilation import (  # noqa: E402
    disable_compilation_cache,
    enable_compilation_cache,
)
from probkit.result import Result  # noqa: E402

__all__ = ["Result", "disable_compilation_cache", "enable_compilation_cache", "load",
           "read_header", "__version__"]
