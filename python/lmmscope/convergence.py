"""lme4's final convergence check (``checkConv``) at the optimum of theta: the gradient
scaled by the Cholesky factor of the Hessian, and the Hessian's eigenvalues; and lme4's
``isSingular``, the one singularity rule (one grouping factor and several terms alike;
the R package receives the verdict as a value).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .cluster_stats import ClusterStats
from .control import Control
from .profiled_deviance import deviance_at
from .deviance_derivatives import observed_hessian, slope_parts
from .theta_layout import theta_positions


def is_singular(theta_unit_free, lower, control: Control) -> bool:
    """lme4's isSingular: a bounded entry of theta (a relative standard deviation,
    ``lower == 0``) below ``control.singular_tol``.  Judged on theta for Z's columns at
    unit root mean square, so the verdict does not depend on Z's units (lme4 judges the
    theta of Z as given: a random slope in seconds rather than days can flip it there)."""
    theta = np.asarray(theta_unit_free, float)
    return bool(np.any(theta[np.asarray(lower) == 0] < control.singular_tol))


def check_convergence(stats: ClusterStats, theta, reml: bool, control: Control,
                      singular: bool, at_theta=None) -> list:
    """lme4's ``checkConv`` at the optimum; returns the problems found (empty: passed).

    As lme4: a singular fit skips the gradient test; otherwise the gradient scaled by
    the Cholesky factor of the Hessian, min(|scaled|, |raw|) elementwise, must stay
    below ``check_conv_grad_tol`` (2e-3), and the Hessian must have no eigenvalue below
    ``-check_conv_hess_tol``.  The derivatives are in the unit-free parametrisation;
    the Hessian is the exact one (:func:`observed_hessian`), where lme4 differences
    its gradient.  ``at_theta``: (PLS solve as a batch of one, :func:`slope_parts` with
    Z'WX, observed Hessian or None) at ``theta``, where the optimiser has them.
    """
    if singular:
        return []
    solution, parts, H = at_theta or (deviance_at(stats, theta, reml)[0], None, None)
    if solution is None:
        return ["the deviance is not finite at the optimum"]
    parts = parts or slope_parts(stats, solution, reml, with_zwx=True)
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
