"""User-facing entry points: ``lmm_scope`` and ``lmm`` (formulas), ``LmmScope`` (arrays).

Each translates its inputs into one :class:`~lmmscope.specification.ModelSpec` and
calls :func:`lmmscope.engine.fit`; no statistics are decided here.
"""

from __future__ import annotations

import pandas as pd

from . import engine, sources
from .control import Control, as_control
from .formula import build_design
from .formula.bars import has_several_terms
from .specification import (INTERCEPT_NAMES, ModelSpec, TuningArguments, intercept_columns,
                            parse_method, random_slope_columns, resolve_always,
                            validated_design_rows, whitens_a_copy, with_random_slopes)
from .results import LmmResult, LmmScopeResult
from .tuning import DEFAULT_A_GRID, Progress
from .exceptions import InputError

__all__ = ["lmm_scope", "lmm", "LmmScope", "DEFAULT_A_GRID", "INTERCEPT_NAMES",
           "random_slope_columns"]


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
    tuning = TuningArguments(k, a, criterion, k_max, cv_folds, a_grid, random_state)
    reml = parse_method(method)
    if has_several_terms(formula) and not sources.is_external(data):
        spec = _several_terms_spec(formula, data, na_action, tuning=tuning, reml=reml,
                                   control=control, verbose=verbose, always=always,
                                   penalize_random_slopes=penalize_random_slopes)
        return engine.fit(spec)
    if sources.is_external(data):
        return sources.fit_external("scope", formula, data, chunk_rows=chunk_rows, k=k, a=a,
                                    always=always, criterion=criterion, k_max=k_max,
                                    cv_folds=cv_folds, a_grid=a_grid, method=method,
                                    na_action=na_action, random_state=random_state,
                                    verbose=verbose, penalize_random_slopes=penalize_random_slopes,
                                    control=control)
    control = as_control(control)
    design = build_design(formula, data, na_action=na_action, performance=control.performance)
    names = design.fixed_names
    if not names:
        raise InputError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = resolve_always(always, names, intercept_columns(names))
    rows, labels = validated_design_rows(
        design, whiten_copy=whitens_a_copy(design.X.shape, tuning, control, unpen),
        performance=control.performance)
    progress = Progress(verbose)
    unpen = with_random_slopes(names, design.random_names, unpen, tuning.k,
                               penalize_random_slopes, progress)
    spec = ModelSpec(names, design.random_names, design.group_name, labels, rows, reml=reml,
                     unpenalised=unpen, tuning=tuning, control=control, design=design,
                     verbose=verbose)
    return engine.fit(spec, progress)


def _several_terms_spec(formula, data, na_action, *, tuning, reml, control, verbose,
                        always=None, penalize_random_slopes=False):
    """The specification of a formula with several random-effects terms (in memory): the
    terms as lme4's ``reTrms`` (:func:`lmmscope.reterms.build_reterms`) and, for a
    selection, the unpenalised columns as for one term."""
    from .formula.bars import parse_bar_terms
    from .random_effects import several_terms_spec
    from .reterms import build_reterms
    design, reterms, _rows = build_reterms(parse_bar_terms(formula), data, na_action=na_action)
    if tuning is None:
        return several_terms_spec(design, reterms, reml=reml, control=control, verbose=verbose)
    names = design.fixed_names
    if not names:
        raise InputError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = resolve_always(always, names, intercept_columns(names))
    random_names = [c for t in reterms.terms for c in t.cnms]
    unpen = with_random_slopes(names, random_names, unpen, tuning.k, penalize_random_slopes,
                               Progress(verbose))
    return several_terms_spec(design, reterms, unpenalised=unpen, tuning=tuning, reml=reml,
                              control=control, verbose=verbose)


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
    reml = parse_method(method)
    if has_several_terms(formula) and not sources.is_external(data):
        return engine.fit(_several_terms_spec(formula, data, na_action, tuning=None,
                                              reml=reml, control=control, verbose=verbose))
    if sources.is_external(data):
        return sources.fit_external("lmm", formula, data, chunk_rows=chunk_rows, method=method,
                                    na_action=na_action, verbose=verbose, control=control)
    design = build_design(formula, data, na_action=na_action,
                          performance=as_control(control).performance)
    rows, labels = validated_design_rows(design)
    spec = ModelSpec(design.fixed_names, design.random_names, design.group_name, labels, rows,
                     reml=reml, control=control, design=design, verbose=verbose)
    return engine.fit(spec)


def __getattr__(name):
    # LmmScope lives in estimator.py; importing it (and scikit-learn) only on first use
    # keeps `import lmmscope` light while `from lmmscope.api import LmmScope` still works.
    if name == "LmmScope":
        from .estimator import LmmScope
        return LmmScope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
