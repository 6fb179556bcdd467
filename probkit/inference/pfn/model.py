r"""A trained PFN: network, bar borders and normalisation; prediction, save and load.

:class:`PFN` bundles the :class:`~probkit.inference.pfn.network.Transformer`, the bar borders and
a :class:`PFNConfig` (sizes, input box, output normalisation, the prior it was trained on).
``pfn.predict(x_train, y_train, x_test)`` is one forward pass and returns a
:class:`BarPrediction`: the posterior predictive of ``y`` at each test input, with log density,
CDF, mean, variance, quantiles, log expected improvement and samples (a NumPyro
``Distribution``); ArviZ data come from the family, :class:`probkit.models.pfn.Regressor`.

Normalisation (applied identically in training and prediction):

* inputs are mapped affinely from the configured box ``x_bounds`` to :math:`[0, 1]^d`;
* outputs are either standardised per dataset with the training points' mean and standard
  deviation (``standardize_y=True``; for priors whose output scale is arbitrary, e.g. for
  optimisation) or by the fixed location and scale of the prior's ``y`` (``False``; for priors
  with a known output scale, which per-dataset standardisation would hide from the network).
  Densities are mapped back with the Jacobian :math:`1/\text{scale}`.

Files: the one probkit format (:mod:`probkit._io`: a JSON header with the configuration and the
training metadata, then :func:`equinox.tree_serialise_leaves` bytes); ``pfn.save(path, **metadata)``
and ``probkit.load(path)``. A reloaded model predicts bit-for-bit the same.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> from probkit.inference.pfn import load_pretrained
>>> pfn = load_pretrained("gp1d-rbf")
>>> x = jnp.linspace(0.1, 0.9, 8)[:, None]
>>> pred = pfn.predict(x, jnp.sin(6 * x[:, 0]), jnp.array([[0.5]]))
>>> bool(abs(pred.mean[0] - jnp.sin(3.0)) < 0.3)
True
"""

from __future__ import annotations

import dataclasses
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probkit import _io
from probkit._checks import as_array, check_same_length
from probkit.inference.pfn import bar
from probkit.inference.pfn.network import Transformer
from probkit.posterior import Predictive, _numerics

__all__ = ["PFNConfig", "PFN", "BarPrediction", "ConditionedPFN", "predict_batch", "load"]


@dataclasses.dataclass(frozen=True)
class PFNConfig:
    """Static description of a PFN (everything needed to rebuild it before loading weights).

    Attributes
    ----------
    max_points : int
        Sequence length trained on; at most ``max_points - 1`` training points at prediction.
    max_input_dim : int
        Largest input dimension served.
    num_buckets : int
        Number of bar buckets (``len(borders) - 1``).
    emsize, num_layers, num_heads, ff_factor : int
        Network sizes.
    x_bounds : (float, float)
        Box of the inputs in every dimension (mapped to ``[0, 1]``).
    standardize_y : bool
        Per-dataset standardisation of ``y`` (else the fixed ``y_loc``, ``y_scale``).
    y_loc, y_scale : float
        Fixed output normalisation (used when ``standardize_y`` is false).
    prior : str
        Description of the prior trained on.
    """

    max_points: int
    max_input_dim: int
    num_buckets: int
    emsize: int = 128
    num_layers: int = 4
    num_heads: int = 4
    ff_factor: int = 2
    x_bounds: tuple[float, float] = (0.0, 1.0)
    standardize_y: bool = False
    y_loc: float = 0.0
    y_scale: float = 1.0
    prior: str = ""

    @property
    def max_train(self) -> int:
        """Most training points a prediction may use."""
        return self.max_points - 1


class BarPrediction(Predictive):
    """Posterior predictive of ``y`` at ``m`` test inputs (bar distributions in original units).

    A NumPyro distribution with batch shape ``logits.shape[:-1]`` (``(m,)`` for one dataset):
    exact ``log_prob``, ``cdf``, ``icdf`` (the bar quantile), ``mean``, ``variance``, samples
    independent across test points (a PFN predicts marginals), and the exact
    ``log_expected_improvement`` that :class:`probkit.bo.LogEI` uses.
    """

    arg_constraints = {}
    pytree_data_fields = ("logits", "borders", "loc", "scale")

    def __init__(self, logits, borders, loc, scale):
        self.logits = jnp.asarray(logits)  # (..., m, num_buckets)
        self.borders = jnp.asarray(borders)  # (num_buckets + 1,)
        self.loc = jnp.asarray(loc)  # (..., 1): output normalisation over the m test points
        self.scale = jnp.asarray(scale)
        self._init(self.logits.shape[:-1])

    @_numerics
    def log_prob(self, value) -> Array:
        """Log predictive density of ``value`` ``(m,)`` (or broadcastable)."""
        z = (jnp.asarray(value) - self.loc) / self.scale
        return bar.logpdf(self.logits, self.borders, z) - jnp.log(self.scale)

    @_numerics
    def cdf(self, value) -> Array:
        """Predictive CDF at ``value``."""
        return bar.cdf(self.logits, self.borders, (jnp.asarray(value) - self.loc) / self.scale)

    @property
    @_numerics
    def mean(self) -> Array:
        """Predictive mean ``(m,)``."""
        return self.loc + self.scale * bar.mean(self.logits, self.borders)

    @property
    @_numerics
    def variance(self) -> Array:
        """Predictive variance ``(m,)``."""
        return self.scale**2 * bar.variance(self.logits, self.borders)

    @_numerics
    def log_expected_improvement(self, best) -> Array:
        """Exact log expected improvement below ``best`` ``(m,)`` of the bar distributions
        (:func:`probkit.inference.pfn.bar.log_expected_improvement`); :class:`probkit.bo.LogEI`
        uses it instead of a Gaussian with the same mean and variance."""
        z = (jnp.asarray(best) - self.loc) / self.scale
        return bar.log_expected_improvement(self.logits, self.borders, z) + jnp.log(self.scale)

    @_numerics
    def icdf(self, q) -> Array:
        """Quantile at probability ``q`` (scalar: ``(m,)``)."""
        q = jnp.asarray(q)
        return self.loc + self.scale * bar.quantile(self.logits, self.borders, q)

    def quantile(self, probs) -> Array:
        """Quantiles: scalar ``probs`` gives ``(m,)``; ``probs`` ``(r,)`` gives ``(r, m)``."""
        q = jnp.asarray(probs)
        qq = q[..., None] if q.ndim else q
        return self.loc + self.scale * bar.quantile(self.logits, self.borders, qq)

    @_numerics
    def sample(self, key, sample_shape=()) -> Array:
        """Draws ``sample_shape + (m,)``, independent over test points."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        num = int(np.prod(shape)) if shape else 1
        draws = self.loc + self.scale * bar.sample(key, self.logits, self.borders, num)
        return draws.reshape(shape + draws.shape[1:])


def _map_x(cfg: PFNConfig, x: Array, input_dim: Array) -> Array:
    """Inputs from the configured box to the unit cube; unused columns zeroed."""
    lo, hi = cfg.x_bounds
    return jnp.where(jnp.arange(cfg.max_input_dim) < input_dim, (x - lo) / (hi - lo), 0.0)


class ConditionedPFN(eqx.Module):
    """A PFN with its training set encoded once (the training tokens' states at every layer).

    Training tokens never attend to queries, so predictions at any number of query batches
    reuse this encoding: ``predict(x_test)`` costs only the queries' own passes. Fixed shapes
    (the training set is padded to the network's capacity), so a jitted function taking it as an
    argument compiles once; it is the fitted object of the BO surrogate
    (:class:`probkit.models.pfn.Regressor`).
    """

    pfn: PFN
    states: Array
    num_train: Array
    input_dim: Array
    loc: Array
    scale: Array

    def predict(self, x_test: Array) -> BarPrediction:
        """Predictive at ``x_test`` ``(m, d)`` (``d`` may be below ``max_input_dim``)."""
        cfg = self.pfn.config
        x = jnp.asarray(x_test, self.states.dtype)
        x = jnp.pad(x, ((0, 0), (0, cfg.max_input_dim - x.shape[1])))
        logits = self.pfn.net.decode(self.states, self.num_train, _map_x(cfg, x, self.input_dim),
                                     self.input_dim)
        return BarPrediction(logits, self.pfn.borders, self.loc[None], self.scale[None])

    def posterior(self, x: Array) -> BarPrediction:
        """The BO ``Fitted`` protocol: the predictive of ``y`` at ``x`` ``(q, d)``."""
        return self.predict(x)


def _condition(pfn: PFN, x_train: Array, y_train: Array, num_train: Array,
               input_dim: Array) -> ConditionedPFN:
    cfg = pfn.config
    mask = jnp.arange(x_train.shape[0]) < num_train
    loc, scale = normalisation(cfg, y_train, mask)
    z = jnp.where(mask, (y_train - loc) / scale, 0.0)
    states = pfn.net.encode_train(_map_x(cfg, x_train, input_dim), z, num_train, input_dim)
    return ConditionedPFN(pfn, states, num_train, input_dim, loc, scale)


def _predict(pfn: PFN, x_train: Array, y_train: Array, num_train: Array, x_test: Array,
             input_dim: Array) -> BarPrediction:
    return _condition(pfn, x_train, y_train, num_train, input_dim).predict(x_test)


def normalisation(cfg: PFNConfig, y: Array, mask: Array) -> tuple[Array, Array]:
    """Location and scale of ``y`` for one dataset (``mask`` marks its training points)."""
    if not cfg.standardize_y:
        return jnp.asarray(cfg.y_loc, y.dtype), jnp.asarray(cfg.y_scale, y.dtype)
    n = jnp.sum(mask)
    loc = jnp.where(n > 0, jnp.sum(jnp.where(mask, y, 0.0)) / jnp.maximum(n, 1), 0.0)
    var = jnp.sum(jnp.where(mask, (y - loc) ** 2, 0.0)) / jnp.maximum(n - 1, 1)
    scale = jnp.where(n > 1, jnp.sqrt(jnp.maximum(var, 1e-12)), 1.0)
    return loc, jnp.maximum(scale, 1e-6)


_predict_jit = eqx.filter_jit(_predict)
_condition_jit = eqx.filter_jit(_condition)


@eqx.filter_jit
def predict_batch(pfn: PFN, x_train: Array, y_train: Array, x_test: Array) -> BarPrediction:
    """Predictions for a batch of datasets of equal sizes in one compiled call.

    Parameters
    ----------
    pfn : PFN
        The network.
    x_train, y_train, x_test : Array
        ``(b, n, d)``, ``(b, n)``, ``(b, m, d)`` with ``n <= max_train`` and
        ``d <= max_input_dim`` (not validated here: use :meth:`PFN.predict` for checked calls).

    Returns
    -------
    BarPrediction
        With leading batch axis ``b`` on every field.
    """
    cfg = pfn.config
    b, n, d = x_train.shape
    pad_rows = ((0, 0), (0, cfg.max_points - n), (0, cfg.max_input_dim - d))
    xp = jnp.pad(x_train, pad_rows)
    yp = jnp.pad(y_train, ((0, 0), (0, cfg.max_points - n)))
    xq = jnp.pad(x_test, ((0, 0), (0, 0), (0, cfg.max_input_dim - d)))
    f = jax.vmap(_predict, in_axes=(None, 0, 0, None, 0, None))
    pred = f(pfn, xp, yp, jnp.asarray(n, jnp.int32), xq, jnp.asarray(d, jnp.int32))
    return eqx.tree_at(lambda p: p.borders, pred, pfn.borders)  # shared, not per dataset


class PFN(eqx.Module):
    """A prior-data fitted network (Müller et al., ICLR 2022).

    Build one with :func:`probkit.inference.pfn.init`, train it with
    :func:`probkit.inference.pfn.train`, or load shipped weights with
    :func:`probkit.inference.pfn.load_pretrained`.
    """

    net: Transformer
    borders: Array
    config: PFNConfig = eqx.field(static=True)

    def save(self, path, **metadata) -> pathlib.Path:
        """Save to ``path`` (:mod:`probkit._io`); ``metadata`` (JSON) goes into the header —
        training settings, seed, device, wall time. Read it with :func:`probkit.read_header`."""
        return _io.save(path, self, metadata=metadata)

    def check_data(self, x_train, y_train, x_test=None):
        """Validate a prediction's inputs against what the network was trained for.

        Returns ``(x_train (n, d), y_train (n,), x_test (m, d) or None)``.
        """
        cfg = self.config
        x_train = as_array("x_train", x_train, ndim=(1, 2))
        x_train = x_train[:, None] if x_train.ndim == 1 else x_train
        y_train = as_array("y_train", y_train, ndim=1)
        check_same_length(x_train=x_train, y_train=y_train)
        if x_train.shape[0] > cfg.max_train:
            raise ValueError(f"x_train: {x_train.shape[0]} training points, but this PFN was "
                             f"trained for at most {cfg.max_train}")
        arrays = {"x_train": x_train, "y_train": y_train}
        name, d = "x_train", x_train.shape[1]
        if x_test is not None:
            x_test = as_array("x_test", x_test, ndim=(1, 2))
            x_test = x_test[:, None] if x_test.ndim == 1 else x_test
            if x_test.shape[0] == 0:
                raise ValueError("x_test: no test inputs")
            name, d = "x_test", x_test.shape[1]
            if x_train.shape[0] and x_train.shape[1] != d:
                raise ValueError(f"x_train: input dimension {x_train.shape[1]} differs from "
                                 f"x_test's {d}")
            arrays["x_test"] = x_test
        if d > cfg.max_input_dim:
            raise ValueError(f"{name}: input dimension {d}, but this PFN was trained for at "
                             f"most {cfg.max_input_dim}")
        for key, v in arrays.items():
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{key}: contains NaN or inf")
            if key != "y_train":
                self.check_range(key, v)
        self.check_output_range("y_train", y_train)
        return x_train.reshape(-1, d), y_train, x_test

    def check_range(self, name: str, x) -> None:
        """Raise ``ValueError`` naming ``name`` if inputs leave the box the network was trained
        on (``config.x_bounds``; a network sees nothing outside it, and raw units such as years
        give a constant prediction). Map inputs to the box first, as the BO loop does."""
        lo, hi = self.config.x_bounds
        x = np.asarray(x)
        slack = 1e-6 * (hi - lo)
        if x.size and (x.min() < lo - slack or x.max() > hi + slack):
            raise ValueError(f"{name}: inputs in [{x.min():.4g}, {x.max():.4g}], but this PFN was "
                             f"trained on [{lo:g}, {hi:g}] per dimension: rescale x to that box")

    def check_output_range(self, name: str, y) -> None:
        """For a network trained in fixed output units (``standardize_y=False``), raise
        ``ValueError`` naming ``name`` if ``y`` leaves the range its bar distribution covers."""
        cfg, y = self.config, np.asarray(y)
        if cfg.standardize_y or not y.size:
            return
        lo, hi = (float(b) * cfg.y_scale + cfg.y_loc for b in (self.borders[0], self.borders[-1]))
        if y.min() < lo or y.max() > hi:
            raise ValueError(f"{name}: values in [{y.min():.4g}, {y.max():.4g}], but this PFN was "
                             f"trained in fixed output units and its predictive covers "
                             f"[{lo:.4g}, {hi:.4g}]: rescale y")

    def predict(self, x_train, y_train, x_test) -> BarPrediction:
        """Posterior predictive at ``x_test`` given the training set, in one forward pass.

        Parameters
        ----------
        x_train : array ``(n, d)`` or ``(n,)``
            Training inputs (``n <= config.max_train``, ``d <= config.max_input_dim``).
        y_train : array ``(n,)``
            Training outputs.
        x_test : array ``(m, d)`` or ``(m,)``
            Test inputs.

        Returns
        -------
        BarPrediction
            The predictive distributions of ``y`` at the ``m`` test inputs.
        """
        x_train, y_train, x_test = self.check_data(x_train, y_train, x_test)
        xp, yp, n, xq, d = self.pad(x_train, y_train, x_test)
        return _predict_jit(self, xp, yp, n, xq, d)

    def condition(self, x_train, y_train) -> ConditionedPFN:
        """Encode a training set once; ``.predict(x_test)`` then serves any test inputs.

        Parameters
        ----------
        x_train : array ``(n, d)`` or ``(n,)``
            Training inputs (``n <= config.max_train``, ``d <= config.max_input_dim``).
        y_train : array ``(n,)``
            Training outputs.
        """
        x_train, y_train, _ = self.check_data(x_train, y_train)
        xp, yp, n, _, d = self.pad(x_train, y_train)
        return _condition_jit(self, xp, yp, n, d)

    def pad(self, x_train, y_train, x_test=None):
        """Pad a dataset to the network's capacity (so one program serves every size); the
        test inputs (if given) are padded to ``max_input_dim`` columns."""
        cfg = self.config
        n, d = x_train.shape
        xp = np.zeros((cfg.max_points, cfg.max_input_dim), np.float32)
        xp[:n, :d] = x_train
        yp = np.zeros((cfg.max_points,), np.float32)
        yp[:n] = y_train
        xq = None
        if x_test is not None:
            xq = np.zeros((x_test.shape[0], cfg.max_input_dim), np.float32)
            xq[:, :d] = x_test
            xq = jnp.asarray(xq)
        return (jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(n, jnp.int32), xq,
                jnp.asarray(d, jnp.int32))


def build(config: PFNConfig, borders, *, key: Array) -> PFN:
    """A freshly initialised PFN for ``config`` and bar ``borders``."""
    borders = jnp.asarray(borders, jnp.float32)
    if borders.shape != (config.num_buckets + 1,):
        raise ValueError(f"borders: expected {config.num_buckets + 1} borders, got "
                         f"{borders.shape}")
    net = Transformer(config.max_input_dim, config.num_buckets, emsize=config.emsize,
                      num_layers=config.num_layers, num_heads=config.num_heads,
                      ff_factor=config.ff_factor, key=key)
    return PFN(net, borders, config)


def load(path) -> PFN:
    """Load a PFN saved by :meth:`PFN.save` (bit-for-bit the same predictions); a file of another
    class, a damaged one or one of a newer format raises a ``ValueError`` naming ``path``."""
    return _io.load(path, expected=PFN)
