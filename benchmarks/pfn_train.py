"""Train the PFN weights shipped in ``probkit/inference/pfn/weights``.

Each shipped model has its prior in :func:`probkit.inference.pfn.pretrained.prior` and its
network / training settings in ``SETTINGS`` below; the seed is fixed, and the settings, seed,
steps and wall time are written into each file's header.

    python benchmarks/pfn_train.py --name gp1d-rbf --out probkit/inference/pfn/weights

The shipped files were trained on one accelerator (the header's ``metadata.device`` says which,
``probkit.read_header(path)["metadata"]``); the same command runs unchanged, only slower, on a CPU
(``--steps`` or ``--time-budget`` to cut it short; with ``--resume`` training continues from the
checkpoint ``<out>/<file stem>.ckpt`` if it exists).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

from probkit import read_header
from probkit.inference.pfn import init, train
from probkit.inference.pfn.pretrained import PRETRAINED, prior

SETTINGS = {
    "gp1d-rbf": {"max_points": 60, "num_buckets": 200, "emsize": 128, "num_layers": 4,
                 "num_heads": 4, "standardize_y": False, "vary_input_dim": False,
                 "batch_size": 128, "lr": 5e-4, "num_steps": 40_000, "seed": 0},
    "gp1d-hyper": {"max_points": 60, "num_buckets": 200, "emsize": 128, "num_layers": 4,
                   "num_heads": 4, "standardize_y": False, "vary_input_dim": False,
                   "batch_size": 128, "lr": 5e-4, "num_steps": 40_000, "seed": 1},
    "gp-bo": {"max_points": 128, "num_buckets": 400, "emsize": 128, "num_layers": 4,
              "num_heads": 4, "standardize_y": True, "vary_input_dim": True,
              "batch_size": 128, "lr": 5e-4, "num_steps": 30_000, "seed": 2},
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", choices=sorted(SETTINGS), required=True)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    p.add_argument("--steps", type=int, default=None, help="override num_steps")
    p.add_argument("--batch", type=int, default=None, help="override batch_size")
    p.add_argument("--time-budget", type=float, default=None,
                   help="train for this many seconds instead of a step count")
    p.add_argument("--steps-per-call", type=int, default=100)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    s = dict(SETTINGS[args.name])
    if args.steps:
        s["num_steps"] = args.steps
    if args.batch:
        s["batch_size"] = args.batch
    pr = prior(args.name)
    key = jax.random.key(s["seed"])
    k_init, k_train = jax.random.split(key)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / PRETRAINED[args.name][0]
    checkpoint = path.with_suffix(".ckpt")  # training state; the weights file is written at the end
    if checkpoint.exists() and not args.resume:
        checkpoint.unlink(missing_ok=True)
    pfn = init(pr, key=k_init, max_points=s["max_points"], num_buckets=s["num_buckets"],
               emsize=s["emsize"], num_layers=s["num_layers"], num_heads=s["num_heads"],
               max_input_dim=pr.input_dim, standardize_y=s["standardize_y"],
               prior_name=f"{args.name}: {PRETRAINED[args.name][1]}")
    start = time.perf_counter()
    if args.time_budget:
        s["num_steps"], s["time_budget"] = None, args.time_budget
    res = train(pfn, pr, key=k_train, num_steps=s["num_steps"], time_budget=args.time_budget,
                batch_size=s["batch_size"], learning_rate=s["lr"],
                steps_per_dispatch=args.steps_per_call,
                vary_input_dim=s["vary_input_dim"], checkpoint=checkpoint, checkpoint_every=2000,
                progress_bar=True)
    wall = time.perf_counter() - start
    extra = {"settings": s, "steps_done": res.steps, "wall_seconds": round(wall, 1),
             "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
             "script": "benchmarks/pfn_train.py", "final_loss": float(res.losses[-20:].mean())}
    res.pfn.save(path, **extra)
    checkpoint.unlink(missing_ok=True)
    log = {"name": args.name, **extra, "losses": res.losses.tolist()}
    (args.out / f"{args.name}_train_log.json").write_text(json.dumps(log))
    print(json.dumps({k: v for k, v in read_header(path)["metadata"].items()}, indent=1))


if __name__ == "__main__":
    main()
