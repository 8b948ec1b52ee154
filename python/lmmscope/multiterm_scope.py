"""Selection (:func:`lmmscope.lmm_scope`) with several random-effects terms.

The proxy covariance is Sigma_a = a Z~ Z~' + I with Z~ the whole random-effects design
(every term; each column of a term's model matrix divided by its root mean square, so
a does not depend on Z's units, as with one term).  By Woodbury, with the sparse
A_a = I + a Z~'Z~ (factored as in the refit: :func:`lmmscope.sparse_pls.factor_spd`),

    X_a'X_a = X'X - a (Z~'X)' A_a^-1 (Z~'X),   X_a'y_a and y_a'y_a likewise,

from the additive statistics (Z'Z sparse, Z'X, Z'y, X'X, X'y, y'y); nothing N x N.
The whitened Gram goes to the same search and tuning of k and a as one term
(:func:`lmmscope.tuning.select` on :class:`SeveralTermsData`, whose refits are
:class:`~lmmscope.multiterm.MultiTermFit`).  Cross-validation (k or a = "cv") needs
folds of whole clusters, which crossed factors do not have: refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .control import as_control
from .multiterm import MultiTermFit, MultiTermResult
from .selection import reduce_gram
from .sparse_pls import SparseStats, factor_spd
from .tuning import DEFAULT_A_GRID, Progress, select


class SeveralTermsData:
    """The in-memory data backend of a several-term model: the statistics and the
    whitened problem at a (what :func:`lmmscope.tuning.select` asks of a backend for a
    fixed or refit-tuned a and k by a criterion)."""

    def __init__(self, X, y, reterms, intercept, control=None):
        self.control = as_control(control)
        self.N, self.p = X.shape
        self.reterms = reterms
        self.n_groups = reterms.terms[0].n_levels
        self.stats = SparseStats.from_arrays(X, y, reterms.Zt, intercept)
        # unit-free Z: each term's model-matrix column by its root mean square
        if self.control.unit_free_z:
            scale = np.concatenate([np.tile(np.sqrt(np.mean(t.Z ** 2, axis=0)), t.n_levels)
                                    for t in reterms.terms])
            scale[scale == 0] = 1.0
        else:
            scale = np.ones(reterms.q)
        self.z_scale = scale
        D = sp.diags(1.0 / scale)
        self.unit_ZtZ = (D @ self.stats.ZtZ @ D).tocsc()
        self.unit_ZtX = self.stats.ZtX / scale[:, None]
        self.unit_Zty = self.stats.Zty / scale

    def whitened(self, a):
        """(X_a'X_a, X_a'y_a, y_a'y_a) of Sigma_a = a Z~Z~' + I, by Woodbury."""
        st = self.stats
        if a == 0:
            return st.XtX.copy(), st.Xty.copy(), st.yty
        A = (a * self.unit_ZtZ + sp.identity(self.reterms.q, format="csc")).tocsc()
        factor = factor_spd(A, self.reterms)
        sol = factor.solve(np.column_stack([self.unit_ZtX, self.unit_Zty]))
        gram = st.XtX - a * (self.unit_ZtX.T @ sol[:, :-1])
        xty = st.Xty - a * (self.unit_ZtX.T @ sol[:, -1])
        yty = st.yty - a * float(self.unit_Zty @ sol[:, -1])
        return (gram + gram.T) / 2, xty, yty

    def reduced(self, a, unpenalised):
        gram, xty, yty = self.whitened(a)
        return reduce_gram(gram, xty, yty, unpenalised), None

    def fold_problems(self, a, unpenalised, folds):
        raise ValueError("k='cv' and a='cv' hold out whole clusters, which crossed or nested "
                         "random-effects terms do not have; with several terms choose k by "
                         "a criterion (k=None) and a by the refit (a=None) or a number")

    def subset_stats(self, columns) -> SparseStats:
        st, columns = self.stats, np.asarray(columns, dtype=np.int64)
        return dataclasses.replace(st, ZtX=st.ZtX[:, columns], XtX=st.XtX[np.ix_(columns, columns)],
                                   Xty=st.Xty[columns])


class SeveralTermsRefitter:
    """(RE)ML refits on column subsets, cached: the tuning's a-iteration and scoring."""

    def __init__(self, data: SeveralTermsData, names, intercept, control=None):
        self.data, self.names, self.intercept = data, list(names), intercept
        self.control = as_control(control)
        self._fits = {}

    def fit(self, columns, reml: bool) -> MultiTermFit:
        key = (tuple(int(j) for j in columns), bool(reml))
        if key not in self._fits:
            columns = list(key[0])
            intercept = columns.index(self.intercept) if self.intercept in columns else None
            self._fits[key] = MultiTermFit(self.data.subset_stats(columns), self.data.reterms,
                                           [self.names[j] for j in columns], intercept,
                                           reml=reml, control=self.control)
        return self._fits[key]

    def variance_ratio(self, columns) -> float:
        """a = tr(Lambda Lambda' Z'Z) / tr(Z~'Z~) from the REML fit on ``columns``: the
        average random-effect to noise variance per row and unit-free Z column."""
        theta = self.fit(columns, reml=True).theta
        Lt = self.data.reterms.lambdat(theta)
        explained = float((Lt @ self.data.stats.ZtZ @ Lt.T).diagonal().sum())
        return explained / max(float(self.data.unit_ZtZ.diagonal().sum()), 1e-300)

    def ml_deviance(self, columns) -> float:
        return self.fit(columns, reml=False).deviance


class MultiTermScopeResult(MultiTermResult):
    """:func:`lmmscope.lmm_scope` with several random-effects terms: the selection
    (``coef``, ``support``, ``selected``, ``k``, ``a``, ``path``, ``a_history``) and the
    (RE)ML refit on the selected columns (lme4's accessors, as :class:`MultiTermResult`)."""

    def __init__(self, selection, mixed, design, X, y, reterms, names, unpenalised, columns,
                 dropped):
        super().__init__(mixed, design, X[:, columns], y, reterms, list(columns), dropped)
        self.selection = selection
        self.names = list(names)
        self.unpenalised = [self.names[j] for j in unpenalised]
        self.support = [self.names[j] for j in selection.support]
        self.k, self.a, self.criterion = int(selection.k), float(selection.a), selection.criterion
        self._unpenalised_columns = set(unpenalised)

    @property
    def coef(self) -> pd.Series:
        """Selection estimates over every fixed-effect column (zeros off the support)."""
        return pd.Series(self.selection.coef, index=pd.Index(self.names), name="coef")

    @property
    def selected(self) -> list:
        return [self.names[j] for j in self._refit_columns]

    @property
    def path(self) -> pd.DataFrame:
        path = self.selection.path.copy()
        path["support"] = [", ".join(self.names[j] for j in np.flatnonzero(row)
                                     if j not in self._unpenalised_columns)
                           for row in self.selection.path_coef]
        return path

    @property
    def a_history(self) -> pd.DataFrame:
        return self.selection.a_history

    def inference(self, *args, **kwargs):
        kind = "nested" if _nested(self.reterms) else "crossed"
        raise ValueError(
            "debiased intervals with several random-effects terms are not available: the "
            "cluster-robust sandwich needs one clustering of the rows, and this model's "
            f"terms are {kind}; refit the selected columns with lmmscope.lmm() for lme4's "
            "model-based standard errors (fixef, bse), which ignore the selection")


def _nested(reterms) -> bool:
    """Whether every term's factor is nested in the coarsest one (its levels never
    span two levels of the coarsest factor)."""
    outer = reterms.terms[-1]
    for t in reterms.terms[:-1]:
        pairs = pd.DataFrame({"inner": t.codes, "outer": outer.codes}).drop_duplicates()
        if pairs["inner"].duplicated().any():
            return False
    return True


def lmm_scope_several_terms(design, reterms, unpenalised, *, k, a, criterion, k_max,
                            a_grid=DEFAULT_A_GRID, method="REML", random_state=0,
                            verbose=False, control=None, cv_folds=5):
    """Selection and refit of :func:`lmmscope.lmm_scope` for a several-term model."""
    from .formula import INTERCEPT
    if method not in ("REML", "ML"):
        raise ValueError(f"method must be 'REML' or 'ML', got {method!r}")
    control = as_control(control)
    progress = Progress(verbose)
    X = np.asarray(design.X, dtype=float)
    names = list(design.fixed_names)
    intercept = names.index(INTERCEPT) if INTERCEPT in names else None
    data = SeveralTermsData(X, design.y, reterms, intercept, control)
    refitter = SeveralTermsRefitter(data, names, intercept, control)
    progress(f"N={data.N}, p={data.p} ({len(unpenalised)} unpenalised), q={reterms.q}, "
             f"terms: {', '.join(f'{t.group_name} ({t.n_levels})' for t in reterms.terms)}")
    sel = select(data, unpenalised=unpenalised, names=names, k=k, a=a, criterion=criterion,
                 k_max=k_max, cv_folds=cv_folds, a_grid=a_grid, random_state=random_state,
                 verbose=progress, control=control, refitter=refitter)
    if intercept is not None and data.stats.y_shift:  # the selection ran on y - mean(y)
        coef, path_coef = sel.coef.copy(), sel.path_coef.copy()
        coef[intercept] += data.stats.y_shift
        path_coef[:, intercept] += data.stats.y_shift
        sel = dataclasses.replace(sel, coef=coef, path_coef=path_coef)
    columns = sorted(set(unpenalised) | set(int(j) for j in sel.support))
    mixed = refitter.fit(columns, reml=method == "REML")
    progress(f"refit by {method} on {len(columns)} columns done")
    return MultiTermScopeResult(sel, mixed, design, X, design.y, reterms, names, unpenalised,
                                columns, [])
