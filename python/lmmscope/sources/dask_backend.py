"""Tuning's data backend with the per-cluster blocks kept on the Dask workers.

Pass 2 (one task per partition) computes a partition's statistics with the same code
as a parquet chunk, then splits them: the per-cluster blocks Z_i'Z_i, Z_i'X_i, Z_i'y_i
go to ``n_buckets`` buckets by cluster key (global code mod n_buckets), and the Gram
part (X'X, X'y, y'y, per cross-validation fold) is summed by a tree reduction.  A
bucket task adds the pieces of its clusters from every partition, so a cluster that
straddles partitions is combined by key on a worker, and the buckets are persisted
there.  The client keeps only p x p matrices and the q x q blocks Z_i'Z_i (plus
Z_i'y_i and the sizes): n_groups * q * (q + 1) floats, not n_groups * q * p.

Each ``a`` step asks every bucket for its share of the whitened Gram (Woodbury's
correction over its clusters, per fold when cross-validating: whiten_stats on the
bucket with a zero Gram part, which is additive over clusters) and tree-reduces them:
p x p per step travels to the client.  The REML refit gathers Z_i'X_i of the selected
columns only (n_groups * q * k floats).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..backend import OneFactorBackend, check_folds_of_the_pass, fold_problems_of_whitened
from ..control import as_control
from ..exceptions import InputError
from ..cluster_stats import ClusterStats
from ..whitening import WhitenedStats, whiten_stats
from ..z_units import proxy_z_scale, rescale_z
from ..reduction import reduce_gram
from .accumulate import (RowCounts, _add_blocks, _add_gram, _shifts_of, chunk_stats,
                         cluster_subset, empty_stats, mean_shift, moved_shift, shift_blocks,
                         shift_gram)
from .inference import cluster_scores

MAX_BUCKETS = 16  # graph edges grow as partitions x buckets
TREE_FAN_IN = 8


class ClientStats(ClusterStats):
    """The client's statistics of the Dask backend: every field of ClusterStats but Z'X,
    which stays on the workers (its array has no columns); ``p`` is the model's."""

    @property
    def p(self) -> int:
        return self.x_shift.size


@dataclass
class GramPart:
    """The Gram part of some rows, per fold, and their row counts."""

    folds: list  # ClusterStats with no clusters: X'X, X'y, y'y of each fold
    rows: RowCounts


def partition_pieces(spec, fold_of_cluster, n_buckets, n_folds, index, frame):
    """Worker: a partition's blocks split by bucket, and its Gram part."""
    q, p = len(spec.design.random_names), len(spec.names)
    part = chunk_stats(spec, frame, fold_of_cluster)
    gram = GramPart([empty_stats(0, q, p, like=spec) for _ in range(n_folds)], part.rows)
    blocks = [[] for _ in range(n_buckets)]
    for fold, clusters, stats in part.pieces:
        _add_gram(gram.folds[fold], stats)
        bucket = clusters % n_buckets
        for b in np.unique(bucket):
            keep = bucket == b
            blocks[b].append((clusters[keep], cluster_subset(stats, keep)))
    return blocks, gram


def _bucket_of(pieces, b):
    return pieces[0][b]


def _gram_of(pieces):
    return pieces[1]


def combine_bucket(b, n_buckets, n_groups, q, p, *block_lists):
    """Worker: every piece of the clusters b, b + n_buckets, ... summed by cluster."""
    clusters = np.arange(b, n_groups, n_buckets)
    total = None
    for blocks in block_lists:
        for codes, stats in blocks:
            if total is None:  # every piece has the spec's shift
                total = empty_stats(clusters.size, q, p, gram=False, like=stats)
            _add_blocks(total, stats, codes // n_buckets)  # a bucket holds blocks only
    if total is None:
        total = empty_stats(clusters.size, q, p, gram=False)
    return clusters, total


def shift_bucket(bucket, d, e):
    """Worker: a bucket's blocks moved onto the column means of all rows (see
    accumulate.shift_blocks), as a new bucket."""
    clusters, stats = bucket
    stats = cluster_subset(stats, slice(None))
    stats.ZtX, stats.Zty = stats.ZtX.copy(), stats.Zty.copy()
    return clusters, moved_shift(shift_blocks(stats, d, e), d, e)


def sum_gram_parts(*parts):
    out = parts[0]
    for part in parts[1:]:
        for mine, theirs in zip(out.folds, part.folds):
            _add_gram(mine, theirs)
        out = GramPart(out.folds, out.rows + part.rows)
    return out


def small_blocks(bucket):
    """Worker -> client: the q x q blocks, Z_i'y_i, sizes and Z_i'1 (the intercept's
    column of Z_i'X_i, or None) of a bucket."""
    clusters, stats = bucket
    ones = None if stats.intercept is None else stats.ZtX[:, :, stats.intercept]
    return clusters, stats.ZtZ, stats.Zty, stats.sizes, ones


def column_blocks(bucket, columns):
    clusters, stats = bucket
    return clusters, stats.ZtX[:, :, columns]


def cluster_Zt_Xbeta(bucket, beta):
    clusters, stats = bucket
    return clusters, np.einsum("iqp,p->iq", stats.ZtX, beta)


def _with_zero_gram(stats: ClusterStats) -> ClusterStats:
    p = stats.p
    return ClusterStats(stats.ZtZ, stats.ZtX, stats.Zty, np.zeros((p, p)), np.zeros(p), 0.0,
                        stats.sizes, **_shifts_of(stats))


def whitened_shares(bucket, a, fold_of_cluster, n_folds, z_scale):
    """Worker: the bucket's additive share of whiten_stats (Z's columns scaled by
    ``z_scale``, as the in-memory proxy), in total and per fold."""
    clusters, stats = bucket
    stats = rescale_z(stats, z_scale)
    if fold_of_cluster is None:
        return [whiten_stats(_with_zero_gram(stats), a)]
    folds = fold_of_cluster[clusters]
    shares = [whiten_stats(_with_zero_gram(cluster_subset(stats, folds == f)), a)
              if np.any(folds == f) else _zero_whitened(a, stats.p) for f in range(n_folds)]
    return [sum_whitened(*shares)] + shares


def sum_whitened(*shares):
    """Sum of WhitenedStats (or of lists of them, elementwise): every field is additive."""
    if isinstance(shares[0], list):
        return [sum_whitened(*column) for column in zip(*shares)]
    first = shares[0]
    return WhitenedStats(a=first.a, gram=sum(s.gram for s in shares),
                         xty=sum(s.xty for s in shares), yty=sum(s.yty for s in shares),
                         trace_inv=sum(s.trace_inv for s in shares),
                         n_obs=sum(s.n_obs for s in shares))


def tree_reduce(delayed_items, combine):
    """Pairwise-tree (fan-in TREE_FAN_IN) reduction of delayed values, as one graph."""
    import dask

    level = list(delayed_items)
    while len(level) > 1:
        level = [dask.delayed(combine)(*level[i:i + TREE_FAN_IN])
                 for i in range(0, len(level), TREE_FAN_IN)]
    return level[0]


def _plus_gram(gram_stats: ClusterStats, share: WhitenedStats) -> WhitenedStats:
    """The whitened statistics: the rows' Gram part plus the clusters' Woodbury share."""
    return WhitenedStats(a=share.a, gram=gram_stats.XtX + share.gram,
                         xty=gram_stats.Xty + share.xty, yty=gram_stats.yty + share.yty,
                         trace_inv=share.trace_inv, n_obs=share.n_obs)


def _zero_whitened(a, p) -> WhitenedStats:
    return WhitenedStats(a=a, gram=np.zeros((p, p)), xty=np.zeros(p), yty=0.0, trace_inv=0.0,
                         n_obs=0)


class DaskStatsBackend(OneFactorBackend):
    """The data backend (:class:`lmmscope.backend.DataBackend`) over buckets of
    per-cluster blocks persisted on the workers."""

    use_gram = True

    def __init__(self, source, spec, fold_of_cluster, progress, control=None):
        self._source, self._folds = source, fold_of_cluster
        self._n_folds = 1 if fold_of_cluster is None else int(fold_of_cluster.max()) + 1
        self.n_groups, self.p = spec.group_labels.size, len(spec.names)
        q = len(spec.design.random_names)
        self._spec, self._bucket_shift = spec, None
        self._buckets, self._gram = self._statistics_pass(spec, progress)
        # As tuning.Data: the proxy is built on Z's columns scaled to unit root mean square;
        # ``stats`` describe the scaled columns, ``subset_stats`` (the refit) the data's own.
        self._raw_stats = self._client_stats(q)
        self.z_scale = proxy_z_scale(as_control(control), np.einsum("njj->j", self._raw_stats.ZtZ),
                                     self._raw_stats.n_obs)
        self.stats = rescale_z(self._raw_stats, self.z_scale)
        self.N = self.stats.n_obs
        self.rows = self._gram.rows
        self._whitened, self._subsets = {}, {}

    def _statistics_pass(self, spec, progress):
        """Pass 2 as one graph: buckets persisted on the workers, the Gram part reduced.

        Both are persisted together, so every partition is read once."""
        import dask

        source, q = self._source, len(spec.design.random_names)
        parts = source.partitions(spec.used)
        self.n_buckets = max(1, min(len(parts), MAX_BUCKETS, self.n_groups))
        spec_shared, folds_shared = source.share(spec), source.share(self._folds)
        pieces = [dask.delayed(partition_pieces, pure=False)(
            spec_shared, folds_shared, self.n_buckets, self._n_folds, i, part)
            for i, part in enumerate(parts)]
        buckets = [dask.delayed(combine_bucket)(
            b, self.n_buckets, self.n_groups, q, self.p,
            *[dask.delayed(_bucket_of)(pc, b) for pc in pieces]) for b in range(self.n_buckets)]
        gram = tree_reduce([dask.delayed(_gram_of)(pc) for pc in pieces], sum_gram_parts)
        *buckets, gram = source.persist(buckets + [gram])
        (gram,) = source.compute(gram)
        progress(f"pass 2: {len(parts)} partitions -> {self.n_buckets} buckets of per-cluster "
                 "blocks persisted on the workers")
        return buckets, gram

    def _client_stats(self, q) -> ClusterStats:
        """The client's statistics: Z_i'Z_i, Z_i'y_i, sizes and the Gram part; Z'X lives on
        the workers, so this ClusterStats has no columns of Z'X (whitened Grams and
        column subsets come from the methods below).

        Every statistic is then moved from the prototype's shift onto the column means
        of all rows, as the in-memory fit centres: the Gram parts here, Z_i'y_i with
        Z_i'1, and the buckets' Z_i'X_i on the workers (persisted again)."""
        import dask

        n = self.n_groups
        ZtZ, Zty, sizes = np.zeros((n, q, q)), np.zeros((n, q)), np.zeros(n, dtype=np.int64)
        Zt1 = np.zeros((n, q))
        for clusters, zz, zy, m, ones in self._source.compute(
                *[dask.delayed(small_blocks)(bk) for bk in self._buckets]):
            ZtZ[clusters], Zty[clusters], sizes[clusters] = zz, zy, m
            if ones is not None:
                Zt1[clusters] = ones
        total = empty_stats(0, q, self.p, like=self._spec)
        for fold in self._gram.folds:
            _add_gram(total, fold)
        d, e = mean_shift(total)
        if total.intercept is not None:
            moved_shift(shift_gram(total, d, e), d, e)
            for fold in self._gram.folds:
                moved_shift(shift_gram(fold, d, e), d, e)
            Zty -= Zt1 * e
            self._bucket_shift = (d, e)
            self._buckets = self._source.persist(
                [dask.delayed(shift_bucket)(bk, d, e) for bk in self._buckets])
        return ClientStats(ZtZ, np.zeros((n, q, 0)), Zty, total.XtX, total.Xty, total.yty,
                           sizes, **_shifts_of(total))

    def __getstate__(self):
        # The buckets are futures of this session's Client: unpickled they are gone or,
        # worse, recomputed from a stale graph (an unshifted Z'X).  A pickled fit keeps
        # its client-side statistics; :meth:`_on_buckets` rebuilds the buckets if needed.
        state = self.__dict__.copy()
        state["_buckets"] = None
        return state

    def _whitened_at(self, a):
        """[total, fold 0, fold 1, ...] whitened statistics at a: one tree reduction."""
        import dask

        if a not in self._whitened:
            folds = self._source.share(self._folds)
            (reduced,) = self._on_buckets(lambda buckets: [tree_reduce(
                [dask.delayed(whitened_shares)(bk, a, folds, self._n_folds, self.z_scale)
                 for bk in buckets], sum_whitened)])
            if self._folds is None:
                self._whitened = {a: [_plus_gram(self.stats, reduced[0])]}
            else:
                parts = [_plus_gram(self.stats, reduced[0])]
                parts += [_plus_gram(g, s) for g, s in zip(self._gram.folds, reduced[1:])]
                self._whitened = {a: parts}  # one a at a time: p x p per fold
        return self._whitened[a]

    def whitened(self, a):
        return self._whitened_at(a)[0]

    def whitened_gram(self, a):
        """X_a'X_a, for inference (as tuning.Data's): whole, a tree reduction on the
        workers (the client holds no Z'X to form its columns)."""
        from ..nodewise import DenseGram
        return DenseGram(self.whitened(a).gram)

    def cluster_Zt_Xbeta(self, beta) -> np.ndarray:
        """Z_i'X_i beta for every cluster (Z's columns scaled as ``stats``), computed on
        the workers: (clusters, q)."""
        import dask

        out = np.zeros((self.n_groups, self.stats.q))
        for clusters, block in self._on_buckets(
                lambda buckets: [dask.delayed(cluster_Zt_Xbeta)(bk, beta) for bk in buckets]):
            out[clusters] = block
        return out / self.z_scale

    def _on_buckets(self, tasks_of):
        """compute(*tasks_of(buckets)).  The buckets are futures of the Client of the fit:
        once it is closed, or in an unpickled fit, they are gone; then the statistics
        pass runs again (on the active Client, else Dask's default scheduler), once."""
        if self._buckets is not None:
            try:
                return self._source.compute(*tasks_of(self._buckets))
            except Exception:  # noqa: BLE001  Dask raises several types for lost futures
                if _buckets_alive(self._buckets):
                    raise  # a real error of the task, not lost buckets
        try:
            self._buckets = self._rebuilt_buckets()
            return self._source.compute(*tasks_of(self._buckets))
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                "this Dask fit's per-cluster statistics were kept on the workers of a Client "
                "that is gone (closed, or the fit was unpickled) and its Dask DataFrame "
                f"cannot be read again ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); refit with an active Client") from None

    def _rebuilt_buckets(self):
        import dask

        buckets, _gram = self._statistics_pass(self._spec, lambda message: None)
        if self._bucket_shift is not None:
            d, e = self._bucket_shift
            buckets = self._source.persist([dask.delayed(shift_bucket)(bk, d, e) for bk in buckets])
        return buckets

    def reduced(self, a, unpenalised):
        w = self._whitened_at(a)[0]
        # reduce_gram overwrites the Gram it is given, and this one is cached
        return reduce_gram(w.gram.copy(), w.xty, w.yty, unpenalised), w.trace_inv

    def fold_problems(self, a, unpenalised, fold_of_cluster):
        check_folds_of_the_pass(fold_of_cluster, self._folds)
        total, *held = self._whitened_at(a)
        return fold_problems_of_whitened(total, held, self._gram.folds, unpenalised)

    def cluster_scores(self, a, beta, progress=None):
        """Per-cluster scores by one more pass over the partitions (see .inference)."""
        return cluster_scores(self._source, self._spec, self, a, beta,
                              progress or (lambda message: None))

    def subset_stats(self, columns) -> ClusterStats:
        """Statistics of the columns ``columns``: their Z_i'X_i gathered from the workers,
        the rest :meth:`ClusterStats.subset` of the client's statistics."""
        import dask

        key = tuple(int(j) for j in columns)
        if key not in self._subsets:
            cols = np.asarray(key, dtype=np.int64)
            parts = self._on_buckets(
                lambda buckets: [dask.delayed(column_blocks)(bk, cols) for bk in buckets])
            st = self._raw_stats
            # Z'X is on the workers: the client's statistics subset with a Z'X of zeros
            # that takes no memory (a broadcast), which the gathered blocks then fill
            unheld = np.broadcast_to(np.zeros(()), (self.n_groups, st.q, self.p))
            subset = dataclasses.replace(st, ZtX=unheld).subset(cols)
            for clusters, block in parts:
                subset.ZtX[clusters] = block
            self._subsets = {key: subset}
        return self._subsets[key]


def _buckets_alive(buckets) -> bool:
    """Whether the buckets (persisted collections) are held by futures of a running Client
    (an unpickled fit's, or a closed Client's, are not: those are rebuilt)."""
    try:
        from distributed import futures_of
        futures = futures_of(list(buckets))
        return bool(futures) and all(f.status == "finished" and f.client.status == "running"
                                     for f in futures)
    except Exception:  # noqa: BLE001  whatever cannot be inspected is rebuilt
        return False
