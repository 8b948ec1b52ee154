"""Result objects: the selection (coef, support, path) and the refitted mixed model."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from . import checks
from .exceptions import ColumnError
from .formula import Design
from .mixed import MixedModelFit
from .prediction import Predictor
from .specification import random_intercept_only


class MixedResult:
    """Methods shared by every fitted model: lme4-style accessors and prediction.

    ``fixef`` etc. come from the mixed model refitted by (RE)ML on the model's fixed
    effects (for :class:`LmmScopeResult`, the selected support plus unpenalised terms).
    """

    def __init__(self, mixed: MixedModelFit, design: Design | None, X, Z, codes, group_labels,
                 refit_columns=None, dropped_columns=(), prepend_intercept=False):
        self.mixed = mixed
        self.design = design
        self._X, self._Z, self._codes = X, Z, codes
        self._group_labels = np.asarray(group_labels)
        self._refit_columns = refit_columns  # indices of X columns used by the refit
        self.dropped_columns = list(dropped_columns)  # aliased or in the unpenalised span
        self._prepend_intercept = prepend_intercept  # array fits: predict() adds the intercept

    # lme4-style accessors -------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        return self.mixed.fixef

    def vcov(self) -> pd.DataFrame:
        return self.mixed.vcov()

    @property
    def bse(self) -> pd.Series:
        return self.mixed.bse

    @property
    def varcorr(self) -> pd.DataFrame:
        return self.mixed.varcorr

    @property
    def psi(self) -> np.ndarray:
        return self.mixed.psi

    @property
    def sigma(self) -> float:
        return self.mixed.sigma

    @property
    def ranef(self) -> pd.DataFrame:
        return self.mixed.ranef

    @property
    def loglik(self) -> float:
        return self.mixed.loglik

    @property
    def aic(self) -> float:
        return self.mixed.aic

    @property
    def bic(self) -> float:
        return self.mixed.bic

    @property
    def nobs(self) -> int:
        return self.mixed.nobs

    @property
    def ngroups(self) -> int:
        return self.mixed.ngroups

    @property
    def singular(self) -> bool:
        return self.mixed.singular

    @property
    def method(self) -> str:
        return self.mixed.method

    @property
    def converged(self) -> bool:
        """Whether the (RE)ML refit passed lme4's final convergence check."""
        return self.mixed.converged

    @property
    def convergence_messages(self) -> list:
        """Problems found by the final convergence check (empty when it passed)."""
        return self.mixed.convergence_messages

    @property
    def optimizer_message(self) -> str:
        """The optimiser's own message (Fisher scoring, or L-BFGS-B and its Newton polish)."""
        return self.mixed.optimizer_message

    def _full_fixef(self) -> np.ndarray:
        beta = np.zeros(self._X.shape[1])
        beta[self._refit_columns] = self.mixed.fixef.to_numpy()
        return beta

    def fitted(self) -> np.ndarray:
        """Conditional fitted values X beta + Z b (lme4's default)."""
        beta = self._full_fixef()
        B = self.mixed.ranef.to_numpy()
        return self._X @ beta + np.einsum("ij,ij->i", self._Z, B[self._codes])

    def residuals(self) -> np.ndarray:
        """Conditional residuals y - fitted()."""
        return self._y - self.fitted()

    def predictor(self) -> Predictor:
        """The small, picklable part of the fit that predicts new rows."""
        Z = self._Z
        return Predictor(self.design and self.design.without_data(), self._full_fixef(), self.mixed.ranef.to_numpy(),
                         self._group_labels, random_intercept_only(self.mixed.random_names, Z),
                         self._prepend_intercept)

    def predict(self, newdata=None, level: int = 0, Z=None, groups=None,
                allow_new_levels: bool = False) -> np.ndarray:
        """Predictions for new rows.

        level=0: population level, X beta.  level=1: conditional on the cluster's
        random effects.  Cluster labels are matched by value after conversion to the
        fitted labels' type ("3" is the cluster fitted as 3).  Clusters not seen in
        fitting follow lme4: an error naming them, unless ``allow_new_levels=True``
        (then those rows are predicted at level 0).  ``newdata`` is a DataFrame for
        formula fits, or an X matrix (with ``Z``/``groups`` for level 1) for array fits.
        """
        if newdata is None:
            if level not in (0, 1):
                raise ValueError("level must be 0 (population) or 1 (conditional on the cluster)")
            return self.fitted() if level == 1 else self._X @ self._full_fixef()
        return self.predictor().predict(newdata, level=level, Z=Z, groups=groups,
                                        allow_new_levels=allow_new_levels)

    def check_against_lme4(self, tol: float = 1e-6, method=None):
        """Refit this model with R's ``lme4::lmer`` (rpy2) and compare: see :mod:`lmmscope.validate`."""
        from .validate import check_against_lme4
        return check_against_lme4(self, tol=tol, method=method)


class LmmResult(MixedResult):
    """A linear mixed model fitted with every listed fixed effect (no selection)."""

    def __init__(self, mixed, design, X, y, Z, codes, group_labels, refit_columns=None,
                 dropped_columns=()):
        super().__init__(mixed, design, X, Z, codes, group_labels,
                         np.arange(X.shape[1]) if refit_columns is None else refit_columns,
                         dropped_columns)
        self._y = y

    @property
    def coef(self) -> pd.Series:
        return self.fixef

    def inference(self, columns=None, level: float = 0.95, adjust="bh") -> pd.DataFrame:
        """Wald inference from the (RE)ML fit: the table of
        :meth:`LmmScopeResult.inference` (``estimate``, ``std_error``, ``z``, ``p_value``,
        ``ci_lower``, ``ci_upper``, ``p_adjusted``), for ``columns`` (names or 0-based
        indices; default all).

        No column was selected here, so nothing needs debiasing: the estimates are
        ``fixef``, the standard errors ``bse`` (from ``vcov()``), and the statistic is
        referred to the standard normal, as lme4's ``confint(method = "Wald")`` and
        statsmodels' MixedLM do."""
        from .inference import inference_table
        names = list(self.fixef.index)
        indices = _column_indices(names, columns)
        return inference_table(names, indices, self.fixef.to_numpy()[indices],
                               self.bse.to_numpy()[indices], np.inf, level, adjust)

    def confint(self, level: float = 0.95, columns=None) -> pd.DataFrame:
        """Wald confidence intervals (``ci_lower``, ``ci_upper``): see :meth:`inference`."""
        return self.inference(columns, level=level, adjust=None)[["ci_lower", "ci_upper"]]

    def summary_frame(self, columns=None, level: float = 0.95, adjust=None) -> pd.DataFrame:
        """:meth:`inference` under statsmodels' column names (``coef``, ``std err``, ``z``,
        ``P>|z|``, ``[0.025``, ``0.975]``; plus ``p_adjusted`` when ``adjust`` is given)."""
        from .inference import statsmodels_names
        return statsmodels_names(self.inference(columns, level=level, adjust=adjust), level)

    def summary(self) -> str:
        text = "\n".join(self.mixed.summary_lines())
        return text

    def __repr__(self):
        return self.summary()


class LmmScopeResult(MixedResult):
    """Selected sparse fixed effects, the tuning path, and the refitted mixed model.

    Selection attributes: ``coef`` (quasi-likelihood estimates over every fixed-effect
    column, zeros included), ``support`` (selected penalised columns), ``k``, ``a``,
    ``path`` (one row per k: whitened RSS and GIC/EBIC/BIC/AIC, plus ``cv_error``
    when k was cross-validated), ``coef_path`` and ``a_history``.  lme4-style
    attributes (``fixef``, ``ranef``, ``varcorr``, ``sigma``, ``loglik``...) come from
    the (RE)ML refit on the selected support plus the unpenalised terms.
    """

    def __init__(self, selection, mixed, design, X, y, Z, codes, group_labels, names,
                 unpenalised, refit_columns, data=None, dropped_columns=(),
                 prepend_intercept=False):
        super().__init__(mixed, design, X, Z, codes, group_labels, np.asarray(refit_columns),
                         dropped_columns, prepend_intercept)
        self._data = data  # a lmmscope.backend.DataBackend: its statistics serve inference()
        self._inference_cache = None
        self._y = y
        self.selection = selection
        self.names = list(names)
        self.unpenalised = [self.names[j] for j in unpenalised]
        self.support = [self.names[j] for j in selection.support]
        self.k = int(selection.k)
        self.a = float(selection.a)
        self.criterion = selection.criterion
        self._unpenalised_columns = set(unpenalised)
        self.n_dropped = 0 if design is None else design.n_dropped

    # pandas objects over p names cost more than a small fit: built on first use
    @functools.cached_property
    def path(self) -> pd.DataFrame:
        """One row per k: whitened RSS, the criteria (and ``cv_error``), the support."""
        path = self.selection.path.copy()
        path["support"] = [", ".join(self.names[j] for j in np.flatnonzero(row)
                                     if j not in self._unpenalised_columns)
                           for row in self.selection.path_coef]
        return path

    @property
    def a_history(self) -> pd.DataFrame:
        return self.selection.a_history

    @functools.cached_property
    def _name_index(self) -> pd.Index:
        return pd.Index(self.names)

    @functools.cached_property
    def coef(self) -> pd.Series:
        """Selection estimates over every fixed-effect column (zeros off the support)."""
        return pd.Series(self.selection.coef, index=self._name_index, name="coef")

    @functools.cached_property
    def coef_path(self) -> pd.DataFrame:
        """Selection estimates at each k of the path (rows), every column."""
        return pd.DataFrame(self.selection.path_coef, columns=self._name_index,
                            index=pd.Index(self.selection.path["k"], name="k"))

    @property
    def selected(self) -> list:
        """Every fixed-effect column in the final model: unpenalised terms and the support."""
        return [self.names[j] for j in self._refit_columns]

    def summary(self) -> str:
        crit = self.criterion.upper()
        lines = ["lmmscope: quasi-likelihood best-subset selection of fixed effects",
                 f"  rows: {self.nobs}, clusters: {self.ngroups}, candidate predictors: "
                 f"{len(self.names) - len(self.unpenalised)} (+{len(self.unpenalised)} unpenalised)",
                 f"  a = {self.a:.6g}, k = {self.k} chosen by {crit}"]
        if self.n_dropped:
            lines.append(f"  {self.n_dropped} rows with missing values dropped (na.omit)")
        lines.append(f"  selected: {', '.join(self.support) if self.support else '(none)'}")
        sel = pd.DataFrame({"selection": self.coef[self.selected], "refit": self.fixef,
                            "std_error": self.bse})
        lines.append(sel.to_string(float_format=lambda v: f"{v:.6g}"))
        lines.append("")
        lines.extend(self.mixed.summary_lines())
        return "\n".join(lines)

    def __repr__(self):
        return (f"<LmmScopeResult k={self.k} a={self.a:.4g} support=[{', '.join(self.support)}] "
                f"nobs={self.nobs} ngroups={self.ngroups}>")

    def inference(self, columns=None, level: float = 0.95, adjust="bh", n_jobs=None,
                  verbose=False, lasso_tol: float | None = None, *, terms=None) -> pd.DataFrame:
        """Debiased estimates, cluster-sandwich standard errors, t-based p-values and CIs.

        One row per fixed-effect column in ``columns`` (names or 0-based indices; default:
        every column, selected or not; ``terms=`` is the same argument under its old
        name): ``estimate``, ``std_error``, ``t``, ``p_value``, ``ci_lower``, ``ci_upper``
        and ``p_adjusted`` (``adjust``: "bh" = Benjamini-Hochberg across the rows
        returned, "holm", or None).  Reference distribution: Student's t with (clusters -
        1) degrees of freedom.  :meth:`summary_frame` gives the same table under
        statsmodels' column names.  See :mod:`lmmscope.inference` for the method.

        Only the columns asked for are fitted (one node-wise scaled lasso each, on the
        whitened Gram matrix, :mod:`lmmscope.nodewise`), and the fits are cached: a second
        call (other columns, level, adjustment) solves only the columns not seen yet.
        ``lasso_tol``: the largest coefficient change at which the node-wise coordinate
        descent stops (unit-scale columns); default the fit's ``Control.lasso_tol``.  ``n_jobs`` is no longer used (the node-wise
        fits run vectorised over columns); it is accepted so that older calls still run.
        """
        from . import inference as inf
        from .tuning import Progress

        indices = _column_indices(self.names, _one_columns_argument(columns, terms))
        progress = Progress(verbose)
        if self._inference_cache is None:  # the one step that depends on the data backend
            G, scores = self._data.inference_statistics(self.a, self.coef.to_numpy(), progress)
            self._inference_cache = {"G": G, "scores": scores, "rows_by_tol": {}}
        cache = self._inference_cache
        control = self.mixed.control
        lasso_tol = control.lasso_tol if lasso_tol is None else lasso_tol
        rows = cache["rows_by_tol"].setdefault(float(lasso_tol), {})
        return inf.table_from_cache(cache["G"], cache["scores"], rows, self.names, indices,
                                    self.coef.to_numpy(), self.nobs, self.ngroups - 1, level,
                                    adjust, progress, lasso_tol, control.lasso_sigma_tol)

    def confint(self, level: float = 0.95, columns=None, *, terms=None) -> pd.DataFrame:
        """Debiased confidence intervals (``ci_lower``, ``ci_upper``): see :meth:`inference`."""
        table = self.inference(_one_columns_argument(columns, terms), level=level, adjust=None)
        return table[["ci_lower", "ci_upper"]]

    def summary_frame(self, columns=None, level: float = 0.95, adjust=None) -> pd.DataFrame:
        """:meth:`inference` under statsmodels' column names (``coef``, ``std err``, ``t``,
        ``P>|t|``, ``[0.025``, ``0.975]``; plus ``p_adjusted`` when ``adjust`` is given)."""
        from .inference import statsmodels_names
        return statsmodels_names(self.inference(columns, level=level, adjust=adjust), level)

    def plot_path(self, ax=None, show_coefficients=True):
        """Criterion against k (chosen k marked) and, beside it, the coefficient path."""
        from .plotting import plot_path
        return plot_path(self, ax=ax, show_coefficients=show_coefficients)

    def to_dict(self) -> dict:
        """Plain Python values in the versioned schema of :mod:`lmmscope.schema` (CLI JSON, R)."""
        from .schema import result_payload
        return result_payload(self)


def _one_columns_argument(columns, terms):
    """``columns``, or ``terms`` (its older name); not both."""
    if terms is not None and columns is not None:
        raise TypeError("give the columns as columns= (terms= is its older name), not both")
    return terms if columns is None else columns


def _column_indices(names, columns) -> list:
    """0-based indices of ``columns`` (None: all; names, positions, or a boolean mask)."""
    if columns is None:
        return list(range(len(names)))
    at = {name: j for j, name in enumerate(names)}
    items = checks.always_items(columns, len(names), "columns", argument="columns")
    unknown = [c for c in items if isinstance(c, str) and c not in at]
    if unknown:
        raise ColumnError(f"unknown column(s): {', '.join(map(repr, unknown))}; columns are "
                          f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    return [at[c] if isinstance(c, str) else c for c in items]
