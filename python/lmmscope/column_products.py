"""What the column and rank checks read of the fixed-effects design, one object per layout.

The checks (:func:`lmmscope.checks.check_design_columns`, ``check_response_not_a_predictor``,
``check_scales``, ``check_statistics_finite``; :func:`lmmscope.rank.screen_design`,
``full_rank_columns``) ask a :class:`ColumnProducts` and never which layout holds the
data; the layout supplies it (:meth:`lmmscope.layouts.GramLayout.column_products`,
``RowLayout.column_products``; the streamed backends hold a Gram):

* :class:`GramProducts` reads the statistics' Gram X'X (O(p) or O(u p) per question);
* :class:`RowProducts` reads X's rows where there is no Gram (p >> N): the columns'
  moments from one scan (:func:`row_moments`, computed once), one more scan per
  :meth:`~ColumnProducts.rows` request, duplicates by random projections.

Every product is of the columns centred by the statistics' ``x_shift`` (the Gram's own
centring, :mod:`lmmscope.centring`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .centring import column_moments
from .control import DEFAULT_CONTROL, DEFAULT_PERFORMANCE, Performance
from .intercept import InterceptPrepended


class ColumnProducts:
    """The centred columns' products that the checks read.  ``stats``: the statistics
    they belong to (``n_obs``, ``p``, ``intercept``, ``x_shift``, ``Xty``, ``yty``)."""

    stats: object

    @property
    def squares(self) -> np.ndarray:
        """Each column's sum of squares (the Gram's diagonal), (p,)."""
        raise NotImplementedError

    @property
    def sums(self) -> np.ndarray | None:
        """Each column's sum (the intercept's row of the Gram), None without an intercept."""
        raise NotImplementedError

    def rows(self, columns) -> np.ndarray:
        """The products of the columns ``columns`` (a list) with every column,
        len(columns) x p: those rows of the Gram."""
        raise NotImplementedError

    def block(self, columns=None) -> np.ndarray:
        """The products among ``columns`` (default all), a square array."""
        columns = list(range(self.stats.p)) if columns is None else list(columns)
        return self.rows(columns)[:, columns]

    def duplicate_pairs(self, skip=(), tol: float = DEFAULT_CONTROL.duplicate_tol) -> list:
        """Pairs (i < j) of columns equal up to scale (either sign): |x_i'x_j| >= (1 - tol)
        ||x_i|| ||x_j||, columns in ``skip`` ignored."""
        raise NotImplementedError


def as_column_products(source) -> ColumnProducts:
    """``source`` itself when it is a :class:`ColumnProducts`, else statistics holding a
    Gram (the several-term fits and the refit's statistics always do) read through it."""
    return source if isinstance(source, ColumnProducts) else GramProducts(source)


class GramProducts(ColumnProducts):
    """The products from the statistics' p x p Gram X'X."""

    def __init__(self, stats):
        if stats.XtX is None:
            raise ValueError("these statistics hold no Gram matrix: pass the layout's "
                             "ColumnProducts (RowProducts, from X's rows)")
        self.stats = stats

    @property
    def squares(self):
        return np.diag(self.stats.XtX)

    @property
    def sums(self):
        intercept = self.stats.intercept
        return None if intercept is None else self.stats.XtX[intercept]

    def rows(self, columns):
        return self.stats.XtX[list(columns)]

    def block(self, columns=None):
        if columns is None:  # the Gram itself: no p x p copy
            return self.stats.XtX
        columns = np.asarray(columns, dtype=np.int64)
        return self.stats.XtX[np.ix_(columns, columns)]

    def duplicate_pairs(self, skip=(), tol=DEFAULT_CONTROL.duplicate_tol):
        return duplicate_pairs_from_gram(self.stats.XtX, skip, tol=tol)


class RowProducts(ColumnProducts):
    """The products from the rows of X (an array or an
    :class:`~lmmscope.intercept.InterceptPrepended`) where the statistics hold no Gram.
    ``raw``: the :class:`RawMoments` of X's own columns, where the input checks computed
    them (the moments then need no scan of their own)."""

    def __init__(self, stats, X, raw: RawMoments | None = None, chunk_rows: int = 4096):
        self.stats, self.X, self.raw, self.chunk_rows = stats, X, raw, chunk_rows
        self._moments = None

    @property
    def moments(self) -> RowMoments:
        """X's :class:`RowMoments`, from one scan made on the first question."""
        if self._moments is None:
            self._moments = row_moments(self.X, self.stats.x_shift, raw=self.raw,
                                        chunk_rows=self.chunk_rows)
        return self._moments

    @property
    def squares(self):
        return self.moments.squares

    @property
    def sums(self):
        return None if self.stats.intercept is None else self.moments.sums

    def rows(self, columns):
        """One scan of the rows for the columns other than the intercept (whose row is
        the centred sums)."""
        columns = list(columns)
        stats, X = self.stats, self.X
        N, p = X.shape
        rows_of = np.zeros((len(columns), p))
        others = [i for i, j in enumerate(columns) if j != stats.intercept]
        if len(others) < len(columns):
            rows_of[columns.index(stats.intercept)] = self.moments.sums
        if others:
            picked = [columns[i] for i in others]
            for first in range(0, N, self.chunk_rows):
                chunk = np.asarray(X[first:first + self.chunk_rows]) - stats.x_shift
                rows_of[others] += chunk[:, picked].T @ chunk
        return rows_of

    def duplicate_pairs(self, skip=(), tol=DEFAULT_CONTROL.duplicate_tol):
        """Duplicated pairs found by random projections of the centred, normalised
        columns (duplicates have keys within :func:`duplicate_key_gap`; only pairs that
        close in both keys are compared exactly), the pairs the Gram's test
        (:func:`duplicate_pairs_from_gram`) finds at the same ``tol``."""
        X, shift, moments = self.X, self.stats.x_shift, self.moments
        norm = np.sqrt(moments.squares)
        usable = norm > 1e-300
        usable[np.asarray(skip, dtype=np.int64)] = False
        keys = moments.keys.copy()
        keys[:, usable] /= norm[usable]
        keys *= np.where(keys[0] < 0, -1.0, 1.0)  # x and -x are duplicates too
        order = np.flatnonzero(usable)[np.argsort(keys[0, usable], kind="stable")]
        gap = duplicate_key_gap(tol)
        first = keys[0, order]
        # every later column within the gap in the first key, not only the next one: a
        # third column's key may fall between a duplicate pair's
        window_end = np.searchsorted(first, first + gap, side="right")
        pairs = []
        for t in np.flatnonzero(window_end > np.arange(order.size) + 1):
            for u in range(t + 1, int(window_end[t])):
                i, j = sorted((int(order[t]), int(order[u])))
                if abs(keys[1, i] - keys[1, j]) > gap:
                    continue
                xi = np.asarray(X[:, i]) - shift[i]
                xj = np.asarray(X[:, j]) - shift[j]
                if abs(xi @ xj) >= (1 - tol) * norm[i] * norm[j]:
                    pairs.append((i, j))
        return sorted(pairs)


def duplicate_pairs_from_gram(G, skip=(), tol=DEFAULT_CONTROL.duplicate_tol,
                              block_bytes=16 * 2**20):
    """Pairs (i < j) of columns with |G_ij| >= (1 - tol) sqrt(G_ii G_jj), scanning G a
    block of rows at a time (columns in ``skip`` and zero columns are ignored)."""
    p = G.shape[0]
    norm = np.sqrt(np.clip(np.diag(G), 0, None))
    usable = norm > 0
    usable[np.asarray(skip, dtype=np.int64)] = False
    inv = np.zeros(p)
    inv[usable] = 1 / norm[usable]
    rows = max(1, block_bytes // (8 * max(p, 1)))
    pairs = []
    for first in range(0, p, rows):
        stop = min(first + rows, p)
        block = G[first:stop] * inv[None, :]
        block *= inv[first:stop, None]
        np.abs(block, out=block)
        for i, j in np.argwhere(block >= 1 - tol):
            if j > first + i:
                pairs.append((int(first + i), int(j)))
        del block  # before the next one is made
    return sorted(pairs)


def duplicate_key_gap(tol: float) -> float:
    """How far apart two columns' keys (standard normal projections of the centred
    columns over their norms) may lie when the columns are duplicates at ``tol``:
    unit vectors u, v with |u'v| >= 1 - tol have ||u -+ v||^2 <= 2 tol, so each key
    differs by a normal of standard deviation at most sqrt(2 tol); 8 of them miss a
    duplicate with probability ~1e-15.  Not a tolerance of its own: a wider gap only
    compares more pairs exactly (each a pass over two columns); 1e-6 at least, for the
    keys' rounding where large means cancel (~1e-10)."""
    return max(1e-6, 8 * math.sqrt(2 * tol))


# -- moments of X's rows --------------------------------------------------------------

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
