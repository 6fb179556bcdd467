"""Kernels: stationary kernels vs closed forms; NNGP vs closed forms and Monte Carlo of random
finite networks; bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probkit.kernels import NNGP, RBF, Matern12, Matern32, Matern52, Periodic


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_stationary_kernels_match_closed_forms():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    ell, var = np.array([0.5, 1.0, 2.0]), 1.7
    r = np.sqrt((((x1[:, None, :] - x2[None, :, :]) / ell) ** 2).sum(-1))
    refs = {RBF: var * np.exp(-0.5 * r**2), Matern12: var * np.exp(-r),
            Matern32: var * (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
            Matern52: var * (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)}
    for cls, ref in refs.items():
        k = cls(lengthscale=ell, variance=var)
        np.testing.assert_allclose(k(jnp.asarray(x1), jnp.asarray(x2)), ref, rtol=1e-12)
        np.testing.assert_allclose(k.diag(jnp.asarray(x1)), np.full(6, var))


@pytest.mark.parametrize("cls", [Matern12, Matern32, Matern52])
def test_stationary_kernels_under_jit_vmap_grad(cls):
    """Values and gradients under jit(vmap(value_and_grad)) equal the one-at-a-time ones (a
    double-where guard of sqrt at zero distance gave wrong values there with jax 0.10.2)."""
    x = jnp.asarray(np.random.default_rng(3).uniform(size=(10, 1)))
    ls = jnp.array([0.77, 1.49, 2.1, 1.6])

    def total(ell):
        return jnp.sum(cls(lengthscale=ell, variance=1.3)(x, x))

    val, grad = jax.jit(jax.vmap(jax.value_and_grad(total)))(ls)
    ref = [jax.value_and_grad(total)(ell) for ell in ls]
    np.testing.assert_allclose(val, [v for v, _ in ref], rtol=1e-12)
    np.testing.assert_allclose(grad, [g for _, g in ref], rtol=1e-10)
    # and the value agrees with numpy
    r = np.abs(np.asarray(x) - np.asarray(x).T) / 0.77
    prof = {Matern12: np.exp(-r), Matern32: (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
            Matern52: (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)}[cls]
    np.testing.assert_allclose(val[0], 1.3 * prof.sum(), rtol=1e-12)


def test_periodic_matches_closed_form_and_is_periodic():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(5, 2)), rng.normal(size=(3, 2))
    ell, var, p = np.array([0.7, 1.3]), 0.8, np.array([0.5, 2.0])
    s = np.sin(np.pi * np.abs(x1[:, None, :] - x2[None, :, :]) / p)
    ref = var * np.exp(-2 * ((s / ell) ** 2).sum(-1))
    k = Periodic(lengthscale=ell, variance=var, period=p)
    np.testing.assert_allclose(k(jnp.asarray(x1), jnp.asarray(x2)), ref, rtol=1e-12)
    np.testing.assert_allclose(k(jnp.asarray(x1), jnp.asarray(x2 + 3 * p)), ref, rtol=1e-10)
    np.testing.assert_allclose(k.diag(jnp.asarray(x1)), np.full(5, var))
    assert np.linalg.eigvalsh(np.asarray(k(jnp.asarray(x1), jnp.asarray(x1)))).min() > -1e-12


def _relu_e(q1, q2, c):
    rho = np.clip(c / np.sqrt(q1 * q2), -1, 1)
    t = np.arccos(rho)
    return np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))


def _erf_e(q1, q2, c):
    return 2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


@pytest.mark.parametrize("activation,expect", [("relu", _relu_e), ("erf", _erf_e)])
def test_nngp_matches_numpy_recursion(activation, expect):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4))
    sw2, sb2, sl2, depth = 1.6, 0.3, 0.7, 3
    k = NNGP(depth, activation, sw2, sb2, sl2)
    K = sb2 + sw2 * x @ x.T / 4
    for layer in range(depth):
        d = np.diag(K)
        E = expect(d[:, None], d[None, :], K)
        K = sb2 + sw2 * E if layer < depth - 1 else sl2 * E
    got = k(jnp.asarray(x), jnp.asarray(x))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, K, rtol=1e-9)
    np.testing.assert_allclose(k.diag(jnp.asarray(x)), np.diag(K), rtol=1e-12)
    # cross-covariance with a copy (not the same object) agrees up to the clamp
    np.testing.assert_allclose(k(jnp.asarray(x), jnp.asarray(x.copy())), K, rtol=1e-6)


def test_nngp_gradients_finite_at_duplicate_inputs():
    x = jnp.array([[0.3, -0.2], [0.3, -0.2], [1.0, 2.0]])
    for act in ("relu", "erf"):
        def f(p, act=act):
            return jnp.sum(NNGP(2, act, p[0], p[1], 1.0)(x, x))
        g = jax.jit(jax.grad(f))(jnp.array([1.5, 0.2]))
        assert np.all(np.isfinite(g))
        K = NNGP(2, act, 1.5, 0.2)(x, x)
        assert np.all(np.linalg.eigvalsh(np.asarray(K)) > -1e-10)


@functools.partial(jax.jit, static_argnames=("activation", "max_depth", "width", "num_nets"))
def _finite_net_outputs(key, x, sw2, sb2, sl2, *, activation, max_depth, width, num_nets):
    """Outputs at ``x`` of ``num_nets`` random width-``width`` networks, readouts after each of
    the first ``max_depth`` hidden layers (a depth-L net is the first L layers of a deeper one).

    The first layer uses explicit Gaussian weights. For the hidden layers we use that, given
    the previous activations A (width x n), the rows of W A + b with W_ij ~ N(0, sw2/width)
    are i.i.d. N(0, sw2/width A^T A + sb2): sampling them from that n x n covariance draws
    exactly the pre-activations of a finite random network at these inputs, at O(width n^2)
    instead of O(width^2 n) per layer.
    """
    phi = jax.nn.relu if activation == "relu" else jax.scipy.special.erf
    n, d = x.shape
    keys = jax.random.split(key, 2 * max_depth + 2)
    w = jax.random.normal(keys[0], (num_nets, d, width))
    b = jax.random.normal(keys[1], (num_nets, 1, width))
    h = jnp.sqrt(sw2 / d) * jnp.einsum("nd,mdw->mnw", x, w) + jnp.sqrt(sb2) * b
    outs = []
    for layer in range(max_depth):
        a = phi(h)
        z = jax.random.normal(keys[2 + 2 * layer], (num_nets, width))
        outs.append(jnp.sqrt(sl2 / width) * jnp.einsum("mnw,mw->mn", a, z))
        if layer + 1 < max_depth:
            g = sw2 / width * jnp.einsum("mnw,mkw->mnk", a, a) + sb2
            chol = jnp.linalg.cholesky(g + 1e-12 * jnp.eye(n))
            z = jax.random.normal(keys[3 + 2 * layer], (num_nets, n, width))
            h = jnp.einsum("mnk,mkw->mnw", chol, z)
    return jnp.stack(outs)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_nngp_matches_monte_carlo_of_finite_networks(activation):
    x = jnp.array([[1.0, 0.5, -0.3], [-0.4, 1.2, 0.8], [0.9, -1.1, 0.2], [0.3, 0.3, 0.3]])
    sw2, sb2, sl2, width, num_nets = 1.7, 0.2, 1.3, 2048, 1000
    outs = _finite_net_outputs(jax.random.key(0), x, sw2, sb2, sl2, activation=activation,
                               max_depth=4, width=width, num_nets=num_nets)
    iu = np.triu_indices(4)
    for depth in range(1, 5):
        f = np.asarray(outs[depth - 1])
        prod = f[:, :, None] * f[:, None, :]
        est, se = prod.mean(0), prod.std(0, ddof=1) / np.sqrt(num_nets)
        k = np.asarray(NNGP(depth, activation, sw2, sb2, sl2)(x, x))
        z = np.abs(est - k)[iu] / se[iu]
        assert np.all(z < 4.0), (depth, z.max())


@pytest.mark.parametrize("kwargs,name", [
    (dict(depth=0), "depth"), (dict(depth=1.5), "depth"), (dict(activation="tanh"), "activation"),
    (dict(weight_variance=0.0), "weight_variance"), (dict(weight_variance=-1.0), "weight_variance"),
    (dict(bias_variance=-0.1), "bias_variance"), (dict(bias_variance=0.0), "bias_variance"),
    (dict(last_weight_variance=0.0), "last_weight_variance"),
    (dict(weight_variance=np.nan), "weight_variance"),
])
def test_nngp_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        NNGP(**kwargs)


def test_nngp_input_weight_variance_rescales_inputs():
    """Per-input first-layer variances v_i equal the shared-variance NNGP on inputs scaled by
    sqrt(v_i / sw2) (only the first layer sees x)."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    v, sw2 = np.array([0.5, 2.0, 4.0]), 1.6
    ard = NNGP(3, "relu", sw2, 0.3, 0.7, input_weight_variance=v)
    ref = NNGP(3, "relu", sw2, 0.3, 0.7)
    s = np.sqrt(v / sw2)
    np.testing.assert_allclose(ard(jnp.asarray(x1), jnp.asarray(x2)),
                               ref(jnp.asarray(x1 * s), jnp.asarray(x2 * s)), rtol=1e-12)
    xa = jnp.asarray(x1)
    np.testing.assert_allclose(ard(xa, xa), ref(jnp.asarray(x1 * s), jnp.asarray(x1 * s)),
                               rtol=1e-9)
    np.testing.assert_allclose(ard.diag(xa), ref.diag(jnp.asarray(x1 * s)), rtol=1e-12)
    same = NNGP(3, "relu", sw2, 0.3, 0.7, input_weight_variance=sw2)
    np.testing.assert_allclose(same(xa, xa), ref(xa, xa), rtol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_nngp_normalize_is_the_correlation_kernel(activation):
    rng = np.random.default_rng(3)
    x1, x2 = 3 * rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    base = NNGP(2, activation, 1.6, 0.2, 1.0)
    norm = NNGP(2, activation, 1.6, 0.2, 0.7, normalize=True)
    a, b = jnp.asarray(x1), jnp.asarray(x2)
    d1, d2 = np.asarray(base.diag(a)), np.asarray(base.diag(b))
    ref = 0.7 * np.asarray(base(a, b)) / np.sqrt(d1[:, None] * d2[None, :])
    np.testing.assert_allclose(norm(a, b), ref, rtol=1e-12)
    np.testing.assert_allclose(np.diag(np.asarray(norm(a, a))), np.full(6, 0.7), rtol=1e-12)
    np.testing.assert_allclose(norm.diag(a), np.full(6, 0.7))
    assert np.linalg.eigvalsh(np.asarray(norm(a, a))).min() > -1e-12


def test_nngp_normalized_relu_is_the_nngp_on_the_sphere():
    """One ReLU layer: normalised kernel = 2 x the NNGP of (sigma_w x / sqrt(d), sigma_b)
    projected onto the unit sphere (weight variance d + 1, negligible bias)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3))
    sw2, sb2 = 1.6, 0.4
    z = np.concatenate([np.sqrt(sw2 / 3) * x, np.full((5, 1), np.sqrt(sb2))], 1)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sphere = NNGP(1, "relu", 4.0, 1e-300, 1.0)(jnp.asarray(z), jnp.asarray(z.copy()))
    norm = NNGP(1, "relu", sw2, sb2, 1.0, normalize=True)
    np.testing.assert_allclose(norm(jnp.asarray(x), jnp.asarray(x.copy())), 2 * sphere,
                               rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, [1.0, -1.0], [[1.0]], np.inf])
def test_nngp_rejects_bad_input_weight_variance(value):
    with pytest.raises(ValueError, match="^input_weight_variance"):
        NNGP(input_weight_variance=value)


@pytest.mark.parametrize("make, name", [
    (lambda: Matern32(-1.0, 1.0), "lengthscale"),
    (lambda: RBF(0.0, 1.0), "lengthscale"),
    (lambda: RBF(1.0, -2.0), "variance"),
    (lambda: Matern52(float("nan"), 1.0), "lengthscale"),
    (lambda: Matern12(jnp.array([1.0, -0.1]), 1.0), "lengthscale"),
    (lambda: Matern32(1.0, float("inf")), "variance"),
    (lambda: Periodic(1.0, 1.0, period=0.0), "period"),
    (lambda: Periodic(-1.0, 1.0), "lengthscale"),
])
def test_concrete_bad_hyperparameters_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=f"^{name}: must be finite and positive"):
        make()


def test_traced_hyperparameters_stay_unchecked_inside_a_model():
    # A sampler may propose any value; the kernel must still build under tracing (the model's
    # prior support, not the kernel, rules the value out).
    x = jnp.linspace(0.0, 1.0, 3)[:, None]
    gram = jax.jit(lambda ls, var: Matern32(ls, var)(x, x))
    np.testing.assert_allclose(gram(0.5, 2.0), Matern32(0.5, 2.0)(x, x), rtol=1e-6)
    assert gram(-0.5, -1.0).shape == (3, 3)
