"""The fixed-effects matrix [1, X] of an array fit, without copying X.

``LmmScope(fit_intercept=True).fit(X, ...)`` needs an intercept column in front of
the user's X.  Copying a 100,000 x 1,000 X to add it allocates 800 MB, which on a
machine slow to fault in fresh pages costs longer than X'X itself; every statistic
of the intercept column is a column sum, so the cross-products are bordered instead
(:func:`lmmscope.cluster_stats.compute_cluster_stats`).  The few steps that need rows
(p too large for a Gram, cross-validation folds, inference) materialise what they
index, as they would copy a plain array anyway.
"""

from __future__ import annotations

import numpy as np


class InterceptPrepended:
    """Read-only stand-in for ``np.column_stack([np.ones(N), base])``."""

    ndim = 2
    dtype = np.dtype(float)

    def __init__(self, base: np.ndarray):
        self.base = base
        self.shape = (base.shape[0], base.shape[1] + 1)

    def __matmul__(self, coef):
        coef = np.asarray(coef, dtype=float)
        return coef[0] + self.base @ coef[1:]

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=dtype or float)
        out[:, 0] = 1.0
        out[:, 1:] = self.base
        return out

    def __getitem__(self, key):
        """Rows and/or columns as a plain array (only the selected part is copied)."""
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        picked = np.arange(self.shape[1])[cols]
        one_row = isinstance(rows, (int, np.integer))
        base = self.base[[rows] if one_row else rows]
        columns = np.atleast_1d(picked)
        out = np.ones((base.shape[0], columns.size))
        from_base = columns > 0
        out[:, from_base] = base[:, columns[from_base] - 1]
        if np.ndim(picked) == 0:
            out = out[:, 0]
        return out[0] if one_row else out


def left_multiply(A, X) -> np.ndarray:
    """A @ X for a dense or sparse A, without materialising an InterceptPrepended X."""
    if isinstance(X, InterceptPrepended):
        ones = np.ones(X.shape[0])
        return np.column_stack([np.asarray(A @ ones).ravel(), np.asarray(A @ X.base)])
    return np.asarray(A @ X)
