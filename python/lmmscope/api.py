"""User-facing entry points: ``lmm_scope`` and ``lmm`` (formulas), ``LmmScope`` (arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import checks
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
    return X, y, Z, codes, labels


def _validated_design(design):
    """_validated_arrays on a formula's Design; an InterceptPrepended X stays unmaterialised
    (the formula front hands over the frame's own float block when it can, not a copy)."""
    prepended = isinstance(design.X, InterceptPrepended)
    X, y, Z, codes, labels = _validated_arrays(
        design.X.base if prepended else design.X, design.y, design.Z, design.groups,
        design.fixed_names[int(prepended):], design.random_names)
    return (InterceptPrepended(X) if prepended else X), y, Z, codes, labels


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
    sel = select(data, unpenalised=unpenalised, names=names, k=k, a=a, criterion=criterion,
                 k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, random_state=random_state,
                 verbose=progress)
    columns = sorted(set(unpenalised) | set(sel.support.tolist()))
    stats = data.subset_stats(columns)
    reml = _check_method(method)
    theta0 = None
    if sel.reml_start is not None and reml and list(sel.reml_start[0]) == columns:
        theta0 = sel.reml_start[1]  # the a-tuning already fitted this support by REML
    mixed = MixedModelFit(stats, [names[j] for j in columns], random_names, labels, group_name,
                          reml=reml, theta0=theta0, theta_optimal=theta0 is not None)
    progress(f"refit by {mixed.method} on {len(columns)} columns done")
    return LmmScopeResult(sel, mixed, design, X, y, Z, codes, labels, names, unpenalised, columns,
                          data=data)


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
    if not names:
        raise ValueError("the formula has no fixed effects to select from; lmm() fits a model "
                         "without fixed effects")
    unpen = [names.index(INTERCEPT)] if INTERCEPT in names else []
    unpen = _resolve_always(always, names, unpen)
    X, y, Z, codes, labels = _validated_design(design)
    return _fit_selection(X, y, Z, codes, labels, names, design.random_names, design.group_name,
                          unpen, design, k=k, a=a, criterion=criterion, k_max=k_max,
                          cv_folds=cv_folds, a_grid=a_grid, method=method,
                          random_state=random_state, verbose=verbose)


def lmm(formula: str, data: pd.DataFrame, method: str = "REML", na_action: str = "omit") -> LmmResult:
    """Fit a linear mixed model with every listed fixed effect (no selection), like lme4::lmer."""
    design = build_design(formula, data, na_action=na_action)
    X, y, Z, codes, labels = _validated_design(design)
    stats = compute_cluster_stats(X, y, Z, codes, labels.size)
    mixed = MixedModelFit(stats, design.fixed_names, design.random_names, labels,
                          design.group_name, reml=_check_method(method))
    return LmmResult(mixed, design, X, y, Z, codes, labels)


def __getattr__(name):
    # LmmScope lives in estimator.py; importing it (and scikit-learn) only on first use
    # keeps `import lmmscope` light while `from lmmscope.api import LmmScope` still works.
    if name == "LmmScope":
        from .estimator import LmmScope
        return LmmScope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
