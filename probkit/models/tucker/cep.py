r"""Conditional expectation propagation for FunBaT (Fang et al., ICLR 2024), one smoother per mode.

The approximate posterior is :math:`q = \prod_k q(u^k)\, q(\mathcal W)\, q(\tau)`. One epoch
(:func:`cep_step`):

1. for each mode :math:`k`, the message of datum :math:`n` to :math:`u^k(i^n_k)` is Gaussian
   with precision :math:`E[\tau] E[a_n a_n^\top]` and shift :math:`E[\tau] y_n E[a_n]`,
   :math:`a_n = \mathcal W_{(k)} \bigotimes_{j \ne k} u^j(i^n_j)`, where
   :math:`E[a_n a_n^\top]_{rs} = \sum_{pq} E[\mathcal W_{(k)rp}\mathcal W_{(k)sq}]
   \big(\bigotimes_{j\ne k} E[u^j u^{j\top}]\big)_{pq}` uses the full core covariance.
   Messages are summed per unique coordinate (segment sums up the prefix tree of
   :class:`~probkit.models.tucker.data.TuckerData`), damped
   (:math:`\Lambda \leftarrow \rho\Lambda_{old} + (1-\rho)\Lambda_{new}`), and enter one Kalman
   filter + RTS smoother over the mode's grid
   (:func:`~probkit.models.tucker.factors.mode_posterior`);
2. core: :math:`\Sigma_W = (\Lambda_W + \sigma_W^{-2} I)^{-1}`, :math:`\mu_W = \Sigma_W \eta_W`
   with damped :math:`\Lambda_W = E[\tau]\sum_n E[z_n z_n^\top]`,
   :math:`\eta_W = E[\tau] \sum_n y_n E[z_n]`, :math:`z_n = \bigotimes_k u^k(i^n_k)`;
3. noise: :math:`q(\tau) = \mathrm{Gamma}(a_0 + N/2, b_0 + \tfrac12\sum_n E[(y_n - f_n)^2])`
   with the expected squared error using the core *and* factor covariances (damped sum).

The :math:`R^{2(K-1)}` Kronecker moments are formed once per unique pair :math:`(i_k, i_{a_1})`
and streamed in chunks, so memory is :math:`O(N R^{K} + \sum_k I_k R^{2(K-1)} + R^{2K})`, never
:math:`O(N R^{2K})`; the core's statistics come from the last mode's per-coordinate sums.
:func:`f_moments` gives :math:`E[f]` and :math:`E[f^2]` at given factor moments; :func:`run_cep`
is the epoch loop (jitted epochs, tqdm bar).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from probkit.models.tucker.data import (
    CHUNK_FLOATS,
    TuckerConfig,
    TuckerData,
    chunk_size,
    kron_rows,
)
from probkit.models.tucker.factors import mode_posterior, sym

__all__ = ["CEPState", "cep_init", "cep_step", "f_moments", "mean_f", "run_cep"]


class CEPState(NamedTuple):
    r"""Approximate posterior and damped message sums of the CEP iteration.

    Attributes
    ----------
    mean, cov : tuple of Array, shapes (I_k, R), (I_k, R, R)
        Marginals of :math:`q(u^k(i))` at each mode's grid points.
    msg_prec, msg_shift : tuple of Array, shapes (I_k, R, R), (I_k, R)
        Damped data messages summed per coordinate (natural parameters).
    core_mean, core_cov : Array, shapes (R^K,), (R^K, R^K)
        :math:`q(\operatorname{vec}\mathcal W)` (for CP: the fixed super-diagonal, zero cov).
    core_prec, core_shift : Array
        Damped core messages :math:`\Lambda_W, \eta_W`.
    noise_rate : Array, scalar
        Damped :math:`\sum_n b_n` (so :math:`q(\tau) = \mathrm{Gamma}(a_0 + N/2, b_0 +` this).
    tau : Array, scalar
        :math:`E[\tau]`.
    """

    mean: tuple
    cov: tuple
    msg_prec: tuple
    msg_shift: tuple
    core_mean: Array
    core_cov: Array
    core_prec: Array
    core_shift: Array
    noise_rate: Array
    tau: Array


def _kron_mat(a: Array, b: Array) -> Array:
    """Row-wise Kronecker product of (n, p, p) and (n, q, q) -> (n, pq, pq)."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(n, p * q, p * q)


def _core_tensor_second(core_mean: Array, core_cov: Array, rank: int, num_modes: int,
                        k: int) -> Array:
    """E[W_(k)rp W_(k)sq] as (R, R, P, P), P = R^(K-1), other modes in increasing order."""
    s2 = core_cov + jnp.outer(core_mean, core_mean)
    K = num_modes
    t = s2.reshape((rank,) * (2 * K))
    others = [j for j in range(K) if j != k]
    t = jnp.transpose(t, [k, K + k] + others + [K + j for j in others])
    P = rank ** (K - 1)
    return t.reshape(rank, rank, P, P)


def _mode_stats(k: int, means, seconds, data: TuckerData, config: TuckerConfig):
    r"""Per-coordinate sums over the data of mode ``k``.

    Returns ``g (I_k, P)`` = :math:`\sum_{n \in i} y_n E[z^{-k}_n]` and ``G (I_k, P, P)`` =
    :math:`\sum_{n \in i} E[z^{-k}_n z^{-k\top}_n]`, with :math:`z^{-k}` the Kronecker (Tucker,
    P = R^(K-1), other modes in increasing order) or Hadamard (CP, P = R) product of the other
    modes' factors. The top prefix level is streamed in chunks so memory stays O(chunk P^2).
    """
    R = config.rank
    size = means[k].shape[0]
    others = [j for j in range(config.num_modes) if j != k]
    count, ysum = data.leaf_count[k], data.leaf_ysum[k]
    dtype = ysum.dtype
    if config.cp:
        vec = ysum[:, None] * jnp.ones((1, R), dtype)
        mat = count[:, None, None] * jnp.ones((1, R, R), dtype)
    else:
        vec, mat = ysum[:, None], count[:, None, None]
    levels = data.levels[k]
    for depth, (coord, parent) in enumerate(levels):
        j = others[len(levels) - 1 - depth]
        num = size if depth == len(levels) - 1 else levels[depth + 1][0].shape[0]

        def up(vec, mat, coord, parent, j=j, num=num):
            m, M = means[j][coord], seconds[j][coord]
            if config.cp:
                cv, cm = m * vec, M * mat
            else:
                cv, cm = kron_rows(m, vec), _kron_mat(M, mat)
            return (jax.ops.segment_sum(cv, parent, num_segments=num),
                    jax.ops.segment_sum(cm, parent, num_segments=num))

        if depth < len(levels) - 1:
            vec, mat = up(vec, mat, coord, parent)
            continue
        n = coord.shape[0]
        b = min(n, chunk_size(config))
        c = -(-n // b)
        padn = c * b - n
        xs = [jnp.concatenate([x, jnp.zeros((padn,) + x.shape[1:], x.dtype)])
              .reshape((c, b) + x.shape[1:]) for x in (vec, mat, coord, parent)]

        def body(carry, xs):
            gv, gm = up(*xs)
            return (carry[0] + gv, carry[1] + gm), None

        P = vec.shape[1] * R if not config.cp else R
        init = (jnp.zeros((size, P), dtype), jnp.zeros((size, P, P), dtype))
        (vec, mat), _ = lax.scan(body, init, xs)
    return vec, mat


def _second_moments(mean, cov):
    return tuple(c + m[:, :, None] * m[:, None, :] for m, c in zip(mean, cov, strict=True))


def cp_core(rank: int, num_modes: int, dtype) -> Array:
    """The CP core: the super-diagonal of ones, flattened ``(R^K,)``."""
    w = jnp.zeros((rank,) * num_modes, dtype)
    w = w.at[(jnp.arange(rank),) * num_modes].set(1.0)
    return w.reshape(-1)


def cep_init(data: TuckerData, config: TuckerConfig, *, key: Array) -> CEPState:
    r"""Initial CEP state, as the authors' code but from an explicit key.

    Factor means and the core mean are U(0, 1), factor covariances I, messages
    :math:`10^{-3} I` and :math:`10^{-3} U(0, 1)`, :math:`E[\tau] = 1`.
    """
    R, K = config.rank, config.num_modes
    dtype = data.y.dtype
    keys = jax.random.split(key, 2 * K + 1)
    mean, cov, prec, shift = [], [], [], []
    for k, g in enumerate(data.grids):
        n = g.shape[0]
        mean.append(jax.random.uniform(keys[2 * k], (n, R), dtype))
        cov.append(jnp.broadcast_to(jnp.eye(R, dtype=dtype), (n, R, R)))
        prec.append(jnp.broadcast_to(1e-3 * jnp.eye(R, dtype=dtype), (n, R, R)))
        shift.append(1e-3 * jax.random.uniform(keys[2 * k + 1], (n, R), dtype))
    P = R**K
    if config.cp:
        core_mean = cp_core(R, K, dtype)
    else:
        core_mean = jax.random.uniform(keys[-1], (P,), dtype)
    zeros = jnp.zeros((P, P), dtype)
    a = config.a0 + 0.5 * data.num_data
    return CEPState(tuple(mean), tuple(cov), tuple(prec), tuple(shift), core_mean, zeros,
                    zeros, jnp.zeros(P, dtype), jnp.asarray(a - config.b0, dtype),
                    jnp.asarray(1.0, dtype))


def cep_step(state: CEPState, data: TuckerData, kernels: tuple, config: TuckerConfig
             ) -> CEPState:
    """One epoch of conditional EP: every mode in turn, then the core, then the noise.

    ``kernels`` holds each mode's factor kernel (a kernel with a state-space form, see
    :func:`~probkit.models.tucker.factors.mode_posterior`). Pure and jittable (``config``
    static). See the module docstring for the updates.
    """
    R, K = config.rank, config.num_modes
    mean, cov = list(state.mean), list(state.cov)
    prec, shift = list(state.msg_prec), list(state.msg_shift)
    tau = state.tau
    rho_u = config.damping_factors
    for k in range(K):
        seconds = _second_moments(mean, cov)
        g, G = _mode_stats(k, mean, seconds, data, config)
        if config.cp:
            lam_new, eta_new = tau * G, tau * g
        else:
            s2 = _core_tensor_second(state.core_mean, state.core_cov, R, K, k)
            wk = jnp.moveaxis(state.core_mean.reshape((R,) * K), k, 0).reshape(R, -1)
            lam_new = tau * jnp.einsum("rspq,ipq->irs", s2, G)
            eta_new = tau * g @ wk.T
        prec[k] = sym(rho_u * prec[k] + (1.0 - rho_u) * lam_new)
        shift[k] = rho_u * shift[k] + (1.0 - rho_u) * eta_new
        mean[k], cov[k] = mode_posterior(data.grids[k], data.observed[k], prec[k], shift[k],
                                         kernels[k], config)
    # Sufficient statistics over all modes from the last mode's per-coordinate sums.
    mk, Mk = mean[K - 1], cov[K - 1] + mean[K - 1][:, :, None] * mean[K - 1][:, None, :]
    if config.cp:
        core_mean, core_cov = state.core_mean, state.core_cov
        core_prec, core_shift = state.core_prec, state.core_shift
        sum_yf = jnp.sum(g * mk)
        sum_f2 = jnp.sum(G * Mk)
    else:
        sum_yz = jnp.einsum("ip,ir->pr", g, mk).reshape(-1)
        sum_zz = jnp.einsum("ipq,irs->prqs", G, Mk).reshape(R**K, R**K)
        rho_w = config.damping_core
        core_prec = sym(rho_w * state.core_prec + (1.0 - rho_w) * tau * sum_zz)
        core_shift = rho_w * state.core_shift + (1.0 - rho_w) * tau * sum_yz
        eye = jnp.eye(R**K, dtype=core_prec.dtype)
        chol = jnp.linalg.cholesky(core_prec + eye / config.core_prior_var)
        core_cov = sym(jax.scipy.linalg.cho_solve((chol, True), eye))
        core_mean = core_cov @ core_shift
        sum_yf = core_mean @ sum_yz
        sum_f2 = jnp.sum((core_cov + jnp.outer(core_mean, core_mean)) * sum_zz)
    b_new = 0.5 * data.sum_y2 - sum_yf + 0.5 * sum_f2
    rho_t = config.damping_noise
    noise_rate = rho_t * state.noise_rate + (1.0 - rho_t) * b_new
    tau = (config.a0 + 0.5 * data.num_data) / (config.b0 + noise_rate)
    return CEPState(tuple(mean), tuple(cov), tuple(prec), tuple(shift), core_mean, core_cov,
                    core_prec, core_shift, noise_rate, tau)


def mean_f(means, core_mean, positions, config: TuckerConfig) -> Array:
    """:math:`E[f]` per row of ``positions`` ``(n, K)`` into the per-mode factor means."""
    R, K = config.rank, config.num_modes
    if config.cp:
        z = jnp.ones((positions.shape[0], R), core_mean.dtype)
        for k in range(K):
            z = z * means[k][positions[:, k]]
        return z.sum(-1)
    z = jnp.ones((positions.shape[0], 1), core_mean.dtype)
    for k in range(K):
        z = kron_rows(z, means[k][positions[:, k]])
    return z @ core_mean


def _second_f(seconds, core_mean, core_cov, positions, config):
    """E[f^2] per row of ``positions``, streamed so memory stays O(B R^(2K-2))."""
    R, K = config.rank, config.num_modes
    if config.cp:
        Z = jnp.ones((positions.shape[0], R, R), core_mean.dtype)
        for k in range(K):
            Z = Z * seconds[k][positions[:, k]]
        return Z.sum((-1, -2))
    s2 = (core_cov + jnp.outer(core_mean, core_mean)).reshape((R,) * (2 * K))
    # Order axes (a_1, b_1, ..., a_K, b_K) and contract mode by mode.
    s2 = jnp.transpose(s2, [a for k in range(K) for a in (k, K + k)])

    def one(pos):
        t = s2
        for k in range(K):
            t = jnp.tensordot(seconds[k][pos[k]], t, axes=((0, 1), (0, 1)))
        return t

    b = max(1, CHUNK_FLOATS // max(R ** (2 * K - 2), 1))
    n = positions.shape[0]
    c = -(-n // b)
    pad = jnp.concatenate([positions, jnp.zeros((c * b - n, K), positions.dtype)])
    out = lax.map(jax.vmap(one), pad.reshape(c, b, K))
    return out.reshape(-1)[:n]


def f_moments(means, covs, core_mean, core_cov, config: TuckerConfig) -> tuple[Array, Array]:
    r"""Mean and variance of :math:`f = \operatorname{vec}(\mathcal W)^\top \bigotimes_k u^k` at
    ``m`` points with independent factor moments ``means[k]`` ``(m, R)``, ``covs[k]``
    ``(m, R, R)``: :math:`E[\mathcal W]^\top \bigotimes_k E[u^k]` and
    :math:`\operatorname{tr}(E[WW^\top] \bigotimes_k E[u^k u^{k\top}]) - \text{mean}^2`."""
    m = means[0].shape[0]
    pos = jnp.broadcast_to(jnp.arange(m)[:, None], (m, config.num_modes))
    mean = mean_f(tuple(means), core_mean, pos, config)
    second = _second_f(_second_moments(means, covs), core_mean, core_cov, pos, config)
    return mean, second - mean**2


def _train_rmse(state: CEPState, data: TuckerData, config: TuckerConfig) -> Array:
    f = mean_f(tuple(state.mean), state.core_mean, data.positions, config)
    r = jnp.where(jnp.arange(f.shape[0]) < data.num_data, data.y - f, 0.0)
    return jnp.sqrt(jnp.sum(r * r) / data.num_data)


@functools.partial(jax.jit, static_argnames=("config",))
def _init(data, key, config):
    return cep_init(data, config, key=key)


@functools.partial(jax.jit, static_argnames=("config",))
def _epoch(state, data, kernels, config):
    state = cep_step(state, data, kernels, config)
    return state, _train_rmse(state, data, config)


def run_cep(data: TuckerData, kernels: tuple, config: TuckerConfig, *,
            key: Array, num_steps: int, progress_bar: bool = True
            ) -> tuple[CEPState, dict[str, np.ndarray]]:
    """Initialise and run ``num_steps`` CEP epochs (each one compiled call; a tqdm bar with the
    training RMSE when ``progress_bar``). Call inside ``jax.enable_x64(True)``.

    Returns the final state and the per-epoch trace ``{"rmse", "tau"}`` (standardised units).
    """
    state = _init(data, key, config)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="FunBaT CEP", unit="epoch", leave=False)
    rmse, taus = [], []
    try:
        for _ in range(num_steps):
            state, err = _epoch(state, data, kernels, config)
            rmse.append(err)
            taus.append(state.tau)
            if bar is not None:
                bar.set_postfix(rmse=f"{float(err):.4g}", refresh=False)
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return state, {"rmse": np.asarray(jnp.stack(rmse)), "tau": np.asarray(jnp.stack(taus))}
