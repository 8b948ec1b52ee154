"""The model specification: what every front hands the engine (lme4's ``lFormula`` output).

A front (formula, scikit-learn estimator, command line, R, parquet/Dask streams) only
translates its inputs into one :class:`ModelSpec`; :func:`lmmscope.engine.fit` does
the rest.  Built once and validated here: the tuning arguments (``k`` / ``a`` are a
number, ``"cv"`` or None, decided by :class:`TuningArguments` and nowhere else), the
unpenalised columns (intercept, ``always=``, random slopes), the estimation method,
the :class:`~lmmscope.control.Control`, and the data: rows in memory
(:class:`RowData`) or statistics already accumulated by a backend
(:class:`StatisticsData`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import checks
from .checks import is_cv, is_number, is_whole_number
from .control import DEFAULT_PERFORMANCE, Control, Performance, as_control
from .exceptions import ColumnError, InputError
from .formula import INTERCEPT
from .tuning import DEFAULT_A_GRID

# the random intercept's name as formulas (Intercept) and R / arrays ((Intercept)) spell it
INTERCEPT_NAMES = (INTERCEPT, "(Intercept)")


def parse_method(method) -> bool:
    """``"REML"`` -> True, ``"ML"`` -> False; anything else an InputError."""
    if not isinstance(method, str) or method not in ("REML", "ML"):
        raise InputError(f"method must be 'REML' or 'ML', got {method!r}")
    return method == "REML"


def parse_k_text(value):
    """k from text (the command line): an integer, 'cv' or None."""
    return _tuning_text(value, "--k", int, "an integer")


def parse_a_text(value):
    """a from text (the command line): a number, 'cv' or None."""
    return _tuning_text(value, "--a", float, "a number")


def _tuning_text(value, flag, convert, what):
    if value is None or is_cv(value):
        return value
    try:
        return convert(value)
    except ValueError:
        raise InputError(f"{flag} must be {what} or 'cv', got {value!r}") from None


@dataclass(frozen=True)
class TuningArguments:
    """The selection's tuning arguments, checked (each error naming its argument) and
    normalised once: ``k`` an int, None or "cv"; ``a`` a float, None or "cv";
    ``a_grid`` a tuple of floats."""

    k: object = None
    a: object = None
    criterion: str = "gic"
    k_max: int | None = None
    cv_folds: int = 5
    a_grid: tuple = DEFAULT_A_GRID
    random_state: int | None = 0

    def __post_init__(self):
        checks.check_tuning_arguments(self.k, self.a, self.criterion, self.k_max, self.cv_folds,
                                      self.a_grid, "REML", self.random_state)
        set_ = object.__setattr__
        if is_whole_number(self.k):
            set_(self, "k", int(self.k))
        if self.a is not None and not is_cv(self.a):
            set_(self, "a", checks.check_a(self.a))
        if self.k_max is not None:
            set_(self, "k_max", int(self.k_max))
        set_(self, "cv_folds", int(self.cv_folds))
        if self.a_grid is not None:
            set_(self, "a_grid", tuple(float(v) for v in self.a_grid))
        if self.random_state is not None:
            set_(self, "random_state", int(self.random_state))

    @property
    def k_fixed(self) -> bool:
        return is_whole_number(self.k)

    @property
    def a_fixed(self) -> bool:
        return is_number(self.a)

    @property
    def uses_cv(self) -> bool:
        return is_cv(self.k) or is_cv(self.a)

    @property
    def single_problem(self) -> bool:
        """k and a both fixed: one selection, no tuning."""
        return self.k_fixed and self.a_fixed

    def check_on_data(self, n_candidates, n_obs, n_unpenalised, n_groups) -> None:
        """k_max and cv_folds against the data (k has its own check after the rank checks)."""
        checks.check_tuning_on_data(self.k, self.a, self.k_max, self.cv_folds, n_candidates,
                                    n_obs, n_unpenalised, n_groups)


# -- the data half of a specification ---------------------------------------------------

@dataclass(frozen=True, eq=False)
class RowData:
    """Rows in memory, checked: X (an array or an :class:`InterceptPrepended`), y, Z,
    the cluster code of each row, and X's :class:`~lmmscope.column_products.RawMoments` where the
    input checks computed them (the column checks reuse them)."""

    X: object
    y: np.ndarray
    Z: np.ndarray
    codes: np.ndarray
    moments: object = None


@dataclass(frozen=True, eq=False)
class SeveralTermsRows:
    """Rows in memory of a model with several random-effects terms, checked: X and y (Z
    is the structure's, :class:`lmmscope.random_effects.SeveralTerms`)."""

    X: np.ndarray
    y: np.ndarray


@dataclass(frozen=True, eq=False)
class StatisticsData:
    """Statistics accumulated outside memory (parquet streams, Dask): the data
    backend holding them, the source (read again by ``inference()``) and the
    stream's own spec (its encodings)."""

    backend: object
    source: object = None
    stream_spec: object = None


def validated_rows(X, y, Z, groups, names, random_names, with_moments=False,
                   row_major_lead=None, performance: Performance = DEFAULT_PERFORMANCE):
    """Checked arrays as (RowData, cluster labels).  ``with_moments``: X's
    :class:`~lmmscope.column_products.RawMoments` too, which the column checks of the selection
    reuse (with a row-major copy of a column-major X for the whitening to overwrite,
    when ``row_major_lead`` is an int); ``performance``: the block sizes of that pass."""
    from .cluster_blocks import encode_groups

    X = checks.as_float_matrix(X, "X")
    N = X.shape[0]
    y = checks.check_response(y, N)
    Z = np.ones((N, 1)) if Z is None else checks.as_float_matrix(Z, "Z")
    if Z.shape[0] != N:
        raise InputError(f"Z has {Z.shape[0]} rows but X has {N}")
    if Z.shape[1] == 0:
        raise InputError("Z has no columns; leave Z=None for a random intercept")
    if groups is None:
        raise InputError("groups= (the cluster of each row) is required")
    groups = checks.check_groups(groups, N)
    moments = checks.check_finite_columns(X, names, "X", row_major_lead=row_major_lead,
                                          performance=performance)
    checks.check_finite_columns(Z, random_names, "Z")
    codes, labels = encode_groups(groups)
    sizes = np.bincount(codes)
    checks.check_clusters(sizes)
    checks.check_random_effects_identifiable(sizes, Z, random_names)
    return RowData(X, y, Z, codes, moments if with_moments else None), labels


def validated_design_rows(design, whiten_copy=False,
                          performance: Performance = DEFAULT_PERFORMANCE):
    """:func:`validated_rows` on a formula's Design; an InterceptPrepended X stays
    unmaterialised (the formula front hands over the frame's own float block when it
    can, not a copy)."""
    from .intercept import InterceptPrepended

    prepended = isinstance(design.X, InterceptPrepended)
    rows, labels = validated_rows(
        design.X.base if prepended else design.X, design.y, design.Z, design.groups,
        design.fixed_names[int(prepended):], design.random_names, with_moments=True,
        row_major_lead=int(prepended) if whiten_copy else None, performance=performance)
    if prepended:
        rows = RowData(InterceptPrepended(rows.X), rows.y, rows.Z, rows.codes, rows.moments)
    return rows, labels


def whitens_a_copy(shape, tuning: TuningArguments, control, unpenalised) -> bool:
    """Whether the fit whitens X's rows once, into a new X_a (one selection at fixed k
    and a on rows, with unpenalised columns such as the intercept: else X_a is an
    operator).  Then a column-major X (a data frame's own block) is copied row-major
    in the input checks' pass and whitened in place: every later pass reads rows at
    the row-major speed, for no more memory than the X_a it becomes."""
    from .layouts import whitens_rows_once

    return bool(unpenalised) and whitens_rows_once(shape[0], shape[1], tuning.k, tuning.a,
                                                   as_control(control))


# -- unpenalised columns ----------------------------------------------------------------

def intercept_columns(names) -> list:
    """The model's intercept, unpenalised: its position, if the design has one."""
    return [list(names).index(INTERCEPT)] if INTERCEPT in names else []


def resolve_always(always, names, unpenalised) -> list:
    """Positions of the unpenalised columns: ``unpenalised`` and those ``always=`` names
    (:func:`checks.always_items`: names, positions among ``names``, or a mask)."""
    names = list(names)
    out = set(unpenalised)
    for item in checks.always_items(always, len(names), "design columns"):
        if isinstance(item, int):
            out.add(item)
        elif item == INTERCEPT and f"`{INTERCEPT}`" in names:
            raise InputError(f"always= {INTERCEPT!r} is ambiguous: the data have a column named "
                             f"{INTERCEPT} (`{INTERCEPT}` in the design) besides the model's "
                             f"intercept; write always=['`{INTERCEPT}`'] for the column")
        elif item in names:
            out.add(names.index(item))
        else:
            raise ColumnError(f"always= names unknown column {item!r}; columns are named "
                              f"{', '.join(map(str, names[:8]))}{' ...' if len(names) > 8 else ''}")
    return sorted(out)


def random_slope_columns(names, random_names) -> list:
    """Indices of fixed-effect columns that are also random-effect columns (matched by
    design column name), the intercept excepted: lme4's hierarchy habit keeps these in
    the fixed part, so they are unpenalised unless ``penalize_random_slopes=True``."""
    random = {str(n) for n in random_names} - set(INTERCEPT_NAMES)
    return [j for j, n in enumerate(names) if str(n) in random]


def with_random_slopes(names, random_names, unpenalised, k, penalize_random_slopes,
                       progress=None) -> list:
    """The unpenalised columns, plus the random slopes unless ``penalize_random_slopes``."""
    if penalize_random_slopes:
        return sorted(unpenalised)
    names = list(names)
    slopes = [j for j in random_slope_columns(names, random_names) if j not in unpenalised]
    if slopes and progress is not None:
        progress(f"unpenalised as random slopes: {', '.join(names[j] for j in slopes)}")
    n_candidates = len(names) - len(set(unpenalised) | set(slopes))
    if slopes and is_whole_number(k) and k > n_candidates:
        raise InputError(
            f"k = {k} exceeds the number of candidate predictors ({n_candidates}): "
            f"random-slope column(s) {', '.join(names[j] for j in slopes)} are kept "
            "unpenalised like the intercept (lme4's hierarchy); lower k, or pass "
            "penalize_random_slopes=True to let them count as candidates")
    return sorted(set(unpenalised) | set(slopes))


def random_intercept_only(random_names, Z=None) -> bool:
    """Whether the random part is a random intercept alone, so that level-1 prediction
    needs no Z from the user: the one rule for every front.  By the random-effects
    names (formulas spell it ``Intercept``, R and arrays ``(Intercept)``), or, where the
    rows are at hand, a single column of ones (an array fit's ``Z=np.ones((n, 1))``)."""
    names = [str(n) for n in random_names]
    if len(names) != 1:
        return False
    return names[0] in INTERCEPT_NAMES or (
        Z is not None and Z.shape[1] == 1 and bool(np.all(Z == 1)))


# -- the specification ------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One validated model: the engine's only input.

    ``names`` / ``random_names``: the fixed- and random-effects columns; ``group_name``
    and ``group_labels``: the grouping factor and its levels (in code order);
    ``unpenalised``: positions of the columns never penalised (intercept, ``always=``,
    random slopes); ``reml``: the refit's method; ``tuning``: the selection's arguments,
    or None for a fit of every column (``lmm()``); ``data``: :class:`RowData` or
    :class:`StatisticsData`; ``design``: the formula's Design where there is one (new
    rows for prediction); ``prepend_intercept``: an array fit whose ``predict`` adds
    the intercept column; ``random_effects``: the random-effects structure
    (:mod:`lmmscope.random_effects`), None for one grouping factor (``random_names``,
    ``group_name``, ``group_labels``).  With several terms, ``data`` is
    :class:`SeveralTermsRows` or :class:`StatisticsData` and ``group_name`` /
    ``group_labels`` are the first term's."""

    names: tuple
    random_names: tuple
    group_name: str
    group_labels: np.ndarray
    data: object
    reml: bool = True
    unpenalised: tuple = ()
    tuning: TuningArguments | None = None
    control: Control = field(default_factory=Control)
    design: object = None
    verbose: bool = False
    prepend_intercept: bool = False
    random_effects: object = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "names", tuple(str(n) for n in self.names))
        set_(self, "random_names", tuple(str(n) for n in self.random_names))
        set_(self, "group_name", str(self.group_name))
        set_(self, "control", as_control(self.control))
        set_(self, "unpenalised", tuple(sorted({int(j) for j in self.unpenalised})))
        if not isinstance(self.data, (RowData, SeveralTermsRows, StatisticsData)):
            raise TypeError("ModelSpec.data must be RowData, SeveralTermsRows or StatisticsData")
        if isinstance(self.data, SeveralTermsRows) and self.random_effects is None:
            raise TypeError("SeveralTermsRows need the several-term structure (random_effects)")
        if self.tuning is not None and not isinstance(self.tuning, TuningArguments):
            raise TypeError("ModelSpec.tuning must be TuningArguments or None")
        p = len(self.names)
        if any(not 0 <= j < p for j in self.unpenalised):
            raise InputError(f"unpenalised column positions must lie in 0..{p - 1}, got "
                             f"{list(self.unpenalised)}")
        if isinstance(self.data, RowData):
            if self.data.X.shape[1] != p:
                raise InputError(f"X has {self.data.X.shape[1]} columns but {p} names")
            if self.data.Z.shape[1] != len(self.random_names):
                raise InputError(f"Z has {self.data.Z.shape[1]} columns but "
                                 f"{len(self.random_names)} names")

    @property
    def method(self) -> str:
        return "REML" if self.reml else "ML"

    @property
    def selects(self) -> bool:
        return self.tuning is not None
