"""Refit time against the gradient-evaluation floor (issue 18), on the model set of
``benchmarks/samplers.py``.

The floor of a gradient-based sampler is the number of gradient evaluations it made times the
time of one gradient of the model's log density: the cost with every other piece of work
(tree building, adaptation, draws written, momentum resampling) taken away. Measured here:

* ``refit``: one :func:`probkit.inference.hmc.run` (4 chains x (1000 + 1000), compiled by an
  untimed first call with another key), wall seconds;
* ``n_grad``: the gradient evaluations of that run, warm-up included
  (``sample_stats["n_grad"]`` summed plus ``attrs["warmup_n_grad"]``);
* ``t_grad``: seconds per gradient of the log density on unconstrained positions inside one
  compiled loop of 2,000 evaluations (no Python dispatch per call);
* ``ratio = refit / (n_grad x t_grad)``; the issue's target is <= 3.

Gradient loop and refits are interleaved (``--repeats`` rounds of: gradient loop, then one
refit per sampler with that round's key) and each is reported as its median.

    python benchmarks/refit_floor.py                       # results/refit_floor.json
    python benchmarks/refit_floor.py --models eight_schools_noncentred --samplers nuts mams
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import row, write_results
from numpyro.infer.util import initialize_model
from samplers import model_set

from probkit.inference import hmc

LOOP = 2000


def gradient_loop(model, args, kwargs):
    """A timer: seconds per gradient evaluation inside a compiled scan of ``LOOP`` of them."""
    info = initialize_model(jax.random.key(0), model, model_args=args, model_kwargs=kwargs)
    logdensity = hmc.model_logdensity(model, args, kwargs)
    grad = jax.grad(logdensity)

    @jax.jit
    def loop(p):
        def body(q, _):  # the tiny step keeps each gradient dependent on the last
            g = grad(q)
            return jax.tree.map(lambda a, b: a + 1e-12 * b, q, g), None

        return jax.lax.scan(body, p, None, length=LOOP)[0]

    p0 = info.param_info.z
    jax.block_until_ready(loop(p0))

    def timer() -> float:
        t = time.perf_counter()
        jax.block_until_ready(loop(p0))
        return (time.perf_counter() - t) / LOOP

    return timer


def refit(model, args, kwargs, sampler, dense, warmup, draws, key) -> tuple[float, float]:
    """(wall seconds, gradient evaluations) of one call of a compiled program."""
    opts = dict(sampler=sampler, num_warmup=warmup, num_samples=draws, num_chains=4,
                progress_bar=False, log_likelihood=False, dense_mass=dense)
    t = time.perf_counter()
    res = hmc.run(model, *args, key=key, **opts, **kwargs)
    jax.block_until_ready(jnp.asarray(res.sample_stats["n_grad"]))
    secs = time.perf_counter() - t
    return secs, float(np.sum(res.sample_stats["n_grad"])) + res.attrs["warmup_n_grad"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--samplers", nargs="*", default=["nuts", "mams"])
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    rows, summary = [], {}
    for name, (model, args, kwargs, _) in model_set().items():
        if opts.models and name not in opts.models:
            continue
        timer = gradient_loop(model, args, kwargs)
        samplers = list(opts.samplers)
        if name == "gaussian50_cond1e4" and "nuts" in samplers:
            samplers.insert(samplers.index("nuts") + 1, "nuts-dense")
        jobs = {m: (model, args, kwargs, m.removesuffix("-dense"), m.endswith("-dense"),
                    opts.warmup, opts.draws) for m in samplers}
        for job in jobs.values():  # compile
            refit(*job, jax.random.key(0))
        grads, runs = [], {m: [] for m in samplers}
        for r in range(opts.repeats):
            grads.append(timer())
            for m, job in jobs.items():
                runs[m].append(refit(*job, jax.random.key(r + 1)))
        t_grad = statistics.median(grads)
        for method in samplers:
            secs = statistics.median(s for s, _ in runs[method])
            n_grad = statistics.median(g for _, g in runs[method])
            floor = n_grad * t_grad
            vals = {"refit_seconds": secs, "grad_evals": n_grad, "seconds_per_grad": t_grad,
                    "floor_seconds": floor, "refit_over_floor": secs / floor}
            setting = f"chains=4,warmup={opts.warmup},draws={opts.draws}"
            rows += [row(name, f"probkit-{method}", setting, k, v, seconds=secs)
                     for k, v in vals.items()]
            summary.setdefault(name, {})[method] = vals
            print(f"{name:26s} {method:10s} refit {secs:7.2f} s  grads {n_grad:10.0f}  "
                  f"t_grad {t_grad * 1e6:8.2f} us  floor {floor:7.2f} s  "
                  f"ratio {secs / floor:5.2f}", flush=True)
        write_results("refit_floor", rows, summary=summary)


if __name__ == "__main__":
    main()
