"""The sparse Cholesky of a several-term model: A = Lambda' Z'Z Lambda + I (the refit,
:mod:`lmmscope.sparse_pls`) and I + a Z~'Z~ (the selection's Woodbury,
:mod:`lmmscope.multiterm_scope`).

What depends only on Z'Z's pattern and the terms (blocks, orderings, index maps) is worked
out once per model by :func:`sparse_system`; each theta (or a) does only numeric work:
:class:`SchurSystem` eliminates the largest term block-diagonally and factors the dense
Schur complement of the others, :class:`LUSystem` (SuperLU, its ordering reused) takes
models whose Schur complement would be too large (``Control.dense_schur_limit``,
``max_schur_pairs``; LAPACK's threads: ``Performance.small_dense_block``).
"""

from __future__ import annotations


import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .control import DEFAULT_CONTROL, Control



class SparseSPDFactor:
    """A factor of a sparse symmetric positive definite A for log|A| and solves.

    SuperLU (scipy's ``splu``) in its symmetric mode: pivots on the diagonal only, so
    A = P' L U P with U = D L' and log|A| = sum log U_ii.  The fill-reducing ordering
    (minimum degree on A + A') is computed on the first factor and passed back as
    ``ordering`` to factor matrices of the same pattern in that order (scipy has no
    separate symbolic step; this skips the ordering).  CHOLMOD through the
    ``sksparse-minimal`` wheel was tried first and rejected: its solves corrupt the
    heap (glibc aborts the process later).
    """

    def __init__(self, A: sp.csc_matrix, ordering: np.ndarray | None = None):
        from scipy.sparse.linalg import splu
        options = {"SymmetricMode": True}
        if ordering is None:
            self.lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options=options)
            # Pr A Pc = L U with A Pc = A[:, argsort(perm_c)]; symmetric pivots
            self.ordering = np.argsort(self.lu.perm_c)
            self._order = None
        else:
            self.ordering = self._order = np.asarray(ordering)
            self.lu = splu(A[ordering][:, ordering].tocsc(), permc_spec="NATURAL",
                           diag_pivot_thresh=0.0, options=options)
        pivots = self.lu.U.diagonal()
        self.positive_definite = bool(np.all(pivots > 0))
        self.logdet = float(np.log(pivots).sum()) if self.positive_definite else np.inf

    def solve(self, B: np.ndarray) -> np.ndarray:
        B = np.asarray(B, dtype=float)
        if self._order is None:
            return self.lu.solve(B)
        out = np.empty_like(B)
        out[self._order] = self.lu.solve(np.ascontiguousarray(B[self._order]))
        return out

    def inverse_diagonal_blocks(self, starts, size) -> np.ndarray:
        """The size x size diagonal blocks of A^-1 at ``starts``, by solves on unit
        columns (256 at a time)."""
        starts = np.asarray(starts)
        q = self.lu.shape[0]
        blocks = np.empty((starts.size, size, size))
        for first in range(0, starts.size, 256):
            chunk = starts[first:first + 256]
            columns = (chunk[:, None] + np.arange(size)).ravel()
            E = np.zeros((q, columns.size))
            E[columns, np.arange(columns.size)] = 1.0
            solved = self.solve(E)[columns]  # rows and columns of this chunk's blocks
            for l in range(chunk.size):
                span = slice(l * size, (l + 1) * size)
                blocks[first + l] = solved[span, span]
        return blocks


class LUSystem:
    """A(theta) = Lambda' G Lambda + I by SuperLU, its ordering found once."""

    exact_gradient = False

    def __init__(self, G: sp.spmatrix, reterms):
        self.G, self.reterms = G.tocsc(), reterms
        self.identity = sp.identity(reterms.q, format="csc")
        self.ordering = None
        self.small_dense = False

    def factor(self, theta) -> SparseSPDFactor:
        Lt = self.reterms.lambdat(theta)
        A = (Lt @ self.G @ Lt.T + self.identity).tocsc()
        factor = SparseSPDFactor(A, self.ordering)
        if self.ordering is None and factor.positive_definite:
            self.ordering = factor.ordering
        return factor


class SchurSystem:
    """A(theta) = Lambda' G Lambda + I by eliminating the first term, whose block is
    block diagonal (each row has one level of each factor: I_{n_1} kron p_1 x p_1):
    with Lambda = blockdiag(I kron T_1, Lambda_2) and H_l = G_21's columns of level l,

        A_11,l = T_1' G_11,l T_1 + I = B_l,     M_l = T_1 B_l^-1 T_1',
        S = A_22 - A_21 A_11^-1 A_12 = Lambda_2' (G_22 - C) Lambda_2 + I,
        C = sum_l H_l M_l H_l',    |A| = prod_l |B_l| |S|.

    With the largest factor first (lme4's order) S is small where the terms are crossed
    with a small remainder (InstEval: 1,142 of 4,114), and a dense Cholesky of S beats
    any sparse ordering of the whole A.  Once per model (symbolic): G's blocks, and the
    index map K of C's lower triangle, C_ij = sum_(l,a,b) K[ij, lab] M_l[a, b] with
    K[ij, lab] = H_l[i, a] H_l[j, b], so that each theta's C is one sparse product K m.
    """

    exact_gradient = True

    def __init__(self, G: sp.spmatrix, reterms, control: Control = DEFAULT_CONTROL):
        G = G.tocsr()
        self.reterms = reterms
        self.q1, self.p1 = int(reterms.Gp[1]), reterms.terms[0].p
        self.n1, self.r = self.q1 // self.p1, reterms.q - self.q1
        q1, p1, n1, r = self.q1, self.p1, self.n1, self.r
        self.G11 = np.empty((n1, p1, p1))  # the first term's diagonal blocks
        for a in range(p1):
            for b in range(p1):
                self.G11[:, a, b] = G.diagonal(b - a)[np.arange(n1) * p1 + min(a, b)]
        self.G12 = G[:q1, q1:].tocsr()
        self.G21 = G[q1:, :q1].tocsr()
        # lower triangles only, in Fortran order (LAPACK's, so factored in place): see factor
        self.G22_lower = np.asfortranarray(np.tril(G[q1:, q1:].toarray()))
        # every later term scalar: Lambda_2 diagonal, S = E o dd' + I on lower triangles
        self.diagonal_later = all(t.p == 1 for t in reterms.terms[1:])
        self.small_dense = r < control.performance.small_dense_block
        # the entries of dLambda_2'/dtheta_j for the terms after the first (rows, columns)
        self.first_term = reterms.theta_term == 0
        self.later_derivatives = {}
        for j in np.flatnonzero(~self.first_term):
            d = reterms.lambdat_derivatives[j][q1:, q1:].tocoo()
            self.later_derivatives[j] = (d.row, d.col, d.data)
        self._index_map(control.max_schur_pairs)
        self.exact_gradient = self.K is not None

    def _index_map(self, max_pairs: int):
        """K: rows the entries of the r x r array (Fortran order; only the lower
        triangle's are used), columns (level, a, b), CSC; None where the pairs of
        nonzeros exceed ``max_pairs``."""
        H = self.G21.tocsc()
        H.sort_indices()
        p1, n1, r = self.p1, self.n1, self.r
        level_ptr = H.indptr[::p1]
        counts = np.diff(level_ptr)
        self.n_pairs = int((counts.astype(np.int64) ** 2).sum())
        self.K = None
        if self.n_pairs > max_pairs:
            return
        if p1 == 1:
            self.K = _lower_pair_products(H, r)
            return
        entry_column = np.repeat(np.arange(H.shape[1]), np.diff(H.indptr))
        rows, cols, vals = [], [], []
        chunk_pairs, level = 2_000_000, 0
        cum = np.concatenate([[0], np.cumsum(counts.astype(np.int64) ** 2)])
        while level < n1:  # levels in chunks of about chunk_pairs pairs (bounded memory)
            stop = max(level + 1, int(np.searchsorted(cum, cum[level] + chunk_pairs)))
            stop = min(stop, n1)
            lv = np.arange(level, stop)
            c = counts[lv].astype(np.int64)
            pair_level = np.repeat(lv, c * c)
            offset = np.arange(pair_level.size) - np.repeat(np.cumsum(c * c) - c * c, c * c)
            width = counts[pair_level]
            e1 = level_ptr[pair_level] + offset // width
            e2 = level_ptr[pair_level] + offset % width
            i, j = H.indices[e1], H.indices[e2]
            keep = i >= j
            e1, e2, i, j, pair_level = e1[keep], e2[keep], i[keep], j[keep], pair_level[keep]
            a = entry_column[e1] - pair_level * p1
            b = entry_column[e2] - pair_level * p1
            rows.append(j.astype(np.int64) * r + i)  # (i, j) in Fortran order
            cols.append((pair_level * p1 + a) * p1 + b)
            vals.append(H.data[e1] * H.data[e2])
            level = stop
        # rows of K index the r x r array of C directly (lower triangle, Fortran order)
        self.K = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                       np.concatenate(cols))),
                               shape=(r * r, n1 * p1 * p1))

    def product_lower(self, M: np.ndarray) -> np.ndarray:
        """The lower triangle (upper zero) of C = sum_l H_l M_l H_l' (r x r dense,
        Fortran order) for per-level M (n1 x p1 x p1)."""
        r = self.r
        if self.K is None:
            blocks = sp.block_diag(list(M), format="csr") if self.p1 > 1 \
                else sp.diags(M.ravel(), format="csr")
            return np.asfortranarray(np.tril((self.G21 @ blocks @ self.G12).toarray()))
        return (self.K @ M.ravel()).reshape(r, r).T

    def level_traces(self, U: np.ndarray) -> np.ndarray:
        """H_l' U H_l per level (n1 x p1 x p1) for a symmetric r x r U of which only the
        lower triangle is read (U is overwritten): K' u."""
        U[np.diag_indices_from(U)] /= 2  # K holds each pair i > j once, i = j once
        X = (self.K.T @ U.T.ravel()).reshape(self.n1, self.p1, self.p1)  # Fortran order
        return X + X.transpose(0, 2, 1)

    def factor(self, theta) -> "SchurFactor":
        return SchurFactor(self, np.asarray(theta, dtype=float))


class SchurFactor:
    """The factor of A at one theta from a :class:`SchurSystem` (see there)."""

    def __init__(self, system: SchurSystem, theta: np.ndarray):
        self.system, self.theta = system, theta
        rt, q1 = system.reterms, system.q1
        self.q1 = q1
        self.T1 = rt.term_factor(theta, 0)
        Lt = rt.lambdat(theta)
        self.Lt2 = Lt[q1:, q1:].tocsr()
        T1 = self.T1
        B = np.einsum("ba,lbc,cd->lad", T1, system.G11, T1)
        B[:, np.arange(system.p1), np.arange(system.p1)] += 1.0
        self.positive_definite, self.logdet = False, np.inf
        try:
            chol_B = np.linalg.cholesky(B)
        except np.linalg.LinAlgError:
            return
        self.B = B
        self.B_inv = 1.0 / B if system.p1 == 1 else np.linalg.inv(B)
        self.P = self.B_inv @ T1.T  # B^-1 T_1', per level
        M = T1 @ self.P
        # E = G_22 - C; a pass over r x r costs as much as a small factor, so where
        # Lambda_2 is diagonal (d) only lower triangles are formed (upper zero): S's
        # Cholesky and S^-1 (potri) read and write only them
        E = system.product_lower(M)
        np.subtract(system.G22_lower, E, out=E)
        if system.diagonal_later:  # S = E o dd' + I in place
            self.d = self.Lt2.diagonal()
            E *= self.d[:, None]
            E *= self.d
            S = E
        else:
            self.E = _symmetric_from_lower(E)
            self.R = np.asarray(self.Lt2 @ self.E)  # Lambda_2' E (Lt2 = Lambda_2')
            S = np.asarray(self.Lt2 @ self.R.T)  # Lambda_2' E Lambda_2
        S[np.diag_indices_from(S)] += 1.0
        try:
            self.S_chol = sla.cho_factor(S, lower=True, overwrite_a=True, check_finite=False)
        except sla.LinAlgError:
            return
        self.positive_definite = True
        self.logdet = float(2 * np.log(np.diagonal(chol_B, axis1=1, axis2=2)).sum()
                            + 2 * np.log(np.diag(self.S_chol[0])).sum())

    def _first_solve(self, b):
        """A_11^-1 b for a (q1, m) block: per level B_l^-1 b_l."""
        s = self.system
        return (self.B_inv @ b.reshape(s.n1, s.p1, -1)).reshape(self.q1, -1)

    def solve(self, B: np.ndarray) -> np.ndarray:
        s, T1 = self.system, self.T1
        B = np.asarray(B, dtype=float)
        vector = B.ndim == 1
        B = B.reshape(B.shape[0], -1)
        y1 = self._first_solve(B[:self.q1])
        lam1_y1 = (T1 @ y1.reshape(s.n1, s.p1, -1)).reshape(self.q1, -1)  # Lambda_1 y1
        x2 = sla.cho_solve(self.S_chol, B[self.q1:] - self.Lt2 @ (s.G21 @ lam1_y1),
                           check_finite=False)
        w = (s.G12 @ (self.Lt2.T @ x2)).reshape(s.n1, s.p1, -1)
        x1 = y1 - self._first_solve((T1.T @ w).reshape(self.q1, -1))  # A_11^-1 A_12 x2
        out = np.concatenate([x1, x2])
        return out[:, 0] if vector else out

    def schur_inverse_lower(self) -> np.ndarray:
        """The lower triangle of S^-1 (upper zero) from S's Cholesky factor (potri)."""
        inverse, info = sla.lapack.dpotri(self.S_chol[0], lower=1)
        if info:
            raise np.linalg.LinAlgError("the Schur complement is singular")
        # potri writes the lower triangle; the upper one holds S's (zero where diagonal)
        return inverse if self.system.diagonal_later else np.tril(inverse)

    def schur_inverse(self) -> np.ndarray:
        """S^-1, symmetric, cached."""
        if getattr(self, "_schur_inverse", None) is None:
            self._schur_inverse = _symmetric_from_lower(self.schur_inverse_lower())
        return self._schur_inverse

    def logdet_gradient(self) -> np.ndarray:
        """d log|A| / d theta, exact, from |A| = prod_l |B_l| |S| and S^-1 (Tinv):

            first term (dT = dT_1/dtheta_j):  sum_l 2 tr(B_l^-1 T_1' G_11,l dT)
                - sum_l tr(Z_l dM_l),   Z_l = H_l' Lambda_2 Tinv Lambda_2' H_l,
                dM_l = dT P_l + P_l' dT' - P_l' (dT' G_11,l T_1 + T_1' G_11,l dT) P_l,
                P_l = B_l^-1 T_1';
            later terms: 2 tr(Tinv dLambda_2' E Lambda_2) over dLambda_2's entries,
                with E = G_22 - C (scalar terms: from Tinv's diagonal)."""
        s, T1 = self.system, self.T1
        out = np.zeros(self.theta.size)
        if s.diagonal_later:
            # Lambda_2'E Lambda_2 = S - I: tr(Tinv dLambda_2' E Lambda_2) over entry u of
            # a scalar term is (1 - Tinv_uu) / d_u (0 where d_u = 0: S's row u is e_u')
            Tinv, d = self.schur_inverse_lower(), self.d
            with np.errstate(divide="ignore", invalid="ignore"):
                by_column = np.where(d != 0, (1 - np.diagonal(Tinv)) / d, 0.0)
            for j, (u, _v, dv) in s.later_derivatives.items():
                out[j] = 2 * float(dv @ by_column[u])
            Tinv *= d[:, None]
            Tinv *= d
            Z = s.level_traces(Tinv)  # Lambda_2 Tinv Lambda_2'
        else:
            Tinv = self.schur_inverse()
            for j, (u, v, dv) in s.later_derivatives.items():
                out[j] = 2 * float(dv @ np.einsum("ij,ij->j", self.R[:, v], Tinv[:, u]))
            Y = np.asarray(self.Lt2.T @ Tinv)  # Lambda_2 Tinv
            Z = s.level_traces(np.asarray(self.Lt2.T @ Y.T))  # Lambda_2 Tinv Lambda_2'
        G, P = s.G11, self.P
        GT = G @ T1  # G_11,l T_1
        rows, cols = np.tril_indices(s.p1)
        order = np.lexsort((rows, cols))  # theta's column-wise order within the term
        for j, (a, b) in zip(np.flatnonzero(s.first_term), zip(rows[order], cols[order])):
            dT = np.zeros_like(T1)
            dT[a, b] = 1.0
            inner = dT.T @ GT
            inner = inner + inner.transpose(0, 2, 1)  # dT' G T + T' G dT
            dM = dT @ P
            dM = dM + dM.transpose(0, 2, 1) - P.transpose(0, 2, 1) @ inner @ P
            d_first = 2 * np.einsum("lab,lba->", self.B_inv, T1.T @ G @ dT)
            out[j] = d_first - np.einsum("lab,lba->", Z, dM)
        return out

    def inverse_diagonal_blocks(self, starts, size) -> np.ndarray:
        """The size x size diagonal blocks of A^-1 starting at ``starts`` (one term's
        levels): in the dense block those of S^-1; in the first term
        B_l^-1 + (W S^-1 W')_ll with W = A_11^-1 A_12."""
        q1, local = self.q1, np.arange(size)
        index = np.asarray(starts)[:, None] + local  # (levels, size)
        if index.size == 0:
            return np.zeros((0, size, size))
        T = self.schur_inverse()
        if index.min() >= q1:
            return T[(index - q1)[:, :, None], (index - q1)[:, None, :]]
        s = self.system
        if getattr(self, "_W", None) is None:
            blocks = sp.block_diag(list(self.B_inv @ self.T1.T), format="csr") if s.p1 > 1 \
                else sp.diags((self.B_inv * self.T1[0, 0]).ravel(), format="csr")
            self._W = (blocks @ s.G12 @ self.Lt2.T).tocsr()  # A_11^-1 Lambda_1' G_12 Lambda_2
        rows = np.broadcast_to(index[:, :, None], (index.shape[0], size, size)).ravel()
        cols = np.broadcast_to(index[:, None, :], (index.shape[0], size, size)).ravel()
        own = self.B_inv[rows // s.p1, rows % s.p1, cols % s.p1]
        return (own + _sparse_bilinear(self._W, T, rows, cols)).reshape(-1, size, size)


def _lower_pair_products(H: sp.csc_matrix, r: int) -> sp.csc_matrix:
    """K with K[i + j r, k] = H[i, k] H[j, k] (the r x r array in Fortran order) for
    each column k's pairs of nonzeros i >= j (H's indices sorted), built directly in
    CSC order: a column's c nonzeros give c (c + 1) / 2 pairs (e1, e2 <= e1)."""
    counts = np.diff(H.indptr).astype(np.int64)
    per_column = counts * (counts + 1) // 2
    indptr = np.concatenate([[0], np.cumsum(per_column)])
    column = np.repeat(np.arange(counts.size), per_column)
    t = np.arange(indptr[-1]) - indptr[column]  # position within the column's pairs
    e1 = ((np.sqrt(8.0 * t + 1) - 1) // 2).astype(np.int64)  # t = e1 (e1 + 1) / 2 + e2
    e1 -= (e1 * (e1 + 1) // 2 > t)  # guard the float square root
    e1 += ((e1 + 1) * (e1 + 2) // 2 <= t)
    e2 = t - e1 * (e1 + 1) // 2
    e1 += H.indptr[column]
    e2 += H.indptr[column]
    rows = H.indices[e2].astype(np.int64) * r + H.indices[e1]
    return sp.csc_matrix((H.data[e1] * H.data[e2], rows, indptr), shape=(r * r, counts.size))


def _symmetric_from_lower(C: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle (with the diagonal) is C's."""
    C = np.tril(C)
    C += C.T
    C[np.diag_indices_from(C)] /= 2
    return C


def _sparse_bilinear(W: sp.csr_matrix, T: np.ndarray, rows, cols) -> np.ndarray:
    """(W T W')[rows[i], cols[i]] for each i, from the nonzeros of the two rows of W."""
    length = np.diff(W.indptr)
    la, lb = length[rows], length[cols]
    counts = la * lb
    pair = np.repeat(np.arange(rows.size), counts)
    offset = np.arange(pair.size) - np.repeat(np.cumsum(counts) - counts, counts)
    width = lb[pair]
    ia = W.indptr[rows][pair] + offset // np.maximum(width, 1)
    ib = W.indptr[cols][pair] + offset % np.maximum(width, 1)
    values = W.data[ia] * T[W.indices[ia], W.indices[ib]] * W.data[ib]
    return np.bincount(pair, weights=values, minlength=rows.size)


def sparse_system(G: sp.spmatrix, reterms, control: Control = DEFAULT_CONTROL):
    """The symbolic analysis of A(theta) = Lambda' G Lambda + I: block Schur where what
    remains after the first term is small, SuperLU otherwise."""
    if 0 < reterms.q - int(reterms.Gp[1]) <= control.dense_schur_limit:
        return SchurSystem(G, reterms, control)
    return LUSystem(G, reterms)
