"""The one engine below every front, in lme4's order: statistics -> checks -> selection
-> refit -> result.

Its input is a :class:`~lmmscope.specification.ModelSpec` (built by ``api``,
``estimator``, ``cli``, ``rbridge`` or ``sources``); its output a result built whole in
its constructor.  Steps:

1. :func:`statistics`: the data backend (``tuning.Data`` on rows in memory, the
   streamed or Dask backend as given) and the finiteness of its cross-products;
2. :func:`screened_columns`: the column checks (constant, duplicated, a copy of the
   response, lme4's checkScaleX) and the rank rule (:mod:`lmmscope.rank`), decided
   once;
3. :func:`lmmscope.tuning.select`: k and a, the best subset;
4. the (RE)ML refit on the selected columns (:class:`FullRankRefitter`, sharing the
   tuning's fits) and lme4's convergence check (:class:`~lmmscope.mixed.MixedModelFit`);
5. the result (:class:`~lmmscope.results.LmmScopeResult` / ``LmmResult``, or their
   streamed forms).

A fit without selection (``lmm()``) runs steps 1, 2 (every column unpenalised) and 4.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import checks, rank
from .cluster_stats import compute_cluster_stats
from .control import as_control
from .exceptions import RankDeficientError
from .layouts import choose_layout
from .mixed import MixedModelFit
from .refit import Refitter
from .results import LmmResult, LmmScopeResult
from .specification import ModelSpec, RowData, validated_rows
from .tuning import Data, Progress, select


def fit(spec: ModelSpec, progress=None):
    """The fitted model of ``spec``: an LmmScopeResult when ``spec.tuning`` is set (a
    selection), else an LmmResult (every column)."""
    progress = progress if isinstance(progress, Progress) else Progress(spec.verbose)
    if spec.tuning is None:
        return _fit_every_column(spec, progress)
    return _select_and_refit(spec, progress)


# -- step 1: statistics -------------------------------------------------------------

def statistics(spec: ModelSpec, progress):
    """The data backend of ``spec`` with its per-cluster statistics, checked finite."""
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


# -- step 2: column and rank checks ------------------------------------------------------

def screened_columns(spec: ModelSpec, backend, unpenalised):
    """Column checks and lme4's rank rule before a selection.  Returns (unpenalised
    columns kept, candidate columns excluded)."""
    names = list(spec.names)
    products = backend.column_products()  # the layout's: from the Gram or X's rows
    control = spec.control
    checks.check_design_columns(products, names, unpenalised, control=control)
    checks.check_response_not_a_predictor(products, names, control=control)
    checks.check_scales(products, names, control=control)
    return rank.screen_design(products, names, unpenalised, control=control)


def every_column_checked(spec: ModelSpec, stats):
    """The checks of a fit without selection, on its statistics: the columns kept
    (aliased ones dropped with lme4's message)."""
    names = list(spec.names)
    checks.check_response_not_a_predictor(stats, names, control=spec.control)
    checks.check_scales(stats, names, control=spec.control)
    return rank.full_rank_columns(stats, names, control=spec.control)


# -- steps 3 and 4: selection and refit ----------------------------------------------------

def _select_and_refit(spec: ModelSpec, progress):
    tuning, control, names = spec.tuning, spec.control, list(spec.names)
    if isinstance(spec.data, RowData):
        progress(f"N={spec.data.X.shape[0]}, p={len(names)} ({len(spec.unpenalised)} "
                 f"unpenalised), q={len(spec.random_names)}, clusters={len(spec.group_labels)}")
    backend = statistics(spec, progress)
    unpenalised, excluded = screened_columns(spec, backend, list(spec.unpenalised))
    checks.check_k_selectable(tuning.k, backend.p - len(unpenalised) - len(excluded))
    tuning.check_on_data(backend.p - len(unpenalised), backend.N, len(unpenalised),
                         backend.n_groups)
    refitter = FullRankRefitter(backend, control)
    sel = select(backend, unpenalised=unpenalised, names=names, k=tuning.k, a=tuning.a,
                 criterion=tuning.criterion, k_max=tuning.k_max, cv_folds=tuning.cv_folds,
                 a_grid=tuning.a_grid, random_state=tuning.random_state, verbose=progress,
                 control=control, refitter=refitter)
    # selection ran on centred statistics: convert its coefficients (intercept only)
    sel = dataclasses.replace(sel, coef=backend.stats.original_coef(sel.coef),
                              path_coef=backend.stats.original_coef(sel.path_coef))
    selected = sorted(set(unpenalised) | set(sel.support.tolist()))
    kept = rank.full_rank_columns(backend.subset_stats(selected), [names[j] for j in selected],
                                  control=control)
    columns = [selected[i] for i in kept]  # a collinear support loses its aliased columns
    optimum = refitter.fit(columns, reml=spec.reml, check=True)
    mixed = MixedModelFit(refitter.subset_stats(columns), [names[j] for j in columns],
                          list(spec.random_names), spec.group_labels, spec.group_name,
                          reml=spec.reml, optimum=optimum, control=control)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    dropped = [names[j] for j in sorted(set(excluded) | (set(selected) - set(columns)))]
    return _scope_result(spec, sel, mixed, unpenalised, columns, dropped, backend)


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


def _fit_every_column(spec: ModelSpec, progress):
    names = list(spec.names)
    data = spec.data
    if isinstance(data, RowData):
        stats = compute_cluster_stats(data.X, data.y, data.Z, data.codes, len(spec.group_labels),
                                      performance=spec.control.performance)
        checks.check_statistics_finite(stats, names, y_scale=float(np.abs(data.y).max()))
    else:
        stats = data.backend.subset_stats(np.arange(len(names)))
        checks.check_statistics_finite(stats, names)
    kept = every_column_checked(spec, stats)
    mixed = MixedModelFit(stats.subset(kept), [names[j] for j in kept], list(spec.random_names),
                          spec.group_labels, spec.group_name, reml=spec.reml,
                          control=spec.control)
    dropped = [names[j] for j in np.setdiff1d(np.arange(len(names)), kept)]
    if isinstance(data, RowData):
        return LmmResult(mixed, spec.design, data.X, data.y, data.Z, data.codes,
                         spec.group_labels, refit_columns=kept, dropped_columns=dropped)
    from .sources.results import StreamedLmmResult

    return StreamedLmmResult(mixed, spec.design, spec.group_labels, refit_columns=kept,
                             dropped_columns=dropped)


# -- step 5: the result -----------------------------------------------------------------

def _scope_result(spec, sel, mixed, unpenalised, columns, dropped, backend):
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


def fit_rows(X, y, Z, groups, names, random_names, group_name, *, unpenalised=(),
             tuning=None, reml=True, control=None, verbose=False, design=None):
    """The entry point for a front that builds its own design arrays (R's ``lmm()`` and
    ``lmm_scope()`` through :mod:`lmmscope.rbridge`): rows checked, the specification
    built, the engine run, with the same checks as every other front.  ``unpenalised``:
    0-based positions; ``tuning``: :class:`~lmmscope.specification.TuningArguments` for a
    selection, None for a fit of every column."""
    rows, labels = validated_rows(X, y, Z, groups, names, random_names,
                                  with_moments=tuning is not None,
                                  performance=as_control(control).performance)
    spec = ModelSpec(names, random_names, group_name, labels, rows, reml=reml,
                     unpenalised=unpenalised, tuning=tuning, control=control, design=design,
                     verbose=verbose)
    return fit(spec)


def ml_refit(result):
    """The ML fit of a result's own columns (R's ``anova`` compares ML fits): the
    result's mixed model when it is ML, else one more optimisation on the columns'
    statistics (from the selection's backend, or the fit's own), not a pass over X."""
    mixed = result.mixed
    if mixed.method == "ML":
        return mixed
    return MixedModelFit(mixed._stats, mixed.fixed_names, mixed.random_names,
                         mixed.group_labels, mixed.group_name, reml=False,
                         theta0=mixed.theta, control=mixed.control)
