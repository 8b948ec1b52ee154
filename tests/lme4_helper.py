"""Fit lme4::lmer through rpy2 and return its numbers as numpy/pandas objects.

Importing this module never fails: what is missing (rpy2, R, lme4/nlme) is recorded
in ``WHY`` and every use goes through :func:`require_lme4`, which fails the test in CI
and skips it elsewhere, naming what is missing.
"""

import numpy as np
import pandas as pd
import pytest

from ci_guard import unavailable


def _probe_r():
    """(robjects module, "") when R with lme4 and nlme is usable, else (None, why not)."""
    try:
        import rpy2  # noqa: F401
    except ImportError as exc:
        return None, f"rpy2 is not importable ({exc}); install the test extras: pip install -e '.[test]'"
    try:
        import rpy2.robjects as ro
    except Exception as exc:  # rpy2 present but R cannot be found or started
        return None, f"R cannot be started through rpy2 ({type(exc).__name__}: {exc}); install R (.ci/install-r.sh)"
    try:
        absent = [pkg for pkg in ("lme4", "nlme")
                  if not ro.r(f"nzchar(system.file(package = '{pkg}'))")[0]]
    except Exception as exc:
        return None, f"R started but could not be queried ({type(exc).__name__}: {exc})"
    if absent:
        return None, f"R package(s) {', '.join(absent)} not installed (.ci/install-r.sh installs them)"
    ro.r("suppressPackageStartupMessages({library(lme4); library(nlme)})")
    return ro, ""


ro, WHY = _probe_r()
HAVE_LME4 = ro is not None
if HAVE_LME4:
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter


def require_lme4():
    """Fail (CI) or skip (elsewhere) unless R, rpy2, lme4 and nlme are all usable."""
    if not HAVE_LME4:
        unavailable(f"lme4 through rpy2: {WHY}")


# For tests that talk to R only through fixtures (the ``lme4`` fixture is session-scoped,
# so it runs before any module fixture that reads an R data set).
needs_lme4 = pytest.mark.usefixtures("lme4")


def r_frame(expr: str) -> pd.DataFrame:
    """An R data.frame (factors as character) as pandas."""
    require_lme4()
    with localconverter(ro.default_converter + pandas2ri.converter):
        df = ro.conversion.rpy2py(ro.r(
            "local({d <- as.data.frame(" + expr + "); "
            "d[] <- lapply(d, function(v) if (is.factor(v)) as.character(v) else v); d})"))
    return df.reset_index(drop=True)


# lme4 with its BOBYQA optimiser run to a tight tolerance: with lmer's defaults it can
# stop short of the optimum (Orthodont, ML: 5e-7 deviance units above it, correlation
# off by 1.2e-4), and the comparison is about the estimator, not optimiser slack.
LMER_CONTROL = "lmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-12, maxfun = 1e5))"


def lmer_fit(formula: str, df: pd.DataFrame, reml: bool = True, newdata=None) -> dict:
    require_lme4()
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
        if newdata is not None:
            ro.globalenv["nd"] = newdata
    ro.r(f"m <- lmer({formula}, data = d, REML = {'TRUE' if reml else 'FALSE'}, control = {LMER_CONTROL})")
    with localconverter(ro.default_converter + pandas2ri.converter):
        re = ro.conversion.rpy2py(ro.r("as.data.frame(ranef(m)[[1]])"))
    out = {
        "fixef": np.array(ro.r("fixef(m)")),
        "se": np.array(ro.r("sqrt(diag(as.matrix(vcov(m))))")),
        "sigma": float(ro.r("sigma(m)")[0]),
        "loglik": float(ro.r("as.numeric(logLik(m))")[0]),
        "sd": np.array(ro.r("attr(VarCorr(m)[[1]], 'stddev')")),
        "corr": np.array(ro.r("as.matrix(attr(VarCorr(m)[[1]], 'correlation'))")),
        "ranef": re,
        "singular": bool(ro.r("isSingular(m)")[0]),
        "fitted": np.array(ro.r("fitted(m)")),
        "residuals": np.array(ro.r("residuals(m)")),
        "aic": float(ro.r("AIC(m)")[0]),
        "bic": float(ro.r("BIC(m)")[0]),
    }
    if newdata is not None:
        out["pred1"] = np.array(ro.r("predict(m, newdata = nd, allow.new.levels = TRUE)"))
        out["pred0"] = np.array(ro.r("predict(m, newdata = nd, re.form = NA)"))
    return out


def _rel(ours, ref, floor=1e-12):
    ours, ref = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), floor), initial=0.0))


def _abs(ours, ref):
    return float(np.max(np.abs(np.asarray(ours, dtype=float) - np.asarray(ref, dtype=float)),
                        initial=0.0))


# Largest difference to lme4 accepted, per quantity: 10x to 30x the largest difference
# measured over the cases of tests/test_lme4.py (R 4.2.2, lme4 1.1-31 with BOBYQA at
# rhoend 1e-12; measured value in the comment; every run prints its own in the terminal
# summary).  "rel": |ours - lme4| / |lme4|; "abs": in the data's units (loglik, AIC,
# BIC: log-likelihood units; correlations: unitless); "/sigma": relative to sigma.
TOLERANCES = {
    "fixef (rel)": 2e-6,  # 8.2e-8, Orthodont ML
    "se (rel)": 2e-6,  # 1.5e-7, Orthodont ML
    "sigma (rel)": 1e-6,  # 8.0e-8, Orthodont ML
    "loglik (abs)": 1e-9,  # 1.8e-11
    "aic (abs)": 1e-9,  # 3.6e-11, lme4's AIC()
    "bic (abs)": 1e-9,  # 3.6e-11, lme4's BIC()
    "sd (rel)": 5e-6,  # 5.7e-7, Orthodont ML
    "boundary sd (/sigma)": 1e-7,  # 1.0e-8, singular fit: lme4 stops just inside
    "corr (abs)": 3e-6,  # 2.7e-7, Orthodont ML
    "ranef (abs)": 1e-4,  # 4.8e-6, Orthodont ML
    "fitted (abs)": 1e-4,  # 3.3e-6, sleepstudy slopes REML; lme4's fitted()
    "residuals (abs)": 1e-4,  # 3.3e-6, lme4's residuals()
    "pred level 1 (abs)": 1e-4,  # 2.7e-6, lme4's predict(allow.new.levels = TRUE)
    "pred level 0 (abs)": 1e-10,  # 7.1e-12, lme4's predict(re.form = NA)
}
# Every comparison made, (case, quantity, achieved difference, tolerance): printed at the end.
ACHIEVED = []


def agreement(ours, ref, *, se=True, ranef=True) -> dict:
    """The largest difference of each quantity between ``ours`` and lmer's ``ref``."""
    out = {"fixef (rel)": _rel(ours.fixef.to_numpy(), ref["fixef"]),
           "sigma (rel)": _rel(ours.sigma, ref["sigma"]),
           "loglik (abs)": _abs(ours.loglik, ref["loglik"]),
           "aic (abs)": _abs(ours.aic, ref["aic"]),
           "bic (abs)": _abs(ours.bic, ref["bic"])}
    if se:
        out["se (rel)"] = _rel(ours.bse.to_numpy(), ref["se"])
    # standard deviations at the boundary (0) compare on the scale of sigma
    sds = np.atleast_1d(ref["sd"])
    our_sd = np.sqrt(np.diag(ours.psi))
    boundary = sds < 1e-3 * ref["sigma"]
    out["sd (rel)"] = _rel(our_sd[~boundary], sds[~boundary])
    if boundary.any():
        out["boundary sd (/sigma)"] = _abs(our_sd[boundary], sds[boundary]) / ref["sigma"]
    corr_ref = np.atleast_2d(ref["corr"])
    if corr_ref.shape[0] > 1:
        finite = np.isfinite(corr_ref)
        out["corr (abs)"] = _abs(ours.mixed.corr[finite], corr_ref[finite])
    if ranef:
        re = ref["ranef"]
        mine = ours.ranef.copy()
        mine.index = mine.index.astype(str)
        out["ranef (abs)"] = _abs(mine.loc[[str(i) for i in re.index]].to_numpy(), re.to_numpy())
        # conditional fitted values and residuals: lme4's own, not y - fitted()
        out["fitted (abs)"] = _abs(ours.fitted(), ref["fitted"])
        out["residuals (abs)"] = _abs(ours.residuals(), ref["residuals"])
    return out


def assert_agrees(ours, ref, *, case="", se=True, ranef=True, extra=None, tolerances=None):
    """Every quantity within :data:`TOLERANCES` of lme4 (``extra``: more measured
    differences; ``tolerances``: case-specific overrides, each justified where used)."""
    tol = {**TOLERANCES, **(tolerances or {})}
    diffs = agreement(ours, ref, se=se, ranef=ranef)
    diffs.update(extra or {})
    ACHIEVED.extend((case, name, value, tol[name]) for name, value in diffs.items())
    failed = {name: value for name, value in diffs.items() if not value <= tol[name]}
    assert not failed, f"{case}: differences to lme4 above tolerance: " + ", ".join(
        f"{name} {value:.3g} > {tol[name]:.0e}" for name, value in failed.items())
    return diffs
