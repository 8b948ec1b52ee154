"""Per-cluster cross-products: the sufficient statistics of every later step.

One pass over the data builds, for clusters i = 1..n,

    Z_i'Z_i (q x q),  Z_i'X_i (q x p),  Z_i'y_i (q),  plus X'X, X'y, y'y.

Everything that depends on the proxy covariance Sigma_a,i = a Z_i Z_i' + I is then
computed from these blocks by Woodbury's identity (:mod:`lmmscope.whitening`), so
changing ``a`` never touches the raw rows again and no N x N matrix is ever formed.

Location.  When the model has an intercept column, every other column of X and y
are shifted by their means before any product is formed (:mod:`lmmscope.centring`).
The statistics then describe Xc = X - 1 x_shift', yc = y - y_shift; coefficients on
Xc equal those on X except the intercept, which :meth:`ClusterStats.original_coef`
converts back.  Nothing but the intercept (and its covariances) depends on the shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .centring import (cancellation_is_mild_at, centred_products, column_moments,
                       intercept_column, location_shifts)
from .cluster_blocks import cluster_products, has_shift
from .control import DEFAULT_PERFORMANCE, Performance
from .dense_kernels import plain_pages_empty
from .intercept import InterceptPrepended


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


def compute_cluster_stats(X, y, Z, codes, n_groups=None, gram=True, center=None,
                          moments=None,
                          performance: Performance = DEFAULT_PERFORMANCE) -> ClusterStats:
    """One pass over the data: every cross-product that later steps need.

    ``center``: None (automatic) shifts every column but the intercept, and y, by
    their means when X has an intercept column (an InterceptPrepended, or an all-ones
    column); False: no shift; ``(x_shift, y_shift)``: these shifts (x_shift of length
    p, 0 for the intercept), so that statistics of row chunks share one shift and add
    up.  ``X`` may be an :class:`~lmmscope.intercept.InterceptPrepended`; the
    intercept's statistics are then column sums, bordered onto those of the user's
    columns.  ``moments``: (column sums, sums of squares) of X's own columns, where the
    input checks already computed them (else one pass here).  ``performance``: block
    sizes of the pass (:class:`lmmscope.control.Performance`; never the numbers).
    """
    prepended = isinstance(X, InterceptPrepended)
    base = X.base if prepended else np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    Z = np.asarray(Z, dtype=float)
    n_groups = int(codes.max()) + 1 if n_groups is None else n_groups
    q = Z.shape[1]
    first = int(prepended)
    intercept = intercept_column(X, performance)
    may_shift = center is not False and (center is not None or intercept is not None)
    if not may_shift:
        sums, squares = None, None
    else:
        sums, squares = (column_moments(base, performance=performance) if moments is None
                         else moments)
    x_shift, y_shift = location_shifts(base, y, prepended, intercept, center, sums)
    base_shift = x_shift[first:]
    yc = y - y_shift if y_shift else y
    # Z_i'[Z_i, yc_i, 1] in one product (batched when clusters are sorted)
    small = cluster_products(Z, np.column_stack([Z, yc, np.ones(Z.shape[0])]), codes, n_groups)
    ZtZ, Zty, Zt_ones = small[:, :, :q].copy(), small[:, :, q].copy(), small[:, :, q + 1].copy()
    ZtX = plain_pages_empty((n_groups, q, base.shape[1] + first),
                            performance)
    # small means: correct the uncentred products; large ones: centre rows as they go
    mild = has_shift(base_shift) and cancellation_is_mild_at(base.shape[0], base_shift, squares)
    cluster_products(Z, base, codes, n_groups, out=ZtX[:, :, first:],
                     shift=None if mild else base_shift, performance=performance)
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
        mild=mild, sums=sums, column_sums=prepended, performance=performance)
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
