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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.optimize import minimize

from .crossprod import ClusterStats


def theta_size(q: int) -> int:
    return q * (q + 1) // 2


def theta_to_lambda(theta: np.ndarray, q: int) -> np.ndarray:
    """lme4's order: the lower triangle filled column by column."""
    Lam = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))  # column-major order of the lower triangle
    Lam[rows[order], cols[order]] = theta
    return Lam


def theta_lower_bounds(q: int) -> np.ndarray:
    """Diagonal elements of Lambda are non-negative, the others are free (as lme4)."""
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return np.where(rows[order] == cols[order], 0.0, -np.inf)


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


def solve_pls(stats: ClusterStats, theta: np.ndarray) -> PLSSolution:
    q = stats.q
    n_obs = stats.n_obs
    p = stats.p
    Lam = theta_to_lambda(np.asarray(theta, float), q)
    A = np.swapaxes(Lam, 0, 1)[None] @ stats.ZtZ @ Lam[None] + np.eye(q)[None]
    L = np.linalg.cholesky(A)
    LtZtX = Lam.T[None] @ stats.ZtX  # (n, q, p)
    LtZty = stats.Zty @ Lam  # (n, q): rows are Lam' Z_i'y
    RZX = np.linalg.solve(L, LtZtX)
    cu = np.linalg.solve(L, LtZty[:, :, None])[:, :, 0]
    nq = stats.n_groups * q
    RZX_flat = RZX.reshape(nq, p)
    cu_flat = cu.reshape(nq)
    schur = stats.XtX - RZX_flat.T @ RZX_flat
    cbeta_raw = stats.Xty - RZX_flat.T @ cu_flat
    if p:
        RX = sla.cholesky((schur + schur.T) / 2, lower=False)
        cbeta = sla.solve_triangular(RX, cbeta_raw, trans="T")
        beta = sla.solve_triangular(RX, cbeta)
        logdet_RX = float(2 * np.log(np.abs(np.diag(RX))).sum())
    else:
        RX = np.zeros((0, 0))
        cbeta = beta = np.zeros(0)
        logdet_RX = 0.0
    pwrss = float(stats.yty - cu_flat @ cu_flat - cbeta @ cbeta)
    pwrss = max(pwrss, 1e-300)
    # u_i = L_i^{-T} (cu_i - RZX_i beta)
    rhs = cu - RZX @ beta if p else cu
    u = np.linalg.solve(np.swapaxes(L, 1, 2), rhs[:, :, None])[:, :, 0]
    logdet_L = float(2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
    dev_ml = logdet_L + n_obs * (1 + np.log(2 * np.pi * pwrss / n_obs))
    dfr = n_obs - p
    dev_reml = logdet_L + logdet_RX + dfr * (1 + np.log(2 * np.pi * pwrss / dfr))
    return PLSSolution(np.asarray(theta, float), Lam, beta, u, pwrss, logdet_L, logdet_RX, RX,
                       float(dev_ml), float(dev_reml))


def optimise_theta(stats: ClusterStats, reml: bool = True, theta0=None, tol=1e-10):
    """Minimise the profiled deviance over theta (quasi-Newton with bounds, then a polish)."""
    q = stats.q
    lower = theta_lower_bounds(q)
    if theta0 is None:
        theta0 = np.where(lower == 0, 1.0, 0.0)

    def deviance(theta):
        try:
            sol = solve_pls(stats, theta)
        except np.linalg.LinAlgError:
            return np.inf
        return sol.deviance_reml if reml else sol.deviance_ml

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    best = minimize(deviance, theta0, method="L-BFGS-B", bounds=bounds,
                    options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 2000, "eps": 1e-7})
    theta = best.x.copy()
    on_diag = lower == 0
    theta[on_diag] = np.clip(theta[on_diag], 0, None)
    theta = _newton_polish(deviance, theta, lower)
    return theta, float(deviance(theta)), best


def _newton_polish(f, theta, lower, h=1e-5, max_iter=8):
    """Newton steps with central differences on the coordinates off the boundary.

    Finite-difference quasi-Newton stops where rounding noise in its one-sided
    gradients dominates (~1e-6 relative in theta); central differences take theta to
    the optimum to ~1e-9, so the fit does not depend on the order of the rows and
    agrees with lme4 to its own optimiser tolerance.
    """
    theta = theta.copy()
    f0 = f(theta)
    for _ in range(max_iter):
        free = np.flatnonzero((lower != 0) | (theta > 1e3 * h))
        d = free.size
        if d == 0:
            break
        steps = h * np.maximum(1.0, np.abs(theta[free]))
        g = np.zeros(d)
        H = np.zeros((d, d))
        E = np.zeros((d, theta.size))
        E[np.arange(d), free] = steps
        fp = np.array([f(theta + E[i]) for i in range(d)])
        fm = np.array([f(theta - E[i]) for i in range(d)])
        g = (fp - fm) / (2 * steps)
        H[np.diag_indices(d)] = (fp - 2 * f0 + fm) / steps ** 2
        for i in range(d):
            for j in range(i):
                fpp = f(theta + E[i] + E[j])
                fmm = f(theta - E[i] - E[j])
                fpm = f(theta + E[i] - E[j])
                fmp = f(theta - E[i] + E[j])
                H[i, j] = H[j, i] = (fpp - fpm - fmp + fmm) / (4 * steps[i] * steps[j])
        try:
            w = np.linalg.eigvalsh(H)
            if w.min() <= 0:
                break
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if -0.5 * g @ step < 1e-15 * max(1.0, abs(f0)):
            break  # already at the optimum to within rounding
        accepted = False
        for shrink in (1.0, 0.5, 0.25, 0.125):
            cand = theta.copy()
            cand[free] += shrink * step
            cand[lower == 0] = np.clip(cand[lower == 0], 0, None)
            fc = f(cand)
            if fc <= f0 + 1e-12 * abs(f0):
                accepted = True
                break
        if not accepted:
            break
        moved = np.max(np.abs(cand - theta))
        theta, f0 = cand, fc
        if moved < 1e-11:
            break
    return theta
