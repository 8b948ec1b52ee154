"""The (RE)ML refit of a mixed model on a set of fixed-effect columns, in one home.

lme4's chain: design (the cross-products of the chosen columns) -> deviance function
(:func:`lmmscope.profiled_deviance.solve_pls`) -> optimise theta -> check convergence ->
fitted model (:class:`lmmscope.mixed.MixedModelFit`).  :func:`fit_theta` runs the
middle of that chain; :class:`Refitter` gives the tuning of ``a`` (and the final
model) one place to ask for the fit on any column set, cached by those columns, so a
support the tuning already fitted is not fitted again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .control import Control, as_control
from .cluster_stats import ClusterStats
from .convergence import check_convergence, is_singular
from .profiled_deviance import PLSSolution, solve_pls
from .theta_layout import theta_lower_bounds, theta_to_lambda
from .theta_optimiser import optimise_theta
from .z_units import rescale_z, theta_rescaled, z_column_scale


@dataclass
class ThetaOptimum:
    """The optimised variance parameters of one model and how the optimisation ended."""

    theta: np.ndarray  # lme4's theta for Z in the data's units
    deviance: float  # profiled REML or ML deviance (-2 log-likelihood) at theta
    reml: bool
    converged: bool
    messages: list  # problems found by the final convergence check (empty: none)
    message: str  # the optimiser's own message
    singular: bool  # a bounded entry of the unit-free theta below Control.singular_tol
    info: object  # scipy.optimize.OptimizeResult
    # the PLS solve at theta on these statistics (checked fits only, so that the fitted
    # model does not solve again; None where the optimiser did not end with one)
    solution: PLSSolution | None = None


def fit_theta(stats: ClusterStats, reml: bool = True, theta0=None, control: Control | None = None,
              optimise: bool = True, check: bool = True) -> ThetaOptimum:
    """Optimise theta (or, with ``optimise=False``, only check ``theta0``) on ``stats``."""
    control = as_control(control)
    if optimise:
        theta, deviance, info = optimise_theta(stats, reml=reml, theta0=theta0, control=control,
                                               check=check)
    else:
        theta, deviance, info = _checked_start(stats, reml, theta0, control, check)
    solution = info.pop("pls_solution", None)
    return ThetaOptimum(theta=np.asarray(theta, float), deviance=float(deviance), reml=reml,
                        converged=bool(info["converged"]),
                        messages=list(info["convergence_messages"]),
                        message=str(info.get("message", "")), singular=bool(info["singular"]),
                        info=info, solution=solution if check else None)


def _checked_start(stats, reml, theta, control, check):
    """The convergence check of a theta optimised elsewhere on the same statistics."""
    scale = z_column_scale(stats)
    scaled = rescale_z(stats, scale)
    unit_free = theta_rescaled(theta, scale, to_scaled=True)
    singular = is_singular(unit_free, theta_lower_bounds(stats.q), control)
    messages = check_convergence(scaled, unit_free, reml, control, singular) if check else []
    sol = solve_pls(stats, np.asarray(theta, float))
    deviance = sol.deviance_reml if reml else sol.deviance_ml
    from scipy.optimize import OptimizeResult  # lazily: a heavy import

    info = OptimizeResult(x=np.asarray(theta, float), fun=deviance, success=True,
                          message="optimised during the tuning of a", converged=not messages,
                          convergence_messages=messages, singular=singular,
                          theta_unit_free=unit_free, pls_solution=sol)
    return theta, deviance, info


class Refitter:
    """(RE)ML fits of the model on column subsets of one data source, cached by columns.

    ``source`` is any object with ``subset_stats(columns) -> ClusterStats``
    (:class:`lmmscope.backend.DataBackend`).
    """

    def __init__(self, source, control: Control | None = None):
        self.source = source
        self.control = as_control(control)
        self._cache = {}
        self._last_stats = (None, None)  # (columns, statistics): the final fit's, reused

    def subset_stats(self, columns) -> ClusterStats:
        """The source's statistics of ``columns``, the last ones kept (the final refit
        and the fitted model ask for the same columns one after the other)."""
        key = tuple(int(j) for j in columns)
        if self._last_stats[0] != key:
            self._last_stats = (key, self.source.subset_stats(list(key)))
        return self._last_stats[1]

    def fit(self, columns, reml: bool = True, check: bool = False) -> ThetaOptimum:
        """The optimum on ``columns`` (sorted, deduplicated); cached."""
        key = (tuple(sorted(int(j) for j in set(columns))), bool(reml))
        cached = self._cache.get(key)
        if cached is None or (check and not cached.info.get("checked", False)):
            stats = self.subset_stats(key[0])
            # the other method's optimum on these columns is close (ML and REML differ
            # by O(p / N)): a start there replaces the multi-start's eight evaluations
            other = self._cache.get((key[0], not key[1])) or self._nearby(key[0])
            theta0 = cached.theta if cached is not None else (
                None if other is None else other.theta)
            cached = fit_theta(stats, reml, theta0=theta0, control=self.control, check=check)
            cached.info["checked"] = check
            self._cache[key] = cached
        return cached

    def _nearby(self, columns):
        """A cached fit on columns that differ from ``columns`` by at most two (a
        neighbour on the selection path): theta barely moves when a fixed column comes
        or goes, so its optimum replaces the multi-start (the basin it guards against
        comes from the fixed part changing wholesale, e.g. no intercept)."""
        wanted = set(columns)
        best = None
        for (cols, _reml), fit in self._cache.items():
            differ = len(wanted.symmetric_difference(cols))
            if differ <= 2 and (best is None or differ < best[0]):
                best = (differ, fit)
        return None if best is None else best[1]

    def variance_ratio(self, columns) -> float:
        """a = tr(Psi S) / (sigma^2 tr S), S = sum_i Z_i'Z_i, from the REML fit on ``columns``:
        the average share of random-effect to noise variance per row and Z column, in the
        units of the source's ``stats`` (Z's columns scaled by ``source.z_scale`` where the
        source has one, so a does not depend on Z's units)."""
        optimum = self.fit(columns, reml=True)
        q = self.source.stats.q
        scale = np.asarray(getattr(self.source, "z_scale", np.ones(q)), dtype=float)
        Lam = theta_to_lambda(optimum.theta, q) * scale[:, None]  # Lambda for Z D^{-1}
        S = self.source.stats.ZtZ.sum(axis=0)
        return float(np.trace(Lam @ Lam.T @ S) / max(np.trace(S), 1e-300))

    def ml_deviance(self, columns) -> float:
        """-2 log-likelihood (ML) of the model on ``columns``: comparable across column sets."""
        return self.fit(columns, reml=False).deviance

