"""Location: which column is the intercept, the shifts that centre X and y, and the
centred cross-products X'X, X'y computed without a centred copy of X.

Uncentred cross-products cancel catastrophically once a mean reaches ~1e6 (epoch
seconds, calendar years, y + 1e7), so with an intercept every other column and y are
shifted by their means: row chunks are centred as they are multiplied, or, where the
means are small against the spread, the uncentred products are corrected afterwards.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dsyrk

from .cluster_blocks import has_shift, is_column_major
from .control import DEFAULT_PERFORMANCE, Performance
from .dense_kernels import fill_upper_from_lower, subtract_product
from .intercept import InterceptPrepended


# Row chunks are centred ``Performance.chunk_bytes`` (>= ``min_chunk_rows`` rows) at a
# time: big enough for BLAS-3 efficiency, small enough to stay a fraction of X.


def intercept_column(X, performance: Performance = DEFAULT_PERFORMANCE) -> int | None:
    """Index of the first all-ones column of X (0 for an InterceptPrepended), or None.
    ``performance.chunk_bytes``: rows of the candidate columns compared at a time."""
    if isinstance(X, InterceptPrepended):
        return 0
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        return None
    candidates = np.flatnonzero(X[0] == 1.0)
    step = max(1, performance.chunk_bytes // (8 * max(candidates.size, 1)))
    for first in range(0, X.shape[0], step):
        if candidates.size == 0:
            return None
        block = X[first:first + step][:, candidates]
        candidates = candidates[np.all(block == 1.0, axis=0)]
    return int(candidates[0]) if candidates.size else None


def _row_chunk(p: int, chunk_bytes: int, performance: Performance) -> int:
    return max(performance.min_chunk_rows, chunk_bytes // (8 * max(p, 1)))


def location_shifts(base, y, prepended: bool, intercept, center, sums=None):
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


def centred_products(base, shift, yc, gram=True, out=None, mild=None, sums=None,
                     column_sums=True, performance: Performance = DEFAULT_PERFORMANCE):
    """((base - shift)'(base - shift) or None, (base - shift)'yc, column sums of base - shift).

    ``column_sums=False``: the sums may be None when they would cost a pass of their own.

    Row chunks are centred one at a time.  While a p x p temporary is small (below
    ``performance.chunk_bytes``) each chunk's Gram is numpy's product (its BLAS is the faster
    one); beyond, rank-updates (scipy's BLAS syrk) accumulate in place into the one
    p x p result, so no second p x p array and nothing as large as X is allocated.
    The Gram is written into ``out`` (C-contiguous p x p) when given.
    """
    N, p = base.shape
    chunk_bytes = performance.chunk_bytes
    if not has_shift(shift):
        XtX = np.matmul(base.T, base, out=out) if gram else None
        if sums is None and column_sums:
            sums = base.sum(axis=0)
        return XtX, base.T @ yc, sums
    if mild is None:
        mild = _cancellation_is_mild(base, shift, performance)
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
    rows = _row_chunk(p, 4 * chunk_bytes if in_place else chunk_bytes, performance)
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
        fill_upper_from_lower(XtX)
    return XtX, Xty, sums


# Below this ratio of squared mean to variance (every column), the uncentred products
# corrected afterwards lose at most ~2 digits: then one BLAS call on X is cheaper than
# centring X chunk by chunk.
MILD_MEAN_TO_SD_SQUARED = 99.0


def column_moments(base, project=None, copy_to=None,
                   performance: Performance = DEFAULT_PERFORMANCE):
    """Column sums and sums of squares (and ``project @ base`` when ``project``, a few
    rows of length N, is given), in one pass over X.

    A column-major X (a data frame's own block) is read as its transpose, a few whole
    columns at a time, each contiguous: summing row chunks of it would be strided.
    ``copy_to`` (column-major X only): a row-major N x p destination that receives X's
    values in the same pass, block by block in cache (numpy's own copy of a transpose
    runs 2-3x slower).  Returns (sums, squares) or (sums, squares, projections).
    Rows (or tiles of columns) of ``performance``'s sizes are read at a time."""
    N, p = base.shape
    if copy_to is not None and not is_column_major(base):
        raise ValueError("copy_to is for a column-major X")
    if is_column_major(base):
        out = _column_major_moments(base, project, copy_to, performance)
    else:
        sums, squares = np.zeros(p), np.zeros(p)
        projections = None if project is None else project @ base
        rows = _row_chunk(p, performance.chunk_bytes, performance)
        for first in range(0, N, rows):
            chunk = base[first:first + rows]
            sums += chunk.sum(axis=0)
            squares += np.einsum("ij,ij->j", chunk, chunk)
        out = sums, squares, projections
    return out if project is not None else out[:2]


def _column_major_moments(base, project, copy_to, performance: Performance):
    # tiles of a column-major X in one pass: columns of XT (whole columns of X, ~1 MB)
    # and, within them, blocks of rows copied at a time (~128 KB)
    tile_bytes, copy_block_bytes = performance.moment_tile_bytes, performance.copy_block_bytes
    N, p = base.shape
    XT = base.T  # row-major: row j is column j of X
    sums, squares = np.zeros(p), np.zeros(p)
    projections = None if project is None else np.zeros((project.shape[0], p))
    # whole rows of a narrow X; else whole columns of ~1 MB
    width = p if p <= 64 else int(min(p, max(8, tile_bytes // (8 * max(N, 1)))))
    height = max(64, tile_bytes // (8 * width))  # rows of a tile (all of them, mostly)
    copy_height = max(64, copy_block_bytes // (8 * width))
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


def cancellation_is_mild_at(n_obs, shift, squares) -> bool:
    mean_part = n_obs * shift ** 2  # of the raw sum of squares, when shift is the mean
    return bool(np.all(mean_part <= MILD_MEAN_TO_SD_SQUARED / (1 + MILD_MEAN_TO_SD_SQUARED)
                       * squares))


def _cancellation_is_mild(base, shift, performance: Performance = DEFAULT_PERFORMANCE) -> bool:
    return cancellation_is_mild_at(base.shape[0], shift,
                                   column_moments(base, performance=performance)[1])


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
