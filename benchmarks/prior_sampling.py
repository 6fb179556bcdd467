"""Hyperprior draws inside the compiled PFN step: loop-free Gamma vs the rejection loop (issue 19).

For the shipped PFN priors (``probkit.inference.pfn.pretrained.prior``): the seconds of one
jitted ``prior.sample(key, 128, max_points)`` (a training batch), with the hyperpriors drawn by
:func:`probkit.draws.sample` (fixed proposal rounds, the default) and by NumPyro's own
``Distribution.sample`` (``jax.random.gamma``'s rejection loop, as before issue 19), calls
interleaved, median of ``--repeats``; and the PFN training steps per second of the shipped
network size (128 wide, 4 layers, batch 128) with each (steps 25 -> 25 + ``--steps``, compile
excluded).

    python benchmarks/prior_sampling.py              # results/prior_sampling.json
    python benchmarks/prior_sampling.py --steps 0    # sampling only
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import types

import jax
from _common import row, write_results
from pfn_train import SETTINGS

from probkit import priors
from probkit.inference.pfn import init, train
from probkit.inference.pfn.pretrained import prior as shipped_prior

NAMES = ("gp1d-rbf", "gp1d-hyper", "gp-bo")


@contextlib.contextmanager
def rejection_sampling():
    """Hyperpriors drawn by NumPyro's ``sample`` (the rejection loop) inside the block."""
    loop_free = priors.draws
    priors.draws = types.SimpleNamespace(sample=lambda d, key, shape: d.sample(key, shape),
                                         student_t=loop_free.student_t)
    try:
        yield
    finally:
        priors.draws = loop_free


def batch_timer(name: str):
    prior = shipped_prior(name)  # a new object: its own compiled sampler
    points = SETTINGS[name]["max_points"]
    jax.block_until_ready(prior.sample(jax.random.key(0), 128, points).y)

    def timer(i: int) -> float:
        t = time.perf_counter()
        jax.block_until_ready(prior.sample(jax.random.key(i), 128, points).y)
        return time.perf_counter() - t

    return timer


def steps_per_second(name: str, steps: int) -> float:
    cfg = SETTINGS[name]
    prior = shipped_prior(name)
    pfn = init(prior, key=jax.random.key(0), max_points=cfg["max_points"],
               num_buckets=cfg["num_buckets"], emsize=cfg["emsize"],
               num_layers=cfg["num_layers"], num_heads=cfg["num_heads"],
               standardize_y=cfg["standardize_y"], num_border_datasets=2000)
    opts = dict(key=jax.random.key(1), batch_size=cfg["batch_size"], learning_rate=cfg["lr"],
                vary_input_dim=cfg["vary_input_dim"], steps_per_dispatch=25, progress_bar=False)
    train(pfn, prior, num_steps=25, **opts)  # compile
    t = time.perf_counter()
    train(pfn, prior, num_steps=25 + steps, **opts)
    total = time.perf_counter() - t
    t = time.perf_counter()
    train(pfn, prior, num_steps=25, **opts)
    return steps / (total - (time.perf_counter() - t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    opts = parser.parse_args()
    rows, summary = [], {}
    for name in NAMES:
        loop_free = batch_timer(name)
        with rejection_sampling():
            rejection = batch_timer(name)
        times = {"loop-free": [], "rejection": []}
        for i in range(opts.repeats):
            times["loop-free"].append(loop_free(i + 1))
            with rejection_sampling():
                times["rejection"].append(rejection(i + 1))
        for method, ts in times.items():
            med = statistics.median(ts)
            rows.append(row(name, method, "batch 128", "sample seconds (median)", med))
            summary.setdefault(name, {})[f"{method} batch s"] = med
        if opts.steps and name != "gp1d-rbf":
            fast = steps_per_second(name, opts.steps)
            with rejection_sampling():
                slow = steps_per_second(name, opts.steps)
            rows += [row(name, "loop-free", "PFN 128x4, batch 128", "steps/s", fast),
                     row(name, "rejection", "PFN 128x4, batch 128", "steps/s", slow)]
            summary[name].update({"loop-free steps/s": fast, "rejection steps/s": slow})
        print(name, {k: round(v, 4) for k, v in summary[name].items()}, flush=True)
        write_results("prior_sampling", rows, summary=summary)


if __name__ == "__main__":
    main()
