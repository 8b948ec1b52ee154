"""lmm_scope / lmm on external data: first pass, statistics pass, selection, refit.

The two passes go through ``source.map_combine`` (a parquet stream or Dask
partitions); everything after them runs on the statistics alone.
"""

from __future__ import annotations

import warnings
import numpy as np

from .. import checks
from ..formula import INTERCEPT
from ..mixed import MixedModelFit
from ..tuning import Progress, make_folds, select
from .accumulate import StatsTotals, chunk_stats
from .backend import StatsBackend
from .results import StreamedLmmResult, StreamedScopeResult
from .spec import FirstPass, StreamSpec, first_pass_part, used_columns


def _first_pass_mapper(used, group, index, frame):
    return first_pass_part(index, frame, used, group)


def _stats_mapper(spec, fold_of_cluster, index, frame):
    return chunk_stats(spec, frame, fold_of_cluster)


def read_spec(source, formula, na_action, progress) -> StreamSpec:
    """Pass 1: levels, cluster labels, missing rows; then the model's encodings."""
    if na_action not in ("omit", "fail"):
        raise ValueError("na_action must be 'omit' or 'fail'")
    used = used_columns(formula, source.columns)
    from ..formula import parse_formula
    group = parse_formula(formula).group
    summary = FirstPass()
    source.map_combine(used, _first_pass_mapper, (used, group), summary.add, progress,
                       "pass 1 (levels, clusters, missing rows)")
    spec = StreamSpec(formula, used, summary, na_action)
    if spec.n_dropped:
        warnings.warn(f"lmmscope: dropped {spec.n_dropped} rows with missing values (na.omit)",
                      stacklevel=5)
    progress(f"pass 1: {spec.n_rows} rows, {spec.group_labels.size} clusters, "
             f"p={len(spec.names)}, {spec.n_dropped} rows with missing values dropped")
    return spec


def read_stats(source, spec, progress, fold_of_cluster=None) -> StatsTotals:
    """Pass 2: per-cluster statistics (per fold too when folds are given), summed."""
    n_folds = 1 if fold_of_cluster is None else int(fold_of_cluster.max()) + 1
    totals = StatsTotals(spec.group_labels.size, len(spec.design.random_names),
                         len(spec.names), n_folds)
    source.map_combine(spec.used, _stats_mapper, (spec, fold_of_cluster), totals.add,
                       progress, "pass 2 (per-cluster cross-products)")
    return totals


def make_backend(source, spec, progress, fold_of_cluster=None):
    """Pass 2 and the backend over its statistics: on the workers for Dask, here else."""
    if source.kind == "dask":
        from .dask_backend import DaskStatsBackend

        backend = DaskStatsBackend(source, spec, fold_of_cluster, progress)
    else:
        totals = read_stats(source, spec, progress, fold_of_cluster)
        folds = None if fold_of_cluster is None else totals.fold_stats(fold_of_cluster)
        backend = StatsBackend(totals.total, totals.column_min, totals.column_max,
                               fold_of_cluster, folds)
    if backend.N != spec.n_rows:
        raise ValueError(f"the statistics pass read {backend.N} complete rows, the first "
                         f"pass {spec.n_rows}: the data changed while being read")
    checks.check_clusters(backend.stats.sizes)
    return backend


def _uses_cv(k, a) -> bool:
    return (isinstance(k, str) and k == "cv") or (isinstance(a, str) and a == "cv")


def _select_and_refit(backend, spec, unpenalised, *, k, a, criterion, k_max, cv_folds, a_grid,
                      reml, random_state, progress):
    """tuning.select on the statistics, then the (RE)ML refit on the selected columns.

    integrator: the only calls of tuning and mixed in the streamed path; adapt here.
    """
    names = spec.names
    sel = select(backend, unpenalised=unpenalised, names=names, k=k, a=a, criterion=criterion,
                 k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, random_state=random_state,
                 verbose=progress)
    columns = sorted(set(unpenalised) | set(sel.support.tolist()))
    theta0 = None
    if getattr(sel, "reml_start", None) is not None and reml and list(sel.reml_start[0]) == columns:
        theta0 = sel.reml_start[1]
    mixed = MixedModelFit(backend.subset_stats(columns), [names[j] for j in columns],
                          spec.design.random_names, spec.group_labels, spec.design.group_name,
                          reml=reml, theta0=theta0, theta_optimal=theta0 is not None)
    return sel, mixed, columns


def fit_scope(source, formula, *, k, a, always, criterion, k_max, cv_folds, a_grid, method,
              na_action, random_state, verbose):
    from ..api import _check_method, _resolve_always

    progress = Progress(verbose)
    progress(f"reading {source.describe()}")
    reml = _check_method(method)
    spec = read_spec(source, formula, na_action, progress)
    names = spec.names
    unpen = _resolve_always(always, names, [names.index(INTERCEPT)] if INTERCEPT in names else [])
    folds = None
    if _uses_cv(k, a):
        folds = make_folds(spec.group_labels.size, cv_folds, random_state)
    backend = make_backend(source, spec, progress, folds)
    sel, mixed, columns = _select_and_refit(
        backend, spec, unpen, k=k, a=a, criterion=criterion, k_max=k_max, cv_folds=cv_folds,
        a_grid=a_grid, reml=reml, random_state=random_state, progress=progress)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    return StreamedScopeResult(sel, mixed, spec.design, spec.group_labels, names, unpen,
                               columns, backend, source, spec)


def fit_lmm(source, formula, *, method, na_action, verbose=False):
    from ..api import _check_method

    progress = Progress(verbose)
    reml = _check_method(method)
    spec = read_spec(source, formula, na_action, progress)
    backend = make_backend(source, spec, progress)
    p = len(spec.names)
    stats = backend.stats if backend.stats.p == p else backend.subset_stats(np.arange(p))
    mixed = MixedModelFit(stats, spec.names, spec.design.random_names, spec.group_labels,
                          spec.design.group_name, reml=reml)
    return StreamedLmmResult(mixed, spec.design, spec.group_labels)
