"""Prediction from a fitted model, kept apart from the training data.

A :class:`Predictor` holds only what new rows need (the fitted formula encodings, the
fixed effects over every column, the random effects by cluster label), so it is small
and picklable (a pickled Python result predicts without its training rows).  The R
package keeps no Python object: it predicts from the plain values of
:mod:`lmmscope.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formula import Design, new_design_matrices
from .exceptions import InputError


@dataclass
class Predictor:
    design: Design | None  # None for array fits
    beta: np.ndarray  # fixed effects over every column, zeros where not in the model
    ranef: np.ndarray  # clusters x q random effects
    group_labels: np.ndarray
    random_intercept_only: bool  # Z is a column of ones, so level-1 needs no Z from the user
    prepend_intercept: bool = False  # array fits with fit_intercept=True

    def predict(self, newdata, level: int = 0, Z=None, groups=None,
                allow_new_levels: bool = False) -> np.ndarray:
        """level=0: X beta.  level=1: plus the cluster's random effects.

        Cluster labels are matched by value after conversion to the type of the fitted
        labels (the string "3" is the cluster fitted as the integer 3, and 3 the one
        fitted as "3").  Clusters not seen in fitting follow lme4: an error naming them
        unless ``allow_new_levels=True``, then those rows are predicted at level 0."""
        if level not in (0, 1):
            raise InputError("level must be 0 (population) or 1 (conditional on the cluster)")
        if self.design is not None:
            X, Znew = new_design_matrices(self.design, newdata, need_random=level == 1)
            groups = newdata[self.design.group_name].to_numpy() if level == 1 else None
        else:
            X = np.asarray(newdata, dtype=float)
            if X.ndim == 1:
                X = X[None, :]
            if self.prepend_intercept:
                X = np.column_stack([np.ones(X.shape[0]), X])
            Znew = None
            if level == 1:
                if groups is None:
                    raise InputError("level=1 prediction needs groups=")
                Znew = self._new_Z(Z, X.shape[0])
        if X.shape[1] != self.beta.size:
            raise InputError(f"newdata has {X.shape[1]} fixed-effect columns, the model {self.beta.size}")
        eta = X @ self.beta
        if level == 1:
            codes = self.codes_for(groups)
            known = codes >= 0
            if not allow_new_levels and not known.all():
                unseen = list(dict.fromkeys(np.asarray(groups, dtype=object)[~known].tolist()))
                raise InputError(
                    f"new level(s) of the grouping factor in newdata: "
                    f"{', '.join(map(repr, unseen[:10]))}{' ...' if len(unseen) > 10 else ''}; "
                    "pass allow_new_levels=True to predict them at population level (level 0)")
            eta[known] += np.einsum("ij,ij->i", Znew[known], self.ranef[codes[known]])
        return eta

    def codes_for(self, groups) -> np.ndarray:
        """Position of each label among the fitted clusters, matched by value after
        conversion to the fitted labels' type; -1 for unseen ones."""
        fitted = self.group_labels.tolist()
        lookup = {label: i for i, label in enumerate(fitted)}
        convert = _label_converter(self.group_labels)
        return np.array([lookup.get(convert(g), -1) for g in np.asarray(groups, dtype=object).tolist()],
                        dtype=np.int64)

    def _new_Z(self, Z, n_rows):
        if Z is None:
            if self.random_intercept_only:
                return np.ones((n_rows, 1))
            raise InputError("level=1 prediction needs Z= for a model with random slopes")
        return np.asarray(Z, dtype=float).reshape(n_rows, -1)


def _label_converter(fitted_labels: np.ndarray):
    """A function taking a new label to the type of the fitted ones (unchanged where it
    cannot be converted: it is then simply unseen)."""
    values = fitted_labels.tolist()
    if fitted_labels.dtype.kind in "iu" or (values and all(isinstance(v, int) for v in values)):
        return _to_int
    if fitted_labels.dtype.kind == "f" or (values and all(isinstance(v, float) for v in values)):
        return _to_float
    if fitted_labels.dtype.kind in "US" or (values and all(isinstance(v, str) for v in values)):
        return _to_str
    return lambda v: v


def _to_int(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if np.isfinite(f) and f.is_integer() else v


def _to_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _to_str(v):
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return v if isinstance(v, str) else str(v)
