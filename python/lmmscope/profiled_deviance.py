"""Profiled (RE)ML deviance of a one-grouping-factor LMM on per-cluster cross-products.

This follows the penalised least-squares formulation of lme4 (Bates et al. 2015,
JSS 67(1), section 3): with relative covariance factor Lambda(theta) (lower
triangular q x q), spherical random effects u_i and per-cluster Cholesky factors
L_i = chol(Lambda' Z_i'Z_i Lambda + I_q), the fixed effects come from a Schur
complement of the same cross-products, and

    ML:   log|L|^2 + N (1 + log(2 pi r^2 / N))
    REML: log|L|^2 + log|R_X|^2 + (N - p) (1 + log(2 pi r^2 / (N - p)))

with r^2 the penalised residual sum of squares.  Minimising over theta
(:mod:`lmmscope.theta_optimiser`) reproduces ``lme4::lmer``.  The quasi-likelihood of
the selection step is Lambda = sqrt(a) I.

At a few hundred clusters one solve is mostly per-call overhead, so the solve runs on
a stack of thetas at once (:func:`solve_pls_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.linalg as sla

from .batched import cholesky_with_inverse, transposed
from .cluster_stats import ClusterStats
from .exceptions import RankDeficientError
from .theta_layout import thetas_to_lambdas


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
    LamT = transposed(Lam)
    ZtZLam = stats.ZtZ.reshape(n * q, q) @ Lam  # (T, n q, q): one BLAS call per theta
    A = (transposed(ZtZLam.reshape(T, n, q, q)).reshape(T, n * q, q) @ Lam).reshape(T * n, q * q)
    A[:, ::q + 1] += 1.0  # Lam'Z'Z Lam + I
    L, Linv = cholesky_with_inverse(A.reshape(T * n, q, q))
    Linv = Linv.reshape(T, n, q, q)
    LinvLamT = (Linv.reshape(T, n * q, q) @ LamT).reshape(T, n, q, q)
    RZX = LinvLamT @ stats.ZtX  # (T, n, q, p)
    cu = (LinvLamT @ stats.Zty[:, :, None]).reshape(T, n * q)
    RZX_flat = RZX.reshape(T, n * q, p)
    schur = stats.XtX - transposed(RZX_flat) @ RZX_flat
    cbeta_raw = stats.Xty - (cu[:, None, :] @ RZX_flat)[:, 0]
    if p:
        lower = np.linalg.cholesky((schur + transposed(schur)) / 2)
        RX = transposed(lower)
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
    return (transposed(Linv) @ rhs[..., None])[..., 0]


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


def deviance_at(stats: ClusterStats, theta, reml: bool):
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
    definite after scaling its columns to unit norm), naming them when ``names`` is given.
    The refit's statistics always hold their Gram (the deviance reads it; the backends'
    ``subset_stats`` compute it for a few columns on the rows layout)."""
    if stats.p == 0:
        return
    d = np.sqrt(np.clip(np.diag(stats.XtX), 1e-300, None))
    try:
        sla.cholesky(stats.XtX / d[:, None] / d[None, :], lower=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        label = "" if names is None else f" ({', '.join(map(str, names))})"
        raise RankDeficientError(
            f"the {stats.p} fixed-effect columns{label} are linearly dependent (X'X is "
            "singular): drop aliased columns") from None
