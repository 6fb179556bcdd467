"""The ``probkit`` command: ``probkit demo`` runs a short tour of the package.

Each section lives in ``probkit/demos/<name>.py`` and provides
``demo(out: Path, *, key) -> str``; adding a section is adding its name to ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import jax

__all__ = ["SECTIONS", "main"]

#: Demo sections, in the order they run: (name, title).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("hmc", "HMC engine: eight schools with BlackJAX NUTS, read in ArviZ"),
    ("nngp", "Scale mixtures of NNGPs: Student-t process vs Gaussian NNGP under heavy tails"),
    ("tucker", "Functional Bayesian Tucker decomposition: factor curves with bands"),
    ("seasonal", "State-space GP: Mauna Loa CO2, trend + quasi-periodic season, O(n) Kalman fit"),
    ("dkf", "Discriminative Kalman filter: decoding hand velocity from neural features"),
    ("pfn", "PFN engine: a shipped transformer predicts a GP posterior in one forward pass"),
    ("fbnn", "Functional-prior BNNs: a BNN prior matched to a GP in Wasserstein distance"),
    ("mpnp", "Martingale-posterior neural processes: CNP, NP and MPNP bands on one context"),
    ("bo", "Bayesian optimisation: GP surrogate with log-EI on Branin"),
)


def _available() -> list[tuple[str, str]]:
    return [(n, t) for n, t in SECTIONS
            if importlib.util.find_spec(f"probkit.demos.{n}") is not None]


def run_demo(out: Path, names: list[str] | None = None, seed: int = 0) -> int:
    """Run the demo sections ``names`` (all by default), writing files into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    sections = _available()
    known = [n for n, _ in sections]
    for n in names or []:
        if n not in known:
            raise SystemExit(f"probkit demo: unknown section {n!r}; choose from {known}")
    key = jax.random.key(seed)
    t_all = time.perf_counter()
    for i, (name, title) in enumerate(sections):
        if names and name not in names:
            continue
        print(f"\n=== {title} ===", flush=True)
        module = importlib.import_module(f"probkit.demos.{name}")
        t0 = time.perf_counter()
        text = module.demo(out, key=jax.random.fold_in(key, i))
        print(text)
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", flush=True)
    total = time.perf_counter() - t_all
    print(f"\nprobkit demo finished in {total:.1f} s; files in {out.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probkit`` console command."""
    parser = argparse.ArgumentParser(prog="probkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="a short tour: summaries, an ArviZ netCDF file, figures")
    demo.add_argument("--out", type=Path, default=Path("probkit-demo"),
                      help="output folder (default ./probkit-demo)")
    demo.add_argument("--only", nargs="*", metavar="SECTION",
                      help=f"run only these sections (of {[n for n, _ in SECTIONS]})")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    args = parser.parse_args(argv)
    if args.version:
        from probkit import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        return run_demo(args.out, args.only, args.seed)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
