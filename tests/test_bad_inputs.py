"""API-wide bad-input sweep over the engine and utility entry points.

One parametrisation over (entry point, bad input, argument): NaN, inf, wrong shapes, empty
arrays, non-positive scales, unsorted or duplicated time stamps, wrong key types (an int, a
float array, an array of keys: ``probkit._checks.check_key`` accepts one typed key or one raw
``uint32[2]`` key) and non-callables. Each call must raise a ``ValueError`` whose message starts
with the argument's name, and must do so before compiling a real program (the compilation
time spent in the call is measured and bounded). The model families' ``fit``/``predict`` are
swept in ``tests/test_contract.py`` and the kernels in ``tests/test_kernels.py``; neither is
repeated here, and most cases the engines' own test modules check are left out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import probkit
from probkit import bo
from probkit.distributions import StateSpaceGP
from probkit.inference import hmc, optimize, sgmcmc
from probkit.inference.ep import ep_statespace_gp
from probkit.inference.kalman import (
    gp_posterior,
    kalman_filter,
    log_marginal_likelihood,
    rts_smoother,
)
from probkit.inference.pfn import init, load_pretrained, train
from probkit.kernels import RBF, Matern32
from probkit.priors import GPPrior, NumPyroPrior
from probkit.statespace import LGSSM, discretise, matern_sde, to_lgssm
from tests.compiles import count_compiles

KEY = jax.random.key(0)
KEYS = jax.random.split(jax.random.key(0), 2)  # an array of keys where one key is documented
T = np.linspace(0.0, 1.0, 6)
Y = np.sin(3.0 * T)
LABELS = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
KERNEL = Matern32(0.3, 1.0)
NAN, INF = np.nan, np.inf

#: A refused call may still compile a few eager one-op programs (key splits, conversions, a
#: model trace); a compiled filter, EP loop or sampler takes seconds.
MAX_COMPILE_SECONDS = 1.0


def _with(arr, index, value):
    """A float copy of ``arr`` with ``arr[index] = value``."""
    out = np.array(arr, dtype=float)
    out[index] = value
    return out


@functools.cache
def _params() -> LGSSM:
    return to_lgssm(KERNEL, T, 0.1)


def _lgssm(**changes) -> LGSSM:
    return _params()._replace(**changes)


def _ssgp() -> StateSpaceGP:
    return StateSpaceGP(KERNEL, T, 0.1)


def _normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _regression(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("rows", x.shape[0]):
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def _line(x):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(w * x[:, 0], 0.1))


def _hmc(**kwargs):
    settings = {"y": np.zeros(4), "key": KEY, "num_warmup": 2, "num_samples": 2,
                "num_chains": 1, "progress_bar": False, **kwargs}
    model = settings.pop("model", _normal_mean)
    return hmc.run(model, **settings)


def _sgmcmc(*data, **kwargs):
    data = data or (np.ones(5), np.zeros(5))
    settings = {"key": KEY, "batch_size": 2, "num_warmup": 2, "num_samples": 2,
                "num_chains": 1, "progress_bar": False, **kwargs}
    return sgmcmc.run(_regression, *data, **settings)


def _quadratic(theta, key):
    return jnp.sum(theta**2)


def _optimize(**kwargs):
    settings = {"params": jnp.zeros(2), "num_steps": 2, "progress_bar": False, **kwargs}
    return optimize.run(settings.pop("loss", _quadratic), settings.pop("params"), **settings)


@functools.cache
def _pfn():
    return load_pretrained("gp1d-hyper")


def _pfn_train(**kwargs):
    settings = {"key": KEY, "num_steps": 2, "progress_bar": False, **kwargs}
    return train(_pfn(), settings.pop("prior", GPPrior("rbf")), **settings)


def _pfn_init(**kwargs):
    settings = {"key": KEY, "max_points": 8, "num_buckets": 10, "emsize": 16, "num_layers": 1,
                "num_heads": 2, "num_border_datasets": 10, **kwargs}
    return init(settings.pop("prior", GPPrior("rbf")), **settings)


XT, YT, XQ = np.linspace(0.1, 0.9, 4)[:, None], np.zeros(4), np.array([[0.5]])


def _opt() -> bo.BayesOpt:
    return bo.BayesOpt([[0.0, 1.0], [0.0, 1.0]], n_init=3, key=KEY, progress_bar=False)


class _Flat:
    """A stand-in fitted surrogate: its posterior is never reached by a refused call."""

    def posterior(self, x):  # pragma: no cover - the calls below are refused first
        raise AssertionError("optimize_acquisition reached the surrogate")


def _acq(**kwargs):
    settings = {"acquisition": bo.LogEI(), "fitted": _Flat(), "best": 0.0,
                "x_best": np.array([0.5, 0.5]), "key": KEY, **kwargs}
    return bo.optimize_acquisition(settings.pop("acquisition"), settings.pop("fitted"),
                                   settings.pop("best"), settings.pop("x_best"), **settings)


def _minimize(budget=5, **kwargs):
    return bo.minimize(kwargs.pop("objective", bo.forrester()), [[0.0, 1.0]], budget,
                       key=KEY, progress_bar=False, **kwargs)


# (id, call, argument named at the start of the message)
CASES = [
    # --- probkit.inference.kalman.gp_posterior
    ("gp_posterior-times-empty", lambda: gp_posterior(KERNEL, [], [], 0.1), "times"),
    ("gp_posterior-times-2d", lambda: gp_posterior(KERNEL, T[:, None], Y, 0.1), "times"),
    ("gp_posterior-y-inf", lambda: gp_posterior(KERNEL, T, _with(Y, 0, INF), 0.1), "y"),
    ("gp_posterior-noise-shape", lambda: gp_posterior(KERNEL, T, Y, np.ones(3)), "noise"),
    ("gp_posterior-test_times-inf",
     lambda: gp_posterior(KERNEL, T, Y, 0.1, test_times=[0.5, INF]), "test_times"),
    ("gp_posterior-kernel-rbf", lambda: gp_posterior(RBF(0.3), T, Y, 0.1), "kernel"),
    # --- kalman_filter / rts_smoother / log_marginal_likelihood on LGSSM parameters
    ("kalman_filter-params-tuple", lambda: kalman_filter(tuple(_params()), Y), "params"),
    ("kalman_filter-emissions-inf", lambda: kalman_filter(_params(), _with(Y, 3, INF)),
     "emissions"),
    ("kalman_filter-emissions-empty", lambda: kalman_filter(_params(), np.zeros((0, 1))),
     "emissions"),
    ("kalman_filter-emissions-strings", lambda: kalman_filter(_params(), ["a"] * 6),
     "emissions"),
    ("kalman_filter-initial_cov-nan",
     lambda: kalman_filter(_lgssm(initial_cov=jnp.full((2, 2), jnp.nan)), Y),
     "params.initial_cov"),
    ("kalman_filter-initial_cov-negative",
     lambda: kalman_filter(_lgssm(initial_cov=-jnp.eye(2)), Y), "params.initial_cov"),
    ("kalman_filter-emission_cov-negative",
     lambda: kalman_filter(_lgssm(emission_cov=-jnp.ones((1, 1))), Y), "params.emission_cov"),
    ("kalman_filter-transition_matrix-inf",
     lambda: kalman_filter(_lgssm(transition_matrix=jnp.full((2, 2), jnp.inf)), Y),
     "params.transition_matrix"),
    ("rts_smoother-emissions-inf", lambda: rts_smoother(_params(), _with(Y, 0, -INF)),
     "emissions"),
    ("rts_smoother-emission_cov-negative",
     lambda: rts_smoother(_lgssm(emission_cov=-0.1 * jnp.ones((6, 1, 1))), Y),
     "params.emission_cov"),
    ("log_marginal_likelihood-batch-inf",
     lambda: log_marginal_likelihood(_params(), _with(np.zeros((2, 6, 1)), (1, 2, 0), INF)),
     "emissions"),
    ("log_marginal_likelihood-transition_cov-nan",
     lambda: log_marginal_likelihood(_lgssm(transition_cov=jnp.full((6, 2, 2), jnp.nan)), Y),
     "params.transition_cov"),
    # --- probkit.distributions.StateSpaceGP
    ("StateSpaceGP-times-2d", lambda: StateSpaceGP(KERNEL, T[None, :], 0.1), "times"),
    ("StateSpaceGP-times-duplicate", lambda: StateSpaceGP(KERNEL, _with(T, 3, T[2]), 0.1),
     "times"),
    ("StateSpaceGP-noise-zero", lambda: StateSpaceGP(KERNEL, T, 0.0), "noise"),
    ("StateSpaceGP-noise-nan", lambda: StateSpaceGP(KERNEL, T, _with(np.ones(6), 1, NAN)),
     "noise"),
    ("StateSpaceGP-kernel-rbf", lambda: StateSpaceGP(RBF(0.3), T, 0.1), "kernel"),
    ("StateSpaceGP.log_prob-scalar", lambda: _ssgp().log_prob(0.0), "value"),
    ("StateSpaceGP.log_prob-strings", lambda: _ssgp().log_prob(["a"] * 6), "value"),
    ("StateSpaceGP.sample-int-key", lambda: _ssgp().sample(0), "key"),
    ("StateSpaceGP.sample-key-array", lambda: _ssgp().sample(KEYS), "key"),
    # --- probkit.statespace
    ("discretise-times-unsorted", lambda: discretise(KERNEL, [0.0, 2.0, 1.0]), "times"),
    ("discretise-times-empty", lambda: discretise(KERNEL, []), "times"),
    ("discretise-times-nan", lambda: discretise(KERNEL, [0.0, NAN, 1.0]), "times"),
    ("discretise-times-2d", lambda: discretise(KERNEL, T[:, None]), "times"),
    ("discretise-kernel-rbf", lambda: discretise(RBF(0.3), T), "kernel"),
    ("to_lgssm-times-empty", lambda: to_lgssm(KERNEL, [], 0.1), "times"),
    ("matern_sde-lengthscale-zero", lambda: matern_sde(1.5, 0.0, 1.0), "lengthscale"),
    ("matern_sde-lengthscale-negative", lambda: matern_sde(2.5, -1.0, 1.0), "lengthscale"),
    ("matern_sde-lengthscale-vector", lambda: matern_sde(1.5, [1.0, 2.0], 1.0), "lengthscale"),
    ("matern_sde-variance-nan", lambda: matern_sde(0.5, 1.0, NAN), "variance"),
    # --- probkit.inference.ep.ep_statespace_gp
    ("ep-y-length", lambda: ep_statespace_gp(KERNEL, T, LABELS[:3]), "y"),
    ("ep-y-inf", lambda: ep_statespace_gp(KERNEL, T, _with(LABELS, 0, INF)), "y"),
    ("ep-y-poisson-negative", lambda: ep_statespace_gp(KERNEL, T, -LABELS, "poisson"), "y"),
    ("ep-damping-nan", lambda: ep_statespace_gp(KERNEL, T, LABELS, damping=NAN), "damping"),
    ("ep-power-above-one", lambda: ep_statespace_gp(KERNEL, T, LABELS, power=1.5), "power"),
    ("ep-max_iter-float", lambda: ep_statespace_gp(KERNEL, T, LABELS, max_iter=2.5),
     "max_iter"),
    ("ep-test_times-nan", lambda: ep_statespace_gp(KERNEL, T, LABELS, test_times=[NAN]),
     "test_times"),
    ("ep-damping-string", lambda: ep_statespace_gp(KERNEL, T, LABELS, damping="0.5"),
     "damping"),
    ("ep-power-array", lambda: ep_statespace_gp(KERNEL, T, LABELS, power=np.ones(2)), "power"),
    # --- probkit.inference.hmc.run
    ("hmc-key-float-array", lambda: _hmc(key=np.zeros(2)), "key"),
    ("hmc-key-array-of-keys", lambda: _hmc(key=KEYS), "key"),
    ("hmc-num_warmup-float", lambda: _hmc(num_warmup=1.5), "num_warmup"),
    ("hmc-num_chains-string", lambda: _hmc(num_chains="2"), "num_chains"),
    ("hmc-thinning-above-num_samples", lambda: _hmc(thinning=5), "thinning"),
    ("hmc-max_tree_depth-zero", lambda: _hmc(max_tree_depth=0), "max_tree_depth"),
    ("hmc-target_accept-nan", lambda: _hmc(target_accept=NAN), "target_accept"),
    ("hmc-empty-observed-site", lambda: _hmc(y=np.zeros(0)), "observed site 'y'"),
    ("hmc-init_strategy-not-callable", lambda: _hmc(init_strategy="median"), "init_strategy"),
    ("hmc-model-not-callable", lambda: _hmc(model=3), "model"),
    ("hmc-sampler-unknown", lambda: _hmc(sampler="nutpie"), "sampler"),
    ("hmc-max_tree_depth-for-mams", lambda: _hmc(sampler="mams", max_tree_depth=5),
     "max_tree_depth"),
    ("hmc-target_accept-for-mclmc", lambda: _hmc(sampler="mclmc", target_accept=0.9),
     "target_accept"),
    ("hmc-dense_mass-for-mclmc", lambda: _hmc(sampler="mclmc", dense_mass=True), "dense_mass"),
    ("hmc-num_integration_steps-zero", lambda: _hmc(sampler="hmc", num_integration_steps=0),
     "num_integration_steps"),
    ("hmc-desired_energy_var-negative", lambda: _hmc(sampler="mclmc", desired_energy_var=-1.0),
     "desired_energy_var"),
    ("hmc-mclmc-scalar-latent", lambda: _hmc(sampler="mclmc"), "sampler"),
    ("hmc-mams-scalar-latent", lambda: _hmc(sampler="mams"), "sampler"),
    ("hmc-kernel-sampler-unknown", lambda: hmc.BlackJAXKernel(_normal_mean, sampler="mala"),
     "sampler"),
    ("hmc-pathfinder-not-bool", lambda: _hmc(pathfinder="yes"), "pathfinder"),
    # --- probkit.enable_compilation_cache
    ("cache-min_compile_time-negative",
     lambda: probkit.enable_compilation_cache(min_compile_time_secs=-1.0),
     "min_compile_time_secs"),
    ("cache-path-is-a-file", lambda: probkit.enable_compilation_cache(__file__), "path"),
    # --- probkit.inference.sgmcmc.run
    ("sgmcmc-batch_size-float", lambda: _sgmcmc(batch_size=2.0), "batch_size"),
    ("sgmcmc-data-lengths", lambda: _sgmcmc(np.ones(5), np.zeros(3)), "data"),
    ("sgmcmc-data-empty", lambda: _sgmcmc(np.ones(0), np.zeros(0)), "data"),
    ("sgmcmc-data-nan", lambda: _sgmcmc(np.ones(5), _with(np.zeros(5), 1, NAN)), r"data\[1\]"),
    ("sgmcmc-data-inf", lambda: _sgmcmc(_with(np.ones(5), 0, INF), np.zeros(5)), r"data\[0\]"),
    ("sgmcmc-key-array-of-keys", lambda: _sgmcmc(key=KEYS), "key"),
    ("sgmcmc-step_size-nan", lambda: _sgmcmc(step_size=NAN), "step_size"),
    ("sgmcmc-mdecay-negative", lambda: _sgmcmc(mdecay=-0.1), "mdecay"),
    ("sgmcmc-init_strategy-not-callable", lambda: _sgmcmc(init_strategy=None), "init_strategy"),
    # --- probkit.inference.optimize
    ("optimize-num_steps-zero", lambda: _optimize(num_steps=0), "num_steps"),
    ("optimize-steps-and-budget", lambda: _optimize(time_budget=1.0), "num_steps"),
    ("optimize-time_budget-inf", lambda: _optimize(num_steps=None, time_budget=INF),
     "time_budget"),
    ("optimize-learning_rate-zero", lambda: _optimize(learning_rate=0.0), "learning_rate"),
    ("optimize-learning_rate-nan", lambda: _optimize(learning_rate=NAN), "learning_rate"),
    ("optimize-key-int", lambda: _optimize(key=0), "key"),
    ("optimize-key-array-of-keys", lambda: _optimize(key=KEYS), "key"),
    ("optimize-loss-not-callable", lambda: _optimize(loss="mse"), "loss"),
    ("optimize-params-none", lambda: _optimize(params=None), "params"),
    ("optimize-params-nan", lambda: _optimize(params=jnp.array([0.0, jnp.nan])), "params"),
    ("optimize-steps_per_dispatch-zero", lambda: _optimize(steps_per_dispatch=0),
     "steps_per_dispatch"),
    ("WarmupCosine-warmup_fraction", lambda: optimize.WarmupCosine(1e-3, warmup_fraction=2.0),
     "warmup_fraction"),
    ("WarmupCosine-final_fraction", lambda: optimize.WarmupCosine(1e-3, final_fraction=-1.0),
     "final_fraction"),
    # --- probkit.inference.pfn (beyond tests/inference/test_pfn.py)
    ("PFN.predict-y_train-2d", lambda: _pfn().predict(XT, YT[:, None], XQ), "y_train"),
    ("PFN.predict-x_train-3d", lambda: _pfn().predict(XT[None], YT, XQ), "x_train"),
    ("PFN.predict-x_test-3d", lambda: _pfn().predict(XT, YT, XQ[None]), "x_test"),
    ("PFN.predict-x_test-empty", lambda: _pfn().predict(XT, YT, np.zeros((0, 1))), "x_test"),
    ("PFN.condition-y_train-inf", lambda: _pfn().condition(XT, _with(YT, 0, INF)), "y_train"),
    ("PFN.condition-lengths", lambda: _pfn().condition(XT, YT[:2]), "x_train"),
    ("pfn.train-batch_size-zero", lambda: _pfn_train(batch_size=0), "batch_size"),
    ("pfn.train-warmup_steps-zero", lambda: _pfn_train(warmup_steps=0), "warmup_steps"),
    ("pfn.train-key-int", lambda: _pfn_train(key=0), "key"),
    ("pfn.train-time_budget-negative", lambda: _pfn_train(num_steps=None, time_budget=-1.0),
     "time_budget"),
    ("pfn.train-learning_rate-zero", lambda: _pfn_train(learning_rate=0.0), "learning_rate"),
    ("pfn.train-prior-string", lambda: _pfn_train(prior="gp"), "prior"),
    ("pfn.init-prior-string", lambda: _pfn_init(prior="gp"), "prior"),
    ("pfn.init-emsize-zero", lambda: _pfn_init(emsize=0), "emsize"),
    ("pfn.init-num_layers-zero", lambda: _pfn_init(num_layers=0), "num_layers"),
    ("pfn.init-num_heads-zero", lambda: _pfn_init(num_heads=0), "num_heads"),
    ("pfn.init-num_heads-not-dividing", lambda: _pfn_init(num_heads=3), "num_heads"),
    ("pfn.init-ff_factor-zero", lambda: _pfn_init(ff_factor=0), "ff_factor"),
    ("pfn.init-max_input_dim-zero", lambda: _pfn_init(max_input_dim=0), "max_input_dim"),
    # --- probkit.priors
    ("GPPrior-lengthscale-list", lambda: GPPrior("rbf", lengthscale=[0.1, 0.2]),
     "lengthscale"),
    ("GPPrior-lengthscale-real-support",
     lambda: GPPrior("rbf", lengthscale=dist.Normal(0.0, 1.0)), "lengthscale"),
    ("NumPyroPrior-bounds-strings", lambda: NumPyroPrior(_line, bounds=("a", "b")), "bounds"),
    ("GPPrior.sample-key-int", lambda: GPPrior("rbf").sample(0, 2, 3), "key"),
    ("GPPrior.sample-num_points-zero", lambda: GPPrior("rbf").sample(KEY, 2, 0), "num_points"),
    ("GPPrior.sample_at-x-2d", lambda: GPPrior("rbf").sample_at(KEY, np.zeros((3, 1))), "x"),
    ("GPPrior.sample_at-x-dimension",
     lambda: GPPrior("rbf").sample_at(KEY, np.zeros((2, 3, 2))), "x"),
    ("GPPrior.sample_at-x-nan",
     lambda: GPPrior("rbf").sample_at(KEY, np.full((2, 3, 1), NAN)), "x"),
    ("GPPrior.predictive-lengths",
     lambda: GPPrior("rbf").predictive(XT, YT[:3], XQ), "x_train, y_train"),
    ("GPPrior.predictive-x_test-nan",
     lambda: GPPrior("rbf").predictive(XT, YT, np.array([[NAN]])), "x_test"),
    # --- probkit.bo
    ("BayesOpt-bounds-nan", lambda: bo.BayesOpt([[0.0, NAN]], key=KEY), "bounds"),
    ("BayesOpt-n_init-zero", lambda: bo.BayesOpt([[0.0, 1.0]], n_init=0, key=KEY), "n_init"),
    ("BayesOpt-key-int", lambda: bo.BayesOpt([[0.0, 1.0]], key=0), "key"),
    ("BayesOpt-key-array-of-keys", lambda: bo.BayesOpt([[0.0, 1.0]], key=KEYS), "key"),
    ("BayesOpt-acquisition-string",
     lambda: bo.BayesOpt([[0.0, 1.0]], key=KEY, acquisition="ei"), "acquisition"),
    ("BayesOpt-acq_options-unknown", lambda: bo.BayesOpt([[0.0, 1.0]], key=KEY,
                                                         acq_options={"foo": 1}), "acq_options"),
    ("BayesOpt-acq_options-num_raw-zero", lambda: bo.BayesOpt([[0.0, 1.0]], key=KEY,
                                                             acq_options={"num_raw": 0}),
     "acq_options\\['num_raw'\\]"),
    ("BayesOpt.ask-zero", lambda: _opt().ask(0), "n"),
    ("BayesOpt.tell-values-2d", lambda: _opt().tell([[0.5, 0.5]], [[1.0]]), "values"),
    ("minimize-budget-zero", lambda: _minimize(0), "budget"),
    ("minimize-objective", lambda: _minimize(objective="forrester"), "objective"),
    ("UCB-beta-zero", lambda: bo.UCB(beta=0.0), "beta"),
    ("QUCB-beta-negative", lambda: bo.QUCB(beta=-1.0), "beta"),
    ("QUCB-num_samples-zero", lambda: bo.QUCB(num_samples=0), "num_samples"),
    ("QLogEI-tau_max-zero", lambda: bo.QLogEI(tau_max=0.0), "tau_max"),
    ("Thompson-num_candidates-zero", lambda: bo.Thompson(num_candidates=0), "num_candidates"),
    ("optimize_acquisition-acquisition", lambda: _acq(acquisition="logei"), "acquisition"),
    ("optimize_acquisition-fitted", lambda: _acq(fitted=None), "fitted"),
    ("optimize_acquisition-best-nan", lambda: _acq(best=NAN), "best"),
    ("optimize_acquisition-x_best-outside", lambda: _acq(x_best=np.array([0.5, 1.5])),
     "x_best"),
    ("optimize_acquisition-key-int", lambda: _acq(key=0), "key"),
    ("optimize_acquisition-q-zero", lambda: _acq(q=0), "q"),
    ("optimize_acquisition-num_raw-zero", lambda: _acq(num_raw=0), "num_raw"),
    ("optimize_acquisition-lr-zero", lambda: _acq(lr=0.0), "lr"),
    ("Problem-x-nan", lambda: bo.branin()(np.array([NAN, 1.0])), "x"),
]


@pytest.fixture(scope="module", autouse=True)
def _valid_inputs_built():
    """Build the valid inputs the cases start from (and run the eager ops of one model trace)
    before any compile time is counted."""
    _params(), _pfn()
    jax.random.split(KEY, 3)
    numpyro.handlers.trace(numpyro.handlers.seed(_normal_mean, KEY)).get_trace(y=np.zeros(4))


def _param(case):
    name, call, arg = case
    return pytest.param(call, arg, id=name)


@pytest.mark.parametrize("call, argument", [_param(c) for c in CASES])
def test_bad_input_raises_a_value_error_naming_the_argument(call, argument):
    with count_compiles() as compiles, pytest.raises(ValueError, match=rf"^{argument}(?!\w)"):
        call()
    assert sum(compiles) < MAX_COMPILE_SECONDS, (
        f"{sum(compiles):.2f} s of compilation before the input was refused")
