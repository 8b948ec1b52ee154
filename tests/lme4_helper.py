"""Fit lme4::lmer through rpy2 and return its numbers as numpy/pandas objects."""

import numpy as np
import pandas as pd
import pytest

try:
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    ro.r("suppressPackageStartupMessages({library(lme4); library(nlme)})")
    HAVE_LME4 = True
    WHY = ""
except Exception as exc:  # R, rpy2 or lme4 absent
    HAVE_LME4 = False
    WHY = f"R/rpy2/lme4 not available: {exc}"

needs_lme4 = pytest.mark.skipif(not HAVE_LME4, reason=WHY or "R/lme4 not available")


def r_frame(expr: str) -> pd.DataFrame:
    """An R data.frame (factors as character) as pandas."""
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
    }
    if newdata is not None:
        out["pred1"] = np.array(ro.r("predict(m, newdata = nd, allow.new.levels = TRUE)"))
        out["pred0"] = np.array(ro.r("predict(m, newdata = nd, re.form = NA)"))
    return out


def assert_agrees(ours, ref, *, se=True, ranef=True):
    """The tolerances of the lme4-agreement issue."""
    rel = lambda a, b: np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(b), 1e-12))
    assert rel(ours.fixef.to_numpy(), ref["fixef"]) < 1e-4, (ours.fixef.to_numpy(), ref["fixef"])
    if se:
        assert rel(ours.bse.to_numpy(), ref["se"]) < 1e-4, (ours.bse.to_numpy(), ref["se"])
    assert abs(ours.sigma - ref["sigma"]) / ref["sigma"] < 1e-3
    assert abs(ours.loglik - ref["loglik"]) < 1e-4, (ours.loglik, ref["loglik"])
    sds = ref["sd"]
    our_sd = np.sqrt(np.diag(ours.psi))
    # relative 1e-3; standard deviations at the boundary (0) compare absolutely
    assert np.all(np.abs(our_sd - sds) <= 1e-3 * np.maximum(sds, 1e-3 * ref["sigma"])), (our_sd, sds)
    corr_ref = np.atleast_2d(ref["corr"])
    if corr_ref.shape[0] > 1:
        finite = np.isfinite(corr_ref)
        C = ours.mixed.corr
        assert np.all(np.abs(C[finite] - corr_ref[finite]) < 1e-4), (C, corr_ref)
    if ranef:
        re = ref["ranef"]
        mine = ours.ranef.copy()
        mine.index = mine.index.astype(str)
        mine = mine.loc[[str(i) for i in re.index]].to_numpy()
        scale = np.max(np.abs(re.to_numpy()), axis=0)
        assert np.all(np.max(np.abs(mine - re.to_numpy()), axis=0) <= 1e-3 * scale), "ranef"
