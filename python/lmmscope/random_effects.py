"""The random-effects structure of a :class:`~lmmscope.specification.ModelSpec`: one
interface, two implementations, asked by :func:`lmmscope.engine.fit` for what differs
between them (the data backend, the statistics the column checks read, the refitter,
the mixed-model fit, the result class).  The engine runs the same steps for both.

* :class:`OneGroupingFactor`: one grouping factor, the dense per-cluster code
  (:mod:`lmmscope.tuning`'s ``Data``, :class:`lmmscope.refit.Refitter`,
  :class:`lmmscope.mixed.MixedModelFit`); the structure of a spec that names none.
* :class:`SeveralTerms`: crossed, nested or ``||`` terms (:class:`lmmscope.reterms.ReTerms`,
  the sparse PLS of :mod:`lmmscope.sparse_pls`, :class:`~lmmscope.multiterm_scope.
  SeveralTermsData`, :class:`~lmmscope.multiterm.MultiTermFit`).  The streamed form
  (parquet, Dask) is :class:`lmmscope.sources.several_terms.StreamedSeveralTerms`.

Which one a model gets is decided once, by the front that builds the structure (the
formula front from the parsed bar terms, the R bridge from R's terms).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import checks, rank
from .cluster_stats import compute_cluster_stats
from .column_products import GramProducts
from .exceptions import InputError, RankDeficientError
from .formula import intercept_index
from .layouts import choose_layout
from .mixed import MixedModelFit
from .multiterm import (MultiTermResult, _full_rank, column_check_stats, fit_statistics,
                        validated_arrays)
from .multiterm_scope import (NO_CROSS_VALIDATION, MultiTermScopeResult, SeveralTermsData,
                              SeveralTermsRefitter)
from .refit import Refitter
from .results import LmmResult, LmmScopeResult
from .specification import ModelSpec, RowData, SeveralTermsRows, StatisticsData
from .tuning import Data


def structure_of(spec: ModelSpec):
    """The spec's random-effects structure: one grouping factor unless it names one."""
    return ONE_GROUPING_FACTOR if spec.random_effects is None else spec.random_effects


class FullRankRefitter(Refitter):
    """A :class:`Refitter` whose fits drop aliased columns first, as lme4 does: a support
    the tuning of ``a`` tries may hold exactly collinear candidates (x3 = x1 + x2), and
    its deviance and variance ratio depend only on the columns' span.  The final refit
    drops them with lme4's message (:func:`rank.full_rank_columns`)."""

    def fit(self, columns, reml: bool = True, check: bool = False):
        try:
            return super().fit(columns, reml, check)
        except RankDeficientError:
            columns = sorted(int(j) for j in set(columns))
            kept, _aliased = rank.full_rank_split(self.subset_stats(columns), control=self.control)
            if len(kept) == len(columns):
                raise
            return super().fit([columns[i] for i in kept], reml, check)


class OneGroupingFactor:
    """One grouping factor: the dense per-cluster statistics Z_i'Z_i, Z_i'X_i, ..."""

    def announce(self, spec: ModelSpec, progress) -> None:
        if isinstance(spec.data, RowData):
            progress(f"N={spec.data.X.shape[0]}, p={len(spec.names)} ({len(spec.unpenalised)} "
                     f"unpenalised), q={len(spec.random_names)}, "
                     f"clusters={len(spec.group_labels)}")

    @staticmethod
    def check_tuning(tuning) -> None:
        """Every k and a can be tuned (folds of whole clusters)."""

    def backend(self, spec: ModelSpec, progress):
        """The data backend with its per-cluster statistics, checked finite."""
        data = spec.data
        if isinstance(data, RowData):
            k, a = (spec.tuning.k, spec.tuning.a) if spec.tuning is not None else (None, None)
            N, p = data.X.shape
            backend = Data(data.X, data.y, data.Z, data.codes, len(spec.group_labels),
                           control=spec.control, layout=choose_layout(N, p, k, a, spec.control),
                           x_moments=data.moments)
            progress("per-cluster cross-products done")
            checks.check_statistics_finite(backend.stats, list(spec.names),
                                           y_scale=float(np.abs(data.y).max()),
                                           products=backend.column_products())
            return backend
        backend = data.backend
        stats = backend.stats
        if stats.ZtX.shape[2] != len(spec.names):
            # the Dask backend's client statistics hold no Z'X (it stays on the workers,
            # finite where X is): the rest is checked
            stats = dataclasses.replace(stats, ZtX=np.zeros((0, stats.q, len(spec.names))))
        checks.check_statistics_finite(stats, list(spec.names))
        return backend

    def column_checks_on(self, spec: ModelSpec, backend):
        """What the column checks of a selection read (its ``column_products()``): the
        backend itself."""
        return backend

    def refitter(self, spec: ModelSpec, backend):
        return FullRankRefitter(backend, spec.control)

    def in_original_units(self, spec: ModelSpec, selection, backend):
        """The selection ran on centred statistics: its coefficients (the intercept only)
        back in the original parametrisation."""
        stats = backend.stats
        return dataclasses.replace(selection, coef=stats.original_coef(selection.coef),
                                   path_coef=stats.original_coef(selection.path_coef))

    def support_kept(self, spec: ModelSpec, backend, checked, selected) -> list:
        """Positions (in ``selected``) of the support's full-rank columns, lme4's rule."""
        names = list(spec.names)
        return list(rank.full_rank_columns(backend.subset_stats(selected),
                                           [names[j] for j in selected], control=spec.control))

    def refit(self, spec: ModelSpec, refitter, columns):
        optimum = refitter.fit(columns, reml=spec.reml, check=True)
        names = list(spec.names)
        return MixedModelFit(refitter.subset_stats(columns), [names[j] for j in columns],
                             list(spec.random_names), spec.group_labels, spec.group_name,
                             reml=spec.reml, optimum=optimum, control=spec.control)

    def scope_result(self, spec: ModelSpec, sel, mixed, unpenalised, columns, dropped, backend):
        data = spec.data
        if isinstance(data, RowData):
            backend.release_row_major_copy()
            return LmmScopeResult(sel, mixed, spec.design, data.X, data.y, data.Z, data.codes,
                                  spec.group_labels, list(spec.names), unpenalised, columns,
                                  data=backend, dropped_columns=dropped,
                                  prepend_intercept=spec.prepend_intercept)
        from .sources.results import StreamedScopeResult

        return StreamedScopeResult(sel, mixed, spec.design, spec.group_labels, list(spec.names),
                                   unpenalised, columns, backend, dropped_columns=dropped)

    # -- a fit of every column (lmm()) --

    def every_column_statistics(self, spec: ModelSpec):
        """The statistics of every column (no backend: nothing is whitened), checked
        finite; the column checks and the fit read them."""
        names = list(spec.names)
        data = spec.data
        if isinstance(data, RowData):
            stats = compute_cluster_stats(data.X, data.y, data.Z, data.codes,
                                          len(spec.group_labels),
                                          performance=spec.control.performance)
            checks.check_statistics_finite(stats, names, y_scale=float(np.abs(data.y).max()))
            return stats
        stats = data.backend.subset_stats(np.arange(len(names)))
        checks.check_statistics_finite(stats, names)
        return stats

    def every_column_result(self, spec: ModelSpec, stats, kept, progress):
        names = list(spec.names)
        data = spec.data
        mixed = MixedModelFit(stats.subset(kept), [names[j] for j in kept],
                              list(spec.random_names), spec.group_labels, spec.group_name,
                              reml=spec.reml, control=spec.control)
        dropped = [names[j] for j in np.setdiff1d(np.arange(len(names)), kept)]
        if isinstance(data, RowData):
            return LmmResult(mixed, spec.design, data.X, data.y, data.Z, data.codes,
                             spec.group_labels, refit_columns=kept, dropped_columns=dropped)
        from .sources.results import StreamedLmmResult

        return StreamedLmmResult(mixed, spec.design, spec.group_labels, refit_columns=kept,
                                 dropped_columns=dropped)


ONE_GROUPING_FACTOR = OneGroupingFactor()


@dataclasses.dataclass(frozen=True, eq=False)
class _OneClusterChecks:
    """The rows as one cluster (:func:`lmmscope.multiterm.column_check_stats`): what the
    column checks read for several terms, with the same shifts, tolerances and messages
    as for one factor."""

    stats: object

    def column_products(self):
        return GramProducts(self.stats)


class SeveralTerms:
    """Several random-effects terms (lme4's ``reTrms``) on rows in memory: the sparse
    statistics (Z'Z sparse, Z'X, ...) of :class:`SeveralTermsData`, refits by
    :class:`~lmmscope.multiterm.MultiTermFit`.  k or a = "cv" is refused: crossed factors
    have no whole clusters to hold out."""

    def __init__(self, reterms):
        self.reterms = reterms

    @property
    def random_names(self) -> list:
        return [c for t in self.reterms.terms for c in t.cnms]

    def announce(self, spec: ModelSpec, progress) -> None:
        """Said once the backend exists (its N and p)."""

    @staticmethod
    def check_tuning(tuning) -> None:
        if tuning.uses_cv:
            raise InputError(NO_CROSS_VALIDATION)

    def backend(self, spec: ModelSpec, progress):
        data = spec.data
        backend = (data.backend if isinstance(data, StatisticsData) else
                   SeveralTermsData(data.X, data.y, self.reterms, intercept_index(spec.names),
                                    spec.control))
        if spec.tuning is not None:
            progress(f"N={backend.N}, p={backend.p} ({len(spec.unpenalised)} unpenalised), "
                     f"q={self.reterms.q}, terms: "
                     + ", ".join(f"{t.group_name} ({t.n_levels})" for t in self.reterms.terms))
        return backend

    def column_checks_on(self, spec: ModelSpec, backend):
        """The rows as one cluster (None without rows: the streamed statistics hold no
        centred moments of X; the gap docs/architecture.md names)."""
        if not isinstance(spec.data, SeveralTermsRows):
            return None
        return _OneClusterChecks(column_check_stats(spec.data.X, spec.data.y))

    def refitter(self, spec: ModelSpec, backend):
        return SeveralTermsRefitter(backend, spec.names, intercept_index(spec.names), spec.control)

    def in_original_units(self, spec: ModelSpec, selection, backend):
        """The selection ran on y - mean(y) where the model has an intercept."""
        intercept = intercept_index(spec.names)
        y_shift = backend.stats.y_shift
        if intercept is None or not y_shift:
            return selection
        coef, path_coef = selection.coef.copy(), selection.path_coef.copy()
        coef[intercept] += y_shift
        path_coef[:, intercept] += y_shift
        return dataclasses.replace(selection, coef=coef, path_coef=path_coef)

    def support_kept(self, spec: ModelSpec, backend, checked, selected) -> list:
        """lme4's centred rank rule on the rows' one-cluster statistics; on X'X where
        there are no rows."""
        names = [spec.names[j] for j in selected]
        if checked is not None:
            return list(rank.full_rank_columns(checked.stats.subset(selected), names,
                                               control=spec.control))
        kept, _ = _full_rank(backend.stats.subset(selected).XtX, names, spec.control.rank_tol)
        return kept

    def refit(self, spec: ModelSpec, refitter, columns):
        return refitter.fit(columns, reml=spec.reml, checked=True)

    def scope_result(self, spec: ModelSpec, sel, mixed, unpenalised, columns, dropped, backend):
        data = spec.data
        return MultiTermScopeResult(sel, mixed, spec.design, data.X, data.y, self.reterms,
                                    list(spec.names), unpenalised, columns, dropped, backend)

    # -- a fit of every column (lmm()) --

    def every_column_statistics(self, spec: ModelSpec):
        """The rows as one cluster for the column checks; None without rows (the rank is
        then judged on X'X by the fit)."""
        checked = self.column_checks_on(spec, None)
        return None if checked is None else checked.stats

    def every_column_result(self, spec: ModelSpec, stats, kept, progress):
        backend = self.backend(spec, progress)
        fit, kept, dropped = fit_statistics(backend.stats, self.reterms, list(spec.names),
                                            spec.reml, spec.control,
                                            kept=None if kept is None else list(kept))
        return self.lmm_result(spec, fit, kept, dropped)

    def lmm_result(self, spec: ModelSpec, fit, kept, dropped):
        data = spec.data
        return MultiTermResult(fit, spec.design, data.X[:, kept], data.y, self.reterms, kept,
                               dropped)


def several_terms_spec(design, reterms, *, unpenalised=(), tuning=None, reml=True,
                       control=None, verbose=False) -> ModelSpec:
    """The specification of a several-term model on rows in memory (a formula's Design,
    or R's arrays): the one-term input checks (:func:`lmmscope.multiterm.validated_arrays`)
    and the structure."""
    X, y, names = validated_arrays(design, reterms)
    first = reterms.terms[0]
    structure = SeveralTerms(reterms)
    return ModelSpec(names, structure.random_names, first.group_name, first.levels,
                     SeveralTermsRows(X, y), reml=reml, unpenalised=unpenalised, tuning=tuning,
                     control=control, design=design, verbose=verbose, random_effects=structure)
