"""Any column name works: dots, spaces, unicode, leading digits, names of functions.

Each fit on oddly named columns must equal, number for number, the fit on the same data
with plain names (x0, x1, ...): in '.', in explicit terms (bare, backticked, Q()), in
transforms, as the response, a random slope and the grouping factor.
"""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.formula import build_design
from lme4_helper import lmer_fit, needs_lme4, r_frame

ODD = ["Sepal.Length", "a b", "größe", "1x", "exp", "log", "sqrt", "abs", "scale", "center",
       "poly", "C", "I", "Q", "np", "lag", "cc", "x-y"]


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)
    n_groups, m = 25, 6
    N = n_groups * m
    X = rng.standard_normal((N, len(ODD)))
    g = np.repeat(np.arange(n_groups), m)
    y = 1 + 2 * X[:, 0] - X[:, 4] + 0.5 * X[:, 11] + rng.standard_normal(n_groups)[g] \
        + 0.5 * rng.standard_normal(N)
    plain = pd.DataFrame({f"x{j}": X[:, j] for j in range(len(ODD))} | {"y": y, "g": g})
    odd = plain.rename(columns=dict(zip(plain.columns[:len(ODD)], ODD)))
    return plain, odd


def _same_fit(odd_fit, plain_fit, mapping):
    assert list(odd_fit.fixef.index) == [mapping.get(n, n) for n in plain_fit.fixef.index]
    np.testing.assert_array_equal(odd_fit.fixef.to_numpy(), plain_fit.fixef.to_numpy())
    assert odd_fit.loglik == plain_fit.loglik


def test_dot_over_odd_names(frames):
    plain, odd = frames
    mapping = {f"x{j}": name for j, name in enumerate(ODD)}
    _same_fit(lmmscope.lmm("y ~ . + (1 | g)", odd), lmmscope.lmm("y ~ . + (1 | g)", plain), mapping)


@pytest.mark.parametrize("spell", [
    lambda name: f"`{name}`",
    lambda name: f"Q('{name}')",
    lambda name: name if name.replace(".", "_").isidentifier() else f"`{name}`",  # bare where R allows
])
def test_explicit_odd_names(frames, spell):
    plain, odd = frames
    mapping = {f"x{j}": name for j, name in enumerate(ODD)}
    odd_rhs = " + ".join(spell(name) for name in ODD)
    plain_rhs = " + ".join(f"x{j}" for j in range(len(ODD)))
    _same_fit(lmmscope.lmm(f"y ~ {odd_rhs} + (1 | g)", odd),
              lmmscope.lmm(f"y ~ {plain_rhs} + (1 | g)", plain), mapping)


def test_odd_names_inside_transforms_and_interactions(frames):
    plain, odd = frames
    f_odd = "y ~ log(`a b` + 10) + I(Sepal.Length * 2) + exp(exp) + `1x`:größe + np.abs(np) + (1 | g)"
    f_plain = "y ~ log(x1 + 10) + I(x0 * 2) + exp(x4) + x3:x2 + np.abs(x14) + (1 | g)"
    odd_fit, plain_fit = lmmscope.lmm(f_odd, odd), lmmscope.lmm(f_plain, plain)
    assert list(odd_fit.fixef.index) == ["Intercept", "log(`a b` + 10)", "I(Sepal.Length * 2)",
                                         "exp(exp)", "np.abs(np)", "1x:größe"]
    np.testing.assert_array_equal(odd_fit.fixef.to_numpy(), plain_fit.fixef.to_numpy())


def test_odd_response_slope_and_group(frames):
    plain, odd = frames
    odd = odd.rename(columns={"y": "y value", "g": "Subject.ID"})
    odd_fit = lmmscope.lmm("`y value` ~ exp + C + (exp | Subject.ID)", odd)
    plain_fit = lmmscope.lmm("y ~ x4 + x11 + (x4 | g)", plain)
    np.testing.assert_array_equal(odd_fit.fixef.to_numpy(), plain_fit.fixef.to_numpy())
    assert odd_fit.loglik == plain_fit.loglik


def test_selection_over_odd_names(frames):
    plain, odd = frames
    odd_fit = lmmscope.lmm_scope("y ~ . + (1 | g)", odd, k=3, a=1.0)
    plain_fit = lmmscope.lmm_scope("y ~ . + (1 | g)", plain, k=3, a=1.0)
    assert sorted(odd_fit.support) == sorted(["Sepal.Length", "exp", "C"])
    assert [ODD[int(s[1:])] for s in plain_fit.support] == odd_fit.support
    np.testing.assert_array_equal(odd_fit.coef.to_numpy(), plain_fit.coef.to_numpy())


@pytest.mark.parametrize("transform, expected", [
    ("scale(x)", lambda x: (x - x.mean()) / x.std(ddof=1)),
    ("center(x)", lambda x: x - x.mean()),
    ("log(x)", np.log),
    ("sqrt(x)", np.sqrt),
    ("I(x ** 2)", lambda x: x ** 2),
])
def test_transforms_equal_precomputed_columns(transform, expected):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"x": rng.uniform(1, 3, 60), "y": rng.standard_normal(60),
                       "g": np.repeat(np.arange(12), 5)})
    design = build_design(f"y ~ {transform} + (1 | g)", df)
    assert design.fixed_names == ["Intercept", transform]
    np.testing.assert_allclose(np.asarray(design.X)[:, 1], expected(df.x.to_numpy()), rtol=1e-12)


def test_poly_equals_orthogonal_polynomial():
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"x": rng.uniform(0, 3, 60), "y": rng.standard_normal(60),
                       "g": np.repeat(np.arange(12), 5)})
    design = build_design("y ~ poly(x, 2) + (1 | g)", df)
    P = np.asarray(design.X)[:, 1:]
    # R's poly(): orthonormal columns, orthogonal to the constant, spanning x and x^2
    np.testing.assert_allclose(P.T @ P, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(P.sum(axis=0), 0, atol=1e-12)
    B = np.column_stack([np.ones(60), df.x, df.x ** 2])
    resid = P - B @ np.linalg.lstsq(B, P, rcond=None)[0]
    np.testing.assert_allclose(resid, 0, atol=1e-10)


def test_mixed_type_cluster_labels(frames):
    plain, _ = frames
    labels = np.array([i if i % 2 else f"c{i}" for i in plain.g], dtype=object)
    fit = lmmscope.lmm("y ~ x0 + (1 | g)", plain.assign(g=labels))
    same = lmmscope.lmm("y ~ x0 + (1 | g)", plain.assign(g=labels.astype(str)))
    np.testing.assert_array_equal(fit.fixef.to_numpy(), same.fixef.to_numpy())
    clash = plain.assign(g=np.array([1 if i == 0 else "1" if i == 1 else i for i in plain.g], dtype=object))
    with pytest.warns(UserWarning, match="mixes label types.*one cluster"):
        merged = lmmscope.lmm("y ~ x0 + (1 | g)", clash)
    as_text = lmmscope.lmm("y ~ x0 + (1 | g)", clash.assign(g=clash.g.astype(str)))
    assert merged.ngroups == as_text.ngroups == plain.g.nunique() - 1
    np.testing.assert_array_equal(merged.fixef.to_numpy(), as_text.fixef.to_numpy())


@needs_lme4
def test_dotted_names_of_real_data_agree_with_lmer():
    """R's iris (dotted names), as R users write the formula, against lmer on the same."""
    iris = r_frame("iris")
    formula = "Sepal.Length ~ Sepal.Width + Petal.Length + log(Petal.Width) + (1 | Species)"
    fit = lmmscope.lmm(formula, iris)
    ref = lmer_fit(formula, iris)
    assert list(fit.fixef.index) == ["Intercept", "Sepal.Width", "Petal.Length", "log(Petal.Width)"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-8)


@needs_lme4
def test_r_power_inside_I_is_a_power_not_xor():
    """lme4 users write I(Days^2); in Python code ^ is XOR, silently wrong on integer
    columns.  The formula front reads ^ as R's power (lmer: 0.3370223 for I(Days^2))."""
    ss = r_frame("lme4::sleepstudy").astype({"Days": "int64"})
    caret = lmmscope.lmm("Reaction ~ Days + I(Days^2) + (1 | Subject)", ss)
    stars = lmmscope.lmm("Reaction ~ Days + I(Days**2) + (1 | Subject)", ss)
    np.testing.assert_array_equal(caret.fixef.to_numpy(), stars.fixef.to_numpy())
    assert caret.fixef.iloc[2] == pytest.approx(0.3370223274, rel=1e-8)


def test_stateful_transform_after_dropped_rows_warns(frames):
    plain, _ = frames
    df = plain.copy()
    df.loc[df.index[:3], "y"] = np.nan
    with pytest.warns(UserWarning, match=r"scale\(\) computed on the rows left"):
        lmmscope.lmm("y ~ scale(x0) + (1 | g)", df)


@needs_lme4
def test_r_factor_and_offset_in_python_formulas():
    """factor(x) is formulaic's C(x) (lmer's fixef on Orthodont's factor(age) to 1e-6);
    offset() is refused with what to do instead."""
    o = r_frame("nlme::Orthodont")
    fit = lmmscope.lmm("distance ~ factor(age) + (1 | Subject)", o)
    ref = lmer_fit("distance ~ factor(age) + (1 | Subject)", o)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-6)
    with pytest.raises(ValueError, match="offset.*subtract the offset from the response"):
        lmmscope.lmm("distance ~ age + offset(age) + (1 | Subject)", o)


def test_factor_levels_in_new_data_match_by_value(frames):
    """A factor fitted with text levels "1".."3" and new data holding the integers 1..3:
    the same predictions (matched as cluster labels are); an unseen level is refused
    naming the fitted ones."""
    plain, _ = frames
    df = plain.assign(f=np.array(["1", "2", "3"])[np.arange(len(plain)) % 3])
    fit = lmmscope.lmm("y ~ x0 + f + (1 | g)", df)
    new = df.iloc[:12]
    np.testing.assert_array_equal(fit.predict(new.assign(f=new.f.astype(int))), fit.predict(new))
    with pytest.raises(ValueError, match="level\\(s\\) not seen in fitting: 7; fitted levels: '1'"):
        fit.predict(new.assign(f=7))
