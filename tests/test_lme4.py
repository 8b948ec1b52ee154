"""Agreement of the (RE)ML engine with lme4::lmer (rpy2), on the lme4-agreement cases."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.simulate import as_frame, make_data, normal_rows

from lme4_helper import assert_agrees, lmer_fit, needs_lme4, r_frame

pytestmark = needs_lme4


@pytest.fixture(scope="module")
def sleepstudy():
    return r_frame("lme4::sleepstudy")


@pytest.fixture(scope="module")
def orthodont():
    return r_frame("nlme::Orthodont")


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject)"])
def test_sleepstudy(sleepstudy, formula, method):
    ours = lmmscope.lmm(formula, sleepstudy, method=method)
    new = sleepstudy.iloc[::7].copy()
    new.loc[new.index[0], "Subject"] = "999"  # an unseen cluster: population level
    ref = lmer_fit(formula, sleepstudy, reml=method == "REML", newdata=new)
    predictions = {
        "pred level 1 (abs)": float(np.max(np.abs(ours.predict(new, level=1, allow_new_levels=True) - ref["pred1"]))),
        "pred level 0 (abs)": float(np.max(np.abs(ours.predict(new, level=0) - ref["pred0"]))),
    }
    assert_agrees(ours, ref, case=f"sleepstudy {formula} {method}", extra=predictions)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_orthodont(orthodont, method):
    formula = "distance ~ age + Sex + (age | Subject)"
    ours = lmmscope.lmm(formula, orthodont, method=method)
    assert ours.fixef.index.tolist() == ["Intercept", "age", "Sex[T.Male]"] or \
        ours.fixef.index.tolist() == ["Intercept", "age", "Sex[T.Female]"]
    ref = lmer_fit(formula, orthodont.assign(Sex=pd.Categorical(orthodont.Sex, categories=sorted(orthodont.Sex.unique()))),
                   reml=method == "REML")
    assert_agrees(ours, ref, case=f"Orthodont {method}")


def _unbalanced_q3(seed=7, slope_sd=(0.8, 0.5), corr=0.4):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 16, size=300)
    g = np.repeat(np.arange(300), sizes)
    N = g.size
    x = rng.standard_normal((N, 3))
    sd = np.array([1.0, *slope_sd])
    C = np.array([[1, corr, 0], [corr, 1, -corr], [0, -corr, 1]])
    Psi = C * np.outer(sd, sd)
    b = normal_rows(rng, Psi, 300)
    y = 1 + x @ [0.5, -0.3, 0.2] + b[g, 0] + x[:, 0] * b[g, 1] + x[:, 1] * b[g, 2] + rng.standard_normal(N)
    perm = rng.permutation(N)
    return pd.DataFrame({"y": y, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "g": g.astype(str)}).iloc[perm]


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_unbalanced_correlated_slopes(method):
    df = _unbalanced_q3()
    formula = "y ~ x1 + x2 + x3 + (x1 + x2 | g)"
    ours = lmmscope.lmm(formula, df, method=method)
    ref = lmer_fit(formula, df.reset_index(drop=True), reml=method == "REML")
    assert_agrees(ours, ref, case=f"unbalanced q=3 {method}")


def test_singular_fit_reported_like_lme4():
    df = _unbalanced_q3(seed=3, slope_sd=(0.0, 0.6), corr=0.0)
    formula = "y ~ x1 + x2 + (x1 | g)"
    ours = lmmscope.lmm(formula, df)
    ref = lmer_fit(formula, df.reset_index(drop=True))
    assert ref["singular"] and ours.singular
    assert "boundary (singular) fit" in ours.summary()
    # on the boundary the likelihood is flat along the singular direction: the small
    # slope SD (0.015) agrees to 1.0e-5 relative only, but to 1.6e-7 sigma, the unit the
    # comparison judges an SD on
    assert_agrees(ours, ref, case="singular fit", ranef=False)


def test_refit_after_selection_p500_matches_lmer_on_selected():
    X, _Z, Zs, y, beta, _g = make_data(m=10, n=60, p=500, q=2, seed=4)
    df = as_frame(X, Zs, y, np.repeat(np.arange(60), 10))
    df["cluster"] = df["cluster"].astype(str)
    fit = lmmscope.lmm_scope("y ~ . - z0 - z1 + (0 + z0 + z1 | cluster)", df)
    assert set(fit.support) == {"x1", "x5", "x10"}
    cols = " + ".join(fit.support)
    ref = lmer_fit(f"y ~ {cols} + (0 + z0 + z1 | cluster)", df)
    assert_agrees(fit, ref, case="refit after selection p=500")
