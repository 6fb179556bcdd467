r"""Test functions with known optima for Bayesian optimisation (minimisation form).

Each factory returns a :class:`Problem`: a callable on points of shape ``(d,)`` or ``(n, d)``
(NumPy or JAX arrays; the arithmetic is ``jax.numpy``) with its box ``bounds`` of shape
``(d, 2)``, its global minimiser(s) ``optimizers`` of shape ``(k, d)`` and the optimal value
``optimum``. Definitions follow Surjanovic & Bingham's *Virtual Library of Simulation
Experiments* and BoTorch's ``botorch.test_functions.synthetic`` (Li, Rudner & Wilson 2024 use
Branin, Hartmann-6 and Ackley-10).

* Forrester (1-D, :math:`[0, 1]`): :math:`f(x) = (6x-2)^2 \sin(12x-4)`,
  :math:`f^* = -6.020740` at :math:`x^* = 0.757249`.
* Branin (2-D, :math:`[-5,10]\times[0,15]`):
  :math:`f = (x_2 - \tfrac{5.1}{4\pi^2}x_1^2 + \tfrac{5}{\pi}x_1 - 6)^2
  + 10(1-\tfrac1{8\pi})\cos x_1 + 10`,
  :math:`f^* = 5/(4\pi) = 0.397887` at :math:`(-\pi, 12.275), (\pi, 2.275), (3\pi, 2.475)`.
* Hartmann-6 (:math:`[0,1]^6`): :math:`f = -\sum_i \alpha_i \exp(-\sum_j A_{ij}(x_j - P_{ij})^2)`,
  :math:`f^* = -3.322368`.
* Ackley (:math:`[-32.768, 32.768]^d`):
  :math:`f = -20 e^{-0.2\sqrt{\bar{x^2}}} - e^{\overline{\cos 2\pi x}} + 20 + e`,
  :math:`f^*=0` at 0.
* Levy (:math:`[-10,10]^d`), with :math:`w_i = 1 + (x_i-1)/4`:
  :math:`f = \sin^2(\pi w_1) + \sum_{i<d}(w_i-1)^2(1+10\sin^2(\pi w_i+1))
  + (w_d-1)^2(1+\sin^2(2\pi w_d))`,
  :math:`f^*=0` at :math:`(1,\dots,1)`.

Examples
--------
>>> from probkit.bo.functions import branin
>>> problem = branin()
>>> round(float(problem(problem.optimizers[0])), 6)
0.397887
>>> problem.bounds.shape
(2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from probkit._checks import as_array, check_finite, check_positive_int

__all__ = ["Problem", "forrester", "branin", "hartmann6", "ackley", "levy", "PROBLEMS"]


@dataclass(frozen=True, eq=False)
class Problem:
    """A test function with a known global minimum.

    Attributes
    ----------
    name : str
        Short name (``"branin"``, ``"hartmann6"``, ``"ackley10"``, ...).
    fn : callable
        ``fn(x) -> f`` on a single point ``x`` of shape ``(d,)`` written in ``jax.numpy``.
    bounds : numpy.ndarray of shape (d, 2)
        Lower and upper bound of each input.
    optimizers : numpy.ndarray of shape (k, d)
        The known global minimiser(s).
    optimum : float
        The global minimum value.
    """

    name: str
    fn: Callable
    bounds: np.ndarray
    optimizers: np.ndarray
    optimum: float

    @property
    def dim(self) -> int:
        """Number of inputs ``d``."""
        return int(self.bounds.shape[0])

    def __call__(self, x):
        """Evaluate at ``x`` of shape ``(d,)`` (a scalar) or ``(n, d)`` (shape ``(n,)``).

        Raises ``ValueError`` naming ``x`` for another shape, and for concrete ``x`` that is
        not numeric or holds NaN or inf (traced ``x`` is not checked).
        """
        if not isinstance(x, jax.core.Tracer):
            check_finite("x", as_array("x", x, ndim=(1, 2)))
        x = jnp.asarray(x)
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise ValueError(f"x: expected shape (d,) or (n, d) with d={self.dim}, got {x.shape}")
        if x.ndim == 1:
            return self.fn(x)
        return jax.vmap(self.fn)(x)

    def regret(self, value) -> np.ndarray:
        """Simple regret ``value - optimum`` (non-negative up to rounding); ``ValueError``
        naming ``value`` if it is not numeric."""
        return as_array("value", value, dtype=None).astype(np.float64) - self.optimum


def _forrester(x):
    x = x[0]
    return (6.0 * x - 2.0) ** 2 * jnp.sin(12.0 * x - 4.0)


def forrester() -> Problem:
    """Forrester et al. (2008) 1-D function on ``[0, 1]``; minimum -6.0207401 at 0.7572488."""
    return Problem("forrester", _forrester, np.array([[0.0, 1.0]]),
                   np.array([[0.7572487719770927]]), -6.020740055767083)


def _branin(x):
    x1, x2 = x[0], x[1]
    b, c = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * jnp.cos(x1) + 10.0


def branin() -> Problem:
    """Branin-Hoo on ``[-5, 10] x [0, 15]``; minimum ``5/(4 pi)`` at three points."""
    return Problem("branin", _branin, np.array([[-5.0, 10.0], [0.0, 15.0]]),
                   np.array([[-math.pi, 12.275], [math.pi, 2.275], [3 * math.pi, 2.475]]),
                   5.0 / (4.0 * math.pi))


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def _hartmann6(x):
    inner = jnp.sum(_H6_A * (x[None, :] - _H6_P) ** 2, axis=1)
    return -jnp.sum(_H6_ALPHA * jnp.exp(-inner))


def hartmann6() -> Problem:
    """Hartmann-6 on ``[0, 1]^6``; minimum -3.3223680 (minimiser refined to 1e-8)."""
    xstar = np.array([[0.20168951, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054]])
    return Problem("hartmann6", _hartmann6, np.tile([[0.0, 1.0]], (6, 1)), xstar,
                   -3.3223680114155147)


def _ackley(x):
    d = x.shape[0]
    a = -20.0 * jnp.exp(-0.2 * jnp.sqrt(jnp.sum(x**2) / d))
    return a - jnp.exp(jnp.sum(jnp.cos(2.0 * math.pi * x)) / d) + 20.0 + math.e


def ackley(dim: int = 10) -> Problem:
    """Ackley on ``[-32.768, 32.768]^dim``; minimum 0 at the origin."""
    dim = check_positive_int("dim", dim)
    return Problem(f"ackley{dim}", _ackley, np.tile([[-32.768, 32.768]], (dim, 1)),
                   np.zeros((1, dim)), 0.0)


def _levy(x):
    w = 1.0 + (x - 1.0) / 4.0
    head = jnp.sin(math.pi * w[0]) ** 2
    mid = jnp.sum((w[:-1] - 1.0) ** 2 * (1.0 + 10.0 * jnp.sin(math.pi * w[:-1] + 1.0) ** 2))
    tail = (w[-1] - 1.0) ** 2 * (1.0 + jnp.sin(2.0 * math.pi * w[-1]) ** 2)
    return head + mid + tail


def levy(dim: int = 2) -> Problem:
    """Levy on ``[-10, 10]^dim``; minimum 0 at ``(1, ..., 1)``."""
    dim = check_positive_int("dim", dim)
    return Problem(f"levy{dim}", _levy, np.tile([[-10.0, 10.0]], (dim, 1)),
                   np.ones((1, dim)), 0.0)


#: Factories by name, as used by ``benchmarks/bo.py`` and the CLI.
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "forrester": forrester, "branin": branin, "hartmann6": hartmann6,
    "ackley10": lambda: ackley(10), "levy": levy,
}
