"""Debiased inference on streamed or Dask data: one more pass for the cluster scores.

The node-wise lasso needs only the whitened Gram X_a'X_a (from the statistics).  The
cluster scores X_i' Sigma_a,i^{-1} r_i, r_i = y_i - X_i beta, need the rows once more:
Sigma_a,i^{-1} r_i = r_i - a Z_i c_i with c_i = (I + a Z_i'Z_i)^{-1} Z_i'r_i, where
Z_i'r_i = Z_i'y_i - Z_i'X_i beta comes from the statistics; so one pass forms
sum_rows X_row (r_row - a Z_row . c_cluster) per cluster, additive over chunks and
partitions like every other statistic.  The scores (clusters x p) are summed on the
client, as the in-memory fit holds them.

As in memory (:func:`lmmscope.inference.cluster_scores`), the scores are those of the
centred data: rows X - 1 x_shift', y - y_shift with the statistics' shifts, and the
centred coefficients (every one but the intercept is the fit's own).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..whitening import cluster_factors


def _cluster_directions(backend, a, coef):
    """c_i = (I + a Z_i'Z_i)^{-1} Z_i'r_i for every cluster, (clusters, q); ``coef`` and
    r_i = yc_i - Xc_i coef on the centred data of the statistics."""
    stats = backend.stats
    Zr = stats.Zty - backend.cluster_Zt_Xbeta(coef)
    _, Linv = cluster_factors(stats.ZtZ, a)
    return (np.swapaxes(Linv, 1, 2) @ (Linv @ Zr[:, :, None]))[:, :, 0]


def _chunk_scores(spec, a, coef, directions, shifts, index, frame):
    """Per cluster of the chunk: sum of Xc_row (rc_row - a Z_row . c_cluster), Xc = X -
    x_shift, rc = (y - y_shift) - Xc coef (centred rows and coefficients)."""
    X, y, Z, codes = spec.arrays(frame)
    if y.size == 0:
        return None
    x_shift, y_shift = shifts
    X = X - x_shift
    w = (y - y_shift) - X @ coef - a * np.einsum("nq,nq->n", Z, directions[codes])
    clusters, local = np.unique(codes, return_inverse=True)
    indicator = sp.csr_matrix((w, (local.ravel(), np.arange(y.size))),
                              shape=(clusters.size, y.size))
    return clusters, np.asarray(indicator @ X)


def cluster_scores(source, spec, backend, a, beta, progress):
    """(clusters, p) scores Xc_i' Sigma_a,i^{-1}(yc_i - Xc_i c), by one pass over the data
    (``beta`` in the original parametrisation, c its centred form)."""
    stats = backend.stats
    coef = stats.centred_coef(beta)
    shifts = (stats.x_shift, stats.y_shift)
    # c_i is in the units of the backend's scaled Z (Z D^{-1}); rows carry raw Z, and
    # (Z_row D^{-1}) . c_i = Z_row . (D^{-1} c_i)
    directions = _cluster_directions(backend, a, coef) / backend.z_scale
    scores = np.zeros((backend.n_groups, backend.p))

    def add(part):
        if part is not None:
            clusters, block = part
            scores[clusters] += block

    source.map_combine(spec.used, _chunk_scores, (spec, a, coef, directions, shifts), add,
                       progress, "inference pass (cluster scores)")
    return scores
