"""From the dense kernels of :mod:`probkit.kernels` to their state-space forms."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from probkit import kernels as _kernels
from probkit.statespace.base import SDE
from probkit.statespace.matern import MaternSDE
from probkit.statespace.oscillatory import SHOSDE, CeleriteSDE, CosineSDE
from probkit.statespace.periodic import PeriodicSDE

__all__ = ["as_sde"]


def _scalar(name: str, value) -> Array:
    """A one-element hyperparameter of a dense kernel, squeezed (state-space GPs are 1-D)."""
    arr = jnp.asarray(value)
    if arr.size != 1:
        raise ValueError(f"kernel: state-space GPs are 1-D; {name} must be a scalar, "
                         f"got shape {arr.shape}")
    return jnp.reshape(arr, ())


def as_sde(kernel, *, periodic_order: int | None = None) -> SDE:
    """The state-space form of a kernel: an :class:`SDE` itself, or a dense kernel of
    :mod:`probkit.kernels` that has one.

    ============================================  ==========================================
    dense kernel                                  SDE
    ============================================  ==========================================
    ``Matern12/32/52`` (or any object with        :class:`MaternSDE`
    ``nu``, ``lengthscale``, ``variance``)
    ``Cosine``                                    :class:`CosineSDE`
    ``Periodic``                                  :class:`PeriodicSDE` (truncated series)
    ``SHO``                                       :class:`SHOSDE`
    ``Celerite``                                  :class:`CeleriteSDE`
    ``k1 + k2`` (``Sum``), ``k1 * k2``            :class:`SumSDE`, :class:`ProductSDE` of
    (``Product``)                                 the parts' SDEs
    ============================================  ==========================================

    One-element hyperparameter arrays are squeezed. E.g. ``Matern52(...) + Periodic(...) *
    Matern32(...)`` (trend plus quasi-periodic season) maps to an SDE of state dimension
    ``3 + 2 (2J + 1)``.

    Parameters
    ----------
    kernel : SDE or kernel object
    periodic_order : int, optional
        The order :math:`J` of every :class:`PeriodicSDE` built here (default: chosen per
        lengthscale, see :class:`PeriodicSDE`).

    Raises
    ------
    ValueError
        ``kernel`` (or a part of a sum or product) has no state-space form here (e.g. RBF),
        or a hyperparameter with more than one element.

    Examples
    --------
    >>> from probkit.kernels import Matern32, Matern52, Periodic
    >>> from probkit.statespace import as_sde
    >>> k = Matern52(5.0, 1.0) + Periodic(1.0, 0.5, period=1.0) * Matern32(3.0, 1.0)
    >>> as_sde(k, periodic_order=6).state_dim   # 3 + 2 * 13
    29
    """
    if isinstance(kernel, SDE):
        return kernel
    if isinstance(kernel, _kernels.Sum | _kernels.Product):
        left = as_sde(kernel.kernel1, periodic_order=periodic_order)
        right = as_sde(kernel.kernel2, periodic_order=periodic_order)
        return left + right if isinstance(kernel, _kernels.Sum) else left * right
    if isinstance(kernel, _kernels.Periodic):
        return PeriodicSDE(_scalar("lengthscale", kernel.lengthscale),
                           _scalar("variance", kernel.variance),
                           _scalar("period", kernel.period), order=periodic_order)
    if isinstance(kernel, _kernels.Cosine):
        return CosineSDE(_scalar("period", kernel.period), _scalar("variance", kernel.variance))
    if isinstance(kernel, _kernels.SHO):
        return SHOSDE(kernel.omega0, kernel.quality, kernel.sigma)
    if isinstance(kernel, _kernels.Celerite):
        return CeleriteSDE(kernel.a, kernel.b, kernel.c, kernel.d)
    nu = getattr(kernel, "nu", None)
    if nu is None or not hasattr(kernel, "lengthscale") or not hasattr(kernel, "variance"):
        raise ValueError(f"kernel: expected a Matern, Cosine, Periodic, SHO or Celerite kernel, "
                         f"a sum or product of them, or an SDE; got {type(kernel).__name__}")
    return MaternSDE(float(nu), _scalar("lengthscale", kernel.lengthscale),
                     _scalar("variance", kernel.variance))
