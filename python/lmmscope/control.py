"""Tuning constants of a fit, in one object (in the spirit of ``lme4::lmerControl``).

Pass ``control=Control(...)`` to :func:`lmmscope.lmm_scope` / :func:`lmmscope.lmm`;
every stage reads its constants from it instead of module globals, so a test or a
user changes one fit without touching any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from .engines import DEFAULT_ENGINE, ENGINE_RULE
from .exceptions import InputError, InputTypeError


@dataclass(frozen=True)
class Rule:
    """What a Control field accepts: ``kind`` ("int", "float" or "bool") and, for
    numbers, the smallest value (``low``; excluded when ``open_low``).  Floats must be
    finite, so NaN and infinities are refused."""

    kind: str
    low: float | None = None
    open_low: bool = False

    def check(self, name: str, value):
        """The value as the field's type, or an InputError naming the field."""
        if self.kind == "performance":
            return as_performance(value, name)
        if (self.kind == "int" and isinstance(value, (float, np.floating))
                and math.isfinite(value) and float(value).is_integer()):
            value = int(value)  # R's numbers are doubles: 50 arrives as 50.0
        ok = {"bool": isinstance(value, (bool, np.bool_)),
              "int": isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)),
              "float": isinstance(value, (int, float, np.integer, np.floating))
              and not isinstance(value, (bool, np.bool_))}[self.kind]
        if not ok:
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}, "
                             f"got {type(value).__name__}")
        value = {"bool": bool, "int": int, "float": float}[self.kind](value)
        if self.kind == "float" and not math.isfinite(value):
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}")
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}")
        return value

    def describe(self) -> str:
        what = {"bool": "True or False", "int": "an integer",
                "float": "a finite number"}[self.kind]
        if self.low is not None:
            what += f" {'>' if self.open_low else '>='} {self.low:g}"
        return what


# One line per field: a new Control field needs its rule here (tests check every
# field has one).
RULES = {
    "gram_limit": Rule("int", 0),
    "single_problem_rows_bytes": Rule("int", 0),
    "search_effort": Rule("int", 0),
    "engine": ENGINE_RULE,
    "unit_free_z": Rule("bool"),
    "a_relative_tol": Rule("float", 0, open_low=True),
    "max_a_iter": Rule("int", 1),
    "optimizer_ftol": Rule("float", 0),
    "optimizer_gtol": Rule("float", 0),
    "optimizer_maxiter": Rule("int", 1),
    "check_conv_grad_tol": Rule("float", 0, open_low=True),
    "check_conv_hess_tol": Rule("float", 0),
    "singular_tol": Rule("float", 0),
    "rank_tol": Rule("float", 0, open_low=True),
    "constant_tol": Rule("float", 0),
    "duplicate_tol": Rule("float", 0),
    "response_copy_tol": Rule("float", 0),
    "scale_ratio_tol": Rule("float", 1, open_low=True),
    "performance": Rule("performance"),
}


@dataclass(frozen=True)
class Performance:
    """Memory and speed settings: they change how a fit runs, never its result (unlike
    :class:`Control`'s tolerances).  Passed as ``Control(performance=Performance(...))``.

      on_demand_gram_bytes: above this size of the p x p Gram, even a path of selections
        reads the whitened Gram's columns on demand (the screens of successive k
        overlap, and are cached) rather than forming a second p x p array beside X'X.
    """

    on_demand_gram_bytes: int = 2**28

    def __post_init__(self):
        for f in fields(self):
            value = PERFORMANCE_RULES[f.name].check(f"performance.{f.name}", getattr(self, f.name))
            object.__setattr__(self, f.name, value)


PERFORMANCE_RULES = {
    "on_demand_gram_bytes": Rule("int", 0),
}


def as_performance(value, name: str = "performance") -> Performance:
    """A Performance as it is, a dict of its fields as a Performance; else an InputError."""
    if isinstance(value, Performance):
        return value
    if isinstance(value, dict):
        known = [f.name for f in fields(Performance)]
        unknown = [k for k in value if k not in known]
        if unknown:
            raise InputError(f"Performance has no field(s) {', '.join(map(repr, unknown))}; its "
                             f"fields are {', '.join(known)}")
        return Performance(**value)
    raise InputError(f"Control({name}=...): must be a lmmscope.control.Performance or a dict, "
                     f"got {type(value).__name__}")


@dataclass(frozen=True)
class Control:
    """Constants of selection, tuning and refit.

    Data layout (Gram or rows, chosen once per fit):
      gram_limit: above this many columns (and when p > N) the p x p Gram is not formed.
      single_problem_rows_bytes: one selection (k and a both fixed) runs on whitened
        rows up to this many bytes of X (tens of O(Np) gradients cost less than the
        O(Np^2) Gram).
      search_effort: extra starts of the best-subset search at each k (an integer >= 0;
        up to 2,000 subsets of size k are enumerated instead):
        0 only the warm start from the previous k; 1 (default) also the marginal
        ranking; each further one a perturbation of the best support found; the
        restarts run for k <= 10 x search_effort.
      engine: the best-subset search (lmmscope.engines): "splicing" (default, numpy,
        faster than skscope's on the same problems), "skscope" (skscope's ScopeSolver;
        loads JAX) or "exact" (every subset enumerated; small problems only).
    Proxy covariance:
      unit_free_z: True (default): Sigma_a = a Z~ Z~' + I with Z~ = Z's columns divided by
        their root mean square, so a, the support and the coefficients do not depend on
        Z's units (a random-slope column in days or in seconds); False: the raw Z of the
        paper's and the seed example's definition (then a depends on those units).
    Tuning of ``a``:
      a_relative_tol: the a-iteration stops when a moves by less than this share.
      max_a_iter: most rounds of the a-iteration, per start.
    Refit (profiled (RE)ML optimisation of theta):
      optimizer_ftol, optimizer_gtol, optimizer_maxiter: L-BFGS-B's options.
      check_conv_grad_tol: lme4's ``check.conv.grad`` tolerance (2e-3) on the scaled
        gradient at the optimum; above it a ConvergenceWarning is issued.
      check_conv_hess_tol: lme4's ``check.conv.hess`` tolerance (1e-6): a Hessian
        eigenvalue below -tol is reported as a degenerate Hessian.
      singular_tol: lme4's ``check.conv.singular`` / ``isSingular`` tolerance (1e-4)
        on the bounded entries of theta (relative to the unit-free scale of Z).
    Checks of the fixed-effects design (lme4's check.rankX and check.scaleX):
      rank_tol: R's ``qr(X, tol = 1e-7)`` as lme4's chkRank.drop.cols uses it: a column
        whose norm, after projecting out the columns kept before it, falls below this
        share of its own norm is aliased and dropped (:mod:`lmmscope.rank`).
      constant_tol: a column whose spread around its mean is below this share of its
        magnitude is constant to the precision of its values (1e-11).
      duplicate_tol: two columns whose correlation (cosine without an intercept) is
        within this of +-1 are duplicates (1e-12: independent parts below ~1e-6).
      response_copy_tol: a predictor whose correlation with the response is within
        this of +-1 is the response up to location and scale, refused (1e-10).
      scale_ratio_tol: lme4's checkScaleX: warn when the standard deviations of the
        non-binary columns differ by more than this factor, or one lies outside
        [1/tol, tol] (1e3).
    Memory and speed (never the result): ``performance``, a :class:`Performance`.
    """

    gram_limit: int = 4000
    single_problem_rows_bytes: int = 2**28
    search_effort: int = 1
    engine: str = DEFAULT_ENGINE
    unit_free_z: bool = True
    a_relative_tol: float = 1e-2
    max_a_iter: int = 6
    optimizer_ftol: float = 1e-10
    optimizer_gtol: float = 1e-10
    optimizer_maxiter: int = 2000
    check_conv_grad_tol: float = 2e-3
    check_conv_hess_tol: float = 1e-6
    singular_tol: float = 1e-4
    rank_tol: float = 1e-7
    constant_tol: float = 1e-11
    duplicate_tol: float = 1e-12
    response_copy_tol: float = 1e-10
    scale_ratio_tol: float = 1e3
    performance: Performance = field(default_factory=lambda: Performance())

    def __post_init__(self):
        # every value checked (and made the field's type) here, once: a NaN tolerance
        # or "no" for a flag must not reach the numerics
        for f in fields(self):
            rule = RULES.get(f.name)
            if rule is None:  # a field without a rule: its default's type, any value
                rule = Rule({bool: "bool", int: "int"}.get(type(f.default), "float"))
            object.__setattr__(self, f.name, rule.check(f.name, getattr(self, f.name)))

    def updated(self, **changes) -> "Control":
        """A copy with some fields changed."""
        _check_names(changes)
        return replace(self, **changes)


def _check_names(values: dict) -> None:
    known = [f.name for f in fields(Control)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise InputError(f"Control has no field(s) {', '.join(map(repr, unknown))}; its fields "
                         f"are {', '.join(known)}")


DEFAULT_CONTROL = Control()


def as_control(control) -> Control:
    """``None`` -> the defaults; a dict -> Control(**dict); a Control as it is."""
    if control is None:
        return DEFAULT_CONTROL
    if isinstance(control, Control):
        return control
    if isinstance(control, dict):
        _check_names(control)
        return Control(**control)
    raise InputTypeError(f"control must be a lmmscope.Control, a dict or None, got {type(control).__name__}")
