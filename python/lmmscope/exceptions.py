"""Warning and error classes of lmmscope (catch or filter these, not every warning).

Every problem with what the user passed (data, formula, arguments, files) is raised as
an :class:`InputError` (or a subclass), whose message names the column, file, argument
or value at fault.  Each class also derives from the builtin error a caller would
expect (ValueError, KeyError, TypeError, FileNotFoundError), so existing ``except``
clauses keep working; ``except lmmscope.LmmscopeError`` catches them all.
"""


class ConvergenceWarning(UserWarning):
    """The (RE)ML optimisation of the variance parameters did not pass the final
    convergence check (lme4's ``checkConv``: scaled gradient, Hessian)."""


class LmmscopeError(Exception):
    """Base class of every error lmmscope raises on purpose."""


class InputError(LmmscopeError, ValueError):
    """A problem with the data, formula, arguments or files given to lmmscope."""


class ColumnError(InputError, KeyError):
    """A column the formula or an argument names is not in the data."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a formula that is not a string, an unknown table)."""


class MissingFileError(InputError, FileNotFoundError):
    """A path or glob that names no data file."""


class RankDeficientError(InputError):
    """The fixed-effect columns of a fit are linearly dependent."""


class Lme4Unavailable(InputError, ImportError):
    """A comparison with lme4 needs rpy2, R and the R package lme4: the message says
    which is missing and how to install it."""


class Lme4Error(InputError, RuntimeError):
    """lme4::lmer refused the model it was asked to fit for a comparison (R's message)."""


class EngineError(LmmscopeError, RuntimeError):
    """The search engine named by ``Control(engine=...)`` cannot load (a missing or
    broken optional dependency such as skscope or JAX) or failed inside."""
