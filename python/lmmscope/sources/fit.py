"""lmm_scope / lmm on external data: first pass, statistics pass, selection, refit.

Pass 1 reads the grouping and categorical columns (labels, levels) through
``source.map_combine`` (a parquet stream or Dask partitions); pass 2 the model's
columns.  Everything after them runs on the statistics alone.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import checks, engine
from ..formula import parse_formula
from ..control import as_control
from ..specification import (ModelSpec, StatisticsData, TuningArguments, intercept_columns,
                             parse_method, resolve_always, with_random_slopes)
from ..tuning import Progress, make_folds
from .accumulate import StatsTotals, chunk_stats, empty_counts
from .backend import StatsBackend
from .spec import (PROTOTYPE_ROWS, FirstPass, StreamSpec, _complete_rows, first_pass_part,
                   light_columns, used_columns)
from ..exceptions import InputError


def _first_pass_mapper(used, group, index, frame):
    return first_pass_part(index, frame, used, group)


def _stats_mapper(spec, fold_of_cluster, index, frame):
    return chunk_stats(spec, frame, fold_of_cluster)


def _meta(source):
    """An empty frame with the source's data columns (not a pandas index written along)
    and their dtypes."""
    meta = source.meta().rename(columns=str)
    return meta[list(source.columns)]


def read_spec(source, formula, na_action, progress, light=True):
    """Pass 1: cluster labels and levels; then the model's encodings.

    ``light``: read only the grouping and categorical columns (rows with missing
    values in other columns are counted in pass 2, which also checks that every label
    and level has complete rows; see :func:`prepare`).  Returns None when the first
    chunk has no complete row to build the spec on (then a full pass 1 is needed).
    """
    if na_action not in ("omit", "fail"):
        raise InputError("na_action must be 'omit' or 'fail'")
    meta = _meta(source)
    used = used_columns(formula, meta)
    group = parse_formula(formula).group
    columns = light_columns(meta, used, group) if light else used
    summary = FirstPass()
    source.map_combine(columns, _first_pass_mapper, (columns, group), summary.add, progress,
                       "pass 1 (levels, clusters" + (")" if light else ", missing rows)"))
    if light:
        head = source.head(used)
        summary.head = head.loc[_complete_rows(head, used), used].head(PROTOTYPE_ROWS)
        if summary.head.shape[0] == 0:
            return None
    return StreamSpec(formula, used, summary, na_action, provisional=light)


def read_stats(source, spec, progress, fold_of_cluster=None) -> StatsTotals:
    """Pass 2: per-cluster statistics (per fold too when folds are given), summed."""
    n_folds = 1 if fold_of_cluster is None else int(fold_of_cluster.max()) + 1
    totals = StatsTotals(spec.group_labels.size, len(spec.design.random_names),
                         len(spec.names), n_folds, empty_counts(spec), spec)
    source.map_combine(spec.used, _stats_mapper, (spec, fold_of_cluster), totals.add,
                       progress, "pass 2 (per-cluster cross-products)")
    return totals


def make_backend(source, spec, progress, fold_of_cluster=None, control=None):
    """Pass 2 and the backend over its statistics: on the workers for Dask, here else."""
    if source.kind == "dask":
        from .dask_backend import DaskStatsBackend

        return DaskStatsBackend(source, spec, fold_of_cluster, progress, control)
    totals = read_stats(source, spec, progress, fold_of_cluster)
    totals.centre_on_means()
    folds = None if fold_of_cluster is None else totals.fold_stats(fold_of_cluster)
    backend = StatsBackend(totals.total, fold_of_cluster, folds, control)
    backend.rows = totals.rows
    return backend


def _first_pass_confirmed(spec, backend) -> bool:
    """After a light pass 1: every cluster label and factor level has complete rows
    (else the in-memory fit, which drops incomplete rows first, would not see them)."""
    return bool(np.all(backend.stats.sizes > 0)) and all(
        np.all(counts > 0) for counts in backend.rows.level_counts.values())


def prepare(source, formula, na_action, progress, folds_for=lambda spec: None, control=None):
    """Both passes: (spec, backend, folds).  A light pass 1 first; if a cluster or level
    turns out to occur only in rows with missing values, pass 1 again on every column."""
    spec = read_spec(source, formula, na_action, progress, light=True)
    if spec is not None:
        folds = folds_for(spec)
        backend = make_backend(source, spec, progress, folds, control)
        if _first_pass_confirmed(spec, backend):
            return _checked(spec, backend, na_action, progress), backend, folds
    progress("some clusters or levels occur only in rows with missing values (or the first "
             "chunk has no complete row): pass 1 again on every column")
    spec = read_spec(source, formula, na_action, progress, light=False)
    folds = folds_for(spec)
    backend = make_backend(source, spec, progress, folds, control)
    return _checked(spec, backend, na_action, progress), backend, folds


def _checked(spec, backend, na_action, progress):
    """Row counts of the two passes agree; missing rows reported (or refused)."""
    dropped = backend.rows.n_dropped
    if backend.N + dropped != spec.n_rows + spec.n_dropped:
        raise InputError(f"the statistics pass read {backend.N + dropped} rows, the first "
                         f"pass {spec.n_rows + spec.n_dropped}: the data changed while being read")
    if dropped and na_action == "fail":
        raise InputError(f"{dropped} rows have missing values in the model's columns "
                         "(na_action='fail')")
    if dropped:
        warnings.warn(f"lmmscope: dropped {dropped} rows with missing values (na.omit)",
                      stacklevel=5)
    spec.n_rows, spec.n_dropped = backend.N, dropped
    spec.design.n_dropped = dropped
    checks.check_clusters(backend.stats.sizes)
    progress(f"{backend.N} rows, {backend.n_groups} clusters, p={backend.p}, {dropped} rows "
             "with missing values dropped")
    return spec


def fit_scope(source, formula, *, k, a, always, criterion, k_max, cv_folds, a_grid, method,
              na_action, random_state, verbose, penalize_random_slopes=False, control=None):
    """lmm_scope on external data: both passes, then the engine on their statistics."""
    progress = Progress(verbose)
    progress(f"reading {source.describe()}")
    tuning = TuningArguments(k, a, criterion, k_max, cv_folds, a_grid, random_state)
    reml = parse_method(method)  # before reading the data

    def folds_for(spec):
        if tuning.uses_cv:
            checks.check_tuning_on_data(k, a, None, cv_folds, 0, 1, 0, spec.group_labels.size)
            return make_folds(spec.group_labels.size, tuning.cv_folds, tuning.random_state)
        return None

    control = as_control(control)
    spec, backend, _folds = prepare(source, formula, na_action, progress, folds_for, control)
    names, random_names = spec.names, spec.design.random_names
    unpen = resolve_always(always, names, intercept_columns(names))
    unpen = with_random_slopes(names, random_names, unpen, tuning.k, penalize_random_slopes,
                               progress)
    model = ModelSpec(names, random_names, spec.design.group_name, spec.group_labels,
                      StatisticsData(backend, source, spec), reml=reml, unpenalised=unpen,
                      tuning=tuning, control=control, design=spec.design, verbose=verbose)
    return engine.fit(model, progress)


def fit_lmm(source, formula, *, method, na_action, verbose=False, control=None):
    """lmm on external data: both passes, then the engine on their statistics."""
    progress = Progress(verbose)
    reml = parse_method(method)
    control = as_control(control)
    spec, backend, _folds = prepare(source, formula, na_action, progress, control=control)
    model = ModelSpec(spec.names, spec.design.random_names, spec.design.group_name,
                      spec.group_labels, StatisticsData(backend, source, spec), reml=reml,
                      control=control, design=spec.design, verbose=verbose)
    return engine.fit(model, progress)
