"""The neural-process family: the shipped MPNP (1-D inputs) conditioned on a 1-D dataset.

The shipped networks take 1-D inputs, so the three BO steps on the 2-D Branin function run a
small *untrained* 2-D NP: they check the surrogate plumbing (padding, jit, acquisition), not the
quality of its proposals."""

import jax

from probkit.models.mpnp import NeuralProcess, make_network
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data(d=1)
_NP_2D = make_network("np", key=jax.random.key(0), dim_x=2, dim_hid=16, dim_lat=8)
CASES = [Case("mpnp", NeuralProcess(model="mpnp", num_samples=16), x, y, x_new, y_new,
              bo_family=NeuralProcess(weights=_NP_2D, num_samples=8, capacity=16))]
