import numpyro
import numpyro.distributions as dist

from probkit.models.numpyro import Regressor
from tests.contract_cases import Case, regression_data


def quadratic(x, y=None):
    """Quadratic regression in two inputs with a learned noise scale."""
    w = numpyro.sample("w", dist.Normal(0.0, 3.0).expand([5]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    f = numpyro.deterministic("f", w[0] + x @ w[1:3] + (x**2) @ w[3:5])
    numpyro.sample("y", dist.Normal(f, sigma), obs=y)


x, y, x_new, y_new = regression_data()
CASES = [Case("numpyro", Regressor(quadratic, num_warmup=200, num_samples=200, num_chains=2),
              x, y, x_new, y_new)]
