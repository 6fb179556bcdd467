from probkit.models.fbnn import FBNN
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
# A small BNN under the fixed N(0, 1) prior, a short SGHMC run (a box family).
CASES = [Case("fbnn", FBNN(widths=(16,), prior="fixed", noise_var=0.01, num_chains=2,
                           num_warmup=300, num_samples=20, thinning=5),
              x, y, x_new, y_new)]
