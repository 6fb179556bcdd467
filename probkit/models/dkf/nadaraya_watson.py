r"""Nadaraya-Watson regression with a Gaussian kernel and its leave-one-out bandwidth.

:math:`\hat y(x) = \sum_i w_i(x) y_i`, :math:`w_i \propto \exp(-\lVert x - x_i\rVert^2 / (2h^2))`;
the DKF's default learner of :math:`f(x)` and, on residual outer products, of :math:`Q(x)`
(Burkhart et al. 2020, Sec. 4.5). Pure functions, float64.

Examples
--------
>>> import numpy as np
>>> from probkit.models.dkf import nw_predict
>>> nw_predict(np.zeros((1, 1)), np.ones((1, 2)), 1.0, np.zeros((3, 1))).shape
(3, 2)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from probkit import kernels as _kernels

__all__ = ["nw_predict", "nw_loo_error", "nw_select_bandwidth"]


@jax.jit
def _nw_predict(x_train, y_train, bandwidth, x_query):
    logits = -_kernels.sqdist(x_query, x_train) / (2.0 * bandwidth**2)
    return jax.nn.softmax(logits, axis=-1) @ y_train


@jax.jit
def _nw_loo(x, y, d2, bandwidth):
    logits = -d2 / (2.0 * bandwidth**2)
    logits = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, logits)
    pred = jax.nn.softmax(logits, axis=-1) @ y
    return jnp.mean(jnp.sum((pred - y) ** 2, -1))


def nw_predict(x_train, y_train, bandwidth: float, x_query) -> np.ndarray:
    """Nadaraya-Watson regression with a Gaussian kernel.

    :math:`\\hat y(x) = \\sum_i w_i(x) y_i` with
    :math:`w_i \\propto \\exp(-\\lVert x - x_i\\rVert^2 / (2h^2))`
    (normalised in log space, so far-away queries get their nearest neighbours' values rather
    than 0/0).

    Examples
    --------
    >>> import numpy as np
    >>> float(nw_predict(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), 1e-3,
    ...                  np.array([[0.9]]))[0, 0])
    2.0
    """
    with jax.enable_x64(True):
        return np.asarray(_nw_predict(jnp.asarray(x_train, jnp.float64),
                                      jnp.asarray(y_train, jnp.float64), jnp.float64(bandwidth),
                                      jnp.asarray(x_query, jnp.float64)))


def nw_loo_error(x, y, bandwidth: float) -> float:
    """Leave-one-out mean squared error (summed over outputs) of :func:`nw_predict`."""
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        d2 = _kernels.sqdist(x, x)
        return float(_nw_loo(x, jnp.asarray(y, jnp.float64), d2, jnp.float64(bandwidth)))


def nw_select_bandwidth(x, y, *, bounds: tuple[float, float] | None = None) -> float:
    """Bandwidth :math:`h` minimising the leave-one-out error (1-D search on :math:`\\log h`).

    The default search range is the median pairwise distance times ``[1e-2, 1e1]`` (a coarse
    grid first, then Brent's method around the best grid point).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-2, 2, size=(200, 1)); y = np.sin(2 * x) + 0.1 * rng.normal(size=(200, 1))
    >>> 0.01 < nw_select_bandwidth(x, y) < 1.0
    True
    """
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        yj = jnp.asarray(y, jnp.float64)
        d2 = _kernels.sqdist(xj, xj)
        if bounds is None:
            med = float(jnp.sqrt(jnp.median(d2[jnp.triu_indices(xj.shape[0], 1)])))
            med = med if med > 0 else 1.0
            bounds = (1e-2 * med, 1e1 * med)

        def loss(logh):
            return float(_nw_loo(xj, yj, d2, jnp.float64(np.exp(logh))))

        grid = np.linspace(np.log(bounds[0]), np.log(bounds[1]), 16)
        vals = [loss(g) for g in grid]
        i = int(np.nanargmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = scipy.optimize.minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                                             options={"xatol": 1e-3})
        best = res.x if res.fun <= vals[i] else grid[i]
        return float(np.exp(best))
