"""Check a fit against R's reference implementation, ``lme4::lmer``, in one call.

``check_against_lme4(fit)`` refits the model that ``fit`` ended with (for
``lmm_scope``: the selected columns plus the unpenalised ones) with lme4 through rpy2
and compares every reported quantity.  The refit uses the fit's own design columns
(not the formula), so factors need no care: a factor enters both fits as the same
0/1 columns, with the same reference level, whatever R's contrasts would choose.

How two values are compared: ``rel_diff = |ours - lme4| / max(|lme4|, scale)``, where
``scale`` is the unit the quantity is estimated on, so that a value near 0 is judged
against its own precision rather than against 0:

* fixed effect: its standard error (lme4's);
* random-effect SD, residual sigma, conditional prediction: lme4's sigma (theta =
  SD / sigma is what both optimisers work on);
* correlation: 1 (absolute difference), or sigma / the smaller of its two SDs when that
  is larger: the correlation is only determined to theta's precision divided by the
  smaller theta (a slope with SD 0.04 sigma leaves it flat: sleepstudy-like data showed
  2e-6 between two optima whose deviances agree to 1e-12);
* isSingular: 1 (absolute difference);
* logLik and the deviance at our theta: 1 (absolute: log-likelihood differences are
  absolute quantities, e.g. in likelihood-ratio tests).

A correlation involving a random-effect SD below ``tol * sigma`` in lme4 is not
identified (a singular fit) and is reported with status ``not_identified``.

lme4 runs BOBYQA with ``rhoend = 1e-12`` (its default stops early: on Orthodont by ML
5e-7 deviance units above the optimum).  When some quantity still differs, lme4's own
deviance function (``lmer(..., devFunOnly = TRUE)``) is evaluated at both optima; if
ours is lower, lme4 is re-evaluated at our theta (``lmerControl(optimizer = NULL)``)
and rows that agree with that are marked ``lme4_optimum_worse`` instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import re

import numpy as np
import pandas as pd

LMER_CONTROL = "lme4::lmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-12, maxfun = 1e5))"
INSTALL_HINT = ("check_against_lme4 needs rpy2 (pip install 'lmmscope[r]'), R, and the R package "
                "lme4 (in R: install.packages('lme4'); Debian/Ubuntu: apt install r-cran-lme4)")
_LME4 = "lme4"  # the R package required (a name the tests can replace)
N_PREDICTIONS = 10  # conditional predictions compared (rows spread over the data)

# One R function does the whole refit, so a single round trip through rpy2 suffices.
_R_REFIT = """
function(formula, d, reml, theta_ours, at_ours) tryCatch({
  notes <- character()
  note <- function(restart) function(cond) {
    notes <<- c(notes, trimws(conditionMessage(cond))); invokeRestart(restart)
  }
  quietly <- function(expr) withCallingHandlers(expr, warning = note("muffleWarning"),
                                                message = note("muffleMessage"))
  ctrl <- if (at_ours) lme4::lmerControl(optimizer = NULL) else %s
  f <- stats::as.formula(formula)
  start <- if (at_ours) list(theta = theta_ours) else NULL
  m <- quietly(lme4::lmer(f, data = d, REML = reml, control = ctrl, start = start))
  devfun <- quietly(lme4::lmer(f, data = d, REML = reml, control = ctrl, devFunOnly = TRUE))
  vc <- as.data.frame(lme4::VarCorr(m))
  blank <- function(v) ifelse(is.na(v), "", as.character(v))
  theta <- unname(lme4::getME(m, "theta"))
  list(fixef = lme4::fixef(m), se = unname(sqrt(diag(as.matrix(stats::vcov(m))))),
       grp = blank(vc$grp), var1 = blank(vc$var1), var2 = blank(vc$var2), sdcor = vc$sdcor,
       sigma = stats::sigma(m), loglik = as.numeric(stats::logLik(m)),
       fitted = unname(stats::fitted(m)), theta = theta, singular = lme4::isSingular(m),
       dev_at_ours = devfun(theta_ours), dev_at_lme4 = devfun(theta), notes = notes)
}, error = function(e) list(error = conditionMessage(e)))
""" % LMER_CONTROL


class Lme4Unavailable(ImportError):
    """rpy2, R or the R package lme4 is missing: the message says which and how to install."""


@dataclass
class Lme4Check:
    """The outcome of :func:`check_against_lme4`.

    ``table``: one row per quantity (quantity, lmmscope, lme4, abs_diff, rel_diff,
    status); ``passed``: no row has status ``FAIL``; ``formula``: the lme4 formula
    used, on the columns of ``data`` (write ``data`` to CSV to rerun it in R, see
    ``r_code``).  ``deviance_at_lmmscope`` / ``deviance_at_lme4``: lme4's own deviance
    function (REML criterion for REML) at our theta and at lme4's.
    """

    table: pd.DataFrame
    passed: bool
    formula: str
    tol: float
    method: str
    deviance_at_lmmscope: float
    deviance_at_lme4: float
    lme4_optimum_worse: bool
    singular_lmmscope: bool
    singular_lme4: bool
    lme4_messages: list = field(default_factory=list)
    data: pd.DataFrame = field(default=None, repr=False)
    group: str = ""

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "FAIL"]

    @property
    def r_code(self) -> str:
        """R code that reruns lme4's fit on ``data`` saved as ``validate_data.csv``."""
        reml = "TRUE" if self.method == "REML" else "FALSE"
        return (f"d <- read.csv('validate_data.csv')\nd${self.group} <- factor(d${self.group})\n"
                f"m <- lme4::lmer({self.formula}, data = d, REML = {reml},\n"
                f"                control = {LMER_CONTROL})")

    def verdict(self) -> str:
        dev = (f"lme4's deviance function: {self.deviance_at_lmmscope:.10g} at lmmscope's theta, "
               f"{self.deviance_at_lme4:.10g} at lme4's")
        sing = f"isSingular: lmmscope {self.singular_lmmscope}, lme4 {self.singular_lme4}"
        if not self.passed:
            names = ", ".join(self.failures["quantity"])
            head = f"FAILED at tol = {self.tol:g}: {len(self.failures)} quantities differ ({names})"
        elif self.lme4_optimum_worse:
            head = (f"PASSED at tol = {self.tol:g}, but lme4's optimum is worse than lmmscope's: "
                    "rows marked lme4_optimum_worse agree with lme4 evaluated at lmmscope's theta")
        else:
            max_rel = np.nanmax(self.table["rel_diff"].to_numpy(dtype=float))
            head = f"PASSED at tol = {self.tol:g} (largest relative difference {max_rel:.2g})"
        return "\n".join([head, dev, sing])

    def __str__(self):
        with pd.option_context("display.max_rows", 500, "display.width", 200):
            body = self.table.to_string(index=False, float_format=lambda v: f"{v:.10g}")
        return "\n".join([f"lmmscope vs lme4::lmer ({self.method}): {self.formula}", body, self.verdict()])

    __repr__ = __str__


def _r():
    """rpy2's robjects with lme4 loaded, or :class:`Lme4Unavailable` naming what is missing."""
    try:
        import rpy2.robjects as ro
    except ImportError as exc:
        raise Lme4Unavailable(f"{INSTALL_HINT}: rpy2 is not installed ({exc})") from exc
    except Exception as exc:  # rpy2 present but R cannot be found or started
        raise Lme4Unavailable(f"{INSTALL_HINT}: R could not be started through rpy2 ({exc})") from exc
    if not ro.r["requireNamespace"](_LME4, quietly=True)[0]:
        raise Lme4Unavailable(f"{INSTALL_HINT}: the R package {_LME4} is not installed in R "
                              f"(library paths: {', '.join(ro.r['.libPaths']())})")
    return ro


_R_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
               "NULL", "Inf", "NaN", "NA", "in", "T", "F"}


def _safe_name(name, taken: set) -> str:
    """An R-syntactic column name for ``name`` that is not in ``taken`` (then added to it)."""
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", str(name)).strip("_") or "v"
    if not re.match(r"[A-Za-z]", safe) or safe in _R_RESERVED:
        safe = "v_" + safe
    base, i = safe, 2
    while safe in taken:
        safe, i = f"{base}_{i}", i + 1
    taken.add(safe)
    return safe


def _terms(M: np.ndarray, names, data: dict, taken: set):
    """Formula terms for the columns of ``M`` (added to ``data``) and lme4's coefficient names.

    A leading all-ones column becomes lme4's ``1`` (named "(Intercept)"), otherwise ``0``
    suppresses lme4's implicit intercept; a column equal to one already in ``data`` under
    the same name (a slope also among the fixed effects) is reused, for a readable formula.
    """
    intercept = M.shape[1] > 0 and bool(np.all(M[:, 0] == 1))
    terms, keys = ["1" if intercept else "0"], []
    for j, name in enumerate(names):
        if j == 0 and intercept:
            keys.append("(Intercept)")
            continue
        column = np.asarray(M[:, j], dtype=float)
        candidate = _safe_name(name, set())
        if candidate in data and np.array_equal(data[candidate], column):
            safe = candidate
        else:
            safe = _safe_name(name, taken)
            data[safe] = column
        terms.append(safe)
        keys.append(safe)
    return terms, keys


@dataclass
class _Lme4Design:
    frame: pd.DataFrame
    formula: str
    group: str
    fixed_keys: list  # lme4's name of each of our fixed effects, in our order
    random_keys: list  # lme4's name of each of our random-effect columns


def _lme4_design(result, fit) -> _Lme4Design:
    """The fit's own design columns as a data frame with R-safe names, and the lme4 formula."""
    X = np.asarray(result._X[:, np.asarray(result._refit_columns)], dtype=float)
    response = result.design.response_name if result.design is not None else "y"
    taken: set = set()
    y_name = _safe_name(response, taken)
    group = _safe_name(fit.group_name, taken)
    data = {y_name: np.asarray(result._y, dtype=float)}
    fixed_terms, fixed_keys = _terms(X.reshape(X.shape[0], -1), fit.fixed_names, data, taken)
    random_terms, random_keys = _terms(np.asarray(result._Z, dtype=float), fit.random_names, data, taken)
    data[group] = np.asarray(result._group_labels)[result._codes].astype(str)
    formula = f"{y_name} ~ {' + '.join(fixed_terms)} + ({' + '.join(random_terms)} | {group})"
    return _Lme4Design(pd.DataFrame(data), formula, group, fixed_keys, random_keys)


def _our_fit(result, method):
    """The fit's own (RE)ML refit, or the same columns refitted by the other ``method``."""
    own = result.mixed
    if method is None or method == own.method:
        return own
    if method not in ("REML", "ML"):
        raise ValueError(f"method must be None (the fit's own), 'REML' or 'ML', got {method!r}")
    from .cluster_stats import compute_cluster_stats
    from .mixed import MixedModelFit

    X = np.asarray(result._X[:, np.asarray(result._refit_columns)], dtype=float)
    stats = compute_cluster_stats(X, np.asarray(result._y, dtype=float), np.asarray(result._Z, dtype=float),
                                  result._codes, len(result._group_labels))
    return MixedModelFit(stats, own.fixed_names, own.random_names, own.group_labels,
                         own.group_name, reml=method == "REML")


def _r_frame(ro, frame: pd.DataFrame, group: str):
    columns = {name: (ro.FactorVector(ro.StrVector(list(values))) if name == group
                      else ro.FloatVector(values)) for name, values in frame.items()}
    return ro.DataFrame(columns)


def _lmer(ro, r_data, formula: str, reml: bool, theta, at_ours: bool) -> dict:
    """lme4's numbers for the model (at its optimum, or at ``theta`` when ``at_ours``)."""
    res = ro.r(_R_REFIT)(formula, r_data, reml, ro.FloatVector(theta), at_ours)
    out = {name: res.rx2(name) for name in res.names}
    if "error" in out:
        raise RuntimeError(f"lme4::lmer refused the model {formula}: {out['error'][0].strip()}")
    strings = {"grp", "var1", "var2", "notes"}
    converted = {name: (list(v) if name in strings else np.asarray(v, dtype=float)) for name, v in out.items()}
    converted["fixef_names"] = list(out["fixef"].names) if len(out["fixef"]) else []
    converted["singular"] = bool(out["singular"][0])
    return converted


def _prediction_rows(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, N_PREDICTIONS)).round().astype(int))


def _our_predictions(result, fit, rows) -> np.ndarray:
    """Conditional predictions X beta + Z b of ``fit`` on ``rows`` of the data."""
    X = np.asarray(result._X[rows][:, np.asarray(result._refit_columns)], dtype=float)
    Z = np.asarray(result._Z, dtype=float)[rows]
    B = fit.ranef.to_numpy()[result._codes[rows]]
    return X.reshape(len(rows), -1) @ fit.fixef.to_numpy() + np.einsum("ij,ij->i", Z, B)


def _variance_quantities(fit, ref, design, tol):
    """(quantity, ours, lme4, scale, identified) for each SD and correlation in lme4's VarCorr."""
    index = {key: i for i, key in enumerate(design.random_keys)}
    sd = np.sqrt(np.clip(np.diag(fit.psi), 0, None))
    sd_ref = {v1: value for grp, v1, v2, value in zip(ref["grp"], ref["var1"], ref["var2"], ref["sdcor"])
              if grp != "Residual" and v2 == ""}
    sigma, label = float(ref["sigma"][0]), fit.group_name
    out = []
    for grp, v1, v2, value in zip(ref["grp"], ref["var1"], ref["var2"], ref["sdcor"]):
        if grp == "Residual":
            continue
        i = index[v1]
        if v2 == "":
            out.append((f"sd[{label}: {fit.random_names[i]}]", sd[i], value, sigma, True))
        else:
            j = index[v2]
            smaller = min(sd_ref[v1], sd_ref[v2])
            scale = max(1.0, sigma / smaller) if smaller > 0 else np.inf
            out.append((f"cor[{label}: {fit.random_names[i]}, {fit.random_names[j]}]",
                        fit.corr[i, j], value, scale, smaller >= tol * sigma))
    return out


def _quantities(result, fit, ref, design, tol, rows):
    """Every compared quantity: (name, lmmscope, lme4, scale, identified)."""
    fixef = dict(zip(ref["fixef_names"], ref["fixef"]))
    se = dict(zip(ref["fixef_names"], ref["se"]))
    sigma = float(ref["sigma"][0])
    out = [(f"fixef[{name}]", fit.fixef[name], fixef[key], se[key], True)
           for name, key in zip(fit.fixed_names, design.fixed_keys)]
    out += _variance_quantities(fit, ref, design, tol)
    out.append(("sigma", fit.sigma, sigma, sigma, True))
    out.append(("logLik", fit.loglik, float(ref["loglik"][0]), 1.0, True))
    out.append(("deviance at lmmscope's theta", fit.deviance, float(ref["dev_at_ours"][0]), 1.0, True))
    ours = _our_predictions(result, fit, rows)
    out += [(f"fitted[row {r}]", o, ref["fitted"][r], sigma, True) for r, o in zip(rows, ours)]
    out.append(("isSingular", float(fit.singular), float(ref["singular"]), 1.0, True))
    return out


def _relative(ours, ref, scale):
    with np.errstate(invalid="ignore"):
        diff = np.abs(ours - ref)
        return diff, diff / np.maximum(np.abs(ref), scale)


def _table(quantities, tol, at_ours=None) -> pd.DataFrame:
    names, ours, ref, scale, identified = (np.array(v, dtype=object) for v in zip(*quantities))
    ours, ref, scale = (np.asarray(v, dtype=float) for v in (ours, ref, scale))
    abs_diff, rel_diff = _relative(ours, ref, scale)
    both_undefined = np.isnan(ours) & np.isnan(ref)
    ok = (rel_diff <= tol) | both_undefined
    status = np.where(ok, "ok", "FAIL").astype(object)
    status[~identified.astype(bool) & ~ok] = "not_identified"
    if at_ours is not None:  # lme4's optimum is worse: judge the rest against lme4 at our theta
        near = _relative(ours, np.asarray([q[2] for q in at_ours], dtype=float), scale)[1] <= tol
        status[(status == "FAIL") & near] = "lme4_optimum_worse"
    return pd.DataFrame({"quantity": names.astype(str), "lmmscope": ours, "lme4": ref,
                         "abs_diff": abs_diff, "rel_diff": rel_diff, "status": status})


def check_against_lme4(result, tol: float = 1e-6, method=None) -> Lme4Check:
    """Refit ``result``'s final model with ``lme4::lmer`` (via rpy2) and compare every quantity.

    ``result``: an :class:`~lmmscope.LmmScopeResult` (the selected columns plus the
    unpenalised ones are refitted) or an :class:`~lmmscope.LmmResult`.  ``method``:
    None (the fit's own REML/ML), "REML" or "ML" (both sides refitted by it).  See the
    module docstring for the relative difference and the statuses.  Raises
    :class:`Lme4Unavailable` (an ImportError) when rpy2, R or lme4 is missing.
    """
    from .results import MixedResult

    if not isinstance(result, MixedResult):
        raise TypeError(f"check_against_lme4 needs a result of lmm_scope() or lmm(), got {type(result).__name__}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    fit = _our_fit(result, method)
    ro = _r()
    design = _lme4_design(result, fit)
    r_data = _r_frame(ro, design.frame, design.group)
    reml = fit.method == "REML"
    ref = _lmer(ro, r_data, design.formula, reml, fit.theta, at_ours=False)
    rows = _prediction_rows(len(design.frame))
    quantities = _quantities(result, fit, ref, design, tol, rows)
    table = _table(quantities, tol)
    dev_ours, dev_lme4 = float(ref["dev_at_ours"][0]), float(ref["dev_at_lme4"][0])
    worse = bool((table["status"] == "FAIL").any() and dev_ours < dev_lme4)
    if worse:
        at = _lmer(ro, r_data, design.formula, reml, fit.theta, at_ours=True)
        table = _table(quantities, tol, at_ours=_quantities(result, fit, at, design, tol, rows))
    return Lme4Check(table=table, passed=not (table["status"] == "FAIL").any(), formula=design.formula,
                     tol=tol, method=fit.method, deviance_at_lmmscope=dev_ours, deviance_at_lme4=dev_lme4,
                     lme4_optimum_worse=worse, singular_lmmscope=bool(fit.singular),
                     singular_lme4=ref["singular"], lme4_messages=list(ref["notes"]),
                     data=design.frame, group=design.group)


def _read_table(path: str) -> pd.DataFrame:
    if str(path).lower().endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _parse_tuning(value, name, cast):
    if value is None or value == "cv" or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or 'cv', got {value!r}") from None


def cli_validate(data_path, formula, tol=1e-6, method=None, k=None, a=None) -> int:
    """``lmmscope validate data.csv --formula ...``: fit, compare with lme4, print the table.

    The model checked is the one ``lmmscope fit`` reports for the same arguments:
    ``lmm_scope(formula, data, k=k, a=a, method=method or "REML")``, i.e. the selected
    columns plus the unpenalised ones (to check the full model, pass k = the number of
    candidate columns).  ``data_path``: a CSV file, or Parquet (.parquet/.pq).
    Returns 0 when every quantity agrees within ``tol``, 1 when one does not, 2 for a
    usage error (bad file, formula, option, or R/rpy2/lme4 missing), with a one-line
    message on stderr.
    """
    import sys

    from .api import lmm_scope

    try:
        tol = float(tol)
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        data = _read_table(data_path)
        fit = lmm_scope(formula, data, k=_parse_tuning(k, "k", int), a=_parse_tuning(a, "a", float),
                        method=method or "REML")
        check = check_against_lme4(fit, tol=tol)
    except (ValueError, KeyError, TypeError, OSError, ImportError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lmmscope validate: error: {message}", file=sys.stderr)
        return 2
    print(check)
    return 0 if check.passed else 1
