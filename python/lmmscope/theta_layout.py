"""lme4's theta: the lower triangle of the relative covariance factor Lambda (q x q),
column by column, with its bounds (diagonal entries non-negative).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def _cached_positions(q: int):
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    rows.flags.writeable = cols.flags.writeable = False  # shared by every caller
    return rows, cols


def theta_positions(q: int):
    """(rows, cols) of Lambda's entries in lme4's theta order: the lower triangle
    column by column (read-only arrays, computed once per q)."""
    return _cached_positions(int(q))


def theta_to_lambda(theta: np.ndarray, q: int) -> np.ndarray:
    Lam = np.zeros((q, q))
    Lam[theta_positions(q)] = theta
    return Lam


def thetas_to_lambdas(thetas: np.ndarray, q: int) -> np.ndarray:
    """Lambda for each row of ``thetas`` (T, q(q+1)/2): a (T, q, q) stack."""
    rows, cols = theta_positions(q)
    Lam = np.zeros((thetas.shape[0], q, q))
    Lam[:, rows, cols] = thetas
    return Lam


def theta_lower_bounds(q: int) -> np.ndarray:
    """Diagonal elements of Lambda are non-negative, the others are free (as lme4)."""
    rows, cols = theta_positions(q)
    return np.where(rows == cols, 0.0, -np.inf)


@lru_cache(maxsize=None)
def theta_unit_matrices(q: int):
    """(E, same_column): E[k] the q x q unit matrix of theta_k's position in Lambda;
    same_column[k, l] whether theta_k and theta_l sit in one column of Lambda."""
    rows, cols = theta_positions(q)
    E = np.zeros((rows.size, q, q))
    E[np.arange(rows.size), rows, cols] = 1.0
    same_column = cols[:, None] == cols[None, :]
    E.flags.writeable = same_column.flags.writeable = False
    return E, same_column
