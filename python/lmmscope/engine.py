"""The one engine below every front, in lme4's order: statistics -> checks -> selection
-> refit -> result.

Its input is a :class:`~lmmscope.specification.ModelSpec` (built by ``api``,
``estimator``, ``cli``, ``rbridge`` or ``sources``); its output a result built whole in
its constructor.  The same steps run for one grouping factor and for several
random-effects terms; what differs (the backend, the statistics the column checks read,
the refitter, the mixed-model fit, the result class) is asked of the spec's
random-effects structure (:mod:`lmmscope.random_effects`).  Steps:

1. :func:`statistics`: the structure's data backend (``tuning.Data`` on rows in memory,
   the streamed or Dask backend as given, ``SeveralTermsData`` for several terms) and
   the finiteness of its cross-products;
2. :func:`screened_columns`: the column checks (constant, duplicated, a copy of the
   response, lme4's checkScaleX) and the rank rule (:mod:`lmmscope.rank`), decided
   once;
3. :func:`lmmscope.tuning.select`: k and a, the best subset;
4. the (RE)ML refit on the selected columns (the structure's refitter, sharing the
   tuning's fits) and lme4's convergence check;
5. the result (the structure's: ``LmmScopeResult`` / ``LmmResult``, their streamed
   forms, or the several-term ``MultiTermScopeResult`` / ``MultiTermResult``).

A fit without selection (``lmm()``) runs steps 1, 2 (every column unpenalised) and 4.
"""

from __future__ import annotations

from . import checks, rank
from .control import as_control
from .mixed import MixedModelFit
from .random_effects import structure_of
from .specification import ModelSpec, validated_rows
from .tuning import Progress, select


def fit(spec: ModelSpec, progress=None):
    """The fitted model of ``spec``: a selection result when ``spec.tuning`` is set, else
    a fit of every column; the result class is the random-effects structure's."""
    progress = progress if isinstance(progress, Progress) else Progress(spec.verbose)
    if spec.tuning is None:
        return _fit_every_column(spec, progress)
    return _select_and_refit(spec, progress)


# -- step 1: statistics -------------------------------------------------------------

def statistics(spec: ModelSpec, progress):
    """The data backend of ``spec`` with its statistics (the structure's: per-cluster
    for one grouping factor, sparse for several terms)."""
    return structure_of(spec).backend(spec, progress)


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
    structure = structure_of(spec)
    structure.announce(spec, progress)
    structure.check_tuning(tuning)
    backend = statistics(spec, progress)
    checked = structure.column_checks_on(spec, backend)
    if checked is not None:
        unpenalised, excluded = screened_columns(spec, checked, list(spec.unpenalised))
    else:  # streamed several-term statistics: no centred Gram to check (Known gaps)
        unpenalised, excluded = list(spec.unpenalised), []
    checks.check_k_selectable(tuning.k, backend.p - len(unpenalised) - len(excluded))
    tuning.check_on_data(backend.p - len(unpenalised), backend.N, len(unpenalised),
                         backend.n_groups)
    refitter = structure.refitter(spec, backend)
    sel = select(backend, unpenalised=unpenalised, names=names, k=tuning.k, a=tuning.a,
                 criterion=tuning.criterion, k_max=tuning.k_max, cv_folds=tuning.cv_folds,
                 a_grid=tuning.a_grid, random_state=tuning.random_state, verbose=progress,
                 control=control, refitter=refitter)
    sel = structure.in_original_units(spec, sel, backend)
    selected = sorted(set(unpenalised) | set(int(j) for j in sel.support))
    kept = structure.support_kept(spec, backend, checked, selected)
    columns = [selected[i] for i in kept]  # a collinear support loses its aliased columns
    mixed = structure.refit(spec, refitter, columns)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    dropped = [names[j] for j in sorted(set(excluded) | (set(selected) - set(columns)))]
    return structure.scope_result(spec, sel, mixed, unpenalised, columns, dropped, backend)


def _fit_every_column(spec: ModelSpec, progress):
    structure = structure_of(spec)
    stats = structure.every_column_statistics(spec)
    kept = every_column_checked(spec, stats) if stats is not None else None
    return structure.every_column_result(spec, stats, kept, progress)


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
