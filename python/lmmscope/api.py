"""User-facing entry points: ``lmm_scope`` and ``lmm`` (formulas), ``LmmScope`` (arrays)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import checks, rank, sources
from .control import Control, as_control
from .cluster_blocks import encode_groups
from .cluster_stats import compute_cluster_stats
from .formula import INTERCEPT, build_design
from .formula.bars import has_several_terms
from .intercept import InterceptPrepended
from .layouts import choose_layout, whitens_rows_once
from .mixed import MixedModelFit
from .refit import Refitter
from .results import LmmResult, LmmScopeResult
from .tuning import DEFAULT_A_GRID, Data, Progress, select
from .exceptions import ColumnError, InputError, RankDeficientError

INTERCEPT_NAMES = (INTERCEPT, "(Intercept)")


def _validated_arrays(X, y, Z, groups, names, random_names, with_moments=False,
                      row_major_lead=None):
    """Checked arrays (X, y, Z, cluster codes, labels); ``with_moments``: and X's
    :class:`rank.RawMoments`, which the column checks of the selection reuse (with a
    row-major copy of a column-major X for the whitening to overwrite, when
    ``row_major_lead`` is an int: see :func:`whitens_a_copy`)."""
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
    moments = checks.check_finite_columns(X, names, "X", row_major_lead=row_major_lead)
    checks.check_finite_columns(Z, random_names, "Z")
    codes, labels = encode_groups(groups)
    sizes = np.bincount(codes)
    checks.check_clusters(sizes)
    checks.check_random_effects_identifiable(sizes, Z, random_names)
    return (X, y, Z, codes, labels, moments) if with_moments else (X, y, Z, codes, labels)


def _validated_design(design, whiten_copy=False):
    """_validated_arrays (with X's moments) on a formula's Design; an InterceptPrepended X
    stays unmaterialised (the formula front hands over the frame's own float block when
    it can, not a copy)."""
    prepended = isinstance(design.X, InterceptPrepended)
    X, y, Z, codes, labels, moments = _validated_arrays(
        design.X.base if prepended else design.X, design.y, design.Z, design.groups,
        design.fixed_names[int(prepended):], design.random_names, with_moments=True,
        row_major_lead=int(prepended) if whiten_copy else None)
    return (InterceptPrepended(X) if prepended else X), y, Z, codes, labels, moments


def whitens_a_copy(shape, k, a, control, unpenalised) -> bool:
    """Whether the fit whitens X's rows once, into a new X_a (one selection at fixed k
    and a on rows, with unpenalised columns such as the intercept: else X_a is an
    operator).  Then a column-major X (a data frame's own block) is copied row-major
    in the input checks' pass and whitened in place: every later pass reads rows at
    the row-major speed, for no more memory than the X_a it becomes."""
    return bool(unpenalised) and whitens_rows_once(shape[0], shape[1], k, a, control)


def _resolve_always(always, names, unpenalised):
    """Positions of the unpenalised columns: ``unpenalised`` and those ``always=`` names
    (:func:`checks.always_items`: names, positions among ``names``, or a mask)."""
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


def _check_k_after_slopes(k, n_candidates, names, slopes):
    """An integer k larger than the candidates left once random slopes are unpenalised:
    say why (the generic check would only count the candidates)."""
    if (slopes and isinstance(k, (int, np.integer)) and not isinstance(k, bool)
            and k > n_candidates):
        raise InputError(
            f"k = {k} exceeds the number of candidate predictors ({n_candidates}): "
            f"random-slope column(s) {', '.join(names[j] for j in slopes)} are kept "
            "unpenalised like the intercept (lme4's hierarchy); lower k, or pass "
            "penalize_random_slopes=True to let them count as candidates")


def _fit_selection(X, y, Z, codes, labels, names, random_names, group_name, unpenalised,
                   design, *, k, a, criterion, k_max, cv_folds, a_grid, method,
                   random_state, verbose, penalize_random_slopes=False,
                   control=None, x_moments=None) -> LmmScopeResult:
    control = as_control(control)
    progress = Progress(verbose)
    unpenalised = with_random_slopes(names, random_names, unpenalised, k,
                                     penalize_random_slopes, progress)
    progress(f"N={X.shape[0]}, p={X.shape[1]} ({len(unpenalised)} unpenalised), "
             f"q={Z.shape[1]}, clusters={labels.size}")
    data = Data(X, y, Z, codes, labels.size, control=control,
                layout=choose_layout(X.shape[0], X.shape[1], k, a, control), x_moments=x_moments)
    progress("per-cluster cross-products done")
    checks.check_statistics_finite(data.stats, names, y_scale=float(np.abs(y).max()))
    sel, mixed, columns, dropped = select_and_refit(
        data, names, random_names, labels, group_name, unpenalised, k=k, a=a,
        criterion=criterion, k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, method=method,
        random_state=random_state, progress=progress, control=control, rows=data.X,
        raw_moments=x_moments)
    data.release_row_major_copy()
    result = LmmScopeResult(sel, mixed, design, X, y, Z, codes, labels, names, unpenalised,
                            columns, data=data)
    result.dropped_columns = dropped
    return result


def with_random_slopes(names, random_names, unpenalised, k, penalize_random_slopes, progress):
    """The unpenalised columns, plus the random slopes unless ``penalize_random_slopes``."""
    if penalize_random_slopes:
        return unpenalised
    slopes = [j for j in random_slope_columns(names, random_names) if j not in unpenalised]
    if slopes:
        progress(f"unpenalised as random slopes: {', '.join(names[j] for j in slopes)}")
    _check_k_after_slopes(k, len(names) - len(set(unpenalised) | set(slopes)), names, slopes)
    return sorted(set(unpenalised) | set(slopes))


def select_and_refit(data, names, random_names, labels, group_name, unpenalised, *, k, a,
                     criterion, k_max, cv_folds, a_grid, method, random_state, progress,
                     control, rows=None, raw_moments=None):
    """Column checks, tuning and selection on a data backend (contract 2: in memory,
    streamed or Dask), then the (RE)ML refit on the selected columns.  ``rows``: the raw
    X where there is one (column checks without a Gram), ``raw_moments`` its columns'
    :class:`rank.RawMoments` when the input checks computed them.  Returns (selection, refit,
    columns, names of the columns dropped as aliased or in the span of the unpenalised)."""
    # one scan of the rows serves both checks where there is no Gram
    moments = (rank.row_moments(rows, data.stats.x_shift, raw=raw_moments)
               if data.stats.XtX is None and rows is not None else None)
    checks.check_design_columns(data.stats, names, unpenalised, X=rows, moments=moments)
    checks.check_response_not_a_predictor(data.stats, names, moments)
    checks.check_scales(data.stats, names)
    unpenalised, excluded = rank.screen_design(data.stats, names, unpenalised, X=rows,
                                               moments=moments)
    checks.check_k_selectable(k, data.p - len(unpenalised) - len(excluded))
    checks.check_tuning_on_data(k, a, k_max, cv_folds, data.p - len(unpenalised), data.N,
                                len(unpenalised), data.n_groups)
    refitter = FullRankRefitter(data, control)
    sel = select(data, unpenalised=unpenalised, names=names, k=k, a=a, criterion=criterion,
                 k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, random_state=random_state,
                 verbose=progress, control=control, refitter=refitter)
    # selection ran on centred statistics: convert its coefficients (intercept only)
    sel = dataclasses.replace(sel, coef=data.stats.original_coef(sel.coef),
                              path_coef=data.stats.original_coef(sel.path_coef))
    selected = sorted(set(unpenalised) | set(sel.support.tolist()))
    kept = rank.full_rank_columns(data.subset_stats(selected), [names[j] for j in selected])
    columns = [selected[i] for i in kept]  # a collinear support loses its aliased columns
    reml = _check_method(method)
    optimum = refitter.fit(columns, reml=reml, check=True)
    mixed = MixedModelFit(refitter.subset_stats(columns), [names[j] for j in columns],
                          random_names, labels, group_name, reml=reml, optimum=optimum,
                          control=control)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    dropped = [names[j] for j in sorted(set(excluded) | (set(selected) - set(columns)))]
    return sel, mixed, columns, dropped


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
            stats = self.subset_stats(columns)
            order = sorted(range(len(columns)), key=lambda i: i != stats.intercept)
            kept, _aliased = rank.independent_columns(
                stats.XtX, order, always_aliased=rank.constant_columns(stats))
            if len(kept) == len(columns):
                raise
            return super().fit([columns[i] for i in kept], reml, check)


def _check_method(method) -> bool:
    if method not in ("REML", "ML"):
        raise InputError(f"method must be 'REML' or 'ML', got {method!r}")
    return method == "REML"


def lmm_scope(formula: str, data: pd.DataFrame, k=None, a=None, *, always=None,
              criterion: str = "gic", k_max=None, cv_folds: int = 5, a_grid=DEFAULT_A_GRID,
              method: str = "REML", na_action: str = "omit", random_state=0,
              verbose=False, penalize_random_slopes: bool = False,
              control: Control | None = None, chunk_rows=None) -> LmmScopeResult:
    """Select the fixed effects of a linear mixed model by quasi-likelihood best subset.

    Parameters
    ----------
    formula : str
        ``"y ~ x1 + x2 | (z1 + z2 | cluster)"`` (design syntax) or
        ``"y ~ x1 + x2 + (z1 + z2 | cluster)"`` (lme4 syntax).  ``.`` on the fixed side
        means every column but the response and the grouping column.  R conventions:
        fixed intercept unless ``0 +``/``- 1``; random intercept unless ``0 +`` inside.
    data : pandas.DataFrame
    k : int, None or "cv"
        Support size (not counting unpenalised terms).  None (default) searches
        k = 0..k_max and picks by ``criterion``; "cv" picks k by the whitened prediction
        error on held-out clusters (``cv_folds`` folds of whole clusters).
    a : float, None or "cv"
        Proxy covariance scale in Sigma_a = a Z~ Z~' + I, Z~ = Z with each column divided
        by its root mean square (so a does not depend on Z's units; the raw Z with
        ``control=Control(unit_free_z=False)``).  A number fixes it.  None
        (default): iterate "select at a; refit the mixed model by REML on the support;
        set a to tr(Psi S)/(sigma^2 tr S), S = sum Z_i'Z_i" from two unit-free starts
        (the REML ratio of the unpenalised-only model, and a = 0), and return, among
        the supports visited, the one whose ML refit has the smallest -2 log-likelihood
        plus ``criterion``'s penalty.  "cv": a on ``a_grid`` by the raw prediction error
        of held-out clusters, the k of each training fold fixed (integer k) or chosen on
        the fold by ``criterion`` (k None or "cv": not a nested CV); then k at that a as
        for a fixed a (with k="cv": whitened held-out error).  See :mod:`lmmscope.tuning`.
    always : list of column names (or indices) forced into the model: unpenalised, not
        counted in k.
    criterion : "gic" (default), "ebic", "bic" or "aic": chooses k on the path
        (k=None) and scores the supports of the a-iteration's starts (a=None).
    k_max : largest k searched; default min(p, N / log N, 50).
    cv_folds : number of folds (of whole clusters) for k="cv" / a="cv"; default 5.
    a_grid : the values of a tried by a="cv".
    method : "REML" (default) or "ML" for the refit on the selected support.
    na_action : "omit" (drop rows with missing values, reported) or "fail".
    random_state : seed of the cluster-to-fold assignment of k="cv" / a="cv".
    verbose : print progress over the tuning.
    penalize_random_slopes : False (default) keeps every fixed-effect column that also
        has a random slope (same design column name in the fixed and the random part,
        e.g. ``Days`` in ``Reaction ~ . + (Days | Subject)``) unpenalised, like the
        intercept: lme4's hierarchy habit, and a guard against whitening a fixed slope
        away into its random slope.  True lets the selection drop such columns.
    control : a :class:`lmmscope.Control` (Gram limit, search effort, a-iteration and
        optimiser tolerances, lme4's convergence-check tolerances); None: defaults.

    Returns
    -------
    LmmScopeResult.  Its refit reports ``converged`` / ``convergence_messages``; a refit
    that fails lme4's final convergence check issues a
    :class:`lmmscope.ConvergenceWarning`.
    chunk_rows : rows per chunk when ``data`` is a path or glob of parquet files (data
        larger than memory, streamed; see :mod:`lmmscope.sources`); ``data`` may also be
        a dask.dataframe.DataFrame.
    """
    checks.check_tuning_arguments(k, a, criterion, k_max, cv_folds, a_grid, method, random_state)
    if has_several_terms(formula) and not sources.is_external(data):
        return _lmm_scope_several_terms(formula, data, k=k, a=a, always=always,
                                        criterion=criterion, k_max=k_max, cv_folds=cv_folds,
                                        a_grid=a_grid, method=method, na_action=na_action,
                                        random_state=random_state, verbose=verbose,
                                        penalize_random_slopes=penalize_random_slopes,
                                        control=control)
    if sources.is_external(data):
        return sources.fit_external("scope", formula, data, chunk_rows=chunk_rows, k=k, a=a,
                                    always=always, criterion=criterion, k_max=k_max,
                                    cv_folds=cv_folds, a_grid=a_grid, method=method,
                                    na_action=na_action, random_state=random_state,
                                    verbose=verbose, penalize_random_slopes=penalize_random_slopes,
                                    control=control)
    design = build_design(formula, data, na_action=na_action)
    names = design.fixed_names
    if not names:
        raise InputError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = [names.index(INTERCEPT)] if INTERCEPT in names else []
    unpen = _resolve_always(always, names, unpen)
    X, y, Z, codes, labels, moments = _validated_design(
        design, whiten_copy=whitens_a_copy(design.X.shape, k, a, control, unpen))
    return _fit_selection(X, y, Z, codes, labels, names, design.random_names, design.group_name,
                          unpen, design, k=k, a=a, criterion=criterion, k_max=k_max,
                          cv_folds=cv_folds, a_grid=a_grid, method=method,
                          random_state=random_state, verbose=verbose,
                          penalize_random_slopes=penalize_random_slopes, control=control,
                          x_moments=moments)


def _lmm_scope_several_terms(formula, data, *, k, a, always, criterion, k_max, cv_folds,
                             a_grid, method, na_action, random_state, verbose,
                             penalize_random_slopes, control):
    """lmm_scope for a formula with several random-effects terms (in memory)."""
    from .formula.bars import parse_bar_terms
    from .multiterm_scope import lmm_scope_several_terms
    from .reterms import build_reterms
    design, reterms, _rows = build_reterms(parse_bar_terms(formula), data, na_action=na_action)
    names = design.fixed_names
    if not names:
        raise ValueError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = _resolve_always(always, names, [names.index(INTERCEPT)] if INTERCEPT in names else [])
    random_names = [c for t in reterms.terms for c in t.cnms]
    unpen = with_random_slopes(names, random_names, unpen, k, penalize_random_slopes,
                               Progress(verbose))
    return lmm_scope_several_terms(design, reterms, unpen, k=k, a=a, criterion=criterion,
                                   k_max=k_max, a_grid=a_grid, method=method,
                                   random_state=random_state, verbose=verbose,
                                   control=control, cv_folds=cv_folds)


def lmm(formula: str, data: pd.DataFrame, method: str = "REML", na_action: str = "omit",
        *, control: Control | None = None, chunk_rows=None, verbose=False) -> LmmResult:
    """Fit a linear mixed model with every listed fixed effect (no selection), like lme4::lmer.

    ``data`` may be a DataFrame, a path or glob of parquet files (streamed in chunks of
    ``chunk_rows`` rows) or a dask.dataframe.DataFrame.
    ``control``: a :class:`lmmscope.Control` (optimiser and convergence-check tolerances).
    The result reports ``converged``; a fit failing lme4's final convergence check
    issues a :class:`lmmscope.ConvergenceWarning`.

    Several random-effects terms, in lme4's syntax (crossed ``(1 | a) + (1 | b)``, nested
    ``(1 | a/b)``, ``(1 | a:b)``, uncorrelated ``(x || g)``, several terms on one factor)
    are fitted by lme4's sparse PLS (:mod:`lmmscope.multiterm`), on parquet and Dask
    data from statistics summed over chunks (:mod:`lmmscope.sources.several_terms`)."""
    if has_several_terms(formula) and not sources.is_external(data):
        from .multiterm import lmm_several_terms
        return lmm_several_terms(formula, data, method=method, na_action=na_action,
                                 control=control)
    if sources.is_external(data):
        return sources.fit_external("lmm", formula, data, chunk_rows=chunk_rows, method=method,
                                    na_action=na_action, verbose=verbose, control=control)
    design = build_design(formula, data, na_action=na_action)
    X, y, Z, codes, labels, _moments = _validated_design(design)
    stats = compute_cluster_stats(X, y, Z, codes, labels.size)
    names = design.fixed_names
    checks.check_statistics_finite(stats, names, y_scale=float(np.abs(y).max()))
    checks.check_response_not_a_predictor(stats, names)
    checks.check_scales(stats, names)
    kept = rank.full_rank_columns(stats, names)  # aliased columns dropped, as lme4
    mixed = MixedModelFit(stats.subset(kept), [names[j] for j in kept], design.random_names,
                          labels, design.group_name, reml=_check_method(method),
                          control=control)
    result = LmmResult(mixed, design, X, y, Z, codes, labels)
    result._refit_columns = kept
    result.dropped_columns = [names[j] for j in np.setdiff1d(np.arange(len(names)), kept)]
    return result


def __getattr__(name):
    # LmmScope lives in estimator.py; importing it (and scikit-learn) only on first use
    # keeps `import lmmscope` light while `from lmmscope.api import LmmScope` still works.
    if name == "LmmScope":
        from .estimator import LmmScope
        return LmmScope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
