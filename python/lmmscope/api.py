"""User-facing entry points: ``lmm_scope`` and ``lmm`` (formulas), ``LmmScope`` (arrays)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import checks, rank
from .crossprod import compute_cluster_stats, encode_groups
from .formula import INTERCEPT, build_design
from .intercept import InterceptPrepended
from .mixed import MixedModelFit
from .results import LmmResult, LmmScopeResult
from .tuning import DEFAULT_A_GRID, Data, Progress, gram_pays_off, select


def _validated_arrays(X, y, Z, groups, names, random_names):
    X = checks.as_float_matrix(X, "X")
    N = X.shape[0]
    y = checks.check_response(y, N)
    Z = np.ones((N, 1)) if Z is None else checks.as_float_matrix(Z, "Z")
    if Z.shape[0] != N:
        raise ValueError(f"Z has {Z.shape[0]} rows but X has {N}")
    if groups is None:
        raise ValueError("groups= (the cluster of each row) is required")
    groups = checks.check_groups(groups, N)
    checks.check_finite_columns(X, names, "X")
    checks.check_finite_columns(Z, random_names, "Z")
    codes, labels = encode_groups(groups)
    checks.check_clusters(np.bincount(codes))
    checks.check_random_effects_identifiable(np.bincount(codes), Z, random_names)
    return X, y, Z, codes, labels


def _resolve_always(always, names, unpenalised):
    out = set(unpenalised)
    for item in always or []:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise KeyError(f"always= index {item} is out of range (0..{len(names) - 1})")
            out.add(int(item))
        elif item in names:
            out.add(names.index(item))
        else:
            raise KeyError(f"always= names unknown column {item!r}; columns are named "
                           f"{', '.join(map(str, names[:8]))}{' ...' if len(names) > 8 else ''}")
    return sorted(out)


def _fit_selection(X, y, Z, codes, labels, names, random_names, group_name, unpenalised,
                   design, *, k, a, criterion, k_max, cv_folds, a_grid, method,
                   random_state, verbose) -> LmmScopeResult:
    progress = Progress(verbose)
    progress(f"N={X.shape[0]}, p={X.shape[1]} ({len(unpenalised)} unpenalised), "
             f"q={Z.shape[1]}, clusters={labels.size}")
    data = Data(X, y, Z, codes, labels.size, use_gram=gram_pays_off(X.shape[0], X.shape[1], k, a))
    progress("per-cluster cross-products done")
    checks.check_statistics_finite(data.stats, names, y_scale=float(np.abs(y).max()))
    checks.check_design_columns(data.stats, names, unpenalised, X=data.X)
    checks.check_scales(data.stats, names)
    unpenalised, excluded = rank.screen_design(data.stats, names, unpenalised, X=data.X)
    checks.check_k_selectable(k, X.shape[1] - len(unpenalised) - len(excluded))
    sel = select(data, unpenalised=unpenalised, names=names, k=k, a=a, criterion=criterion,
                 k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, random_state=random_state,
                 verbose=progress)
    # selection ran on centred statistics: convert its coefficients (intercept only)
    sel = dataclasses.replace(sel, coef=data.stats.original_coef(sel.coef),
                              path_coef=data.stats.original_coef(sel.path_coef))
    columns = sorted(set(unpenalised) | set(sel.support.tolist()))
    stats = data.subset_stats(columns)
    kept = rank.full_rank_columns(stats, [names[j] for j in columns])  # collinear support
    columns, stats = [columns[i] for i in kept], stats.subset(kept)
    reml = _check_method(method)
    theta0 = None
    if sel.reml_start is not None and reml and list(sel.reml_start[0]) == columns:
        theta0 = sel.reml_start[1]  # the a-tuning already fitted this support by REML
    mixed = MixedModelFit(stats, [names[j] for j in columns], random_names, labels, group_name,
                          reml=reml, theta0=theta0, theta_optimal=theta0 is not None)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    result = LmmScopeResult(sel, mixed, design, X, y, Z, codes, labels, names, unpenalised, columns,
                            data=data)
    result.dropped_columns = [names[j] for j in sorted(set(excluded) | (
        set(unpenalised) | set(sel.support.tolist())) - set(columns))]
    return result


def _check_method(method) -> bool:
    if method not in ("REML", "ML"):
        raise ValueError(f"method must be 'REML' or 'ML', got {method!r}")
    return method == "REML"


def lmm_scope(formula: str, data: pd.DataFrame, k=None, a=None, *, always=None,
              criterion: str = "gic", k_max=None, cv_folds: int = 5, a_grid=DEFAULT_A_GRID,
              method: str = "REML", na_action: str = "omit", random_state=0,
              verbose=False) -> LmmScopeResult:
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
        k = 0..k_max and picks by ``criterion``; "cv" uses K-fold CV over clusters.
    a : float, None or "cv"
        Proxy covariance scale in Sigma_a = a Z Z' + I.  None (default): start at 1,
        then set a to the REML variance ratio tr(Psi S)/(sigma^2 tr S), S = sum Z_i'Z_i,
        on the selected support, until the support is stable or a moves by <1%.  "cv": grid search on
        held-out clusters' raw prediction error.
    always : list of column names forced into the model (unpenalised, not counted in k).
    criterion : "gic" (default), "ebic", "bic" or "aic".
    k_max : largest k searched; default min(p, N / log N, 50).
    method : "REML" (default) or "ML" for the refit on the selected support.
    na_action : "omit" (drop rows with missing values, reported) or "fail".
    verbose : print progress over the tuning grid.
    """
    design = build_design(formula, data, na_action=na_action)
    names = design.fixed_names
    unpen = [names.index(INTERCEPT)] if INTERCEPT in names else []
    unpen = _resolve_always(always, names, unpen)
    X, y, Z, codes, labels = _validated_arrays(design.X, design.y, design.Z, design.groups,
                                               names, design.random_names)
    return _fit_selection(X, y, Z, codes, labels, names, design.random_names, design.group_name,
                          unpen, design, k=k, a=a, criterion=criterion, k_max=k_max,
                          cv_folds=cv_folds, a_grid=a_grid, method=method,
                          random_state=random_state, verbose=verbose)


def lmm(formula: str, data: pd.DataFrame, method: str = "REML", na_action: str = "omit") -> LmmResult:
    """Fit a linear mixed model with every listed fixed effect (no selection), like lme4::lmer."""
    design = build_design(formula, data, na_action=na_action)
    X, y, Z, codes, labels = _validated_arrays(design.X, design.y, design.Z, design.groups,
                                               design.fixed_names, design.random_names)
    stats = compute_cluster_stats(X, y, Z, codes, labels.size)
    names = design.fixed_names
    checks.check_statistics_finite(stats, names, y_scale=float(np.abs(y).max()))
    checks.check_scales(stats, names)
    kept = rank.full_rank_columns(stats, names)  # aliased columns dropped, as lme4
    mixed = MixedModelFit(stats.subset(kept), [names[j] for j in kept], design.random_names,
                          labels, design.group_name, reml=_check_method(method))
    result = LmmResult(mixed, design, X, y, Z, codes, labels)
    result._refit_columns = kept
    result.dropped_columns = [names[j] for j in np.setdiff1d(np.arange(len(names)), kept)]
    return result


class LmmScope:
    """scikit-learn-style estimator on arrays: ``LmmScope(k, a).fit(X, y, Z=Z, groups=g)``.

    ``fit_intercept=True`` adds an unpenalised intercept; ``Z=None`` means a random
    intercept only.  After fitting: ``coef_`` (selection estimates, without the
    intercept), ``intercept_``, ``support_``, ``result_`` (an :class:`LmmScopeResult`).
    """

    def __init__(self, k=None, a=None, *, fit_intercept=True, always=None, criterion="gic",
                 k_max=None, cv_folds=5, a_grid=DEFAULT_A_GRID, method="REML",
                 random_state=0, verbose=False):
        self.k, self.a = k, a
        self.fit_intercept, self.always = fit_intercept, always
        self.criterion, self.k_max, self.cv_folds, self.a_grid = criterion, k_max, cv_folds, a_grid
        self.method, self.random_state, self.verbose = method, random_state, verbose

    def fit(self, X, y, Z=None, groups=None):
        if isinstance(X, pd.DataFrame):
            names = [str(c) for c in X.columns]
        else:
            names = [f"x{j}" for j in range(np.asarray(X).shape[1] if np.ndim(X) == 2 else 1)]
        Xm = checks.as_float_matrix(X, "X")
        if isinstance(Z, pd.DataFrame):
            random_names = [str(c) for c in Z.columns]
        else:
            random_names = ["(Intercept)"] if Z is None else [f"z{j}" for j in range(np.asarray(Z).reshape(Xm.shape[0], -1).shape[1])]
        always = list(self.always or [])
        unpen = []
        Xv, y, Zv, codes, labels = _validated_arrays(Xm, y, Z, groups, names, random_names)
        if self.fit_intercept:
            Xv = InterceptPrepended(Xv)  # [1, X] without copying X
            names = [INTERCEPT] + names
            always = [j + 1 if isinstance(j, (int, np.integer)) else j for j in always]
            unpen = [0]
        unpen = _resolve_always(always, names, unpen)
        self.result_ = _fit_selection(
            Xv, y, Zv, codes, labels, names, random_names, "group", unpen, None,
            k=self.k, a=self.a, criterion=self.criterion, k_max=self.k_max,
            cv_folds=self.cv_folds, a_grid=self.a_grid, method=self.method,
            random_state=self.random_state, verbose=self.verbose)
        self.result_._prepend_intercept = self.fit_intercept
        coef = self.result_.coef.to_numpy()
        self.intercept_ = float(coef[0]) if self.fit_intercept else 0.0
        self.coef_ = coef[1:] if self.fit_intercept else coef
        offset = 1 if self.fit_intercept else 0
        self.support_ = np.array([j - offset for j in self.result_.selection.support], dtype=np.int64)
        self.a_, self.k_ = self.result_.a, self.result_.k
        return self

    def predict(self, X, Z=None, groups=None):
        """Population-level predictions (refitted fixed effects); with ``groups`` and ``Z``,
        conditional on known clusters' random effects."""
        level = 0 if groups is None else 1
        return self.result_.predict(X, level=level, Z=Z, groups=groups)
