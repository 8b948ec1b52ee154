"""Selection (:func:`lmmscope.lmm_scope`) with several random-effects terms.

The proxy covariance is Sigma_a = a Z~ Z~' + I with Z~ the whole random-effects design
(every term; each column of a term's model matrix divided by its root mean square, so
a does not depend on Z's units, as with one term).  By Woodbury, with the sparse
A_a = I + a Z~'Z~ (factored as in the refit, :func:`lmmscope.sparse_factor.sparse_system`,
whose symbolic work - blocks, index maps, ordering - is done once for every a),

    X_a'X_a = X'X - a (Z~'X)' A_a^-1 (Z~'X),   X_a'y_a and y_a'y_a likewise,

from the additive statistics (Z'Z sparse, Z'X, Z'y, X'X, X'y, y'y); nothing N x N.
The whitened Gram goes to the same search and tuning of k and a as one term
(:func:`lmmscope.engine.fit`, through :class:`lmmscope.random_effects.SeveralTerms`:
:func:`lmmscope.tuning.select` on :class:`SeveralTermsData`, refits by
:class:`SeveralTermsRefitter`).  Cross-validation (k or a = "cv") needs
folds of whole clusters, which crossed factors do not have: refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .control import as_control
from .z_units import proxy_z_scale, term_column_sums_of_squares
from .exceptions import InputError
from .multiterm import MultiTermFit, MultiTermResult, _full_rank
from .nodewise import DenseGram
from .results import LmmScopeResult
from .reduction import reduce_gram
from .sparse_factor import sparse_system
from .sparse_pls import SparseStats
from .tuning import Progress


NO_CROSS_VALIDATION = ("k='cv' and a='cv' hold out whole clusters, which crossed or nested "
                       "random-effects terms do not have; with several terms choose k by a "
                       "criterion (k=None) and a by the refit (a=None) or a number")


class SeveralTermsData:
    """The in-memory data backend of a several-term model: the statistics and the
    whitened problem at a (what :func:`lmmscope.tuning.select` asks of a backend for a
    fixed or refit-tuned a and k by a criterion): a :class:`lmmscope.backend.DataBackend`."""

    use_gram = True

    def __init__(self, X, y, reterms, intercept, control=None):
        self._use_statistics(SparseStats.from_arrays(X, y, reterms.Zt, intercept), reterms,
                             intercept, control)
        self._X, self._y = X, y

    @classmethod
    def from_statistics(cls, stats: SparseStats, reterms, intercept, control=None):
        """The backend of statistics summed elsewhere (parquet chunks, Dask partitions:
        :mod:`lmmscope.sources.several_terms`), without rows."""
        data = cls.__new__(cls)
        data._use_statistics(stats, reterms, intercept, control)
        data._X = data._y = None
        return data

    def _use_statistics(self, stats, reterms, intercept, control):
        self.control = as_control(control)
        self.N, self.p = stats.n_obs, stats.p
        self.reterms = reterms
        self.n_groups = reterms.terms[0].n_levels
        self.stats, self._intercept = stats, intercept
        # unit-free Z: each term's model-matrix column by its root mean square
        scale = np.concatenate([
            np.tile(proxy_z_scale(self.control, sums, self.N), t.n_levels)
            for sums, t in zip(term_column_sums_of_squares(stats.ZtZ, reterms), reterms.terms)])
        self.z_scale = scale
        D = sp.diags(1.0 / scale)
        self.unit_ZtZ = (D @ self.stats.ZtZ @ D).tocsc()
        self.unit_ZtX = self.stats.ZtX / scale[:, None]
        self.unit_Zty = self.stats.Zty / scale
        self._system = None

    def factor(self, a):
        """The factor of A_a = I + a Z~'Z~: Lambda = sqrt(a) I on the unit-free Z'Z."""
        if self._system is None:
            self._system = sparse_system(self.unit_ZtZ, self.reterms, self.control)
        return self._system.factor(np.sqrt(a) * self.reterms.theta0)

    def whitened(self, a):
        """(X_a'X_a, X_a'y_a, y_a'y_a) of Sigma_a = a Z~Z~' + I, by Woodbury."""
        st = self.stats
        if a == 0:
            return st.XtX.copy(), st.Xty.copy(), st.yty
        sol = self.factor(a).solve(np.column_stack([self.unit_ZtX, self.unit_Zty]))
        gram = st.XtX - a * (self.unit_ZtX.T @ sol[:, :-1])
        xty = st.Xty - a * (self.unit_ZtX.T @ sol[:, -1])
        yty = st.yty - a * float(self.unit_Zty @ sol[:, -1])
        return (gram + gram.T) / 2, xty, yty

    def inference_statistics(self, a, beta, progress=None, outer=None):
        """(whitened Gram of the centred columns, scores per level of ``outer``, by default
        the factor that nests the others) at a, ``beta`` in the original parametrisation:
        what :func:`lmmscope.inference.debias` takes.  The scores need the rows once
        (:func:`whitened_scores`)."""
        outer = self.inference_factor(outer)
        G, shift, direction = self.inference_parts(a, beta)
        return G, whitened_scores(self._X, self._y, self.reterms.Zt.T.tocsr(), outer.codes,
                                  outer.n_levels, beta, shift, a, direction)

    def outermost_factor(self):
        """The term whose factor nests every other's (inference clusters by it), or None
        where the terms are crossed."""
        return _outermost_nesting(self.reterms)

    def inference_factor(self, outer=None):
        """``outer``, else the outermost factor; crossed terms are refused."""
        outer = self.outermost_factor() if outer is None else outer
        if outer is None:
            raise InputError(CROSSED_TERMS_HAVE_NO_SANDWICH)
        return outer

    def inference_parts(self, a, beta):
        """From the statistics alone: (whitened Gram of the centred columns, the columns'
        shift, the direction d of the scores), Sigma_a^-1 r = r - a Z d with r = y - X beta,
        d = D^-1 (I + a Z~'Z~)^-1 Z~'r and Z~ = Z D^-1 (D: :attr:`z_scale`)."""
        from .inference import WhitenedGram
        st, intercept = self.stats, self._intercept
        shift, x_sums, z_sums = np.zeros(self.p), np.zeros(self.p), np.zeros(self.reterms.q)
        if intercept is not None:  # X'1 and Z~'1: the intercept's columns of X'X and Z~'X
            x_sums, z_sums = st.XtX[:, intercept], self.unit_ZtX[:, intercept]
            shift = x_sums / self.N
            shift[intercept] = 0.0
        # centred columns: X'Z and X'X shifted by the column sums (no pass over X)
        ZtXc = self.unit_ZtX - np.outer(z_sums, shift)
        XtXc = st.XtX - np.outer(x_sums, shift) - np.outer(shift, x_sums) \
            + self.N * np.outer(shift, shift)
        factor = self.factor(a) if a else None
        gram = XtXc - a * (ZtXc.T @ factor.solve(ZtXc)) if a else XtXc
        # Z~'r: y was centred by y_shift in the statistics
        Ztr = self.unit_Zty + st.y_shift * z_sums - self.unit_ZtX @ beta
        direction = factor.solve(Ztr) / self.z_scale if a else np.zeros(self.reterms.q)
        source = DenseGram((gram + gram.T) / 2)
        G = WhitenedGram(source, dataclasses.make_dataclass("Shift", ["intercept", "x_shift"])(
            intercept, shift))
        return G, shift, direction

    def reduced(self, a, unpenalised):
        gram, xty, yty = self.whitened(a)
        return reduce_gram(gram, xty, yty, unpenalised), None

    def fold_problems(self, a, unpenalised, folds):
        raise InputError(NO_CROSS_VALIDATION)

    def subset_stats(self, columns) -> SparseStats:
        self.stats.system(self.reterms, self.control)  # every subset's refit shares it
        return self.stats.subset(columns)


class SeveralTermsRefitter:
    """(RE)ML refits on column subsets, cached: the tuning's a-iteration and scoring."""

    def __init__(self, data: SeveralTermsData, names, intercept, control=None):
        self.data, self.names, self.intercept = data, list(names), intercept
        self.control = as_control(control)
        self._fits = {}

    def fit(self, columns, reml: bool, checked: bool = False) -> MultiTermFit:
        """The fit on ``columns``: a support the tuning of a tries may hold exactly
        collinear candidates (x2 = 2 x0 - x1 + 3), whose aliased columns are dropped
        first by lme4's rank rule on X'X (silently: not the user's model; the deviance and
        variance ratio depend only on the columns' span).  ``checked``: the columns
        passed lme4's check already (the final refit): fitted as given."""
        key = (tuple(int(j) for j in columns), bool(reml))
        cached = self._fits.get(key)
        if cached is None or (checked and len(cached.fixed_names) != len(key[0])):
            columns = list(key[0])
            if not checked:
                kept, _aliased = _full_rank(self.data.stats.subset(columns).XtX,
                                            [self.names[j] for j in columns],
                                            self.control.rank_tol, warn=False)
                columns = [columns[i] for i in kept]
            intercept = columns.index(self.intercept) if self.intercept in columns else None
            if intercept is None and self.data.stats.y_shift:
                # y was centred because the model has an intercept, which is unpenalised
                raise InputError("a refit without the intercept on statistics of the centred "
                                 "response")
            cached = self._fits[key] = MultiTermFit(
                self.data.subset_stats(columns), self.data.reterms,
                [self.names[j] for j in columns], intercept, reml=reml, control=self.control)
        return cached

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
                 dropped, data):
        super().__init__(mixed, design, X[:, columns], y, reterms, list(columns), dropped)
        self.selection = selection
        self.names = list(names)
        self.unpenalised = [self.names[j] for j in unpenalised]
        self.support = [self.names[j] for j in selection.support]
        self.k, self.a, self.criterion = int(selection.k), float(selection.a), selection.criterion
        self._unpenalised_columns = set(unpenalised)
        self._data = data
        self._inference_cache = None

    def _refit_statistics(self) -> SparseStats:
        """The selected columns' statistics from the selection's (no pass over the rows;
        Z'Z's analysis shared)."""
        return self._data.subset_stats(self._refit_columns)

    @property
    def coef(self) -> pd.Series:
        """Selection estimates over every fixed-effect column (zeros off the support)."""
        return pd.Series(self.selection.coef, index=pd.Index(self.names), name="coef")

    @property
    def selected(self) -> list:
        return [self.names[j] for j in self._refit_columns]

    # the path and tuning tables read the same attributes as one term's
    path = LmmScopeResult.path
    a_history = LmmScopeResult.a_history
    coef_path = LmmScopeResult.coef_path
    _name_index = LmmScopeResult._name_index

    def inference(self, columns=None, level: float = 0.95, adjust="bh", verbose=False,
                  lasso_tol: float | None = None) -> pd.DataFrame:
        """Debiased inference as :meth:`lmmscope.results.LmmScopeResult.inference`, with
        the cluster sandwich over the levels of the outermost factor: with nested terms
        Sigma_a is block diagonal by it, so the scores X_i' Sigma_a,i^-1 r_i of its
        clusters are independent.  Crossed terms have no such clustering: refused (a
        one-way sandwich would be a silently wrong interval)."""
        from . import inference as inf
        from .results import _column_indices
        outer = self._data.inference_factor()
        indices = _column_indices(self.names, columns)
        progress = Progress(verbose)
        if self._inference_cache is None:
            self._inference_cache = ({}, *self._data.inference_statistics(
                self.a, self.coef.to_numpy(), progress, outer))
        rows, G, scores = self._inference_cache
        control = self.mixed.control
        lasso_tol = control.lasso_tol if lasso_tol is None else lasso_tol
        rows = rows.setdefault(float(lasso_tol), {})
        return inf.table_from_cache(G, scores, rows, self.names, indices, self.coef.to_numpy(),
                                    self.nobs, outer.n_levels - 1, level, adjust, progress,
                                    lasso_tol, control.lasso_sigma_tol)

    def confint(self, level: float = 0.95, columns=None) -> pd.DataFrame:
        """Debiased confidence intervals (``ci_lower``, ``ci_upper``): see :meth:`inference`."""
        return self.inference(columns, level=level, adjust=None)[["ci_lower", "ci_upper"]]


CROSSED_TERMS_HAVE_NO_SANDWICH = (
    "debiased intervals need one clustering of the rows for the cluster-robust sandwich, and "
    "this model's random-effects terms are crossed (no factor nests the others); refit the "
    "selected columns with lmmscope.lmm() for lme4's model-based standard errors, which "
    "ignore the selection")


def whitened_scores(X, y, Z, outer_codes, n_outer, beta, shift, a, direction) -> np.ndarray:
    """Per level of the outer factor, (X_i - 1 shift')' (Sigma_a^-1 r)_i with r = y - X beta
    and Sigma_a^-1 r = r - a Z direction (:meth:`SeveralTermsData.inference_parts`): sums
    over rows (``Z`` sparse rows x q), so chunks of rows add up."""
    v = y - X @ beta - a * (Z @ direction)
    membership = sp.csr_matrix((v, (outer_codes, np.arange(y.size))), shape=(n_outer, y.size))
    return np.asarray(membership @ (X - shift))


def _outermost_nesting(reterms):
    """The term whose factor nests every other term's factor (each level of the other
    factors inside one of its levels), or None where the terms are crossed."""
    outer = min(reterms.terms, key=lambda t: t.n_levels)
    for t in reterms.terms:
        pairs = np.unique(np.column_stack([t.codes, outer.codes]), axis=0)
        if np.unique(pairs[:, 0]).size != pairs.shape[0]:
            return None
    return outer
