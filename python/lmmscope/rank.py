"""Rank of the fixed-effects design, from its (centred) Gram matrix, as lme4 does it.

lme4 (``chkRank.drop.cols``, ``check.rankX = "message+drop.cols"``) runs R's QR with
limited pivoting (``qr(X, tol = 1e-7)``): columns are taken in order, and one whose
norm, after projecting out the columns kept before it, falls below ``tol`` times its
own norm is aliased and dropped ("fixed-effect model matrix is rank deficient so
dropping 1 column / coefficient").  The same sequential test runs here on the Gram
matrix (a Cholesky factor grown one column at a time), so it needs no raw X; its
entries come from the layout's :class:`~lmmscope.column_products.ColumnProducts` (the
Gram itself, or products of a few columns from X's rows where there is none).  The
Gram is centred when the model has an intercept (see :mod:`lmmscope.centring`), so
a column's "own norm" is its spread around its mean: x + 1.7e9 is not aliased with
the intercept, and a constant column is.

What lmmscope does with what it finds:

* unpenalised columns (intercept, ``always=``, every column of ``lmm()``) aliased with
  earlier ones are dropped from the model with lme4's message naming them;
* candidate (penalised) columns in the span of the kept unpenalised ones can never
  improve the fit: they leave the candidate set, with a message naming them;
* dropped columns keep coefficient 0 in the selection's ``coef``, are absent from
  the refit's ``fixef`` (as in lme4's ``fixef()``), and are listed in
  ``dropped_columns`` of the result.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

from .column_products import as_column_products
from .control import DEFAULT_CONTROL, Control

# The tolerances (R's qr() tolerance on a column's relative norm, as lme4's
# chkRank.drop.cols uses it; the constant-column share) are Control's rank_tol and
# constant_tol.
# On a Gram matrix the squared relative residual is what is computed, with an error of
# a few hundred ulps at worst; the squared tolerance is kept above that floor.  Not a
# Control field: it is the arithmetic's precision (rank_tol below sqrt of it cannot be
# honoured on a Gram), not a choice; rank_tol is the choice.
_SQUARED_FLOOR = 1000 * np.finfo(float).eps


class RankDeficiencyWarning(UserWarning):
    """Aliased columns were dropped (lme4 reports the same as a message)."""


def squared_tolerance(tol: float = DEFAULT_CONTROL.rank_tol) -> float:
    return max(tol * tol, _SQUARED_FLOOR)


def constant_mask(products, control: Control = DEFAULT_CONTROL) -> np.ndarray:
    """Which columns of :class:`~lmmscope.column_products.ColumnProducts` ``products``
    are constant to their own precision (never the intercept).

    Only defined for centred statistics (a model with an intercept): the centred sum
    of squares is then compared with the column's uncentred magnitude.  Without an
    intercept a constant column is not aliased with anything, so none is reported.
    """
    stats = products.stats
    if stats.intercept is None:
        return np.zeros(stats.p, dtype=bool)
    spread = np.clip(products.squares, 0, None)  # sum of squares around x_shift
    magnitude = spread + stats.n_obs * stats.x_shift ** 2
    constant = spread <= control.constant_tol ** 2 * magnitude
    constant[stats.intercept] = False
    return constant


def independent_columns(gram: np.ndarray, order=None, always_aliased=(),
                        tol: float = DEFAULT_CONTROL.rank_tol):
    """Split ``order`` (positions in ``gram``, default all) into (kept, aliased), in
    order, by R's limited-pivoting rule; ``always_aliased`` positions (e.g. constant
    columns) are aliased whatever their norm."""
    order = np.arange(gram.shape[0]) if order is None else np.asarray(order, dtype=np.int64)
    forced = set(int(j) for j in always_aliased)
    threshold = squared_tolerance(tol)
    kept, aliased = [], []
    L = np.zeros((order.size, order.size))
    for j in order:
        j = int(j)
        own = gram[j, j]
        if j in forced or not own > 0:
            aliased.append(j)
            continue
        k = len(kept)
        w = sla.solve_triangular(L[:k, :k], gram[kept, j], lower=True) if k else np.zeros(0)
        residual = own - w @ w
        if residual <= threshold * own:
            aliased.append(j)
            continue
        L[k, :k] = w
        L[k, k] = np.sqrt(residual)
        kept.append(j)
    return np.asarray(kept, dtype=np.int64), np.asarray(aliased, dtype=np.int64)


def in_span(gram_uu: np.ndarray, gram_up: np.ndarray, own: np.ndarray,
            tol: float = DEFAULT_CONTROL.rank_tol):
    """Mask of the columns p whose residual after projecting on the (independent)
    columns u is below ``tol`` of their norm.  ``gram_up`` is u x p, ``own`` their
    squared norms."""
    if gram_uu.shape[0] == 0:
        return ~(own > 0)
    chol = sla.cho_factor(gram_uu, lower=True)
    W = sla.solve_triangular(chol[0], gram_up, lower=True)
    residual = own - np.einsum("ij,ij->j", W, W)
    return ~(own > 0) | (residual <= squared_tolerance(tol) * own)


def drop_message(names, dropped) -> str:
    n = len(dropped)
    what = "column / coefficient" if n == 1 else "columns / coefficients"
    return (f"fixed-effect model matrix is rank deficient so dropping {n} {what}: "
            + ", ".join(str(names[j]) for j in dropped))


def warn_dropped(names, dropped) -> None:
    if len(dropped):
        warnings.warn(drop_message(names, dropped), RankDeficiencyWarning, stacklevel=3)


def full_rank_split(products, columns=None, control: Control = DEFAULT_CONTROL):
    """(kept, aliased) among ``columns`` (default all) of ``products`` (a
    :class:`~lmmscope.column_products.ColumnProducts`, or statistics with a Gram), by
    lme4's rule: the intercept first (it is kept), constant columns aliased, then R's
    limited pivoting in order.  Kept sorted, aliased in the order found."""
    products = as_column_products(products)
    stats = products.stats
    everything = columns is None
    columns = np.arange(stats.p) if everything else np.asarray(columns, dtype=np.int64)
    constant = constant_mask(products, control)[columns]
    gram = products.block(None if everything else columns)  # positions i of ``columns``
    order = sorted(range(columns.size), key=lambda i: columns[i] != stats.intercept)
    kept, aliased = independent_columns(gram, order, always_aliased=np.flatnonzero(constant),
                                        tol=control.rank_tol)
    return columns[np.sort(kept)], columns[aliased]


def full_rank_columns(products, names, columns=None, control: Control = DEFAULT_CONTROL
                      ) -> np.ndarray:
    """Columns (default all) of a fit without selection, aliased ones dropped with
    lme4's message.  ``products``: a :class:`~lmmscope.column_products.ColumnProducts`
    (statistics with a Gram are read through :class:`~lmmscope.column_products.GramProducts`)."""
    kept, aliased = full_rank_split(products, columns, control)
    warn_dropped(names, aliased)
    return kept


def screen_design(products, names, unpenalised, control: Control = DEFAULT_CONTROL):
    """Rank checks before a selection: returns (unpenalised columns kept, candidate
    columns excluded), warning with names.

    An all-ones column is the intercept and is unpenalised (the statistics are centred
    on it).  Unpenalised columns aliased with the intercept or with earlier ones are
    dropped (lme4's message); candidates in the span of the kept unpenalised columns
    leave the candidate set.  ``products``: the layout's
    :class:`~lmmscope.column_products.ColumnProducts` (statistics with a Gram are read
    through its Gram); ``control``: its rank_tol and constant_tol.
    """
    products = as_column_products(products)
    stats = products.stats
    unpen = sorted(set(int(j) for j in unpenalised))
    if stats.intercept is not None and stats.intercept not in unpen:
        warnings.warn(f"column {names[stats.intercept]!r} is all ones: it is the intercept, "
                      "so it is not penalised", RankDeficiencyWarning, stacklevel=3)
        unpen = sorted(unpen + [stats.intercept])
    rows_of, own = products.rows(unpen), products.squares
    constant = constant_mask(products, control)
    order = sorted(range(len(unpen)), key=lambda i: unpen[i] != stats.intercept)
    forced = [i for i in range(len(unpen)) if constant[unpen[i]]]
    kept_pos, aliased_pos = independent_columns(rows_of[:, unpen], order, always_aliased=forced,
                                                tol=control.rank_tol)
    kept = np.asarray(sorted(unpen[i] for i in kept_pos), dtype=np.int64)
    aliased = [unpen[i] for i in aliased_pos]
    warn_dropped(names, aliased)
    candidates = np.setdiff1d(np.arange(stats.p), kept)
    pos = np.searchsorted(unpen, kept)
    span = in_span(rows_of[np.ix_(pos, kept)], rows_of[np.ix_(pos, candidates)], own[candidates],
                   tol=control.rank_tol)
    span |= constant[candidates]
    excluded = candidates[span]
    left = [j for j in excluded if j not in set(aliased)]
    if left:
        warnings.warn("candidate column(s) in the span of the unpenalised columns (intercept, "
                      "always=) can never improve the fit and leave the candidate set: "
                      + ", ".join(str(names[j]) for j in left), RankDeficiencyWarning,
                      stacklevel=3)
    return kept.tolist(), excluded.tolist()
