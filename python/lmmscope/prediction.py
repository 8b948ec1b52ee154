"""Prediction from a fitted model, kept apart from the training data.

A :class:`Predictor` holds only what new rows need (the fitted formula encodings, the
fixed effects over every column, the random effects by cluster label), so it is small
and picklable: the R package stores it inside the R object to predict after a
``saveRDS``/``readRDS`` round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formula import Design, new_design_matrices


@dataclass
class Predictor:
    design: Design | None  # None for array fits
    beta: np.ndarray  # fixed effects over every column, zeros where not in the model
    ranef: np.ndarray  # clusters x q random effects
    group_labels: np.ndarray
    random_intercept_only: bool  # Z is a column of ones, so level-1 needs no Z from the user
    prepend_intercept: bool = False  # array fits with fit_intercept=True

    def predict(self, newdata, level: int = 0, Z=None, groups=None) -> np.ndarray:
        """level=0: X beta.  level=1: plus the cluster's random effects; rows of clusters
        not seen in fitting fall back to level 0 (lme4's ``allow.new.levels = TRUE``)."""
        if level not in (0, 1):
            raise ValueError("level must be 0 (population) or 1 (conditional on the cluster)")
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
                    raise ValueError("level=1 prediction needs groups=")
                Znew = self._new_Z(Z, X.shape[0])
        if X.shape[1] != self.beta.size:
            raise ValueError(f"newdata has {X.shape[1]} fixed-effect columns, the model {self.beta.size}")
        eta = X @ self.beta
        if level == 1:
            codes = self.codes_for(groups)
            known = codes >= 0
            eta[known] += np.einsum("ij,ij->i", Znew[known], self.ranef[codes[known]])
        return eta

    def codes_for(self, groups) -> np.ndarray:
        """Position of each label among the fitted clusters; -1 for unseen ones."""
        lookup = {label: i for i, label in enumerate(self.group_labels.tolist())}
        return np.array([lookup.get(g, -1) for g in np.asarray(groups).tolist()], dtype=np.int64)

    def _new_Z(self, Z, n_rows):
        if Z is None:
            if self.random_intercept_only:
                return np.ones((n_rows, 1))
            raise ValueError("level=1 prediction needs Z= for a model with random slopes")
        return np.asarray(Z, dtype=float).reshape(n_rows, -1)
