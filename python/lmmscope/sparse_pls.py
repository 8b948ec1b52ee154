"""Penalised least squares and profiled (RE)ML for several random-effects terms.

lme4's ``merPredD`` (src/predModule.cpp; Bates et al. 2015, JSS 67(1), section 3) on
cross-products.  At theta, with Lambda from :class:`lmmscope.reterms.ReTerms`,

    A = Lambda' Z'Z Lambda + I = P' L D L' P     (sparse, fill-reducing P: SparseSPDFactor)
    S = X'X - X'Z Lambda A^-1 Lambda' Z'X = RX' RX
    beta = S^-1 (X'y - X'Z Lambda A^-1 Lambda' Z'y),   u = A^-1 Lambda'(Z'y - Z'X beta)
    pwrss = |y - X beta - Z Lambda u|^2 + |u|^2 = y'y - c_u' A^-1 c_u - beta'(X'y - ...)
    -2 l_ML   = log|A| + n (1 + log(2 pi pwrss / n))
    -2 l_REML = log|A| + log|S| + (n - p)(1 + log(2 pi pwrss / (n - p)))

The statistics (Z'Z sparse, Z'X, Z'y, X'X, X'y, y'y) are sums over rows, so they may
come from chunks; nothing N x N is formed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .control import Control, as_control
from .convergence import gradient_hessian_problems
from .threads import one_blas_thread


class SparseSPDFactor:
    """A factor of a sparse symmetric positive definite A for log|A| and solves.

    SuperLU (scipy's ``splu``) in its symmetric mode: a fill-reducing ordering of A + A'
    (minimum degree), pivots on the diagonal only, so A = P' L U P with U = D L' and
    log|A| = sum log U_ii.  CHOLMOD through the ``sksparse-minimal`` wheel was tried
    first and rejected: its solves corrupt the heap (glibc aborts the process later).
    """

    def __init__(self, A: sp.csc_matrix):
        from scipy.sparse.linalg import splu
        self.lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        pivots = self.lu.U.diagonal()
        self.positive_definite = bool(np.all(pivots > 0))
        self.logdet = float(np.log(pivots).sum()) if self.positive_definite else np.inf

    def solve(self, B: np.ndarray) -> np.ndarray:
        return self.lu.solve(np.asarray(B, dtype=float))

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


class BlockSchurFactor:
    """The same factor by eliminating the first term: its block of A is block diagonal
    (each row has one level of each factor: I_{n_1} kron p_1 x p_1 blocks), so

        |A| = |A_11| |S|,   S = A_22 - A_21 A_11^-1 A_12   (q - q_1 square, dense)

    With the largest factor first (lme4's order) S is small where the terms are
    crossed with a small remainder (InstEval: 1,142 of 4,114), and a dense Cholesky
    of S beats any sparse ordering of the whole A.  Used up to
    :data:`DENSE_SCHUR_LIMIT` remaining columns.
    """

    def __init__(self, A: sp.csc_matrix, q1: int, p1: int):
        A = A.tocsr()
        n1 = q1 // p1
        local_r, local_c = np.meshgrid(np.arange(p1), np.arange(p1), indexing="ij")
        starts = (np.arange(n1) * p1)[:, None, None]
        blocks = np.asarray(A[(starts + local_r).ravel(), (starts + local_c).ravel()]
                            ).reshape(n1, p1, p1)
        self.q1 = q1
        try:
            chol = np.linalg.cholesky(blocks)
            inverse = np.linalg.inv(blocks)
        except np.linalg.LinAlgError:
            self.positive_definite, self.logdet = False, np.inf
            return
        self.A11_inv = sp.block_diag(list(inverse), format="csr") if p1 > 1 \
            else sp.diags(inverse.ravel(), format="csr")
        self.A21 = A[q1:, :q1]
        self.W = (self.A11_inv @ A[:q1, q1:]).tocsr()  # A_11^-1 A_12
        S = A[q1:, q1:].toarray() - (self.A21 @ self.W).toarray()
        try:
            self.S_chol = sla.cho_factor(S, lower=True)
        except sla.LinAlgError:
            self.positive_definite, self.logdet = False, np.inf
            return
        self.positive_definite = True
        self.logdet = float(2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum()
                            + 2 * np.log(np.diag(self.S_chol[0])).sum())

    def trace_inverse_times(self, matrices, chunk_bytes: int = 2**26) -> np.ndarray:
        """tr(A^-1 M) for each sparse M whose pattern lies in A's (the first term's block
        of M block diagonal, as A's), from the blocks of A^-1:

            A^-1 = [[A_11^-1 + W T W', -W T], [-T W', T]],  T = S^-1,  W = A_11^-1 A_12,

        W T formed a block of rows at a time (``chunk_bytes``) and read at M's entries."""
        q1 = self.q1
        T = self.schur_inverse()
        W = self.W
        coos = [M.tocoo() for M in matrices]
        out = np.zeros(len(coos))
        for k, M in enumerate(coos):  # the 2-2 block: T itself
            b = (M.row >= q1) & (M.col >= q1)
            out[k] = M.data[b] @ T[M.row[b] - q1, M.col[b] - q1]
        step = max(1, chunk_bytes // (8 * max(T.shape[0], 1)))
        for lo in range(0, q1, step):
            hi = min(lo + step, q1)
            WT = np.asarray(W[lo:hi] @ T)  # rows lo..hi of W T
            for k, M in enumerate(coos):
                r, c, v = M.row, M.col, M.data
                b = (r >= lo) & (r < hi) & (c >= q1)
                out[k] -= v[b] @ WT[r[b] - lo, c[b] - q1]
                b = (c >= lo) & (c < hi) & (r >= q1)
                out[k] -= v[b] @ WT[c[b] - lo, r[b] - q1]
                b = (r >= lo) & (r < hi) & (c < q1)
                if b.any():  # (W T W')[r, c] = (W T)[r] . W[c]
                    rr, cc = r[b], c[b]
                    own = np.asarray(self.A11_inv[rr, cc]).ravel()
                    out[k] += v[b] @ (own + _sparse_rows_dot(W, WT, cc, rr - lo))
        return out

    def schur_inverse(self) -> np.ndarray:
        """T = S^-1 from S's Cholesky factor (LAPACK potri), symmetric, cached."""
        if getattr(self, "_schur_inverse", None) is None:
            inverse, info = sla.lapack.dpotri(self.S_chol[0], lower=1)
            if info:
                raise np.linalg.LinAlgError("the Schur complement is singular")
            inverse = np.tril(inverse)  # potri fills one triangle
            inverse += inverse.T
            inverse[np.diag_indices_from(inverse)] /= 2
            self._schur_inverse = inverse
        return self._schur_inverse

    def inverse_diagonal_blocks(self, starts, size) -> np.ndarray:
        """The size x size diagonal blocks of A^-1 starting at ``starts`` (one term's levels)."""
        q1, local = self.q1, np.arange(size)
        index = np.asarray(starts)[:, None] + local  # (levels, size)
        if index.size == 0:
            return np.zeros((0, size, size))
        if index.min() >= q1:
            T = self.schur_inverse()
            return T[(index - q1)[:, :, None], (index - q1)[:, None, :]]
        T = self.schur_inverse()
        rows = np.broadcast_to(index[:, :, None], (index.shape[0], size, size)).ravel()
        cols = np.broadcast_to(index[:, None, :], (index.shape[0], size, size)).ravel()
        own = np.asarray(self.A11_inv[rows, cols]).ravel()
        blocks = (own + _sparse_bilinear(self.W, T, rows, cols)).reshape(-1, size, size)
        return blocks

    def solve(self, B: np.ndarray) -> np.ndarray:
        B = np.asarray(B, dtype=float)
        y1 = self.A11_inv @ B[:self.q1]
        x2 = sla.cho_solve(self.S_chol, B[self.q1:] - self.A21 @ y1)
        return np.concatenate([y1 - self.W @ x2, x2])


def _sparse_rows_dot(W: sp.csr_matrix, D: np.ndarray, rows, dense_rows) -> np.ndarray:
    """W[rows[i]] . D[dense_rows[i]] for each i: sparse rows of W against dense rows."""
    counts = np.diff(W.indptr)[rows]
    pair = np.repeat(np.arange(rows.size), counts)
    offset = np.arange(pair.size) - np.repeat(np.cumsum(counts) - counts, counts)
    at = W.indptr[rows][pair] + offset
    values = W.data[at] * D[dense_rows[pair], W.indices[at]]
    return np.bincount(pair, weights=values, minlength=rows.size)


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


# Largest q - q_1 (columns after the first term) factored by BlockSchurFactor, whose S is
# dense (72 MB at 3,000).  Measured on InstEval (1,142 remain of 4,114): 0.17 s a factor,
# SuperLU on the whole A 0.41 s.
DENSE_SCHUR_LIMIT = 3000
# Below this many columns after the first term, the refit runs LAPACK on one thread:
# measured on two busy cores, InstEval's 1,142 took 0.12-0.18 s a deviance and 0.17-0.22 s
# with its gradient on one thread, 0.19-0.41 s and 0.6-1.0 s on two.
SMALL_DENSE_BLOCK = 2000


def factor_spd(A: sp.csc_matrix, reterms):
    """The factor of A = Lambda' Z'Z Lambda + I: block Schur where what remains after the
    first term is small, sparse LU otherwise."""
    if uses_block_schur(reterms):
        return BlockSchurFactor(A, int(reterms.Gp[1]), reterms.terms[0].p)
    return SparseSPDFactor(A)


def uses_block_schur(reterms) -> bool:
    return 0 < reterms.q - int(reterms.Gp[1]) <= DENSE_SCHUR_LIMIT


@dataclass
class SparseStats:
    """The additive statistics of a several-term model (sums over rows)."""

    ZtZ: sp.csc_matrix
    ZtX: np.ndarray
    Zty: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    n_obs: int
    y_shift: float = 0.0  # y was centred by this (an intercept absorbs it): pwrss's accuracy

    @classmethod
    def from_arrays(cls, X, y, Zt: sp.csc_matrix, intercept: int | None):
        y_shift = float(y.mean()) if intercept is not None else 0.0
        yc = y - y_shift
        Z = Zt.T.tocsr()
        return cls(ZtZ=(Zt @ Z).tocsc(), ZtX=np.asarray(Zt @ X), Zty=np.asarray(Zt @ yc),
                   XtX=X.T @ X, Xty=X.T @ yc, yty=float(yc @ yc), n_obs=X.shape[0],
                   y_shift=y_shift)

    @property
    def p(self) -> int:
        return self.XtX.shape[0]

    def subset(self, columns) -> "SparseStats":
        """The statistics of the fixed-effect columns ``columns`` (y's centring unchanged)."""
        columns = np.asarray(columns, dtype=np.int64)
        return dataclasses.replace(self, ZtX=self.ZtX[:, columns],
                                   XtX=self.XtX[np.ix_(columns, columns)], Xty=self.Xty[columns])


@dataclass
class SparsePLS:
    """The solution of the penalised least squares problem at one theta."""

    theta: np.ndarray
    beta: np.ndarray  # for the centred y (see SparseStats.y_shift)
    u: np.ndarray
    RX: np.ndarray  # upper triangular, RX'RX = S
    logdet_A: float
    pwrss: float
    n_obs: int
    parts: tuple = ()  # (factor, Lambdat, A^-1 Lambda'Z'X) for the gradient

    @property
    def deviance_ml(self) -> float:
        n = self.n_obs
        return self.logdet_A + n * (1 + np.log(2 * np.pi * self.pwrss / n))

    @property
    def deviance_reml(self) -> float:
        dof = self.n_obs - self.RX.shape[0]
        logdet_s = 2 * np.log(np.abs(np.diag(self.RX))).sum()
        return self.logdet_A + logdet_s + dof * (1 + np.log(2 * np.pi * self.pwrss / dof))

    def deviance(self, reml: bool) -> float:
        return self.deviance_reml if reml else self.deviance_ml


def solve_sparse_pls(stats: SparseStats, reterms, theta) -> SparsePLS | None:
    """The PLS solution at theta (None where A or S is not positive definite)."""
    theta = np.asarray(theta, dtype=float)
    Lt = reterms.lambdat(theta)
    A = (Lt @ stats.ZtZ @ Lt.T + sp.identity(reterms.q, format="csc")).tocsc()
    factor = factor_spd(A, reterms)
    if not factor.positive_definite:
        return None
    logdet = factor.logdet
    LtZtX = np.asarray(Lt @ stats.ZtX)
    LtZty = np.asarray(Lt @ stats.Zty)
    sol = factor.solve(np.column_stack([LtZtX, LtZty]))
    sol_x, sol_y = sol[:, :-1], sol[:, -1]
    S = stats.XtX - LtZtX.T @ sol_x
    Xty_s = stats.Xty - LtZtX.T @ sol_y
    try:
        RX = sla.cholesky(S, lower=False) if stats.p else np.zeros((0, 0))
    except sla.LinAlgError:
        return None
    beta = sla.cho_solve((RX, False), Xty_s) if stats.p else np.zeros(0)
    u = sol_y - sol_x @ beta
    pwrss = stats.yty - LtZty @ sol_y - beta @ Xty_s
    if not pwrss > 0:
        return None
    return SparsePLS(theta, beta, u, RX, logdet, float(pwrss), stats.n_obs,
                     (factor, Lt, sol_x))


def deviance_gradient(stats: SparseStats, reterms, sol: SparsePLS, reml: bool):
    """The exact gradient of the profiled deviance at ``sol.theta``, or None where the
    factor cannot give tr(A^-1 M) cheaply (the sparse LU).  With dL_k = dLambda'/dtheta_k,
    G = Z'Z, V = A^-1 Lambda'Z'X, r the residual, S = RX'RX:

        d log|A|  = 2 tr(A^-1 Lambda'G dL_k')
        d pwrss   = -2 u' dL_k Z'r          (envelope: u, beta minimise the PLS)
        d log|S|  = -2 tr(S^-1 V' dL_k Z'X) + 2 tr(S^-1 V' Lambda'G dL_k' V)
        d dev     = d log|A| [+ d log|S|] + dof d pwrss / pwrss
    """
    factor, Lt, V = sol.parts
    if not hasattr(factor, "trace_inverse_times"):
        return None
    G = stats.ZtZ
    derivatives = reterms.lambdat_derivatives
    LtG = (Lt @ G).tocsr()
    d_logdet = 2 * factor.trace_inverse_times([LtG @ dL.T for dL in derivatives])
    b = Lt.T @ sol.u
    Zr = stats.Zty - stats.ZtX @ sol.beta - G @ b
    d_pwrss = np.array([-2 * sol.u @ (dL @ Zr) for dL in derivatives])
    dof = sol.n_obs - (sol.RX.shape[0] if reml else 0)
    gradient = d_logdet + dof * d_pwrss / sol.pwrss
    if reml and stats.p:
        S_inv_Vt = sla.cho_solve((sol.RX, False), V.T)  # S^-1 V'
        for k, dL in enumerate(derivatives):
            dC = dL @ stats.ZtX  # dL_k Z'X
            term = -2 * np.trace(S_inv_Vt @ dC)
            term += 2 * np.trace(S_inv_Vt @ (LtG @ (dL.T @ V)))
            gradient[k] += term
    return gradient


def deviance(stats, reterms, theta, reml: bool) -> float:
    sol = solve_sparse_pls(stats, reterms, theta)
    return np.inf if sol is None else sol.deviance(reml)


def deviance_and_gradient(stats, reterms, theta, reml: bool):
    """(deviance, exact gradient or None) at theta."""
    sol = solve_sparse_pls(stats, reterms, theta)
    if sol is None:
        return np.inf, None
    return sol.deviance(reml), deviance_gradient(stats, reterms, sol, reml)


@dataclass
class SparseOptimum:
    theta: np.ndarray
    solution: SparsePLS
    converged: bool
    messages: list
    message: str
    singular: bool
    n_evaluations: int


def optimise_theta(stats: SparseStats, reterms, reml: bool, control: Control | None = None,
                   theta0=None) -> SparseOptimum:
    """Minimise the profiled deviance over theta within lme4's bounds (L-BFGS-B with
    the exact gradient where the factor gives it, :func:`deviance_gradient`, else
    central differences), then lme4's convergence check and singularity test."""
    from scipy.optimize import minimize
    control = as_control(control)
    count = [0]

    def value(theta):
        count[0] += 1
        return deviance(stats, reterms, theta, reml)

    lower = reterms.lower
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    start = reterms.theta0 if theta0 is None else np.asarray(theta0, dtype=float)
    def value_and_gradient(theta):
        count[0] += 1
        dev, gradient = deviance_and_gradient(stats, reterms, theta, reml)
        return dev, (np.zeros(theta.size) if gradient is None else gradient)

    # with an exact gradient a tighter relative-reduction test costs a few iterations,
    # where the default (1e-10) stops ~1e-6 short in theta
    options = {"ftol": min(control.optimizer_ftol, 1e-14), "gtol": 1e-10,
               "maxiter": control.optimizer_maxiter}
    exact = uses_block_schur(reterms)
    # a dense block of moderate size: LAPACK's thread pool costs more than it shares
    # (potri of 15 x 15 took 40 ms with two busy threads, 40 us with one)
    with one_blas_thread(reterms.q - int(reterms.Gp[1]) < SMALL_DENSE_BLOCK):
        if exact:  # the block Schur factor gives the gradient for about two deviances
            best = minimize(value_and_gradient, start, method="L-BFGS-B", jac=True,
                            bounds=bounds, options=options)
        else:  # central differences: 2 d deviances a gradient
            best = minimize(value, start, method="L-BFGS-B", jac="3-point", bounds=bounds,
                            options=options)
        theta = np.where(lower == 0, np.clip(best.x, 0, None), best.x)
        solution = solve_sparse_pls(stats, reterms, theta)
        singular = bool(np.any(theta[lower == 0] < control.singular_tol))
        messages = [] if singular else check_convergence(value, theta, control)
    if solution is None:
        messages.append("the deviance is not finite at the optimum")
    return SparseOptimum(theta, solution, not messages, messages,
                         f"L-BFGS-B: {best.message}",
                         singular, count[0])


def check_convergence(value, theta, control: Control) -> list:
    """lme4's ``checkConv`` with its finite differences (``deriv12``, delta 1e-4), the
    tests of :func:`lmmscope.convergence.gradient_hessian_problems`."""
    gradient, hessian = _deriv12(value, theta, 1e-4)
    return gradient_hessian_problems(gradient, hessian, control)


def _deriv12(value, x, delta):
    """lme4's ``deriv12``: central-difference gradient and Hessian."""
    d = x.size
    f0 = value(x)
    gradient, hessian = np.zeros(d), np.zeros((d, d))
    plus, minus = np.zeros(d), np.zeros(d)
    for i in range(d):
        e = np.eye(d)[i] * delta
        plus[i], minus[i] = value(x + e), value(x - e)
        gradient[i] = (plus[i] - minus[i]) / (2 * delta)
        hessian[i, i] = (plus[i] - 2 * f0 + minus[i]) / delta ** 2
    for i in range(d):
        for j in range(i):
            ei, ej = np.eye(d)[i] * delta, np.eye(d)[j] * delta
            both = value(x + ei + ej)
            hessian[i, j] = hessian[j, i] = (both - plus[i] - plus[j] + f0) / delta ** 2
    return gradient, hessian
