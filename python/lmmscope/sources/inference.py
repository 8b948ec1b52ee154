"""Debiased inference on streamed or Dask data: one more pass for the cluster scores.

The node-wise lasso needs only the whitened Gram X_a'X_a (from the statistics).  The
cluster scores X_i' Sigma_a,i^{-1} r_i, r_i = y_i - X_i beta, need the rows once more:
Sigma_a,i^{-1} r_i = r_i - a Z_i c_i with c_i = (I + a Z_i'Z_i)^{-1} Z_i'r_i, where
Z_i'r_i = Z_i'y_i - Z_i'X_i beta comes from the statistics; so one pass forms
sum_rows X_row (r_row - a Z_row . c_cluster) per cluster, additive over chunks and
partitions like every other statistic.  The scores (clusters x p) are summed on the
client, as the in-memory fit holds them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..crossprod import cluster_factors


def _cluster_directions(backend, a, beta):
    """c_i = (I + a Z_i'Z_i)^{-1} Z_i'r_i for every cluster, (clusters, q)."""
    stats = backend.stats
    Zr = stats.Zty - backend.cluster_Zt_Xbeta(beta)
    _, Linv = cluster_factors(stats.ZtZ, a)
    return (np.swapaxes(Linv, 1, 2) @ (Linv @ Zr[:, :, None]))[:, :, 0]


def _chunk_scores(spec, a, beta, directions, index, frame):
    """Per cluster of the chunk: sum of X_row (r_row - a Z_row . c_cluster)."""
    X, y, Z, codes = spec.arrays(frame)
    if y.size == 0:
        return None
    w = y - X @ beta - a * np.einsum("nq,nq->n", Z, directions[codes])
    clusters, local = np.unique(codes, return_inverse=True)
    indicator = sp.csr_matrix((w, (local.ravel(), np.arange(y.size))),
                              shape=(clusters.size, y.size))
    return clusters, np.asarray(indicator @ X)


def cluster_scores(source, spec, backend, a, beta, progress):
    """(clusters, p) scores X_i' Sigma_a,i^{-1}(y_i - X_i beta), by one pass over the data."""
    # c_i is in the units of the backend's scaled Z (Z D^{-1}); rows carry raw Z, and
    # (Z_row D^{-1}) . c_i = Z_row . (D^{-1} c_i)
    directions = _cluster_directions(backend, a, beta) / backend.z_scale
    scores = np.zeros((backend.n_groups, backend.p))

    def add(part):
        if part is not None:
            clusters, block = part
            scores[clusters] += block

    source.map_combine(spec.used, _chunk_scores, (spec, a, beta, directions), add,
                       progress, "inference pass (cluster scores)")
    return scores


def pseudo_rows(G, n_obs):
    """R with R'R = G / N (as lmmscope.inference.whitened_gram in Gram form)."""
    vals, vecs = np.linalg.eigh(G / n_obs)
    keep = vals > 1e-12 * max(vals.max(), 1e-300)
    return (vecs[:, keep] * np.sqrt(vals[keep])).T
