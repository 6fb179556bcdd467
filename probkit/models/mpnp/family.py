r"""The neural-process family: a trained network conditioned on a context set.

``NeuralProcess(model=..., weights=...).fit(x, y, key=key)`` does no gradient training: the
network was trained beforehand on datasets from a stochastic-process prior
(:mod:`probkit.models.mpnp.training`), and "fitting" is conditioning it on the context set
:math:`Z_c = (x, y)` — an amortised posterior. The result, :class:`NeuralProcessFitted`, gives

* ``predict(x)`` — the mixture predictive of ``y``,
  :math:`p(y \mid x, Z_c) \approx \frac1K\sum_{k=1}^K \prod_j N(y_j; \mu_k(x_j), \sigma_k(x_j)^2)`
  (:class:`probkit.posterior.Mixture`, exact ``log_prob``); component ``k`` is one pseudo
  context of the MPNP (Lee et al., ICLR 2023), one latent draw :math:`z_k \sim p(z \mid Z_c)`
  of the NP, or the single Gaussian of the CNP repeated;
* ``posterior(x)`` — the latent function: the component means :math:`\mu_k(x)` as an
  :class:`probkit.posterior.Empirical` ensemble. In the martingale-posterior view the uncertainty
  about the function is the spread of :math:`\theta^{(k)} = \mathrm{enc}(Z_c \cup Z'^{(k)})`, and
  :math:`\mu_k = \mathrm{dec}(x; \theta^{(k)})` is the function under one draw; :math:`\sigma_k`
  (the network's own noise level) belongs to ``y`` only. A CNP has no such spread: its posterior
  is a point mass (variance 1e-12), so use the NP or MPNP as a BO surrogate.

The ``K`` components are drawn once from the key given to ``fit`` and then fixed, so component
``k`` is the same function at every query (posterior draws are smooth in ``x``, and BO's
acquisition sees one surface).

**Units.** The shipped networks were trained on inputs in :math:`[-2, 2]` and outputs of a GP
with standard deviation in :math:`[0.1, 1]`. With ``standardise=True`` (default) ``fit`` maps each
input column affinely so that the context's range becomes :math:`[-2, 2]`, and the outputs to
mean 0 and standard deviation ``OUTPUT_SCALE`` = 0.5 (the middle of the training range), as the
BO loop does for every surrogate; predictions are mapped back. With ``standardise=False`` the
data go to the network unchanged (for data already on the training scale, such as the BNP
protocol tasks), and inputs outside :math:`[-2, 2]` raise a ``ValueError`` saying the range.

**Compile once.** The context is padded to a multiple of ``capacity`` with masked rows (masked
attention and masked means give them no weight), so conditioning and prediction compile once per
capacity and query size, including inside the BO acquisition optimiser.

Examples
--------
>>> import jax, numpy as np
>>> from probkit.models.mpnp import NeuralProcess
>>> x = np.linspace(1900, 2000, 12)[:, None]
>>> y = 1000 + 30 * np.sin(x[:, 0] / 15)
>>> fitted = NeuralProcess(model="mpnp", num_samples=16).fit(x, y, key=jax.random.key(0))
>>> pred = fitted.predict(np.array([[1950.0], [1975.0]]))
>>> pred.batch_shape, bool(np.all(np.abs(pred.mean - 1000) < 60))
((2,), True)
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from probkit import _io
from probkit._checks import check_choice, check_key, check_positive_int, check_regression_data
from probkit.models.base import Family, Fitted, check_inputs
from probkit.models.mpnp.networks import KINDS, NETWORKS, Network
from probkit.posterior import Empirical, Mixture
from probkit.special import normal_logpdf

__all__ = ["NeuralProcess", "NeuralProcessFitted", "PRETRAINED", "TRAINING_RANGE",
           "OUTPUT_SCALE", "load_pretrained", "load_network", "save_network",
           "posterior_predictive_model"]

#: Kinds with shipped weights (``probkit/models/mpnp/weights/<kind>.pk``, trained on RBF tasks).
PRETRAINED = ("cnp", "np", "mpnp")
#: The input range of the training tasks.
TRAINING_RANGE = (-2.0, 2.0)
#: Standard deviation given to the context outputs when standardising.
OUTPUT_SCALE = 0.5


def save_network(path, network: Network, **metadata):
    """Save a network (one :mod:`probkit._io` file; ``probkit.load`` also reads it)."""
    if not isinstance(network, NETWORKS):
        raise ValueError(f"network: expected a CNP, NP or MPNP, got {type(network).__name__}")
    return _io.save(path, network, metadata={"kind": network.kind, **metadata})


def load_network(path) -> Network:
    """Load a network saved by :func:`save_network` (bit-for-bit the same weights).

    Examples
    --------
    >>> import jax, tempfile, pathlib, equinox as eqx
    >>> from probkit.models.mpnp import make_network, save_network, load_network
    >>> net = make_network("np", key=jax.random.key(0), dim_hid=8, dim_lat=4)
    >>> path = save_network(pathlib.Path(tempfile.mkdtemp()) / "np.pk", net)
    >>> bool(eqx.tree_equal(load_network(path), net))
    True
    """
    return _io.load(path, expected=NETWORKS)


@functools.cache
def load_pretrained(kind: str = "mpnp") -> Network:
    """The shipped network of ``kind`` (one of :data:`PRETRAINED`; read once, then cached).

    Raises
    ------
    FileNotFoundError
        When no weights for ``kind`` ship with this installation.
    """
    check_choice("kind", kind, KINDS)
    res = importlib.resources.files("probkit.models.mpnp").joinpath("weights", f"{kind}.pk")
    if not res.is_file():
        raise FileNotFoundError(f"no shipped weights for {kind!r} ({res})")
    with importlib.resources.as_file(res) as path:
        return load_network(path)


def _check_range(name: str, x: np.ndarray) -> None:
    lo, hi = TRAINING_RANGE
    if np.min(x) < lo or np.max(x) > hi:
        raise ValueError(f"{name}: inputs span [{np.min(x):.4g}, {np.max(x):.4g}], outside the "
                         f"range [{lo:g}, {hi:g}] the network was trained on; use "
                         "standardise=True to map the context onto it")


@eqx.filter_jit
def _components(fitted: NeuralProcessFitted, x: Array, key: Array, num_samples: int
                ) -> tuple[Array, Array]:
    """Mixture components ``loc, scale`` ``(num_samples, m)`` at ``x`` in the data's units."""
    xs = (fitted.x - fitted.x_shift) / fitted.x_scale
    ys = (fitted.y - fitted.y_shift) / fitted.y_scale
    xq = (x - fitted.x_shift) / fitted.x_scale
    loc, scale = fitted.network.components(key, xs, ys, fitted.mask, xq, num_samples)
    return fitted.y_shift + fitted.y_scale * loc, fitted.y_scale * scale


class NeuralProcessFitted(Fitted):
    """A network conditioned on a (padded) context set; see the module notes.

    ``x``, ``y`` hold the context in the data's units (float32, padded to the capacity, ``mask``
    marks the real rows); the network sees ``(x - x_shift) / x_scale`` and
    ``(y - y_shift) / y_scale``.
    """

    network: Network
    x: Array
    y: Array
    mask: Array
    key: Array
    x_shift: Array
    x_scale: Array
    y_shift: Array
    y_scale: Array
    num_samples: int = eqx.field(static=True)
    standardise: bool = eqx.field(static=True)

    def _query(self, x) -> Array:
        if isinstance(x, jax.core.Tracer):  # inside jit (the BO acquisition): checked before
            return x
        x = check_inputs("x", x, self.x.shape[1])
        if not self.standardise:
            _check_range("x", x)
        return jnp.asarray(x, jnp.float32)

    def predict(self, x) -> Mixture:
        """Mixture predictive of ``y`` at ``x`` ``(m, d)`` (``K = num_samples`` components)."""
        return Mixture(*_components(self, self._query(x), self.key, self.num_samples))

    def posterior(self, x) -> Empirical:
        """The ``K`` component means at ``x``: joint draws of the latent function."""
        return Empirical(_components(self, self._query(x), self.key, self.num_samples)[0])

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(self.mask)
        return np.asarray(self.x)[mask], np.asarray(self.y)[mask]

    def _posterior_draws(self, key, num_samples: int) -> dict[str, Any]:
        """``num_samples`` fresh components (pseudo contexts / latent draws) at the context
        inputs: their means ``f`` and standard deviations ``scale``, each ``(S, n)``."""
        loc, scale = _components(self, self.x, key, num_samples)
        mask = np.asarray(self.mask)
        return {"f": np.asarray(loc)[:, mask], "scale": np.asarray(scale)[:, mask]}

    def _log_likelihood(self, draws: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``log N(y_i; f_si, scale_si^2)``: the density of each context point under each draw."""
        with jax.enable_x64(True):
            return np.asarray(normal_logpdf(jnp.asarray(y, jnp.float64),
                                            jnp.asarray(draws["f"], jnp.float64),
                                            jnp.asarray(draws["scale"], jnp.float64)))


def posterior_predictive_model(pred: Mixture, y=None) -> None:
    """The mixture predictive as a NumPyro model: ``component ~ Categorical(1/K)``, then
    ``y ~ Normal(loc[component], scale[component])`` jointly over the points (observed if
    ``y`` is given), for NumPyro's ``Predictive`` or inference on top of the NP."""
    k = numpyro.sample("component", dist.Categorical(logits=jnp.zeros(pred.num_components)))
    numpyro.sample("y", dist.Normal(pred.loc[k], pred.scale[k]).to_event(1), obs=y)


class NeuralProcess(Family):
    """Neural processes (CNP, CANP, NP, MPNP, MPANP) as a model family.

    Parameters
    ----------
    model : {"mpnp", "np", "cnp", "canp", "mpanp"}, optional
        The network kind. With ``weights="pretrained"`` (default ``"mpnp"``) one of
        :data:`PRETRAINED`; with a network, its kind (checked when given).
    weights : "pretrained" or network
        The shipped weights of ``model`` (trained on RBF tasks, 1-D inputs), or a network
        trained with :func:`~probkit.models.mpnp.train`.
    num_samples : int
        Mixture components ``K`` (pseudo contexts, latent draws; default 50).
    standardise : bool
        Map the context onto the training scale (default; see the module notes) or give the
        data to the network unchanged (inputs must then lie in ``[-2, 2]``).
    capacity : int
        The context is padded to a multiple of this many rows (one compile per multiple).
    engine : {"amortised"}
        The one engine: conditioning a trained network.
    """

    name = "mpnp"
    engines = {"amortised": "a trained network conditioned on the context set"}

    model: str | None = eqx.field(static=True, default=None)
    weights: Any = "pretrained"
    num_samples: int = eqx.field(static=True, default=50)
    standardise: bool = eqx.field(static=True, default=True)
    capacity: int = eqx.field(static=True, default=64)
    engine: str = eqx.field(static=True, default="amortised")

    def __check_init__(self):
        if self.model is not None:
            check_choice("model", self.model, KINDS)
        check_positive_int("num_samples", self.num_samples)
        check_positive_int("capacity", self.capacity)
        if isinstance(self.weights, str):
            check_choice("weights", self.weights, ("pretrained",))
            if (self.model or "mpnp") not in PRETRAINED:
                raise ValueError(f"model: no pretrained weights ship for {self.model!r} (only "
                                 f"for {', '.join(PRETRAINED)}); train one with "
                                 "probkit.models.mpnp.train and pass it as weights=")
        elif not isinstance(self.weights, NETWORKS):
            raise ValueError("weights: expected 'pretrained' or a CNP, NP or MPNP network, got "
                             f"{type(self.weights).__name__}")
        elif self.model is not None and self.weights.kind != self.model:
            raise ValueError(f"model: {self.model!r} given, but weights is a "
                             f"{self.weights.kind!r} network")

    @property
    def network(self) -> Network:
        """The trained network this family conditions."""
        if isinstance(self.weights, str):
            return load_pretrained(self.model or "mpnp")
        return self.weights

    def fit(self, x, y, *, key, progress_bar: bool = True) -> NeuralProcessFitted:
        """Condition the network on the context ``x`` ``(n, d)`` (1-D inputs may be ``(n,)``),
        ``y`` ``(n,)``. No training happens (one forward pass per prediction), so there is no
        progress bar; ``progress_bar`` is accepted for the family contract."""
        key = check_key("key", key)
        x, y = check_regression_data(check_inputs("x", x), y)
        network = self.network
        if x.shape[1] != network.dim_x:
            raise ValueError(f"x: {x.shape[1]} input columns, the {network.kind} network takes "
                             f"{network.dim_x}")
        d = x.shape[1]
        if self.standardise:
            lo, hi = x.min(axis=0), x.max(axis=0)
            half = np.where(hi > lo, 0.5 * (hi - lo), 1.0)
            x_shift, x_scale = 0.5 * (lo + hi), half / TRAINING_RANGE[1]
            sd = float(np.std(y))
            y_shift, y_scale = float(np.mean(y)), (sd if sd > 0 else 1.0) / OUTPUT_SCALE
        else:
            _check_range("x", x)
            x_shift, x_scale, y_shift, y_scale = np.zeros(d), np.ones(d), 0.0, 1.0
        n = x.shape[0]
        cap = self.capacity * -(-n // self.capacity)
        xp = np.broadcast_to(np.asarray(x_shift), (cap, d)).copy()  # padding: any finite value
        yp = np.full(cap, y_shift)
        xp[:n], yp[:n] = x, y
        f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
        return NeuralProcessFitted(network, f32(xp), f32(yp), jnp.arange(cap) < n, key,
                                   f32(x_shift), f32(x_scale), f32(y_shift), f32(y_scale),
                                   self.num_samples, self.standardise)
