"""lmmscope: sparse fixed-effect selection in high-dimensional linear mixed models.

The quasi-likelihood estimator of Li, Cai and Li (2022): whiten each cluster by
Sigma_a = a Z_i Z_i' + I, then best-subset selection (splicing and exchange moves);
variance components and random effects on the selected model by (RE)ML as lme4.
"""

from .api import lmm, lmm_scope
from .control import Control
from .exceptions import (ColumnError, ConvergenceWarning, InputError, LmmscopeError,
                         RankDeficientError)
from .results import LmmResult, LmmScopeResult

__version__ = "0.1.0"
__all__ = ["lmm_scope", "lmm", "LmmScope", "LmmScopeResult", "LmmResult", "Control",
           "ConvergenceWarning", "RankDeficientError", "LmmscopeError", "InputError", "ColumnError",
           "__version__"]


def __getattr__(name):
    # The scikit-learn estimator is loaded on first use: scikit-learn takes seconds to import.
    if name == "LmmScope":
        from .estimator import LmmScope
        return LmmScope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
