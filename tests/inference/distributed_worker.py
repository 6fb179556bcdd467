"""One process of the multi-process checks in ``test_distributed.py`` (run as a script).

``python -m tests.inference.distributed_worker OUT PROCESS_ID NUM_PROCESSES PORT`` joins a run of
``NUM_PROCESSES`` processes on ``127.0.0.1:PORT``; ``PROCESS_ID`` ``-1`` runs alone (the
single-process reference). Either way the same small jobs run with the same keys, and their
results go to ``OUT/result<PROCESS_ID>.npz``:

* NUTS on a 1-D normal mean, 2 chains x 50 warm-up x 50 draws, ``chain_method="parallel"``;
* a tiny PFN trained 10 steps with a checkpoint, and (not alone) the same run interrupted after
  its first checkpoint (at step 5; every process stops there) and resumed, and a run for a
  time budget of 2 s;
* a tiny CNP (neural process) trained 4 steps.
"""

from __future__ import annotations

import pathlib
import sys

PFN_KW = dict(num_steps=10, batch_size=8, steps_per_dispatch=5, checkpoint_every=5,
              progress_bar=False)


def model(y=None):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _leaves(tree):
    import equinox as eqx
    import jax

    return [jax.numpy.asarray(v) for v in jax.tree_util.tree_leaves(
        eqx.filter(tree, eqx.is_inexact_array))]


def _hmc(out: dict) -> None:
    import jax
    import jax.numpy as jnp

    from probkit.inference import hmc
    from probkit.result import group_names

    kw = dict(y=jnp.array([0.5, 1.5, 0.8]), key=jax.random.key(3), num_warmup=50,
              num_samples=50, num_chains=2, progress_bar=False)
    res = hmc.run(model, chain_method="parallel", **kw)
    idata = res.to_arviz()
    assert "posterior" in group_names(idata)
    out["hmc_mu"] = res.posterior["mu"]
    out["hmc_lp"] = res.sample_stats["lp"]
    out["hmc_step_size"] = res.sample_stats["step_size"]
    out["hmc_loglik"] = res.log_likelihood["y"]
    out["hmc_arviz_chains"] = idata["posterior"].sizes["chain"]
    out["hmc_num_devices"] = res.attrs["num_devices"]


def _pfn(out: dict, tmp: pathlib.Path, resume: bool) -> None:
    import jax
    import numpy as np

    from probkit.inference import optimize
    from probkit.inference.pfn import train
    from probkit.inference.pfn.model import PFNConfig, build
    from probkit.priors import GPPrior

    prior = GPPrior("rbf", lengthscale=0.3, noise=0.05)
    config = PFNConfig(max_points=10, max_input_dim=1, num_buckets=20, emsize=16, num_layers=1,
                       num_heads=2)  # fixed borders: no prior draws before training
    pfn = build(config, np.linspace(-3.0, 3.0, 21), key=jax.random.key(0))
    fresh = train(pfn, prior, key=jax.random.key(1), checkpoint=tmp / "fresh.pk", **PFN_KW)
    out["pfn_losses"] = fresh.losses
    for i, leaf in enumerate(_leaves(fresh.pfn)):
        out[f"pfn_leaf{i}"] = leaf
    if not resume:
        return

    class Interrupted(Exception):
        pass

    real, calls = optimize._chunk, []

    def interrupt_at_second_dispatch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real(*args, **kwargs)

    optimize._chunk = interrupt_at_second_dispatch
    try:
        train(pfn, prior, key=jax.random.key(1), checkpoint=tmp / "resume.pk", **PFN_KW)
        raise AssertionError("the patched run was not interrupted")
    except Interrupted:
        pass
    finally:
        optimize._chunk = real
    resumed = train(pfn, prior, key=jax.random.key(1), checkpoint=tmp / "resume.pk", **PFN_KW)
    out["pfn_resumed_steps"] = resumed.steps
    out["pfn_resumed_losses"] = resumed.losses
    for i, leaf in enumerate(_leaves(resumed.pfn)):
        out[f"pfn_resumed_leaf{i}"] = leaf
    out["pfn_local"] = all(leaf.is_fully_addressable for leaf in _leaves(resumed.pfn))
    # A time budget: each process's clock differs, the step count (process 0's) must not.
    budget = train(pfn, prior, key=jax.random.key(2), time_budget=2.0, batch_size=8,
                   steps_per_dispatch=5, progress_bar=False)
    out["budget_steps"] = budget.steps
    for i, leaf in enumerate(_leaves(budget.pfn)):
        out[f"budget_leaf{i}"] = leaf


def _cnp(out: dict) -> None:
    import jax

    from probkit.models.mpnp import bnp_prior, make_network, train

    net = make_network("cnp", key=jax.random.key(0), dim_hid=16)
    res = train(net, bnp_prior("rbf"), key=jax.random.key(1), num_steps=4, batch_size=8,
                steps_per_dispatch=2, max_points=20, progress_bar=False)
    out["cnp_losses"] = res.losses
    for i, leaf in enumerate(_leaves(res.params)):
        out[f"cnp_leaf{i}"] = leaf


def main(out_dir: str, process_id: int, num_processes: int, port: int) -> None:
    import time

    alone = process_id < 0
    if not alone:
        from probkit.inference import distributed

        distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id, initialization_timeout=60)
    import jax
    import numpy as np

    tmp = pathlib.Path(out_dir) / ("alone" if alone else "shared")
    tmp.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    out: dict = {"process_count": jax.process_count(), "device_count": jax.device_count()}
    for name, job in (("hmc", lambda: _hmc(out)), ("pfn", lambda: _pfn(out, tmp, not alone)),
                      ("cnp", lambda: _cnp(out))):
        job()
        out[f"seconds_{name}"] = time.perf_counter() - start
        out[f"cpu_{name}"] = time.process_time()
    np.savez(pathlib.Path(out_dir) / f"result{process_id}.npz",
             **{k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
