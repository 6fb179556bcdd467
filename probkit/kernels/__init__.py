r"""Covariance functions shared by every GP-based family.

Each kernel is an :class:`equinox.Module` (a pytree, so its hyperparameters can be
differentiated, optimised with optax or sampled in a NumPyro model) with

* ``kernel(x1, x2) -> (n1, n2)`` Gram matrix for inputs of shape ``(n, d)``;
* ``kernel.diag(x) -> (n,)`` the exact diagonal.

Stationary kernels are written in terms of the scaled distance
:math:`r = \lVert (x - x') / \ell \rVert_2` with ARD lengthscales :math:`\ell`:

* RBF: :math:`k(r) = \sigma^2 \exp(-r^2/2)`;
* Matern-1/2: :math:`\sigma^2 e^{-r}`;
* Matern-3/2: :math:`\sigma^2 (1 + \sqrt3 r) e^{-\sqrt3 r}`;
* Matern-5/2: :math:`\sigma^2 (1 + \sqrt5 r + 5r^2/3) e^{-\sqrt5 r}`
  (Rasmussen & Williams 2006, eq. 4.17).

``k1 + k2`` and ``k1 * k2`` build :class:`Sum` and :class:`Product` kernels (``Periodic *
Matern32`` is the quasi-periodic kernel). :class:`Cosine`, :class:`Periodic`, :class:`SHO` and
:class:`Celerite` (1-D), the Matern kernels and their sums and products have state-space forms
(:func:`probkit.statespace.as_sde`) that the O(n) Kalman-filter GPs run on.

Kernels compute in the dtype of their inputs: pass float64 arrays (with
``jax.config.update("jax_enable_x64", True)`` or inside ``jax.experimental.enable_x64()``)
where Cholesky factorisations need it.

Examples
--------
>>> import jax.numpy as jnp
>>> from probkit.kernels import Matern32
>>> k = Matern32(lengthscale=0.5, variance=2.0)
>>> K = k(jnp.linspace(0, 1, 4)[:, None], jnp.linspace(0, 1, 4)[:, None])
>>> K.shape
(4, 4)
"""


from probkit.kernels.base import Kernel, Product, Sum, as_2d, sqdist
from probkit.kernels.neural import NNGP, NTK
from probkit.kernels.oscillatory import SHO, Celerite, Cosine
from probkit.kernels.stationary import RBF, Matern12, Matern32, Matern52, Periodic, Stationary

__all__ = ["Kernel", "Stationary", "RBF", "Matern12", "Matern32", "Matern52", "Periodic", "NNGP",
           "NTK", "Sum", "Product", "Cosine", "SHO", "Celerite", "as_2d", "sqdist"]
