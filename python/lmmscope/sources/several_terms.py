"""Several random-effects terms (crossed, nested ``a/b``, ``||``) on parquet files or a
Dask DataFrame: the additive statistics summed over chunks, then a
:class:`~lmmscope.specification.ModelSpec` with the :class:`StreamedSeveralTerms`
structure for :func:`lmmscope.engine.fit` (the in-memory refit and selection).

Pass 1 reads the model's columns once and fixes what every chunk is encoded with: the
levels of each grouping factor (an ``a:b`` factor's labels formed per row as in
memory), the levels of every categorical column, over the rows complete in every
term (lme4's na.omit over the whole model frame).  Each term is then a one-term
:class:`~lmmscope.sources.spec.StreamSpec` (its formula as :func:`lmmscope.reterms.
build_reterms` writes it), so a chunk's X, y and each term's (codes, Z_i) come out in
the in-memory fit's columns, level order and term order (lme4's: by decreasing levels).

Pass 2 sums the statistics of :class:`lmmscope.sparse_pls.SparseStats` (Z'Z sparse,
Z'X, Z'y, X'X, X'y, y'y) chunk by chunk; y is shifted by the first rows' mean in the
chunks and moved onto the mean of all rows at the end (as in memory, where an
intercept absorbs it).  Z'Z and Z'X must fit in memory: their size is bounded from
the level counts before pass 2 and a model above :func:`memory_limit` is refused,
naming the factor.  The debiased inference of a selection takes a third pass for the
scores (:meth:`StreamedSeveralTermsData.inference_statistics`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..exceptions import ColumnError, InputError
from ..formula.bars import parse_bar_terms
from .. import engine
from ..multiterm import MultiTermResult
from ..multiterm_scope import MultiTermScopeResult, SeveralTermsData, whitened_scores
from ..random_effects import SeveralTerms
from ..reterms import (ReTerm, ReTerms, _group_values, _term_formula, grouping_columns,
                       stacked_z)
from ..sparse_pls import SparseStats
from ..specification import (ModelSpec, StatisticsData, TuningArguments, intercept_columns,
                             parse_method, resolve_always, with_random_slopes)
from ..tuning import Progress
from .fit import _meta
from .results import _StreamedMethods, _not_available
from .spec import FirstPass, StreamSpec, _complete_rows, first_pass_part, used_columns

# bytes per entry of Z'Z while it is summed: 16 a stored entry (value, row index of up to
# int64), three copies at the peak (the total, as many entries pending, the merged sum)
SPARSE_ENTRY_BYTES = 48


def memory_limit() -> int:
    """The largest statistics accepted: half of the machine's physical memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class TermsLayout:
    """The columns of a several-term formula: the data columns to read, each term's
    one-term formula and columns, and the ``a:b`` grouping factors formed per chunk."""

    def __init__(self, formula: str, meta: pd.DataFrame):
        bars = parse_bar_terms(formula)
        self.bars = bars
        for term in bars.terms:
            for column in term.group:
                if column not in meta.columns:
                    raise ColumnError(f"unknown column(s) in formula: {column} (grouping factor)")
        # a:b factors not in the data: formed per chunk from their columns (object labels)
        self.derived = {t.group_name: t.group for t in bars.terms
                        if len(t.group) > 1 and t.group_name not in meta.columns}
        meta = meta.assign(**{name: pd.Series([], dtype=object) for name in self.derived})
        first = bars.terms[0]
        # as build_reterms: the fixed part with the first term ('.' is every column but the
        # response and the grouping factors), then each term with a fixed intercept only
        self.dot_excluded = grouping_columns(bars)
        self.formulas = [_term_formula(bars.response, bars.fixed, first, first.group_name)]
        self.term_used = [used_columns(self.formulas[0], meta, self.dot_excluded)]
        for term in bars.terms:
            self.formulas.append(_term_formula(bars.response, "1", term, term.group_name))
            self.term_used.append(used_columns(self.formulas[-1], meta))
        self.groups = [first.group_name] + [t.group_name for t in bars.terms]
        used = {c for cols in self.term_used for c in cols}
        self.used = [c for c in meta.columns if c in used]  # complete rows over these
        parts = {c for name in self.derived for c in self.derived[name]}
        self.read = [c for c in meta.columns if (c in used or c in parts)
                     and c not in self.derived]

    def with_groups(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The chunk with its ``a:b`` grouping factors, labelled as in memory."""
        frame = frame.rename(columns=str)
        if not self.derived:
            return frame
        return frame.assign(**{name: _group_values(frame, columns)
                               for name, columns in self.derived.items()})

    def complete(self, frame: pd.DataFrame, grouped: bool = False) -> pd.DataFrame:
        """The chunk's rows complete in every term (lme4's na.omit over the model frame);
        ``grouped``: the frame already has its ``a:b`` factors."""
        frame = frame if grouped else self.with_groups(frame)
        complete = _complete_rows(frame, self.used)
        return frame[self.used] if complete.all() else frame.loc[complete, self.used]


def _first_pass_chunk(layout: TermsLayout, index: int, frame: pd.DataFrame):
    """Pass 1 of one chunk: the one-term summary (levels, missing rows, prototype rows)
    over every term's columns, and the labels of each grouping factor."""
    frame = layout.with_groups(frame)
    part = first_pass_part(index, frame, layout.used, layout.groups[0])
    kept = layout.complete(frame, grouped=True)
    labels = {g: pd.unique(kept[g].to_numpy()) for g in dict.fromkeys(layout.groups)}
    return part, labels


def _position(terms, term) -> int:
    return next(i for i, t in enumerate(terms) if t is term)


class SeveralTermsSpec:
    """The encodings fixed by pass 1: one :class:`StreamSpec` per term, the term order
    and layout of Z (:class:`~lmmscope.reterms.ReTerms`, without rows)."""

    def __init__(self, layout: TermsLayout, summary: FirstPass, labels: dict, na_action: str):
        self.layout = layout
        self.specs = []
        for formula, used, group in zip(layout.formulas, layout.term_used, layout.groups):
            part = dataclasses.replace(
                summary, groups=labels[group],
                levels={n: v for n, v in summary.levels.items() if n in used and n != group},
                level_order={n: v for n, v in summary.level_order.items() if n in used},
                infinite={n for n in summary.infinite if n in used},
                head=None if summary.head is None else summary.head[used])
            self.specs.append(StreamSpec(formula, used, part, na_action,
                                         dot_excluded=layout.dot_excluded))
        self.fixed, self.specs = self.specs[0], self.specs[1:]
        self.n_rows, self.n_dropped = self.fixed.n_rows, self.fixed.n_dropped
        terms = [ReTerm(t.group_name, t.group, spec.group_labels, np.zeros(0, np.int64),
                        list(spec.design.random_names),
                        np.zeros((0, len(spec.design.random_names))), spec.design)
                 for t, spec in zip(layout.bars.terms, self.specs)]
        self.reterms = ReTerms(terms)  # lme4's order: by decreasing number of levels
        self.order = [_position(terms, t) for t in self.reterms.terms]
        self.intercept = self.fixed.intercept
        self.y_shift = self.fixed.y_shift  # the first rows' mean: y - it is near centred

    @property
    def design(self):
        return self.fixed.design

    @property
    def names(self) -> list:
        return self.design.fixed_names

    def arrays(self, frame: pd.DataFrame):
        """(X, y, Z sparse rows x q, each term's level codes, the rows kept) of a chunk's
        complete rows, in the in-memory layout and term order."""
        kept = self.layout.complete(frame)
        X, y, _Z, _codes = self.fixed.design_arrays(kept[self.fixed.used])
        blocks = [spec.design_arrays(kept[spec.used])[2:][::-1] for spec in self.specs]
        blocks = [blocks[i] for i in self.order]
        return X, y, stacked_z(blocks, self.reterms.Gp), [c for c, _Z in blocks], kept

    def check_size(self, n_obs: int, limit: int | None = None) -> None:
        """Refuse statistics that would not fit in memory: Z'X (q x p dense) and Z'Z
        (sparse; its entries bounded by each term's diagonal blocks and, between two
        terms, by the pairs of levels that rows can join), estimated from the level
        counts before the statistics pass."""
        what = "half the physical memory" if limit is None else "the limit given"
        limit = memory_limit() if limit is None else limit
        terms = self.reterms.terms
        p = len(self.names)
        entries = [t.n_levels * t.p * t.p for t in terms]
        for i, s in enumerate(terms):
            for j in range(i + 1, len(terms)):
                t = terms[j]
                pairs = min(n_obs, s.n_levels * t.n_levels) * s.p * t.p
                entries[i] += pairs  # each pair of terms shares its blocks
                entries[j] += pairs
        share = [e * SPARSE_ENTRY_BYTES + t.n_levels * t.p * p * 8
                 for e, t in zip(entries, terms)]
        total = sum(share)
        if total > limit:
            big = terms[int(np.argmax(share))]
            raise InputError(
                f"the statistics of this model need up to {total / 2**30:.1f} GiB in memory "
                f"(Z'Z sparse and Z'X: {self.reterms.q} random effects x {p} fixed effects), "
                f"more than the {limit / 2**30:.1f} GiB allowed ({what}): "
                f"grouping factor "
                f"{big.group_name!r} has {big.n_levels} levels ({big.n_levels * big.p} random "
                "effects). Several random-effects terms on streamed data need Z'Z in memory; "
                "fit fewer levels (e.g. one term, which streams by cluster), or a sample")


@dataclasses.dataclass
class ChunkStatistics:
    """One chunk's sums (y shifted by the spec's y_shift), its rows dropped for missing
    values, and for each term its distinct (level, outer level) pairs."""

    stats: SparseStats
    n_dropped: int
    nesting: dict


def _chunk_statistics(spec: SeveralTermsSpec, index: int, frame: pd.DataFrame):
    X, y, Z, codes, kept = spec.arrays(frame)
    y = y - spec.y_shift
    Zt = Z.T.tocsr()
    stats = SparseStats((Zt @ Z).tocsc(), np.asarray(Zt @ X), Zt @ y, X.T @ X, X.T @ y,
                        float(y @ y), y.size, spec.y_shift)
    return ChunkStatistics(stats, int(frame.shape[0] - kept.shape[0]), _level_pairs(spec, codes))


def _level_pairs(spec: SeveralTermsSpec, codes: list) -> dict:
    """For the nesting test of inference: the distinct (level, outer level) pairs of each
    term, the outer factor being the one with the fewest levels."""
    outer = int(np.argmin([t.n_levels for t in spec.reterms.terms]))
    n_outer = spec.reterms.terms[outer].n_levels
    return {i: np.unique(c * n_outer + codes[outer]) for i, c in enumerate(codes)}


class StatisticsSum:
    """The running sums of the chunks' statistics.  The chunks' Z'Z are merged into the
    total in batches, once their entries outnumber the total's: adding each chunk's into
    the total would cost the total's size per chunk.  Nesting: the outer level of each
    term's level, until a level is seen with two (then the terms are crossed)."""

    def __init__(self, spec: SeveralTermsSpec):
        q, p = spec.reterms.q, len(spec.names)
        self.total = ChunkStatistics(
            SparseStats(sp.csc_matrix((q, q)), np.zeros((q, p)), np.zeros(q), np.zeros((p, p)),
                        np.zeros(p), 0.0, 0, spec.y_shift), 0, {})
        self.n_outer = min(t.n_levels for t in spec.reterms.terms)
        self.outer_of = [np.full(t.n_levels, -1, np.int64) for t in spec.reterms.terms]
        self.nested = True
        self._pending, self._pending_entries = [], 0
        self.merge_entries = 2**16  # merge no smaller batches (their overhead dominates)

    def _merge(self) -> None:
        t = self.total.stats
        parts = self._pending
        while len(parts) > 1:  # pairwise (linear merges of sorted columns), then the total
            parts = [sum(parts[i:i + 2][1:], parts[i]) for i in range(0, len(parts), 2)]
        if parts:
            t.ZtZ = (t.ZtZ + parts[0]).tocsc()
        self._pending, self._pending_entries = [], 0

    def add(self, part: ChunkStatistics) -> None:
        t, s = self.total.stats, part.stats
        self._pending.append(s.ZtZ)
        self._pending_entries += s.ZtZ.nnz
        if self._pending_entries > max(t.ZtZ.nnz, self.merge_entries):
            self._merge()
        t.ZtX += s.ZtX
        t.Zty += s.Zty
        t.XtX += s.XtX
        t.Xty += s.Xty
        t.yty += s.yty
        t.n_obs += s.n_obs
        self.total.n_dropped += part.n_dropped
        for i, pairs in part.nesting.items():
            if not self.nested:
                break
            levels, outer = np.divmod(pairs, self.n_outer)  # pairs are distinct
            known = self.outer_of[i][levels]
            self.nested = (np.unique(levels).size == levels.size
                           and not np.any((known >= 0) & (known != outer)))
            self.outer_of[i][levels] = outer

    def statistics(self, spec: SeveralTermsSpec) -> SparseStats:
        """The sums as :meth:`SparseStats.from_arrays` makes them: y centred on the mean
        of all rows where the model has an intercept (moved from the first rows' mean)."""
        self._merge()
        t, i = self.total.stats, spec.intercept
        Xty, Zty, yty, y_shift = t.Xty, t.Zty, t.yty, 0.0
        if i is not None:
            e = t.Xty[i] / t.n_obs  # the mean of y - spec.y_shift
            Xty = Xty - e * t.XtX[:, i]
            Zty = Zty - e * t.ZtX[:, i]
            yty = yty - e * t.Xty[i]
            y_shift = spec.y_shift + e
        return dataclasses.replace(t, ZtZ=t.ZtZ.tocsc(), Zty=Zty, Xty=Xty, yty=float(yty),
                                   y_shift=float(y_shift))


@dataclasses.dataclass
class SeveralTermsModel:
    spec: SeveralTermsSpec
    stats: SparseStats
    nested: bool  # the outermost factor nests every other term's


def read_model(source, formula: str, na_action: str, progress,
               limit: int | None = None) -> SeveralTermsModel:
    """Passes 1 and 2 over the source: the spec and the summed statistics."""
    if na_action not in ("omit", "fail"):
        raise InputError("na_action must be 'omit' or 'fail'")
    layout = TermsLayout(formula, _meta(source))
    summary, labels = FirstPass(), {}

    def add_first(result):
        part, chunk_labels = result
        summary.add(part)
        for g, values in chunk_labels.items():
            labels.setdefault(g, []).append(values)

    source.map_combine(layout.read, _first_pass_chunk, (layout,), add_first, progress,
                       "pass 1 (levels of every grouping factor, missing rows)")
    if summary.head is None:
        raise InputError("no rows left after removing missing values")
    spec = SeveralTermsSpec(layout, summary, labels, na_action)
    spec.check_size(spec.n_rows, limit)
    progress(f"{spec.reterms.q} random effects: " + ", ".join(
        f"{t.group_name} ({t.n_levels} levels)" for t in spec.reterms.terms))
    total = StatisticsSum(spec)
    source.map_combine(layout.read, _chunk_statistics, (spec,), total.add, progress,
                       "pass 2 (Z'Z, Z'X, Z'y, X'X, X'y, y'y)")
    read = total.total
    n_obs = read.stats.n_obs
    if n_obs + read.n_dropped != spec.n_rows + spec.n_dropped or n_obs != spec.n_rows:
        raise InputError(f"the statistics pass read {n_obs + read.n_dropped} rows, the "
                         f"first pass {spec.n_rows + spec.n_dropped}: the data changed while "
                         "being read")
    if spec.n_dropped:
        warnings.warn(f"lmmscope: dropped {spec.n_dropped} rows with missing values (na.omit)",
                      stacklevel=4)
    spec.design.n_dropped = spec.n_dropped
    return SeveralTermsModel(spec, total.statistics(spec), total.nested)


class StreamedMultiTermResult(MultiTermResult):
    """:func:`lmmscope.lmm` with several terms on parquet files or a Dask DataFrame:
    everything but what needs the rows (``fitted``, ``residuals``, ``predict()``
    without newdata)."""

    def __init__(self, mixed, design, reterms, kept, dropped):
        super().__init__(mixed, design, np.zeros((0, len(kept))), None, reterms, kept, dropped)

    fitted = _StreamedMethods.fitted
    residuals = _StreamedMethods.residuals

    def predict(self, newdata=None, level: int = 0, allow_new_levels: bool = False,
                re_form=None):
        if newdata is None:
            _not_available("predict() without newdata", "pass the rows as newdata")
        return super().predict(newdata, level=level, allow_new_levels=allow_new_levels,
                               re_form=re_form)


class StreamedSeveralTerms(SeveralTerms):
    """The several-term structure on statistics summed over chunks: results without the
    rows (:class:`StreamedMultiTermResult`, :class:`StreamedMultiTermScopeResult`)."""

    def scope_result(self, spec, sel, mixed, unpenalised, columns, dropped, backend):
        return StreamedMultiTermScopeResult(sel, mixed, spec.design, self.reterms,
                                            list(spec.names), unpenalised, columns, backend,
                                            dropped)

    def lmm_result(self, spec, fit, kept, dropped):
        return StreamedMultiTermResult(fit, spec.design, self.reterms, kept, dropped)


def _streamed_spec(model: SeveralTermsModel, source, *, reml, control, verbose,
                   unpenalised=(), tuning=None) -> ModelSpec:
    spec = model.spec
    structure = StreamedSeveralTerms(spec.reterms)
    first = spec.reterms.terms[0]
    data = StatisticsData(StreamedSeveralTermsData.from_model(model, source, control), source,
                          spec)
    return ModelSpec(spec.names, structure.random_names, first.group_name, first.levels, data,
                     reml=reml, unpenalised=unpenalised, tuning=tuning, control=control,
                     design=spec.design, verbose=verbose, random_effects=structure)


def fit_lmm_several_terms(source, formula, *, method, na_action, verbose=False, control=None):
    """:func:`lmmscope.lmm` with several terms on a parquet or Dask source."""
    progress = Progress(verbose)
    progress(f"reading {source.describe()}")
    reml = parse_method(method)
    model = read_model(source, formula, na_action, progress)
    return engine.fit(_streamed_spec(model, source, reml=reml, control=control,
                                     verbose=verbose), progress)


class StreamedSeveralTermsData(SeveralTermsData):
    """The selection's backend on summed statistics; inference's scores read the
    source once more (the nesting of the factors was recorded in pass 2)."""

    @classmethod
    def from_model(cls, model: SeveralTermsModel, source, control=None):
        data = cls.from_statistics(model.stats, model.spec.reterms, model.spec.intercept,
                                   control)
        data._model, data._source = model, source
        return data

    def outermost_factor(self):
        if not self._model.nested:
            return None
        return min(self.reterms.terms, key=lambda t: t.n_levels)

    def inference_statistics(self, a, beta, progress=None, outer=None):
        """As in memory; the scores by one more pass over the source (which must still
        be readable)."""
        outer = self.inference_factor(outer)
        G, shift, direction = self.inference_parts(a, beta)
        spec = self._model.spec
        position = _position(self.reterms.terms, outer)
        scores = np.zeros((outer.n_levels, self.p))

        def add(part):
            scores[:] += part

        self._source.map_combine(spec.layout.read, _chunk_scores,
                                 (spec, position, beta, shift, a, direction), add,
                                 progress or Progress(False), "inference pass (scores)")
        return G, scores


def _chunk_scores(spec, position, beta, shift, a, direction, index, frame):
    X, y, Z, codes, _kept = spec.arrays(frame)
    return whitened_scores(X, y, Z, codes[position], spec.reterms.terms[position].n_levels,
                           beta, shift, a, direction)


class StreamedMultiTermScopeResult(MultiTermScopeResult):
    """:func:`lmmscope.lmm_scope` with several terms on parquet files or a Dask DataFrame."""

    def __init__(self, selection, mixed, design, reterms, names, unpenalised, columns, data,
                 dropped=()):
        super().__init__(selection, mixed, design, np.zeros((0, len(names))), None, reterms,
                         names, unpenalised, columns, list(dropped), data)

    fitted = StreamedMultiTermResult.fitted
    residuals = StreamedMultiTermResult.residuals
    predict = StreamedMultiTermResult.predict


def fit_scope_several_terms(source, formula, *, k, a, always, criterion, k_max, cv_folds,
                            a_grid, method, na_action, random_state, verbose,
                            penalize_random_slopes=False, control=None):
    """:func:`lmmscope.lmm_scope` with several terms on a parquet or Dask source."""
    progress = Progress(verbose)
    progress(f"reading {source.describe()}")
    tuning = TuningArguments(k, a, criterion, k_max, cv_folds, a_grid, random_state)
    reml = parse_method(method)
    SeveralTerms.check_tuning(tuning)  # before reading the data
    model = read_model(source, formula, na_action, progress)
    names = model.spec.names
    if not names:
        raise InputError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = resolve_always(always, names, intercept_columns(names))
    random_names = [c for t in model.spec.reterms.terms for c in t.cnms]
    unpen = with_random_slopes(names, random_names, unpen, tuning.k, penalize_random_slopes,
                               progress)
    spec = _streamed_spec(model, source, reml=reml, control=control, verbose=verbose,
                          unpenalised=unpen, tuning=tuning)
    return engine.fit(spec, progress)
