from probkit.models.pfn import Regressor
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
CASES = [Case("pfn", Regressor("gp-bo"), x, y, x_new, y_new)]
