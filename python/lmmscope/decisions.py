"""Decisions that several modules need, each made here once.

* :func:`proxy_z_scale`, Z's units in the proxy covariance Sigma_a = a Z~ Z~' + I
  (``Control.unit_free_z``): every data backend (in memory, streamed, Dask, several
  terms) and the variance ratio of the a-iteration call it.  (The (RE)ML optimiser's own
  unit-free scaling, :func:`lmmscope.profiled.z_column_scale`, is a numerical choice
  that does not change the fit, so it runs whatever ``unit_free_z`` says.)
* :func:`is_singular`, lme4's ``isSingular``: one rule for the single-factor refit and
  the sparse PLS of several terms; the R package receives the verdict as a value
  (``singular`` in :mod:`lmmscope.schema`), it does not judge again.
"""

from __future__ import annotations

import numpy as np

from .control import Control


def root_mean_squares(sum_of_squares: np.ndarray, n_rows: int) -> np.ndarray:
    """Root mean square of each column from its sum of squares; 1 where that is 0 or
    not finite (a column of zeros keeps its units)."""
    scale = np.sqrt(np.clip(np.asarray(sum_of_squares, float), 0, None) / max(n_rows, 1))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


def proxy_z_scale(control: Control, sum_of_squares: np.ndarray, n_rows: int) -> np.ndarray:
    """The divisor of each column of Z in the proxy covariance: its root mean square
    when ``control.unit_free_z`` (so a, the support and the coefficients do not depend
    on Z's units), else 1 (the paper's raw Z).  ``sum_of_squares``: of each column of Z
    over the ``n_rows`` rows (the diagonal of sum_i Z_i'Z_i)."""
    if not control.unit_free_z:
        return np.ones(np.shape(sum_of_squares)[0])
    return root_mean_squares(sum_of_squares, n_rows)


def is_singular(theta_unit_free: np.ndarray, lower: np.ndarray, control: Control) -> bool:
    """lme4's isSingular: a bounded entry of theta (a relative standard deviation,
    ``lower == 0``) below ``control.singular_tol``.  Judged on theta for Z's columns at
    unit root mean square, so the verdict does not depend on Z's units (lme4 judges the
    theta of Z as given: a random slope in seconds rather than days can flip it there)."""
    theta = np.asarray(theta_unit_free, float)
    return bool(np.any(theta[np.asarray(lower) == 0] < control.singular_tol))
