r"""FunBaT written in NumPyro: the model behind the ``"nuts"`` engine (small data).

Dense, non-centred GP factors on each mode's unique coordinates (any kernel of
:mod:`probkit.kernels`, a state-space form is not needed here); run it with
:func:`probkit.inference.hmc.run` (what ``FunBaT(engine="nuts")`` does) or any NumPyro engine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from probkit._checks import check_positive_int
from probkit.models.base import check_inputs
from probkit.models.tucker.data import factor_kernels, gram, kron_rows, per_mode

__all__ = ["tucker_model", "JITTER"]

#: Relative diagonal jitter of the factor Gram matrices (times the mode's variance).
JITTER = 1e-8


def _hyper(name: str, value, num_modes: int):
    if isinstance(value, jax.core.Tracer):
        return jnp.broadcast_to(value, (num_modes,))
    return per_mode(name, value, num_modes)


def tucker_model(x, y=None, *, rank: int, lengthscale=0.1, variance=1.0, nu: float = 0.5,
                 cp: bool = False, a0: float = 1.0, b0: float = 1.0,
                 core_prior_var: float = 1.0, grids: Sequence | None = None, kernel=None):
    r"""FunBaT as a NumPyro model (for NUTS/SVI on small data).

    Sites: ``u{k}_white`` (I_k, R) standard normal and the deterministic ``u{k}`` =
    :math:`L_k` ``u{k}_white`` (non-centred Matern GP values at the mode's unique
    coordinates, :math:`L_k L_k^\top = K_k + 10^{-8} \bar s_k^2 I` with :math:`\bar s_k^2` the
    mean prior variance on the grid), ``core`` (R,)*K
    :math:`\sim N(0, \sigma_W^2)` unless ``cp``, ``tau`` :math:`\sim \mathrm{Gamma}(a_0, b_0)`,
    and ``y`` :math:`\sim N(f, \tau^{-1})` in a ``data`` plate. The dense Gram matrices cost
    :math:`O(I_k^3)`: for large data use the CEP engine.

    Parameters
    ----------
    x : array_like, shape (N, K)
        Coordinates. Concrete unless ``grids`` is given.
    y : array_like, shape (N,), optional
        Observations (``None`` samples from the prior predictive).
    rank : int
    lengthscale, variance : float or sequence of K floats
        Matern hyperparameters per mode (may be traced: a prior on them in a wrapping model).
    nu : {0.5, 1.5, 2.5}
    cp : bool
        Core fixed to the super-diagonal of ones.
    a0, b0, core_prior_var : float
    grids : sequence of K sorted arrays, optional
        The unique coordinates per mode; ``x`` may then be traced.
    kernel : kernel or sequence of K kernels, optional
        The factor prior of every mode (or one per mode), any kernel of :mod:`probkit.kernels`
        or SDE of :mod:`probkit.statespace`; replaces ``nu``, ``lengthscale`` and ``variance``.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro.infer import Predictive
    >>> from probkit.models.tucker import tucker_model
    >>> x = np.random.default_rng(0).uniform(size=(20, 2))
    >>> draws = Predictive(tucker_model, num_samples=3)(jax.random.key(0), x, rank=2)
    >>> draws["y"].shape
    (3, 20)
    """
    rank = check_positive_int("rank", rank)
    if grids is None:
        x = check_inputs("x", x)
        grids = [np.unique(x[:, k]) for k in range(x.shape[1])]
    K = len(grids)
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != K:
        raise ValueError(f"x: expected shape (N, {K}) (one column per mode), got {jnp.shape(x)}")
    if kernel is None:
        kernels = factor_kernels(None, K, nu, _hyper("lengthscale", lengthscale, K),
                                 _hyper("variance", variance, K))
    else:
        kernels = factor_kernels(kernel, K)
    x = jnp.asarray(x)
    n = x.shape[0]
    factors = []
    for k, g in enumerate(grids):
        g = jnp.asarray(g)
        kgg = gram(kernels[k], g, g)
        chol = jnp.linalg.cholesky(kgg + JITTER * jnp.mean(jnp.diag(kgg)) * jnp.eye(g.shape[0]))
        white = numpyro.sample(f"u{k}_white",
                               dist.Normal(0.0, 1.0).expand([g.shape[0], rank]).to_event(2))
        u = numpyro.deterministic(f"u{k}", chol @ white)
        pos = jnp.clip(jnp.searchsorted(g, x[:, k]), 0, g.shape[0] - 1)
        factors.append(u[pos])
    if cp:
        f = functools.reduce(lambda a, b: a * b, factors).sum(-1)
    else:
        core = numpyro.sample("core", dist.Normal(0.0, math.sqrt(core_prior_var))
                              .expand([rank] * K).to_event(K))
        z = jnp.ones((n, 1))
        for u in factors:
            z = kron_rows(z, u)
        f = z @ core.reshape(-1)
    tau = numpyro.sample("tau", dist.Gamma(a0, b0))
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Normal(f, 1.0 / jnp.sqrt(tau)), obs=y)
