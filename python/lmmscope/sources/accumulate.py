"""Per-cluster statistics of one chunk, and their sum over chunks, files and partitions.

Every statistic is a sum over rows, so a cluster whose rows straddle chunks, files or
Dask partitions gets the sum of its pieces: a chunk's statistics are computed for the
clusters it holds (codes renumbered locally, so a chunk costs what its rows cost), and
added into the global arrays at the clusters' global codes.  With cross-validation
the chunk is split by the fold of each row's cluster (known after pass 1), so the
X'X, X'y, y'y of each fold are accumulated at no extra cost: the total is their sum.

Location (see :mod:`lmmscope.centring`).  With an intercept the statistics are
centred, and statistics add up only when they share one shift: every chunk is
centred by the prototype's shift (the first complete rows' means), never by its own.
Once every chunk is in, the sums are moved onto the column means of all rows by a
rank-2 update (:func:`mean_shift`, :func:`shift_gram`, :func:`shift_blocks`), so the
streamed statistics are centred exactly where the in-memory fit centres them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cluster_stats import ClusterStats, compute_cluster_stats


def _chunk_stats(X, y, Z, codes, n_groups, spec) -> ClusterStats:
    """The statistics of one chunk's rows, all chunks sharing the spec's shift.

    With an intercept every chunk is centred by the prototype's shift (x_shift,
    y_shift; 0 for the intercept column), never by its own means, so the statistics
    of chunks add up; without one nothing is shifted (as in memory).  The intercept's
    position is the spec's, whatever columns happen to be all ones in a chunk.
    """
    center = False if spec.intercept is None else (spec.x_shift, spec.y_shift)
    stats = compute_cluster_stats(X, y, Z, codes, n_groups, center=center)
    stats.intercept = spec.intercept
    return stats


def _add_stats(total: ClusterStats, part: ClusterStats, clusters: np.ndarray) -> None:
    """total += part, where part's cluster r is the total's cluster ``clusters[r]``.

    Per-cluster blocks are scattered in place; the Gram part (X'X, X'y, y'y) is added
    when ``total`` carries one (the buckets of the Dask backend hold blocks only).
    Both must share one shift (ClusterStats.__add__ adds statistics of the same
    clusters; this one scatters a chunk's few clusters into the global arrays).
    """
    _check_same_shift(total, part)
    total.ZtZ[clusters] += part.ZtZ
    total.ZtX[clusters] += part.ZtX
    total.Zty[clusters] += part.Zty
    total.sizes[clusters] += part.sizes
    if total.XtX is not None:
        _add_gram(total, part)


def _check_same_shift(total: ClusterStats, part: ClusterStats) -> None:
    if (total.intercept != part.intercept or total.y_shift != part.y_shift
            or not np.array_equal(total.x_shift, part.x_shift)):
        raise ValueError("statistics with different shifts cannot be added")


def _add_gram(total: ClusterStats, part: ClusterStats) -> None:
    """total's X'X, X'y, y'y += part's (the same shift; see _add_stats)."""
    _check_same_shift(total, part)
    total.XtX += part.XtX
    total.Xty += part.Xty
    total.yty += part.yty


def _shifts_of(stats: ClusterStats) -> dict:
    return dict(x_shift=stats.x_shift, y_shift=stats.y_shift, intercept=stats.intercept)


def cluster_subset(stats: ClusterStats, keep) -> ClusterStats:
    """The per-cluster blocks of the clusters ``keep`` (boolean or indices), no Gram part."""
    return ClusterStats(stats.ZtZ[keep], stats.ZtX[keep], stats.Zty[keep], None,
                        np.zeros(stats.p), 0.0, stats.sizes[keep], **_shifts_of(stats))


def empty_stats(n_groups: int, q: int, p: int, gram: bool = True, like=None) -> ClusterStats:
    """Zero statistics with the shift (x_shift, y_shift, intercept) of ``like`` (a
    StreamSpec or ClusterStats; no shift when None)."""
    shifts = {} if like is None else dict(x_shift=np.array(like.x_shift, dtype=float),
                                          y_shift=like.y_shift, intercept=like.intercept)
    return ClusterStats(ZtZ=np.zeros((n_groups, q, q)), ZtX=np.zeros((n_groups, q, p)),
                        Zty=np.zeros((n_groups, q)), XtX=np.zeros((p, p)) if gram else None,
                        Xty=np.zeros(p), yty=0.0, sizes=np.zeros(n_groups, dtype=np.int64),
                        **shifts)


def mean_shift(stats: ClusterStats):
    """(d, e): the shifts that move centred statistics with a Gram part onto the column
    means of their own rows (x_shift + d, y_shift + e), as the in-memory fit centres
    (cluster_stats.compute_cluster_stats with center=None); zeros without an intercept."""
    if stats.intercept is None:
        return np.zeros(stats.p), 0.0
    i = stats.intercept
    n = stats.XtX[i, i]  # the intercept's sum of squares: the row count, exactly
    d = stats.XtX[i] / n  # column sums of Xc over N
    d[i] = 0.0
    return d, float(stats.Xty[i] / n)


def shift_gram(stats: ClusterStats, d, e) -> ClusterStats:
    """X'X, X'y, y'y of (Xc - 1 d', yc - e) from those of (Xc, yc) (a rank-2 update; d is
    small when the old shift was near the means, so little cancels).  In place; the
    shifts are moved by :func:`moved_shift`."""
    if stats.intercept is None:
        return stats
    i = stats.intercept
    n, S, Y = stats.XtX[i, i], stats.XtX[i].copy(), stats.Xty[i]
    stats.XtX += n * np.outer(d, d) - np.outer(d, S) - np.outer(S, d)
    stats.Xty += n * d * e - S * e - d * Y
    stats.yty += n * e * e - 2 * e * Y
    return stats


def shift_blocks(stats: ClusterStats, d, e) -> ClusterStats:
    """Z_i'(Xc_i - 1 d') and Z_i'(yc_i - e) from the per-cluster blocks (Z_i'1 is the
    intercept's column of Z_i'X_i).  In place; the Gram part is not touched, and the
    shifts are moved by :func:`moved_shift`."""
    if stats.intercept is None:
        return stats
    Zt1 = stats.ZtX[:, :, stats.intercept].copy()
    stats.ZtX -= Zt1[:, :, None] * d[None, None, :]
    stats.Zty -= Zt1 * e
    return stats


def moved_shift(stats: ClusterStats, d, e) -> ClusterStats:
    """Record that the statistics now describe (Xc - 1 d', yc - e): once all of their
    parts went through shift_gram / shift_blocks.  In place."""
    if stats.intercept is not None:
        stats.x_shift = stats.x_shift + d
        stats.y_shift = stats.y_shift + e
    return stats


@dataclass
class ChunkStats:
    """One chunk's statistics per fold: (fold, global codes of its clusters, stats)."""

    pieces: list
    rows: "RowCounts"


@dataclass
class RowCounts:
    """Rows dropped for missing values, and complete rows per level of each factor."""

    n_dropped: int
    level_counts: dict

    def __add__(self, other: "RowCounts") -> "RowCounts":
        return RowCounts(self.n_dropped + other.n_dropped,
                         {k: v + other.level_counts[k] for k, v in self.level_counts.items()})


def empty_counts(spec) -> RowCounts:
    return RowCounts(0, {name: np.zeros(len(v), np.int64) for name, v in spec.levels.items()})


def chunk_stats(spec, frame, fold_of_cluster=None) -> ChunkStats | None:
    """Materialise a chunk with the spec and compute its per-cluster statistics."""
    kept = spec.complete(frame)
    counts = RowCounts(int(frame.shape[0] - kept.shape[0]), spec.level_counts(kept))
    X, y, Z, codes = spec.design_arrays(kept)
    if y.size == 0:
        return ChunkStats([], counts)
    fold_of_row = np.zeros(y.size, np.int64) if fold_of_cluster is None else fold_of_cluster[codes]
    pieces = []
    for fold in np.unique(fold_of_row):
        rows = fold_of_row == fold
        if rows.all():
            Xf, yf, Zf, cf = X, y, Z, codes
        else:
            Xf, yf, Zf, cf = X[rows], y[rows], Z[rows], codes[rows]
        clusters, local = np.unique(cf, return_inverse=True)
        stats = _chunk_stats(Xf, yf, Zf, local.ravel(), clusters.size, spec)
        pieces.append((int(fold), clusters, stats))
    return ChunkStats(pieces, counts)


class StatsTotals:
    """The running sums: per-cluster blocks and per-fold Gram parts."""

    def __init__(self, n_groups: int, q: int, p: int, n_folds: int = 1, rows=None, spec=None):
        self.rows = rows
        self.folds = [empty_stats(0, q, p, like=spec) for _ in range(n_folds)]
        self.total = empty_stats(n_groups, q, p, like=spec)
        self.n_chunks = 0

    def add(self, part: ChunkStats | None) -> None:
        if part is None:
            return
        self.n_chunks += 1
        self.rows = self.rows + part.rows
        for fold, clusters, stats in part.pieces:
            _add_stats(self.total, stats, clusters)
            _add_gram(self.folds[fold], stats)

    def centre_on_means(self) -> None:
        """Move every statistic from the prototype's shift onto the column means of all
        rows (the in-memory fit's shift), once every chunk is in."""
        d, e = mean_shift(self.total)
        moved_shift(shift_blocks(shift_gram(self.total, d, e), d, e), d, e)
        for fold in self.folds:
            moved_shift(shift_gram(fold, d, e), d, e)

    def fold_stats(self, fold_of_cluster: np.ndarray) -> list:
        """Per fold: the fold's clusters' blocks with the fold's own X'X, X'y, y'y."""
        out = []
        for fold, gram_part in enumerate(self.folds):
            clusters = np.flatnonzero(fold_of_cluster == fold)
            t = self.total
            out.append(ClusterStats(t.ZtZ[clusters], t.ZtX[clusters], t.Zty[clusters],
                                    gram_part.XtX, gram_part.Xty, gram_part.yty,
                                    t.sizes[clusters], **_shifts_of(t)))
        return out
