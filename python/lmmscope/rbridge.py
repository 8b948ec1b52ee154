"""The R package's door into the core: numeric arrays in, plain values out.

R builds the design itself (model.frame / model.matrix, its contrasts, na.action,
offsets, lme4's bar semantics) and hands over X (N x p), y, Z (N x q), the cluster
code of each row, the column names as R spells them and the 0-based indices of the
unpenalised columns.  What comes back is the versioned plain-values schema of
:mod:`lmmscope.schema` plus what only R needs (conditional variances of the random
effects, the ML refit used by ``anova``, the warnings raised), so an R fit is ordinary
R data: it survives ``saveRDS`` and predicts without Python.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from . import checks, engine
from .control import Control
from .exceptions import InputError
from .schema import inference_payload, plain, result_payload
from .specification import TuningArguments, with_random_slopes
from .tuning import DEFAULT_A_GRID, Progress

# inference = NULL computes the table at fit time unless the two p x p arrays the node-wise
# fits hold (the whitened Gram and its scaled copy) would pass this size (p above ~8,200);
# a memory guard, not a time one
INFERENCE_AUTO_GRAM_BYTES = 2**30

def _names(x) -> list:
    """reticulate turns a length-1 character vector into a str: always a list."""
    if x is None:
        return []
    return [str(v) for v in ([x] if isinstance(x, str) else list(np.atleast_1d(x)))]


def _column_major(values, n_rows: int) -> np.ndarray:
    """R's numbers as an (n_rows, m) float array.  R sends raw little-endian doubles
    (a bytearray; reticulate 1.28 cannot hand numpy 2 a matrix) in column-major order;
    Python callers may pass arrays."""
    if isinstance(values, (bytes, bytearray, memoryview)):
        flat = np.frombuffer(values, dtype="<f8")
        return flat.reshape(-1, n_rows).T
    return np.asarray(values, dtype=float).reshape(n_rows, -1)


def _arrays(X, y, Z, groups):
    y = _column_major(y, len(y) // 8 if isinstance(y, (bytes, bytearray)) else np.size(y))[:, 0]
    n = y.size
    X = np.asfortranarray(_column_major(X, n))
    Z = np.asfortranarray(_column_major(Z, n))
    groups = _column_major(groups, n)[:, 0].astype(np.int64)
    return np.ascontiguousarray(y), X, Z, groups


def _control(values) -> Control | None:
    """R's ``lmm_scope_control(...)`` list as a :class:`Control`, whose own rules check
    the values (R's whole doubles become ints there); unknown names in R's words."""
    if values is None:
        return None
    fields = [f.name for f in dataclasses.fields(Control)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown control option(s) {', '.join(unknown)}; lmm_scope_control() "
                         f"takes {', '.join(fields)}")
    return Control(**values)


def _core_fit(X, y, Z, groups, names, random_names, group_name, unpenalised, reml, selection,
              control=None):
    """The engine on R's arrays (:func:`lmmscope.engine.fit_rows`: the same checks as every
    front).  ``selection`` is None for a plain LMM, else the tuning keyword arguments
    (plus ``verbose`` and ``penalize_random_slopes``).  Returns (result, ML refit of the
    same columns)."""
    selection = dict(selection or {})
    verbose = selection.pop("verbose", False)
    slopes_penalised = selection.pop("penalize_random_slopes", False)
    tuning = TuningArguments(**selection) if selection else None
    if tuning is not None:
        unpenalised = with_random_slopes(names, random_names, sorted(set(unpenalised)), tuning.k,
                                         slopes_penalised, Progress(verbose))
    result = engine.fit_rows(X, y, Z, groups, names, random_names, group_name,
                             unpenalised=unpenalised, tuning=tuning, reml=reml,
                             control=control, verbose=verbose)
    return result, engine.ml_refit(result)


def _condvar(mixed) -> list:
    """Conditional covariance of each cluster's random effects, sigma^2 F_i'F_i
    (F_i = L_i^{-1} Lambda'), as lme4's ranef(condVar = TRUE): (clusters, q, q)."""
    F = mixed._sol.LinvLamT
    return (mixed.sigma ** 2 * np.swapaxes(F, 1, 2) @ F).tolist()


def _ml_summary(ml) -> dict:
    return {"loglik": float(ml.loglik), "deviance": float(ml.deviance),
            "n_params": int(ml.n_params), "fixef": ml.fixef.tolist(), "theta": ml.theta.tolist(),
            "sigma": float(ml.sigma)}


def _warning_list(caught) -> list:
    out = []
    for w in caught:
        cat = w.category.__name__
        text = str(w.message)
        if not any(o["category"] == cat and o["message"] == text for o in out):
            out.append({"category": cat, "message": text})
    return out


def _finish(result, ml, caught, inference=None) -> dict:
    out = result_payload(result, inference)
    out["ranef_condvar"] = _condvar(result.mixed)
    out["ml_refit"] = _ml_summary(ml)
    out["warnings"] = _warning_list(caught)
    return plain(out)


def _whole(value):
    """R's numbers are doubles: 5 arrives as 5.0 and becomes 5; anything else (2.5, NaN for
    NA, text) is passed on for the core's checks to refuse by name, never truncated."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fit_arrays(X, y, Z, groups, names, random_names, group_name, unpenalised=None, k=None,
               a=None, criterion="gic", k_max=None, cv_folds=5, reml=True, inference=None,
               conf_level=0.95, random_state=0, verbose=False, penalize_random_slopes=False,
               a_grid=None, control=None) -> dict:
    """Select and refit on R's design arrays; ``unpenalised``: 0-based column indices;
    ``control``: a dict of :class:`Control` fields."""
    y, X, Z, groups = _arrays(X, y, Z, groups)
    names, random_names = _names(names), _names(random_names)
    unpenalised = [int(j) for j in np.atleast_1d(unpenalised if unpenalised is not None else [])]
    selection = dict(k=_whole(k), a=a, criterion=criterion, k_max=_whole(k_max),
                     cv_folds=_whole(cv_folds),
                     a_grid=DEFAULT_A_GRID if a_grid is None else
                     tuple(float(v) for v in np.atleast_1d(a_grid)),
                     random_state=_whole(random_state), verbose=bool(verbose),
                     penalize_random_slopes=bool(penalize_random_slopes))
    try:
        checks.check_tuning_arguments(selection["k"], a, criterion, selection["k_max"],
                                      selection["cv_folds"], selection["a_grid"],
                                      "REML" if reml else "ML", selection["random_state"])
    except InputError as exc:  # in the words of R's lmm_scope(), whose argument is seed
        raise InputError(str(exc).replace("random_state", "seed")) from None
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, ml = _core_fit(X, y, Z, groups, names, random_names, str(group_name),
                               unpenalised, bool(reml), selection, control)
        # by default at fit time: the node-wise fits cost about the fit's own time
        # (bench/inference.py), and a saved R fit has no Python to compute them later
        if inference is None:
            gram_bytes = 2 * 8 * len(names) ** 2
            inference = gram_bytes <= INFERENCE_AUTO_GRAM_BYTES
            if not inference:
                warnings.warn(f"no debiased inference computed: the two {len(names)} x {len(names)} "
                              f"arrays it needs take {gram_bytes / 2**30:.1f} GiB; "
                              "pass inference = TRUE to compute it anyway")
        table = None
        if inference:
            tab = result.inference(level=float(conf_level), adjust="bh", verbose=verbose)
            table = inference_payload(tab, result.ngroups - 1, float(conf_level), "BH")
    return _finish(result, ml, caught, table)


def lmm_arrays(X, y, Z, groups, names, random_names, group_name, reml=True,
               control=None) -> dict:
    """Fit the LMM with every column of X (no selection), as lme4::lmer does."""
    y, X, Z, groups = _arrays(X, y, Z, groups)
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, ml = _core_fit(X, y, Z, groups, _names(names), _names(random_names),
                               str(group_name), [], bool(reml), None, control)
    return _finish(result, ml, caught)


__all__ = ["fit_arrays", "lmm_arrays"]
