"""Profiled (RE)ML deviance of a one-grouping-factor LMM on per-cluster cross-products.

This follows the penalised least-squares formulation of lme4 (Bates et al. 2015,
JSS 67(1), section 3): with relative covariance factor Lambda(theta) (lower
triangular q x q), spherical random effects u_i and per-cluster Cholesky factors
L_i = chol(Lambda' Z_i'Z_i Lambda + I_q), the fixed effects come from a Schur
complement of the same cross-products, and

    ML:   log|L|^2 + N (1 + log(2 pi r^2 / N))
    REML: log|L|^2 + log|R_X|^2 + (N - p) (1 + log(2 pi r^2 / (N - p)))

with r^2 the penalised residual sum of squares.  Minimising over theta reproduces
``lme4::lmer``.  The quasi-likelihood of the selection step is Lambda = sqrt(a) I.

At a few hundred clusters one solve is mostly per-call overhead, so the solve, the
gradient and the multi-start run on a stack of thetas at once (:func:`solve_pls_batch`),
and the Newton steps near the optimum and the final convergence check use the exact
Hessian (:func:`observed_hessian`) instead of differencing the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
import scipy.linalg as sla

from .batched import cholesky_with_inverse
from .control import Control, as_control
from .crossprod import ClusterStats
from .decisions import is_singular
from .exceptions import RankDeficientError
from .threads import one_blas_thread


def theta_size(q: int) -> int:
    return q * (q + 1) // 2


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


@dataclass
class PLSSolution:
    """Everything the penalised least-squares solve at one theta gives."""

    theta: np.ndarray
    Lam: np.ndarray
    beta: np.ndarray
    u: np.ndarray  # (n, q) spherical random effects
    pwrss: float  # penalised weighted residual sum of squares r^2
    logdet_L: float  # log|L|^2
    logdet_RX: float  # log|R_X|^2
    RX: np.ndarray  # Cholesky factor (upper) of the fixed-effect Schur complement
    deviance_ml: float
    deviance_reml: float
    Linv: np.ndarray | None = None  # (n, q, q) L_i^{-1}, L_i = chol(Lam'Z_i'Z_i Lam + I)
    LinvLamT: np.ndarray | None = None  # (n, q, q) L_i^{-1} Lam'

    def as_batch(self) -> "PLSBatch":
        """This solution as a batch of one (views, no copies)."""
        values = (getattr(self, f.name) for f in fields(PLSSolution))
        return PLSBatch(*(None if v is None else np.asarray(v)[None] for v in values))


@dataclass
class PLSBatch:
    """:func:`solve_pls` at T thetas at once: each field of :class:`PLSSolution` with a
    leading axis of length T."""

    theta: np.ndarray  # (T, m)
    Lam: np.ndarray  # (T, q, q)
    beta: np.ndarray  # (T, p)
    u: np.ndarray | None  # (T, n, q); None where not asked for
    pwrss: np.ndarray  # (T,)
    logdet_L: np.ndarray
    logdet_RX: np.ndarray
    RX: np.ndarray  # (T, p, p)
    deviance_ml: np.ndarray
    deviance_reml: np.ndarray
    Linv: np.ndarray  # (T, n, q, q)
    LinvLamT: np.ndarray  # (T, n, q, q)
    cu: np.ndarray | None = None  # (T, n, q) L^{-1} Lam'Z'y, for u when not computed
    RZX: np.ndarray | None = None  # (T, n q, p) L^{-1} Lam'Z'X

    def deviance(self, reml: bool) -> np.ndarray:
        return self.deviance_reml if reml else self.deviance_ml

    def row(self, t: int) -> "PLSBatch":
        """The solve at the t-th theta as a batch of one (views)."""
        values = (getattr(self, f.name) for f in fields(PLSBatch))
        return PLSBatch(*(None if v is None else v[t:t + 1] for v in values))

    def __getitem__(self, t: int) -> PLSSolution:
        return PLSSolution(self.theta[t], self.Lam[t], self.beta[t],
                           None if self.u is None else self.u[t],
                           float(self.pwrss[t]), float(self.logdet_L[t]),
                           float(self.logdet_RX[t]), self.RX[t], float(self.deviance_ml[t]),
                           float(self.deviance_reml[t]), self.Linv[t], self.LinvLamT[t])


def _transposed(stack: np.ndarray) -> np.ndarray:
    return np.swapaxes(stack, -1, -2)


def _transposed_copy(stack: np.ndarray) -> np.ndarray:
    """The transpose of each matrix, contiguous: numpy's matmul on a stack of small
    transposed views takes ~3x as long as the copy and the contiguous product together."""
    return np.ascontiguousarray(np.swapaxes(stack, -1, -2))


def _row_dots(rows: np.ndarray) -> np.ndarray:
    """Each row's squared norm, as a BLAS dot (the summation order of a single solve)."""
    return (rows[:, None, :] @ rows[:, :, None])[:, 0, 0]


def solve_pls(stats: ClusterStats, theta: np.ndarray) -> PLSSolution:
    """Penalised least squares at theta (:func:`solve_pls_batch` with one theta)."""
    return solve_pls_batch(stats, np.asarray(theta, float)[None])[0]


def solve_pls_batch(stats: ClusterStats, thetas: np.ndarray, with_u: bool = True) -> PLSBatch:
    """Penalised least squares at each row of ``thetas`` (T, m), as one vectorised pass
    over the T x n_groups per-cluster blocks (a batch costs a fraction of T solves: at
    a few hundred clusters a solve is mostly per-call overhead).

    Each L_i has eigenvalues >= 1, so its explicit inverse is as accurate as a
    triangular solve, and batched q x q products are cheaper than batched solves.
    Raises ``np.linalg.LinAlgError`` when a factorisation fails at any of the thetas.
    ``with_u``: also the random effects u (else None: the optimiser does not need them).
    """
    thetas = np.asarray(thetas, float)
    q, p, n, n_obs = stats.q, stats.p, stats.n_groups, stats.n_obs
    T = thetas.shape[0]
    Lam = thetas_to_lambdas(thetas, q)
    LamT = _transposed(Lam)
    ZtZLam = stats.ZtZ.reshape(n * q, q) @ Lam  # (T, n q, q): one BLAS call per theta
    A = (_transposed(ZtZLam.reshape(T, n, q, q)).reshape(T, n * q, q) @ Lam).reshape(T * n, q * q)
    A[:, ::q + 1] += 1.0  # Lam'Z'Z Lam + I
    L, Linv = cholesky_with_inverse(A.reshape(T * n, q, q))
    Linv = Linv.reshape(T, n, q, q)
    LinvLamT = (Linv.reshape(T, n * q, q) @ LamT).reshape(T, n, q, q)
    RZX = LinvLamT @ stats.ZtX  # (T, n, q, p)
    cu = (LinvLamT @ stats.Zty[:, :, None]).reshape(T, n * q)
    RZX_flat = RZX.reshape(T, n * q, p)
    schur = stats.XtX - _transposed(RZX_flat) @ RZX_flat
    cbeta_raw = stats.Xty - (cu[:, None, :] @ RZX_flat)[:, 0]
    if p:
        lower = np.linalg.cholesky((schur + _transposed(schur)) / 2)
        RX = _transposed(lower)
        cbeta = np.linalg.solve(lower, cbeta_raw[:, :, None])
        beta = np.linalg.solve(RX, cbeta)[:, :, 0]
        cbeta = cbeta[:, :, 0]
        logdet_RX = 2 * np.log(np.abs(np.diagonal(lower, axis1=1, axis2=2))).sum(axis=1)
    else:
        RX = np.zeros((T, 0, 0))
        cbeta = beta = np.zeros((T, 0))
        logdet_RX = np.zeros(T)
    pwrss = stats.yty - _row_dots(cu) - _row_dots(cbeta)
    pwrss = np.maximum(pwrss, 1e-300)
    u = _spherical_effects(Linv, cu.reshape(T, n, q), RZX_flat, beta) if with_u else None
    logdet_L = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).reshape(T, n * q).sum(axis=1)
    dev_ml = logdet_L + n_obs * (1 + np.log(2 * np.pi * pwrss / n_obs))
    dfr = n_obs - p
    dev_reml = logdet_L + logdet_RX + dfr * (1 + np.log(2 * np.pi * pwrss / dfr))
    return PLSBatch(thetas, Lam, beta, u, pwrss, logdet_L, logdet_RX, RX, dev_ml, dev_reml,
                    Linv, LinvLamT, cu.reshape(T, n, q), RZX_flat)


def _spherical_effects(Linv, cu, RZX_flat, beta):
    """u_i = L_i^{-T} (cu_i - RZX_i beta), (T, n, q)."""
    rhs = cu - (RZX_flat @ beta[:, :, None]).reshape(cu.shape) if beta.shape[1] else cu
    return (_transposed(Linv) @ rhs[..., None])[..., 0]


def solution_in_units(sol: PLSBatch, scale: np.ndarray, theta: np.ndarray) -> PLSSolution:
    """The solve at the single theta of ``sol`` (on Z's columns divided by ``scale``) as
    the solve on Z itself at ``theta`` (Lambda_Z = D^{-1} Lambda): beta, u, r^2, the
    factors and deviances are invariant; Lambda and L^{-1} Lambda' change by D^{-1}."""
    u = sol.u if sol.u is not None else _spherical_effects(sol.Linv, sol.cu, sol.RZX, sol.beta)
    Lam = sol.Lam[0] / scale[:, None]
    return PLSSolution(np.asarray(theta, float), Lam, sol.beta[0], u[0], float(sol.pwrss[0]),
                       float(sol.logdet_L[0]), float(sol.logdet_RX[0]), sol.RX[0],
                       float(sol.deviance_ml[0]), float(sol.deviance_reml[0]), sol.Linv[0],
                       sol.LinvLamT[0] / scale[None, None, :])


def deviance_slope(stats: ClusterStats, sol: PLSSolution, reml: bool):
    """(dev_T, Z'WZ): dev_T = d deviance / dT, so the profiled deviance changes by
    tr(dev_T dT) when T = Lam Lam' does (:func:`deviance_slopes` at one theta)."""
    dev_T, ZWZ = deviance_slopes(stats, sol.as_batch(), reml)
    return dev_T[0], ZWZ[0]


def deviance_slopes(stats: ClusterStats, batch: PLSBatch, reml: bool):
    """(dev_T, Z'WZ) at each theta of ``batch``: (T, q, q) and (T, n, q, q).

    With W_i = (I + Z_i T Z_i')^{-1}, dev_T = sum_i Z_i'W_i Z_i - (dof / r^2) sum_i v_i v_i'
    (v_i = Z_i'W_i r_i, dof = N for ML, N - p for REML), and for REML minus
    sum_i Z_i'W_i X_i (X'WX)^{-1} X_i'W_i Z_i.  beta and sigma^2 are profiled out, so
    their own derivatives vanish.  Every W_i product comes from the cross-products by
    Woodbury: Z'W = Z' - Z'Z Lam M^{-1} Lam'Z' with Lam M^{-1} Lam' = (L^{-1}Lam')'(L^{-1}Lam').
    """
    dev_T, ZWZ, _v, _ZWX = _slope_parts(stats, batch, reml, reml)
    return dev_T, ZWZ


def _slope_parts(stats: ClusterStats, batch: PLSBatch, reml: bool, with_zwx: bool):
    """(dev_T, Z'WZ, v = Z'W r per cluster, Z'WX per cluster or None)."""
    q, p, n_obs = stats.q, stats.p, stats.n_obs
    T, n = batch.LinvLamT.shape[:2]
    K = stats.ZtZ @ (_transposed_copy(batch.LinvLamT) @ batch.LinvLamT)  # Z'W = (I - K) Z'
    ZWZ = stats.ZtZ - K @ stats.ZtZ
    Ztr = np.broadcast_to(stats.Zty, (T, n, q))  # Z'r, r = y - X beta
    if p:
        Ztr = Ztr - (stats.ZtX @ batch.beta.T).transpose(2, 0, 1)
    v = Ztr - (K @ Ztr[..., None])[..., 0]
    dof = n_obs - p if reml else n_obs
    dev_T = ZWZ.sum(axis=1) - (dof / batch.pwrss)[:, None, None] * (_transposed(v) @ v)
    ZWX = stats.ZtX - K @ stats.ZtX if ((with_zwx or reml) and p) else None  # (T, n, q, p)
    if reml and p:
        # sum_i G_i G_i' = sum_i Z_i'W_iX_i (X'WX)^{-1} X_i'W_iZ_i, G_i = Z_i'W_iX_i R_X^{-1}
        G = (ZWX.reshape(T, n * q, p) @ np.linalg.inv(batch.RX)).reshape(T, n, q, p)
        G = np.ascontiguousarray(G.transpose(0, 2, 1, 3)).reshape(T, q, n * p)
        dev_T = dev_T - G @ _transposed(G)
    return (dev_T + _transposed(dev_T)) / 2, ZWZ, v, ZWX


def _trace_pairs(X, Y, D):
    """[sum_i tr(X_i D_k Y_i D_l)]_kl for stacks X, Y (n, q, q) and symmetric D (m, q*q),
    as one (q^2 x q^2) product: sum X_i[d,a] D_k[a,b] Y_i[b,c] D_l[c,d]."""
    q = X.shape[-1]
    P = (X.reshape(-1, q * q).T @ Y.reshape(-1, q * q)).reshape(q, q, q, q)  # [d,a,b,c]
    return D @ P.transpose(1, 2, 3, 0).reshape(q * q, q * q) @ D.T


def _lambda_directions(Lam):
    """dT / dtheta_k = E_k Lam' + Lam E_k' for T = Lam Lam', flattened: (m, q*q)."""
    q = Lam.shape[0]
    E, _ = _theta_units(q)
    return (E @ Lam.T + Lam @ _transposed(E)).reshape(-1, q * q)


def observed_hessian(stats: ClusterStats, sol: PLSBatch, reml: bool, parts=None) -> np.ndarray:
    """The exact Hessian of the profiled (RE)ML deviance in theta, at the single theta of
    ``sol`` (a batch of one); tested against differences of :func:`deviance_gradient`.

    In directions E, F of T (W = V^{-1}, A_i = Z_i'W_iZ_i, B_i = Z_i'W_iX_i, v_i = Z_i'W_i r_i,
    S = X'WX, r^2 the profiled pwrss, beta's change by the envelope theorem):
      d2 log|V|  = -sum_i tr(A_i E A_i F)
      dr^2       = -sum_i v_i'E v_i
      d2 r^2     = 2 sum_i v_i'E A_i F v_i - 2 g_E' S^{-1} g_F,  g_E = sum_i B_i'E v_i
      deviance  += dof (d2 r^2 / r^2 - dr^2_E dr^2_F / r^4)
      REML: d2 log|S| = -tr(S^{-1} dS_E S^{-1} dS_F) + sum_i tr(G_i E A_i F) + tr(G_i F A_i E),
            dS_E = -sum_i B_i'E B_i, G_i = B_i S^{-1} B_i'.
    T = Lam Lam' adds 2 dev_T[r_k, r_l] where theta_k, theta_l share a column of Lam.
    ``parts``: :func:`_slope_parts` at this theta (with Z'WX), where already computed.
    """
    q, p = stats.q, stats.p
    dof = stats.n_obs - p if reml else stats.n_obs
    dev_T, ZWZ, v, ZWX = parts or _slope_parts(stats, sol, reml, with_zwx=True)
    dev_T, A, v, r2 = dev_T[0], ZWZ[0], v[0], float(sol.pwrss[0])
    D = _lambda_directions(sol.Lam[0])
    n = A.shape[0]
    vv = (v[:, :, None] * v[:, None, :]).reshape(n, q * q)  # [i, (a,d)]
    Q = (vv.T @ A.reshape(n, q * q)).reshape(q, q, q, q)  # sum_i v_a A_bc v_d: [a,d,b,c]
    d2r2 = 2 * D @ Q.transpose(0, 2, 3, 1).reshape(q * q, q * q) @ D.T
    dr2 = -D @ (v.T @ v).reshape(q * q)
    H = -_trace_pairs(A, A, D)
    if p:
        B = ZWX[0]  # (n, q, p)
        RX = sol.RX[0]
        Y = (B.transpose(1, 2, 0).reshape(q * p, n) @ v).reshape(q, p, q)  # sum_i B_ap v_b
        g = D @ Y.transpose(0, 2, 1).reshape(q * q, p)  # (m, p)
        h = np.linalg.solve(RX.T, g.T)
        d2r2 = d2r2 - 2 * h.T @ h
    H = H + dof * (d2r2 / r2 - np.outer(dr2, dr2) / r2 ** 2)
    if reml and p:
        H = H + _reml_hessian_term(A, B, RX, D)
    rows, _cols = theta_positions(q)
    _E, same_column = _theta_units(q)
    H = H + 2 * same_column * dev_T[rows[:, None], rows[None, :]]
    return (H + H.T) / 2


def _reml_hessian_term(A, B, RX, D):
    """Second derivative of log|X'WX| in the directions D (see :func:`observed_hessian`)."""
    n, q, p = B.shape
    BB = (B.reshape(n, q * p).T @ B.reshape(n, q * p)).reshape(q, p, q, p)
    dS = -(D @ BB.transpose(0, 2, 1, 3).reshape(q * q, p * p)).reshape(-1, p, p)
    RXinv = np.linalg.inv(RX)
    Sinv_dS = (RXinv @ RXinv.T) @ dS  # (m, p, p)
    first = -np.einsum("kab,lba->kl", Sinv_dS, Sinv_dS)
    BR = B @ RXinv  # G_i = (B_i R^-1)(B_i R^-1)'
    GA = _trace_pairs(BR @ _transposed_copy(BR), A, D)
    return first + GA + GA.T


def deviance_gradient(stats: ClusterStats, sol: PLSSolution, reml: bool) -> np.ndarray:
    """Analytic gradient of the profiled deviance with respect to theta: d/dLam = 2 dev_T Lam."""
    return deviance_gradients(stats, sol.as_batch(), reml)[0]


def deviance_gradients(stats: ClusterStats, batch: PLSBatch, reml: bool) -> np.ndarray:
    """:func:`deviance_gradient` at each theta of ``batch``: (T, m)."""
    dev_T, _ = deviance_slopes(stats, batch, reml)
    return (2 * dev_T @ batch.Lam)[(slice(None),) + theta_positions(stats.q)]


@lru_cache(maxsize=None)
def _theta_units(q: int):
    """(E, same_column): E[k] the q x q unit matrix of theta_k's position in Lambda;
    same_column[k, l] whether theta_k and theta_l sit in one column of Lambda."""
    rows, cols = theta_positions(q)
    E = np.zeros((rows.size, q, q))
    E[np.arange(rows.size), rows, cols] = 1.0
    same_column = cols[:, None] == cols[None, :]
    E.flags.writeable = same_column.flags.writeable = False
    return E, same_column


def expected_hessian(Lam, dev_T, ZWZ, dof):
    """Hessian of the profiled deviance in theta, with the expected information in T;
    and its Gauss-Newton part alone (positive semi-definite, for far from the optimum).

    In T the expected second derivative of -2 log L with sigma^2 profiled is
    I(E1, E2) = sum_i tr(A_i E1 A_i E2) - sum_i tr(A_i E1) sum_i tr(A_i E2) / dof,
    A_i = Z_i'W_i Z_i.  T = Lam Lam' adds tr(dev_T d2T), exact.  At the optimum it is
    within a few % of the observed Hessian (measured: eigenvalues of H_exp^-1 H_obs
    in 0.94..1.03 from 18 to 10,000 clusters), so Newton steps with it contract the
    error ~20-fold each.
    """
    q = Lam.shape[0]
    rows, _cols = theta_positions(q)
    _E, same_column = _theta_units(q)
    D = _lambda_directions(Lam)
    t = D @ ZWZ.reshape(-1, q * q).sum(axis=0)  # sum_i tr(A_i D_k)
    info = _trace_pairs(ZWZ, ZWZ, D) - np.outer(t, t) / dof
    second = 2 * same_column * dev_T[rows[:, None], rows[None, :]]
    H = info + second
    return (H + H.T) / 2, (info + info.T) / 2


# Largest number of doubles in one batched evaluation's (T, n, q, max(p, q)) blocks.
# Batches pay where one theta's blocks are small (numpy's per-call overhead); beyond
# ~1 MB per block memory traffic dominates and one theta at a time is as fast (measured,
# the 8 starts at 10^4 clusters, q = 4: 37 ms in one batch, 21 ms one by one).
_BATCH_DOUBLES = 2**17


def _evaluate(stats: ClusterStats, thetas, reml: bool, gradients: bool = True,
              fill: float = np.nan, solutions: list | None = None):
    """(values (T,), gradients (T, m)) of the profiled deviance at each row of ``thetas``,
    in batches; inf (and ``fill`` for the gradient) where it is not defined.
    ``solutions``: a list of length T that receives each row's PLS solve (a batch of
    one) where it is defined.

    Only a factorisation failing at a theta (a domain problem: extreme theta) gives
    inf; linearly dependent fixed effects are refused before optimising
    (:func:`check_fixed_rank`), so they never hide here.
    """
    thetas = np.atleast_2d(np.asarray(thetas, float))
    values = np.full(thetas.shape[0], np.inf)
    grads = np.full(thetas.shape, fill) if gradients else None
    finite = np.flatnonzero(np.all(np.isfinite(thetas), axis=1))
    per_theta = stats.n_groups * stats.q * max(stats.p, stats.q, 1)
    size = max(1, _BATCH_DOUBLES // per_theta)
    for start in range(0, finite.size, size):
        rows = finite[start:start + size]
        try:
            batch = solve_pls_batch(stats, thetas[rows], with_u=False)
        except np.linalg.LinAlgError:
            if rows.size > 1:  # find which thetas fail: one at a time
                for r in rows:
                    one = None if solutions is None else [None]
                    v, g = _evaluate(stats, thetas[r:r + 1], reml, gradients, fill, one)
                    values[r] = v[0]
                    if gradients:
                        grads[r] = g[0]
                    if solutions is not None:
                        solutions[r] = one[0]
            continue
        value = batch.deviance(reml)
        ok = np.isfinite(value)
        values[rows[ok]] = value[ok]
        if solutions is not None:
            for i in np.flatnonzero(ok):
                solutions[rows[i]] = batch.row(i)
        if gradients:
            grads[rows[ok]] = deviance_gradients(stats, batch, reml)[ok]
    return values, grads


def _deviance_at(stats: ClusterStats, theta, reml: bool):
    """(PLS solution as a batch of one, profiled deviance) at theta; (None, inf) where
    it is not defined (see :func:`_evaluate`)."""
    theta = np.asarray(theta, float)
    if not np.all(np.isfinite(theta)):
        return None, np.inf
    try:
        batch = solve_pls_batch(stats, theta[None], with_u=False)
    except np.linalg.LinAlgError:
        return None, np.inf
    value = float(batch.deviance(reml)[0])
    return (batch, value) if np.isfinite(value) else (None, np.inf)


def check_fixed_rank(stats: ClusterStats, names=None) -> None:
    """Refuse fixed-effect columns that are linearly dependent (X'X not positive
    definite after scaling its columns to unit norm), naming them when ``names`` is given."""
    if stats.XtX is None or stats.p == 0:
        return
    d = np.sqrt(np.clip(np.diag(stats.XtX), 1e-300, None))
    try:
        sla.cholesky(stats.XtX / d[:, None] / d[None, :], lower=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        label = "" if names is None else f" ({', '.join(map(str, names))})"
        raise RankDeficientError(
            f"the {stats.p} fixed-effect columns{label} are linearly dependent (X'X is "
            "singular): drop aliased columns") from None


def z_column_scale(stats: ClusterStats) -> np.ndarray:
    """Root mean square of each column of Z: the unit in which theta is optimised."""
    ms = np.einsum("njj->j", stats.ZtZ) / max(stats.n_obs, 1)
    scale = np.sqrt(np.clip(ms, 0, None))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


def rescale_z(stats: ClusterStats, scale: np.ndarray, inplace: bool = False) -> ClusterStats:
    """The statistics of Z D^{-1}, D = diag(scale) (theta then has unit-free entries).
    ``inplace``: overwrite ``stats``' arrays (Z'X is as large as X / mean cluster size
    times q: a fresh copy costs more to fault in than the products themselves)."""
    inv = 1.0 / scale
    if inplace:
        stats.ZtZ *= inv[None, :, None] * inv[None, None, :]
        stats.ZtX *= inv[None, :, None]
        stats.Zty *= inv[None, :]
        return stats
    return replace(stats, ZtZ=stats.ZtZ * inv[None, :, None] * inv[None, None, :],
                   ZtX=stats.ZtX * inv[None, :, None], Zty=stats.Zty * inv[None, :])


def theta_rescaled(theta, scale: np.ndarray, to_scaled: bool) -> np.ndarray:
    """theta for Z D^{-1} from theta for Z (``to_scaled``) or back: Lambda_Z = D^{-1} Lambda."""
    q = scale.size
    Lam = theta_to_lambda(np.asarray(theta, float), q)
    Lam = Lam * scale[:, None] if to_scaled else Lam / scale[:, None]
    return Lam[theta_positions(q)]


# Fisher scoring switches to Newton steps with the observed Hessian once a step moved
# theta by less than this (relative): close to the optimum those converge quadratically,
# where the expected information contracts the error only ~20-fold per step.
NEWTON_SWITCH = 1e-2


def _fisher_scoring(stats: ClusterStats, reml: bool, theta, max_iter=30, solution=None):
    """Newton steps with :func:`expected_hessian` from ``theta``, with
    :func:`observed_hessian` once close to the optimum (where it is positive definite),
    until the step is below 1e-10 (relative).

    Returns (theta, deviance, iterations, at_theta) with ``at_theta`` what the final
    check needs at theta (see :func:`check_convergence`), or None where the fast path
    does not apply (a Hessian not positive definite, no descent, a diagonal entry of
    Lambda near the boundary, or no convergence): the caller then falls back.
    ``solution``: the PLS solve at ``theta`` (a batch of one), if at hand.
    """
    rows, cols = theta_positions(stats.q)
    on_diag = rows == cols
    theta = np.asarray(theta, float).copy()
    if solution is None:
        sol, f = _deviance_at(stats, theta, reml)
    else:
        sol, f = solution, float(solution.deviance(reml)[0])
    moved = np.inf
    for it in range(1, max_iter + 1):
        size = max(1.0, np.abs(theta).max())
        if sol is None or np.any(theta[on_diag] < 1e-4 * size):
            return None  # near the boundary: the bounded optimiser handles it
        near = moved < NEWTON_SWITCH * size
        parts = _slope_parts(stats, sol, reml, with_zwx=near)  # Z'WX: for the observed H
        g = (2 * parts[0][0] @ sol.Lam[0])[rows, cols]
        H, step = _newton_step(_scoring_hessians(stats, sol, reml, parts, near), g)
        if step is None:
            return None
        if np.max(np.abs(step)) < 1e-10 * size:
            return theta, f, it, (sol, parts, H) if near else (sol, None, None)
        for shrink in (1.0, 0.5, 0.25, 0.125, 0.0625):
            cand = theta + shrink * step
            # The deviance is even in each column of Lambda: keep its diagonal >= 0.
            for j in np.flatnonzero(on_diag & (cand < 0)):
                cand[cols == cols[j]] *= -1
            sol_c, f_c = _deviance_at(stats, cand, reml)
            if f_c <= f + 1e-12 * abs(f):
                break
        else:
            return None
        moved = np.max(np.abs(cand - theta))
        theta, sol, f = cand, sol_c, f_c
    return None


def _scoring_hessians(stats, sol, reml, parts, near):
    """The Hessians to try, best first: observed (when ``near``), expected, Gauss-Newton."""
    dof = stats.n_obs - stats.p if reml else stats.n_obs
    if near:
        yield observed_hessian(stats, sol, reml, parts)
    yield from expected_hessian(sol.Lam[0], parts[0][0], parts[1][0], dof)


def _newton_step(hessians, g):
    """(H, -H^{-1} g) with the first positive definite H of ``hessians``; (None, None)
    if none is."""
    for H in hessians:
        try:
            lower = np.linalg.cholesky(H)  # numpy's: scipy's wrappers cost 4x the solve here
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(lower)):
            return H, -np.linalg.solve(lower.T, np.linalg.solve(lower, g))
    return None, None


def optimise_theta(stats: ClusterStats, reml: bool = True, theta0=None,
                   control: Control | None = None, check: bool = True):
    """Minimise the profiled deviance over theta.

    Newton steps with the expected information, then the observed one near the optimum
    (:func:`_fisher_scoring`); where that does not apply (optimum at or near the
    boundary, indefinite Hessian), L-BFGS-B with the analytic gradient, then Newton
    steps with a Hessian from differences of that gradient.  The optimisation runs on Z's columns scaled to unit root mean
    square, so its start (identity) and its boundary tests do not depend on Z's units;
    theta is mapped back at the end.  ``check``: run lme4's final convergence check
    (:func:`check_convergence`).

    Returns (theta, deviance, info): ``info`` is a scipy OptimizeResult with
    ``success`` and ``message`` of the optimiser, ``converged`` (the optimiser
    succeeded and the final check passed), ``convergence_messages`` (list of str),
    ``singular`` (a bounded entry of the unit-free theta below ``singular_tol``) and
    ``theta_unit_free``.
    """
    control = as_control(control)
    check_fixed_rank(stats)
    scale = z_column_scale(stats)
    scaled = rescale_z(stats, scale)
    start = None if theta0 is None else theta_rescaled(theta0, scale, to_scaled=True)
    with one_blas_thread():  # every evaluation is a few dozen small batched products
        theta, value, info = _optimise_theta(scaled, reml, start, control)
        messages = list(info.get("convergence_messages", []))
        singular = is_singular(theta, theta_lower_bounds(stats.q), control)
        at_theta = info.pop("at_theta", None)  # Fisher scoring's last solve at theta
        if check:
            messages += check_convergence(scaled, theta, reml, control, singular, at_theta)
    info["convergence_messages"] = messages
    info["converged"] = bool(info.success) and not messages
    info["singular"] = singular
    info["theta_unit_free"] = theta
    theta_z = theta_rescaled(theta, scale, to_scaled=False)
    if at_theta is not None:  # the fitted model's solve, for fit_theta to hand on
        info["pls_solution"] = solution_in_units(at_theta[0], scale, theta_z)
    return theta_z, value, info


# Multiples of the identity start tried before optimising: the profiled deviance can
# have a second, worse local minimum (e.g. a random intercept without a fixed one, where
# the intercept variance must absorb the mean), which a single start may fall into.
START_SCALES = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _best_scaled_start(stats, reml, identity):
    """(the multiple of the (unit-free) identity start with the lowest deviance, the PLS
    solve there as a batch of one or None)."""
    starts = np.multiply.outer(START_SCALES, identity)
    solutions = [None] * len(starts)
    values, _ = _evaluate(stats, starts, reml, gradients=False, solutions=solutions)
    best = int(np.argmin(values))
    return starts[best], solutions[best]


def _optimise_theta(stats, reml, theta0, control):
    from scipy.optimize import OptimizeResult  # lazily: a heavy import
    q = stats.q
    lower = theta_lower_bounds(q)
    solution = None
    if theta0 is None:
        theta0, solution = _best_scaled_start(stats, reml, np.where(lower == 0, 1.0, 0.0))
    scored = _fisher_scoring(stats, reml, theta0, solution=solution)
    if scored is not None:
        theta, value, iterations, at_theta = scored
        return theta, value, OptimizeResult(x=theta, fun=value, nit=iterations, success=True,
                                            message="Fisher scoring converged",
                                            at_theta=at_theta)

    def values_and_gradients(thetas):
        return _evaluate(stats, thetas, reml, fill=0.0)

    def value_and_gradient(theta):
        values, grads = values_and_gradients(theta[None])
        return values[0], grads[0]

    best, theta = _bounded_search(value_and_gradient, np.asarray(theta0, float), lower, control)
    theta, value, polish = _newton_polish(values_and_gradients, theta, lower)
    # status 1: iteration or evaluation limit, a failure (lme4 warns on bobyqa's code 1
    # too); status 2 (e.g. no progress in the line search at ftol ~1e-10) is common at
    # an optimum: the final gradient check judges it.
    limit_reached = best.status == 1
    notes = [f"L-BFGS-B did not converge: {best.message}"] if limit_reached else []
    if not np.isfinite(value):
        notes.append("the deviance is not finite at the optimiser's last point")
    result = OptimizeResult(x=theta, fun=float(value), nit=best.nit, success=not limit_reached,
                            message=f"L-BFGS-B: {best.message}; Newton polish: {polish}",
                            convergence_messages=notes)
    return theta, float(value), result


def _bounded_search(value_and_gradient, start, lower, control):
    """L-BFGS-B, restarted off a false boundary (see :func:`_leave_false_boundary`)."""
    from scipy.optimize import minimize  # lazily: a heavy import
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    on_diag = lower == 0
    for _restart in range(4):
        best = minimize(value_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
                        options={"ftol": control.optimizer_ftol, "gtol": control.optimizer_gtol,
                                 "maxiter": control.optimizer_maxiter})
        theta = best.x.copy()
        theta[on_diag] = np.clip(theta[on_diag], 0, None)
        start = _leave_false_boundary(lambda t: value_and_gradient(t)[0], theta, on_diag)
        if start is None:
            break
    return best, theta


def check_convergence(stats: ClusterStats, theta, reml: bool, control: Control,
                      singular: bool, at_theta=None) -> list:
    """lme4's ``checkConv`` at the optimum; returns the problems found (empty: passed).

    As lme4: a singular fit skips the gradient test; otherwise the gradient scaled by
    the Cholesky factor of the Hessian, min(|scaled|, |raw|) elementwise, must stay
    below ``check_conv_grad_tol`` (2e-3), and the Hessian must have no eigenvalue below
    ``-check_conv_hess_tol``.  The derivatives are in the unit-free parametrisation;
    the Hessian is the exact one (:func:`observed_hessian`), where lme4 differences
    its gradient.  ``at_theta``: (PLS solve as a batch of one, :func:`_slope_parts` with
    Z'WX, observed Hessian or None) at ``theta``, where the optimiser has them.
    """
    if singular:
        return []
    solution, parts, H = at_theta or (_deviance_at(stats, theta, reml)[0], None, None)
    if solution is None:
        return ["the deviance is not finite at the optimum"]
    parts = parts or _slope_parts(stats, solution, reml, with_zwx=True)
    gradient = (2 * parts[0][0] @ solution.Lam[0])[theta_positions(stats.q)]
    H = observed_hessian(stats, solution, reml, parts) if H is None else H
    return gradient_hessian_problems(gradient, H, control)


def gradient_hessian_problems(gradient, H, control: Control) -> list:
    """lme4's ``checkConv`` tests on a gradient and Hessian at the optimum: the gradient
    scaled by the Cholesky factor of H, min(|scaled|, |raw|), below
    ``check_conv_grad_tol``; no eigenvalue of H below ``-check_conv_hess_tol``."""
    problems = []
    if not np.all(np.isfinite(gradient)) or not np.all(np.isfinite(H)):
        return ["the gradient or Hessian at the optimum contains non-finite values"]
    try:
        lower = np.linalg.cholesky(H)
        if not np.all(np.isfinite(lower)):
            raise np.linalg.LinAlgError("Hessian not positive definite")
        scaled = np.linalg.solve(lower, gradient)  # R^-T g with R = lower' = lme4's chol(H)
        worst = np.minimum(np.abs(scaled), np.abs(gradient))
        if worst.max() > control.check_conv_grad_tol:
            problems.append(f"model failed to converge with max|grad| = {worst.max():.3g} "
                            f"(tol = {control.check_conv_grad_tol:g}, component "
                            f"{int(np.argmax(worst)) + 1})")
    except (np.linalg.LinAlgError, sla.LinAlgError):
        problems.append("unable to evaluate scaled gradient (Hessian not positive definite)")
    negative = int(np.sum(np.linalg.eigvalsh(H) < -control.check_conv_hess_tol))
    if negative:
        problems.append(f"model failed to converge: degenerate Hessian with {negative} "
                        "negative eigenvalue(s)")
    return problems


def _leave_false_boundary(value, theta, on_diag):
    """A point below ``theta`` off the boundary, or None.

    The deviance is even in each column of Lambda, so where a diagonal entry is 0 its
    gradient is exactly 0 even when the boundary is a maximum along it; a gradient
    method then stops there.  Probe small positive values instead.
    """
    f0 = value(theta)
    for k in np.flatnonzero(on_diag & (theta <= 1e-8)):
        for step in (1e-2, 1e-4):
            cand = theta.copy()
            cand[k] = step * max(1.0, np.abs(theta).max())
            if value(cand) < f0 - 1e-10 * max(1.0, abs(f0)):
                return cand
    return None


def _newton_polish(values_and_gradients, theta, lower, h=1e-6, max_iter=8):
    """Newton steps on the coordinates off the boundary, so the optimum is reached to
    ~1e-9 in theta whatever the order of the rows, and agrees with lme4 to its own
    optimiser tolerance.  Returns (theta, deviance, status); a polish that gives up
    leaves the L-BFGS-B point, which the final convergence check then judges.

    ``values_and_gradients(thetas)``: deviances and gradients at each row of ``thetas``.
    The Hessian comes from forward differences of the analytic gradient, once, and
    is reused for every step (a chord iteration): near the optimum its error only
    slows convergence from quadratic to a rate of ~1e-4 per step.
    """
    theta = theta.copy()
    f0, g0 = (out[0] for out in values_and_gradients(theta[None]))
    H, free = None, None
    status = f"stopped after {max_iter} steps"
    for _ in range(max_iter):
        now_free = np.flatnonzero((lower != 0) | (theta > 1e3 * h))
        if now_free.size == 0:
            status = "every parameter on the boundary"
            break
        if H is None or not np.array_equal(now_free, free):
            free = now_free
            H = _forward_difference_hessian(values_and_gradients, theta, g0, free, h)
            try:
                if not np.all(np.isfinite(H)) or np.linalg.eigvalsh(H).min() <= 0:
                    status = "gave up: Hessian not positive definite"
                    break
            except np.linalg.LinAlgError:
                status = "gave up: Hessian not positive definite"
                break
        step = -np.linalg.solve(H, g0[free])
        for shrink in (1.0, 0.5, 0.25, 0.125):
            cand = theta.copy()
            cand[free] += shrink * step
            cand[lower == 0] = np.clip(cand[lower == 0], 0, None)
            fc, gc = (out[0] for out in values_and_gradients(cand[None]))
            if fc <= f0 + 1e-12 * abs(f0):
                break
        else:
            status = "gave up: no descent along the Newton step"
            break
        moved = np.max(np.abs(cand - theta))
        theta, f0, g0 = cand, fc, gc
        if moved < 1e-10 * max(1.0, np.abs(theta).max()):
            status = "converged"
            break
    return theta, f0, status


def _forward_difference_hessian(values_and_gradients, theta, gradient, free, h):
    """The symmetrised Hessian on the coordinates ``free`` from forward differences of
    the gradient (steps h max(1, |theta_j|)), its m shifted gradients in one batch."""
    steps = h * np.maximum(1.0, np.abs(theta[free]))
    shifted = np.repeat(theta[None], free.size, axis=0)
    shifted[np.arange(free.size), free] += steps
    H = ((values_and_gradients(shifted)[1][:, free] - gradient[free]) / steps[:, None]).T
    return (H + H.T) / 2
