"""Data shared by the DKF tests: a linear-Gaussian state-space model and its exact moments."""

from __future__ import annotations

import numpy as np

from probkit.models import dkf


def lgssm_data(T=150, D=3, P=5, seed=0):
    rng = np.random.default_rng(seed)
    A = 0.8 * np.eye(D) + 0.05 * rng.normal(size=(D, D))
    G = 0.3 * np.eye(D) + 0.05 * np.ones((D, D))
    dyn = dkf.make_dynamics(A, G)
    H = rng.normal(size=(P, D))
    B = rng.normal(size=(P, P))
    Lam = 0.3 * B @ B.T / P + 0.5 * np.eye(P)
    z = np.zeros((T, D))
    prev = rng.multivariate_normal(np.zeros(D), dyn.S)
    for t in range(T):
        prev = A @ prev + rng.multivariate_normal(np.zeros(D), G)
        z[t] = prev
    x = z @ H.T + rng.multivariate_normal(np.zeros(P), Lam, size=T)
    return dyn, H, Lam, x, z


def linear_moments(dyn, H, Lam, x):
    """f(x) = (S^-1 + H'Lam^-1 H)^-1 H'Lam^-1 x, Q = (S^-1 + H'Lam^-1 H)^-1, in numpy."""
    HtLi = np.linalg.solve(Lam, H).T
    Q = np.linalg.inv(np.linalg.inv(dyn.S) + HtLi @ H)
    f = x @ (Q @ HtLi).T
    return f, np.broadcast_to(Q, (x.shape[0],) + Q.shape).copy()


def nw_numpy(xt, yt, h, xq):
    """Nadaraya-Watson regression written out in NumPy."""
    out = np.zeros((len(xq), yt.shape[1]))
    for i, q in enumerate(xq):
        w = np.exp(-np.sum((xt - q) ** 2, 1) / (2 * h**2))
        out[i] = w @ yt / w.sum()
    return out
