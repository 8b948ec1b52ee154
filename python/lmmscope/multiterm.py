"""A linear mixed model with several random-effects terms (crossed, nested, ``||``), fitted
as lme4's ``lmer``: the result of :func:`lmmscope.lmm` for such formulas.

One grouping factor keeps the dense per-cluster path (:mod:`lmmscope.mixed`); this module
is the several-terms fit on :mod:`lmmscope.reterms` and :mod:`lmmscope.sparse_pls`, which
:func:`lmmscope.engine.fit` reaches through :class:`lmmscope.random_effects.SeveralTerms`.
The accessors carry the same names as :class:`lmmscope.results.LmmResult`'s.
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg as sla

from . import checks, rank
from .control import as_control
from .cluster_stats import compute_cluster_stats
from .exceptions import ColumnError, ConvergenceWarning, InputError, RankDeficientError
from .formula import INTERCEPT, intercept_index, new_design_matrices
from .mixed import fixed_effects_and_status_lines
from .prediction import Predictor
from .results import LmmResult
from .reterms import ReTerms, _group_values
from .sparse_pls import SparseStats, optimise_theta


def fit_statistics(stats: SparseStats, reterms: ReTerms, names, reml: bool, control=None,
                   kept=None):
    """lme4's checks and the (RE)ML fit from the statistics alone (rows in memory, or
    summed over parquet chunks and Dask partitions: :mod:`lmmscope.sources.several_terms`).
    ``kept``: the full-rank columns where the rows judged them (lme4's centred check, with
    its warning: :func:`column_check_stats`); else judged here on X'X.
    Returns (fit, kept column positions, names of the aliased columns dropped)."""
    if kept is None:
        kept, dropped = _full_rank(stats.XtX, names, as_control(control).rank_tol)
    else:
        dropped = [names[j] for j in range(len(names)) if j not in set(kept)]
    names = [names[j] for j in kept]
    checks.check_more_rows_than_columns(len(kept), stats.n_obs)
    _check_levels(reterms, stats.n_obs)
    intercept = intercept_index(names)
    stats = stats.subset(kept)
    return MultiTermFit(stats, reterms, names, intercept, reml=reml, control=control), kept, dropped


def _full_rank(XtX, names, tol: float, warn: bool = True):
    """lme4's rank check on X'X: aliased columns dropped with its message (the intercept
    first, R's limited pivoting of :func:`lmmscope.rank.independent_columns`); ``warn``
    False for the tuning's refits, whose supports are not the user's model."""
    order = sorted(range(len(names)), key=lambda j: names[j] != INTERCEPT)
    kept, aliased = rank.independent_columns(XtX, order, tol=tol)
    if warn:
        rank.warn_dropped(names, aliased)
    return sorted(kept.tolist()), [names[j] for j in sorted(aliased.tolist())]


def validated_arrays(design, reterms):
    """(X, y, fixed-effect names) of a several-term design, with the one-term input
    checks: numeric finite columns of X and of every term's Z, a usable response."""
    names = list(design.fixed_names)
    X = checks.as_float_matrix(np.asarray(design.X, dtype=float), "X")
    y = checks.check_response(design.y, X.shape[0])
    checks.check_finite_columns(X, names, "X")
    for term in reterms.terms:
        checks.check_finite_columns(term.Z, term.cnms, f"Z of ({' + '.join(term.cnms)} | "
                                    f"{term.group_name})")
    return X, y, names


def column_check_stats(X, y):
    """The statistics the one-term column checks read (lme4's checkScaleX, constant,
    duplicated and aliased columns, a copy of y): those of (X, y) as one cluster, so
    :mod:`lmmscope.checks` and :mod:`lmmscope.rank` run unchanged, with the same
    shifts, tolerances and messages as for one term."""
    n = X.shape[0]
    return compute_cluster_stats(X, y, np.ones((n, 1)), np.zeros(n, dtype=np.int64), 1)


def _check_levels(reterms: ReTerms, n_obs: int):
    """lme4's checks: every grouping factor has fewer levels than observations (a term
    whose levels number the rows is confounded with the residual), and at least 2."""
    for t in reterms.terms:
        if t.n_levels < 2:
            raise InputError(f"grouping factor {t.group_name!r} has {t.n_levels} level; lme4 "
                             "needs at least 2 (a random effect of one level is not estimable)")
        if t.n_levels * t.p >= n_obs:
            raise InputError(
                f"the term ({' + '.join(t.cnms)} | {t.group_name}) has {t.n_levels * t.p} "
                f"random effects for {n_obs} observations: the variances of the random "
                "effects and the residual are unidentifiable (lme4's check.nobs.vs.nRE)")


class MultiTermFit:
    """lme4's quantities at the (RE)ML optimum of a several-term model."""

    def __init__(self, stats: SparseStats, reterms: ReTerms, fixed_names, intercept,
                 reml=True, control=None):
        control = as_control(control)
        self.control = control
        self.method = "REML" if reml else "ML"
        self.fixed_names = list(fixed_names)
        self.reterms = reterms
        self.nobs = stats.n_obs
        optimum = optimise_theta(stats, reterms, reml, control)
        self.theta = optimum.theta
        self.converged = optimum.converged
        self.convergence_messages = optimum.messages
        self.optimizer_message = optimum.message
        self.n_evaluations = optimum.n_evaluations
        self.singular = optimum.singular
        if optimum.solution is None:  # X'X - X'Z A^-1 Z'X not positive definite: aliased
            raise RankDeficientError(
                "the fixed-effect columns " + ", ".join(map(str, self.fixed_names))
                + " are linearly dependent given the random effects (no positive definite "
                "solution at the optimum); drop the aliased columns")
        if not self.converged:
            warnings.warn(ConvergenceWarning("; ".join(self.convergence_messages)
                                             or self.optimizer_message), stacklevel=3)
        sol = optimum.solution
        self._sol = sol
        self.deviance = sol.deviance(reml)
        p = stats.p
        self.sigma = float(np.sqrt(sol.pwrss / (self.nobs - p if reml else self.nobs)))
        beta = sol.beta.copy()
        if intercept is not None:
            beta[intercept] += stats.y_shift
        self._beta = beta
        self.loglik = -0.5 * self.deviance
        self.n_params = p + self.theta.size + 1
        self.aic = -2 * self.loglik + 2 * self.n_params
        self.bic = -2 * self.loglik + np.log(self.nobs) * self.n_params

    @property
    def ngroups(self) -> dict:
        return {t.group_name: t.n_levels for t in self.reterms.terms}

    @cached_property
    def fixef(self) -> pd.Series:
        return pd.Series(self._beta, index=self.fixed_names, name="fixef")

    @cached_property
    def vcov_matrix(self) -> pd.DataFrame:
        RXinv = sla.solve_triangular(self._sol.RX, np.eye(len(self.fixed_names)))
        return pd.DataFrame(self.sigma ** 2 * RXinv @ RXinv.T, index=self.fixed_names,
                            columns=self.fixed_names)

    def vcov(self) -> pd.DataFrame:
        return self.vcov_matrix

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov_matrix)), index=self.fixed_names,
                         name="std_error")

    @cached_property
    def b(self) -> np.ndarray:
        """The conditional modes b = Lambda u (a q-vector in Z's column order)."""
        return self.reterms.lambdat(self.theta).T @ self._sol.u

    @cached_property
    def ranef(self) -> dict:
        """Conditional modes per term, lme4's ``ranef()``: {group name: levels x columns}.
        Two terms on one factor (``||``) are joined into one table, as lme4 does."""
        out = {}
        for t, block in zip(self.reterms.terms, self.reterms.split(self.b)):
            frame = pd.DataFrame(block, index=pd.Index(t.levels, name=t.group_name),
                                 columns=t.cnms)
            out[t.group_name] = (frame if t.group_name not in out
                                 else out[t.group_name].join(frame, rsuffix=".1"))
        return out

    def condvar(self) -> list:
        """lme4's ``ranef(condVar = TRUE)``: per term (group name, column names, the
        conditional covariance of each level's effects, levels x p x p), sigma^2 T_i
        [A^-1]_ll T_i' from the diagonal blocks of A^-1 (as lme4, beta taken as known)."""
        factor = self._sol.parts[0]
        out = []
        for i, t in enumerate(self.reterms.terms):
            starts = self.reterms.Gp[i] + np.arange(t.n_levels) * t.p
            blocks = factor.inverse_diagonal_blocks(starts, t.p)
            T = self.reterms.term_factor(self.theta, i)
            out.append((t.group_name, t.cnms, self.sigma ** 2 * (T @ blocks @ T.T)))
        return out

    def term_covariances(self) -> list:
        """(group name, column names, covariance matrix) per term, lme4's VarCorr order."""
        return [(t.group_name, t.cnms, self.sigma ** 2 * (T @ T.T))
                for i, t in enumerate(self.reterms.terms)
                for T in [self.reterms.term_factor(self.theta, i)]]

    @property
    def psi(self) -> np.ndarray:
        """The covariance of one level's random effects of every term, block diagonal."""
        return sla.block_diag(*[c for _g, _n, c in self.term_covariances()])

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variances, standard deviations and correlations, in lme4's VarCorr layout
        (``as.data.frame(VarCorr(m))``: grp, var1, var2, vcov, sdcor)."""
        rows = []
        for group, names, cov in self.term_covariances():
            sd = np.sqrt(np.clip(np.diag(cov), 0, None))
            for i, name in enumerate(names):
                rows.append({"group": group, "var1": name, "var2": None,
                             "variance": cov[i, i], "std_dev": sd[i]})
            for j in range(len(names)):
                for i in range(j + 1, len(names)):
                    with np.errstate(invalid="ignore", divide="ignore"):
                        corr = cov[i, j] / (sd[i] * sd[j])
                    rows.append({"group": group, "var1": names[j], "var2": names[i],
                                 "variance": cov[i, j], "std_dev": corr})
        rows.append({"group": "Residual", "var1": None, "var2": None,
                     "variance": self.sigma ** 2, "std_dev": self.sigma})
        return pd.DataFrame(rows)

    def summary_lines(self):
        lines = [f"Linear mixed model fit by {self.method}",
                 f"  {self.method} criterion: {self.deviance:.4f}   logLik: {self.loglik:.4f}"
                 f"   AIC: {self.aic:.4f}   BIC: {self.bic:.4f}", "Random effects:"]
        for _, r in self.varcorr.iterrows():
            label = "" if pd.isna(r["var1"]) else r["var1"]
            if pd.isna(r["var2"]):
                lines.append(f"  {r['group']:<10} {label:<20} var {r['variance']:.6g}  "
                             f"sd {r['std_dev']:.6g}")
            else:
                lines.append(f"  {r['group']:<10} corr {label} ~ {r['var2']}: {r['std_dev']:.4f}")
        groups = ", ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        lines.append(f"Number of obs: {self.nobs}, groups: {groups}")
        return lines + fixed_effects_and_status_lines(self)


def anova(*models, refit: bool = True, names=None) -> pd.DataFrame:
    """lme4's ``anova`` of several-term fits (see :meth:`MultiTermResult.anova`)."""
    from scipy.stats import chi2
    if len(models) < 2:
        raise InputError("anova compares two or more fitted models")
    for m in models:
        if not isinstance(m, MultiTermResult):
            raise InputError("anova compares fits of lmmscope.lmm or lmm_scope with several "
                             f"random-effects terms, got {type(m).__name__}")
    if len({m.nobs for m in models}) > 1:
        raise InputError("models were not all fitted to the same size of dataset "
                         f"(nobs: {', '.join(str(m.nobs) for m in models)})")
    names = [f"model {i + 1}" for i in range(len(models))] if names is None else list(names)
    if len(names) != len(models):
        raise InputError(f"{len(names)} names for {len(models)} models")
    if refit and any(m.method == "REML" for m in models):
        warnings.warn("refitting model(s) with ML (instead of REML)", stacklevel=3)
    fits = [m.ml_fit() if refit else m.mixed for m in models]
    order = sorted(range(len(models)), key=lambda i: fits[i].n_params)  # stable, as R's order
    fits, names = [fits[i] for i in order], [names[i] for i in order]
    npar = np.array([f.n_params for f in fits])
    loglik = np.array([f.loglik for f in fits])
    chisq = np.concatenate([[np.nan], 2 * np.maximum(0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar)]).astype(float)
    with np.errstate(invalid="ignore"):
        p_value = np.where(df == 0, np.nan, chi2.sf(chisq, df))
    return pd.DataFrame({"npar": npar, "AIC": [f.aic for f in fits], "BIC": [f.bic for f in fits],
                         "logLik": loglik, "deviance": -2 * loglik, "Chisq": chisq, "Df": df,
                         "Pr(>Chisq)": p_value}, index=pd.Index(names))


class MultiTermResult:
    """A several-term model fitted by :func:`lmmscope.lmm`: lme4's accessors and predict."""

    def __init__(self, mixed: MultiTermFit, design, X, y, reterms: ReTerms, kept, dropped):
        self.mixed = mixed
        self.design = design.without_data()
        self.reterms = reterms
        self._X, self._y = X, y
        self._refit_columns = kept
        self.dropped_columns = dropped

    fixef = property(lambda self: self.mixed.fixef)
    bse = property(lambda self: self.mixed.bse)
    varcorr = property(lambda self: self.mixed.varcorr)
    psi = property(lambda self: self.mixed.psi)
    sigma = property(lambda self: self.mixed.sigma)
    ranef = property(lambda self: self.mixed.ranef)
    loglik = property(lambda self: self.mixed.loglik)
    aic = property(lambda self: self.mixed.aic)
    bic = property(lambda self: self.mixed.bic)
    nobs = property(lambda self: self.mixed.nobs)
    ngroups = property(lambda self: self.mixed.ngroups)
    singular = property(lambda self: self.mixed.singular)
    method = property(lambda self: self.mixed.method)
    converged = property(lambda self: self.mixed.converged)
    convergence_messages = property(lambda self: self.mixed.convergence_messages)
    optimizer_message = property(lambda self: self.mixed.optimizer_message)
    theta = property(lambda self: self.mixed.theta)

    @property
    def coef(self) -> pd.Series:
        return self.fixef

    def vcov(self) -> pd.DataFrame:
        return self.mixed.vcov()

    # Wald inference from fixef and bse, as for one term (no selection to debias)
    inference = LmmResult.inference
    confint = LmmResult.confint
    summary_frame = LmmResult.summary_frame
    check_against_lme4 = LmmResult.check_against_lme4  # lmmscope.validate: every term compared

    def fitted(self) -> np.ndarray:
        """Conditional fitted values X beta + Z b (lme4's default)."""
        return self._X @ self.fixef.to_numpy() + self.reterms.Zt.T @ self.mixed.b

    def residuals(self) -> np.ndarray:
        return self._y - self.fitted()

    def predict(self, newdata=None, level: int = 0, allow_new_levels: bool = False,
                re_form=None):
        """level=0: X beta (lme4's ``re.form = NA``); level=1: plus every term's random
        effects (``re.form = NULL``), or only those of the grouping factors named in
        ``re_form`` (a list of names as in ``ranef``: lme4's ``re.form = ~(1 | plate)``).
        Levels not seen in fitting: an error naming them, unless
        ``allow_new_levels=True``: then that term contributes 0 on those rows (lme4's
        ``allow.new.levels``, factor by factor)."""
        if level not in (0, 1):
            raise InputError("level must be 0 (population) or 1 (conditional on every term)")
        included = self._included_terms(re_form)
        if newdata is None:
            if level == 0:
                return self._X @ self.fixef.to_numpy()
            b = np.concatenate([block.ravel() * (t.group_name in included) for t, block in
                                zip(self.reterms.terms, self.reterms.split(self.mixed.b))])
            return self._X @ self.fixef.to_numpy() + self.reterms.Zt.T @ b
        X, _ = new_design_matrices(self.design, newdata, need_random=False)
        eta = np.asarray(X, dtype=float)[:, self._refit_columns] @ self.fixef.to_numpy()
        if level == 0:
            return eta
        frame = newdata if isinstance(newdata, pd.DataFrame) else pd.DataFrame(newdata)
        for t, block in zip(self.reterms.terms, self.reterms.split(self.mixed.b)):
            if t.group_name not in included:
                continue
            if len(t.group_columns) > 1:
                missing = [c for c in t.group_columns if c not in frame.columns]
                if missing:
                    raise ColumnError("newdata lacks column(s): " + ", ".join(missing))
                frame = frame.assign(**{t.group_name: _group_values(frame, t.group_columns)})
            term = Predictor(t.design, np.zeros(1), block, t.levels,
                             bool(t.p == 1 and t.cnms == [INTERCEPT]))
            eta = eta + term.predict(frame, level=1, allow_new_levels=allow_new_levels)
        return eta

    def fit_by(self, method: str) -> MultiTermFit:
        """This model fitted by ``method`` ("REML" or "ML"): this fit, or the refit of its
        columns by the other criterion (cached; its convergence is reported with it)."""
        if method == self.method:
            return self.mixed
        refits = self.__dict__.setdefault("_refits", {})
        if method not in refits:
            names = list(self.fixef.index)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                refits[method] = MultiTermFit(self._refit_statistics(), self.reterms, names,
                                              intercept_index(names), reml=method == "REML",
                                              control=self.mixed.control)
        return refits[method]

    def ml_fit(self) -> MultiTermFit:
        """The fit by ML: what lme4's ``anova`` compares (``refitML``)."""
        return self.fit_by("ML")

    def _refit_statistics(self) -> SparseStats:
        """The statistics of this fit's columns, from its rows."""
        return SparseStats.from_arrays(self._X, self._y, self.reterms.Zt,
                                       intercept_index(self.fixef.index))

    def anova(self, *others, refit: bool = True, names=None) -> pd.DataFrame:
        """lme4's ``anova(m1, m2, ...)``: the models (this one and ``others``, fitted to
        the same rows) at their ML fits (REML fits refitted by ML unless ``refit=False``),
        ordered by their number of parameters, each tested against the previous one by
        the likelihood-ratio chi-square.  Columns as lme4's: npar, AIC, BIC, logLik,
        deviance, Chisq, Df, Pr(>Chisq); ``names``: the rows' labels."""
        return anova(self, *others, refit=refit, names=names)

    def simulate(self, nsim: int = 1, seed=None, re_form=()) -> pd.DataFrame:
        """lme4's ``simulate``: ``nsim`` responses drawn from the fitted model, as a
        table of columns sim_1, sim_2, ... (rows as the fit's).  Each draw is
        X beta + Z b + sigma e with e standard normal and, for every term not
        conditioned on, b = Lambda u with u ~ N(0, sigma^2 I): each term's effects
        drawn from its fitted covariance.  ``re_form``: the grouping factors whose
        random effects are conditioned on (held at their conditional modes, as in
        :meth:`predict`); ``()`` (default) conditions on none (lme4's
        ``re.form = NA``), ``None`` on all (``re.form = NULL``).  ``seed``: an int or a
        numpy Generator."""
        if not (isinstance(nsim, (int, np.integer)) and nsim >= 1):
            raise InputError(f"nsim must be a positive integer, got {nsim!r}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        conditioned = self._included_terms(re_form) if re_form is None or len(re_form) \
            else set()
        rt, sigma = self.reterms, self.sigma
        mask = np.concatenate([np.full(t.n_levels * t.p, t.group_name in conditioned)
                               for t in rt.terms])
        mean = self._X @ self.fixef.to_numpy() + rt.Zt.T @ np.where(mask, self.mixed.b, 0.0)
        u = sigma * rng.standard_normal((rt.q, nsim))
        u[mask] = 0.0
        draws = mean[:, None] + rt.Zt.T @ (rt.lambdat(self.theta).T @ u) \
            + sigma * rng.standard_normal((mean.size, nsim))
        return pd.DataFrame(draws, columns=[f"sim_{i + 1}" for i in range(nsim)])

    def to_dict(self) -> dict:
        raise InputError("the plain-values schema (CLI --json, the R package) describes one "
                         "random-effects term; a fit with several terms is read through its "
                         "Python accessors (fixef, varcorr, ranef, ...) for now")

    def _included_terms(self, re_form) -> set:
        names = {t.group_name for t in self.reterms.terms}
        if re_form is None:
            return names
        wanted = [re_form] if isinstance(re_form, str) else list(re_form)
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ColumnError(f"re_form names unknown grouping factor(s) {', '.join(map(repr, unknown))}; "
                           f"the model's are {', '.join(sorted(names))}")
        return set(wanted)

    def summary(self) -> str:
        return "\n".join(self.mixed.summary_lines())

    def __repr__(self):
        return self.summary()
