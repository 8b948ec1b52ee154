"""Formula + table -> the arrays of a mixed model (X, y, Z, groups), and again for new rows."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from ..control import DEFAULT_PERFORMANCE, Performance
from ..frames import as_source
from ..intercept import InterceptPrepended
from .columns import INTERCEPT, SideSpec, formulaic_part, plain_missing, rebuild, side_matrix
from .names import ColumnNames
from .parse import ParsedFormula, parse_formula
from .terms import Dot, TermPlan, plan_terms
from ..exceptions import ColumnError, InputError, InputTypeError


@dataclass
class Design:
    """Materialised arrays of a mixed model, with what prediction needs to redo it.

    ``X`` is an :class:`~lmmscope.intercept.InterceptPrepended` when the model has an
    intercept (so a frame's float block is used without copying), else an array.
    """

    X: object
    y: np.ndarray
    Z: np.ndarray
    groups: np.ndarray
    fixed_names: list
    random_names: list
    group_name: str
    response_name: str
    fixed_spec: SideSpec
    random_spec: SideSpec
    parsed: ParsedFormula
    fixed_formula: str
    n_dropped: int = 0
    dropped_rows: list = field(default_factory=list)
    factor_levels: dict = field(default_factory=dict)
    row_index: object = None

    def without_data(self) -> "Design":
        """The encodings only (no training arrays): what prediction needs, small to pickle."""
        empty = np.empty((0, 0))
        return replace(self, X=empty, y=np.empty(0), Z=empty,
                       groups=np.empty(0), dropped_rows=[], row_index=None)


@dataclass
class _Plans:
    response: TermPlan
    fixed: TermPlan
    random: TermPlan


def _plans(parsed: ParsedFormula, names: ColumnNames, source, dot_excluded=()) -> _Plans:
    # a bool response is 0/1, as R's lmer reads a logical response
    response = plan_terms(parsed.response, names,
                          lambda c: source.is_numeric(c) or source.is_bool(c), intercept=False)
    y_col = response.plain[0] if response.n_terms == 1 and response.plain else None
    fixed = plan_terms(parsed.fixed, names, source.is_numeric,
                       _dot(source, set(_columns_of(response)) | {parsed.group} | set(dot_excluded)),
                       response=y_col)
    random = plan_terms(parsed.random, names, source.is_numeric)
    if names.unknown:
        raise ColumnError("unknown column(s) in formula: " + ", ".join(map(str, names.unknown)))
    if fixed.removed_response:
        warnings.warn(f"lmmscope: the response {y_col!r} appeared on the right-hand side and "
                      "was dropped", stacklevel=4)
    if response.intercept or response.n_terms != 1:
        raise InputError(f"the response must be one numeric column, got {parsed.response!r}")
    if not random.intercept and not random.n_terms:
        raise InputError(f"the random-effects term ({parsed.random} | {parsed.group}) has no "
                         "columns; use (1 | group) for a random intercept")
    return _Plans(response, fixed, random)


def _dot(source, excluded: set) -> Dot:
    """The columns '.' stands for: every column of the table but ``excluded``."""
    if source.duplicated:
        columns = [c for c in source.columns if c not in excluded]
    else:  # each excluded name at one position: cut them out of a copy
        columns = list(source.columns)
        for j in sorted((source.position[c] for c in excluded if c in source.position),
                        reverse=True):
            del columns[j]
    return Dot(columns, {c for c in source.non_numeric
                         if c not in excluded and not source.is_numeric(c)}, excluded)


def _columns_of(plan: TermPlan) -> list:
    return plan.plain + list(plan.referenced)


def build_design(formula: str, data, na_action: str = "omit", all_levels: bool = False,
                 performance: Performance = DEFAULT_PERFORMANCE,
                 dot_excluded=()) -> Design:
    """Materialise a mixed-model formula on a table (R's na.omit by default).

    ``data``: a pandas, polars or pyarrow table (or anything with ``__arrow_c_stream__``
    or ``__dataframe__``).  Levels of a categorical column that no kept row has are
    dropped, as R's model.frame does, unless ``all_levels`` (the categoricals carry the
    complete level sets of data seen elsewhere: a streamed fit's prototype).
    ``performance``: :class:`lmmscope.control.Performance`'s block sizes of the reads
    (formulas have no Control of their own: the fronts pass ``control.performance``).
    ``dot_excluded``: columns '.' leaves out besides the response and the grouping
    column (a several-term model's other grouping factors; named, they are used).
    """
    if na_action not in ("omit", "fail"):
        raise InputError("na_action must be 'omit' or 'fail'")
    if not isinstance(formula, str):
        raise InputTypeError(f"formula must be a string, got {type(formula).__name__}")
    source = as_source(data, performance=performance)
    parsed = parse_formula(formula)
    names = ColumnNames(source.columns, source.position)
    if parsed.group not in names:
        raise ColumnError(f"unknown column(s) in formula: {parsed.group} (grouping factor)")
    plans = _plans(parsed, names, source, dot_excluded)
    _check_unique(source, plans, parsed.group)
    fixed_positions = source.positions(plans.fixed.plain)
    keep, dropped = _rows_to_keep(source, plans, parsed.group, na_action, fixed_positions)
    if dropped:
        _warn_stateful_after_na(formula)
    n = source.n_rows if keep is None else int(keep.sum())
    if n == 0:
        raise InputError("no rows left after removing missing values")
    y, response_name = _response(plans.response, names, source, keep)
    X, fixed_spec = side_matrix(plans.fixed, names, source,
                                formulaic_part(plans.fixed, names, source, keep, all_levels),
                                keep, n, fixed_positions)
    Z, random_spec = side_matrix(plans.random, names, source,
                                 formulaic_part(plans.random, names, source, keep, all_levels),
                                 keep, n)
    _check_names(fixed_spec.names, plain_only=not plans.fixed.formulaic_terms)
    groups = _group_labels(source.values(parsed.group), parsed.group)
    return Design(
        X=InterceptPrepended(X) if plans.fixed.intercept else X, y=y,
        Z=_with_intercept(Z, plans.random.intercept), groups=groups if keep is None else groups[keep],
        fixed_names=fixed_spec.names, random_names=random_spec.names, group_name=parsed.group,
        response_name=response_name, fixed_spec=fixed_spec, random_spec=random_spec,
        parsed=parsed, fixed_formula=f"{parsed.response} ~ {parsed.fixed}",
        n_dropped=len(dropped), dropped_rows=dropped,
        factor_levels=_factor_levels(plans.fixed, source),
        row_index=source.index if keep is None else source.index[keep])


# formulaic's transforms whose values depend on the rows they see (centre, scale, bases)
_STATEFUL = re.compile(r"\b(scale|center|standardize|poly|bs|cr|cc|cs|te|hashed)\s*\(")


def _warn_stateful_after_na(formula: str) -> None:
    """R's model.frame evaluates poly(), scale() etc. before na.action drops rows; here
    (as formulaic does) they are computed on the complete rows only.  Say so, since the
    numbers then differ from lme4's."""
    found = sorted(set(m.group(1) for m in _STATEFUL.finditer(formula)))
    if found:
        warnings.warn(f"lmmscope: {', '.join(f + '()' for f in found)} computed on the rows left "
                      "after dropping missing values; R's model.frame computes them before "
                      "(drop the incomplete rows first to match lme4 exactly)", stacklevel=4)


def _group_labels(values: np.ndarray, name: str) -> np.ndarray:
    """Cluster labels that sort: labels of mixed types (1 and "a") become their text,
    as in an R factor (and as the arrays interface compares them); where two labels
    then coincide (1 and "1") they are one cluster, with a warning."""
    if values.dtype != object or len({type(v) for v in values}) < 2:
        return values
    import pandas as pd
    text = values.astype(str)
    if pd.unique(text).size != pd.unique(values).size:
        import warnings
        warnings.warn(f"lmmscope: the grouping column {name!r} mixes label types whose text "
                      "coincides (such as 1 and '1'); they are one cluster, as in R's factor()",
                      stacklevel=4)
    return text


def _with_intercept(Z: np.ndarray, intercept: bool) -> np.ndarray:
    out = np.empty((Z.shape[0], Z.shape[1] + intercept))
    if intercept:
        out[:, 0] = 1.0
    out[:, int(intercept):] = Z
    return out


def _check_unique(source, plans: _Plans, group: str) -> None:
    if not source.duplicated:
        return
    used = set(_columns_of(plans.response)) | set(_columns_of(plans.fixed)) \
        | set(_columns_of(plans.random)) | {group}
    dup = sorted(used & source.duplicated)
    if dup:
        raise InputError("the data have several columns named " + ", ".join(map(repr, dup)))


def _check_names(out_names: list, plain_only: bool = False) -> None:
    # plain columns are distinct data columns; only a column named "`Intercept`" could
    # then clash (with a data column Intercept, which is renamed so)
    if (plain_only and f"`{INTERCEPT}`" not in out_names) or len(set(out_names)) == len(out_names):
        return
    seen, dup = set(), []
    for name in out_names:
        if name in seen:
            dup.append(name)
        seen.add(name)
    raise InputError("two fixed-effect columns would both be named " + ", ".join(map(repr, dup))
                     + "; rename a data column")


def _rows_to_keep(source, plans: _Plans, group: str, na_action: str, fixed_positions):
    """(boolean mask of complete rows or None when all are, dropped row labels)."""
    plain = plans.fixed.plain
    missing = plain_missing(source, plain, fixed_positions)
    others = set(_columns_of(plans.response)) | set(plans.fixed.referenced) \
        | set(_columns_of(plans.random)) | {group}
    in_plain = np.zeros(len(source.columns), dtype=bool)
    in_plain[fixed_positions] = True
    others = sorted((c for c in others if not in_plain[source.position[c]]),
                    key=source.position.get)
    missing |= plain_missing(source, [name for name in others if source.is_numeric(name)])
    for name in others:
        if not source.is_numeric(name):
            missing |= source.isna(name)
    if not missing.any():
        return None, []
    n_missing = int(missing.sum())
    if na_action == "fail":
        raise InputError(f"{n_missing} rows have missing values in the model's columns "
                         "(na_action='fail')")
    warnings.warn(f"lmmscope: dropped {n_missing} rows with missing values (na.omit)", stacklevel=4)
    return ~missing, list(source.index[missing])


def _response(plan: TermPlan, names: ColumnNames, source, keep):
    if plan.plain:
        y = source.numeric(plan.plain[0])
        return (y if keep is None else y[keep]), plan.plain[0]
    term = plan.formulaic_terms[0]
    looked_up = [names.restore(f.expr) for f in term.factors if f.eval_method.name == "LOOKUP"]
    if looked_up and len(term.factors) == 1:
        raise InputError(f"the response {looked_up[0]!r} must be numeric")
    mm = formulaic_part(plan, names, source, keep)
    if mm.shape[1] != 1:
        raise InputError(f"the response must be one numeric column, got {mm.shape[1]}")
    return np.asarray(mm, dtype=float)[:, 0], names.restore(str(mm.columns[0]))


def _factor_levels(plan: TermPlan, source) -> dict:
    """Levels of the categorical columns the fixed part reads (to refuse unseen ones)."""
    out = {}
    for name in plan.referenced:
        if not source.is_numeric(name):
            values = source.pandas([name])[name]
            out[name] = list(values.astype("category").cat.categories)
    return out


def new_design_matrices(design: Design, newdata, need_random: bool):
    """Fixed (and random) model matrices for new rows, with the fitted encodings."""
    source = as_source(newdata, "newdata")
    needed = set(design.fixed_spec.required_variables)
    if need_random:
        needed |= set(design.random_spec.required_variables) | {design.group_name}
    unknown = sorted(v for v in needed if v not in source.position)
    if unknown:
        raise ColumnError("newdata lacks column(s): " + ", ".join(unknown))
    X = rebuild(design.fixed_spec, source, design.factor_levels)
    Z = rebuild(design.random_spec, source, {}) if need_random else None
    return X, Z
