"""Per-cluster cross-products: the sufficient statistics of every later step.

One pass over the data builds, for clusters i = 1..n,

    Z_i'Z_i (q x q),  Z_i'X_i (q x p),  Z_i'y_i (q),  plus X'X, X'y, y'y.

Everything that depends on the proxy covariance Sigma_a,i = a Z_i Z_i' + I is then
computed from these blocks by Woodbury's identity, so changing ``a`` never touches
the raw rows again and no N x N matrix is ever formed.  The per-cluster products
are computed with one sparse-times-dense product (the block-diagonal Z' times X),
and the per-``a`` work is a batched q x q factorisation plus one Gram product.

Location.  When the model has an intercept column, every other column of X and y
are shifted by their means before any product is formed (row chunks are centred as
they are multiplied; no centred copy of X exists): uncentred cross-products cancel
catastrophically once a mean reaches ~1e6 (epoch seconds, calendar years, y + 1e7).
The statistics then describe Xc = X - 1 x_shift', yc = y - y_shift; coefficients on
Xc equal those on X except the intercept, which :meth:`ClusterStats.original_coef`
converts back.  Nothing but the intercept (and its covariances) depends on the shift.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dgemm, dsyrk

from .batched import cholesky_with_inverse
from .intercept import InterceptPrepended

# Row chunks centred at a time: big enough for BLAS-3 efficiency (>= 512 rows),
# small enough to stay a fraction of X.
CHUNK_BYTES = 32 * 2**20
# Columns per tile where a column-major X (a data frame's own block) is read by rows of
# clusters: 256 columns of 1,024 rows are 2 MB, with 8 KB contiguous per column.
COLUMN_TILE = 256
MIN_CHUNK_ROWS = 512


def encode_groups(groups):
    """Return (codes 0..n-1, labels) for an arbitrary 1-D array of cluster labels.

    Labels of mixed types (say the integer 3 and the string "a") cannot be ordered;
    as R's ``factor()`` does for such a vector, they are then compared as strings, so
    3 and "3" are the same cluster and the labels returned are strings.
    """
    g = np.asarray(groups)
    try:
        labels, codes = np.unique(g, return_inverse=True)
    except TypeError:  # mixed int/str: '<' is not defined between them
        labels, codes = np.unique(g.astype(str), return_inverse=True)
    return codes.ravel().astype(np.int64), labels


def intercept_column(X) -> int | None:
    """Index of the first all-ones column of X (0 for an InterceptPrepended), or None."""
    if isinstance(X, InterceptPrepended):
        return 0
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        return None
    candidates = np.flatnonzero(X[0] == 1.0)
    step = max(1, CHUNK_BYTES // (8 * max(candidates.size, 1)))
    for first in range(0, X.shape[0], step):
        if candidates.size == 0:
            return None
        block = X[first:first + step][:, candidates]
        candidates = candidates[np.all(block == 1.0, axis=0)]
    return int(candidates[0]) if candidates.size else None


def column_root_mean_squares(Z: np.ndarray) -> np.ndarray:
    """Root mean square of each column of Z, 1 where it is 0 or not finite: the unit
    in which Z's columns enter the proxy covariance and theta."""
    scale = np.sqrt(np.einsum("ij,ij->j", Z, Z) / max(Z.shape[0], 1))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


# Arrays from this size up are mapped without numpy's transparent-huge-page advice.
PLAIN_PAGES_BYTES = 2**24


def plain_pages_empty(shape) -> np.ndarray:
    """np.empty(shape) (float) for a large result filled once, in anonymous memory
    mapped without numpy's MADV_HUGEPAGE advice.

    Where transparent huge pages are on request only (THP "madvise", common in VMs),
    numpy's advice makes the kernel compact memory for 2 MB pages as the array is
    first written: the per-cluster Z'X (10,000 clusters, q = 4, p = 1,000: 320 MB)
    took 0.3-0.8 s to fault in against 0.1 s with ordinary 4 KB pages, ten times its
    batched product.  Small arrays (under ``PLAIN_PAGES_BYTES``) come from np.empty.
    The mapping is released with the last array that views it.
    """
    shape = tuple(int(d) for d in np.atleast_1d(shape))
    nbytes = 8 * int(np.prod(shape, dtype=np.int64))
    if nbytes < PLAIN_PAGES_BYTES:
        return np.empty(shape)
    try:
        buffer = mmap.mmap(-1, nbytes)
    except (OSError, ValueError, OverflowError):
        return np.empty(shape)
    return np.frombuffer(buffer, dtype=np.float64).reshape(shape)


def _row_chunk(p: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(MIN_CHUNK_ROWS, chunk_bytes // (8 * max(p, 1)))


def cluster_transpose_operator(Z: np.ndarray, codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Sparse (n*q) x N matrix whose row (i, j) holds Z[:, j] on cluster i's rows.

    Multiplying it by X gives the stacked Z_i'X_i; rows of a cluster need not be
    contiguous in the data.
    """
    N, q = Z.shape
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    sorted_codes = codes[order]
    offset_in_cluster = np.arange(N) - starts[sorted_codes]
    # Entry (sorted row s, column j) goes to position q*start_i + j*m_i + t.
    base = q * starts[sorted_codes] + offset_in_cluster
    positions = base[:, None] + np.arange(q)[None, :] * sizes[sorted_codes][:, None]
    data = np.empty(N * q)
    indices = np.empty(N * q, dtype=np.int64)
    data[positions] = Z[order]
    indices[positions] = order[:, None]
    row_starts = (q * starts[:, None] + np.arange(q)[None, :] * sizes[:, None]).ravel()
    indptr = np.append(row_starts, N * q)
    return sp.csr_matrix((data, indices, indptr), shape=(n_groups * q, N))


def equal_size_runs(codes: np.ndarray, n_groups: int):
    """Blocks of consecutive equal-size clusters, when rows are sorted by cluster.

    Returns a list of (first cluster, last cluster + 1, first row, cluster size), or
    None when the rows are not sorted or sizes change too often (under 4 clusters per
    run on average) for batched products to pay off.
    """
    N = codes.size
    sizes = np.bincount(codes, minlength=n_groups)
    if not (N < 2 or bool(np.all(codes[1:] >= codes[:-1]))) or not np.all(sizes > 0):
        return None
    run_starts = np.flatnonzero(np.diff(sizes, prepend=-1) != 0)
    if n_groups / run_starts.size < 4:
        return None
    bounds = np.append(run_starts, n_groups)
    first_rows = np.concatenate(([0], np.cumsum(sizes)))[bounds[:-1]]
    return [(int(first), int(stop), int(row), int(sizes[first]))
            for first, stop, row in zip(bounds[:-1], bounds[1:], first_rows)]


def _has_shift(shift) -> bool:
    return shift is not None and bool(np.any(shift))


def cluster_products(Z: np.ndarray, X: np.ndarray, codes: np.ndarray, n_groups: int,
                     out: np.ndarray | None = None, chunk_bytes: int = 16 * 2**20,
                     shift: np.ndarray | None = None) -> np.ndarray:
    """Stacked Z_i'(X_i - 1 shift'), shape (n_groups, q, p), written into ``out`` when given.

    When the rows are sorted by cluster, runs of equal-size clusters reshape (without
    copying) to (clusters, size, p), and one batched matmul per run does the work
    (several times faster than the sparse block-diagonal product).  Otherwise the
    sparse product runs on chunks of clusters, so no temporary as large as the result
    is allocated; copying rows into order would cost more.  A ``shift`` is subtracted
    from one chunk of rows at a time, before it is multiplied.
    """
    N, q = Z.shape
    p = X.shape[1]
    if out is None:
        out = np.empty((n_groups, q, p))
    runs = equal_size_runs(codes, n_groups)
    if runs is not None:
        _run_products(Z, X, runs, out, chunk_bytes, shift)
        return out
    Zt = cluster_transpose_operator(Z, codes, n_groups)
    if not _has_shift(shift):
        step = max(1, chunk_bytes // (8 * q * max(p, 1)))
        for start in range(0, n_groups, step):
            stop = min(start + step, n_groups)
            out[start:stop] = np.asarray(Zt[start * q:stop * q] @ X).reshape(stop - start, q, p)
        return out
    row_ends = np.cumsum(np.bincount(codes, minlength=n_groups))
    rows_per_chunk = max(1, chunk_bytes // (8 * max(p, 1)))
    start = 0
    while start < n_groups:
        # clusters [start, stop) hold about rows_per_chunk rows (at least one cluster)
        base_rows = row_ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(row_ends, base_rows + rows_per_chunk, "right")))
        stop = min(stop, n_groups)
        block = Zt[start * q:stop * q]
        rows = np.unique(block.indices)
        local = sp.csr_matrix((block.data, np.searchsorted(rows, block.indices), block.indptr),
                              shape=(block.shape[0], rows.size))
        centred = np.subtract(X[rows], shift)
        out[start:stop] = np.asarray(local @ centred).reshape(stop - start, q, p)
        start = stop
    return out


def _column_major(M: np.ndarray) -> bool:
    """Fortran-ordered and not also C-ordered (a data frame's own block, transposed)."""
    return M.flags.f_contiguous and not M.flags.c_contiguous


def _run_tiles(runs, p, width, tile_bytes=None):
    """Tiles (clusters c0:c1, rows r0:r1, cluster size, columns) over runs of equal-size
    clusters (rows sorted): as many whole clusters as fill ``tile_bytes`` at ``width``
    columns (None: the whole run), then ``width`` columns at a time."""
    for first, stop, row, size in runs:
        step = (stop - first if tile_bytes is None
                else max(1, tile_bytes // (8 * size * max(width, 1))))
        for c0 in range(first, stop, step):
            c1 = min(c0 + step, stop)
            r0 = row + (c0 - first) * size
            r1 = r0 + (c1 - c0) * size
            for j0 in range(0, p, max(width, 1)):  # p = 0: no tiles
                yield c0, c1, r0, r1, size, slice(j0, min(j0 + width, p))


def _run_products(Z, X, runs, out, chunk_bytes, shift):
    """Batched Z_i'(X_i - shift) over runs of equal-size clusters (rows sorted).  A
    column-major X (a data frame's own block) is copied a tile of whole column segments
    at a time into a row-major buffer first: numpy's batched products of small
    matrices read strided operands several times slower."""
    q, p = Z.shape[1], X.shape[1]
    centre = _has_shift(shift)
    column_major = _column_major(X)
    width = min(p, COLUMN_TILE) if column_major else p
    copied = centre or column_major
    tile_bytes = (min(chunk_bytes, 2**21) if column_major else chunk_bytes) if copied else None
    buffer = np.empty(0)
    for c0, c1, r0, r1, size, cols in _run_tiles(runs, p, width, tile_bytes):
        Xb = X[r0:r1, cols]
        if copied:
            if buffer.size < Xb.size:
                buffer = np.empty(Xb.size)
            tile = buffer[:Xb.size].reshape(Xb.shape)
            if centre:
                np.subtract(Xb, shift[cols], out=tile)
            else:
                np.copyto(tile, Xb)
            Xb = tile
        Zb = Z[r0:r1].reshape(c1 - c0, size, q)
        np.matmul(np.swapaxes(Zb, 1, 2), Xb.reshape(c1 - c0, size, -1), out=out[c0:c1, :, cols])


def cluster_expand(Z: np.ndarray, V: np.ndarray, codes: np.ndarray, n_groups: int,
                   out: np.ndarray | None = None, chunk_bytes: int = 16 * 2**20) -> np.ndarray:
    """Row r of cluster i gets Z_r' V_i, shape (N, p): the adjoint of cluster_products.

    Written into ``out`` when given (it may be a column slice of a wider array).
    """
    N, q = Z.shape
    p = V.shape[2]
    if out is None:
        out = np.empty((N, p))
    runs = equal_size_runs(codes, n_groups)
    if runs is None:
        Zt = cluster_transpose_operator(Z, codes, n_groups).T.tocsr()
        step = max(1, chunk_bytes // (8 * N))
        for start in range(0, p, step):  # column chunks keep the temporary small
            cols = slice(start, min(start + step, p))
            out[:, cols] = Zt @ V[:, :, cols].reshape(n_groups * q, -1)
        return out
    for first, stop, row, size in runs:
        rows = slice(row, row + size * (stop - first))
        np.matmul(Z[rows].reshape(stop - first, size, q), V[first:stop],
                  out=out[rows].reshape(stop - first, size, p))
    return out


@dataclass
class ClusterStats:
    """Cross-product statistics of (Xc, yc, Z) grouped by cluster.

    Xc = X - 1 x_shift' and yc = y - y_shift (no shift: x_shift = 0, y_shift = 0).
    ``intercept`` is the index of the all-ones column (it is never shifted), or None.
    """

    ZtZ: np.ndarray  # (n, q, q)
    ZtX: np.ndarray  # (n, q, p)
    Zty: np.ndarray  # (n, q)
    XtX: np.ndarray | None  # (p, p) or None when p is too large for a Gram
    Xty: np.ndarray  # (p,)
    yty: float
    sizes: np.ndarray  # (n,) rows per cluster
    x_shift: np.ndarray | None = None  # (p,); None means zeros
    y_shift: float = 0.0
    intercept: int | None = None

    def __post_init__(self):
        if self.x_shift is None:
            self.x_shift = np.zeros(self.ZtX.shape[2])
        self.x_shift = np.asarray(self.x_shift, dtype=float)
        self.y_shift = float(self.y_shift)

    @property
    def n_obs(self) -> int:
        return int(self.sizes.sum())

    @property
    def n_groups(self) -> int:
        return self.ZtZ.shape[0]

    @property
    def q(self) -> int:
        return self.ZtZ.shape[1]

    @property
    def p(self) -> int:
        return self.ZtX.shape[2]

    @property
    def centred(self) -> bool:
        return bool(self.y_shift != 0 or np.any(self.x_shift))

    def subset(self, columns) -> "ClusterStats":
        """Statistics restricted to a subset of the columns of X (shifts carried)."""
        columns = np.asarray(columns, dtype=np.int64)
        XtX = None if self.XtX is None else self.XtX[np.ix_(columns, columns)]
        at = np.flatnonzero(columns == self.intercept) if self.intercept is not None else []
        return ClusterStats(self.ZtZ, self.ZtX[:, :, columns], self.Zty, XtX,
                            self.Xty[columns], self.yty, self.sizes,
                            x_shift=self.x_shift[columns], y_shift=self.y_shift,
                            intercept=int(at[0]) if len(at) else None)

    def _intercept_position(self, columns):
        """(column indices, position of the intercept among them or None)."""
        columns = np.arange(self.p) if columns is None else np.asarray(columns, dtype=np.int64)
        shift = self.x_shift[columns]
        at = np.flatnonzero(columns == self.intercept) if self.intercept is not None else []
        if not len(at):
            if np.any(shift) or self.y_shift:
                raise ValueError("these statistics are centred, but the columns given leave "
                                 "out the intercept: the coefficients cannot be converted")
            return shift, None
        return shift, int(at[0])

    def original_coef(self, coef_c, columns=None) -> np.ndarray:
        """Coefficients on (columns of) Xc -> on X: only the intercept changes,
        b_int = c_int + y_shift - x_shift' c."""
        coef = np.array(coef_c, dtype=float)
        shift, at = self._intercept_position(columns)
        if at is not None:
            coef[..., at] = coef[..., at] + self.y_shift - coef @ shift
        return coef

    def centred_coef(self, coef, columns=None) -> np.ndarray:
        """The inverse of :meth:`original_coef`."""
        out = np.array(coef, dtype=float)
        shift, at = self._intercept_position(columns)
        if at is not None:
            out[..., at] = out[..., at] - self.y_shift + out @ shift
        return out

    def original_vcov(self, vcov_c, columns=None) -> np.ndarray:
        """Covariance of coefficients on Xc -> on X: T V T' with b = T c + const."""
        V = np.array(vcov_c, dtype=float)
        shift, at = self._intercept_position(columns)
        if at is None or not np.any(shift):
            return V
        t = -shift
        t[at] = 1.0
        V[at, :] = t @ V  # rows of T V
        column = V @ t  # column ``at`` of (T V) T'
        V[:, at] = column
        V[at, :] = column
        return V

    def __add__(self, other: "ClusterStats") -> "ClusterStats":
        """Statistics of the union of two disjoint row sets (same clusters and shifts)."""
        if not isinstance(other, ClusterStats):
            return NotImplemented
        if (self.ZtX.shape != other.ZtX.shape or self.intercept != other.intercept
                or not np.array_equal(self.x_shift, other.x_shift)
                or self.y_shift != other.y_shift or (self.XtX is None) != (other.XtX is None)):
            raise ValueError("only statistics with the same clusters, columns and shifts "
                             "(center=(x_shift, y_shift)) can be added")
        XtX = None if self.XtX is None else self.XtX + other.XtX
        return ClusterStats(self.ZtZ + other.ZtZ, self.ZtX + other.ZtX, self.Zty + other.Zty,
                            XtX, self.Xty + other.Xty, self.yty + other.yty,
                            self.sizes + other.sizes, x_shift=self.x_shift.copy(),
                            y_shift=self.y_shift, intercept=self.intercept)


def _shifts(base, y, prepended: bool, intercept, center, sums=None):
    """(x_shift over every column of X, y_shift) for ``center`` (see compute_cluster_stats)."""
    p = base.shape[1] + int(prepended)
    if center is None:
        if intercept is None:
            return np.zeros(p), 0.0
        if sums is None:
            sums = base.sum(axis=0)
        means = sums / base.shape[0] if base.shape[0] else np.zeros(base.shape[1])
        x_shift = np.concatenate([[0.0], means]) if prepended else means
        x_shift[intercept] = 0.0
        return x_shift, float(y.mean())
    if center is False:
        return np.zeros(p), 0.0
    try:
        x_shift, y_shift = center
    except (TypeError, ValueError):
        raise ValueError("center must be None, False or a pair (x_shift, y_shift)") from None
    x_shift = np.asarray(x_shift, dtype=float).ravel()
    if x_shift.shape != (p,):
        raise ValueError(f"center: x_shift has {x_shift.size} entries, X has {p} columns")
    if intercept is not None and x_shift[intercept] != 0:
        raise ValueError("center: the intercept column cannot be shifted (x_shift must be 0 there)")
    return x_shift, float(y_shift)


def centred_products(base, shift, yc, gram=True, chunk_bytes=CHUNK_BYTES, out=None, mild=None,
                     sums=None, column_sums=True):
    """((base - shift)'(base - shift) or None, (base - shift)'yc, column sums of base - shift).

    ``column_sums=False``: the sums may be None when they would cost a pass of their own.

    Row chunks are centred one at a time.  While a p x p temporary is small (below
    ``chunk_bytes``) each chunk's Gram is numpy's product (its BLAS is the faster
    one); beyond, rank-updates (scipy's BLAS syrk) accumulate in place into the one
    p x p result, so no second p x p array and nothing as large as X is allocated.
    The Gram is written into ``out`` (C-contiguous p x p) when given.
    """
    N, p = base.shape
    if not _has_shift(shift):
        XtX = np.matmul(base.T, base, out=out) if gram else None
        if sums is None and column_sums:
            sums = base.sum(axis=0)
        return XtX, base.T @ yc, sums
    if mild is None:
        mild = _cancellation_is_mild(base, shift, chunk_bytes)
    if mild:
        return _corrected_products(base, shift, yc, gram, out=out, sums=sums)
    if gram:
        XtX = np.zeros((p, p)) if out is None else out
        XtX[...] = 0.0
    else:
        XtX = None
    in_place = 8 * p * p > chunk_bytes
    Xty = np.zeros(p)
    sums = np.zeros(p)
    rows = _row_chunk(p, 4 * chunk_bytes if in_place else chunk_bytes)
    buffer = np.empty((min(rows, N), p))
    for first in range(0, N, rows):
        stop = min(first + rows, N)
        chunk = np.subtract(base[first:stop], shift, out=buffer[:stop - first])
        Xty += yc[first:stop] @ chunk
        sums += chunk.sum(axis=0)
        if gram and in_place:  # XtX.T is Fortran-ordered: syrk fills its upper triangle
            dsyrk(1.0, chunk.T, beta=1.0, c=XtX.T, trans=0, lower=0, overwrite_c=1)
        elif gram:
            XtX += chunk.T @ chunk
    if gram and in_place:
        _fill_upper_from_lower(XtX)
    return XtX, Xty, sums


# Below this ratio of squared mean to variance (every column), the uncentred products
# corrected afterwards lose at most ~2 digits: then one BLAS call on X is cheaper than
# centring X chunk by chunk.
MILD_MEAN_TO_SD_SQUARED = 99.0


def column_moments(base, chunk_bytes=CHUNK_BYTES, project=None, copy_to=None):
    """Column sums and sums of squares (and ``project @ base`` when ``project``, a few
    rows of length N, is given), in one pass over X.

    A column-major X (a data frame's own block) is read as its transpose, a few whole
    columns at a time, each contiguous: summing row chunks of it would be strided.
    ``copy_to`` (column-major X only): a row-major N x p destination that receives X's
    values in the same pass, block by block in cache (numpy's own copy of a transpose
    runs 2-3x slower).  Returns (sums, squares) or (sums, squares, projections)."""
    N, p = base.shape
    if copy_to is not None and not _column_major(base):
        raise ValueError("copy_to is for a column-major X")
    if _column_major(base):
        out = _column_major_moments(base, project, copy_to)
    else:
        sums, squares = np.zeros(p), np.zeros(p)
        projections = None if project is None else project @ base
        rows = _row_chunk(p, chunk_bytes)
        for first in range(0, N, rows):
            chunk = base[first:first + rows]
            sums += chunk.sum(axis=0)
            squares += np.einsum("ij,ij->j", chunk, chunk)
        out = sums, squares, projections
    return out if project is not None else out[:2]


# Tiles of a column-major X in one pass: columns of XT (whole columns of X, ~1 MB)
# and, within them, blocks of rows copied at a time (~128 KB).
_TILE_BYTES, _COPY_BLOCK_BYTES = 2**20, 2**17


def _column_major_moments(base, project, copy_to):
    N, p = base.shape
    XT = base.T  # row-major: row j is column j of X
    sums, squares = np.zeros(p), np.zeros(p)
    projections = None if project is None else np.zeros((project.shape[0], p))
    # whole rows of a narrow X; else whole columns of ~1 MB
    width = p if p <= 64 else int(min(p, max(8, _TILE_BYTES // (8 * max(N, 1)))))
    height = max(64, _TILE_BYTES // (8 * width))  # rows of a tile (all of them, mostly)
    copy_height = max(64, _COPY_BLOCK_BYTES // (8 * width))
    for j0 in range(0, p, width):
        cols = slice(j0, min(j0 + width, p))
        for i0 in range(0, N, height):
            rows = slice(i0, min(i0 + height, N))
            tile = XT[cols, rows]
            if copy_to is not None:  # the tile transposed, a block of rows at a time
                for c0 in range(rows.start, rows.stop, copy_height):
                    block = slice(c0, min(c0 + copy_height, rows.stop))
                    copy_to[block, cols] = base[block, cols]
            sums[cols] += tile.sum(axis=1)
            squares[cols] += np.einsum("ij,ij->i", tile, tile)
            if project is not None:
                projections[:, cols] += project[:, rows] @ tile.T
    return sums, squares, projections


def _mild(n_obs, shift, squares) -> bool:
    mean_part = n_obs * shift ** 2  # of the raw sum of squares, when shift is the mean
    return bool(np.all(mean_part <= MILD_MEAN_TO_SD_SQUARED / (1 + MILD_MEAN_TO_SD_SQUARED)
                       * squares))


def _cancellation_is_mild(base, shift, chunk_bytes=CHUNK_BYTES) -> bool:
    return _mild(base.shape[0], shift, column_moments(base, chunk_bytes)[1])


def _corrected_products(base, shift, yc, gram, out=None, sums=None):
    """Centred products from the uncentred ones: (X - 1 s')'(X - 1 s') =
    X'X - s S' - S s' + N s s' (S the column sums), corrected in place."""
    N = base.shape[0]
    sums = base.sum(axis=0) if sums is None else sums
    Xty = base.T @ yc - shift * yc.sum()
    XtX = None
    if gram:
        XtX = np.matmul(base.T, base, out=out)
        # s S' + S s' - N s s' = s (S - N s)' + S s': one rank-2 update in place (block
        # by block outer products would leave p x p-sized temporaries behind)
        subtract_product(XtX, np.column_stack([shift, sums]), np.vstack([sums - N * shift, shift]))
    return XtX, Xty, sums - N * shift


def symmetrise(S: np.ndarray, block: int = 512) -> np.ndarray:
    """(S + S') / 2 in place, a block of columns at a time (no p x p temporary)."""
    p = S.shape[0]
    for first in range(0, p, block):
        stop = min(first + block, p)
        mean = (S[first:stop, first:] + S[first:, first:stop].T) / 2
        S[first:stop, first:] = mean
        S[first:, first:stop] = mean.T
    return S


def subtract_product(C: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float = 1.0
                     ) -> np.ndarray:
    """C <- C - alpha A @ B in place by one BLAS call (C C-contiguous): numpy's
    element-wise loops run a row at a time on a broadcast or strided operand, and
    A @ B would be a temporary as large as C.  A and B are read where they lie when
    C- or Fortran-ordered (no copy of a large factor).  Returns C."""
    if C.size == 0:
        return C
    if not C.flags.c_contiguous or A.shape[1] == 0:
        C -= alpha * (A @ B)
        return C
    # C' = C' - alpha B'A' on the Fortran-ordered view: dgemm writes into C's memory
    first, trans_first = _fortran_operand(B.T)
    second, trans_second = _fortran_operand(A.T)
    out = dgemm(-alpha, first, second, beta=1.0, c=C.T, trans_a=trans_first,
                trans_b=trans_second, overwrite_c=1)
    if not np.shares_memory(out, C):
        C[...] = out.T
    return C


def _fortran_operand(M):
    """(array, transpose flag) giving M to BLAS without a copy where M or M' is
    Fortran-ordered."""
    if M.flags.f_contiguous:
        return M, 0
    if M.T.flags.f_contiguous:
        return M.T, 1
    return np.asfortranarray(M), 0


def _fill_upper_from_lower(S: np.ndarray, block: int = 512) -> None:
    """Symmetrise in place, a block of columns at a time (no p x p temporary)."""
    p = S.shape[0]
    for first in range(0, p, block):
        stop = min(first + block, p)
        S[first:stop, stop:] = S[stop:, first:stop].T
        tile = S[first:stop, first:stop]
        lower = np.tril(tile)
        tile[...] = lower + np.tril(tile, -1).T


def compute_cluster_stats(X, y, Z, codes, n_groups=None, gram=True, center=None,
                          moments=None) -> ClusterStats:
    """One pass over the data: every cross-product that later steps need.

    ``center``: None (automatic) shifts every column but the intercept, and y, by
    their means when X has an intercept column (an InterceptPrepended, or an all-ones
    column); False: no shift; ``(x_shift, y_shift)``: these shifts (x_shift of length
    p, 0 for the intercept), so that statistics of row chunks share one shift and add
    up.  ``X`` may be an :class:`~lmmscope.intercept.InterceptPrepended`; the
    intercept's statistics are then column sums, bordered onto those of the user's
    columns.  ``moments``: (column sums, sums of squares) of X's own columns, where the
    input checks already computed them (else one pass here).
    """
    prepended = isinstance(X, InterceptPrepended)
    base = X.base if prepended else np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    Z = np.asarray(Z, dtype=float)
    n_groups = int(codes.max()) + 1 if n_groups is None else n_groups
    q = Z.shape[1]
    first = int(prepended)
    intercept = intercept_column(X)
    may_shift = center is not False and (center is not None or intercept is not None)
    if not may_shift:
        sums, squares = None, None
    else:
        sums, squares = column_moments(base) if moments is None else moments
    x_shift, y_shift = _shifts(base, y, prepended, intercept, center, sums)
    base_shift = x_shift[first:]
    yc = y - y_shift if y_shift else y
    # Z_i'[Z_i, yc_i, 1] in one product (batched when clusters are sorted)
    small = cluster_products(Z, np.column_stack([Z, yc, np.ones(Z.shape[0])]), codes, n_groups)
    ZtZ, Zty, Zt_ones = small[:, :, :q].copy(), small[:, :, q].copy(), small[:, :, q + 1].copy()
    ZtX = plain_pages_empty((n_groups, q, base.shape[1] + first))
    # small means: correct the uncentred products; large ones: centre rows as they go
    mild = _has_shift(base_shift) and _mild(base.shape[0], base_shift, squares)
    cluster_products(Z, base, codes, n_groups, out=ZtX[:, :, first:],
                     shift=None if mild else base_shift)
    if mild:  # Z_i'(X_i - 1 s') = Z_i'X_i - (Z_i'1) s'
        # a few clusters at a time: the product's temporary stays in cache (one the
        # size of Z'X, freshly mapped, cost 8x the subtraction at p = 1,000)
        step = max(1, 2**15 // max(q * base.shape[1], 1))
        for start in range(0, n_groups, step):
            block = ZtX[start:start + step, :, first:]
            block -= Zt_ones[start:start + step, :, None] * base_shift[None, None, :]
    m = base.shape[1]
    flat = np.empty((m + 1) ** 2) if (gram and prepended) else None
    XtX, Xty, column_sums = centred_products(
        base, base_shift, yc, gram, out=None if flat is None else flat[:m * m].reshape(m, m),
        mild=mild, sums=sums, column_sums=prepended)
    if prepended:
        ZtX[:, :, 0] = Zt_ones
        Xty = np.concatenate([[yc.sum()], Xty])
        if gram:
            XtX = _border_in_place(flat, m, float(base.shape[0]), column_sums)
    return ClusterStats(ZtZ=ZtZ, ZtX=ZtX, Zty=Zty, XtX=XtX, Xty=Xty, yty=float(yc @ yc),
                        sizes=np.bincount(codes, minlength=n_groups), x_shift=x_shift,
                        y_shift=y_shift, intercept=intercept)


def _border_in_place(flat, m, corner, border):
    """The (m+1) x (m+1) matrix [[corner, border'], [border, G]] from G stored in the
    first m*m entries of ``flat``: rows move back to front into their bordered places
    (each row's target lies past its own source and past the rows still to move)."""
    for i in range(m - 1, -1, -1):
        start = (i + 1) * (m + 1) + 1
        flat[start:start + m] = flat[i * m:(i + 1) * m]
    full = flat.reshape(m + 1, m + 1)
    full[0, 0] = corner
    full[0, 1:] = border
    full[1:, 0] = border
    return full


@dataclass
class WhitenedStats:
    """Cross-products of the whitened data (X_a, y_a) = Sigma_a^{-1/2} (X, y)."""

    a: float
    gram: np.ndarray  # X_a'X_a (p, p)
    xty: np.ndarray  # X_a'y_a (p,)
    yty: float  # y_a'y_a
    trace_inv: float  # tr(Sigma_a^{-1})
    n_obs: int


def cluster_factors(ZtZ: np.ndarray, a: float):
    """Batched Cholesky factors L_i of I + a Z_i'Z_i, and their inverses."""
    q = ZtZ.shape[1]
    return cholesky_with_inverse(np.eye(q)[None] + a * ZtZ)


def whiten_stats(stats: ClusterStats, a: float, chunk_bytes: int = 16 * 2**20) -> WhitenedStats:
    """Woodbury: X_a'X_a = X'X - a sum_i (Z_i'X_i)' M_i (Z_i'X_i), M_i = (I + a Z_i'Z_i)^-1.

    With B_i = L_i^{-1} Z_i'X_i the sum is B'B, accumulated over chunks of clusters
    so the temporary stays small (a fresh array the size of Z'X would cost more to
    fault in than the products themselves).  Centred statistics give the whitened
    cross-products of the centred data.
    """
    if stats.XtX is None:
        raise ValueError("these statistics were computed without the p x p Gram matrix")
    if a == 0:  # Sigma_0 = I: the cross-products themselves (a fresh Gram: callers overwrite it)
        return WhitenedStats(a=0.0, gram=stats.XtX.copy(), xty=stats.Xty.copy(),
                             yty=float(stats.yty), trace_inv=float(stats.sizes.sum()),
                             n_obs=stats.n_obs)
    n, q, p = stats.ZtX.shape
    L, Linv = cluster_factors(stats.ZtZ, a)
    correction = np.zeros((p, p))
    step = max(1, chunk_bytes // (8 * q * max(p, 1)))
    buffer = np.empty((min(step, n), q, p))
    in_place = 8 * p * p > chunk_bytes  # a p x p temporary per chunk would be large
    for start in range(0, n, step):
        stop = min(start + step, n)
        B = np.matmul(Linv[start:stop], stats.ZtX[start:stop], out=buffer[:stop - start])
        B = B.reshape(-1, p)
        if in_place:  # lower triangle of correction (upper of its Fortran view)
            dsyrk(1.0, B.T, beta=1.0, c=correction.T, trans=0, lower=0, overwrite_c=1)
        else:
            correction += B.T @ B
    if in_place:
        _fill_upper_from_lower(correction)
    correction *= -a  # in place: the whitened Gram is the only new p x p array
    correction += stats.XtX
    gram = symmetrise(correction)
    xty, yty, trace_inv = _whitened_vectors(stats, a, Linv)
    return WhitenedStats(a=a, gram=gram, xty=xty, yty=yty, trace_inv=trace_inv,
                         n_obs=stats.n_obs)


def _whitened_vectors(stats: ClusterStats, a: float, Linv: np.ndarray):
    """(X_a'y_a, y_a'y_a, tr(Sigma_a^{-1})) by Woodbury, L_i^{-1} the inverse Cholesky
    factors of I + a Z_i'Z_i."""
    n, q, p = stats.ZtX.shape
    Linv_Zty = Linv @ stats.Zty[:, :, None]  # (n, q, 1)
    # B'(L^{-1} Z'y) = sum_i Z_i'X_i' L_i^{-T} L_i^{-1} Z_i'y_i, without forming B again.
    xty = stats.Xty - a * (stats.ZtX.reshape(n * q, p).T
                           @ (np.swapaxes(Linv, 1, 2) @ Linv_Zty).ravel())
    yty = stats.yty - a * float(Linv_Zty.ravel() @ Linv_Zty.ravel())
    # tr(M_i Z_i'Z_i) = tr(L^{-1} Z'Z L^{-T}) = sum of the entries of (L^{-1} Z'Z) * L^{-1}.
    trace_inv = float(stats.sizes.sum() - a * np.einsum("nij,nij->", Linv @ stats.ZtZ, Linv))
    return xty, yty, trace_inv


class WhitenedGramColumns:
    """X_a'X_a = X'X - a sum_i (Z_i'X_i)' M_i (Z_i'X_i) a few columns at a time, never
    the p x p whole: for one selection (k and a fixed), whose search needs the
    columns of its support and of its screen, not a second p x p array beside X'X
    (and O(p q n) flops a column instead of O(p^2 q n) for the whole).
    ``diagonal``, ``xty``, ``yty``, ``trace_inv`` as :class:`WhitenedStats`'."""

    def __init__(self, stats: ClusterStats, a: float, chunk_bytes: int = 16 * 2**20):
        if stats.XtX is None:
            raise ValueError("these statistics were computed without the p x p Gram matrix")
        n, q, p = stats.ZtX.shape
        self.stats, self.a, self.p = stats, a, p
        # Z'X as one (n q) x p matrix, a view (a copy only if Z'X was not contiguous)
        self._ZtX_rows = np.ascontiguousarray(stats.ZtX).reshape(n * q, p)
        _L, Linv = cluster_factors(stats.ZtZ, a)
        self.M = np.swapaxes(Linv, 1, 2) @ Linv  # (I + a Z_i'Z_i)^{-1}
        self.xty, self.yty, self.trace_inv = _whitened_vectors(stats, a, Linv)
        squares = np.zeros(p)
        step = max(1, chunk_bytes // (8 * q * max(p, 1)))
        for start in range(0, n, step):
            B = Linv[start:start + step] @ stats.ZtX[start:start + step]
            squares += np.einsum("nqp,nqp->p", B, B)
        self.diagonal = np.diag(stats.XtX) - a * squares

    def whole(self) -> np.ndarray:
        """All of X_a'X_a (a fresh p x p array), accumulated over chunks of clusters."""
        return whiten_stats(self.stats, self.a).gram

    def columns(self, idx) -> np.ndarray:
        """Columns ``idx`` of X_a'X_a, a p x len(idx) array."""
        idx = np.asarray(idx, dtype=np.int64)
        n, q, _ = self.stats.ZtX.shape
        MB = (self.M @ self.stats.ZtX[:, :, idx]).reshape(n * q, idx.size)
        out = self.stats.XtX[:, idx]  # a copy, updated in place: no second p x len(idx)
        return subtract_product(out, self._ZtX_rows.T, MB, alpha=self.a)


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
                  chunk_bytes: int = 2**21, overwrite=None) -> WhitenedRows:
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
    nothing the size of X is allocated here.
    """
    prepended = isinstance(X, InterceptPrepended)
    base = X.base if prepended else np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    Z = np.asarray(Z, dtype=float)
    if stats is None:
        stats = compute_cluster_stats(X, y, Z, codes, n_groups, gram=False)
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
                           column_block=COLUMN_TILE if _column_major(base) else None)
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
        self.shift = (np.concatenate([np.zeros(self.first), shift]) if _has_shift(shift)
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
    for c0, c1, r0, r1, size, cols in _run_tiles(runs, p, width, chunk_bytes):
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
