"""The first pass over external data, and the model spec every chunk is materialised with.

Pass 1 reads only the model's columns and collects what fixes the encodings for all
later chunks: the row count, rows with missing values (dropped, as R's na.omit), the
levels of every categorical column and the cluster labels, both over the complete rows
only, as the in-memory fit sees them.  The formula is then materialised once on a
small prototype frame whose categorical columns carry the full level sets
(:func:`lmmscope.formula.build_design`), and every chunk goes through
:func:`lmmscope.formula.new_design_matrices` with that design: the same columns, in
the same order, in every chunk, file and partition.  Which columns a formula reads,
and which of them are categorical, is decided by the formula package's own planning
(:func:`lmmscope.formula.design._plans`) on the source's column names and dtypes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..formula import INTERCEPT, R_FUNCTIONS, build_design, new_design_matrices, parse_formula
from ..formula.columns import formulaic_part
from ..formula.design import _columns_of, _plans
from ..formula.names import ColumnNames
from ..formula.terms import Column
from ..frames import _numeric_dtype, as_source, factor_column
from ..exceptions import ColumnError, InputError

PROTOTYPE_ROWS = 1000  # complete rows kept from the first chunk: prototype and shift


def _planned(formula: str, table: pd.DataFrame, dot_excluded=()):
    """(parsed formula, column names, plans of the three sides) on ``table``'s columns
    and dtypes, as :func:`lmmscope.formula.build_design` plans them ('.' expanded to
    every column but the response and the grouping column)."""
    source = as_source(table)
    parsed = parse_formula(formula)
    names = ColumnNames(source.columns)
    if parsed.group not in names:
        raise ColumnError(f"unknown column(s) in formula: {parsed.group} (grouping factor)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # build_design on the prototype warns, once
        plans = _plans(parsed, names, source, dot_excluded)
    return source, parsed, names, plans


def used_columns(formula: str, meta: pd.DataFrame, dot_excluded=()) -> list:
    """The data columns a formula reads, in the data's column order ('.' expanded).

    ``meta``: a (possibly empty) frame with the data's columns and dtypes;
    ``dot_excluded``: as :func:`lmmscope.formula.build_design`'s."""
    meta = meta.rename(columns=str)
    _source, parsed, _names, plans = _planned(formula, meta, dot_excluded)
    needed = set(_columns_of(plans.response)) | set(_columns_of(plans.fixed)) \
        | set(_columns_of(plans.random)) | {parsed.group}
    used = [c for c in meta.columns if c in needed]
    for name in used:  # dates, complex numbers ...: refused by name, as in memory
        if name != parsed.group and not _numeric_dtype(meta[name].dtype):
            factor_column(meta[name], name)
    return used


def is_categorical(col: pd.Series) -> bool:
    """A column the formula encodes by levels (object, string, category), whose level
    set the first pass must collect.  The formula package hands every non-numeric
    column to formulaic (:func:`lmmscope.frames._numeric_dtype`), which encodes a bool
    column as one 0/1 column named as the column: no levels to fix, so bool is not
    categorical here (its prototype stays bool, and the names match the in-memory fit)."""
    return not _numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)


@dataclass
class FirstPassPart:
    """What one chunk (or partition) contributes to the first pass."""

    index: int
    n_rows: int
    n_missing: int
    groups: np.ndarray  # distinct cluster labels among complete rows
    levels: dict  # column -> distinct values among complete rows (categorical columns)
    infinite: list  # numeric columns holding +-inf
    head: pd.DataFrame  # first complete rows (prototype)
    # column -> its categories, for Categorical columns: their order is the level order
    # (R's factor levels), as in memory; other columns' levels are sorted
    level_order: dict = field(default_factory=dict)


def _complete_rows(frame: pd.DataFrame, used) -> np.ndarray:
    return ~frame[used].isna().any(axis=1).to_numpy()


def light_columns(meta: pd.DataFrame, used, group: str) -> list:
    """The columns pass 1 must read for labels and levels: grouping and categorical."""
    meta = meta.rename(columns=str)
    return [c for c in used if c == group or is_categorical(meta[c])]


def first_pass_part(index: int, frame: pd.DataFrame, used, group: str) -> FirstPassPart:
    """Pass-1 summary of one chunk: runs on a worker for Dask, in the loop for parquet."""
    frame = frame.rename(columns=str)
    complete = _complete_rows(frame, used)
    kept = frame[used] if complete.all() else frame.loc[complete, used]
    levels, infinite, order = {}, [], {}
    for name in used:
        col = kept[name]
        if name != group and is_categorical(col):
            factor_column(col, name)  # mixed types, dates ...: refused by name
            levels[name] = pd.unique(col.astype(object).to_numpy())
            if isinstance(col.dtype, pd.CategoricalDtype):
                order[name] = list(col.cat.categories)
        elif pd.api.types.is_numeric_dtype(col) and col.dtype != bool:
            if np.isinf(col.to_numpy(dtype=float)).any():
                infinite.append(name)
    return FirstPassPart(index, int(frame.shape[0]), int((~complete).sum()),
                         pd.unique(kept[group].to_numpy()), levels, infinite,
                         kept.head(PROTOTYPE_ROWS), order)


@dataclass
class FirstPass:
    """The combination of every chunk's :class:`FirstPassPart` (order does not matter)."""

    n_rows: int = 0
    n_missing: int = 0
    n_parts: int = 0
    groups: list = field(default_factory=list)
    levels: dict = field(default_factory=dict)
    infinite: set = field(default_factory=set)
    head_index: int = -1
    head: pd.DataFrame | None = None
    level_order: dict = field(default_factory=dict)
    order_index: dict = field(default_factory=dict)

    def add(self, part: FirstPassPart) -> None:
        for name, categories in part.level_order.items():  # the earliest chunk's order
            if part.index < self.order_index.get(name, np.inf):
                self.order_index[name], self.level_order[name] = part.index, categories
        self.n_rows += part.n_rows
        self.n_missing += part.n_missing
        self.n_parts += 1
        self.groups.append(part.groups)
        for name, values in part.levels.items():
            self.levels.setdefault(name, []).append(values)
        self.infinite.update(part.infinite)
        # The earliest chunk with complete rows gives the prototype, whatever the
        # order in which Dask partitions finish.
        if part.head.shape[0] and (self.head is None or part.index < self.head_index):
            self.head_index, self.head = part.index, part.head


def _sorted_distinct(arrays) -> np.ndarray:
    """Distinct values in np.unique's order (what the in-memory encoding uses)."""
    values = np.concatenate([np.asarray(a) for a in arrays]) if arrays else np.empty(0)
    return np.unique(values)


def _ordered_levels(values, categories) -> list:
    """The distinct values: in the order of a Categorical's ``categories`` (those with
    rows only, as in memory), else sorted (as formulaic sorts text levels)."""
    distinct = list(_sorted_distinct(values))
    if not categories:
        return distinct
    present = set(distinct)
    ordered = [c for c in categories if c in present]
    return ordered + [v for v in distinct if v not in set(ordered)]


def _refuse_stateful(*specs):
    for spec in specs:
        if spec is not None and spec.transform_state:
            raise InputError(
                "data-dependent transforms (" + ", ".join(sorted(spec.transform_state))
                + ") cannot be used with streamed or Dask data: their centre and scale "
                "would come from one chunk; transform the column before fitting")


class StreamSpec:
    """The model's encodings, fixed by the first pass: turns any chunk into arrays."""

    def __init__(self, formula: str, used: list, summary: FirstPass, na_action: str,
                 provisional: bool = False, dot_excluded=()):
        if summary.infinite:
            name = sorted(summary.infinite)[0]
            raise InputError(f"column {name!r} contains infinite values")
        # provisional: pass 1 read only the grouping and categorical columns; the rows
        # with missing values are counted, and the labels and levels checked, in pass 2.
        self.provisional = provisional
        if summary.n_missing and na_action == "fail":
            raise InputError(f"{summary.n_missing} rows have missing values in the model's "
                             "columns (na_action='fail')")
        if summary.head is None:
            raise InputError("no rows left after removing missing values")
        self.used = used
        self.n_rows = summary.n_rows - summary.n_missing
        self.n_dropped = summary.n_missing
        try:
            self.group_labels = _sorted_distinct(summary.groups)
        except TypeError:  # numbers in one chunk, text in another: no order between them
            raise InputError("the grouping column mixes label types (numbers and text) across "
                             "chunks or partitions; give it one type (e.g. .astype(str))") from None
        self.levels = {name: _ordered_levels(vals, summary.level_order.get(name))
                       for name, vals in summary.levels.items()}
        prototype = summary.head.copy()
        for name, levels in self.levels.items():
            prototype[name] = pd.Categorical(prototype[name].astype(object), categories=levels)
        self.design = build_design(formula, prototype, na_action="fail", all_levels=True,
                                   dot_excluded=dot_excluded)
        self.design.n_dropped = summary.n_missing
        self._response_plan(formula, prototype)
        _refuse_stateful(self.design.fixed_spec.model_spec, self.design.random_spec.model_spec,
                         self._response_spec)
        self.intercept = (self.design.fixed_names.index(INTERCEPT)
                          if self.design.fixed_spec.intercept else None)
        X, y, _Z, _codes = self.arrays(summary.head)
        # Any shift close to the column means keeps the cross-products well conditioned;
        # the first complete rows give it without another pass.  Every chunk's
        # statistics share it (so they add up); the intercept column is never shifted.
        # Without an intercept the statistics are not shifted (as in memory).
        if self.intercept is None:
            self.x_shift, self.y_shift = np.zeros(X.shape[1]), 0.0
        else:
            self.x_shift = X.mean(axis=0)
            self.x_shift[self.intercept] = 0.0
            self.y_shift = float(y.mean())
        self.design = self.design.without_data()  # the spec travels to every worker

    def _response_plan(self, formula: str, prototype: pd.DataFrame) -> None:
        """How a chunk's response is computed, as build_design computes y: a numeric
        column read as it is, or formulaic's (stateless) transform of its columns, with
        the model spec fitted on the prototype."""
        source, _parsed, names, plans = _planned(formula, prototype)
        term = plans.response.terms[0]
        self._response_spec, self._response_placeholders = None, {}
        if isinstance(term, Column):
            self._response_column = term.name
            return
        self._response_column = None
        mm = formulaic_part(plans.response, names, source, None)
        self._response_spec = mm.model_spec
        wanted = set(plans.response.referenced)
        self._response_placeholders = {ph: c for ph, c in names.used.items() if c in wanted}

    def _response(self, frame: pd.DataFrame) -> np.ndarray:
        if self._response_column is not None:
            return frame[self._response_column].to_numpy(dtype=float, na_value=np.nan)
        placed = pd.DataFrame({ph: frame[c] for ph, c in self._response_placeholders.items()},
                              copy=False)
        values = self._response_spec.get_model_matrix(placed, na_action="ignore",
                                                      context=R_FUNCTIONS)
        return np.asarray(values, dtype=float)[:, 0]

    @property
    def names(self) -> list:
        return self.design.fixed_names

    def complete(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The chunk's rows with no missing value in the model's columns (na.omit)."""
        frame = frame.rename(columns=str)
        complete = _complete_rows(frame, self.used)
        return frame[self.used] if complete.all() else frame.loc[complete, self.used]

    def level_counts(self, kept: pd.DataFrame) -> dict:
        """Complete rows per level of every categorical column (to check the first pass)."""
        return {name: np.bincount(pd.Categorical(kept[name].astype(object),
                                                 categories=levels).codes + 1,
                                  minlength=len(levels) + 1)[1:]
                for name, levels in self.levels.items()}

    def arrays(self, frame: pd.DataFrame):
        """(X, y, Z, global cluster codes) of a chunk's complete rows."""
        return self.design_arrays(self.complete(frame))

    def design_arrays(self, frame: pd.DataFrame):
        """(X, y, Z, global cluster codes) of complete rows.

        The formula package reads plain numeric columns as they are (no formulaic) and
        encodes the other terms with the prototype's model spec, whose categorical
        columns carry the first pass's full level sets."""
        frame = frame.copy(deep=False)
        for name, levels in self.levels.items():
            # The full level set of the first pass, not chunk-local categories or
            # Arrow-backed strings, decides the encoding
            frame[name] = pd.Categorical(frame[name], categories=levels)
        X, Z = new_design_matrices(self.design, frame, need_random=True)
        y = self._response(frame)
        for what, M, names in (("X", X, self.design.fixed_names),
                               ("Z", Z, self.design.random_names)):
            bad = ~np.isfinite(M).all(axis=0)
            if bad.any():
                raise InputError(f"{what} contains NaN or infinite values in column(s): "
                                 + ", ".join(n for n, b in zip(names, bad) if b))
        if not np.isfinite(y).all():
            raise InputError("the response contains NaN or infinite values")
        return X, y, Z, self.codes(frame[self.design.group_name].to_numpy())

    def codes(self, groups: np.ndarray) -> np.ndarray:
        """Positions of the labels among the first pass's cluster labels."""
        codes = np.searchsorted(self.group_labels, groups)
        codes = np.clip(codes, 0, self.group_labels.size - 1)
        if groups.size and not np.array_equal(self.group_labels[codes], groups):
            raise InputError("a chunk holds cluster labels not seen in the first pass: "
                             "the data changed while being read")
        return codes.astype(np.int64)
