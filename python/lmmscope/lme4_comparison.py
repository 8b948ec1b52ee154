"""The comparison of a fit with ``lme4::lmer``: the one used by Python
(``fit.check_against_lme4()``, ``lmmscope validate``), the R package
(``check_against_lmer()``, through reticulate) and the tests.

:func:`compare_values` compares two :class:`FitValues`: ours (from a Python result by
:func:`fit_values`, or R's plain values) and lme4's, as ``lme4_reference.R``
(:data:`REFERENCE_R`, shipped beside this module) returns them; :meth:`FitValues.from_plain`
accepts rpy2's and reticulate's conversions of R's plain values.  Pure Python: R is
run by :mod:`lmmscope.validate` (Python) or by the R package itself.

Each random-effects term is compared (its SDs, correlations and conditional modes), so
models with several terms (crossed or nested) compare like one-term models.
How two values are compared: ``rel_diff = |ours - lme4| / max(|lme4|, scale)``, where
``scale`` is the unit the quantity is estimated on, so that a value near 0 is judged
against its own precision rather than against 0:

* fixed effect: its standard error (lme4's); standard error: 0 (plain relative);
* random-effect SD, residual sigma, fitted value, conditional mode: lme4's sigma (theta
  = SD / sigma is what both optimisers work on);
* correlation: 1, or sigma / the smaller of its two SDs when that is larger: the
  correlation is only determined to theta's precision divided by the smaller theta (a
  slope with SD 0.04 sigma leaves it flat: sleepstudy-like data showed 2e-6 between two
  optima whose deviances agree to 1e-12);
* logLik, AIC, BIC, the deviance at our theta and isSingular: absolute differences
  (log-likelihood differences are absolute quantities, as in likelihood-ratio tests).

Fitted values and conditional modes are compared element by element; the table shows the
row (for each term and column, the level) with the largest difference.  A quantity
present on one side only is a failure.  A correlation involving a random-effect SD below
``tol * sigma`` in lme4 is not identified (a singular fit): status ``not_identified``.
When something differs and lme4's own deviance function (``devFunOnly = TRUE``) is lower
at our theta than at lme4's optimum, lme4 evaluated at our theta decides: rows that agree
with it get status ``lme4_optimum_worse`` instead of ``FAIL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import InputError

__all__ = ["FitValues", "Lme4Check", "REFERENCE_R", "compare_values", "fit_values", "kind_of"]

# lme4's side of the comparison: builds lmer's data and formula from a fit's own design
# columns, fits lmer, returns plain values with our names (R sources it; validate runs it)
REFERENCE_R = Path(__file__).with_name("lme4_reference.R")

# kinds of quantity compared by their absolute difference (see the module docstring)
_ABSOLUTE = {"logLik", "AIC", "BIC", "deviance", "isSingular"}
# Conditional modes are judged at 10 x tol unless told otherwise: where a random
# intercept and an uncentred slope trade off they are determined less precisely than the
# fitted values (Orthodont by ML: 1.1e-6 against 6e-8 for the fitted values, measured
# with both optima 2e-12 deviance units apart).
_LOOSER = {"ranef": 10.0}


def kind_of(quantity: str) -> str:
    """The kind of a table row: its name up to "[" or the first space ("fixef", "sd", ...)."""
    return quantity.split("[", 1)[0].split(" ", 1)[0]


@dataclass
class FitValues:
    """The compared numbers of one fit, with plain types and lmmscope's names.

    ``fixef``/``se``: Series by coefficient name; ``varcorr``: lme4's
    ``as.data.frame(VarCorr())`` layout with columns grp, var1, var2 ("" when absent),
    sdcor (the residual row has grp "Residual"); ``ranef``: long format, columns grp,
    term, level (str), value, or None; ``fitted``: conditional fitted values, or None.
    """

    method: str
    fixef: pd.Series
    se: pd.Series
    varcorr: pd.DataFrame
    sigma: float
    loglik: float
    aic: float
    bic: float
    theta: np.ndarray
    singular: bool
    fitted: np.ndarray | None = None
    ranef: pd.DataFrame | None = None

    @classmethod
    def from_plain(cls, values: dict) -> "FitValues":
        """From the plain values of ``lme4_reference.R``'s ``lmer_values()``, as rpy2
        (via :func:`from_r`) or reticulate (R lists as dicts, vectors as lists or
        scalars, data frames as pandas) hands them over."""
        fixef = _frame(values["fixef"])
        names = [str(n) for n in _vector(fixef["name"])] if len(fixef) else []
        varcorr = _frame(values["varcorr"])
        for column in ("grp", "var1", "var2"):
            varcorr[column] = [str(v) for v in _vector(varcorr[column])]
        ranef = values.get("ranef")
        if ranef is not None:
            ranef = _frame(ranef)
            ranef = ranef.assign(level=[str(v) for v in _vector(ranef["level"])])
        fitted = values.get("fitted")
        return cls(method=str(_scalar(values["method"])),
                   fixef=pd.Series(_vector(fixef["estimate"]) if names else [], index=names, dtype=float),
                   se=pd.Series(_vector(fixef["se"]) if names else [], index=names, dtype=float),
                   varcorr=varcorr.assign(sdcor=_vector(varcorr["sdcor"])),
                   sigma=float(_scalar(values["sigma"])), loglik=float(_scalar(values["loglik"])),
                   aic=float(_scalar(values["aic"])), bic=float(_scalar(values["bic"])),
                   theta=_vector(values["theta"]), singular=bool(_scalar(values["singular"])),
                   fitted=None if fitted is None else _vector(fitted), ranef=ranef)


def _frame(table) -> pd.DataFrame:
    """A data frame from pandas or a dict of columns (reticulate hands a one-row
    data.frame over as scalars)."""
    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True)
    return pd.DataFrame({name: _vector(column) for name, column in dict(table).items()})


def _vector(v) -> np.ndarray:
    return np.atleast_1d(np.asarray(v if not isinstance(v, pd.Series) else v.to_numpy()))


def _scalar(v):
    return _vector(v)[0] if not isinstance(v, (str, bool, int, float)) else v


def _varcorr_rows(varcorr: pd.DataFrame) -> pd.DataFrame:
    """A result's ``varcorr`` (group, var1, var2, variance, std_dev) in lme4's layout."""
    blank = lambda column: ["" if pd.isna(v) else str(v) for v in varcorr[column]]  # noqa: E731
    return pd.DataFrame({"grp": [str(g) for g in varcorr["group"]], "var1": blank("var1"),
                         "var2": blank("var2"), "sdcor": varcorr["std_dev"].to_numpy(dtype=float)})


def _long_ranef(tables: dict) -> pd.DataFrame:
    """{group name: levels x columns} as rows (grp, term, level, value)."""
    parts = [pd.DataFrame({"grp": str(group), "term": str(term),
                           "level": frame.index.astype(str), "value": frame[term].to_numpy(dtype=float)})
             for group, frame in tables.items() for term in frame.columns]
    return pd.concat(parts, ignore_index=True) if parts else None


def fit_values(result, mixed=None) -> FitValues:
    """The compared numbers of a result of :func:`lmmscope.lmm` or :func:`lmmscope.lmm_scope`
    (one or several random-effects terms).  ``mixed``: another (RE)ML fit of the same
    model (a one-term ``MixedModelFit``) to take the numbers from."""
    fit = result.mixed if mixed is None else mixed
    if hasattr(result, "reterms"):
        ranef, fitted = _long_ranef(fit.ranef), _several_terms_fitted(result, fit)
    else:
        ranef = _long_ranef({fit.group_name: fit.ranef})
        X = np.asarray(result._X[:, np.asarray(result._refit_columns)], dtype=float).reshape(len(result._y), -1)
        B = fit.ranef.to_numpy()[result._codes]
        fitted = X @ fit.fixef.to_numpy() + np.einsum("ij,ij->i", np.asarray(result._Z, dtype=float), B)
    return FitValues(method=fit.method, fixef=fit.fixef.astype(float), se=fit.bse.astype(float),
                     varcorr=_varcorr_rows(fit.varcorr), sigma=float(fit.sigma),
                     loglik=float(fit.loglik), aic=float(fit.aic), bic=float(fit.bic),
                     theta=np.asarray(fit.theta, dtype=float), singular=bool(fit.singular),
                     fitted=fitted, ranef=ranef)


def _several_terms_fitted(result, fit) -> np.ndarray:
    return np.asarray(result._X, dtype=float) @ fit.fixef.to_numpy() + result.reterms.Zt.T @ fit.b


@dataclass
class _Quantity:
    name: str
    kind: str  # fixef, se, sd, cor, sigma, logLik, AIC, BIC, deviance, fitted, ranef, isSingular
    key: tuple  # what matches it across fits; fitted/ranef rows share their group's key[0]
    ours: float
    ref: float
    scale: float  # unused for the absolute kinds
    identified: bool = True


def _keyed(frame: pd.DataFrame, columns) -> list:
    """Row keys of ``frame`` on ``columns``, with an occurrence count for repeats."""
    seen: dict = {}
    out = []
    for row in frame[list(columns)].itertuples(index=False):
        seen[row] = seen.get(row, -1) + 1
        out.append((*row, seen[row]))
    return out


def _union(a: list, b: list) -> list:
    return a + [k for k in b if k not in set(a)]


def _quantities(ours: FitValues, ref: FitValues, tol_of, deviance_at_ours=None) -> list:
    """Every compared quantity of ``ours`` against ``ref`` (lme4's)."""
    sigma = ref.sigma
    out = []
    for name in _union(list(ours.fixef.index), list(ref.fixef.index)):
        out.append(_Quantity(f"fixef[{name}]", "fixef", ("fixef", name), ours.fixef.get(name, np.nan),
                             ref.fixef.get(name, np.nan), ref.se.get(name, np.nan)))
    for name in _union(list(ours.se.index), list(ref.se.index)):
        out.append(_Quantity(f"se[{name}]", "se", ("se", name), ours.se.get(name, np.nan),
                             ref.se.get(name, np.nan), 0.0))
    out += _variance_quantities(ours, ref, tol_of("cor"))
    out.append(_Quantity("sigma", "sigma", ("sigma",), ours.sigma, sigma, sigma))
    out.append(_Quantity("logLik", "logLik", ("logLik",), ours.loglik, ref.loglik, 0.0))
    out.append(_Quantity("AIC", "AIC", ("AIC",), ours.aic, ref.aic, 0.0))
    out.append(_Quantity("BIC", "BIC", ("BIC",), ours.bic, ref.bic, 0.0))
    if deviance_at_ours is not None:
        out.append(_Quantity("deviance at lmmscope's theta", "deviance", ("deviance",),
                             -2 * ours.loglik, deviance_at_ours, 0.0))
    if ours.fitted is not None and ref.fitted is not None:
        if len(ours.fitted) != len(ref.fitted):
            out.append(_Quantity("fitted[number of rows]", "fitted", ("fitted", "n"),
                                 len(ours.fitted), len(ref.fitted), 0.0))
        else:
            out += [_Quantity(f"fitted[row {i + 1}]", "fitted", ("fitted", "", i), o, r, sigma)
                    for i, (o, r) in enumerate(zip(ours.fitted, ref.fitted))]
    if ours.ranef is not None and ref.ranef is not None:
        out += _ranef_quantities(ours.ranef, ref.ranef, sigma)
    out.append(_Quantity("isSingular", "isSingular", ("isSingular",), float(ours.singular),
                         float(ref.singular), 0.0))
    return out


def _variance_quantities(ours: FitValues, ref: FitValues, cor_tol: float) -> list:
    """One quantity per random-effect SD and correlation in either VarCorr."""
    mine = ours.varcorr[ours.varcorr["grp"] != "Residual"]
    theirs = ref.varcorr[ref.varcorr["grp"] != "Residual"]
    ours_by = dict(zip(_keyed(mine, ("grp", "var1", "var2")), mine["sdcor"]))
    ref_by = dict(zip(_keyed(theirs, ("grp", "var1", "var2")), theirs["sdcor"]))
    sd_ref = {(g, v1, n): s for (g, v1, v2, n), s in ref_by.items() if v2 == ""}
    sigma, out = ref.sigma, []
    for key in _union(list(ref_by), list(ours_by)):
        grp, v1, v2, n = key
        o, r = ours_by.get(key, np.nan), ref_by.get(key, np.nan)
        if v2 == "":
            out.append(_Quantity(f"sd[{grp}: {v1}]", "sd", ("sd", *key), o, r, sigma))
            continue
        smaller = min(sd_ref.get((grp, v1, n), np.nan), sd_ref.get((grp, v2, n), np.nan))
        scale = max(1.0, sigma / smaller) if smaller > 0 else np.inf
        out.append(_Quantity(f"cor[{grp}: {v1}, {v2}]", "cor", ("cor", *key), o, r, scale,
                             identified=not smaller < cor_tol * sigma))
    return out


def _ranef_quantities(ours: pd.DataFrame, ref: pd.DataFrame, sigma: float) -> list:
    mine = dict(zip(_keyed(ours, ("grp", "term", "level")), ours["value"]))
    theirs = dict(zip(_keyed(ref, ("grp", "term", "level")), ref["value"]))
    return [_Quantity(f"ranef[{g}: {t}, level {lev}]", "ranef", ("ranef", g, t, n, lev),
                      mine.get(key, np.nan), theirs.get(key, np.nan), sigma)
            for key in _union(list(theirs), list(mine)) for g, t, lev, n in [key]]


def _differences(quantities: list, ref_values=None) -> tuple:
    """(abs_diff, rel_diff) of each quantity against its lme4 value or ``ref_values``."""
    ours = np.array([q.ours for q in quantities], dtype=float)
    ref = np.array([q.ref for q in quantities] if ref_values is None else ref_values, dtype=float)
    scale = np.array([q.scale for q in quantities], dtype=float)
    absolute = np.array([q.kind in _ABSOLUTE for q in quantities], dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(ours - ref)
        rel = np.where(absolute, diff, diff / np.maximum(np.abs(ref), scale))
    return diff, rel


def _status(quantities: list, tol_of, at_theta: list | None) -> tuple:
    abs_diff, rel_diff = _differences(quantities)
    tols = np.array([tol_of(q.kind) for q in quantities])
    undefined = np.array([np.isnan(q.ours) and np.isnan(q.ref) for q in quantities])
    ok = (rel_diff <= tols) | undefined
    status = np.where(ok, "ok", "FAIL").astype(object)
    status[~ok & ~np.array([q.identified for q in quantities])] = "not_identified"
    if at_theta is not None:  # lme4's optimum is worse: judge the rest against lme4 at our theta
        there = {q.key: q.ref for q in at_theta}
        near = _differences(quantities, [there.get(q.key, np.nan) for q in quantities])[1] <= tols
        status[(status == "FAIL") & near] = "lme4_optimum_worse"
    return abs_diff, rel_diff, status


_RANK = {"FAIL": 3, "not_identified": 2, "lme4_optimum_worse": 1, "ok": 0}


def _table(quantities: list, abs_diff, rel_diff, status) -> pd.DataFrame:
    """One row per quantity; fitted values and each term column's conditional modes are
    reduced to their worst element (a failure first, then the largest difference)."""
    table = pd.DataFrame({"quantity": [q.name for q in quantities],
                          "lmmscope": [q.ours for q in quantities], "lme4": [q.ref for q in quantities],
                          "abs_diff": abs_diff, "rel_diff": rel_diff, "status": status})
    groups = [q.key[:3] if q.kind == "ranef" else q.key[:2] if q.kind == "fitted" else q.key
              for q in quantities]
    table["_group"] = pd.Series(groups, dtype=object).map(repr).to_numpy()
    table["_order"] = np.arange(len(table))
    table["_rank"] = table["status"].map(_RANK)
    worst = (table.assign(_rel=table["rel_diff"].fillna(np.inf))
             .sort_values(["_rank", "_rel"], ascending=False, kind="stable")
             .drop_duplicates("_group").sort_values("_order"))
    return worst.drop(columns=["_group", "_order", "_rank", "_rel"], errors="ignore").reset_index(drop=True)


@dataclass
class Lme4Check:
    """The outcome of a comparison with lme4 (:func:`check_against_lme4`,
    :func:`compare_values`).

    ``table``: one row per quantity (quantity, lmmscope, lme4, abs_diff, rel_diff,
    status); ``passed``: no row has status ``FAIL``; ``tol``: the tolerance (``tolerances``:
    per-kind overrides); ``formula``: the lme4 formula, on the columns of ``data`` (write
    ``data`` to CSV to rerun it in R, see ``r_code``).  ``deviance_at_lmmscope`` /
    ``deviance_at_lme4``: lme4's own deviance function (REML criterion for REML) at our
    theta and at lme4's.
    """

    table: pd.DataFrame
    passed: bool
    tol: float
    method: str
    deviance_at_lmmscope: float
    deviance_at_lme4: float
    lme4_optimum_worse: bool
    singular_lmmscope: bool
    singular_lme4: bool
    formula: str = ""
    lme4_messages: list = field(default_factory=list)
    tolerances: dict = field(default_factory=dict)
    data: pd.DataFrame = field(default=None, repr=False)
    groups: list = field(default_factory=list)

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "FAIL"]

    def largest(self, kind: str) -> float:
        """The largest ``rel_diff`` over the rows of one kind (``"fixef"``, ``"sd"``, ...)."""
        rows = self.table["quantity"].map(kind_of) == kind
        return float(self.table.loc[rows, "rel_diff"].max()) if rows.any() else np.nan

    @property
    def r_code(self) -> str:
        """R code that reruns lme4's fit on ``data`` saved as ``validate_data.csv``."""
        reml = "TRUE" if self.method == "REML" else "FALSE"
        factors = "".join(f"d${g} <- factor(d${g})\n" for g in self.groups)
        return (f"d <- read.csv('validate_data.csv')\n{factors}"
                f"lmer_control <- local({{source('{REFERENCE_R.as_posix()}', local = TRUE); lmer_control}})\n"
                f"m <- lme4::lmer({self.formula}, data = d, REML = {reml}, control = lmer_control())")

    def verdict(self) -> str:
        tol = f"tol = {self.tol:g}" + (" (per kind: " + ", ".join(f"{k} {v:g}" for k, v in self.tolerances.items())
                                       + ")" if self.tolerances else "")
        lines = []
        if not self.passed:
            names = ", ".join(self.failures["quantity"])
            lines.append(f"FAILED at {tol}: {len(self.failures)} quantities differ ({names})")
        elif self.lme4_optimum_worse:
            lines.append(f"PASSED at {tol}, but lme4's optimum is worse than lmmscope's: "
                         "rows marked lme4_optimum_worse agree with lme4 evaluated at lmmscope's theta")
        else:
            max_rel = np.nanmax(self.table["rel_diff"].to_numpy(dtype=float))
            lines.append(f"PASSED at {tol} (largest relative difference {max_rel:.2g})")
        if np.isfinite(self.deviance_at_lmmscope):
            lines.append(f"lme4's deviance function: {self.deviance_at_lmmscope:.10g} at lmmscope's theta, "
                         f"{self.deviance_at_lme4:.10g} at lme4's")
        lines.append(f"isSingular: lmmscope {self.singular_lmmscope}, lme4 {self.singular_lme4}")
        return "\n".join(lines)

    def __str__(self):
        with pd.option_context("display.max_rows", 500, "display.width", 200):
            body = self.table.to_string(index=False, float_format=lambda v: f"{v:.10g}")
        return "\n".join([f"lmmscope vs lme4::lmer ({self.method}): {self.formula}", body, self.verdict()])

    __repr__ = __str__


def compare_values(ours, reference, tol: float = 1e-6, tolerances: dict | None = None) -> Lme4Check:
    """Compare the numbers of our fit with lme4's: the comparison used everywhere.

    ``ours``: a :class:`FitValues` (or its plain form, a dict); ``reference``: what
    ``lmer_reference()`` of ``lme4_reference.R`` returns (a dict with ``values``,
    ``deviance_at_theta``, ``deviance_at_lmer``, ``at_theta``, ``messages``, ``formula``;
    or a bare :class:`FitValues` for lme4's numbers alone).  ``tol``: the largest
    ``rel_diff`` accepted (conditional modes: 10 x ``tol``); ``tolerances``: per-kind
    overrides, kind being the quantity's name up to "[" or a space (:func:`kind_of`;
    ``{"fixef": 1e-5, "ranef": 1e-4}``).  See the module docstring.
    """
    tol_of = _tolerance_rule(tol, tolerances)
    tolerances = dict(tolerances or {})
    ours = ours if isinstance(ours, FitValues) else FitValues.from_plain(ours)
    if isinstance(reference, FitValues):
        reference = {"values": reference}
    ref = _as_values(reference["values"])
    at_theta = _as_values(reference.get("at_theta"))
    dev_ours = _number(reference.get("deviance_at_theta"))
    dev_lme4 = _number(reference.get("deviance_at_lmer"))
    quantities = _quantities(ours, ref, tol_of, None if np.isnan(dev_ours) else dev_ours)
    abs_diff, rel_diff, status = _status(quantities, tol_of, None)
    worse = bool((status == "FAIL").any() and at_theta is not None)
    if worse:
        at = _quantities(ours, at_theta, tol_of, None if np.isnan(dev_ours) else dev_ours)
        abs_diff, rel_diff, status = _status(quantities, tol_of, at)
    table = _table(quantities, abs_diff, rel_diff, status)
    messages = reference.get("messages")
    messages = [] if messages is None else [messages] if isinstance(messages, str) else [str(m) for m in messages]
    return Lme4Check(table=table, passed=not (table["status"] == "FAIL").any(), tol=float(tol),
                     method=ours.method, deviance_at_lmmscope=dev_ours, deviance_at_lme4=dev_lme4,
                     lme4_optimum_worse=worse, singular_lmmscope=ours.singular,
                     singular_lme4=ref.singular, formula=str(_scalar(reference.get("formula") or "")),
                     lme4_messages=messages, tolerances=tolerances)


def _tolerance_rule(tol, tolerances):
    """kind -> largest rel_diff accepted, after checking ``tol`` and ``tolerances``."""
    def positive(v):
        return not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and v > 0

    if not positive(tol):
        raise InputError(f"tol must be a positive number, got {tol!r}")
    tolerances = dict(tolerances or {})
    bad = {k: v for k, v in tolerances.items() if not positive(v)}
    if bad:
        raise InputError(f"tolerances must be positive numbers, got {bad!r}")
    return lambda kind: tolerances.get(kind, tol * _LOOSER.get(kind, 1.0))


def _as_values(values):
    if values is None or isinstance(values, FitValues):
        return values
    return FitValues.from_plain(values)


def _number(value) -> float:
    return np.nan if value is None else float(_scalar(value))
