"""Stacks of small q x q matrices: Cholesky factors and their inverses, transposes.

Every cluster contributes one q x q matrix (q = random-effect terms, typically
1..10) and there may be 10^5 clusters.  LAPACK through numpy's batched gufuncs
pays a fixed cost per matrix; running the textbook column algorithm once over the
whole stack, with each scalar step a vector operation across clusters, costs q^2
vector operations instead (an order of magnitude faster for stacks of thousands of
small matrices; see bench/ for measured timings).  On short stacks (a few hundred
matrices: the refit at a few hundred clusters) LAPACK's per-matrix cost is the
smaller one (measured at q = 4: 60 vs 80 us for 200 matrices, 260 vs 160 us for 1,600).
"""

from __future__ import annotations

import numpy as np

# Up to this many matrices numpy's batched LAPACK Cholesky is the faster factorisation.
LAPACK_STACK = 400


def cholesky_with_inverse(A: np.ndarray):
    """Lower Cholesky factors L_i of A_i (n, q, q) and their inverses L_i^{-1}.

    Raises ``np.linalg.LinAlgError`` when some A_i is not positive definite.
    """
    n, q, _ = A.shape
    if n <= LAPACK_STACK:
        L = np.linalg.cholesky(A)
        if not np.all(np.isfinite(L)):  # NaN input passes some LAPACKs unreported
            raise np.linalg.LinAlgError("matrix is not positive definite")
        Lt = np.ascontiguousarray(np.moveaxis(L, 0, -1))  # (q, q, n): rows of scalars
    else:
        Lt = _column_cholesky(np.ascontiguousarray(np.moveaxis(A, 0, -1)))
        L = np.ascontiguousarray(np.moveaxis(Lt, -1, 0))
    return L, np.ascontiguousarray(np.moveaxis(_inverse_rows(Lt), -1, 0))


def _column_cholesky(At: np.ndarray) -> np.ndarray:
    """Lower factors of At (q, q, n), column by column, each step across the stack."""
    q = At.shape[0]
    L = np.zeros_like(At)
    for j in range(q):
        pivot = At[j, j] - np.einsum("kn,kn->n", L[j, :j], L[j, :j]) if j else At[j, j]
        if not (pivot > 0).all():
            raise np.linalg.LinAlgError("matrix is not positive definite")
        L[j, j] = np.sqrt(pivot)
        if j + 1 < q:  # the rest of column j at once
            below = At[j + 1:, j] - np.einsum("ikn,kn->in", L[j + 1:, :j], L[j, :j]) if j \
                else At[j + 1:, j]
            L[j + 1:, j] = below / L[j, j]
    return L


def _inverse_rows(Lt: np.ndarray) -> np.ndarray:
    """Inverses of the lower factors Lt (q, q, n) by forward substitution, a row at a time."""
    q = Lt.shape[0]
    Linv = np.zeros_like(Lt)
    inv_diag = 1.0 / np.einsum("iin->in", Lt)
    for i in range(q):
        Linv[i, i] = inv_diag[i]
        if i:
            Linv[i, :i] = -np.einsum("kn,kjn->jn", Lt[i, :i], Linv[:i, :i]) * inv_diag[i]
    return Linv


def transposed(stack: np.ndarray) -> np.ndarray:
    """The transpose of each matrix of a stack (a view)."""
    return np.swapaxes(stack, -1, -2)


def transposed_copy(stack: np.ndarray) -> np.ndarray:
    """The transpose of each matrix, contiguous: numpy's matmul on a stack of small
    transposed views takes ~3x as long as the copy and the contiguous product together."""
    return np.ascontiguousarray(np.swapaxes(stack, -1, -2))
