"""The quadratic loss of the best-subset search: 0.5 ||y - X b||^2 on unit-norm
penalised columns, given by their Gram (an array or an operator giving columns) or by
their whitened rows.  The reductions (:mod:`lmmscope.reduction`) build it; the search
engines (:mod:`lmmscope.engines`) ask it for Gram columns, blocks and least-squares
fits on a support."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

class DenseRows:
    """An N x p array with the two operations the row-form loss needs (the interface
    of :class:`lmmscope.row_whitening.WhitenedOperator`)."""

    def __init__(self, array):
        self.array, self.shape = array, array.shape

    def rmatvec(self, r):
        return self.array.T @ r

    def columns(self, idx):
        return self.array[:, idx]


class QuadraticLoss:
    """0.5 * ||y - X b||^2 on unit-norm penalised columns, given by its Gram or its rows.

    In row form the columns of X are ``rows[:, j] / column_scale[j]``: the rows are
    kept as given (dividing every entry would cost a pass over them), and the k
    columns a product needs are scaled when taken.  ``rows`` is an array or an
    operator with ``rmatvec`` (X'r) and ``columns`` (see :class:`DenseRows`).  ``xty``
    (X'y, of the scaled columns) may be given when the caller has it: a pass over the
    rows is saved."""

    def __init__(self, gram=None, xty=None, yty=None, rows=None, response=None,
                 column_scale=None):
        if isinstance(rows, np.ndarray):
            rows = DenseRows(rows)
        self.rows = rows
        if rows is not None:
            self.response = response
            self.column_scale = (np.ones(rows.shape[1]) if column_scale is None
                                 else np.asarray(column_scale, dtype=float))
            self.xty = rows.rmatvec(response) / self.column_scale if xty is None else xty
            self.yty = float(response @ response)
            # A search asks for the same support's columns and fit several times in a row
            self._last_columns = (None, None)
            self._solutions = {}  # support -> (coefficients on it, singular)
            # Gram columns X'x_j of the columns a search visits (one pass over the rows
            # each), at most ``_max_gram_columns`` of them
            self._gram_cache = {}
            self._max_gram_columns = max(64, 2**26 // (8 * max(self.xty.shape[0], 1)))
        else:
            self.gram, self.xty, self.yty = gram, xty, float(yty)
            self._last_gram_columns = (None, None)
        self.p = self.xty.shape[0]

    def columns(self, s):
        """Row form: the (scaled) columns ``s`` of X, an N x len(s) array (read only)."""
        key = s.tobytes()
        if self._last_columns[0] != key:
            block = self.rows.columns(s) / self.column_scale[s]
            block.flags.writeable = False
            self._last_columns = (key, block)
        return self._last_columns[1]

    def gram_columns(self, s):
        """Columns ``s`` of the Gram X'X (p x len(s)).  Gram form: an operator's (one
        with ``columns`` and ``diagonal``, see :class:`ReducedGramColumns`) are computed
        once for the last support asked.  Row form: X'x_j, one pass over the rows for
        each column not seen before."""
        if self.rows is not None:
            return self._row_gram_columns(np.asarray(s, dtype=np.int64))
        if isinstance(self.gram, np.ndarray):
            return self.gram[s].T  # symmetric: rows are gathered faster than columns
        key = np.asarray(s, dtype=np.int64).tobytes()
        if self._last_gram_columns[0] != key:
            block = self.gram.columns(s)
            block.flags.writeable = False
            self._last_gram_columns = (key, block)
        return self._last_gram_columns[1]

    def _row_gram_columns(self, s):
        cache = self._gram_cache
        missing = [j for j in dict.fromkeys(s.tolist()) if j not in cache]
        if len(cache) + len(missing) > self._max_gram_columns:
            wanted = set(s.tolist())
            for j in [j for j in cache if j not in wanted]:
                del cache[j]
        if missing:
            block = self.rows.columns(np.asarray(missing, dtype=np.int64))
            for at, j in enumerate(missing):
                cache[j] = self.rows.rmatvec(block[:, at]) / (self.column_scale
                                                              * self.column_scale[j])
        out = np.empty((self.p, s.size))
        for at, j in enumerate(s.tolist()):
            out[:, at] = cache[j]
        return out

    def gram_block(self, s):
        """The block (s, s) of the Gram, symmetric (row form: from the k columns)."""
        if self.rows is not None:
            block = self.columns(np.asarray(s, dtype=np.int64))
            return block.T @ block
        if isinstance(self.gram, np.ndarray):
            return self.gram[np.ix_(s, s)]
        block = self.gram.block(s) if hasattr(self.gram, "block") else self.gram_columns(s)[s]
        return (block + block.T) / 2

    def rss(self, b):
        s = np.flatnonzero(b)  # the solver's iterates are k-sparse: O(k^2), not O(p^2)
        if self.rows is not None:
            r = self.response - self.columns(s) @ b[s]
            return float(r @ r)
        bs = b[s]
        return float(max(self.yty - 2 * self.xty[s] @ bs + bs @ self.gram_block(s) @ bs, 0.0))

    def solve_on(self, support):
        """Exact least-squares coefficients restricted to ``support``.

        Candidates in the span of the unpenalised columns are removed before the
        search (:func:`reduce_gram`), so a singular support means candidates collinear
        among themselves: the minimum-norm solution is used, with a warning.
        """
        b = np.zeros(self.p)
        support = np.asarray(support, dtype=np.int64)
        if support.size == 0:
            return b
        if self.rows is not None:
            key = support.tobytes()
            if key not in self._solutions:
                coef, _res, rank_found, _sv = np.linalg.lstsq(self.columns(support),
                                                              self.response, rcond=None)
                self._solutions[key] = (coef, rank_found < support.size)
            coef, singular = self._solutions[key]
            if singular:
                _warn_singular_support()
            b[support] = coef
            return b
        G = self.gram_block(support)
        try:
            b[support] = sla.solve(G, self.xty[support], assume_a="pos")
        except (np.linalg.LinAlgError, sla.LinAlgError):
            _warn_singular_support()
            b[support] = np.linalg.lstsq(G, self.xty[support], rcond=None)[0]
        return b


class SingularSupportWarning(UserWarning):
    """A support searched by the selection has collinear columns."""


def _warn_singular_support():
    warnings.warn("a support searched by the selection has collinear candidate columns; "
                  "its coefficients are the minimum-norm least-squares solution",
                  SingularSupportWarning, stacklevel=4)

