r"""Ask/tell Bayesian optimisation loop, ``minimize``, history save/resume and a convergence plot.

:class:`BayesOpt` minimises a black-box function over a box. Inside, inputs are mapped to the unit
cube, :math:`u = (x - l)/(h - l)`, and the finite outputs are standardised,
:math:`\tilde y = (y - \bar y)/s_y`, before the surrogate sees them. The first ``n_init`` points
come from a scrambled Sobol design (Owen 1998); afterwards each ``ask`` fits the surrogate
(:mod:`probkit.bo.protocol`) from scratch and maximises the acquisition
(:mod:`probkit.bo.acquisition`).

Failed evaluations (NaN or inf) are kept in the history with ``status="failed"`` and are never
given to the surrogate; the incumbent and the regret ignore them. Asked-but-untold points are not
fantasised: ``ask(n)`` with ``n > 1`` optimises a joint batch acquisition instead.

The history is plain JSON (``save`` / ``BayesOpt.load``); the PRNG key of ask number ``t`` is
``fold_in(key, t)``, so an optimiser resumed from its saved history proposes exactly the same next
point as one that never stopped.

Examples
--------
>>> import jax
>>> from probkit.bo import minimize, forrester
>>> problem = forrester()
>>> res = minimize(problem, problem.bounds, budget=12, n_init=4, key=jax.random.key(0),
...                progress_bar=False)
>>> bool(res.fun < -5.5)
True
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from scipy.stats import qmc

from probkit._checks import as_array, check_key, check_positive_int
from probkit.bo.acquisition import LogEI, check_acquisition, check_options, optimize_acquisition
from probkit.models.gp import GP

__all__ = ["BayesOpt", "OptimizeResult", "minimize", "best_so_far", "plot_convergence"]

_VERSION = 1


def _check_bounds(bounds) -> np.ndarray:
    b = as_array("bounds", bounds, ndim=2)
    if b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"bounds: expected shape (d, 2) of (lower, upper) pairs, got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bounds: must be finite")
    bad = np.nonzero(b[:, 0] >= b[:, 1])[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds: lower must be < upper in every dimension; dimension {i} has "
                         f"lower={b[i, 0]} >= upper={b[i, 1]}")
    return b.astype(np.float64)


def _typed_key(key) -> jax.Array:
    key = check_key("key", key)
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


@dataclass
class OptimizeResult:
    """Outcome of :func:`minimize`.

    Attributes
    ----------
    x : numpy.ndarray (d,)
        Best point found (lowest finite value).
    fun : float
        Its value.
    nfev : int
        Evaluations made (failed ones included).
    nfail : int
        Failed (NaN/inf) evaluations.
    history : list of dict
        Every evaluation in order: ``x``, ``y`` (None when failed), ``status``, ``source``.
    optimizer : BayesOpt
        The optimiser, to continue with ``ask``/``tell`` or ``save``.
    """

    x: np.ndarray
    fun: float
    nfev: int
    nfail: int
    history: list = field(repr=False)
    optimizer: BayesOpt = field(repr=False)


class BayesOpt:
    """Ask/tell Bayesian optimiser (minimisation) over a box.

    Parameters
    ----------
    bounds : array_like of shape (d, 2)
        ``(lower, upper)`` per input; ``lower < upper`` is required.
    n_init : int, optional
        Size of the initial scrambled-Sobol design (default ``2 d + 1``).
    surrogate : Surrogate, optional
        Default :class:`probkit.models.gp.GP` (Matern-5/2, MAP hyperparameters).
    acquisition : optional
        :class:`~probkit.bo.acquisition.LogEI` (default), ``UCB``, ``QLogEI``, ``QUCB``,
        ``Thompson``.
    key : jax.Array
        PRNG key; every random choice derives from it (``fold_in(key, ask_number)``).
    acq_options : dict, optional
        Passed to :func:`~probkit.bo.acquisition.optimize_acquisition` (``num_raw``,
        ``num_restarts``, ``num_steps``, ``lr``).
    progress_bar : bool
        Show a tqdm bar in :meth:`minimize` (default True).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from probkit.bo import BayesOpt
    >>> opt = BayesOpt([[0.0, 1.0]], n_init=3, key=jax.random.key(0))
    >>> x = opt.ask(3)
    >>> opt.tell(x, np.sin(6 * x[:, 0]))
    >>> opt.ask(1).shape
    (1, 1)
    """

    def __init__(self, bounds, *, n_init: int | None = None, surrogate=None, acquisition=None,
                 key, acq_options: dict | None = None, progress_bar: bool = True):
        self.bounds = _check_bounds(bounds)
        self.dim = self.bounds.shape[0]
        self.n_init = (2 * self.dim + 1 if n_init is None
                       else check_positive_int("n_init", n_init))
        self.surrogate = GP() if surrogate is None else surrogate
        if not callable(getattr(self.surrogate, "fit", None)):
            raise ValueError("surrogate: expected an object with fit(x, y, *, key) "
                             f"(see probkit.bo.Surrogate), got {type(self.surrogate).__name__}")
        # probkit families show progress bars on long fits; one per BO step would be noise.
        params = inspect.signature(self.surrogate.fit).parameters
        self._fit_options = {"progress_bar": False} if "progress_bar" in params else {}
        self.acquisition = check_acquisition(LogEI() if acquisition is None else acquisition)
        self.key = _typed_key(key)
        self.acq_options = check_options(dict(acq_options or {}), prefix="acq_options")
        self.progress_bar = bool(progress_bar)
        self.history: list[dict] = []
        self.n_asked = 0
        self.design_served = 0
        self.timings: list[float] = []

    # ---------------------------------------------------------------- data views
    @property
    def x(self) -> np.ndarray:
        """All evaluated points ``(n, d)``, failed ones included."""
        return np.array([r["x"] for r in self.history]).reshape(-1, self.dim)

    @property
    def y(self) -> np.ndarray:
        """All values ``(n,)``; failed evaluations read NaN."""
        return np.array([np.nan if r["y"] is None else r["y"] for r in self.history], dtype=float)

    @property
    def ok(self) -> np.ndarray:
        """Mask of successful (finite) evaluations."""
        return np.array([r["status"] == "ok" for r in self.history], dtype=bool)

    @property
    def best(self) -> tuple[np.ndarray, float]:
        """``(x, y)`` of the lowest finite value; raises ``ValueError`` before any success."""
        ok = self.ok
        if not ok.any():
            raise ValueError("history: no successful evaluation yet")
        y = np.where(ok, self.y, np.inf)
        i = int(np.argmin(y))
        return self.x[i], float(y[i])

    def _to_unit(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return (x - lo) / (hi - lo)

    def _from_unit(self, u: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return np.clip(lo + np.asarray(u, dtype=np.float64) * (hi - lo), lo, hi)

    def _design(self, start: int, n: int) -> np.ndarray:
        seed = int(jax.random.randint(jax.random.fold_in(self.key, -1 % 2**31), (), 0, 2**31 - 1))
        sobol = qmc.Sobol(self.dim, scramble=True, seed=seed)
        with warnings.catch_warnings():  # non-power-of-two sizes only warn about balance
            warnings.simplefilter("ignore", UserWarning)
            return sobol.random(start + n)[start:]

    # ---------------------------------------------------------------- ask / tell
    def ask(self, n: int = 1) -> np.ndarray:
        """Propose ``n`` points ``(n, d)`` in the original coordinates.

        Sobol design points until ``n_init`` points were asked or told (and while fewer than two
        successful evaluations exist); then the surrogate is fitted to the successful
        evaluations and the acquisition maximised (jointly over ``n`` points when ``n > 1``).
        """
        n = check_positive_int("n", n)
        t0 = time.perf_counter()
        key = jax.random.fold_in(self.key, self.n_asked)
        self.n_asked += 1
        served = max(self.design_served, len(self.history))
        if served < self.n_init or int(self.ok.sum()) < 2:
            u = self._design(self.design_served, n)
            self.design_served += n
            return self._from_unit(u)
        u = self._propose(n, key)
        self.timings.append(time.perf_counter() - t0)
        return self._from_unit(u)

    def _propose(self, n: int, key) -> np.ndarray:
        ok = self.ok
        xu = self._to_unit(self.x[ok])
        y = self.y[ok]
        mu, sd = float(np.mean(y)), float(np.std(y))
        ys = (y - mu) / (sd if sd > 0 else 1.0)
        k_fit, k_acq = jax.random.split(key)
        fitted = self.surrogate.fit(xu, ys, key=k_fit, **self._fit_options)
        i = int(np.argmin(ys))
        res = optimize_acquisition(self.acquisition, fitted, ys[i], xu[i], key=k_acq, q=n,
                                   **self.acq_options)
        return np.asarray(res.x, dtype=np.float64)

    def tell(self, points, values, *, source: str = "user") -> None:
        """Record evaluations: ``points`` ``(n, d)`` (or ``(d,)``) and ``values`` ``(n,)``.

        Raises ``ValueError`` (recording nothing) for points of the wrong dimension, outside the
        bounds or non-finite, and for a values/points length mismatch. NaN or inf values are
        recorded as failed evaluations (a ``RuntimeWarning``) and never reach the surrogate.
        """
        x = as_array("points", points, ndim=(1, 2))
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.dim:
            raise ValueError(f"points: expected shape (n, {self.dim}) for a {self.dim}-D "
                             f"problem, got {np.shape(points)}")
        if not np.all(np.isfinite(x)):
            raise ValueError("points: contain NaN or inf")
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        tol = 1e-9 * (hi - lo)
        outside = np.any((x < lo - tol) | (x > hi + tol), axis=1)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(f"points: row {i} {x[i].tolist()} lies outside the bounds "
                             f"{self.bounds.tolist()}")
        v = as_array("values", values, ndim=(0, 1)).reshape(-1)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"values: expected {x.shape[0]} values for {x.shape[0]} points, "
                             f"got {v.shape[0]}")
        x = np.clip(x, lo, hi)
        for xi, vi in zip(x, v, strict=True):
            good = bool(np.isfinite(vi))
            if not good:
                warnings.warn(f"objective returned {vi} at {xi.tolist()}: recorded as a failed "
                              "evaluation and excluded from the surrogate", RuntimeWarning,
                              stacklevel=2)
            self.history.append({"x": [float(a) for a in xi], "y": float(vi) if good else None,
                                 "raw": repr(float(vi)), "status": "ok" if good else "failed",
                                 "source": source})

    # ---------------------------------------------------------------- loop
    def minimize(self, objective: Callable, budget: int, *, batch_size: int = 1,
                 callback: Callable | None = None) -> OptimizeResult:
        """Evaluate ``objective`` until the history holds ``budget`` evaluations.

        ``objective(x)`` takes a point ``(d,)`` in the original coordinates and returns a
        scalar; NaN/inf count as failed evaluations (kept in the history, excluded from the
        surrogate); exceptions propagate, leaving every earlier evaluation in the history.
        ``callback(optimizer)`` runs after each ``tell``.
        """
        budget = check_positive_int("budget", budget)
        batch_size = check_positive_int("batch_size", batch_size)
        if not callable(objective):
            raise ValueError(f"objective: expected a callable, got {type(objective).__name__}")
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, initial=min(len(self.history), budget),
                   disable=not self.progress_bar, desc="BO", leave=False)
        try:
            while len(self.history) < budget:
                pts = self.ask(min(batch_size, budget - len(self.history)))
                vals = []
                for p in pts:
                    v = np.asarray(objective(p), dtype=np.float64)
                    if v.size != 1:
                        raise ValueError(f"objective: must return a scalar, got shape {v.shape}")
                    vals.append(float(v.reshape(())))
                self.tell(pts, vals, source="bo")
                bar.update(len(pts))
                if self.ok.any():
                    bar.set_postfix(best=f"{self.best[1]:.4g}")
                if callback is not None:
                    callback(self)
        finally:
            bar.close()
        return self.result()

    def result(self) -> OptimizeResult:
        """The current best point and history as an :class:`OptimizeResult`."""
        x, f = self.best if self.ok.any() else (np.full(self.dim, np.nan), math.nan)
        return OptimizeResult(x, f, len(self.history), int((~self.ok).sum()),
                              list(self.history), self)

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """JSON-serialisable state (the surrogate and acquisition are stored by description)."""
        return {"version": _VERSION, "bounds": self.bounds.tolist(), "n_init": self.n_init,
                "key": np.asarray(jax.random.key_data(self.key)).tolist(),
                "key_impl": str(jax.random.key_impl(self.key)),
                "n_asked": self.n_asked, "design_served": self.design_served,
                "surrogate": repr(self.surrogate), "acquisition": repr(self.acquisition),
                "surrogate_fingerprint": _fingerprint(self.surrogate),
                "acquisition_fingerprint": _fingerprint(self.acquisition),
                "acq_options": self.acq_options, "history": self.history}

    def save(self, path) -> Path:
        """Write the history and the optimiser state to ``path`` as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.state_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path, *, surrogate=None, acquisition=None,
             progress_bar: bool = True) -> BayesOpt:
        """Resume from a file written by :meth:`save`.

        Pass the same ``surrogate`` and ``acquisition`` as the saved run (defaults otherwise; a
        ``UserWarning`` says when their content differs from the saved one: compared by
        :func:`probkit._io.fingerprint`, so equal configurations built in another process
        match; objects that cannot be fingerprinted are compared by ``repr``).
        """
        text = Path(path).read_text()
        try:
            state = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"path: {str(path)!r} is not a saved BayesOpt run (damaged JSON: "
                             f"{err})") from None
        if not isinstance(state, dict) or state.get("version") != _VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise ValueError(f"path: {str(path)!r} has unsupported history version {version!r}")
        key = jax.random.wrap_key_data(np.asarray(state["key"], dtype=np.uint32))
        opt = cls(state["bounds"], n_init=state["n_init"], surrogate=surrogate,
                  acquisition=acquisition, key=key, acq_options=state["acq_options"],
                  progress_bar=progress_bar)
        for name in ("surrogate", "acquisition"):
            saved, now = state.get(f"{name}_fingerprint"), _fingerprint(getattr(opt, name))
            same = saved == now if saved is not None and now is not None else (
                repr(getattr(opt, name)) == state[name])
            if not same:
                warnings.warn(f"{name}: differs from the saved run ({state[name]}); the next "
                              "points will differ from an uninterrupted run", UserWarning,
                              stacklevel=2)
        opt.history = [dict(r) for r in state["history"]]
        opt.n_asked = int(state["n_asked"])
        opt.design_served = int(state["design_served"])
        return opt


def _fingerprint(obj) -> str | None:
    """Content hash of a surrogate or acquisition, or None for objects _io cannot describe."""
    from probkit._io import fingerprint

    try:
        return fingerprint(obj)
    except (TypeError, ValueError):
        return None


def minimize(objective: Callable, bounds, budget: int, n_init: int | None = None, *,
             surrogate=None, acquisition=None, key, batch_size: int = 1,
             progress_bar: bool = True, acq_options: dict | None = None,
             callback: Callable | None = None) -> OptimizeResult:
    """Minimise ``objective`` over the box ``bounds`` with ``budget`` evaluations.

    Parameters
    ----------
    objective : callable
        ``objective(x) -> float`` for ``x`` of shape ``(d,)``.
    bounds : array_like (d, 2)
        Box; ``lower < upper`` in every dimension.
    budget : int
        Total evaluations (initial design included); must be >= ``n_init``.
    n_init : int, optional
        Initial Sobol design size (default ``2 d + 1``).
    surrogate, acquisition, batch_size, progress_bar, acq_options, callback
        See :class:`BayesOpt` and :meth:`BayesOpt.minimize`.
    key : jax.Array
        PRNG key.

    Returns
    -------
    OptimizeResult
    """
    opt = BayesOpt(bounds, n_init=n_init, surrogate=surrogate, acquisition=acquisition, key=key,
                   acq_options=acq_options, progress_bar=progress_bar)
    budget = check_positive_int("budget", budget)
    if budget < opt.n_init:
        raise ValueError(f"budget: must be >= n_init={opt.n_init}, got {budget}")
    return opt.minimize(objective, budget, batch_size=batch_size, callback=callback)


def best_so_far(values) -> np.ndarray:
    """Running minimum of ``values``, ignoring NaN/inf (NaN until the first finite value)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.inf)
    out = np.minimum.accumulate(v)
    return np.where(np.isfinite(out), out, np.nan)


def plot_convergence(runs, *, optimum: float | None = None, ax=None, label: str | None = None,
                     **plot_kwargs):
    """Plot best-so-far value (or log10 simple regret when ``optimum`` is given) vs evaluations.

    ``runs`` is a :class:`BayesOpt`, an :class:`OptimizeResult`, a 1-D array of values, or a list
    of these (median and interquartile band over runs). Needs matplotlib (the ``plot`` extra).
    Returns the matplotlib ``Axes``.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_convergence needs matplotlib: pip install 'probkit[plot]'") from err

    def values(run):
        if isinstance(run, OptimizeResult):
            run = run.optimizer
        if isinstance(run, BayesOpt):
            return run.y
        return np.asarray(run, dtype=np.float64).reshape(-1)

    many = isinstance(runs, Sequence) and not isinstance(runs, np.ndarray) and (
        len(runs) > 0 and not np.isscalar(runs[0]))
    curves = [best_so_far(values(r)) for r in (runs if many else [runs])]
    n = min(len(c) for c in curves)
    c = np.stack([c[:n] for c in curves])
    if optimum is not None:
        c = np.log10(np.maximum(c - optimum, 1e-12))
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    t = np.arange(1, n + 1)
    med = np.nanmedian(c, axis=0)
    line, = ax.plot(t, med, label=label, **plot_kwargs)
    if c.shape[0] > 1:
        lo, hi = np.nanpercentile(c, [25, 75], axis=0)
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("log10 simple regret" if optimum is not None else "best value")
    return ax
