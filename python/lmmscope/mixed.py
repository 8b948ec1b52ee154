"""A fitted low-dimensional LMM (one grouping factor): lme4's quantities, from cross-products."""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from .control import as_control
from .checks import check_more_rows_than_columns
from .cluster_stats import ClusterStats
from .exceptions import ConvergenceWarning
from .profiled_deviance import check_fixed_rank, solve_pls


class MixedModelFit:
    """Fixed effects, variance components and conditional modes of a fitted LMM.

    Quantities and names follow ``lme4::lmer``.  ``converged`` (bool) and
    ``convergence_messages`` report lme4's final convergence check; ``optimizer_message``
    is the optimiser's own.  A fit that fails the check issues a
    :class:`~lmmscope.exceptions.ConvergenceWarning`.  ``optimum``: the result of
    :func:`lmmscope.refit.fit_theta` on these statistics (the tuning already fitted
    this model), used instead of optimising again.
    """

    def __init__(self, stats: ClusterStats, fixed_names, random_names, group_labels,
                 group_name="group", reml=True, theta0=None, theta_optimal=False, *,
                 optimum=None, control=None):
        self.method = "REML" if reml else "ML"
        self.fixed_names = list(fixed_names)
        self.random_names = list(random_names)
        self.group_labels = np.asarray(group_labels)
        self.group_name = group_name
        self.nobs = stats.n_obs
        self.ngroups = stats.n_groups
        q, p = stats.q, stats.p
        check_more_rows_than_columns(p, self.nobs)
        control = self.control = as_control(control)
        check_fixed_rank(stats, self.fixed_names)  # names the columns, unlike the refit's own check
        if optimum is None and theta_optimal and theta0 is not None:
            from .refit import fit_theta  # theta0 minimises this deviance: check it only
            optimum = fit_theta(stats, reml, theta0=theta0, control=control, optimise=False)
        elif optimum is None:
            from .refit import fit_theta
            optimum = fit_theta(stats, reml, theta0=theta0, control=control)
        self.theta, self.optimizer_result = optimum.theta, optimum.info
        self.converged = optimum.converged
        self.convergence_messages = list(optimum.messages)
        self.optimizer_message = optimum.message
        self.singular = optimum.singular
        if not self.converged:
            warnings.warn(ConvergenceWarning("; ".join(self.convergence_messages)
                                             or self.optimizer_message), stacklevel=3)
        sol = optimum.solution  # the optimiser's own solve at theta, where it has one
        if (sol is None or not np.array_equal(sol.theta, self.theta)
                or sol.beta.shape != (p,) or sol.u.shape != (self.ngroups, q)):
            sol = solve_pls(stats, self.theta)
        self.deviance = sol.deviance_reml if reml else sol.deviance_ml
        self._sol = sol
        dfr = self.nobs - p if reml else self.nobs
        self.sigma = float(np.sqrt(sol.pwrss / dfr))
        self._stats = stats
        self.psi = self.sigma ** 2 * sol.Lam @ sol.Lam.T
        self.loglik = -0.5 * self.deviance
        self.n_params = p + q * (q + 1) // 2 + 1
        self.aic = -2 * self.loglik + 2 * self.n_params
        self.bic = -2 * self.loglik + np.log(self.nobs) * self.n_params

    # The tables below are built on first use: pandas construction costs more than the
    # refit's own algebra at a few hundred clusters.  The statistics may be centred
    # (cluster_stats): only the intercept and its covariances change back; deviance, theta,
    # sigma and ranef are invariant.
    @cached_property
    def fixef(self) -> pd.Series:
        return pd.Series(self._stats.original_coef(self._sol.beta), index=self.fixed_names,
                         name="fixef")

    @cached_property
    def vcov_matrix(self) -> pd.DataFrame:
        p = len(self.fixed_names)
        RXinv = np.linalg.inv(self._sol.RX) if p else np.zeros((0, 0))
        return pd.DataFrame(self._stats.original_vcov(self.sigma ** 2 * RXinv @ RXinv.T),
                            index=self.fixed_names, columns=self.fixed_names)

    @cached_property
    def ranef(self) -> pd.DataFrame:
        ranef = self._sol.u @ self._sol.Lam.T  # b_i = Lambda u_i
        return pd.DataFrame(ranef, index=pd.Index(self.group_labels, name=self.group_name),
                            columns=self.random_names)

    def vcov(self) -> pd.DataFrame:
        return self.vcov_matrix

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov_matrix)), index=self.fixed_names, name="std_error")

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variances, standard deviations and correlations, in lme4's VarCorr layout."""
        sd = np.sqrt(np.clip(np.diag(self.psi), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = self.psi / np.outer(sd, sd)
        rows = []
        for i, name in enumerate(self.random_names):
            rows.append({"group": self.group_name, "var1": name, "var2": None,
                         "variance": self.psi[i, i], "std_dev": sd[i]})
        for j in range(len(self.random_names)):
            for i in range(j + 1, len(self.random_names)):
                rows.append({"group": self.group_name, "var1": self.random_names[j],
                             "var2": self.random_names[i], "variance": self.psi[i, j],
                             "std_dev": corr[i, j]})
        rows.append({"group": "Residual", "var1": None, "var2": None,
                     "variance": self.sigma ** 2, "std_dev": self.sigma})
        return pd.DataFrame(rows)

    @property
    def corr(self) -> np.ndarray:
        sd = np.sqrt(np.clip(np.diag(self.psi), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.psi / np.outer(sd, sd)

    def summary_lines(self):
        lines = [f"Linear mixed model fit by {self.method}",
                 f"  {self.method} criterion: {self.deviance:.4f}   logLik: {self.loglik:.4f}"
                 f"   AIC: {self.aic:.4f}   BIC: {self.bic:.4f}",
                 "Random effects:"]
        vc = self.varcorr
        for _, r in vc.iterrows():
            if pd.isna(r["var2"]):
                label = "" if pd.isna(r["var1"]) else r["var1"]
                lines.append(f"  {r['group']:<10} {label:<20} var {r['variance']:.6g}  sd {r['std_dev']:.6g}")
        if len(self.random_names) > 1:
            lines.append("  correlations:")
            c = self.corr
            for i in range(1, len(self.random_names)):
                for j in range(i):
                    lines.append(f"    {self.random_names[i]} ~ {self.random_names[j]}: {c[i, j]:.4f}")
        lines.append(f"Number of obs: {self.nobs}, groups: {self.group_name}, {self.ngroups}")
        return lines + fixed_effects_and_status_lines(self)


def fixed_effects_and_status_lines(fit) -> list:
    """The summary's fixed-effects table and its singularity and convergence notes (any
    fit with lme4's accessors: one grouping factor or several terms)."""
    table = pd.DataFrame({"Estimate": fit.fixef, "Std. Error": fit.bse,
                          "t value": fit.fixef / fit.bse})
    lines = ["Fixed effects:", table.to_string(float_format=lambda v: f"{v:.6g}")]
    if fit.singular:
        lines.append("boundary (singular) fit: a random-effect variance or correlation "
                     "is at its boundary (see lme4's ?isSingular)")
    if not fit.converged:
        lines.append("convergence: " + ("; ".join(fit.convergence_messages)
                                        or fit.optimizer_message))
    return lines


