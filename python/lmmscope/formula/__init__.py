"""Formula front: ``"y ~ x1 + x2 + (z | g)"`` (lme4 syntax) or ``"y ~ x1 + x2 | (z | g)"``
(design syntax) + a table -> the arrays of a mixed model.

parse (strings) -> names (any column name, safely) -> terms (the ordered terms of each
side, plain columns without formulaic) -> columns (matrices, and again on new rows)
-> design (the whole model).
"""

from .columns import INTERCEPT, R_FUNCTIONS, intercept_index
from .design import Design, build_design, new_design_matrices
from .parse import ParsedFormula, parse_formula

__all__ = ["INTERCEPT", "R_FUNCTIONS", "Design", "ParsedFormula", "build_design",
           "intercept_index", "new_design_matrices", "parse_formula"]
