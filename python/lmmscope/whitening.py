"""Cross-products of the whitened data (X_a, y_a) = Sigma_a^{-1/2} (Xc, yc) from the
per-cluster statistics by Woodbury's identity: the whole Gram (:func:`whiten_stats`)
or a few of its columns on demand (:class:`WhitenedGramColumns`), never the rows.

Woodbury starts from X'X: these run on the Gram layout and the streamed backends only
(the rows layout whitens X itself, :mod:`lmmscope.row_whitening`).  Their test of
``stats.XtX is None`` is not a layout branch but a refusal of statistics they cannot
use (a programming error, not the user's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsyrk

from .batched import cholesky_with_inverse
from .cluster_stats import ClusterStats
from .dense_kernels import fill_upper_from_lower, subtract_product, symmetrise


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
        fill_upper_from_lower(correction)
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
