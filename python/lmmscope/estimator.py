"""``LmmScope``: the selection estimator on arrays, as a scikit-learn regressor.

How the clusters (``groups``) and the random-effect design (``Z``) travel through
scikit-learn, which only knows ``X`` and ``y``:

* as fit parameters: ``fit(X, y, groups=g, Z=Z)``.  In a ``Pipeline`` they are passed
  as ``pipe.fit(X, y, lmmscope__groups=g)``; in ``GridSearchCV`` / ``cross_val_score``
  with metadata routing on (``sklearn.set_config(enable_metadata_routing=True)`` and
  ``LmmScope().set_fit_request(groups=True, Z=True)``), ``groups`` goes both to the
  estimator and to a group-aware splitter such as ``GroupKFold``, sliced per fold;
* as columns of ``X``: ``LmmScope(group_column="subject", random_columns=["days"])``
  reads the clusters (and the random slopes) from those columns of a DataFrame ``X``
  (integer positions for an array), so they are split with the rows by any splitter
  and no routing is needed: ``cross_val_score(est, df, y, groups=df["subject"],
  cv=GroupKFold(5))``.

Cross-validation must split whole clusters (a group-aware splitter): rows of one
cluster share a random effect, and a plain ``KFold`` leaks it between folds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from . import checks
from .control import as_control
from .formula import INTERCEPT
from .intercept import InterceptPrepended
from .specification import (ModelSpec, RowData, TuningArguments, parse_method, resolve_always,
                            validated_rows, whitens_a_copy, with_random_slopes)
from .tuning import DEFAULT_A_GRID, Progress
from .exceptions import ColumnError, InputError


class LmmScope(RegressorMixin, BaseEstimator):
    """Sparse fixed-effect selection in a linear mixed model (scikit-learn regressor).

    ``LmmScope(k, a).fit(X, y, groups=g, Z=Z)`` selects ``k`` of the columns of ``X``
    by quasi-likelihood best subset under the proxy covariance ``a Z Z' + I``, then
    refits the mixed model y = X beta + Z b + e (b ~ N(0, Psi) per cluster) by REML or
    ML on the selected columns.  See :func:`lmmscope.lmm_scope` for the method and
    the module docstring for how ``groups`` and ``Z`` travel through pipelines and
    cross-validation.

    Parameters
    ----------
    k : int, None or "cv", default=None
        Support size, not counting the intercept and ``always`` columns.  None: search
        k = 0..k_max and pick by ``criterion``; "cv": K-fold cross-validation over
        whole clusters.
    a : float, None or "cv", default=None
        Scale of the proxy covariance ``a Z Z' + I``.  None: start at 1 and iterate
        "select, refit by REML, set a to the random-effect to noise variance ratio";
        "cv": the value of ``a_grid`` with the smallest held-out prediction error.
    fit_intercept : bool, default=True
        Add an unpenalised intercept (not counted in ``k``).
    always : list of int or str, default=None
        Predictors forced into the model, unpenalised and not counted in ``k``: names
        (DataFrame ``X``) or positions among the predictors (the columns of ``X``
        without the ``group_column``).
    criterion : {"gic", "ebic", "bic", "aic"}, default="gic"
        Information criterion choosing ``k`` when ``k=None``.
    k_max : int, default=None
        Largest k searched; None: min(p, N / log N, 50).
    cv_folds : int, default=5
        Folds (of whole clusters) for ``k="cv"`` and ``a="cv"``.
    a_grid : sequence of float, default=(0.1, 0.25, 0.5, 1, 2, 5, 10)
        Candidate values of ``a`` for ``a="cv"``.
    method : {"REML", "ML"}, default="REML"
        Estimation of the refit on the selected columns.
    random_state : int, default=0
        Seed of the assignment of clusters to cross-validation folds.
    verbose : bool, default=False
        Print progress over the tuning grid.
    group_column : str or int, default=None
        Column of ``X`` holding each row's cluster; it is not a predictor.  None: the
        clusters come from ``fit(..., groups=)``.
    random_columns : list of str or int, default=None
        Columns of ``X`` forming the random-effect design ``Z`` (a random intercept is
        added in front).  They stay fixed effects as well, as in lme4's
        ``y ~ x + (x | g)``, unpenalised unless ``penalize_random_slopes``.  Needs
        ``group_column``.  None: ``Z`` from ``fit(..., Z=)``, or a random intercept only.
    penalize_random_slopes : bool, default=False
        False: a fixed column that is also a random slope (same name in X and Z) is
        always kept, like the intercept (lme4's hierarchy habit); True: it competes in
        the selection like any other candidate.
    control : Control or dict, default=None
        Numerical settings (:class:`lmmscope.Control`); None: the defaults.

    Attributes
    ----------
    coef_ : ndarray of shape (n_predictors,)
        Selection (quasi-likelihood) estimates of the predictors, zeros outside the
        support; without the intercept.
    intercept_ : float
        Selection estimate of the intercept (0.0 when ``fit_intercept=False``).
    support_ : ndarray of int
        Positions of the selected predictors (in ``coef_``).
    k_, a_ : int, float
        The support size and the proxy-covariance scale used.
    result_ : LmmScopeResult
        The full result: path, refitted mixed model (``fixef``, ``ranef``, ``varcorr``),
        ``inference()``.
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit`` (the group and random columns included).
    feature_names_in_ : ndarray of str
        Column names of ``X``, when it is a DataFrame with string column names.
    """

    def __init__(self, k=None, a=None, *, fit_intercept=True, always=None, criterion="gic",
                 k_max=None, cv_folds=5, a_grid=DEFAULT_A_GRID, method="REML",
                 random_state=0, verbose=False, group_column=None, random_columns=None,
                 penalize_random_slopes=False, control=None):
        self.k = k
        self.a = a
        self.fit_intercept = fit_intercept
        self.always = always
        self.criterion = criterion
        self.k_max = k_max
        self.cv_folds = cv_folds
        self.a_grid = a_grid
        self.method = method
        self.random_state = random_state
        self.verbose = verbose
        self.group_column = group_column
        self.random_columns = random_columns
        self.penalize_random_slopes = penalize_random_slopes
        self.control = control

    def fit(self, X, y, Z=None, groups=None):
        """Select and refit.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_columns)
            Candidate fixed effects (and the ``group_column``/``random_columns``, if set).
        y : array-like of shape (n_samples,)
        Z : array-like of shape (n_samples, q), default=None
            Random-effect design; None: a random intercept (or ``random_columns``).
        groups : array-like of shape (n_samples,), default=None
            Cluster of each row; required unless ``group_column`` is set.

        Returns
        -------
        self
        """
        from . import engine

        tuning = TuningArguments(self.k, self.a, self.criterion, self.k_max, self.cv_folds,
                                 self.a_grid, self.random_state)
        reml = parse_method(self.method)
        control = as_control(self.control)
        X = _as_table(X)
        self._record_input(X)
        X_fixed, names, Z, random_names, groups = self._split_columns(X, Z, groups)
        Xm = checks.as_float_matrix(X_fixed, "X")
        always = checks.always_items(self.always, len(names), "predictor columns in X")
        if self.fit_intercept and INTERCEPT in names:
            # a data column named Intercept is the design's `Intercept`, as in formulas
            names = [f"`{INTERCEPT}`" if n == INTERCEPT else n for n in names]
        lead = int(self.fit_intercept)
        copy = whitens_a_copy((Xm.shape[0], Xm.shape[1] + lead), tuning, control,
                              bool(self.fit_intercept or always))
        rows, labels = validated_rows(Xm, y, Z, groups, names, random_names, with_moments=True,
                                      row_major_lead=lead if copy else None,
                                      performance=control.performance)
        unpenalised = []
        if self.fit_intercept:
            # [1, X] without copying X
            rows = RowData(InterceptPrepended(rows.X), rows.y, rows.Z, rows.codes, rows.moments)
            names = [INTERCEPT] + names
            always = [j + 1 if isinstance(j, int) else j for j in always]
            unpenalised = [0]
        unpenalised = resolve_always(always, names, unpenalised)
        progress = Progress(self.verbose)
        unpenalised = with_random_slopes(names, random_names, unpenalised, tuning.k,
                                         self.penalize_random_slopes, progress)
        spec = ModelSpec(names, random_names, "group", labels, rows, reml=reml,
                         unpenalised=unpenalised, tuning=tuning, control=control,
                         verbose=self.verbose, prepend_intercept=bool(self.fit_intercept))
        self.result_ = engine.fit(spec, progress)
        self._set_fitted_attributes()
        return self

    def predict(self, X, Z=None, groups=None, level=None, allow_new_levels=False):
        """Predictions from the refitted fixed effects (and random effects at level 1).

        ``level=0`` (the default without ``groups``): population level, X beta.
        ``level=1`` (the default with ``groups``): plus the random effects of known
        clusters (``groups=``, or the ``group_column``; ``Z=`` or the
        ``random_columns`` for random slopes).  Clusters not seen in fitting are an
        error unless ``allow_new_levels=True``, which predicts their rows at level 0
        (lme4's ``allow.new.levels``).
        """
        self._check_fitted()
        X = self._as_fitted_columns(X)
        if level is None:
            level = 0 if groups is None else 1
        X_fixed, _names, Z, _rn, groups = self._split_columns(X, Z, groups, need_groups=level == 1)
        return self.result_.predict(checks.as_float_matrix(X_fixed, "X"), level=level,
                                    Z=Z, groups=groups, allow_new_levels=allow_new_levels)

    def score(self, X, y, sample_weight=None):
        """R^2 of the population-level predictions ``predict(X)`` (X beta, level 0).

        Population level because a scorer sees new clusters (cross-validation over
        whole clusters), whose random effects are unknown; it measures the fixed
        effects alone.  The group and random columns of ``X`` are ignored.
        """
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X, level=0), sample_weight=sample_weight)

    # helpers ------------------------------------------------------------
    def _as_fitted_columns(self, X):
        """X with the columns seen in fit, matched by name as scikit-learn does
        (reordered columns are put back in order; renamed, missing or extra ones are an
        error naming them), and by count for arrays."""
        X = _as_table(X)
        if np.ndim(X) != 2:
            X = checks.as_float_matrix(X, "X")
        fitted = getattr(self, "feature_names_in_", None)
        # scikit-learn's two warnings when only one of fit and predict had column names:
        # an order cannot be checked there
        if fitted is None and isinstance(X, pd.DataFrame) and getattr(self, "n_features_in_", 0):
            warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without "
                          "feature names", UserWarning, stacklevel=3)
        elif fitted is not None and not isinstance(X, pd.DataFrame):
            warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was "
                          "fitted with feature names", UserWarning, stacklevel=3)
        if fitted is not None and isinstance(X, pd.DataFrame):
            names = [str(c) for c in X.columns]
            if names != list(fitted):
                unseen = [c for c in names if c not in set(fitted)]
                missing = [c for c in fitted if c not in set(names)]
                if unseen or missing or len(set(names)) != len(names):
                    raise InputError(
                        "The feature names should match those that were passed during fit"
                        + (f"; feature names unseen at fit time: {', '.join(unseen)}" if unseen else "")
                        + (f"; feature names seen at fit time, yet now missing: {', '.join(missing)}"
                           if missing else "")
                        + ("; repeated column names in X" if len(set(names)) != len(names) else ""))
                X = X.loc[:, list(fitted)]  # the same names in another order: fit's order
        n_columns = int(np.shape(X)[1])
        if n_columns != self.n_features_in_:
            raise InputError(f"X has {n_columns} features, but LmmScope is expecting "
                             f"{self.n_features_in_} features as input (the columns of X in fit)")
        return X

    def _record_input(self, X):
        if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = int(np.shape(X)[1]) if np.ndim(X) == 2 else 1

    def _split_columns(self, X, Z, groups, need_groups=True):
        """(fixed-effect columns, their names, Z, Z's names, groups) from the inputs."""
        if self.group_column is None:
            if self.random_columns is not None:
                raise InputError("random_columns= needs group_column= (the clusters' column of X)")
            return X, _column_names(X), Z, _random_names(Z, X), groups
        if groups is not None or Z is not None:
            raise InputError("with group_column= the clusters (and random_columns= the Z "
                             "columns) come from X: do not pass groups= or Z= as well")
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
        group_key = _column_key(frame, self.group_column, "group_column")
        random_keys = [_column_key(frame, c, "random_columns") for c in self.random_columns or []]
        fixed = frame.drop(columns=[group_key])
        groups = frame[group_key].to_numpy() if need_groups else None
        Z = None
        if random_keys:
            Z = np.column_stack([np.ones(len(frame)), checks.as_float_matrix(frame[random_keys], "Z")])
        names = _column_names(fixed if isinstance(X, pd.DataFrame) else fixed.to_numpy())
        random_names = ["(Intercept)"] + [str(c) for c in random_keys]
        return fixed, names, Z, random_names, groups

    def _set_fitted_attributes(self):
        coef = self.result_.coef.to_numpy()
        offset = 1 if self.fit_intercept else 0
        self.intercept_ = float(coef[0]) if self.fit_intercept else 0.0
        self.coef_ = coef[offset:]
        self.support_ = np.array([j - offset for j in self.result_.selection.support], dtype=np.int64)
        self.a_, self.k_ = self.result_.a, self.result_.k

    def _check_fitted(self):
        if not hasattr(self, "result_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("this LmmScope is not fitted yet: call fit(X, y, groups=...) first")


def _as_table(X):
    """A DataFrame or array as it is; a list of rows or a scipy sparse matrix as a
    float array (checked: numeric, rectangular, dense form fits in memory)."""
    if isinstance(X, pd.DataFrame) or (hasattr(X, "shape") and not checks._is_sparse(X)):
        return X
    return checks.as_float_matrix(X, "X")


def _column_names(X):
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    return [f"x{j}" for j in range(np.asarray(X).shape[1] if np.ndim(X) == 2 else 1)]


def _random_names(Z, X):
    if isinstance(Z, pd.DataFrame):
        return [str(c) for c in Z.columns]
    if Z is None:
        return ["(Intercept)"]
    return [f"z{j}" for j in range(np.shape(Z)[1] if np.ndim(Z) == 2 else 1)]


def _column_key(frame, column, what):
    """The label of ``column`` (a name, or a position for arrays) in ``frame``."""
    if column in frame.columns:
        return column
    if isinstance(column, (int, np.integer)) and 0 <= column < frame.shape[1]:
        return frame.columns[column]
    raise ColumnError(f"{what}: no column {column!r} in X (columns: "
                   f"{', '.join(map(str, list(frame.columns)[:8]))}"
                   f"{' ...' if frame.shape[1] > 8 else ''})")
