"""One versioned plain-values form of a fitted result, shared by the CLI's JSON and by R.

``result_payload(result)`` turns an :class:`~lmmscope.results.LmmScopeResult` or an
:class:`~lmmscope.results.LmmResult` into lists, floats, ints, strings, bools, None and
dicts only: no numpy or pandas objects, nothing that needs lmmscope to read back.
Matrices are lists of rows (row-major).  Bump ``SCHEMA_VERSION`` when a field changes
meaning or disappears; adding a field does not need a bump.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1


def plain(value):
    """Recursively convert numpy / pandas values into Python builtins (matrices: row lists)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return value.to_numpy().tolist()
    if isinstance(value, pd.Series):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def inference_payload(table: pd.DataFrame | None, df, level, adjust) -> dict | None:
    """The debiased-inference table as columns, with its reference df, level and adjustment."""
    if table is None:
        return None
    return {"term": [str(t) for t in table.index], "estimate": table["estimate"],
            "std_error": table["std_error"], "t": table["t"],
            "p_value": table["p_value"], "ci_lower": table["ci_lower"],
            "ci_upper": table["ci_upper"], "p_adjusted": table["p_adjusted"],
            "df": df, "level": level, "adjust": adjust}


def _mixed_payload(mixed) -> dict:
    """The (RE)ML fit on the model's fixed effects, in lme4's quantities and order."""
    sol = mixed._sol
    return {
        "method": mixed.method, "fixef_names": list(mixed.fixed_names), "fixef": mixed.fixef,
        "vcov": mixed.vcov_matrix, "sigma": float(mixed.sigma), "theta": mixed.theta,
        "psi": np.asarray(mixed.psi, float), "random_names": list(mixed.random_names),
        "group_name": str(mixed.group_name),
        "group_labels": [str(g) for g in mixed.group_labels.tolist()],
        "ranef": mixed.ranef, "loglik": float(mixed.loglik), "aic": float(mixed.aic),
        "bic": float(mixed.bic), "n_params": int(mixed.n_params),
        "deviance": float(mixed.deviance),
        # both criteria at these estimates, as lme4's devcomp holds them
        "deviance_ml_at_estimates": float(sol.deviance_ml),
        "deviance_reml_at_estimates": float(sol.deviance_reml),
        "nobs": int(mixed.nobs), "ngroups": int(mixed.ngroups), "singular": bool(mixed.singular),
        "converged": bool(mixed.converged),
        "convergence_messages": list(mixed.convergence_messages),
        "optimizer_message": str(mixed.optimizer_message),
    }


def _selection_payload(result) -> dict:
    names = list(result.names)
    path = result.path.copy()
    history = result.a_history.copy() if result.a_history is not None else pd.DataFrame()
    for c in history.columns:  # index tuples of supports become name lists
        if history[c].dtype == object:
            history[c] = [", ".join(names[j] for j in v) if isinstance(v, (tuple, list, np.ndarray))
                          else str(v) for v in history[c]]
    return {
        "names": names, "coef": result.coef, "support": list(result.support),
        "selected": list(result.selected), "unpenalised": list(result.unpenalised),
        "k": int(result.k), "a": float(result.a), "criterion": str(result.criterion),
        "path": {str(c): path[c].tolist() for c in path.columns},
        "coef_path": {"k": result.coef_path.index.tolist(), "coef": result.coef_path.to_numpy()},
        "a_history": {str(c): history[c].tolist() for c in history.columns},
    }


def result_payload(result, inference: dict | None = None) -> dict:
    """Plain values of a fitted result (``LmmScopeResult`` or ``LmmResult``), versioned.

    ``inference`` is an :func:`inference_payload` (computed by the caller, since it can
    be expensive); None leaves the field empty.
    """
    selection = hasattr(result, "selection")
    out = {"schema_version": SCHEMA_VERSION, "kind": "lmm_scope" if selection else "lmm"}
    out.update(_selection_payload(result) if selection else
               {"names": list(result.mixed.fixed_names), "coef": result.mixed.fixef,
                "support": [], "selected": list(result.mixed.fixed_names), "unpenalised": [],
                "k": None, "a": None, "criterion": None, "path": None, "coef_path": None,
                "a_history": None})
    out.update(_mixed_payload(result.mixed))
    out["n_dropped"] = int(getattr(result, "n_dropped", 0) or 0)
    # the core's rank decision (lme4's rule on the centred Gram), for R to take, not redo
    out["dropped_columns"] = [str(n) for n in getattr(result, "dropped_columns", [])]
    out["inference"] = inference
    return plain(out)


__all__ = ["SCHEMA_VERSION", "result_payload", "inference_payload", "plain"]
