"""Eight schools with probkit's BlackJAX NUTS engine, read in ArviZ; saves a trace figure.

    python examples/hmc_eight_schools.py --out .
"""

import argparse
from pathlib import Path

import arviz as az
import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from probkit.demos.hmc import SIGMA, Y, eight_schools  # noqa: E402
from probkit.inference import hmc  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    result = hmc.run(eight_schools, SIGMA, y=Y, key=jax.random.key(0), target_accept=0.9)
    idata = result.to_arviz()
    print(az.summary(idata, var_names=["mu", "tau"]))
    az.plot_forest(idata, var_names=["theta"], combined=True)
    plt.title("eight schools: posterior of school effects")
    plt.tight_layout()
    plt.savefig(out / "hmc_eight_schools.png", dpi=100)
    print(f"wrote {out / 'hmc_eight_schools.png'}")


if __name__ == "__main__":
    main()
