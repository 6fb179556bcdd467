from probkit.models.gp import GP
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
CASES = [Case("gp", GP(), x, y, x_new, y_new)]
