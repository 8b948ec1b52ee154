"""Products over rows grouped by cluster: the stacked Z_i'X_i and their adjoint.

Cluster labels become codes 0..n-1 (:func:`encode_groups`).  When rows are sorted by
cluster, runs of equal-size clusters reshape without copying into batches, and one
batched matmul per run does the work; otherwise the block-diagonal Z' is a sparse
matrix (:func:`cluster_transpose_operator`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .control import DEFAULT_PERFORMANCE, Performance


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


def has_shift(shift) -> bool:
    return shift is not None and bool(np.any(shift))


def cluster_products(Z: np.ndarray, X: np.ndarray, codes: np.ndarray, n_groups: int,
                     out: np.ndarray | None = None, chunk_bytes: int = 16 * 2**20,
                     shift: np.ndarray | None = None,
                     performance: Performance = DEFAULT_PERFORMANCE) -> np.ndarray:
    """Stacked Z_i'(X_i - 1 shift'), shape (n_groups, q, p), written into ``out`` when given.

    When the rows are sorted by cluster, runs of equal-size clusters reshape (without
    copying) to (clusters, size, p), and one batched matmul per run does the work
    (several times faster than the sparse block-diagonal product).  Otherwise the
    sparse product runs on chunks of clusters, so no temporary as large as the result
    is allocated; copying rows into order would cost more.  A ``shift`` is subtracted
    from one chunk of rows at a time, before it is multiplied.  A column-major X is
    read ``performance.column_tile`` columns at a time.
    """
    N, q = Z.shape
    p = X.shape[1]
    if out is None:
        out = np.empty((n_groups, q, p))
    runs = equal_size_runs(codes, n_groups)
    if runs is not None:
        _run_products(Z, X, runs, out, chunk_bytes, shift, performance.column_tile)
        return out
    Zt = cluster_transpose_operator(Z, codes, n_groups)
    if not has_shift(shift):
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


def is_column_major(M: np.ndarray) -> bool:
    """Fortran-ordered and not also C-ordered (a data frame's own block, transposed)."""
    return M.flags.f_contiguous and not M.flags.c_contiguous


def run_tiles(runs, p, width, tile_bytes=None):
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


def _run_products(Z, X, runs, out, chunk_bytes, shift, column_tile):
    """Batched Z_i'(X_i - shift) over runs of equal-size clusters (rows sorted).  A
    column-major X (a data frame's own block) is copied a tile of whole column segments
    at a time into a row-major buffer first: numpy's batched products of small
    matrices read strided operands several times slower.  ``column_tile``: columns
    per tile (256 columns of 1,024 rows are 2 MB, with 8 KB contiguous per column)."""
    q, p = Z.shape[1], X.shape[1]
    centre = has_shift(shift)
    column_major = is_column_major(X)
    width = min(p, column_tile) if column_major else p
    copied = centre or column_major
    tile_bytes = (min(chunk_bytes, 2**21) if column_major else chunk_bytes) if copied else None
    buffer = np.empty(0)
    for c0, c1, r0, r1, size, cols in run_tiles(runs, p, width, tile_bytes):
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
