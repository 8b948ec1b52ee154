"""One side of a model (fixed or random) as a float64 matrix, and again on new rows.

Plain numeric columns are read from the table in runs of neighbours (one view of a
pandas block when the run lies in one) and copied once into a column-major matrix; when
the side is nothing but one such run, that view *is* the matrix.  The other terms are
materialised by formulaic on a small frame of the columns they read, under placeholder
names, and slotted in at their places.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ..control import DEFAULT_PERFORMANCE, Performance
from ..frames import factor_column
from .names import ColumnNames, plain_message
from .terms import ColumnRun, TermPlan
from ..exceptions import InputError

INTERCEPT = "Intercept"


def intercept_index(names):
    """The intercept's position among ``names``, or None."""
    names = list(names)
    return names.index(INTERCEPT) if INTERCEPT in names else None

# Math functions R users write in formulas; formulaic's own context has only Python
# builtins, ``np`` and its transforms (log, exp, C, poly, scale, center, ...).
R_FUNCTIONS = {name: getattr(np, name) for name in
               ("sqrt", "exp", "log", "log2", "log10", "log1p", "expm1", "abs", "sin", "cos", "tan")}


@dataclass
class SideSpec:
    """What rebuilds one side's columns on new rows (picklable, no training data)."""

    intercept: bool
    # ("columns", [data columns]) per run of plain columns (one list, not a tuple per
    # column: 10^4 small objects per fit would wake the garbage collector), ("term",
    # slice of the formulaic matrix) per other term
    entries: list
    names: list  # the design's column names, intercept first
    model_spec: object  # formulaic ModelSpec of the formulaic terms, or None
    placeholders: dict  # placeholder -> data column, for the formulaic terms
    required_variables: set  # data columns the side reads


def plain_missing(source, columns: list, positions=None) -> np.ndarray:
    """Rows holding NaN in any of the columns (read in place, run by run)."""
    missing = np.zeros(source.n_rows, dtype=bool)
    for start, block in source.column_runs(columns, positions):
        missing |= _nan_rows(block, columns[start:start + block.shape[1]], source.performance)
    return missing


def _nan_rows(block: np.ndarray, names,
              performance: Performance = DEFAULT_PERFORMANCE) -> np.ndarray:
    """Rows holding NaN; raise on infinite values.  One pass sums each column (a sum is
    non-finite iff a term is, or it overflowed), then only those columns are inspected,
    in order (so the first column holding an infinity is the one named).  numpy's own
    sum, not BLAS: as fast for this memory-bound pass, and no thread pool to wake.
    ``performance.suspect_chunk`` columns are inspected at once: bounds the copy when
    many hold NaN."""
    missing = np.zeros(block.shape[0], dtype=bool)
    if block.shape[1] == 0:
        return missing
    with np.errstate(over="ignore", invalid="ignore"):
        sums = np.add.reduce(block, axis=0)
    suspect = np.flatnonzero(~np.isfinite(sums))
    step = performance.suspect_chunk
    for lo in range(0, suspect.size, step):
        columns = suspect[lo:lo + step]
        values = block[:, columns]
        bad = np.isinf(values).any(axis=0)
        if bad.any():
            raise InputError(f"column {names[int(columns[np.flatnonzero(bad)[0]])]!r} "
                             "contains infinite values")
        missing |= np.isnan(values).any(axis=1)
    return missing


def formulaic_part(plan: TermPlan, names: ColumnNames, source, keep, all_levels=False):
    """formulaic's matrix of the plan's non-plain terms (on the kept rows), or None.
    ``all_levels``: the categoricals' level sets are complete (a streamed fit's
    prototype), so levels without rows here are kept."""
    if not plan.formulaic_terms:
        return None
    from formulaic import model_matrix
    from formulaic.errors import FormulaicError
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Factor, Term
    frame = placeholder_frame(plan, names, source)
    if keep is not None:
        frame = frame.iloc[np.flatnonzero(keep)]
    if not all_levels:
        frame = _without_unused_levels(frame)
    margins = {m.name for m in plan.margins()}
    terms = [Term([Factor("1", eval_method="literal")])] if plan.intercept else []
    for item in plan.items:
        if isinstance(item, ColumnRun):
            terms += [Term([Factor(names.variable(n), eval_method="lookup")])
                      for n in item.names if n in margins] if margins else []
        else:
            terms.append(item)
    try:
        return model_matrix(SimpleFormula(terms, _ordering="none"), frame, na_action="raise",
                            context=R_FUNCTIONS)
    except (FormulaicError, ValueError, TypeError, NameError, KeyError, AttributeError) as exc:
        raise InputError("cannot evaluate the formula's terms: " + plain_message(exc, names)) from None


def placeholder_frame(plan: TermPlan, names: ColumnNames, source) -> pd.DataFrame:
    wanted = set(plan.referenced) | {t.name for t in plan.margins()}
    columns = [c for c in source.columns if c in wanted]
    frame = _as_factors(source.pandas(columns), source)
    mapping = {ph: col for ph, col in names.used.items() if col in wanted}
    return pd.DataFrame({ph: frame[col] for ph, col in mapping.items()}, copy=False)


def _as_factors(frame: pd.DataFrame, source) -> pd.DataFrame:
    """Non-numeric columns as formulaic must see them (:func:`frames.factor_column`)."""
    changed = {c: factor_column(frame[c], c) for c in frame.columns if not source.is_numeric(c)}
    changed = {c: v for c, v in changed.items() if v is not frame[c]}
    return frame.assign(**changed) if changed else frame


def _without_unused_levels(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals without the levels no (kept) row has, as R's model.frame drops them
    (drop.unused.levels): an unused first level would be the reference, its dummies
    collinear with the intercept."""
    changed = {c: frame[c].cat.remove_unused_categories() for c in frame.columns
               if isinstance(frame[c].dtype, pd.CategoricalDtype)
               and frame[c].nunique(dropna=True) < len(frame[c].cat.categories)}
    return frame.assign(**changed) if changed else frame


def side_matrix(plan: TermPlan, names: ColumnNames, source, mm, keep, n_rows: int,
                positions=None):
    """(matrix without the intercept column, SideSpec): the plain columns read from the
    table in runs (one run that is the whole side is used as it is), formulaic's slotted in.
    ``positions``: the table positions of ``plan.plain``, when known already."""
    runs = iter(source.column_runs(plan.plain, positions))
    first, second = next(runs, None), next(runs, None)
    runs = itertools.chain([r for r in (first, second) if r is not None], runs)
    entries, out_names, plain_pos = _layout(plan, names, mm)
    width = len(out_names) - plan.intercept
    if mm is None and second is None and first is not None and first[1].shape[1] == width:
        matrix = first[1] if keep is None else first[1][keep]  # the table's own block
    else:
        matrix = _assemble(entries, runs, plain_pos, mm, keep, n_rows, width)
    wanted = set(plan.referenced) | {m.name for m in plan.margins()}
    required = set(plan.plain)
    required.update(plan.referenced)
    spec = SideSpec(plan.intercept, entries, out_names, None if mm is None else mm.model_spec,
                    {ph: c for ph, c in names.used.items() if c in wanted} if mm is not None else {},
                    required)
    return matrix, spec


def _layout(plan: TermPlan, names: ColumnNames, mm):
    """(SideSpec entries, column names, destination of each plain column): one entry
    and one block of names per run of plain columns."""
    entries, out_names, plain_pos = [], [INTERCEPT] if plan.intercept else [], []
    width = 0
    for item in plan.items:
        if isinstance(item, ColumnRun):
            entries.append(("columns", item.names))
            # a data column named Intercept is R's `Intercept`
            out_names += ([f"`{INTERCEPT}`" if n == INTERCEPT else n for n in item.names]
                          if INTERCEPT in item.names else item.names)
            plain_pos.append(np.arange(width, width + len(item.names)))
            width += len(item.names)
        else:
            sl = mm.model_spec.term_slices[item]
            entries.append(("term", sl))
            out_names.extend(names.restore(str(c)) for c in mm.columns[sl])
            width += sl.stop - sl.start
    return entries, out_names, np.concatenate(plain_pos) if plain_pos else np.zeros(0, np.int64)


def _assemble(entries, runs, plain_pos, mm, keep, n_rows, width):
    """One column-major float64 matrix: plain runs copied once, formulaic's columns slotted in."""
    matrix = np.empty((width, n_rows)).T
    for start, block in runs:
        dest = plain_pos[start:start + block.shape[1]]
        rows = block if keep is None else block[keep]
        if dest.size and dest[-1] - dest[0] == dest.size - 1:
            matrix[:, dest[0]:dest[-1] + 1] = rows
        else:
            matrix[:, dest] = rows
    if mm is not None:
        values, pos = np.asarray(mm, dtype=float), 0
        for kind, what in entries:
            if kind == "term":
                matrix[:, pos:pos + what.stop - what.start] = values[:, what]
                pos += what.stop - what.start
            else:
                pos += len(what)
    return matrix


def rebuild(spec: SideSpec, source, factor_levels: dict) -> np.ndarray:
    """The side's full matrix (intercept included) on new rows with the fitted encodings."""
    n = source.n_rows
    out = np.empty((n, len(spec.names)))
    pos = 0
    if spec.intercept:
        out[:, 0], pos = 1.0, 1
    values = _formulaic_on_new_rows(spec, source, factor_levels)
    for kind, what in spec.entries:
        if kind == "columns":
            for start, block in source.column_runs(what):  # runs of neighbours, as fitted
                out[:, pos + start:pos + start + block.shape[1]] = block
            pos += len(what)
        else:
            width = what.stop - what.start
            out[:, pos:pos + width] = values[:, what]
            pos += width
    return out


def _as_fitted_levels(column: pd.Series, levels, name: str) -> pd.Series:
    """New data's factor values matched to the fitted levels by value, then by text (the
    integer 3 where "3" was fitted, as cluster labels are matched); unseen ones refused."""
    seen, by_text = set(levels), {str(v): v for v in levels}
    values = column.astype(object)
    if all(pd.isna(v) or v in seen for v in values):
        return column  # as fitted (its dtype too: formulaic codes a bool column as 0/1)
    mapped = [v if pd.isna(v) or v in seen else by_text.get(str(v), v) for v in values]
    unseen = sorted({v for v in mapped if not pd.isna(v) and v not in seen}, key=str)
    if unseen:
        raise InputError(f"newdata column {name!r} has level(s) not seen in fitting: "
                         + ", ".join(map(repr, unseen)) + "; fitted levels: "
                         + ", ".join(map(repr, list(levels)[:10])))
    return pd.Series(mapped, index=column.index, dtype=object)


def _formulaic_on_new_rows(spec: SideSpec, source, factor_levels: dict):
    if spec.model_spec is None:
        return None
    frame = _as_factors(source.pandas(sorted(set(spec.placeholders.values()),
                                             key=source.columns.index)), source)
    for name, levels in factor_levels.items():
        if name in frame.columns:
            frame = frame.assign(**{name: _as_fitted_levels(frame[name], levels, name)})
    frame = pd.DataFrame({ph: frame[c] for ph, c in spec.placeholders.items()}, copy=False)
    from formulaic.errors import DataMismatchWarning, FormulaicError
    names = ColumnNames([])
    def restored(exc):  # placeholders back to the columns they stand for
        text = str(exc)
        for placeholder, column in spec.placeholders.items():
            text = text.replace(placeholder, column)
        return plain_message(text, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            return np.asarray(spec.model_spec.get_model_matrix(frame, na_action="ignore",
                                                                context=R_FUNCTIONS), dtype=float)
        except DataMismatchWarning as exc:
            raise InputError(f"newdata does not match the fitted model: {restored(exc)}") from None
        except (FormulaicError, ValueError, TypeError, NameError, KeyError) as exc:
            raise InputError("cannot evaluate the formula's terms on newdata: "
                             + restored(exc)) from None
