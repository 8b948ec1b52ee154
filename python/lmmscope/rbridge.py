"""The R package's door into the core: plain values in, plain values out.

R hands over a data.frame as a dict of columns (numeric vectors as float arrays with
NaN for NA; factors as 0-based integer codes, -1 for NA, plus their levels), and gets
back dicts of lists, arrays and strings that reticulate turns into ordinary R values,
so an R fit object survives ``saveRDS`` without a live Python session.  Names are
converted to R's conventions: ``(Intercept)``, ``SexFemale``, backticks around
non-syntactic names.
"""

from __future__ import annotations

import base64
import pickle
import re

import numpy as np
import pandas as pd

from .api import lmm_scope
from .formula import INTERCEPT

_R_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
               "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in"}
_R_SYNTACTIC = re.compile(r"^((([A-Za-z]|[.][._A-Za-z])[._A-Za-z0-9]*)|[.])$")
INFERENCE_AUTO_MAX = 500
_LEVEL = re.compile(r"\[(?:T\.)?(.*)\]$")  # formulaic's "f[T.b]" or "f[b]"


def frame_from_columns(columns: dict, levels: dict) -> pd.DataFrame:
    """Rebuild R's data.frame: ``levels[name]`` marks a factor given as integer codes."""
    out = {}
    for name, values in columns.items():
        values = np.atleast_1d(np.asarray(values))  # reticulate turns length-1 vectors into scalars
        if name in levels:
            cats = [str(v) for v in np.atleast_1d(levels[name])]
            out[name] = pd.Categorical.from_codes(values.astype(np.int64), categories=cats)
        else:
            out[name] = values.astype(float)
    return pd.DataFrame(out)


def _quote_r(name: str) -> str:
    if _R_SYNTACTIC.match(name) and name not in _R_RESERVED:
        return name
    return "`" + name + "`"


def r_name(name: str, data_columns=()) -> str:
    """formulaic's column name in R's spelling (``f[T.b]:x`` -> ``fb:x``)."""
    if name == INTERCEPT:
        return "(Intercept)"
    parts = []
    for part in name.split(":"):
        m = _LEVEL.search(part)
        if m:
            part = _quote_r(part[:m.start()]) if part[:m.start()] in data_columns else part[:m.start()]
            parts.append(part + m.group(1))
        elif part in data_columns:
            parts.append(_quote_r(part))
        else:
            parts.append(part.replace(" ** ", "^").replace("**", "^"))
    return ":".join(parts)


def _matrix(df: pd.DataFrame) -> np.ndarray:
    return df.to_numpy(dtype=float)


def _plain(value):
    """Lists, floats and strings only: reticulate 1.28 leaves arrays inside dicts as
    Python objects.  Matrices go out flat in R's column-major order."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.ravel(order="F").tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _history(history: pd.DataFrame, names, rn) -> dict:
    """The a-tuning rounds as columns; index tuples of supports become name lists."""
    out = {}
    for c in history.columns:
        col = history[c]
        if col.dtype == object:
            out[c] = [", ".join(rn[names[j]] for j in v) if isinstance(v, (tuple, list, np.ndarray))
                      else str(v) for v in col]
        else:
            out[c] = col.tolist()
    return out


def fit(formula: str, columns: dict, levels: dict, k=None, a=None, always=None,
        criterion="gic", k_max=None, cv_folds=5, method="REML", inference=None,
        verbose=False) -> dict:
    """Fit ``lmm_scope`` on R's columns and return everything the R object stores."""
    import warnings

    data = frame_from_columns(columns, levels)
    if always is not None:
        always = [str(x) for x in np.atleast_1d(always)]
    k = int(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k
    k_max = None if k_max is None else int(k_max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the R side reports dropped rows itself
        res = lmm_scope(formula, data, k=k, a=a, always=always, criterion=criterion,
                        k_max=k_max, cv_folds=int(cv_folds), method=method, verbose=verbose)
    cols = set(data.columns)
    names = [r_name(n, cols) for n in res.names]
    rn = dict(zip(res.names, names))
    rand = [r_name(n, cols) for n in res.mixed.random_names]
    fixef = res.fixef
    vcov = res.vcov()
    path = res.path.copy()
    path["support"] = [", ".join(rn[n] for n in row.split(", ")) if row else ""
                       for row in res.path["support"]]
    predictor = res.predictor()
    if inference is None:  # automatic: cheap enough below ~500 candidates (seconds)
        inference = len(res.names) <= INFERENCE_AUTO_MAX
    table = res.inference(adjust=None, verbose=verbose) if inference else None
    return _plain({
        "inference": None if table is None else {
            "term": [rn[n] for n in table.index], "estimate": table["estimate"].to_numpy(),
            "std_error": table["std_error"].to_numpy(), "df": res.ngroups - 1},
        "names": names, "coef": res.coef.to_numpy(), "support": [rn[n] for n in res.support],
        "selected": [rn[n] for n in res.selected], "unpenalised": [rn[n] for n in res.unpenalised],
        "k": res.k, "a": res.a, "criterion": res.criterion,
        "a_history": _history(res.a_history, res.names, rn),
        "fixef_names": [rn[n] for n in fixef.index], "fixef": fixef.to_numpy(),
        "vcov": _matrix(vcov), "sigma": float(res.sigma), "psi": np.asarray(res.psi, float),
        "random_names": rand, "group_name": res.mixed.group_name,
        "group_labels": [str(g) for g in res.mixed.group_labels.tolist()],
        "ranef": _matrix(res.ranef), "loglik": float(res.loglik), "df": int(res.mixed.n_params),
        "deviance": float(res.mixed.deviance), "nobs": int(res.nobs), "ngroups": int(res.ngroups),
        "method": res.method, "singular": bool(res.singular), "n_dropped": int(res.n_dropped),
        "dropped_rows": [int(i) + 1 for i in res.design.dropped_rows],  # R's 1-based rows
        "fitted": res.fitted(), "fitted_population": res.predict(level=0), "residuals": res.residuals(), "response": res.design.response_name,
        "path": {c: path[c].tolist() for c in path.columns},
        "coef_path": _matrix(res.coef_path), "path_k": res.coef_path.index.to_numpy(),
        "predictor": base64.b64encode(pickle.dumps(predictor)).decode("ascii"),
    })


def predict(predictor: str, columns: dict, levels: dict, level: int = 0) -> np.ndarray:
    """Predictions for R's new data from a stored :class:`Predictor` (pickle, base64 text)."""
    model = pickle.loads(base64.b64decode(predictor))
    return model.predict(frame_from_columns(columns, levels), level=int(level)).tolist()


__all__ = ["fit", "predict", "frame_from_columns", "r_name"]
