"""Fit lme4::lmer through rpy2 and compare lmmscope's fits with it.

lmer is run by ``lme4_reference.R`` (the R file lmmscope.validate and the R package's
check_against_lmer() use) and compared by ``lmmscope.lme4_comparison.compare_values`` (the
comparison they use), here with per-kind tolerances measured on the tests' cases.

Importing this module never fails: what is missing (rpy2, R, lme4/nlme) is recorded
in ``WHY`` and every use goes through :func:`require_lme4`, which fails the test in CI
and skips it elsewhere, naming what is missing.
"""

import copy

import numpy as np
import pandas as pd
import pytest

from lmmscope import validate

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
    try:  # lme4_reference.R's functions, also for R code run by the tests (LMER_CONTROL)
        ro.globalenv["lmmscope_reference"] = validate.reference_env()
    except Exception as exc:
        return None, f"{validate.REFERENCE_R} could not be sourced in R ({type(exc).__name__}: {exc})"
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


# lme4 with its BOBYQA optimiser run to a tight tolerance (lme4_reference.R's
# lmer_control()): with lmer's defaults it can stop short of the optimum, and the
# comparison is about the estimator, not optimiser slack.  R code, for tests that call lmer.
LMER_CONTROL = "lmmscope_reference$lmer_control()"


def lmer_fit(formula: str, df: pd.DataFrame, reml: bool = True, newdata=None) -> dict:
    """lmer's fit of ``formula`` (lme4's own formula processing) on ``df``, left in R as
    ``m``: its plain values (``values``, a :class:`lmmscope.validate.FitValues` with
    lme4's names) and, for direct use, numpy/pandas copies of the common ones (the first
    random-effects term's ``sd``, ``corr`` and ``ranef``)."""
    require_lme4()
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
        if newdata is not None:
            ro.globalenv["nd"] = newdata
    fit = validate.call_reference("lmer_reference", formula, ro.globalenv["d"], REML=reml)
    ro.globalenv["m"] = fit.rx2("fit")
    values = validate.FitValues.from_plain(validate.from_r(fit.rx2("values")))
    group = values.varcorr["grp"].iloc[0]
    terms = values.varcorr[(values.varcorr["grp"] == group) & (values.varcorr["var2"] == "")]
    names = list(terms["var1"])
    corr = np.eye(len(names))
    for row in values.varcorr[(values.varcorr["grp"] == group) & (values.varcorr["var2"] != "")].itertuples():
        i, j = names.index(row.var1), names.index(row.var2)
        corr[i, j] = corr[j, i] = row.sdcor
    modes = values.ranef[values.ranef["grp"] == group]
    ranef = modes.pivot(index="level", columns="term", values="value")
    ranef = ranef.loc[list(dict.fromkeys(modes["level"])), names]
    out = {"values": values, "fixef": values.fixef.to_numpy(), "se": values.se.to_numpy(),
           "sigma": values.sigma, "loglik": values.loglik, "aic": values.aic, "bic": values.bic,
           "sd": terms["sdcor"].to_numpy(), "corr": corr, "ranef": ranef, "singular": values.singular,
           "fitted": values.fitted, "residuals": np.array(ro.r("residuals(m)"))}
    if newdata is not None:
        out["pred1"] = np.array(ro.r("predict(m, newdata = nd, allow.new.levels = TRUE)"))
        out["pred0"] = np.array(ro.r("predict(m, newdata = nd, re.form = NA)"))
    return out


def named_like(ref: validate.FitValues, ours: validate.FitValues) -> validate.FitValues:
    """lme4's values with our names, matched by position: lmer fitted on the formula
    names things its way ("(Intercept)", "SexMale", a second term on g "g.1"); the same
    structure (number of coefficients, of random-effect columns) is required, not assumed."""
    ref = copy.deepcopy(ref)
    assert len(ref.fixef) == len(ours.fixef), (list(ref.fixef.index), list(ours.fixef.index))
    ref.fixef.index = ref.se.index = ours.fixef.index
    sd = lambda v: v.varcorr.query("grp != 'Residual' and var2 == ''")  # noqa: E731  (lme4's order)
    theirs, mine = sd(ref), sd(ours)
    assert len(theirs) == len(mine), (list(theirs["var1"]), list(mine["var1"]))
    names = {(g, v): (og, ov) for g, v, og, ov in zip(theirs["grp"], theirs["var1"], mine["grp"], mine["var1"])}
    by_base = {(g.rsplit(".", 1)[0] if (g, v) not in names else g, v): n for (g, v), n in names.items()}

    def ours_for(g, v):  # a conditional-mode table joins the terms of one factor, as lme4's
        return names.get((g, v)) or by_base.get((g, v)) or (g, v)

    vc = ref.varcorr
    residual = vc["grp"] == "Residual"
    first = [ours_for(g, v) for g, v in zip(vc["grp"], vc["var1"])]
    ref.varcorr = vc.assign(grp=[g if r else n[0] for g, r, n in zip(vc["grp"], residual, first)],
                            var1=[v if r else n[1] for v, r, n in zip(vc["var1"], residual, first)],
                            var2=[v if v == "" else ours_for(g, v)[1] for g, v in zip(vc["grp"], vc["var2"])])
    if ref.ranef is not None:
        modes = [ours_for(g, t) for g, t in zip(ref.ranef["grp"], ref.ranef["term"])]
        ref.ranef = ref.ranef.assign(grp=[n[0] for n in modes], term=[n[1] for n in modes])
    return ref


# Largest rel_diff to lme4 accepted, per kind of quantity of lmmscope.validate's comparison
# (rel_diff: |ours - lme4| / max(|lme4|, scale), scale the quantity's unit: a fixed
# effect's SE, sigma for SDs, fitted values and conditional modes; absolute for logLik,
# AIC, BIC): 10x to 30x the largest measured over the cases of tests/test_lme4.py (R 4.2.2,
# lme4 1.1-31 with BOBYQA at rhoend 1e-12; measured value in the comment; every run prints
# its own in the terminal summary).  Predictions of new rows ("pred level ...") are
# absolute differences in the data's units.
TOLERANCES = {
    "fixef": 1e-6,  # 8.2e-8, Orthodont ML
    "se": 3e-6,  # 1.5e-7, Orthodont ML
    "sd": 1e-5,  # 5.5e-7, Orthodont ML
    "cor": 1e-6,  # 4.8e-8, unbalanced q=3 ML
    "sigma": 1e-6,  # 8.0e-8, Orthodont ML
    "logLik": 1e-10,  # 4.6e-12, unbalanced q=3 REML
    "AIC": 2e-10,  # 9.1e-12, lme4's AIC()
    "BIC": 2e-10,  # 9.1e-12, lme4's BIC()
    "fitted": 3e-6,  # 2.6e-7, unbalanced q=3 ML; lme4's fitted()
    "ranef": 2e-5,  # 1.1e-6, Orthodont ML
    "isSingular": 0.5,  # 0 or 1: the same verdict
    "residuals (abs)": 1e-4,  # 3.3e-6, sleepstudy slopes REML; lme4's residuals()
    "pred level 1 (abs)": 1e-4,  # 2.7e-6, lme4's predict(allow.new.levels = TRUE)
    "pred level 0 (abs)": 1e-10,  # 4.6e-12, lme4's predict(re.form = NA)
}
# Every comparison made, (case, quantity, achieved difference, tolerance): printed at the end.
ACHIEVED = []


def agreement(ours, ref, *, ranef=True, tolerances=None) -> validate.Lme4Check:
    """lmmscope.validate's comparison of the result ``ours`` with lmer's fit ``ref`` (from
    :func:`lmer_fit`) at :data:`TOLERANCES` (``tolerances``: overrides).
    ``ranef=False``: without conditional modes and fitted values."""
    mine = validate.fit_values(ours)
    theirs = named_like(ref["values"], mine)
    if not ranef:
        mine.ranef = mine.fitted = theirs.ranef = theirs.fitted = None
    tol = {**TOLERANCES, **(tolerances or {})}
    return validate.compare_values(mine, theirs, tol=1e-6,
                                   tolerances={k: v for k, v in tol.items() if "(" not in k})


def assert_agrees(ours, ref, *, case="", ranef=True, extra=None, tolerances=None):
    """Every quantity within :data:`TOLERANCES` of lme4 (``extra``: more measured
    differences, e.g. of predictions; ``tolerances``: case-specific overrides, each
    justified where used).  Returns the largest difference of each kind."""
    tol = {**TOLERANCES, **(tolerances or {})}
    check = agreement(ours, ref, ranef=ranef, tolerances=tolerances)
    kinds = dict.fromkeys(check.table["quantity"].map(validate.kind_of))
    diffs = {kind: check.largest(kind) for kind in kinds}
    if ranef:
        diffs["residuals (abs)"] = float(np.max(np.abs(ours.residuals() - ref["residuals"])))
    diffs.update(extra or {})
    ACHIEVED.extend((case, name, value, tol[name]) for name, value in diffs.items())
    failed = {name: value for name, value in diffs.items() if not value <= tol[name]}
    assert check.passed and not failed, f"{case}: differences to lme4 above tolerance: " + ", ".join(
        f"{name} {value:.3g} > {tol[name]:.0e}" for name, value in failed.items()) + f"\n{check}"
    return diffs
