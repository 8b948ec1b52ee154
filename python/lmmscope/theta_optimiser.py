"""Minimising the profiled (RE)ML deviance over theta (:func:`optimise_theta`).

Fisher scoring (Newton steps with the expected Hessian, then the exact observed one
near the optimum) from the best of a few multiples of the identity; where that does
not apply (optimum at or near the boundary, indefinite Hessian), L-BFGS-B with the
analytic gradient and a Newton polish.  Deviances and gradients are evaluated on
stacks of thetas at once (at a few hundred clusters one solve is mostly per-call
overhead).  lme4's final convergence check is :mod:`lmmscope.convergence`.
"""

from __future__ import annotations

import numpy as np

from .cluster_stats import ClusterStats
from .control import DEFAULT_CONTROL, DEFAULT_PERFORMANCE, Control, Performance, as_control
from .convergence import check_convergence, is_singular
from .profiled_deviance import check_fixed_rank, deviance_at, solution_in_units, solve_pls_batch
from .deviance_derivatives import (deviance_gradients, expected_hessian, observed_hessian,
                                   slope_parts)
from .theta_layout import theta_lower_bounds, theta_positions
from .threads import one_blas_thread
from .z_units import rescale_z, theta_rescaled, z_column_scale


def _evaluate(stats: ClusterStats, thetas, reml: bool, gradients: bool = True,
              fill: float = np.nan, solutions: list | None = None,
              performance: Performance = DEFAULT_PERFORMANCE):
    """(values (T,), gradients (T, m)) of the profiled deviance at each row of ``thetas``,
    in batches; inf (and ``fill`` for the gradient) where it is not defined.
    ``solutions``: a list of length T that receives each row's PLS solve (a batch of
    one) where it is defined.

    Only a factorisation failing at a theta (a domain problem: extreme theta) gives
    inf; linearly dependent fixed effects are refused before optimising
    (:func:`check_fixed_rank`), so they never hide here.

    A batch holds at most ``performance.theta_batch_doubles`` doubles of its
    (T, n, q, max(p, q)) blocks: batches pay where one theta's blocks are small
    (numpy's per-call overhead); beyond ~1 MB per block memory traffic dominates and
    one theta at a time is as fast (measured, the 8 starts at 10^4 clusters, q = 4:
    37 ms in one batch, 21 ms one by one).
    """
    thetas = np.atleast_2d(np.asarray(thetas, float))
    values = np.full(thetas.shape[0], np.inf)
    grads = np.full(thetas.shape, fill) if gradients else None
    finite = np.flatnonzero(np.all(np.isfinite(thetas), axis=1))
    per_theta = stats.n_groups * stats.q * max(stats.p, stats.q, 1)
    size = max(1, performance.theta_batch_doubles // per_theta)
    for start in range(0, finite.size, size):
        rows = finite[start:start + size]
        try:
            batch = solve_pls_batch(stats, thetas[rows], with_u=False)
        except np.linalg.LinAlgError:
            if rows.size > 1:  # find which thetas fail: one at a time
                for r in rows:
                    one = None if solutions is None else [None]
                    v, g = _evaluate(stats, thetas[r:r + 1], reml, gradients, fill, one,
                                     performance)
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
        sol, f = deviance_at(stats, theta, reml)
    else:
        sol, f = solution, float(solution.deviance(reml)[0])
    moved = np.inf
    for it in range(1, max_iter + 1):
        size = max(1.0, np.abs(theta).max())
        if sol is None or np.any(theta[on_diag] < 1e-4 * size):
            return None  # near the boundary: the bounded optimiser handles it
        near = moved < NEWTON_SWITCH * size
        parts = slope_parts(stats, sol, reml, with_zwx=near)  # Z'WX: for the observed H
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
            sol_c, f_c = deviance_at(stats, cand, reml)
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
    steps with a Hessian from differences of that gradient.  The optimisation runs on
    Z's columns scaled to unit root mean square (whatever ``Control.unit_free_z``, which
    sets the selection's proxy only), so its start (identity) and its boundary tests do
    not depend on Z's units; theta is mapped back at the end.  ``check``: run lme4's
    final convergence check (:func:`check_convergence`).

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


def _best_scaled_start(stats, reml, identity, control: Control = DEFAULT_CONTROL):
    """(the multiple of the (unit-free) identity start with the lowest deviance, among
    ``control.theta_start_scales``, the PLS solve there as a batch of one or None)."""
    starts = np.multiply.outer(control.theta_start_scales, identity)
    solutions = [None] * len(starts)
    values, _ = _evaluate(stats, starts, reml, gradients=False, solutions=solutions,
                          performance=control.performance)
    best = int(np.argmin(values))
    return starts[best], solutions[best]


def _optimise_theta(stats, reml, theta0, control):
    from scipy.optimize import OptimizeResult  # lazily: a heavy import
    q = stats.q
    lower = theta_lower_bounds(q)
    solution = None
    if theta0 is None:
        theta0, solution = _best_scaled_start(stats, reml, np.where(lower == 0, 1.0, 0.0),
                                              control)
    scored = _fisher_scoring(stats, reml, theta0, solution=solution)
    if scored is not None:
        theta, value, iterations, at_theta = scored
        return theta, value, OptimizeResult(x=theta, fun=value, nit=iterations, success=True,
                                            message="Fisher scoring converged",
                                            at_theta=at_theta)

    def values_and_gradients(thetas):
        return _evaluate(stats, thetas, reml, fill=0.0, performance=control.performance)

    def value_and_gradient(theta):
        values, grads = values_and_gradients(theta[None])
        return values[0], grads[0]

    best, theta = _bounded_search(value_and_gradient, np.asarray(theta0, float), lower, control)
    theta, value, polish, _hessian = _newton_polish(values_and_gradients, theta, lower)
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
    optimiser tolerance.  Returns (theta, deviance, status, (free, H)), H the last
    Hessian on the coordinates ``free`` (None, None: none computed); a polish that gives
    up leaves the L-BFGS-B point, which the final convergence check then judges.

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
    return theta, f0, status, (free, H)


def _forward_difference_hessian(values_and_gradients, theta, gradient, free, h):
    """The symmetrised Hessian on the coordinates ``free`` from forward differences of
    the gradient (steps h max(1, |theta_j|)), its m shifted gradients in one batch."""
    steps = h * np.maximum(1.0, np.abs(theta[free]))
    shifted = np.repeat(theta[None], free.size, axis=0)
    shifted[np.arange(free.size), free] += steps
    H = ((values_and_gradients(shifted)[1][:, free] - gradient[free]) / steps[:, None]).T
    return (H + H.T) / 2
