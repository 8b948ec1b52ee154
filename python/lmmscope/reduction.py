"""Reduction of a whitened quadratic to the penalised-column problem of the search.

Unpenalised columns (intercept, forced-in terms) are profiled out (a Schur complement
in Gram form, a projection in row form), candidates in their span are left out, and
the remaining columns are scaled to unit whitened norm so that the search is scale
invariant.  Four forms of input: a whitened Gram (:func:`reduce_gram`), its columns on
demand (:func:`reduce_gram_columns`), whitened rows (:func:`reduce_rows`) and a row
operator (:func:`reduce_operator`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .dense_kernels import subtract_product, symmetrise
from .loss import QuadraticLoss
from .rank import independent_columns, squared_tolerance


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

