"""Cholesky factors and their inverses for a stack of small q x q SPD matrices.

Every cluster contributes one q x q matrix (q = random-effect terms, typically
1..10) and there may be 10^5 clusters.  LAPACK through numpy's batched gufuncs
pays a fixed cost per matrix; running the textbook column algorithm once over the
whole stack, with each scalar step a vector operation across clusters, costs q^2
vector operations instead (an order of magnitude faster for stacks of thousands of
small matrices; see bench/ for measured timings).
"""

from __future__ import annotations

import numpy as np


def cholesky_with_inverse(A: np.ndarray):
    """Lower Cholesky factors L_i of A_i (n, q, q) and their inverses L_i^{-1}.

    Raises ``np.linalg.LinAlgError`` when some A_i is not positive definite.
    """
    n, q, _ = A.shape
    At = np.ascontiguousarray(np.moveaxis(A, 0, -1))  # (q, q, n): rows of scalars
    L = np.zeros_like(At)
    Linv = np.zeros_like(At)
    for j in range(q):  # column j of L, all rows below the diagonal at once
        pivot = At[j, j] - np.einsum("kn,kn->n", L[j, :j], L[j, :j]) if j else At[j, j]
        if not (pivot > 0).all():
            raise np.linalg.LinAlgError("matrix is not positive definite")
        L[j, j] = np.sqrt(pivot)
        Linv[j, j] = 1.0 / L[j, j]
        if j + 1 < q:
            below = At[j + 1:, j] - np.einsum("ikn,kn->in", L[j + 1:, :j], L[j, :j]) if j \
                else At[j + 1:, j]
            L[j + 1:, j] = below * Linv[j, j]
    # Forward substitution, one column of the inverse at a time.
    for j in range(q):
        for i in range(j + 1, q):
            Linv[i, j] = -np.einsum("kn,kn->n", L[i, j:i], Linv[j:i, j]) * Linv[i, i]
    return (np.ascontiguousarray(np.moveaxis(L, -1, 0)),
            np.ascontiguousarray(np.moveaxis(Linv, -1, 0)))
