"""Neural tangent kernel: the analytic NTK vs the empirical tangent kernel of wide random networks,
closed-form details (diagonals, Price's theorem, PSD, duplicate inputs, argument checks), and the
NTK-GP predictor of the NNGP regression family vs a dense NumPy computation of its formula."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import probkit
from probkit.kernels import NNGP, NTK, RBF
from probkit.kernels.neural import (
    _erf_derivative_expectation,
    _erf_expectation,
    _relu_derivative_expectation,
    _relu_expectation,
)
from probkit.models import nngp

# -- empirical NTK of finite networks -----------------------------------------------------------


def _init(key, d, width, depth, dtype):
    """Standard normal weights and biases of a width-``width`` network (NTK parameterisation)."""
    ks = jax.random.split(key, 2 * depth + 1)
    return {"W": [jax.random.normal(ks[0], (d, width), dtype)]
            + [jax.random.normal(ks[1 + i], (width, width), dtype) for i in range(depth - 1)],
            "b": [jax.random.normal(ks[depth + i], (width,), dtype) for i in range(depth)],
            "w": jax.random.normal(ks[2 * depth], (width,), dtype)}


def _forward(p, x, sw2, sb2, sl2, vin, activation):
    """h1 = W1 (sqrt(vin) x)/sqrt(d) + sqrt(sb2) b1, h_{l+1} = sqrt(sw2) W phi(h_l)/sqrt(N) +
    sqrt(sb2) b, f = sqrt(sl2) w.phi(h_L)/sqrt(N). ``sb2 = 0`` removes the biases (their
    gradients vanish, so they add nothing to the tangent kernel)."""
    phi = jax.nn.relu if activation == "relu" else jax.scipy.special.erf
    h = (x * jnp.sqrt(vin)) @ p["W"][0] / jnp.sqrt(x.shape[-1]) + jnp.sqrt(sb2) * p["b"][0]
    for w, b in zip(p["W"][1:], p["b"][1:], strict=True):
        h = jnp.sqrt(sw2) * phi(h) @ w / jnp.sqrt(w.shape[0]) + jnp.sqrt(sb2) * b
    return jnp.sqrt(sl2) * phi(h) @ p["w"] / jnp.sqrt(p["w"].shape[0])


@functools.partial(jax.jit, static_argnames=("width", "depth", "activation"))
def _empirical_ntk(key, x, sw2, sb2, sl2, vin, *, width, depth, activation):
    """sum_p df(x_i)/dp df(x_j)/dp over every parameter p of one random network: column j is
    J (J^T e_j), a vector-Jacobian product followed by a Jacobian-vector product (in the
    dtype of ``x``: float32 is ample for a Monte Carlo estimate and faster)."""
    p = _init(key, x.shape[1], width, depth, x.dtype)

    def f(q):
        return _forward(q, x, sw2, sb2, sl2, vin, activation)

    _, vjp = jax.vjp(f, p)
    return jax.vmap(lambda e: jax.jvp(f, (p,), (vjp(e)[0],))[1])(jnp.eye(x.shape[0], dtype=x.dtype))


X = np.array([[1.0, 0.5, -0.3], [-0.4, 1.2, 0.8], [0.9, -1.1, 0.2], [0.3, 0.3, 0.3]])


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth,width,draws", [(1, 4000, 40), (3, 768, 16)])
def test_ntk_matches_empirical_ntk_of_wide_networks(x64, activation, depth, width, draws):
    """|analytic - Monte Carlo mean| < 4 standard errors of the mean of ``draws`` networks."""
    x = jnp.asarray(X)
    x32 = x.astype(jnp.float32)
    sw2, sl2 = 1.7, 1.3
    iu = np.triu_indices(len(X))
    variants = {"bias": (0.3, None), "no bias": (0.0, None),
                "bias, ARD": (0.3, np.array([0.5, 2.0, 3.0]))}
    for name, (sb2, ard) in variants.items():
        vin = jnp.full(3, sw2, jnp.float32) if ard is None else jnp.asarray(ard, jnp.float32)
        emp = np.stack([np.asarray(_empirical_ntk(jax.random.key(i), x32, sw2, sb2, sl2, vin,
                                                  width=width, depth=depth,
                                                  activation=activation))
                        for i in range(draws)]).astype(np.float64)
        mean, se = emp.mean(0), emp.std(0, ddof=1) / np.sqrt(draws)
        k = NTK(depth, activation, sw2, max(sb2, 1e-300), sl2, input_weight_variance=ard)
        theta = np.asarray(k(x, x))
        np.testing.assert_allclose(np.diag(theta), np.asarray(k.diag(x)), rtol=1e-12)
        z = np.abs(mean - theta)[iu] / se[iu]
        assert np.all(z < 4.0), (name, z.max(), theta, mean, se)
        assert np.all(se[iu] < 0.05 * np.abs(theta).max()), (name, se)  # a sharp test


# -- closed form ------------------------------------------------------------------------------


def _np_relu(q1, q2, c):
    t = np.arccos(np.clip(c / np.sqrt(q1 * q2), -1, 1))
    return (np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t)),
            (np.pi - t) / (2 * np.pi))


def _np_erf(q1, q2, c):
    s = (1 + 2 * q1) * (1 + 2 * q2)
    return 2 / np.pi * np.arcsin(2 * c / np.sqrt(s)), 4 / np.pi / np.sqrt(s - 4 * c**2)


@pytest.mark.parametrize("activation,fns", [("relu", _np_relu), ("erf", _np_erf)])
def test_ntk_matches_numpy_recursion_and_nngp(x64, activation, fns):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    sw2, sb2, sl2, depth = 1.6, 0.3, 0.7, 3
    k = NTK(depth, activation, sw2, sb2, sl2)
    K = sb2 + sw2 * x @ x.T / 4
    T = K
    for layer in range(depth):
        d = np.diag(K)
        e, de = fns(d[:, None], d[None, :], K)
        if layer < depth - 1:
            K = sb2 + sw2 * e
            T = K + sw2 * de * T
        else:
            K, T = sl2 * e, sl2 * (e + de * T)
    xj = jnp.asarray(x)
    kk, tt = k.nngp_and_ntk(xj, xj)
    assert tt.dtype == jnp.float64
    np.testing.assert_allclose(tt, T, rtol=1e-9)
    np.testing.assert_allclose(k(xj, xj), T, rtol=1e-9)
    np.testing.assert_allclose(k.diag(xj), np.diag(T), rtol=1e-12)
    np.testing.assert_array_equal(kk, NNGP(depth, activation, sw2, sb2, sl2)(xj, xj))
    np.testing.assert_array_equal(k.nngp()(xj, xj), kk)
    np.testing.assert_allclose(k(xj, jnp.asarray(x.copy())), T, rtol=1e-6)  # not the same object
    np.testing.assert_allclose(k(xj[:2], xj[2:]), T[:2, 2:], rtol=1e-9)


@pytest.mark.parametrize("expect,dexpect", [(_relu_expectation, _relu_derivative_expectation),
                                            (_erf_expectation, _erf_derivative_expectation)])
def test_derivative_expectation_is_the_covariance_derivative(x64, expect, dexpect):
    """Price's theorem: E[phi'(u) phi'(v)] = dE[phi(u) phi(v)]/dc."""
    q1, q2 = jnp.float64(0.8), jnp.float64(2.1)
    for c in np.linspace(-0.95, 0.95, 9) * np.sqrt(0.8 * 2.1):
        np.testing.assert_allclose(dexpect(q1, q2, c), jax.grad(expect, 2)(q1, q2, jnp.float64(c)),
                                   rtol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_ntk_is_psd_and_dominates_the_nngp(x64, activation, depth):
    rng = np.random.default_rng(depth)
    x = jnp.asarray(np.concatenate([rng.normal(size=(12, 3)), np.zeros((1, 3))]))
    x = jnp.concatenate([x, x[:2]])  # duplicates
    k = NTK(depth, activation, 2.0, 0.05, 1.0, input_weight_variance=np.array([0.5, 1.0, 3.0]))
    K, T = k.nngp_and_ntk(x, x)
    scale = float(jnp.max(jnp.diagonal(T)))
    assert np.linalg.eigvalsh(np.asarray(T)).min() > -1e-12 * scale
    assert np.linalg.eigvalsh(np.asarray(T - K)).min() > -1e-12 * scale  # Theta - K is PSD too


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_ntk_finite_gradients_at_duplicate_inputs(x64, activation):
    x = jnp.array([[0.3, -0.2], [0.3, -0.2], [1.0, 2.0], [-0.6, 0.4]])
    x_copy = jnp.array(np.asarray(x))

    def loss(p, a, b):
        k = NTK(3, activation, p[0], p[1], p[2], input_weight_variance=p[3:])
        return jnp.sum(k(a, b)) + jnp.sum(k.diag(a))

    p = jnp.array([1.5, 0.2, 0.9, 1.0, 2.0])
    for b in (x, x_copy):  # the same object (exact diagonals) and an equal copy
        value, grads = jax.value_and_grad(loss, argnums=(0, 1))(p, x, b)
        assert np.isfinite(value)
        assert all(np.all(np.isfinite(g)) for g in grads)
    # hyperparameter gradients agree with central differences
    g = jax.grad(loss)(p, x, x)
    h = 1e-6
    fd = [(loss(p.at[i].add(h), x, x) - loss(p.at[i].add(-h), x, x)) / (2 * h) for i in range(5)]
    np.testing.assert_allclose(g, fd, rtol=1e-6)


@pytest.mark.parametrize("kwargs,name", [
    (dict(depth=0), "depth"), (dict(depth=2.5), "depth"), (dict(activation="tanh"), "activation"),
    (dict(weight_variance=0.0), "weight_variance"), (dict(bias_variance=-0.1), "bias_variance"),
    (dict(last_weight_variance=np.nan), "last_weight_variance"),
    (dict(input_weight_variance=np.array([1.0, -1.0])), "input_weight_variance"),
    (dict(input_weight_variance=np.ones((2, 2))), "input_weight_variance"),
    (dict(normalize=True), "normalize"),
])
def test_ntk_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        NTK(**kwargs)


# -- the NTK-GP predictor of the NNGP regression family ----------------------------------------


def _problem(n=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    return x, np.sin(2 * x[:, 0]) + 0.3 * x[:, 1] + 0.1 * rng.normal(size=n)


NTK_FAMILY = nngp.Regressor(kernel=NNGP(2, "relu", 2.0, 0.1), scale_prior=None, predictor="ntk",
                            num_steps=20, refine_steps=10)


def test_ntk_predictor_matches_dense_numpy_formula(x64, tmp_path):
    x, y = _problem()
    m = NTK_FAMILY.fit(x, y, key=jax.random.key(0), progress_bar=False)
    xq = np.random.default_rng(1).uniform(-2.5, 2.5, (7, 2))
    # dense NumPy: standardised data, kernels of the fitted network
    xs, xqs = (x - x.mean(0)) / x.std(0), (xq - x.mean(0)) / x.std(0)
    ys = (y - y.mean()) / y.std()
    ntk = NTK(2, "relu", m.kernel.weight_variance, m.kernel.bias_variance, 1.0)
    xsj = jnp.asarray(xs)  # one object: exact diagonals, as in the fit
    K, T = (np.asarray(a) for a in ntk.nngp_and_ntk(xsj, xsj))
    xqj = jnp.asarray(xqs)
    Kq, Tq = (np.asarray(a) for a in ntk.nngp_and_ntk(xqj, xsj))
    Kqq = np.asarray(ntk.nngp()(xqj, xqj))
    eps, s2 = float(m.noise), float(m.scale)
    A = T + eps * np.eye(len(y))
    B = np.linalg.solve(A, Tq.T).T
    mean = y.mean() + y.std() * B @ ys
    cov = s2 * y.std() ** 2 * (Kqq - B @ Kq.T - Kq @ B.T + B @ K @ B.T)
    post = m.posterior(xq)
    np.testing.assert_allclose(post.mean, mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(post.variance, np.diag(cov), rtol=1e-7)
    np.testing.assert_allclose(y.std() ** 2 * s2 * post.unit_cov, cov, rtol=1e-7, atol=1e-10)
    pred = m.predict(xq)
    np.testing.assert_allclose(pred.variance, np.diag(cov) + s2 * eps * y.std() ** 2, rtol=1e-7)
    assert np.all(np.isfinite(np.asarray(pred.log_prob(np.zeros(7)))))
    nngp_mean = y.mean() + y.std() * Kq @ np.linalg.solve(K + eps * np.eye(len(y)), ys)
    assert np.abs(nngp_mean - mean).max() > 1e-3  # a different predictor from the NNGP's
    # save/load bit for bit, padded model equals the unpadded one
    path = m.save(tmp_path / "ntk.pk")
    loaded = probkit.load(path)
    np.testing.assert_array_equal(loaded.predict(xq).mean, pred.mean)
    np.testing.assert_array_equal(loaded.predict(xq).variance, pred.variance)
    padded = dataclasses.replace(NTK_FAMILY, capacity=32).fit(x, y, key=jax.random.key(0),
                                                              progress_bar=False)
    np.testing.assert_allclose(padded.predict(xq).mean, pred.mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(padded.predict(xq).variance, pred.variance, rtol=1e-9)
    np.testing.assert_allclose(padded.unpad().predict(xq).mean, pred.mean, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_ntk_predictor_interpolates_as_the_ridge_vanishes(x64, activation):
    """With eps -> 0 the trained network fits the targets: mean = y and zero variance at the
    training inputs (every sign of the covariance formula matters there)."""
    x, y = _problem(15, seed=2)
    fam = nngp.Regressor(kernel=NNGP(3, activation, 2.0, 0.1), scale_prior=None,
                         predictor="ntk", noise=1e-10, fit_hyperparameters=False)
    m = fam.fit(x, y, key=jax.random.key(0), progress_bar=False)
    post = m.posterior(x)
    np.testing.assert_allclose(post.mean, y, atol=1e-5 * y.std())
    prior_var = float(np.max(np.asarray(NNGP(3, activation, 2.0, 0.1).diag(
        jnp.asarray((x - x.mean(0)) / x.std(0))))) * y.std() ** 2)
    assert np.max(np.asarray(post.variance)) < 1e-5 * prior_var
    # off the training inputs it has a real spread
    assert np.min(np.asarray(m.posterior(x[:3] + 0.5).variance)) > 1e-3 * prior_var


@pytest.mark.parametrize("kwargs", [
    dict(predictor="ntk"),  # the default inverse-gamma scale prior
    dict(predictor="ntk", scale_prior=dist.Gamma(2.0, 2.0), engine="quadrature"),
    dict(predictor="ntk", scale_prior=None, normalize=True),
    dict(predictor="ntk", scale_prior=None, kernel=RBF(1.0)),
    dict(predictor="ntk", scale_prior=None, kernel=NTK(2)),
    dict(predictor="ntk", scale_prior=None, kernel=NNGP(2, normalize=True)),
    dict(predictor="gradient-descent", scale_prior=None),
])
def test_ntk_predictor_rejects_bad_combinations(kwargs):
    with pytest.raises(ValueError, match="^predictor"):
        nngp.Regressor(**kwargs)


@functools.partial(jax.jit, static_argnames=("width", "steps", "num_nets"))
def _trained_relu_nets(key, x, y, xq, eps, lr, *, width, steps, num_nets):
    """Outputs at ``xq`` of ``num_nets`` one-layer ReLU networks (weight variance 2, bias
    variance 0.1, readout 1) trained by full-batch gradient descent on
    0.5 |f(x) - y|^2 + 0.5 eps |theta - theta_0|^2 from independent initialisations."""
    vin = jnp.full(x.shape[1], 2.0)

    def one(k):
        p0 = _init(k, x.shape[1], width, 1, x.dtype)

        def loss(p):
            r = _forward(p, x, 2.0, 0.1, 1.0, vin, "relu") - y
            dev = jax.tree_util.tree_map(lambda a, b: jnp.sum((a - b) ** 2), p, p0)
            return 0.5 * jnp.sum(r**2) + 0.5 * eps * sum(jax.tree_util.tree_leaves(dev))

        def step(_, p):
            return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, jax.grad(loss)(p))

        return _forward(jax.lax.fori_loop(0, steps, step, p0), xq, 2.0, 0.1, 1.0, vin, "relu")

    return jax.vmap(one)(jax.random.split(key, num_nets))


def test_ntk_predictor_matches_wide_networks_trained_by_gradient_descent(x64):
    """Lee et al. (2019): over initialisations, wide trained networks are distributed as the
    NTK-GP. Mean over 16 networks of width 1500 within 4 standard errors; spread comparable."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, (8, 2))
    y = np.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    xq = np.concatenate([x[:2], rng.uniform(-1.5, 1.5, (3, 2))])
    eps = 0.05
    m = nngp.Regressor(kernel=NNGP(1, "relu", 2.0, 0.1), scale_prior=None, predictor="ntk",
                       noise=eps, fit_hyperparameters=False, standardize=False).fit(
        x, y, key=jax.random.key(0), progress_bar=False)
    evals = np.linalg.eigvalsh(np.asarray(NTK(1, "relu", 2.0, 0.1)(jnp.asarray(x),
                                                                   jnp.asarray(x))))
    lr = 1.0 / (evals[-1] + eps)  # converged to ~e^-8 after this many steps:
    steps = int(8 * (evals[-1] + eps) / (evals[0] + eps))
    f = np.asarray(_trained_relu_nets(jax.random.key(1), jnp.asarray(x), jnp.asarray(y),
                                      jnp.asarray(xq), eps, lr, width=1500, steps=steps,
                                      num_nets=16))
    post = m.posterior(xq)
    se = f.std(0, ddof=1) / np.sqrt(f.shape[0])
    z = np.abs(f.mean(0) - np.asarray(post.mean)) / se
    assert np.all(z < 4.0), (z, f.mean(0), post.mean)
    ratio = f.std(0, ddof=1) / np.sqrt(np.asarray(post.variance))
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
