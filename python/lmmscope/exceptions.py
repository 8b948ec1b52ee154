"""Warning and error classes of lmmscope (catch or filter these, not every warning)."""


class ConvergenceWarning(UserWarning):
    """The (RE)ML optimisation of the variance parameters did not pass the final
    convergence check (lme4's ``checkConv``: scaled gradient, Hessian)."""


class RankDeficientError(ValueError):
    """The fixed-effect columns of a fit are linearly dependent."""
