"""The whitened rows X_a = Sigma_a^{-1/2} Xc, for p too large for a p x p Gram: formed
in one blocked pass with their sums of squares and X_a'y_a (:func:`whitened_rows`), or
kept as an operator that whitens only the columns a fit reads (:class:`WhitenedOperator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cluster_blocks import (cluster_expand, cluster_transpose_operator, equal_size_runs,
                             has_shift, is_column_major, run_tiles)
from .cluster_stats import ClusterStats, compute_cluster_stats
from .control import DEFAULT_PERFORMANCE, Performance
from .dense_kernels import subtract_product
from .intercept import InterceptPrepended


@dataclass
class WhitenedRows:
    """Whitened rows (X_a, y_a) and, from the same pass, X_a's column sums of squares
    and X_a'y_a."""

    X: np.ndarray  # (N, p), a fresh array
    y: np.ndarray  # (N,)
    squares: np.ndarray  # (p,) column sums of squares of X_a
    xty: np.ndarray  # (p,) X_a'y_a


def whiten_rows(X, y, Z, codes, n_groups, a, stats: ClusterStats | None = None):
    """Whitened rows (X_a, y_a) = Sigma_a^{-1/2}(Xc, yc), for p too large for a Gram
    (see :func:`whitened_rows`)."""
    rows = whitened_rows(X, y, Z, codes, n_groups, a, stats=stats)
    return rows.X, rows.y


def _inverse_root_factors(ZtZ: np.ndarray, a: float) -> np.ndarray:
    """H_i with Sigma_a,i^{-1/2} = I - Z_i H_i Z_i' (see :func:`whitened_rows`)."""
    s, Q = np.linalg.eigh(ZtZ)
    s = np.clip(s, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(s > 1e-12 * max(1.0, s.max(initial=0.0)), (1 - 1 / np.sqrt(1 + a * s)) / s,
                     a / 2)
    return (Q * h[:, None, :]) @ np.swapaxes(Q, 1, 2)


def whitened_rows(X, y, Z, codes, n_groups, a, stats: ClusterStats | None = None,
                  chunk_bytes: int = 2**21, overwrite=None,
                  performance: Performance = DEFAULT_PERFORMANCE) -> WhitenedRows:
    """Whitened rows (X_a, y_a) = Sigma_a^{-1/2}(Xc, yc), with X_a's column sums of
    squares and X_a'y_a accumulated while each block of X_a is still in cache.

    Sigma_a,i^{-1/2} = I - Z_i H_i Z_i' with H_i = Q diag(h) Q' from the eigen-
    decomposition Z_i'Z_i = Q diag(s) Q' and h = (1 - (1 + a s)^{-1/2}) / s.
    ``stats`` (the per-cluster cross-products of these arrays) is reused when the
    caller already has it, and its shifts centre X and y (Xc, yc as in
    :class:`ClusterStats`); centred values are formed before anything of smaller
    magnitude is subtracted.  X_a is the only array the size of X that is allocated,
    also for an InterceptPrepended; blocks of rows (clusters sorted, runs of equal
    size) or of columns (otherwise) go through whitening and products in one pass.
    ``overwrite``: a row-major N x p array that holds X's values (in its columns after
    the first, for an InterceptPrepended X) and becomes X_a, whitened in place: then
    nothing the size of X is allocated here.  ``performance``: the tiles in which a
    column-major X is read (and the statistics computed when ``stats`` is None).
    """
    prepended = isinstance(X, InterceptPrepended)
    base = X.base if prepended else np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    Z = np.asarray(Z, dtype=float)
    if stats is None:
        stats = compute_cluster_stats(X, y, Z, codes, n_groups, gram=False,
                                      performance=performance)
    H = _inverse_root_factors(stats.ZtZ, a)
    yc = y - stats.y_shift if stats.y_shift else y
    ya = yc - cluster_expand(Z, H @ stats.Zty[:, :, None], codes, n_groups)[:, 0]
    if overwrite is not None:
        if overwrite.shape != X.shape or not overwrite.flags.c_contiguous:
            raise ValueError("overwrite must be a row-major array of X's shape")
        base = overwrite[:, int(prepended):]
    Xa = np.empty(X.shape) if overwrite is None else overwrite
    out = WhitenedRows(Xa, ya, np.zeros(X.shape[1]), np.zeros(X.shape[1]))
    block = _WhiteningBlock(base, stats.x_shift[int(prepended):], prepended, out,
                            in_place=overwrite is not None)
    runs = equal_size_runs(codes, n_groups)
    if runs is not None:
        # a column-major X (a data frame's own block) is read in tiles of whole column
        # segments: a block of rows across every column would be p strided gathers
        _whiten_row_blocks(Z, H, stats.ZtX, runs, block, chunk_bytes,
                           column_block=performance.column_tile if is_column_major(base) else None)
    else:
        _whiten_column_blocks(Z, H, stats.ZtX, codes, n_groups, block, chunk_bytes)
    return out


class _WhiteningBlock:
    """X_a[rows, cols] <- (Xc - Z H Z'Xc)[rows, cols] from the expanded Z H Z'Xc (E),
    then that block's sums of squares and X_a'y_a.  E is written into X_a's block
    first, or (``in_place``: X_a's block holds X's values) into a scratch block."""

    def __init__(self, base, shift, prepended, out: WhitenedRows, in_place=False):
        self.base, self.prepended, self.out = base, prepended, out
        self.first = int(prepended)
        self.in_place = in_place
        # the shift of every column of X_a (0 for a prepended intercept), or None
        self.shift = (np.concatenate([np.zeros(self.first), shift]) if has_shift(shift)
                      else None)
        self._scratch = np.empty(0)
        self._expanded = np.empty(0)

    def target(self, rows, cols, shape):
        """Where E of this block goes: X_a's block, or a scratch block of ``shape``."""
        if not self.in_place:
            return self.out.X[rows, cols]
        size = int(np.prod(shape))
        if self._expanded.size < size:
            self._expanded = np.empty(size)
        return self._expanded[:size].reshape(shape)

    def centred(self, rows, cols):
        """Xc[rows, cols] (the intercept's ones included), C-contiguous: numpy's
        element-wise loops run a row at a time (2x slower) on a strided block, such as
        a column slice of a wider array, so a strided block is copied first."""
        lead = int(self.prepended and cols.start == 0)
        raw = self.base[rows, cols.start - self.first + lead:cols.stop - self.first]
        shift = None if self.shift is None else self.shift[cols]
        if not lead and shift is None and raw.flags.c_contiguous:
            return raw
        shape = (raw.shape[0], raw.shape[1] + lead)
        if self._scratch.size < shape[0] * shape[1]:
            self._scratch = np.empty(shape[0] * shape[1])
        out = self._scratch[:shape[0] * shape[1]].reshape(shape)
        if lead:
            out[:, 0] = 1.0
        np.copyto(out[:, lead:], raw)
        if shift is not None:  # x - 1 * s, exactly as x - s
            subtract_product(out, np.ones((shape[0], 1)), shift[None, :])
        return out

    def finish(self, rows, cols, expanded):
        """``rows``, ``cols``: slices of X_a (columns of X_a: a prepended intercept
        first); ``expanded``: E of the block, as :meth:`target` gave it."""
        Xa = self.out.X[rows, cols]
        if not self.in_place:
            np.subtract(self.centred(rows, cols), Xa, out=Xa)
        else:  # the same operations on the same values as centred(): x - s, then - E
            if self.prepended and cols.start == 0:
                Xa[:, 0] = 1.0
            if self.shift is not None:
                np.subtract(Xa, self.shift[cols], out=Xa)
            np.subtract(Xa, expanded.reshape(Xa.shape), out=Xa)
        self.out.squares[cols] += np.einsum("ij,ij->j", Xa, Xa)
        self.out.xty[cols] += self.out.y[rows] @ Xa


def _whiten_row_blocks(Z, H, ZtX, runs, block: _WhiteningBlock, chunk_bytes,
                       column_block=None):
    """Sorted rows, runs of equal-size clusters: a few clusters' rows at a time (across
    every column, or ``column_block`` columns at a time)."""
    q, p = Z.shape[1], ZtX.shape[2]
    width = p if column_block is None else min(p, column_block)
    for c0, c1, r0, r1, size, cols in run_tiles(runs, p, width, chunk_bytes):
        V = H[c0:c1] @ ZtX[c0:c1, :, cols]
        E = block.target(slice(r0, r1), cols, (r1 - r0, cols.stop - cols.start))
        np.matmul(Z[r0:r1].reshape(c1 - c0, size, q), V, out=E.reshape(c1 - c0, size, -1))
        block.finish(slice(r0, r1), cols, E)


def _whiten_column_blocks(Z, H, ZtX, codes, n_groups, block: _WhiteningBlock, chunk_bytes):
    """Any row order: a few columns at a time through the sparse block-diagonal Z."""
    N, q = Z.shape
    p = ZtX.shape[2]
    Zt = cluster_transpose_operator(Z, codes, n_groups).T.tocsr()
    step = max(1, 16 * chunk_bytes // (8 * max(N, 1)))
    every_row = slice(0, N)
    for start in range(0, p, step):
        cols = slice(start, min(start + step, p))
        V = (H @ ZtX[:, :, cols]).reshape(n_groups * q, -1)
        E = block.target(every_row, cols, (N, cols.stop - cols.start))
        E[...] = Zt @ V
        block.finish(every_row, cols, E)


# Above this ratio of X'y (or of the part Z removes) to X_a'y_a, X_a'y_a from the
# statistics would lose more digits than the pass over X does: it is computed from y_a.
XTY_CANCELLATION = 30.0


class WhitenedOperator:
    """X_a = Sigma_a^{-1/2} X as an operator, never formed: X_a'r = X'r - sum_i
    (Z_i'X_i)' H_i Z_i'r_i is one pass over X plus one over Z'X, and only the few
    columns a fit needs are whitened explicitly.  For uncentred statistics and an X
    without a prepended intercept (centring first is what keeps shifted columns
    accurate, see :func:`whitened_rows`).  ``y``: y_a; ``xty``: X_a'y_a; ``squares``:
    X_a's column sums of squares, X'X's diagonal (``raw_squares`` where already known) minus the
    per-cluster correction (Sigma_a^{-1} = I - Z (2H - H Z'Z H) Z')."""

    def __init__(self, X, y, Z, codes, n_groups, a, stats: ClusterStats,
                 cache_bytes: int = 2**25, raw_squares=None):
        if isinstance(X, InterceptPrepended) or stats.centred:
            raise ValueError("the whitened operator is for uncentred statistics of an array")
        self.X, self.Z = np.asarray(X, dtype=float), np.asarray(Z, dtype=float)
        self.codes, self.n_groups, self.ZtX = codes, n_groups, np.ascontiguousarray(stats.ZtX)
        self.shape = self.X.shape
        self.H = _inverse_root_factors(stats.ZtZ, a)
        self._runs = equal_size_runs(codes, n_groups)
        self._Zt = None if self._runs is not None else cluster_transpose_operator(Z, codes,
                                                                                  n_groups)
        y = np.asarray(y, dtype=float)
        self.y = y - self._expand(self.H @ stats.Zty[:, :, None])[:, 0]
        self._columns = {}  # column -> whitened column: supports searched share columns
        self._max_columns = max(64, cache_bytes // (8 * max(self.shape[0], 1)))
        correction = 2 * self.H - self.H @ stats.ZtZ @ self.H
        # X_a'y_a = X'y - sum_i (Z_i'X_i)' C_i Z_i'y_i with C_i = 2H_i - H_i Z_i'Z_i H_i
        # (Sigma_a^{-1} = I - Z C Z'): from the statistics, no pass over X.  Where y is
        # mostly Z's (large cluster means and a) both terms dwarf their difference,
        # which then loses digits: X_a'y_a from y_a, one pass over X, is exact there.
        n, q, p = self.ZtX.shape
        removed = self.ZtX.reshape(n * q, p).T @ (correction @ stats.Zty[:, :, None]).ravel()
        self.xty = stats.Xty - removed
        size = max(np.abs(stats.Xty).max(initial=0.0), np.abs(removed).max(initial=0.0))
        if size > XTY_CANCELLATION * np.abs(self.xty).max(initial=0.0):
            self.xty = self.rmatvec(self.y)
        # X's own column sums of squares: the input checks' (``raw_squares``), or a pass
        raw = np.einsum("ij,ij->j", self.X, self.X) if raw_squares is None else raw_squares
        self.squares = np.clip(raw - _quadratic_forms(correction, stats.ZtX), 0.0, None)

    def _expand(self, V):
        return cluster_expand(self.Z, V, self.codes, self.n_groups)

    def _cluster_sums(self, r):
        """Z_i'r_i, shape (n_groups, q)."""
        q = self.Z.shape[1]
        if self._runs is None:
            return np.asarray(self._Zt @ r).reshape(self.n_groups, q)
        out = np.empty((self.n_groups, q))
        for first, stop, row, size in self._runs:
            rows = slice(row, row + size * (stop - first))
            np.matmul(r[rows].reshape(stop - first, 1, size),
                      self.Z[rows].reshape(stop - first, size, q), out=out[first:stop, None, :])
        return out

    def rmatvec(self, r):
        """X_a'r."""
        w = np.einsum("nij,nj->ni", self.H, self._cluster_sums(r)).ravel()
        n, q, p = self.ZtX.shape
        return self.X.T @ r - self.ZtX.reshape(n * q, p).T @ w

    def columns(self, idx):
        """The whitened columns ``idx``, an N x len(idx) array."""
        idx = np.asarray(idx, dtype=np.int64)
        new = np.asarray([j for j in dict.fromkeys(idx.tolist()) if j not in self._columns],
                         dtype=np.int64)
        if len(self._columns) + new.size > self._max_columns:
            self._columns.clear()  # a long search: keep the cache a small share of X
            new = np.unique(idx)
        if new.size:
            block = self.X[:, new] - self._expand(self.H @ self.ZtX[:, :, new])
            self._columns.update(zip(new.tolist(), block.T))
        out = np.empty((self.shape[0], idx.size))
        for at, j in enumerate(idx.tolist()):
            out[:, at] = self._columns[j]
        return out


def _quadratic_forms(W, ZtX, chunk_bytes: int = 16 * 2**20):
    """sum_i ZtX_i[:, j]' W_i ZtX_i[:, j] for every column j, a chunk of clusters at a time."""
    n, q, p = ZtX.shape
    out = np.zeros(p)
    step = max(1, chunk_bytes // (8 * q * max(p, 1)))
    for start in range(0, n, step):
        block = ZtX[start:start + step]
        out += np.einsum("nqp,nqp->p", block, W[start:start + step] @ block)
    return out
