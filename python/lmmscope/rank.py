"""Rank of the fixed-effects design, from its (centred) Gram matrix, as lme4 does it.

lme4 (``chkRank.drop.cols``, ``check.rankX = "message+drop.cols"``) runs R's QR with
limited pivoting (``qr(X, tol = 1e-7)``): columns are taken in order, and one whose
norm, after projecting out the columns kept before it, falls below ``tol`` times its
own norm is aliased and dropped ("fixed-effect model matrix is rank deficient so
dropping 1 column / coefficient").  The same sequential test runs here on the Gram
matrix (a Cholesky factor grown one column at a time), so it needs no raw X.  The
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

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .centring import column_moments
from .control import DEFAULT_CONTROL, DEFAULT_PERFORMANCE, Control, Performance
from .intercept import InterceptPrepended

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


def constant_columns(stats, control: Control = DEFAULT_CONTROL) -> np.ndarray:
    """Indices of columns constant to their own precision (never the intercept).

    Only defined for centred statistics (a model with an intercept): the centred sum
    of squares is then compared with the column's uncentred magnitude.  Without an
    intercept a constant column is not aliased with anything, so none is reported.
    """
    if stats.intercept is None or stats.XtX is None:
        return np.zeros(0, dtype=np.int64)
    spread = np.clip(np.diag(stats.XtX), 0, None)  # sum of squares around x_shift
    magnitude = spread + stats.n_obs * stats.x_shift ** 2
    constant = spread <= control.constant_tol ** 2 * magnitude
    constant[stats.intercept] = False
    return np.flatnonzero(constant)


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


def full_rank_columns(stats, names, columns=None, control: Control = DEFAULT_CONTROL
                      ) -> np.ndarray:
    """Columns (default all) of a fit without selection, aliased ones dropped with
    lme4's message.  Needs the Gram of ``stats``."""
    columns = np.arange(stats.p) if columns is None else np.asarray(columns, dtype=np.int64)
    constant = set(constant_columns(stats, control).tolist())
    # the intercept first, as lme4 puts it first: it is kept, the constants dropped
    order = sorted(columns.tolist(), key=lambda j: j != stats.intercept)
    kept, aliased = independent_columns(stats.XtX, order, always_aliased=constant,
                                        tol=control.rank_tol)
    warn_dropped(names, aliased)
    return np.asarray(sorted(kept.tolist()), dtype=np.int64)


@dataclass
class RowMoments:
    """Column statistics of X - 1 shift' from one scan of its rows, for the column and
    rank checks where there is no Gram: sums, sums of squares, and two random
    projections (keys that equal columns share)."""

    sums: np.ndarray
    squares: np.ndarray
    keys: np.ndarray  # (2, p)


@dataclass
class RawMoments:
    """Uncentred column statistics of an array: sums and sums of squares (as
    :func:`lmmscope.centring.column_moments` computes them, so the statistics reusing
    them are those of their own pass) and the projections R X on two fixed random rows.
    The input checks compute them; :func:`row_moments` centres them without a second
    scan."""

    sums: np.ndarray
    squares: np.ndarray
    projections: np.ndarray  # (2, p)
    # a row-major copy of a column-major array made in the same pass (see
    # :func:`lmmscope.checks.check_finite_columns`), its columns after ``lead`` free
    row_major: np.ndarray | None = None


@functools.lru_cache(maxsize=2)
def _projection_rows(n_rows: int) -> np.ndarray:
    """The two fixed random rows (read-only): drawn once per N, not once per use (a
    fit uses them three times; at N = 10^6 a draw costs ~40 ms)."""
    rows = np.random.default_rng(0).standard_normal((2, n_rows))
    rows.flags.writeable = False
    return rows


def raw_moments(base: np.ndarray, copy_to=None,
                performance: Performance = DEFAULT_PERFORMANCE) -> RawMoments:
    """``copy_to``, ``performance``: see :func:`lmmscope.centring.column_moments`."""
    return RawMoments(*column_moments(base, project=_projection_rows(base.shape[0]),
                                      copy_to=copy_to, performance=performance))


# Uncentred sums of squares minus N mean^2 lose log10(ratio) digits to cancellation:
# at most ~6 of 16 where the ratio of the raw to the centred sum is below this.  Not a
# Control field: it picks how a column's centred moments are computed (corrected raw
# sums, or a second pass over centred rows), both accurate well inside the tolerances
# that read them (constant_tol, duplicate_tol, the rank check on the Gram).
MILD_LOCATION = 1e6


def row_moments(X, shift, raw: RawMoments | None = None, chunk_rows=4096) -> RowMoments:
    """:class:`RowMoments` of X centred by ``shift``, without a centred copy of X: from
    the raw moments (``raw``: those of X's own columns, when already computed) where
    the location is mild, from centred row chunks of only the other columns."""
    intercept = isinstance(X, InterceptPrepended)
    base = X.base if intercept else np.asarray(X)
    N = base.shape[0]
    own = np.asarray(shift, float)[int(intercept):]
    R = np.vstack([np.ones(N), _projection_rows(N)])
    raw = raw_moments(base) if raw is None else raw
    products = np.vstack([raw.sums, raw.projections])  # [1; R] X
    raw = raw.squares
    spread = raw - 2 * own * products[0] + N * own ** 2
    projected = products - np.outer(R.sum(axis=1), own)  # row 0: the centred sums
    far = np.flatnonzero(raw > MILD_LOCATION * np.maximum(spread, 0) + (raw == 0))
    if far.size:  # large means: recompute those columns on centred row chunks
        spread[far], projected[:, far] = 0.0, 0.0
        for start in range(0, N, chunk_rows):
            chunk = base[start:start + chunk_rows, far] - own[far]
            projected[:, far] += R[:, start:start + chunk_rows] @ chunk
            spread[far] += np.einsum("ij,ij->j", chunk, chunk)
    if intercept:  # the all-ones column is not shifted
        spread = np.concatenate([[float(N)], spread])
        projected = np.column_stack([R.sum(axis=1), projected])
    return RowMoments(projected[0], np.maximum(spread, 0), projected[1:])


def _products_with(stats, columns, X=None, moments=None, chunk_rows=4096):
    """(Gram rows of ``columns`` (u x p), squared norms of every column), from the
    statistics' Gram, or from the rows of X (centred by the statistics' shifts):
    ``moments`` give the norms and the intercept's row; other columns need a scan."""
    if stats.XtX is not None:
        return stats.XtX[columns], np.diag(stats.XtX).copy()
    if X is None:
        raise ValueError("rank checks need the Gram matrix or the rows of X")
    moments = row_moments(X, stats.x_shift) if moments is None else moments
    N, p = X.shape
    rows_of = np.zeros((len(columns), p))
    others = [i for i, j in enumerate(columns) if j != stats.intercept]
    if len(others) < len(columns):
        rows_of[columns.index(stats.intercept)] = moments.sums
    if others:
        picked = [columns[i] for i in others]
        for first in range(0, N, chunk_rows):
            chunk = np.asarray(X[first:first + chunk_rows]) - stats.x_shift
            rows_of[others] += chunk[:, picked].T @ chunk
    return rows_of, moments.squares.copy()


def _constant_mask(stats, own, control: Control = DEFAULT_CONTROL):
    if stats.intercept is None:
        return np.zeros(own.size, dtype=bool)
    constant = own <= control.constant_tol ** 2 * (own + stats.n_obs * stats.x_shift ** 2)
    constant[stats.intercept] = False
    return constant


def screen_design(stats, names, unpenalised, X=None, moments=None,
                  control: Control = DEFAULT_CONTROL):
    """Rank checks before a selection: returns (unpenalised columns kept, candidate
    columns excluded), warning with names.

    An all-ones column is the intercept and is unpenalised (the statistics are centred
    on it).  Unpenalised columns aliased with the intercept or with earlier ones are
    dropped (lme4's message); candidates in the span of the kept unpenalised columns
    leave the candidate set.  ``moments``: X's :func:`row_moments`, when already computed;
    ``control``: its rank_tol and constant_tol.
    """
    unpen = sorted(set(int(j) for j in unpenalised))
    if stats.intercept is not None and stats.intercept not in unpen:
        warnings.warn(f"column {names[stats.intercept]!r} is all ones: it is the intercept, "
                      "so it is not penalised", RankDeficiencyWarning, stacklevel=3)
        unpen = sorted(unpen + [stats.intercept])
    rows_of, own = _products_with(stats, unpen, X, moments)
    constant = _constant_mask(stats, own, control)
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
