"""Best-subset selection of fixed effects on whitened statistics.

The quasi-likelihood loss ||y_a - X_a beta||^2 / (2 tr(Sigma_a^{-1})) is a quadratic
in beta.  Unpenalised columns (intercept, forced-in terms) are profiled out first
(a Schur complement), the remaining columns are scaled to unit whitened norm so the
search is scale-invariant, and supports are searched by splicing (the algorithm of
abess and skscope, Zhu et al. 2020, PNAS 117:33117) alternated with exact single-swap
exchange moves, with closed-form least-squares solves on the Gram's columns.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .dense_kernels import subtract_product, symmetrise
from .rank import independent_columns, squared_tolerance
from .threads import one_blas_thread

CRITERIA = ("gic", "ebic", "bic", "aic")


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


@dataclass
class ReducedProblem:
    """Penalised-column problem after profiling out the unpenalised columns."""

    loss: QuadraticLoss
    penalised: np.ndarray  # indices into the full column set
    unpenalised: np.ndarray
    scale: np.ndarray  # whitened norm of each penalised column (after profiling)
    recover: object  # callable: penalised coefs (original scale) -> full coefficient vector


def _selectable(own, residual):
    """Candidates whose norm survives profiling out the unpenalised columns: the others
    lie in their span (to lme4's rank tolerance) and can never improve the fit."""
    return (own > 0) & (residual > squared_tolerance() * own)


def _require_finite(loss: QuadraticLoss, scale) -> None:
    """A non-finite objective would make every comparison of the search meaningless:
    refuse first."""
    if not (np.isfinite(loss.yty) and np.all(np.isfinite(loss.xty)) and np.all(np.isfinite(scale))):
        raise ValueError("the whitened cross-products are not finite (an overflow): rescale y "
                         "or the columns of X")


def reduce_gram(gram, xty, yty, unpenalised) -> ReducedProblem:
    """Profile unpenalised columns out of a Gram-form quadratic and scale the rest.

    Unpenalised columns aliased with earlier ones (R's limited-pivoting rule, see
    :mod:`lmmscope.rank`) are left out (coefficient 0), and so are candidates in the
    span of the unpenalised columns (a training fold can make a column constant).
    ``gram`` (fresh from the caller, as the rows given to :func:`reduce_rows`) is
    overwritten where the unpenalised columns lead (the intercept): a copy of a p x p
    matrix is avoided.
    """
    p = gram.shape[0]
    unpen, _aliased = independent_columns(gram, sorted(unpenalised))
    others = np.setdiff1d(np.arange(p), unpen)
    own = np.diag(gram)[others].copy()  # norms before profiling
    G_up = gram[np.ix_(unpen, others)]
    leading = np.array_equal(unpen, np.arange(unpen.size))
    G_pp = gram[unpen.size:, unpen.size:] if leading else gram[np.ix_(others, others)]
    c_p = xty[others]
    yy = float(yty)
    A = au = None
    if unpen.size:
        A, au, c_p, yy = _profiled(gram[np.ix_(unpen, unpen)], G_up, xty[unpen], c_p, yy)
        for first in range(0, others.size, 512):  # Schur complement, in place by blocks
            rows = slice(first, first + 512)
            G_pp[rows] -= G_up[:, rows].T @ A
    keep = _selectable(own, np.diag(G_pp))
    pen = others[keep]
    if not np.all(keep):
        G_pp, c_p = G_pp[np.ix_(keep, keep)], c_p[keep]
        if unpen.size:
            A = A[:, keep]
    scale = np.sqrt(np.clip(np.diag(G_pp), 1e-300, None))
    G_pp /= scale[:, None]  # unit-norm columns, in place
    G_pp /= scale[None, :]
    loss = QuadraticLoss(gram=symmetrise(G_pp), xty=c_p / scale, yty=yy)
    _require_finite(loss, scale)

    return ReducedProblem(loss, pen, unpen, scale, _recoverer(p, pen, unpen, au, A))


def _profiled(G_uu, G_up, xty_u, c_p, yy):
    """The unpenalised columns profiled out of a Gram-form quadratic: A = G_uu^{-1} G_up,
    their coefficients at b_pen = 0 (au), and the penalised columns' X'y and y'y after."""
    chol = sla.cho_factor(G_uu)
    A = sla.cho_solve(chol, G_up)
    au = sla.cho_solve(chol, xty_u)
    return A, au, c_p - G_up.T @ au, yy - float(xty_u @ au)


def _recoverer(p, pen, unpen, au, A):
    """Full coefficients from the penalised ones: the unpenalised columns' profiled
    least-squares values au - A b_pen (A = G_uu^{-1} G_up)."""
    def recover(b_pen):
        beta = np.zeros(p)
        beta[pen] = b_pen
        if unpen.size:
            beta[unpen] = au - A @ b_pen
        return beta

    return recover


def reduce_gram_columns(wg, unpenalised) -> ReducedProblem:
    """:func:`reduce_gram` on a whitened Gram given by its columns
    (:class:`lmmscope.whitening.WhitenedGramColumns`): the profiling of the unpenalised
    columns and the unit-norm scaling are applied to each block of columns asked for,
    so no p x p array is formed."""
    p = wg.p
    listed = np.asarray(sorted(unpenalised), dtype=np.int64)
    W_u = wg.columns(listed)  # p x u
    kept, _aliased = independent_columns(W_u[listed])
    unpen, W_u = listed[kept], W_u[:, kept]
    others = np.setdiff1d(np.arange(p), unpen)
    own = wg.diagonal[others]
    c_p, yy = wg.xty[others], float(wg.yty)
    G_up = W_u[others].T  # u x (p - u)
    A = au = None
    residual = own
    if unpen.size:
        A, au, c_p, yy = _profiled(W_u[unpen], G_up, wg.xty[unpen], c_p, yy)
        residual = own - np.einsum("up,up->p", G_up, A)
    keep = _selectable(own, residual)
    pen = others[keep]
    G_up, residual, c_p = G_up[:, keep], residual[keep], c_p[keep]
    if unpen.size:
        A = A[:, keep]
    scale = np.sqrt(np.clip(residual, 1e-300, None))
    loss = QuadraticLoss(gram=ReducedGramColumns(wg, pen, G_up, A, scale, residual),
                         xty=c_p / scale, yty=yy)
    _require_finite(loss, scale)

    return ReducedProblem(loss, pen, unpen, scale, _recoverer(p, pen, unpen, au, A))


class ReducedGramColumns:
    """Columns of the penalised block of a whitened Gram given by columns, with the
    unpenalised columns profiled out (Schur complement G_pp - G_up' A) and unit-norm
    scaling: the Gram of :func:`reduce_gram`, a block of columns at a time.  Columns
    are kept in one store of ``cache_bytes`` (the supports of successive k overlap);
    when it is full it starts again."""

    def __init__(self, wg, pen, G_up, A, scale, residual, cache_bytes: int = 2**26,
                 block: int = 64):
        self.wg, self.pen, self.G_up, self.A, self.scale = wg, pen, G_up, A, scale
        self.diagonal = residual / scale ** 2
        self._block = block  # columns computed at a time: small temporaries
        self._capacity = int(min(pen.size, max(4 * block, cache_bytes // (8 * max(pen.size, 1)))))
        self._store = None  # (capacity, penalised): row r holds the column in slot r
        self._slot = {}  # column -> its row in the store
        # the penalised rows as a slice where they are one (no copy of each block)
        contiguous = pen.size and pen[-1] - pen[0] + 1 == pen.size
        self._rows = slice(int(pen[0]), int(pen[-1]) + 1) if contiguous else pen

    def _ensure(self, s):
        """Slots of the columns ``s`` in the store, computing the missing ones."""
        wanted = list(dict.fromkeys(s.tolist()))
        missing = [j for j in wanted if j not in self._slot]
        if len(self._slot) + len(missing) > self._capacity:
            self._keep_only([j for j in wanted if j in self._slot])
        if len(wanted) > self._capacity:  # more than the store holds: a larger one
            self._capacity = len(wanted)
            old, self._store = self._store, None
        else:
            old = None
        if self._store is None:
            self._store = np.empty((self._capacity, self.pen.size))
            if old is not None and self._slot:  # carry the kept columns over
                rows = np.asarray(list(self._slot.values()), dtype=np.int64)
                self._store[:rows.size] = old[rows]
                self._slot = dict(zip(self._slot, range(rows.size)))
            del old
        for first in range(0, len(missing), self._block):
            part = np.asarray(missing[first:first + self._block], dtype=np.int64)
            slots = np.arange(len(self._slot), len(self._slot) + part.size)
            self._store[slots] = self._compute(part).T
            self._slot.update(zip(part.tolist(), slots.tolist()))
        return np.asarray([self._slot[j] for j in s.tolist()], dtype=np.int64)

    def _keep_only(self, columns):
        """Free every slot but those of ``columns`` (moved to the front of the store):
        the next support overlaps the last one."""
        rows = np.asarray([self._slot[j] for j in columns], dtype=np.int64)
        if rows.size:
            self._store[:rows.size] = self._store[rows]  # fancy indexing copies first
        self._slot = dict(zip(columns, range(rows.size)))

    def _compute(self, part):
        block = self.wg.columns(self.pen[part])[self._rows]
        if self.A is not None:
            subtract_product(block, self.G_up.T, self.A[:, part])
        # one element-wise pass (a broadcast divisor runs numpy a row at a time)
        block /= np.multiply.outer(self.scale, self.scale[part])
        return block

    def columns(self, s):
        slots = self._ensure(np.asarray(s, dtype=np.int64))
        return self._store[slots].T

    def block(self, s):
        """The (s, s) block (of a support: only those rows are gathered)."""
        s = np.asarray(s, dtype=np.int64)
        slots = self._ensure(s)
        return self._store[np.ix_(slots, s)].T


def reduce_rows(Xa, ya, unpenalised, squares=None, xty=None) -> ReducedProblem:
    """Row form of :func:`reduce_gram`, for p too large for a p x p Gram.

    ``Xa`` (fresh whitened rows from the caller) is projected in place where its
    penalised columns form one block (no unpenalised columns, or only leading ones
    such as the intercept): a copy would double the memory.  The unit-norm scaling is
    the loss's ``column_scale``, not a pass over the rows.  Only when
    some candidates lie in the span of the unpenalised columns are the others copied.
    ``squares`` (Xa's column sums of squares) and ``xty`` (Xa'ya), when the caller
    has them from the pass that formed Xa, save passes over the rows.
    """
    N, p = Xa.shape
    listed = np.asarray(sorted(unpenalised), dtype=np.int64)
    unpen, _aliased = independent_columns(Xa[:, listed].T @ Xa[:, listed])
    unpen = listed[unpen]
    others = np.setdiff1d(np.arange(p), unpen)
    leading = np.array_equal(unpen, np.arange(unpen.size))
    Xp = Xa[:, unpen.size:] if leading else Xa[:, others]
    own = np.einsum("ij,ij->j", Xp, Xp) if squares is None else squares[others]
    c_p = None  # Xp'yp, when known without a pass
    if unpen.size:
        Qu, Ru = np.linalg.qr(Xa[:, unpen])
        # Qu'X_pen, before projection: also recovers the unpenalised part.  Leading
        # unpenalised columns are projected with the rest (nothing reads them later):
        # one BLAS update of the contiguous whole, no temporary the size of X.
        target = Xa if (leading and Xa.flags.c_contiguous) else Xp
        cross = Qu.T @ target
        subtract_product(target, Qu, cross)
        if target is Xa:
            cross = cross[:, unpen.size:]
        qy = Qu.T @ ya
        yp = ya - Qu @ qy
        residual = np.einsum("ij,ij->j", Xp, Xp)
    else:
        yp, residual = ya, own
        c_p = None if xty is None else xty[others]
    keep = _selectable(own, residual)
    pen = others[keep]
    if not np.all(keep):
        Xp, residual = Xp[:, keep], residual[keep]
        c_p = None if c_p is None else c_p[keep]
        if unpen.size:
            cross = cross[:, keep]
    scale = np.sqrt(np.clip(residual, 1e-300, None))
    loss = QuadraticLoss(rows=Xp, response=yp, xty=None if c_p is None else c_p / scale,
                         column_scale=scale)
    _require_finite(loss, scale)

    def recover(b_pen):
        beta = np.zeros(p)
        beta[pen] = b_pen
        if unpen.size:
            # X_u b_u = Qu Ru b_u is the projection of y - X_pen b_pen onto span(X_u)
            beta[unpen] = np.linalg.lstsq(Ru, qy - cross @ b_pen, rcond=None)[0]
        return beta

    return ReducedProblem(loss, pen, unpen, scale, recover)


def reduce_operator(op) -> ReducedProblem:
    """:func:`reduce_rows` with no unpenalised columns, for whitened rows given as an
    operator (:class:`lmmscope.row_whitening.WhitenedOperator`): nothing the size of X is
    formed."""
    p = op.shape[1]
    own = op.squares
    keep = _selectable(own, own)
    pen = np.flatnonzero(keep)
    scale = np.sqrt(np.clip(own[keep], 1e-300, None))
    if np.all(keep):
        rows, xty = op, op.xty
    else:
        rows, xty = ColumnsOf(op, pen), op.xty[pen]
    loss = QuadraticLoss(rows=rows, response=op.y, xty=xty / scale, column_scale=scale)
    _require_finite(loss, scale)
    unpen = np.zeros(0, dtype=np.int64)
    return ReducedProblem(loss, pen, unpen, scale, _recoverer(p, pen, unpen, None, None))


class ColumnsOf:
    """Some columns of a row operator (interface of :class:`DenseRows`)."""

    def __init__(self, op, columns):
        self.op, self.columns_kept = op, columns
        self.shape = (op.shape[0], columns.size)

    def rmatvec(self, r):
        return self.op.rmatvec(r)[self.columns_kept]

    def columns(self, idx):
        return self.op.columns(self.columns_kept[idx])


@dataclass
class PathStep:
    k: int
    support: np.ndarray  # indices into the full column set (penalised only)
    coef: np.ndarray  # full coefficient vector (unpenalised included), original scale
    rss: float  # whitened residual sum of squares


# Default number of extra starts of the best-subset search (Control.search_effort).
SEARCH_EFFORT = 1


def best_subset(problem: ReducedProblem, k: int, init_support=None,
                search_effort: int = SEARCH_EFFORT) -> PathStep:
    """Best subset of size k among the penalised columns: splicing with exchange moves
    (:func:`_gram_search`) from the warm start and ``search_effort`` more starts, the
    best local optimum kept."""
    loss = problem.loss
    k = min(k, loss.p)  # a path may ask for more than the candidates left (rank.py)
    if k == 0:
        b = np.zeros(loss.p)
    elif k == loss.p:
        b = loss.solve_on(np.arange(loss.p))
    else:
        b = _gram_search(loss, k, init_support, search_effort)
    return _path_step(problem, k, b)


class _GramSupport:
    """The least-squares fit of a loss on one support S and what the exact swap and
    splicing tests need: the Gram's columns G[:, S] (the loss's ``gram_columns``, in Gram
    or row form), (G_SS)^{-1}, b_S, the gradient X'r and the RSS.  Columns have unit
    norm (the reductions scale them), so the diagonal of G is 1."""

    def __init__(self, loss: QuadraticLoss, support):
        self.support = np.asarray(support, dtype=np.int64)
        self.columns = loss.gram_columns(self.support)  # p x k
        block = self.columns[self.support]
        block = (block + block.T) / 2
        c_s = loss.xty[self.support]
        try:
            lower = np.linalg.cholesky(block)
            if not np.all(np.isfinite(lower)) or np.min(np.diag(lower)) < 1e-7:
                raise np.linalg.LinAlgError
            inv_lower = np.linalg.inv(lower)
            self.inverse = inv_lower.T @ inv_lower
            self.ok = True
        except np.linalg.LinAlgError:  # collinear candidates: no swap is judged from here
            self.inverse = np.linalg.pinv(block)
            self.ok = False
        self.coef = self.inverse @ c_s
        self.gradient = loss.xty - self.columns @ self.coef  # X'r: zero on the support
        self.rss = float(loss.yty - c_s @ self.coef)

    def best_swap(self, diagonal):
        """(drop position, column to add, exact RSS change) of the best single swap."""
        P = self.columns @ self.inverse  # p x k: each column regressed on the support
        resid = diagonal - np.einsum("ij,ij->i", P, self.columns)  # d_i after S
        h = np.diag(self.inverse)
        drop = self.coef ** 2 / h  # RSS rises by this when j leaves
        g_after = self.gradient[:, None] + P * (self.coef / h)[None, :]
        d_after = resid[:, None] + P ** 2 / h[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(d_after > 1e-8, g_after ** 2 / d_after, 0.0)
        change = drop[None, :] - gain
        change[self.support] = np.inf
        i, j = np.unravel_index(np.argmin(change), change.shape)
        return int(j), int(i), float(change[i, j])


def _top(score, exclude, count):
    """The ``count`` largest entries of ``score`` outside ``exclude``, largest first."""
    score = np.array(score, dtype=float)
    score[exclude] = -np.inf
    count = min(count, score.size - len(exclude))
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count < score.size:
        part = np.argpartition(-score, count - 1)[:count]
        return part[np.argsort(-score[part], kind="stable")]
    return np.argsort(-score, kind="stable")[:count]


def _local_search(loss: QuadraticLoss, k: int, start, max_iter: int = 100) -> _GramSupport:
    """Splicing (swaps of c = 1..5 columns chosen by the backward and forward
    sacrifices, as abess) alternated with exact single-swap exchange moves, from
    ``start`` until neither lowers the RSS: the result is a local optimum with respect
    to every single swap."""
    diagonal = np.ones(loss.p)  # unit-norm columns
    fit = _GramSupport(loss, start)
    tol = 1e-10 * max(loss.yty, 1e-300)
    for _ in range(max_iter):
        candidate = _splice_step(loss, fit, k, tol)
        if candidate is None and fit.ok:  # no splicing step helps: the exact single swaps
            j, i, change = fit.best_swap(diagonal)
            if change < -tol:
                support = fit.support.copy()
                support[j] = i
                candidate = _GramSupport(loss, np.sort(support))
                if candidate.rss >= fit.rss - tol:
                    candidate = None
        if candidate is None:
            break
        fit = candidate
    return fit


# Most columns one splicing step exchanges (skscope's max_exchange_num).
MAX_EXCHANGE = 5


def _support_rss(loss: QuadraticLoss, support) -> float:
    """The least-squares RSS on ``support`` from the Gram block alone (inf if singular;
    a near-singular block is judged again by :class:`_GramSupport` before it is kept)."""
    c_s = loss.xty[support]
    try:
        coef = np.linalg.solve(loss.gram_block(support), c_s)  # numpy's: 1/4 of scipy's cost
    except np.linalg.LinAlgError:
        return np.inf
    rss = float(loss.yty - c_s @ coef)
    return rss if np.isfinite(rss) else np.inf


def _splice_step(loss, fit, k, tol):
    """The best of abess's splicing swaps of c = 1..5 columns, if it lowers the RSS."""
    backward = fit.coef ** 2  # unit-norm columns: sacrifices up to the factor 1/2
    forward = fit.gradient ** 2
    order_out = fit.support[np.argsort(backward, kind="stable")]
    order_in = _top(forward, fit.support, min(k, MAX_EXCHANGE))
    best, best_rss = None, fit.rss - tol
    for c in range(1, order_in.size + 1):
        support = np.sort(np.concatenate([order_out[c:], order_in[:c]]))
        rss = _support_rss(loss, support)
        if rss < best_rss:
            best, best_rss = support, rss
    if best is None:
        return None
    fit_best = _GramSupport(loss, best)  # its RSS again, by Cholesky (near-singular blocks)
    return fit_best if fit_best.rss < fit.rss - tol else None


# Restarts run for support sizes up to this many per unit of search effort.
RESTART_K = 10
# Problems with at most this many subsets of size k are solved by enumeration.
ENUMERATION_LIMIT = 2000


def _enumerated(loss: QuadraticLoss, k: int):
    """The support of least RSS among all C(p, k), by batched k x k solves; None when
    some subset is singular (then the local search decides)."""
    if k == 1:  # unit-norm columns: the RSS of column j is y'y - (x_j'y)^2
        return np.array([int(np.argmax(np.abs(loss.xty)))])
    combos = np.asarray(list(itertools.combinations(range(loss.p), k)), dtype=np.int64)
    gram = loss.gram_block(np.arange(loss.p))
    c = loss.xty[combos]
    try:
        coef = np.linalg.solve(gram[combos[:, :, None], combos[:, None, :]], c[..., None])
    except np.linalg.LinAlgError:
        return None
    rss = loss.yty - np.einsum("tk,tk->t", c, coef[..., 0])
    return combos[int(np.argmin(rss))] if np.all(np.isfinite(rss)) else None


def _gram_search(loss: QuadraticLoss, k: int, init_support, search_effort: int) -> np.ndarray:
    """The best subset by enumeration where there are at most ``ENUMERATION_LIMIT``;
    else the best of the local searches (:func:`_local_search`) from: the warm start (the
    previous k's support completed by the largest gradients), the marginal ranking
    (largest |X'y|), and ``search_effort - 1`` perturbations of the best support so far
    (half of it replaced by columns drawn among the 2k largest gradients).  The restarts
    run for k <= ``RESTART_K`` x ``search_effort``: a start far from the warm one costs
    many steps at large k, beyond the sizes a criterion picks."""
    if math.comb(loss.p, k) <= ENUMERATION_LIMIT:
        support = _enumerated(loss, k)
        if support is not None:
            return _coefficients(loss, _GramSupport(loss, support))
    warm = np.asarray([] if init_support is None else init_support, dtype=np.int64)[:k]
    starts = []
    if warm.size:
        gradient = _GramSupport(loss, warm).gradient
        starts.append(np.concatenate([warm, _top(np.abs(gradient), warm, k - warm.size)]))
    restarts = search_effort if k <= RESTART_K * search_effort else 0
    if restarts >= 1 or not starts:
        starts.append(_top(np.abs(loss.xty), np.zeros(0, dtype=np.int64), k))
    best = None
    for start in starts:
        fit = _local_search(loss, k, np.sort(start))
        if best is None or fit.rss < best.rss:
            best = fit
    rng = np.random.default_rng(k)
    for _ in range(max(restarts - 1, 0)):
        pool = _top(np.abs(best.gradient), best.support, 2 * k)
        if pool.size == 0:
            break
        out = rng.choice(k, size=min(max(1, k // 2), pool.size), replace=False)
        support = best.support.copy()
        support[out] = rng.choice(pool, size=out.size, replace=False)
        fit = _local_search(loss, k, np.sort(support))
        if fit.rss < best.rss:
            best = fit
    return _coefficients(loss, best)


def _coefficients(loss: QuadraticLoss, fit: _GramSupport) -> np.ndarray:
    """The full coefficient vector of a support's fit."""
    if not fit.ok:
        return loss.solve_on(fit.support)  # its warning and minimum-norm solution
    b = np.zeros(loss.p)
    b[fit.support] = fit.coef
    return b


def selection_path(problem: ReducedProblem, ks, progress=None,
                   search_effort: int = SEARCH_EFFORT):
    """Best subsets for each k in ``ks`` (increasing), warm-started from the last; with
    ``search_effort`` >= 1 then a backward sweep: each k's search again from the next
    k's support less its weakest column (a larger model can hold effects that only
    enter together), kept where it lowers the RSS."""
    ks = [int(k) for k in ks]
    if search_effort >= 1 and len(ks) == 1 and ks[0] >= 1:
        return _fixed_k(problem, ks[0], progress, search_effort)
    steps = []
    warm = None
    with one_blas_thread():  # splicing steps are k-column products and k x k solves
        for k in ks:
            step = best_subset(problem, int(k), init_support=warm, search_effort=search_effort)
            local = np.searchsorted(problem.penalised, step.support)
            warm = local if len(local) else None
            steps.append(step)
        if search_effort >= 1:
            _backward_sweep(problem, steps, RESTART_K * search_effort)
    if progress is not None:
        for step in steps:
            progress(step)
    return steps


def _fixed_k(problem: ReducedProblem, k: int, progress, search_effort: int):
    """A fixed k: the better of its own search and the path k = 0..k + 3 with the
    backward sweep (a support holding effects that only enter together is reached from
    a larger model)."""
    with one_blas_thread():
        own = best_subset(problem, k, search_effort=search_effort)
    sizes = range(0, min(k + 3, problem.loss.p) + 1)
    step = selection_path(problem, sizes, search_effort=search_effort)[k]
    step = step if step.rss < own.rss else own
    if progress is not None:
        progress(step)
    return [step]


def _backward_sweep(problem: ReducedProblem, steps, k_most: int) -> None:
    """Replace steps[i] by the local search from steps[i + 1]'s support less its
    weakest column (exact RSS rise of dropping it), from k = ``k_most`` down (as the
    restarts: the sizes a criterion picks), where consecutive sizes allow and the RSS
    drops."""
    loss = problem.loss
    tol = 1e-10 * max(loss.yty, 1e-300)
    for i in range(len(steps) - 2, -1, -1):
        k, larger = steps[i].k, steps[i + 1]
        if (larger.k != k + 1 or not 1 <= k <= k_most
                or math.comb(loss.p, k) <= ENUMERATION_LIMIT):
            continue
        above = _GramSupport(loss, np.searchsorted(problem.penalised, larger.support))
        if not above.ok:
            continue
        weakest = int(np.argmin(above.coef ** 2 / np.diag(above.inverse)))
        fit = _local_search(loss, k, np.delete(above.support, weakest))
        if fit.ok and fit.rss < steps[i].rss - tol:
            steps[i] = _path_step(problem, k, _coefficients(loss, fit))


def _path_step(problem: ReducedProblem, k: int, b: np.ndarray) -> PathStep:
    """The path's record of the penalised coefficients ``b`` (unit-norm scale)."""
    return PathStep(k=k, support=problem.penalised[np.flatnonzero(b)],
                    coef=problem.recover(b / problem.scale), rss=problem.loss.rss(b))


def information_criteria(rss, k, n_unpenalised, n_obs, p_candidates, ebic_gamma=1.0):
    """Information criteria of the profiled Gaussian quasi-likelihood.

    -2 log QL = N log(RSS_a / N) + const; the penalties follow Fan & Tang (GIC:
    2 log(log N) log(p) per parameter, as skscope's LinearGIC), Chen & Chen (EBIC:
    log N per parameter + 2 gamma log C(p, k)), Schwarz (BIC) and Akaike (AIC).
    """
    N = n_obs
    deviance = N * math.log(max(rss, 1e-300) / N)
    df = k + n_unpenalised
    p = max(p_candidates, 2)
    log_choose = math.lgamma(p + 1) - math.lgamma(k + 1) - math.lgamma(p - k + 1)
    return {
        "gic": deviance + 2 * df * math.log(max(math.log(N), 1.0 + 1e-12)) * math.log(p),
        "ebic": deviance + df * math.log(N) + 2 * ebic_gamma * log_choose,
        "bic": deviance + df * math.log(N),
        "aic": deviance + 2 * df,
    }
