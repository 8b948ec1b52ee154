"""Tuning constants of a fit, in one object (in the spirit of ``lme4::lmerControl``).

Pass ``control=Control(...)`` to :func:`lmmscope.lmm_scope` / :func:`lmmscope.lmm`;
every stage reads its constants from it instead of module globals, so a test or a
user changes one fit without touching any other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Control:
    """Constants of selection, tuning and refit.

    Data layout (Gram or rows, chosen once per fit):
      gram_limit: above this many columns (and when p > N) the p x p Gram is not formed.
      single_problem_rows_bytes: one selection (k and a both fixed) runs on whitened
        rows up to this many bytes of X (tens of O(Np) gradients cost less than the
        O(Np^2) Gram).
      search_effort: extra starts of the best-subset search at each k (an integer >= 0;
        up to 2,000 subsets of size k are enumerated instead):
        0 only the warm start from the previous k; 1 (default) also the marginal
        ranking; each further one a perturbation of the best support found; the
        restarts run for k <= 10 x search_effort.
    Proxy covariance:
      unit_free_z: True (default): Sigma_a = a Z~ Z~' + I with Z~ = Z's columns divided by
        their root mean square, so a, the support and the coefficients do not depend on
        Z's units (a random-slope column in days or in seconds); False: the raw Z of the
        paper's and the seed example's definition (then a depends on those units).
    Tuning of ``a``:
      a_relative_tol: the a-iteration stops when a moves by less than this share.
      max_a_iter: most rounds of the a-iteration, per start.
    Refit (profiled (RE)ML optimisation of theta):
      optimizer_ftol, optimizer_gtol, optimizer_maxiter: L-BFGS-B's options.
      check_conv_grad_tol: lme4's ``check.conv.grad`` tolerance (2e-3) on the scaled
        gradient at the optimum; above it a ConvergenceWarning is issued.
      check_conv_hess_tol: lme4's ``check.conv.hess`` tolerance (1e-6): a Hessian
        eigenvalue below -tol is reported as a degenerate Hessian.
      singular_tol: lme4's ``check.conv.singular`` / ``isSingular`` tolerance (1e-4)
        on the bounded entries of theta (relative to the unit-free scale of Z).
    """

    gram_limit: int = 4000
    single_problem_rows_bytes: int = 2**28
    search_effort: int = 1
    unit_free_z: bool = True
    a_relative_tol: float = 1e-2
    max_a_iter: int = 6
    optimizer_ftol: float = 1e-10
    optimizer_gtol: float = 1e-10
    optimizer_maxiter: int = 2000
    check_conv_grad_tol: float = 2e-3
    check_conv_hess_tol: float = 1e-6
    singular_tol: float = 1e-4

    def updated(self, **changes) -> "Control":
        """A copy with some fields changed."""
        return replace(self, **changes)


DEFAULT_CONTROL = Control()


def as_control(control) -> Control:
    """``None`` -> the defaults; a dict -> Control(**dict); a Control as it is."""
    if control is None:
        return DEFAULT_CONTROL
    if isinstance(control, Control):
        return control
    if isinstance(control, dict):
        return Control(**control)
    raise TypeError(f"control must be a lmmscope.Control, a dict or None, got {type(control).__name__}")
