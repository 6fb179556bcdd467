from probkit.models.gp import GP
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
CASES = [Case("gp", GP(), x, y, x_new, y_new),
         Case("gp-nuts", GP(engine="nuts", num_warmup=200, num_samples=200, num_chains=2),
              x, y, x_new, y_new)]
