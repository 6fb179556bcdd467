r"""Latent dynamics of the DKF: :math:`z_0 \sim N(0, S)`, :math:`z_t = A z_{t-1} + N(0, G)`.

The stationary covariance solves :math:`S = ASA^\top + G`. ``A`` and ``G`` come from least
squares on latent paths (Burkhart et al. 2020, Sec. 4.5), or as posterior means under the NumPyro
model :func:`dynamics_model` sampled by probkit's HMC engine.

Examples
--------
>>> import numpy as np
>>> from probkit.models.dkf import fit_dynamics
>>> z = np.zeros((500, 1))
>>> for t in range(1, 500):
...     z[t] = 0.5 * z[t - 1] + np.sin(t)
>>> fit_dynamics(z).A.shape
(1, 1)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from probkit._checks import as_array, check_key, check_spd, check_square

__all__ = ["DynamicsParams", "stationary_covariance", "make_dynamics", "dynamics_model",
           "sample_dynamics", "fit_dynamics"]


class DynamicsParams(NamedTuple):
    """Latent dynamics :math:`z_t = A z_{t-1} + \\mathcal N(0, G)` with stationary covariance ``S``.

    Attributes
    ----------
    A : (D, D) transition matrix.
    G : (D, D) process-noise covariance (the paper's :math:`\\Gamma`).
    S : (D, D) stationary covariance of :math:`z` (prior of :math:`z_0`).
    """

    A: Array
    G: Array
    S: Array


def stationary_covariance(A: Array, G: Array) -> Array:
    """Solve the discrete Lyapunov equation :math:`S = A S A^\\top + G`.

    Uses :math:`(I - A\\otimes A)\\,\\mathrm{vec}(S) = \\mathrm{vec}(G)` (row-major vec), a
    :math:`D^2` linear system; traceable, so usable inside NumPyro models.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> S = stationary_covariance(0.5 * jnp.eye(2), 0.75 * jnp.eye(2))
    >>> bool(jnp.allclose(S, jnp.eye(2)))
    True
    """
    A = jnp.asarray(A)
    G = jnp.asarray(G)
    d = A.shape[-1]
    vec = jnp.linalg.solve(jnp.eye(d * d, dtype=A.dtype) - jnp.kron(A, A), G.reshape(-1))
    S = vec.reshape(d, d)
    return 0.5 * (S + S.T)


def make_dynamics(A, G, S=None) -> DynamicsParams:
    """Validate ``A``, ``G`` (and ``S``) and return :class:`DynamicsParams` (float64).

    ``S`` defaults to the solution of :math:`S = ASA^\\top + G`, which needs the spectral
    radius of ``A`` below 1.

    Raises
    ------
    ValueError
        Naming ``A``, ``G`` or ``S``: wrong dimensions, non-finite, ``G``/``S`` not symmetric
        positive definite, or ``A`` not stable when ``S`` is not given.

    Examples
    --------
    >>> import numpy as np
    >>> p = make_dynamics(0.5 * np.eye(2), 0.75 * np.eye(2))
    >>> np.allclose(p.S, np.eye(2))
    True
    """
    A = check_square("A", A)
    d = A.shape[0]
    G = check_spd("G", G, d)
    if S is None:
        rho = float(np.max(np.abs(np.linalg.eigvals(A))))
        if rho >= 1.0:
            raise ValueError(f"A: spectral radius {rho:.4g} >= 1, so no stationary covariance "
                             "exists; pass S explicitly")
        with jax.enable_x64(True):
            S = np.asarray(stationary_covariance(jnp.asarray(A), jnp.asarray(G)))
    S = check_spd("S", S, d)
    return DynamicsParams(A.astype(np.float64), G.astype(np.float64), S.astype(np.float64))


def _as_trials(name: str, z) -> list[np.ndarray]:
    """(T, D), (B, T, D) or a list of (T_b, D) arrays -> list of 2-D arrays."""
    if isinstance(z, list | tuple):
        trials = [as_array(f"{name}[{i}]", zi, ndim=2) for i, zi in enumerate(z)]
        if not trials:
            raise ValueError(f"{name}: empty list of trials")
        dims = {t.shape[1] for t in trials}
        if len(dims) != 1:
            raise ValueError(f"{name}: trials have different dimensions {sorted(dims)}")
        return trials
    arr = as_array(name, z, ndim=(2, 3))
    return [arr] if arr.ndim == 2 else list(arr)


def dynamics_model(z=None, *, num_steps: int | None = None, dim: int | None = None,
                   A=None, G=None, A_scale: float = 0.5, G_scale: float = 1.0) -> None:
    """NumPyro model of the latent dynamics :math:`z_0\\sim N(0,S)`, :math:`z_t = Az_{t-1}+N(0,G)`.

    Sites: ``A`` (Normal(0, ``A_scale``) entries), ``G_corr`` (LKJ-Cholesky, concentration 2;
    absent for ``D = 1``),
    ``G_sd`` (HalfNormal(``G_scale``)), deterministic ``G`` and ``S``; observed ``z0`` and ``z``
    (the transitions). ``A``/``G`` given as arrays are fixed instead of sampled. ``S`` solves
    :math:`S = ASA^\\top + G`; an unstable ``A`` (no such ``S``) has zero density.

    Parameters
    ----------
    z : array (T, D) or (B, T, D), optional
        Observed latent path(s), one per trial; ``None`` samples a path of ``num_steps``.
    num_steps, dim : int, optional
        Length and dimension when ``z`` is None.
    A, G : array, optional
        Fixed values instead of priors.

    Examples
    --------
    >>> import jax, numpyro
    >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(dynamics_model, 0)).get_trace(
    ...     num_steps=5, dim=2)
    >>> tr["z_path"]["value"].shape
    (5, 2)
    """
    if z is not None:
        z = jnp.asarray(z)
        dim = z.shape[-1]
    elif num_steps is None or dim is None:
        raise ValueError("num_steps, dim: both are needed when z is None")
    if A is None:
        A = numpyro.sample("A", dist.Normal(0.0, A_scale).expand([dim, dim]).to_event(2))
    if G is None:
        sd = numpyro.sample("G_sd", dist.HalfNormal(G_scale).expand([dim]).to_event(1))
        corr = (numpyro.sample("G_corr", dist.LKJCholesky(dim, 2.0)) if dim > 1
                else jnp.ones((1, 1)))
        Lg = sd[:, None] * corr
        G = numpyro.deterministic("G", Lg @ Lg.T)
    A = jnp.asarray(A)
    G = jnp.asarray(G)
    S = numpyro.deterministic("S", stationary_covariance(A, G))
    Ls = jnp.linalg.cholesky(S)
    stable = jnp.all(jnp.isfinite(Ls)) & jnp.all(jnp.diagonal(Ls) > 0)
    Ls = jnp.where(stable, Ls, jnp.eye(dim, dtype=Ls.dtype))
    numpyro.factor("stable", jnp.where(stable, 0.0, -jnp.inf))
    Lg = jnp.linalg.cholesky(G)
    if z is None:
        z0 = numpyro.sample("z0", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Ls))
        with numpyro.plate("time", num_steps - 1):
            eps = numpyro.sample("eps", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Lg))

        def step(prev, e):
            new = A @ prev + e
            return new, new

        _, rest = jax.lax.scan(step, z0, eps)
        numpyro.deterministic("z_path", jnp.concatenate([z0[None], rest], 0))
        return
    batch = z.shape[:-2]
    with numpyro.plate_stack("trials", batch):
        numpyro.sample("z0", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=Ls),
                       obs=z[..., 0, :])
    pred = jnp.einsum("ij,...tj->...ti", A, z[..., :-1, :])
    numpyro.sample("z", dist.MultivariateNormal(pred, scale_tril=Lg).to_event(len(batch) + 1),
                   obs=z[..., 1:, :])


def sample_dynamics(z, *, key, **hmc_kwargs):
    """Posterior draws of ``A`` and ``G`` from :func:`dynamics_model` by probkit's HMC engine.

    Parameters
    ----------
    z : array (T, D) or (B, T, D)
        Observed latent paths (equal-length trials).
    key : jax.random key
    **hmc_kwargs
        Passed to :func:`probkit.inference.hmc.run` (``num_warmup``, ``num_samples``,
        ``num_chains``, ``progress_bar``, ...).

    Returns
    -------
    probkit.result.Result
    """
    from probkit.inference import hmc

    check_key("key", key)
    arr = as_array("z", z, ndim=(2, 3))
    if not np.all(np.isfinite(arr)):
        raise ValueError("z: contains NaN or inf")
    # init at the prior median (A = 0, stable) rather than uniform(-2, 2) (often unstable)
    hmc_kwargs.setdefault("init_strategy", numpyro.infer.init_to_median(num_samples=15))
    with jax.enable_x64(True):
        return hmc.run(dynamics_model, jnp.asarray(arr, jnp.float64), key=key, **hmc_kwargs)


def fit_dynamics(z, *, method: str = "lstsq", stationary: str = "empirical", key=None,
                 **hmc_kwargs) -> DynamicsParams:
    """Fit ``A``, ``G`` and ``S`` from latent paths.

    ``method="lstsq"`` (default, Sec. 4.5): :math:`A = (\\sum_t z_t z_{t-1}^\\top)
    (\\sum_t z_{t-1}z_{t-1}^\\top)^{-1}` (regressing :math:`z_t` on :math:`z_{t-1}`; the authors'
    Python example regresses the reverse way, which we do not copy), :math:`G` the covariance of
    the residuals :math:`z_t - Az_{t-1}`. ``method="hmc"``: posterior means of ``A`` and ``G``
    under :func:`dynamics_model` (needs ``key``; ``hmc_kwargs`` go to
    :func:`probkit.inference.hmc.run`).

    ``stationary="empirical"`` (the paper): ``S`` is the sample covariance of ``z``;
    ``"lyapunov"``: ``S`` solves :math:`S = ASA^\\top + G`.

    Parameters
    ----------
    z : array (T, D), (B, T, D) or list of (T_b, D) arrays (trials)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = np.zeros((2000, 1))
    >>> for t in range(1, 2000):
    ...     z[t] = 0.8 * z[t - 1] + rng.normal()
    >>> round(float(fit_dynamics(z).A[0, 0]), 1)
    0.8
    """
    if method not in ("lstsq", "hmc"):
        raise ValueError(f"method: expected 'lstsq' or 'hmc', got {method!r}")
    if stationary not in ("empirical", "lyapunov"):
        raise ValueError(f"stationary: expected 'empirical' or 'lyapunov', got {stationary!r}")
    trials = _as_trials("z", z)
    for i, t in enumerate(trials):
        if not np.all(np.isfinite(t)):
            raise ValueError(f"z: contains NaN or inf (trial {i}); latent training paths "
                             "must be finite")
        if t.shape[0] < 2:
            raise ValueError(f"z: each trial needs at least 2 steps, trial {i} has {t.shape[0]}")
    d = trials[0].shape[1]
    prev = np.concatenate([t[:-1] for t in trials])
    nxt = np.concatenate([t[1:] for t in trials])
    if prev.shape[0] < d + 1:
        raise ValueError(f"z: need more than {d} transitions to fit a {d}x{d} transition matrix")
    if method == "lstsq":
        A = np.linalg.solve(prev.T @ prev, prev.T @ nxt).T
        G = np.atleast_2d(np.cov(nxt - prev @ A.T, rowvar=False))
    else:
        if key is None:
            raise ValueError("key: method='hmc' needs a JAX PRNG key")
        lens = {t.shape[0] for t in trials}
        if len(lens) != 1:
            raise ValueError("z: method='hmc' needs equal-length trials")
        res = sample_dynamics(np.stack(trials), key=key, **hmc_kwargs)
        A = np.asarray(res.posterior["A"]).reshape(-1, d, d).mean(0)
        G = np.asarray(res.posterior["G"]).reshape(-1, d, d).mean(0)
    G = 0.5 * (G + G.T)
    if stationary == "empirical":
        S = np.atleast_2d(np.cov(np.concatenate(trials), rowvar=False))
        return make_dynamics(A, G, S)
    return make_dynamics(A, G)
