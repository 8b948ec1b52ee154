"""Penalised least squares and profiled (RE)ML for several random-effects terms.

lme4's ``merPredD`` (src/predModule.cpp; Bates et al. 2015, JSS 67(1), section 3) on
cross-products.  At theta, with Lambda from :class:`lmmscope.reterms.ReTerms`,

    A = Lambda' Z'Z Lambda + I                    (factored by a :func:`sparse_system`)
    S = X'X - X'Z Lambda A^-1 Lambda' Z'X = RX' RX
    beta = S^-1 (X'y - X'Z Lambda A^-1 Lambda' Z'y),   u = A^-1 Lambda'(Z'y - Z'X beta)
    pwrss = |y - X beta - Z Lambda u|^2 + |u|^2 = y'y - c_u' A^-1 c_u - beta'(X'y - ...)
    -2 l_ML   = log|A| + n (1 + log(2 pi pwrss / n))
    -2 l_REML = log|A| + log|S| + (n - p)(1 + log(2 pi pwrss / (n - p)))

The statistics (Z'Z sparse, Z'X, Z'y, X'X, X'y, y'y) are sums over rows, so they may
come from chunks; nothing N x N is formed.  What depends only on Z'Z's pattern and the
terms (blocks, orderings, index maps) is worked out once per model by
:func:`sparse_system`; each theta does only numeric work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .control import Control, as_control
from .sparse_factor import sparse_system
from .convergence import gradient_hessian_problems, is_singular
from .theta_optimiser import _forward_difference_hessian, _newton_polish
from .threads import one_blas_thread
from .z_units import several_term_theta_scale


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
    # the symbolic analysis of A(theta) on ZtZ, shared by copies with other X columns
    _system: object = field(default=None, repr=False, compare=False)

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

    def system(self, reterms, control: Control | None = None):
        """:func:`sparse_system` of ZtZ and ``reterms``, worked out on first use (by
        ``control``'s choice of factorisation; later calls reuse it)."""
        if self._system is None or self._system.reterms is not reterms:
            self._system = sparse_system(self.ZtZ, reterms, as_control(control))
        return self._system


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
    factor = stats.system(reterms).factor(theta)
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
    factor does not give d log|A| (the sparse LU).  With dL_k = dLambda'/dtheta_k,
    G = Z'Z, V = A^-1 Lambda'Z'X, r the residual, S = RX'RX:

        d log|A|  = :meth:`SchurFactor.logdet_gradient`
        d pwrss   = -2 u' dL_k Z'r          (envelope: u, beta minimise the PLS)
        d log|S|  = -2 tr(S^-1 V' dL_k Z'X) + 2 tr(S^-1 (dL_k G Lambda V)' V)
        d dev     = d log|A| [+ d log|S|] + dof d pwrss / pwrss
    """
    factor, Lt, V = sol.parts
    if not getattr(factor, "system", None) or not factor.system.exact_gradient:
        return None
    G = stats.ZtZ
    derivatives = reterms.lambdat_derivatives
    d_logdet = factor.logdet_gradient()
    b = Lt.T @ sol.u
    Zr = stats.Zty - stats.ZtX @ sol.beta - G @ b
    d_pwrss = np.array([-2 * sol.u @ (dL @ Zr) for dL in derivatives])
    dof = sol.n_obs - (sol.RX.shape[0] if reml else 0)
    gradient = d_logdet + dof * d_pwrss / sol.pwrss
    if reml and stats.p:
        S_inv_Vt = sla.cho_solve((sol.RX, False), V.T)  # S^-1 V'
        GLV = G @ (Lt.T @ V)  # G Lambda V
        for k, dL in enumerate(derivatives):
            term = -2 * np.sum(S_inv_Vt.T * (dL @ stats.ZtX))
            term += 2 * np.sum(S_inv_Vt.T * (dL @ GLV))
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
    theta_unit_free: np.ndarray  # the optimiser's theta~ = theta * scale (see optimise_theta)


def optimise_theta(stats: SparseStats, reterms, reml: bool, control: Control | None = None,
                   theta0=None) -> SparseOptimum:
    """Minimise the profiled deviance over theta within lme4's bounds, then lme4's
    convergence check and singularity test.

    Where the factor gives the exact gradient (:func:`deviance_gradient`): L-BFGS-B, then
    Newton steps (the one-term optimiser's :func:`~lmmscope.theta_optimiser._newton_polish`,
    coordinates on their bound 0 kept there) to ~1e-10 in theta, and the check on the
    exact gradient with the polish's Hessian (forward differences of the exact gradient;
    the one-term check uses exact derivatives too).  L-BFGS-B alone stops where the
    deviance's relative reduction is tiny, up to ~1e-6 short in theta and wherever its
    path led (sleepstudy's (Days || Subject): gradient 1e-6, sd 2.3e-5 from a tight lmer;
    streamed and in-memory statistics 8e-8 apart); polished, the gradient is ~1e-13 and
    the same statistics give the same theta to rounding whatever their source or start.
    Else (no exact gradient: the sparse LU) L-BFGS-B on central differences and lme4's
    check by differences of the deviance (:func:`check_convergence`).

    As with one term (:func:`lmmscope.theta_optimiser.optimise_theta`) all of this runs
    on the unit-free theta~ of Z's columns scaled to unit root mean square
    (:func:`~lmmscope.z_units.several_term_theta_scale`), so the start, the optimiser's
    stops, the singularity test and the convergence check do not depend on Z's units;
    since Z~ Lambda~ = Z Lambda, the deviance at theta~ is the one at the data-unit
    theta = theta~ / scale, evaluated on the statistics as they are (one symbolic
    analysis, no scaled copy).  ``theta0`` and the returned theta (and the solution's)
    are in Z's units; ``theta_unit_free`` is the optimiser's."""
    from scipy.optimize import minimize
    control = as_control(control)
    count = [0]
    last = {}  # the latest solution: the optimum is usually the optimiser's last point
    # theta (Z's units) = theta~ / scale; every function below takes the unit-free theta~
    scale = several_term_theta_scale(stats.ZtZ, reterms, stats.n_obs)

    def solve(theta):
        theta = np.asarray(theta, dtype=float)
        if "theta" not in last or not np.array_equal(last["theta"], theta):
            count[0] += 1
            last["theta"], last["solution"] = theta.copy(), solve_sparse_pls(stats, reterms,
                                                                                theta / scale)
            last["gradient"] = None
        return last["solution"]

    def value(theta):
        sol = solve(theta)
        return np.inf if sol is None else sol.deviance(reml)

    def value_and_gradient(theta):
        sol = solve(theta)
        if sol is None:
            return np.inf, np.zeros(theta.size)
        if last["gradient"] is None:
            gradient = deviance_gradient(stats, reterms, sol, reml)  # d/d theta
            last["gradient"] = np.zeros(theta.size) if gradient is None else gradient / scale
        return sol.deviance(reml), last["gradient"].copy()  # L-BFGS-B may write to it

    def values_and_gradients(thetas):  # the polish's interface: a stack of thetas
        values, gradients = zip(*(value_and_gradient(t) for t in thetas))
        return np.array(values), np.array(gradients)

    lower = reterms.lower
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    start = starting_theta(stats, reterms, scale) if theta0 is None \
        else np.asarray(theta0, dtype=float) * scale
    system = stats.system(reterms, control)
    exact = system.exact_gradient
    # L-BFGS-B's relative-reduction stop leaves theta ~1e-6 short; the polish (where the
    # gradient is exact) finishes from there: a tighter ftol (1e-14) only cost evaluations
    # (InstEval 18 instead of 16, sleepstudy ML 27 instead of 22, to the same optimum)
    options = {"ftol": control.optimizer_ftol if exact else min(control.optimizer_ftol, 1e-14),
               "gtol": control.optimizer_gtol, "maxiter": control.optimizer_maxiter}
    # a dense block of moderate size: LAPACK's thread pool costs more than it shares
    # (potri of 15 x 15 took 40 ms with two busy threads, 40 us with one)
    with one_blas_thread(system.small_dense):
        if exact:  # the block Schur factor gives the gradient for about two deviances
            best = minimize(value_and_gradient, start, method="L-BFGS-B", jac=True,
                            bounds=bounds, options=options)
        else:  # central differences: 2 d deviances a gradient
            best = minimize(value, start, method="L-BFGS-B", jac="3-point", bounds=bounds,
                            options=options)
        theta = np.where(lower == 0, np.clip(best.x, 0, None), best.x)
        message = f"L-BFGS-B: {best.message}"
        if exact:
            theta, _value, polish, (free, hessian) = _newton_polish(values_and_gradients,
                                                                     theta, lower)
            message += f"; Newton polish: {polish}"
        solution = solve(theta)
        singular = is_singular(theta, lower, control)
        if singular:  # as lme4: no gradient test on the boundary
            messages = []
        elif exact:
            gradient = value_and_gradient(theta)[1]
            if free is None or free.size < theta.size:
                # coordinates near 0 stay out of the polish; the check wants them all
                hessian = _forward_difference_hessian(values_and_gradients, theta, gradient,
                                                      np.arange(theta.size), 1e-6)
            messages = gradient_hessian_problems(gradient, hessian, control)
        else:
            messages = check_convergence(value, theta, control)
    if solution is None:
        messages.append("the deviance is not finite at the optimum")
    return SparseOptimum(theta / scale, solution, not messages, messages, message, singular,
                         count[0], theta)


def starting_theta(stats: SparseStats, reterms, scale) -> np.ndarray:
    """Where the optimiser starts, as a unit-free theta~ (``scale``: of
    :func:`~lmmscope.z_units.several_term_theta_scale`): lme4's theta0 (identity T~_i),
    except for random intercepts (1 | g), each started at the square root of its one-way
    ANOVA variance ratio from the OLS residuals r (each term on its own; crossed terms
    inflate one another, which is harmless for a start):

        SSB = sum_l (Z_l'r)^2 / n_l,   s2_w = (RSS - SSB) / (N - L),
        s2_g = (SSB - (L - 1) s2_w) / (N - sum_l n_l^2 / N),   theta = sqrt(s2_g / s2_w),

    floored at theta = 0.1: at 0 the deviance's derivative is 0 (it is even in theta),
    so a gradient method would not leave the bound.  On InstEval this halves the
    evaluations (13 instead of 27 from theta0 = 1), to the same optimum."""
    from .formula import INTERCEPT
    theta = reterms.theta0.copy()
    if not stats.p:
        return theta
    try:
        beta = sla.solve(stats.XtX, stats.Xty, assume_a="pos")
    except (sla.LinAlgError, ValueError):
        return theta
    rss = stats.yty - beta @ stats.Xty
    residual_sums = stats.Zty - stats.ZtX @ beta
    counts = stats.ZtZ.diagonal()
    N = stats.n_obs
    for i, t in enumerate(reterms.terms):
        if not (t.p == 1 and t.cnms == [INTERCEPT]):
            continue
        n_l = counts[reterms.Gp[i]:reterms.Gp[i + 1]]
        between = float(np.sum(residual_sums[reterms.Gp[i]:reterms.Gp[i + 1]] ** 2 / n_l))
        within = (rss - between) / (N - t.n_levels)
        if not within > 0:
            continue
        ratio = (between - (t.n_levels - 1) * within) / (N - np.sum(n_l ** 2) / N) / within
        entry = reterms.theta_term == i  # the intercept's scale (its RMS over N rows) is 1
        theta[entry] = np.sqrt(max(ratio, 0.01)) * scale[entry]
    return theta


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
