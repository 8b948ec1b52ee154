"""Per-cluster statistics of one chunk, and their sum over chunks, files and partitions.

Every statistic is a sum over rows, so a cluster whose rows straddle chunks, files or
Dask partitions gets the sum of its pieces: a chunk's statistics are computed for the
clusters it holds (codes renumbered locally, so a chunk costs what its rows cost), and
added into the global arrays at the clusters' global codes.  With cross-validation
the chunk is split by the fold of each row's cluster (known after pass 1), so the
X'X, X'y, y'y of each fold are accumulated at no extra cost: the total is their sum.

Every call of ``compute_cluster_stats`` and every addition of statistics is in the
two small functions below, so that switching to shifted (centred) statistics is a
change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..crossprod import ClusterStats, compute_cluster_stats


def _chunk_stats(X, y, Z, codes, n_groups, shift) -> ClusterStats:
    """The statistics of one chunk's rows, all chunks sharing the shift ``shift``.

    integrator: pass center=shift (x_shift, y_shift) once robust-stats lands.
    """
    return compute_cluster_stats(X, y, Z, codes, n_groups)


def _add_stats(total: ClusterStats, part: ClusterStats, clusters: np.ndarray) -> None:
    """total += part, where part's cluster r is the total's cluster ``clusters[r]``.

    Per-cluster blocks are scattered in place; the Gram part (X'X, X'y, y'y) is added
    when ``total`` carries one (the buckets of the Dask backend hold blocks only).
    integrator: once robust-stats lands, check part.x_shift/y_shift equal the total's
    (ClusterStats.__add__ adds statistics of the same clusters; this one scatters a
    chunk's few clusters into the global arrays).
    """
    total.ZtZ[clusters] += part.ZtZ
    total.ZtX[clusters] += part.ZtX
    total.Zty[clusters] += part.Zty
    total.sizes[clusters] += part.sizes
    if total.XtX is not None:
        _add_gram(total, part)


def _add_gram(total: ClusterStats, part: ClusterStats) -> None:
    """total's X'X, X'y, y'y += part's (the same shift; see _add_stats)."""
    total.XtX += part.XtX
    total.Xty += part.Xty
    total.yty += part.yty


def cluster_subset(stats: ClusterStats, keep) -> ClusterStats:
    """The per-cluster blocks of the clusters ``keep`` (boolean or indices), no Gram part.

    integrator: carry x_shift, y_shift, intercept once they exist.
    """
    return ClusterStats(stats.ZtZ[keep], stats.ZtX[keep], stats.Zty[keep], None,
                        np.zeros(stats.p), 0.0, stats.sizes[keep])


def empty_stats(n_groups: int, q: int, p: int, gram: bool = True) -> ClusterStats:
    """Zero statistics (integrator: carry x_shift, y_shift, intercept once they exist)."""
    return ClusterStats(ZtZ=np.zeros((n_groups, q, q)), ZtX=np.zeros((n_groups, q, p)),
                        Zty=np.zeros((n_groups, q)), XtX=np.zeros((p, p)) if gram else None,
                        Xty=np.zeros(p), yty=0.0, sizes=np.zeros(n_groups, dtype=np.int64))


@dataclass
class ChunkStats:
    """One chunk's statistics per fold: (fold, global codes of its clusters, stats)."""

    pieces: list
    column_min: np.ndarray
    column_max: np.ndarray
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
        p = len(spec.names)
        return ChunkStats([], np.full(p, np.inf), np.full(p, -np.inf), counts)
    shift = (spec.x_shift, spec.y_shift)
    fold_of_row = np.zeros(y.size, np.int64) if fold_of_cluster is None else fold_of_cluster[codes]
    pieces = []
    for fold in np.unique(fold_of_row):
        rows = fold_of_row == fold
        if rows.all():
            Xf, yf, Zf, cf = X, y, Z, codes
        else:
            Xf, yf, Zf, cf = X[rows], y[rows], Z[rows], codes[rows]
        clusters, local = np.unique(cf, return_inverse=True)
        stats = _chunk_stats(Xf, yf, Zf, local.ravel(), clusters.size, shift)
        pieces.append((int(fold), clusters, stats))
    return ChunkStats(pieces, X.min(axis=0), X.max(axis=0), counts)


class StatsTotals:
    """The running sums: per-cluster blocks, per-fold Gram parts, column ranges."""

    def __init__(self, n_groups: int, q: int, p: int, n_folds: int = 1, rows=None):
        self.rows = rows
        self.folds = [empty_stats(0, q, p) for _ in range(n_folds)]
        self.total = empty_stats(n_groups, q, p)
        self.column_min = np.full(p, np.inf)
        self.column_max = np.full(p, -np.inf)
        self.n_chunks = 0

    def add(self, part: ChunkStats | None) -> None:
        if part is None:
            return
        self.n_chunks += 1
        self.rows = self.rows + part.rows
        for fold, clusters, stats in part.pieces:
            _add_stats(self.total, stats, clusters)
            _add_gram(self.folds[fold], stats)
        np.minimum(self.column_min, part.column_min, out=self.column_min)
        np.maximum(self.column_max, part.column_max, out=self.column_max)

    def fold_stats(self, fold_of_cluster: np.ndarray) -> list:
        """Per fold: the fold's clusters' blocks with the fold's own X'X, X'y, y'y."""
        out = []
        for fold, gram_part in enumerate(self.folds):
            clusters = np.flatnonzero(fold_of_cluster == fold)
            t = self.total
            out.append(ClusterStats(t.ZtZ[clusters], t.ZtX[clusters], t.Zty[clusters],
                                    gram_part.XtX, gram_part.Xty, gram_part.yty,
                                    t.sizes[clusters]))
        return out
