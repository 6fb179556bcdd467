import numpyro.distributions as dist

from probkit.models import nngp
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
CASES = [
    Case("nngp", nngp.Regressor(), x, y, x_new, y_new, bo_family=nngp.Regressor.for_bo()),
    Case("nngp-quadrature",
         nngp.Regressor(scale_prior=dist.Gamma(2.0, 2.0), engine="quadrature", num_steps=50,
                        refine_steps=20), x, y, x_new, y_new,
         bo_family=nngp.Regressor.for_bo(scale_prior=dist.Gamma(2.0, 2.0), engine="quadrature",
                                         num_steps=50, refine_steps=20)),
]
