"""Formula parsing and materialisation: both syntaxes, '.', factors, transforms."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.formula import build_design, parse_formula
from lmmscope.simulate import seed_formula
from lme4_helper import lmer_fit, needs_lme4


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
    ("y ~ x1 + (1 | g) + (0 + z | h)", "only one random-effects term here.*lmmscope.lmm"),
    ("y ~ x1 + (1 | g/h)", "nested or crossed"),
    ("y ~ x1 + (1 | g:h)", "nested or crossed"),
    ("y ~ x1 + (z || g)", "not supported here.*lmmscope.lmm"),
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
    with pytest.raises(ValueError, match="'f' has level\\(s\\) not seen in fitting: 'zzz'"):
        fit.predict(new)


# --- the fast path (plain columns straight from the frame) against formulaic itself ---

@pytest.fixture
def mixed_frame():
    rng = np.random.default_rng(1)
    n = 90
    return pd.DataFrame({
        "y": rng.standard_normal(n), "x1": rng.standard_normal(n), "x2": rng.standard_normal(n),
        "x3": rng.standard_normal(n), "pos": rng.uniform(1, 2, n),
        "f": rng.choice(list("abc"), n), "b": rng.random(n) > 0.5, "g": np.repeat(np.arange(15), 6),
    })


DOT = "(x1 + x2 + x3 + pos + f + b)"  # what '.' means on mixed_frame


@pytest.mark.parametrize("rhs", [
    "x1 + f + x2:f + log(pos) + x3", "0 + . - pos", "x1*f + I(x2**2) + poly(x3, 2) + b",
    "f:x1 + x2 - 1", "(x1 + x2 + f)^2", "x2 + .", "x1:x2 + f + x1", "scale(x1) + center(x2)",
    "x3 + x1:f - x1 + x1", ". - f - b", "C(f, Treatment('c')) + x1 %in% f",
])
def test_fast_path_equals_formulaic(mixed_frame, rhs):
    from formulaic import model_matrix
    design = build_design(f"y ~ {rhs} + (x3 | g)", mixed_frame)
    reference = model_matrix("y ~ " + rhs.replace(".", DOT) if rhs.startswith((".", "0 + .", "x2 + ."))
                             else "y ~ " + rhs, mixed_frame).rhs
    assert design.fixed_names == list(reference.columns)
    np.testing.assert_array_equal(np.asarray(design.X), np.asarray(reference))


def test_numeric_dot_uses_the_frames_block_without_copying():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({f"x{j}": rng.standard_normal(50) for j in range(8)}
                      | {"y": rng.standard_normal(50)})
    df["g"] = np.repeat(np.arange(10), 5)
    design = build_design("y ~ . + (1 | g)", df)
    assert np.shares_memory(design.X.base, df["x0"].to_numpy())  # a view, not a copy
    np.testing.assert_array_equal(np.asarray(design.X)[:, 1:], df.iloc[:, :8].to_numpy())


def test_predict_rebuilds_mixed_terms_on_new_rows(mixed_frame):
    design = build_design("y ~ x1*f + poly(x3, 2) + x2 + (x3 | g)", mixed_frame)
    from lmmscope.formula import new_design_matrices
    X, Z = new_design_matrices(design, mixed_frame.iloc[::-1], need_random=True)
    np.testing.assert_allclose(X, np.asarray(design.X)[::-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(Z, design.Z[::-1])


# --- R's conventions for the response and the intercept ---

def test_response_on_right_hand_side_dropped_with_warning(small_frame):
    with pytest.warns(UserWarning, match="response 'y' appeared on the right-hand side and was dropped"):
        with_y = lmmscope.lmm("y ~ y + x1 + (1 | cluster)", small_frame)
    plain = lmmscope.lmm("y ~ x1 + (1 | cluster)", small_frame)
    assert list(with_y.fixef.index) == ["Intercept", "x1"]
    np.testing.assert_array_equal(with_y.fixef.to_numpy(), plain.fixef.to_numpy())


def test_dot_excludes_response_and_group(small_frame):
    design = build_design("y ~ . + (1 | cluster)", small_frame.drop(columns="f"))
    assert design.fixed_names == ["Intercept", "x1", "x2", "x3", "z1"]


def test_column_named_intercept_never_replaces_the_intercept(small_frame):
    df = small_frame.assign(Intercept=small_frame.x2 + 3.0)
    fit = lmmscope.lmm("y ~ Intercept + x1 + (1 | cluster)", df)
    same = lmmscope.lmm("y ~ w + x1 + (1 | cluster)", df.rename(columns={"Intercept": "w"}))
    assert list(fit.fixef.index) == ["Intercept", "`Intercept`", "x1"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), same.fixef.to_numpy(), rtol=1e-10)
    assert abs(fit.fixef["Intercept"] - (same.fixef["Intercept"])) < 1e-8
    # ... and '.' keeps both as well
    design = build_design("y ~ . + (1 | cluster)", df.drop(columns="f"))
    assert design.fixed_names[:1] == ["Intercept"] and "`Intercept`" in design.fixed_names


def test_random_term_without_columns_is_a_clear_error(small_frame):
    with pytest.raises(ValueError, match=r"random-effects term \(0 \| cluster\) has no columns"):
        lmmscope.lmm("y ~ x1 + (0 | cluster)", small_frame)


@needs_lme4
def test_no_fixed_effects_fits_like_lmer(small_frame):
    fit = lmmscope.lmm("y ~ 0 + (1 | cluster)", small_frame)
    ref = lmer_fit("y ~ 0 + (1 | cluster)", small_frame)
    assert fit.fixef.size == 0
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-8)
    with pytest.raises(ValueError, match="no fixed effects to select from"):
        lmmscope.lmm_scope("y ~ 0 + (1 | cluster)", small_frame)


def test_encodings_survive_pickling(mixed_frame):
    import pickle
    from lmmscope.formula import new_design_matrices
    design = build_design("y ~ x1*f + log(pos) + . + (x3 | g)", mixed_frame)
    restored = pickle.loads(pickle.dumps(design.without_data()))
    X, Z = new_design_matrices(restored, mixed_frame, need_random=True)
    np.testing.assert_array_equal(X, np.asarray(design.X))
    np.testing.assert_array_equal(Z, design.Z)


def test_design_syntax_takes_several_random_effects_terms_as_lme4_syntax():
    """``y ~ x | (1 | a) + (1 | b)`` is ``y ~ x + (1 | a) + (1 | b)`` (the design syntax's
    terms are lme4's), nested and uncorrelated terms included; anything but terms joined by
    '+' after the '|' is refused."""
    from lmmscope.formula.bars import parse_bar_terms
    for design, lme4 in [("y ~ x0 + x1 | (1 | s) + (1 | i)", "y ~ x0 + x1 + (1 | s) + (1 | i)"),
                         ("y ~ x0 | (1 | s/i)", "y ~ x0 + (1 | s/i)"),
                         ("y ~ x0 | (x1 || s)", "y ~ x0 + (x1 || s)")]:
        assert parse_bar_terms(design) == parse_bar_terms(lme4)
    rng = np.random.default_rng(1)
    n = 240
    df = pd.DataFrame({"s": rng.integers(0, 12, n), "i": rng.integers(0, 8, n),
                       "x0": rng.standard_normal(n), "x1": rng.standard_normal(n)})
    df["y"] = df.x0 + rng.standard_normal(12)[df.s] + rng.standard_normal(8)[df.i] \
        + rng.standard_normal(n)
    ours = lmmscope.lmm("y ~ x0 + x1 | (1 | s) + (1 | i)", df)
    assert ours.loglik == pytest.approx(lmmscope.lmm("y ~ x0 + x1 + (1 | s) + (1 | i)", df).loglik,
                                        rel=1e-12)
    for bad in ["y ~ x0 | (1 | s) + x1 + (1 | i)", "y ~ x0 | (1 | s) + (1 | i) | (1 | i)"]:
        with pytest.raises(lmmscope.InputError, match="design syntax the random-effects terms"):
            lmmscope.lmm(bad, df)
