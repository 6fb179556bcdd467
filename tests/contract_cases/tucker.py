from probkit.models.tucker import FunBaT
from tests.contract_cases import Case, regression_data

x, y, x_new, y_new = regression_data()
# FunBaT-CP over the two continuous coordinates of the unit square (a box family: it runs the
# three BO steps too).
CASES = [Case("tucker", FunBaT(rank=2, cp=True, nu=1.5, lengthscale=0.3, num_steps=30),
              x, y, x_new, y_new)]
