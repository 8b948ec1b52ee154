"""Formula parsing and materialisation: both syntaxes, '.', factors, transforms."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.formula import build_design, parse_formula
from lmmscope.simulate import seed_formula


@pytest.mark.parametrize("formula, fixed, random, group, syntax", [
    ("y ~ x1 + x2 | (z1 + z2 | cluster)", "x1 + x2", "z1 + z2", "cluster", "design"),
    ("y ~ x1 + x2 + (z1 + z2 | cluster)", "x1 + x2", "z1 + z2", "cluster", "lme4"),
    ("y ~ (1 | g) + x1", "x1", "1", "g", "lme4"),
    ("log(y) ~ log(x1) + C(f) + (0 + z | `my group`)", "log(x1) + C(f)", "0 + z", "my group", "lme4"),
    ("y ~ (z | g)", "1", "z", "g", "lme4"),
])
def test_parse(formula, fixed, random, group, syntax):
    pf = parse_formula(formula)
    assert (pf.fixed, pf.random, pf.group, pf.syntax) == (fixed, random, group, syntax)


@pytest.mark.parametrize("formula, message", [
    ("y ~ x1 + x2", "no random-effects term"),
    ("y ~ x1 + (1 | g) + (0 + z | h)", "only one random-effects term"),
    ("y ~ x1 + (1 | g/h)", "nested or crossed"),
    ("y ~ x1 + (1 | g:h)", "nested or crossed"),
    ("y ~ x1 + (z || g)", "not supported"),
    ("x1 + (1 | g)", "'~'"),
])
def test_parse_errors(formula, message):
    with pytest.raises(ValueError, match=message):
        parse_formula(formula)


def test_design_and_lme4_syntax_identical(seed_data):
    df, _ = seed_data
    f1 = lmmscope.lmm_scope(seed_formula(syntax="design"), df)
    f2 = lmmscope.lmm_scope(seed_formula(syntax="lme4"), df)
    pd.testing.assert_series_equal(f1.coef, f2.coef)
    assert f1.a == f2.a and f1.support == f2.support


def test_dot_expansion_equals_spelled_out(seed_data):
    df, _ = seed_data
    spelled = lmmscope.lmm_scope(seed_formula(), df)
    # '.' excludes the response and the grouping column; remove the z's explicitly
    dot = lmmscope.lmm_scope("y ~ 0 + . - z0 - z1 - z2 - z3 | (0 + z0 + z1 + z2 + z3 | cluster)", df)
    pd.testing.assert_series_equal(spelled.coef, dot.coef)


def test_intercept_conventions(small_frame):
    d = build_design("y ~ x1 + (z1 | cluster)", small_frame)
    assert d.fixed_names[0] == "Intercept" and d.random_names == ["Intercept", "z1"]
    d = build_design("y ~ 0 + x1 + (0 + z1 | cluster)", small_frame)
    assert d.fixed_names == ["x1"] and d.random_names == ["z1"]
    d = build_design("y ~ x1 - 1 + (1 | cluster)", small_frame)
    assert d.fixed_names == ["x1"] and d.random_names == ["Intercept"]


def test_factors_interactions_transforms(small_frame):
    df = small_frame.assign(pos=np.exp(small_frame.x2))
    d = build_design("y ~ x1 * f + log(pos) + C(f) + (1 | cluster)", df)
    assert {"f[T.b]", "f[T.c]", "x1:f[T.b]", "log(pos)"} <= set(d.fixed_names)
    np.testing.assert_allclose(d.X[:, d.fixed_names.index("log(pos)")], df.x2, atol=1e-12)


def test_na_rows_dropped_and_reported(small_frame):
    df = small_frame.copy()
    df.loc[[3, 10], "x2"] = np.nan
    df.loc[20, "unused"] = 1.0  # NA in a column the formula does not use: kept
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        fit = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", df)
    assert fit.nobs == len(df) - 2 and fit.n_dropped == 2
    with pytest.raises(ValueError, match="missing values"):
        lmmscope.lmm_scope("y ~ x1 + x2 + (1 | cluster)", df, na_action="fail")


def test_unseen_factor_level_in_newdata(small_frame):
    fit = lmmscope.lmm_scope("y ~ x1 + f + (1 | cluster)", small_frame, a=1.0)
    new = small_frame.iloc[:2].assign(f=["a", "zzz"])
    with pytest.raises(ValueError, match="'f' has level\\(s\\) not seen in fitting: zzz"):
        fit.predict(new)
