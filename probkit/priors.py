r"""Datasets drawn from stochastic-process priors: the one home for "sample many tasks".

Amortised methods learn from datasets :math:`D = \{(x_i, y_i)\}_{i=1}^n` drawn from a prior
:math:`p(D)`: the prior-data fitted network (:mod:`probkit.inference.pfn`, Müller et al., ICLR
2022) and the neural processes (:mod:`probkit.models.mpnp`, Lee et al., ICLR 2023). Both draw
their training batches from the samplers here:

* :class:`GPPrior` — :math:`x_i \sim U(\text{bounds})^d`, :math:`f \sim GP(0, k_\theta)`,
  :math:`y_i = f(x_i) + \epsilon_i`, with Gaussian noise of variance :math:`\sigma_n^2` and
  optionally Student-t noise :math:`s\, t_\nu` on top. Each hyperparameter (lengthscale, output
  variance, period, noise variance, Student-t scale) is either a fixed number or a NumPyro
  distribution (a hyperprior), drawn once per dataset (lengthscales once per input dimension).
* :class:`NumPyroPrior` — the prior predictive of any NumPyro model ``model(x)`` with an
  observed-style site (default ``"y"``), through :class:`numpyro.infer.Predictive`, vmapped over
  datasets.

Both implement :class:`Prior`: ``sample(key, num_datasets, num_points) -> Datasets`` with
``x`` of shape ``(num_datasets, num_points, input_dim)`` and ``y`` ``(num_datasets,
num_points)``. Sampling is jitted once per ``(num_datasets, num_points)``.

Examples
--------
>>> import jax
>>> import numpyro.distributions as dist
>>> from probkit.priors import GPPrior
>>> prior = GPPrior("matern52", lengthscale=dist.Gamma(3.0, 6.0), variance=1.0, noise=0.01)
>>> data = prior.sample(jax.random.key(0), num_datasets=8, num_points=20)
>>> data.x.shape, data.y.shape
((8, 20, 1), (8, 20))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro.infer import Predictive

from probkit import draws
from probkit._checks import (
    as_array,
    check_finite,
    check_key,
    check_positive,
    check_positive_int,
)
from probkit.kernels import RBF, Kernel, Matern12, Matern32, Matern52, Periodic

__all__ = ["Datasets", "Prior", "GPPrior", "NumPyroPrior", "KERNELS"]

#: Kernel names accepted by :class:`GPPrior` (a :class:`probkit.kernels.Kernel` subclass works too).
KERNELS: dict[str, type[Kernel]] = {"rbf": RBF, "matern12": Matern12, "matern32": Matern32,
                                    "matern52": Matern52, "periodic": Periodic}

Hyper = float | dist.Distribution


class Datasets(NamedTuple):
    """A batch of regression datasets.

    Attributes
    ----------
    x : Array
        Inputs, ``(num_datasets, num_points, input_dim)``.
    y : Array
        Outputs, ``(num_datasets, num_points)``.
    params : dict
        Per-dataset hyperparameters that generated them (``{name: (num_datasets, ...)}``;
        empty for :class:`NumPyroPrior`).
    """

    x: Array
    y: Array
    params: dict


@runtime_checkable
class Prior(Protocol):
    """Anything that draws batches of datasets."""

    input_dim: int

    def sample(self, key: Array, num_datasets: int, num_points: int) -> Datasets:
        """Draw ``num_datasets`` datasets of ``num_points`` points each."""
        ...


def _check_hyper(name: str, value: Hyper) -> Hyper:
    """A positive number, or a scalar continuous NumPyro distribution supported on [0, inf)."""
    if isinstance(value, dist.Distribution):
        sup = value.support
        low = getattr(sup, "lower_bound", None)
        ok = (not sup.is_discrete and value.batch_shape == () and value.event_shape == ()
              and low is not None and not isinstance(low, jax.core.Tracer)
              and bool(np.all(np.asarray(low) >= 0)))
        if not ok:
            raise ValueError(f"{name}: a hyperprior must be a scalar continuous distribution on "
                             f"(0, inf); {type(value).__name__} has support {sup}")
        return value
    arr = check_positive(name, value)
    if arr.ndim:
        raise ValueError(f"{name}: expected a positive number or a numpyro Distribution, got "
                         f"shape {arr.shape}")
    return float(arr)


def _check_bounds(bounds) -> tuple[float, float]:
    b = as_array("bounds", bounds)
    if b.shape != (2,) or not np.all(np.isfinite(b)) or not b[0] < b[1]:
        raise ValueError(f"bounds: expected (low, high) with finite low < high, got {bounds!r}")
    return float(b[0]), float(b[1])


def _check_x(x, input_dim: int) -> None:
    """Concrete inputs of :meth:`_Sampler.sample_at`: finite, non-empty, ``(b, n, input_dim)``."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = check_finite("x", as_array("x", x, ndim=3))
    if arr.shape[-1] != input_dim:
        raise ValueError(f"x: expected shape (num_datasets, num_points, {input_dim}), "
                         f"got {arr.shape}")


def _draw(value: Hyper | tuple[float, ...], key: Array, shape: tuple[int, ...]) -> Array:
    """A hyperparameter: a fixed value broadcast to ``shape``, or draws of a hyperprior (Gamma
    and inverse-Gamma ones without a rejection loop, :func:`probkit.draws.sample`)."""
    if isinstance(value, dist.Distribution):
        return draws.sample(value, key, shape)
    if isinstance(value, tuple):                   # fixed ARD lengthscales, shape (input_dim,)
        return jnp.asarray(value, jnp.result_type(float))
    return jnp.full(shape, value) if shape else jnp.asarray(value)


class _Sampler:
    """Batch sampling shared by the priors: each defines ``draw_one(key, x) -> (y, params)``
    for one dataset, and ``input_dim`` / ``bounds``; these methods vmap and jit it."""

    def sample_at(self, key: Array, x: Array) -> Datasets:
        """Draw outputs at given inputs ``x`` ``(num_datasets, num_points, input_dim)``.

        Raises ``ValueError`` naming ``key`` or ``x`` for a non-key, or for concrete inputs of
        another shape, empty or with NaN or inf (traced inputs are not checked).
        """
        key = check_key("key", key)
        _check_x(x, self.input_dim)
        return _sample_at(self, key, jnp.asarray(x))

    def sample(self, key: Array, num_datasets: int, num_points: int) -> Datasets:
        """Draw ``num_datasets`` datasets of ``num_points`` points each.

        Raises ``ValueError`` naming ``key``, ``num_datasets`` or ``num_points``.
        """
        key = check_key("key", key)
        num_datasets = check_positive_int("num_datasets", num_datasets)
        num_points = check_positive_int("num_points", num_points)
        return _sample(self, key, num_datasets, num_points)


@functools.partial(jax.jit, static_argnums=0)
def _sample_at(prior, key: Array, x: Array) -> Datasets:
    keys = jax.random.split(key, x.shape[0])
    y, params = jax.vmap(prior.draw_one)(keys, x)
    return Datasets(x, y, params)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _sample(prior, key: Array, num_datasets: int, num_points: int) -> Datasets:
    kx, ky = jax.random.split(key)
    x = jax.random.uniform(kx, (num_datasets, num_points, prior.input_dim),
                           minval=prior.bounds[0], maxval=prior.bounds[1])
    return _sample_at(prior, ky, x)


@dataclasses.dataclass(frozen=True, eq=False)
class GPPrior(_Sampler):
    r"""Datasets from a Gaussian-process prior with fixed or random hyperparameters.

    .. math::
        \theta \sim p(\theta),\quad x_i \sim U[a, b]^d,\quad
        f \sim GP(0, k_\theta),\quad y_i = f(x_i) + \sigma_n \varepsilon_i
        + s\, t_{\nu,i},\quad \varepsilon_i \sim N(0, 1).

    Parameters
    ----------
    kernel : str or Kernel subclass
        ``"rbf"``, ``"matern12"``, ``"matern32"``, ``"matern52"``, ``"periodic"`` or a class
        from :mod:`probkit.kernels` taking ``lengthscale`` and ``variance``.
    lengthscale, variance : float or numpyro Distribution
        Kernel hyperparameters; a distribution is a hyperprior (lengthscales drawn per input
        dimension). ``lengthscale`` may also be ``input_dim`` fixed values (ARD).
    noise : float or Distribution
        Gaussian noise *variance* :math:`\sigma_n^2` (positive: it also keeps the Cholesky
        factorisation stable).
    period : float or Distribution
        Period of the ``"periodic"`` kernel (ignored otherwise).
    input_dim : int
        Input dimension ``d``.
    bounds : (float, float)
        The box :math:`[a, b]` of the inputs in every dimension.
    student_t_df : float, optional
        If given, Student-t noise with this many degrees of freedom is added to ``y``.
    student_t_scale : float or Distribution
        Its scale :math:`s` (drawn once per dataset when a distribution).

    Examples
    --------
    The 1-D protocol of the neural-process papers (RBF with random hyperparameters):

    >>> import jax
    >>> import numpyro.distributions as dist
    >>> prior = GPPrior("rbf", lengthscale=dist.Uniform(0.1, 0.6), variance=dist.Uniform(0.01, 1.0),
    ...                 noise=0.02**2, bounds=(-2.0, 2.0))
    >>> prior.sample(jax.random.key(1), 4, 50).y.shape
    (4, 50)
    """

    kernel: str | type[Kernel] = "rbf"
    lengthscale: Hyper | tuple[float, ...] = 1.0
    variance: Hyper = 1.0
    noise: Hyper = 0.01
    period: Hyper = 1.0
    input_dim: int = 1
    bounds: tuple[float, float] = (0.0, 1.0)
    student_t_df: float | None = None
    student_t_scale: Hyper = 0.1

    def __post_init__(self):
        kernel = self.kernel
        if isinstance(kernel, str):
            if kernel.lower() not in KERNELS:
                raise ValueError(f"kernel: expected one of {sorted(KERNELS)} or a Kernel class, "
                                 f"got {kernel!r}")
            kernel = KERNELS[kernel.lower()]
        elif not (isinstance(kernel, type) and issubclass(kernel, Kernel)):
            raise ValueError(f"kernel: expected a name or a probkit.kernels.Kernel subclass, "
                             f"got {kernel!r}")
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "input_dim", check_positive_int("input_dim", self.input_dim))
        ls = self.lengthscale
        if not isinstance(ls, dist.Distribution) and np.ndim(ls) == 1:  # ARD: one per input
            arr = check_positive("lengthscale", ls)
            if arr.shape != (self.input_dim,):
                raise ValueError(f"lengthscale: expected one value or input_dim = "
                                 f"{self.input_dim} values, got shape {arr.shape}")
            object.__setattr__(self, "lengthscale", tuple(float(v) for v in arr))
        for name in ("lengthscale", "variance", "noise", "period", "student_t_scale"):
            value = getattr(self, name)
            if not (name == "lengthscale" and isinstance(value, tuple)):
                object.__setattr__(self, name, _check_hyper(name, value))
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))
        if self.student_t_df is not None:
            check_positive("student_t_df", self.student_t_df)

    @property
    def is_fixed(self) -> bool:
        """Whether every hyperparameter is a fixed number (so the exact predictive is known)."""
        return not any(isinstance(getattr(self, n), dist.Distribution)
                       for n in ("lengthscale", "variance", "noise", "period"))

    def draw_params(self, key: Array) -> dict[str, Array]:
        """One draw of the hyperparameters (``lengthscale`` has shape ``(input_dim,)``)."""
        k = jax.random.split(key, 5)
        params = {"lengthscale": _draw(self.lengthscale, k[0], (self.input_dim,)),
                  "variance": _draw(self.variance, k[1], ()),
                  "noise": _draw(self.noise, k[2], ())}
        if self.kernel is Periodic:
            params["period"] = _draw(self.period, k[3], (self.input_dim,))
        if self.student_t_df is not None:
            params["student_t_scale"] = _draw(self.student_t_scale, k[4], ())
        return params

    def make_kernel(self, params: dict[str, Array]) -> Kernel:
        """The kernel instance of one hyperparameter draw."""
        extra = {"period": params["period"]} if "period" in params else {}
        return self.kernel(lengthscale=params["lengthscale"], variance=params["variance"],
                           **extra)

    def draw_one(self, key: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        """Outputs ``(n,)`` of one dataset at inputs ``x`` ``(n, d)``, with its hyperparameters."""
        kp, kz, kt = jax.random.split(key, 3)
        params = self.draw_params(kp)
        n = x.shape[0]
        cov = self.make_kernel(params)(x, x)
        cov = cov + (params["noise"] + _jitter(params)) * jnp.eye(n, dtype=cov.dtype)
        y = jnp.linalg.cholesky(cov) @ jax.random.normal(kz, (n,), dtype=cov.dtype)
        if self.student_t_df is not None:
            y = y + params["student_t_scale"] * draws.student_t(kt, self.student_t_df, (n,),
                                                                 dtype=cov.dtype)
        return y, params

    def predictive(self, x_train: Array, y_train: Array, x_test: Array,
                   params: dict[str, Array] | None = None) -> tuple[Array, Array]:
        r"""Exact posterior predictive of ``y`` at ``x_test`` under known hyperparameters.

        .. math::
            \mu_* = K_{*n}(K_{nn} + \sigma_n^2 I)^{-1} y,\quad
            \sigma_*^2 = k_{**} - K_{*n}(K_{nn} + \sigma_n^2 I)^{-1} K_{n*} + \sigma_n^2.

        Parameters
        ----------
        x_train, y_train, x_test : Array
            ``(n, d)``, ``(n,)``, ``(m, d)`` (one dataset; vmap for batches).
        params : dict, optional
            Hyperparameters (default: the fixed ones; required when the prior has hyperpriors).

        Returns
        -------
        mean, variance : Array
            ``(m,)`` each, the Gaussian predictive of noisy ``y`` (Student-t noise is not
            included: that predictive is not Gaussian).

        Raises
        ------
        ValueError
            ``params`` missing for a prior with hyperpriors; concrete ``x_train``, ``y_train``,
            ``x_test`` of the wrong shapes, empty or with NaN or inf (traced values, as under
            ``vmap``, are not checked).
        """
        _check_predictive_data(x_train, y_train, x_test, self.input_dim)
        if params is None:
            if not self.is_fixed:
                raise ValueError("params: required, this prior has hyperpriors")
            params = self.draw_params(jax.random.key(0))
        k = self.make_kernel(params)
        n = x_train.shape[0]
        kxx = k(x_train, x_train) + (params["noise"] + _jitter(params)) * jnp.eye(n)
        kxs = k(x_train, x_test)
        chol = jnp.linalg.cholesky(kxx)
        alpha = jax.scipy.linalg.cho_solve((chol, True), y_train)
        v = jax.scipy.linalg.solve_triangular(chol, kxs, lower=True)
        mean = kxs.T @ alpha
        var = k.diag(x_test) - jnp.sum(v**2, axis=0) + params["noise"] + _jitter(params)
        return mean, var


def _check_predictive_data(x_train, y_train, x_test, input_dim: int) -> None:
    shapes = {}
    for name, value, ndim in (("x_train", x_train, 2), ("y_train", y_train, 1),
                              ("x_test", x_test, 2)):
        if isinstance(value, jax.core.Tracer):
            shapes[name] = np.shape(value)
            continue
        arr = check_finite(name, as_array(name, value, ndim=ndim))
        if ndim == 2 and arr.shape[1] != input_dim:
            raise ValueError(f"{name}: expected shape (n, {input_dim}), got {arr.shape}")
        shapes[name] = arr.shape
    if shapes["x_train"][0] != shapes["y_train"][0]:
        raise ValueError(f"x_train, y_train: lengths differ (x_train has "
                         f"{shapes['x_train'][0]}, y_train has {shapes['y_train'][0]})")


def _jitter(params: dict[str, Array]) -> Array:
    return 1e-6 * params["variance"]


@dataclasses.dataclass(frozen=True, eq=False)
class NumPyroPrior(_Sampler):
    """Datasets from the prior predictive of a user's NumPyro model.

    Parameters
    ----------
    model : callable
        ``model(x)`` with ``x`` of shape ``(n, input_dim)``; it must sample the outputs at a site
        named ``site`` of shape ``(n,)`` (observed or not: observations are not passed).
    input_dim : int
        Input dimension.
    bounds : (float, float)
        Inputs are drawn uniformly in ``[low, high]^input_dim``.
    site : str
        The output site (default ``"y"``).
    model_kwargs : dict, optional
        Further keyword arguments of ``model``.

    Examples
    --------
    Bayesian linear regression with known noise:

    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def blr(x):
    ...     w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    ...     numpyro.sample("y", dist.Normal(x @ w, 0.1))
    >>> NumPyroPrior(blr, input_dim=2).sample(jax.random.key(0), 3, 10).y.shape
    (3, 10)
    """

    model: Callable
    input_dim: int = 1
    bounds: tuple[float, float] = (0.0, 1.0)
    site: str = "y"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not callable(self.model):
            raise ValueError(f"model: expected a NumPyro model (callable), got {self.model!r}")
        object.__setattr__(self, "input_dim", check_positive_int("input_dim", self.input_dim))
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))

    def draw_one(self, key: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        """Outputs ``(n,)`` of one dataset at inputs ``x`` ``(n, d)`` (no hyperparameters)."""
        out = Predictive(self.model, num_samples=1, return_sites=[self.site])(
            key, x, **self.model_kwargs)
        if self.site not in out:
            raise ValueError(f"site: the model has no sample site named {self.site!r}")
        y = out[self.site][0]
        if y.shape != x.shape[:1]:
            raise ValueError(f"model: site {self.site!r} has shape {y.shape}, expected "
                             f"{x.shape[:1]} (one output per input row)")
        return y, {}
