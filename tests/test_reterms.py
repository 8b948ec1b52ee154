"""Several random-effects terms: formula expansion, lme4's reTrms layout, and lmm() against lmer."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.formula.bars import has_several_terms, parse_bar_terms
from lmmscope.reterms import build_reterms

from lme4_helper import needs_lme4, r_frame, require_lme4


@pytest.mark.parametrize("formula, fixed, terms", [
    ("y ~ x + (1 | a) + (1 | b)", "x", [("1", ("a",)), ("1", ("b",))]),
    ("y ~ 1 + (1 | a/b)", "1", [("1", ("a",)), ("1", ("b", "a"))]),
    ("y ~ (1 | a/b/c)", "1", [("1", ("a",)), ("1", ("b", "a")), ("1", ("c", "b", "a"))]),
    ("y ~ x + (1 | a:b) - 1", "x - 1", [("1", ("a", "b"))]),
    ("y ~ Days + (Days || Subject)", "Days", [("1", ("Subject",)), ("0 + Days", ("Subject",))]),
    ("y ~ (0 + x + z || g)", "1", [("0 + x", ("g",)), ("0 + z", ("g",))]),
    ("y ~ x + (0 + f | g) + (1 | g)", "x", [("0 + f", ("g",)), ("1", ("g",))]),
])
def test_bar_terms_expand_as_lme4(formula, fixed, terms):
    parsed = parse_bar_terms(formula)
    assert has_several_terms(formula)
    assert parsed.fixed.replace(" ", "") == fixed.replace(" ", "")
    assert [(t.random, t.group) for t in parsed.terms] == terms


def test_one_term_stays_on_the_one_factor_path():
    assert not has_several_terms("y ~ x + (1 + x | g)")
    assert not has_several_terms("y ~ x | (z | g)")
    assert not has_several_terms("y ~ x + (1 | `a:b`)")  # one column whose name has a ':'


@pytest.mark.parametrize("formula, message", [
    ("y ~ x + (1 | log(g))", "grouping factor"),
    ("y ~ x + (1 | a/)", "ends with an operator"),
    ("y ~ x + (1 | a) + (1 | b | c)", "exactly one"),
])
def test_bad_grouping_factors_say_what_lme4_takes(formula, message):
    with pytest.raises(ValueError, match=message):
        parse_bar_terms(formula)


def _simulated(seed=3, n_a=6, n_b=4, reps=3):
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(n_a), n_b * reps)
    b = np.tile(np.repeat(np.arange(n_b), reps), n_a)
    x = rng.standard_normal(a.size)
    y = 1 + 0.5 * x + rng.standard_normal(n_a)[a] + 2 * rng.standard_normal(n_b)[b] \
        + x * rng.standard_normal(n_b)[b] + rng.standard_normal(a.size)
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": [f"b{v}" for v in b]})


def test_reterms_layout_follows_lme4():
    """Terms by decreasing levels; Z columns levels-outer; theta column-wise per term;
    Lambdat = Lambda' with theta at Lind; bounds 0 on diagonals."""
    df = _simulated()
    _design, rt, _rows = build_reterms(parse_bar_terms("y ~ x + (1 + x | b) + (1 | a)"), df)
    assert [t.group_name for t in rt.terms] == ["a", "b"]  # a: 6 levels, b: 4
    assert rt.q == 6 + 4 * 2 and list(rt.Gp) == [0, 6, 14]
    np.testing.assert_array_equal(rt.lower, [0, 0, -np.inf, 0])
    np.testing.assert_array_equal(rt.theta0, [1, 1, 0, 1])
    Z = rt.Zt.T.toarray()
    b_codes = rt.terms[1].codes
    np.testing.assert_array_equal(Z[np.arange(len(df)), 6 + 2 * b_codes], 1.0)
    np.testing.assert_allclose(Z[np.arange(len(df)), 7 + 2 * b_codes], df["x"], rtol=0, atol=0)
    theta = np.array([2.0, 3.0, 5.0, 7.0])
    Lambda = rt.lambdat(theta).T.toarray()
    np.testing.assert_array_equal(np.diag(Lambda)[:6], 2.0)
    np.testing.assert_array_equal(Lambda[6:8, 6:8], [[3.0, 0.0], [5.0, 7.0]])  # T_b, lower
    assert rt.lambdat(theta).nnz == 6 + 4 * 3


# ----- agreement with lmer ---------------------------------------------------------------

def _lmer(formula, df, reml):
    from lme4_helper import LMER_CONTROL, ro, pandas2ri, localconverter
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
    ro.r(f"m <- lmer({formula}, data = d, REML = {'TRUE' if reml else 'FALSE'}, "
         f"control = {LMER_CONTROL})")
    with localconverter(ro.default_converter + pandas2ri.converter):
        vc = ro.conversion.rpy2py(ro.r("as.data.frame(VarCorr(m))"))
        re = ro.conversion.rpy2py(ro.r("as.data.frame(ranef(m, condVar = TRUE))"))
    return {"loglik": float(ro.r("as.numeric(logLik(m))")[0]),
            "fixef": np.array(ro.r("fixef(m)")),
            "se": np.array(ro.r("sqrt(diag(as.matrix(vcov(m))))")),
            "sdcor": vc["sdcor"].to_numpy(),
            "ranef": re, "fitted": np.array(ro.r("fitted(m)")),
            "theta": np.array(ro.r("getME(m, 'theta')"))}


def _factor_slopes():
    """15 x 6 crossed, a factor's levels as correlated random effects of g: (0 + f | g)."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(15), 24)
    h = np.tile(np.repeat(np.arange(6), 4), 15)
    level = rng.integers(0, 3, g.size)
    x = rng.standard_normal(g.size)
    effects = rng.standard_normal((15, 3)) * np.array([1.0, 1.5, 0.7])
    y = 0.5 * x + effects[g, level] + rng.standard_normal(6)[h] + rng.standard_normal(g.size)
    return pd.DataFrame({"y": y, "x": x, "f": np.array(list("uvw"))[level], "g": g, "h": h})


CASES = {
    "Penicillin": ("diameter ~ 1 + (1|plate) + (1|sample)", lambda: r_frame("Penicillin")),
    "Pastes": ("strength ~ 1 + (1|batch/cask)", lambda: r_frame("Pastes")),
    "sleepstudy ||": ("Reaction ~ Days + (Days || Subject)", lambda: r_frame("sleepstudy")),
    # a correlated slope in the eliminated (largest) term, crossed with an intercept
    "simulated slopes": ("y ~ x + (1 + x | b) + (1 | a)", lambda: _simulated(n_a=5, n_b=12)),
    "factor columns": ("y ~ x + (0 + f | g) + (1 | h)", _factor_slopes),
}


@needs_lme4
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("case", list(CASES))
def test_several_terms_agree_with_lmer(case, reml):
    """Measured (R 4.2.2, lme4 1.1-31, BOBYQA at rhoend 1e-12; two runs): logLik within
    2e-15 relative, fixef 5.4e-8 relative, standard errors 1.5e-7, standard deviations
    and theta 1.2e-6 relative, ranef and fitted 1.1e-7 of the data's scale, condsd 8e-8
    relative.  What remains is lmer's: our optimum is polished to a gradient of ~1e-13,
    while lmer's theta moves by up to ~1e-6 relative from one R process to another.
    Tolerances: 2x to 10x those."""
    formula, data = CASES[case]
    df = data()
    ours = lmmscope.lmm(formula, df, method="REML" if reml else "ML")
    ref = _lmer(formula, df, reml)
    scale = float(np.std(df[formula.split("~")[0].strip()]))
    assert ours.converged and not ours.singular
    np.testing.assert_allclose(ours.loglik, ref["loglik"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.fixef.to_numpy(), ref["fixef"], rtol=1e-7, atol=0)
    np.testing.assert_allclose(ours.bse.to_numpy(), ref["se"], rtol=1.5e-6, atol=0)
    np.testing.assert_allclose(ours.varcorr["std_dev"].to_numpy(), ref["sdcor"], rtol=5e-6, atol=0)
    np.testing.assert_allclose(ours.theta, ref["theta"], rtol=5e-6, atol=1e-7)
    np.testing.assert_allclose(ours.fitted(), ref["fitted"], rtol=0, atol=1e-6 * scale)
    re = ref["ranef"]
    mine = np.array([ours.ranef[_our_group(str(g))].loc[_label(ours, str(g), lv), _column(str(term))]
                     for g, term, lv in zip(re["grpvar"], re["term"], re["grp"])])
    np.testing.assert_allclose(mine, re["condval"].to_numpy(), rtol=0, atol=1e-6 * scale)
    # condVar: each term's conditional standard deviations, levels and columns as lme4's
    condsd = {}
    for group, names, cov in ours.mixed.condvar():
        index = ours.ranef[group].index
        for j, name in enumerate(names):
            for level, sd in zip(index, np.sqrt(cov[:, j, j])):
                condsd[(group, name, str(level))] = sd
    mine = [condsd[(_our_group(str(g)), _column(str(term)), str(lv))]
            for g, term, lv in zip(re["grpvar"], re["term"], re["grp"])]
    np.testing.assert_allclose(mine, re["condsd"].to_numpy(), rtol=1e-6, atol=0)


def _column(term):
    """lme4's name of a random-effect column as lmmscope spells it: the intercept, and a
    factor's level column (lme4 ``fu``, formulaic ``f[u]``)."""
    return "Intercept" if term == "(Intercept)" else _FACTOR_COLUMNS.get(term, term)


_FACTOR_COLUMNS = {"fu": "f[u]", "fv": "f[v]", "fw": "f[w]"}


def _our_group(grpvar):
    return grpvar.split(".")[0] if grpvar.endswith(".1") else grpvar


def _label(ours, grpvar, level):
    index = ours.ranef[_our_group(grpvar)].index
    return index[[str(v) for v in index].index(level)]


@needs_lme4
def test_predictions_per_factor_as_lmer():
    """New data with an unseen level of one factor: lme4's allow.new.levels drops that
    factor's effect only; re.form = NA gives X beta.  Measured 4e-7 of y's scale."""
    require_lme4()
    from lme4_helper import ro, pandas2ri, localconverter
    df = r_frame("Penicillin")
    ours = lmmscope.lmm("diameter ~ 1 + (1|plate) + (1|sample)", df)
    new = pd.DataFrame({"plate": ["a", "b", "zz"], "sample": ["A", "new", "F"]})
    _lmer("diameter ~ 1 + (1|plate) + (1|sample)", df, True)
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["nd"] = new
    ref1 = np.array(ro.r("predict(m, newdata = nd, allow.new.levels = TRUE)"))
    ref0 = np.array(ro.r("predict(m, newdata = nd, re.form = NA)"))
    np.testing.assert_allclose(ours.predict(new, level=1, allow_new_levels=True), ref1,
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.predict(new, level=0), ref0, rtol=1e-12, atol=0)
    ref_plate = np.array(ro.r("predict(m, newdata = nd, re.form = ~(1 | plate), "
                              "allow.new.levels = TRUE)"))
    np.testing.assert_allclose(ours.predict(new, level=1, allow_new_levels=True,
                                            re_form=["plate"]), ref_plate, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.predict(level=1, re_form="sample"),
                               np.array(ro.r("predict(m, re.form = ~(1 | sample))")),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="new level"):
        ours.predict(new, level=1)


def test_nested_predict_matches_fitted_on_training_rows():
    df = _simulated()
    fit = lmmscope.lmm("y ~ x + (1 | a/b)", df)
    np.testing.assert_allclose(fit.predict(df, level=1), fit.fitted(), rtol=1e-12, atol=1e-12)
    assert set(fit.ranef) == {"a", "b:a"}
    assert "b1:0" in {str(v) for v in fit.ranef["b:a"].index}


def test_the_one_term_parser_refuses_several_terms_clearly():
    # parquet and Dask data with several terms: tests/test_sources_several_terms.py
    with pytest.raises(ValueError, match="only one random-effects term here.*lmm_scope"):
        lmmscope.formula.parse_formula("y ~ x + (1 | a) + (1 | b)")


# ----- selection -------------------------------------------------------------------------

def _crossed_candidates(seed=0, n_s=20, n_i=15, p=30):
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(n_s), n_i)
    item = np.tile(np.arange(n_i), n_s)
    X = rng.standard_normal((s.size, p))
    y = (X[:, :3] @ np.array([1.0, -0.8, 0.6]) + rng.standard_normal(n_s)[s]
         + 0.7 * rng.standard_normal(n_i)[item] + rng.standard_normal(s.size))
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    df["y"], df["subj"], df["item"] = y, s, item
    return df, "y ~ " + " + ".join(df.columns[:p]) + " + (1 | subj) + (1 | item)"


def test_whitened_statistics_are_sigma_a_inverse_products():
    """Woodbury with the sparse I + a Z~'Z~ against X' Sigma_a^-1 X formed densely (an
    oracle on 300 rows; the code never forms Sigma_a).  Measured 1e-15 relative."""
    from lmmscope.multiterm_scope import SeveralTermsData
    df, formula = _crossed_candidates(p=4)
    design, rt, _rows = build_reterms(parse_bar_terms(formula), df)
    X = np.asarray(design.X, dtype=float)
    data = SeveralTermsData(X, design.y, rt, intercept=None)
    Z = rt.Zt.T.toarray() / data.z_scale
    systems = []
    for a in (0.7, 3.0):  # one symbolic analysis serves every a
        gram, xty, yty = data.whitened(a)
        systems.append(data._system)
        sigma = a * Z @ Z.T + np.eye(len(df))
        np.testing.assert_allclose(gram, X.T @ np.linalg.solve(sigma, X), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xty, X.T @ np.linalg.solve(sigma, design.y), rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(yty, design.y @ np.linalg.solve(sigma, design.y), rtol=1e-10)
    assert systems[0] is systems[1] is not None
    # the refits on column subsets share the analysis of Z'Z too
    assert data.subset_stats([0, 1])._system is data.subset_stats([2])._system is not None


def test_selection_with_crossed_terms_finds_the_support_and_refits_as_lmm():
    df, formula = _crossed_candidates()
    fit = lmmscope.lmm_scope(formula, df)
    assert fit.support == ["x0", "x1", "x2"]
    refit = lmmscope.lmm("y ~ x0 + x1 + x2 + (1 | subj) + (1 | item)", df)
    np.testing.assert_allclose(fit.loglik, refit.loglik, rtol=1e-12, atol=0)
    np.testing.assert_allclose(fit.fixef.to_numpy(), refit.fixef.to_numpy(), rtol=1e-9, atol=1e-12)
    assert fit.coef.index.tolist() == ["Intercept"] + [f"x{j}" for j in range(30)]
    assert (fit.coef.drop(["Intercept", "x0", "x1", "x2"]) == 0).all()
    # the selection's estimates: GLS at the chosen a on the support (dense oracle)
    from lmmscope.multiterm_scope import SeveralTermsData
    design, rt, _rows = build_reterms(parse_bar_terms(formula), df)
    Z = rt.Zt.T.toarray() / SeveralTermsData(np.asarray(design.X), design.y, rt, 0).z_scale
    sigma = fit.a * Z @ Z.T + np.eye(len(df))
    Xs = np.column_stack([np.ones(len(df)), df[["x0", "x1", "x2"]]])
    gls = np.linalg.solve(Xs.T @ np.linalg.solve(sigma, Xs), Xs.T @ np.linalg.solve(sigma, df["y"]))
    np.testing.assert_allclose(fit.coef[["Intercept", "x0", "x1", "x2"]], gls, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.predict(df.head(5), level=1), fit.fitted()[:5],
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="crossed"):
        fit.inference()
    with pytest.raises(ValueError, match="whole clusters"):
        lmmscope.lmm_scope(formula, df, k="cv")


def test_selection_at_fixed_k_and_a_with_nested_terms():
    df = _simulated(n_a=10)
    df["x2"] = np.random.default_rng(1).standard_normal(len(df))
    fit = lmmscope.lmm_scope("y ~ x + x2 + (1 | a/b)", df, k=1, a=0.5)
    assert fit.k == 1 and fit.a == 0.5 and fit.support == ["x"]
    table = fit.inference()
    assert table.index.tolist() == ["Intercept", "x", "x2"]
    assert np.all(np.isfinite(table[["estimate", "std_error"]].to_numpy()))


def test_inference_by_the_outer_factor_equals_one_term_with_the_same_proxy():
    """(1 | g) + (0 + x | g) and (1 + x | g) whiten by the same Sigma_a = a Z~Z~' + I, and
    g is the outermost (only) clustering of both: the several-terms selection and its
    debiased table (scores by g) equal the one-term path's.  Measured 1e-13."""
    rng = np.random.default_rng(5)
    n, m, p = 25, 8, 12
    g = np.repeat(np.arange(n), m)
    X = rng.standard_normal((n * m, p))
    y = X[:, 0] - 0.7 * X[:, 1] + rng.standard_normal(n)[g] + X[:, 0] * rng.standard_normal(n)[g] \
        + rng.standard_normal(n * m)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    df["y"], df["g"] = y + 5.0, g
    fixed = " + ".join(df.columns[:p])
    several = lmmscope.lmm_scope(f"y ~ {fixed} + (1 | g) + (0 + x0 | g)", df, k=2, a=0.8)
    one = lmmscope.lmm_scope(f"y ~ {fixed} + (1 + x0 | g)", df, k=2, a=0.8)
    assert several.support == one.support
    np.testing.assert_allclose(several.coef.to_numpy(), one.coef.to_numpy(), rtol=1e-9, atol=1e-11)
    ours, theirs = several.inference(), one.inference()
    np.testing.assert_allclose(ours[["estimate", "std_error", "ci_lower", "ci_upper"]].to_numpy(),
                               theirs[["estimate", "std_error", "ci_lower", "ci_upper"]].to_numpy(),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | a) + (1 | b)", "y ~ x + (1 | a) + (x | b)",
                                     "y ~ x + (1 + x | a) + (1 | b) + (0 + x | b)"])
def test_block_schur_and_sparse_lu_factors_agree(formula):
    """The factorisations of A = Lambda'Z'Z Lambda + I (first term eliminated, with and
    without the index map of the Schur product; SuperLU on the whole, with its ordering
    reused) against a dense A: log|A|, solves and the diagonal blocks of A^-1
    (measured 1e-15 relative)."""
    import scipy.sparse as sp
    from lmmscope.sparse_factor import LUSystem, SchurSystem
    df = _simulated(n_a=12)
    _design, rt, _rows = build_reterms(parse_bar_terms(formula), df)
    theta = np.linspace(0.3, 1.4, rt.theta0.size) * np.where(rt.lower == 0, 1.0, -0.5)
    G = (rt.Zt @ rt.Zt.T).tocsc()
    Lt = rt.lambdat(theta)
    dense = (Lt @ G @ Lt.T + sp.identity(rt.q)).toarray()
    inverse = np.linalg.inv(dense)
    B = np.random.default_rng(0).standard_normal((rt.q, 3))
    lu = LUSystem(G, rt)
    lu.factor(0.5 * theta)  # finds the ordering the next factor reuses
    factors = [SchurSystem(G, rt).factor(theta),
               SchurSystem(G, rt, lmmscope.Control(max_schur_pairs=0)).factor(theta),
               lu.factor(theta)]
    assert factors[0].system.exact_gradient and not factors[1].system.exact_gradient
    assert lu.ordering is not None and factors[2]._order is lu.ordering
    for factor in factors:
        np.testing.assert_allclose(factor.logdet, np.linalg.slogdet(dense)[1], rtol=1e-12, atol=0)
        np.testing.assert_allclose(factor.solve(B), np.linalg.solve(dense, B), rtol=1e-10,
                                   atol=1e-12)
        for i, t in enumerate(rt.terms):
            starts = rt.Gp[i] + np.arange(t.n_levels) * t.p
            index = starts[:, None] + np.arange(t.p)
            np.testing.assert_allclose(factor.inverse_diagonal_blocks(starts, t.p),
                                       inverse[index[:, :, None], index[:, None, :]],
                                       rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | a) + (1 | b)", "y ~ x + (1 | a) + (x | b)",
                                     "y ~ x + (1 + x | a) + (1 | b) + (0 + x | b)"])
@pytest.mark.parametrize("last_at_zero", [False, True], ids=["inside", "last on its bound"])
def test_exact_deviance_gradient_matches_central_differences(formula, reml, last_at_zero):
    """The gradient from the block Schur factor's A^-1 against central differences
    (h = 1e-6, error ~1e-9 of the gradient's size); measured agreement 7e-8 absolute
    on gradients of size 40-50.  A diagonal theta at 0 (a singular fit's point): the
    deviance is even in it, so its derivative is 0 (central differences straddle 0)."""
    from lmmscope.sparse_pls import SparseStats, deviance, deviance_and_gradient
    df = _simulated(n_a=12)
    design, rt, _rows = build_reterms(parse_bar_terms(formula), df)
    stats = SparseStats.from_arrays(np.asarray(design.X, dtype=float), design.y, rt.Zt, 0)
    theta = np.linspace(0.3, 1.4, rt.theta0.size) * np.where(rt.lower == 0, 1.0, -0.5)
    if last_at_zero:
        theta[-1] = 0.0
    _value, gradient = deviance_and_gradient(stats, rt, theta, reml)
    h = 1e-6
    central = np.array([(deviance(stats, rt, theta + h * e, reml)
                         - deviance(stats, rt, theta - h * e, reml)) / (2 * h)
                        for e in np.eye(theta.size)])
    np.testing.assert_allclose(gradient, central, rtol=0, atol=1e-6)


@needs_lme4
def test_selection_with_200_candidates_refits_as_lmer():
    """A crossed design (20 subjects x 15 items) with 200 candidate columns: the selection
    finds the 3 true columns, and its REML refit agrees with lmer on the selected model
    (measured, two runs: logLik 3e-16 relative, fixef 8e-10, sd 6e-8, fitted and ranef
    1.8e-8 of y's scale: lmer's precision).
    k_max=10 keeps the paths over k (at each a the tuning visits) short."""
    df, formula = _crossed_candidates(seed=2, p=200)
    fit = lmmscope.lmm_scope(formula, df, k_max=10)
    assert fit.support == ["x0", "x1", "x2"]
    ref = _lmer("y ~ x0 + x1 + x2 + (1 | subj) + (1 | item)", df, True)
    scale = float(np.std(df["y"]))
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-8, atol=0)
    np.testing.assert_allclose(fit.varcorr["std_dev"].to_numpy(), ref["sdcor"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(fit.fitted(), ref["fitted"], rtol=0, atol=5e-7 * scale)
    re = ref["ranef"]
    mine = [fit.ranef[str(g)].loc[_label(fit, str(g), str(lv)), "Intercept"]
            for g, lv in zip(re["grpvar"], re["grp"])]
    np.testing.assert_allclose(mine, re["condval"].to_numpy(), rtol=0, atol=5e-7 * scale)


@needs_lme4
def test_singular_crossed_fit_as_lmer():
    """A factor without variance (b): theta on its bound, isSingular as lme4's, logLik
    equal (measured 1.4e-13 absolute; theta 4e-8)."""
    rng = np.random.default_rng(12)
    a, b = np.repeat(np.arange(10), 12), np.tile(np.arange(6), 20)
    x = rng.standard_normal(a.size)
    df = pd.DataFrame({"y": x + rng.standard_normal(10)[a] + rng.standard_normal(a.size),
                       "x": x, "a": a, "b": b})
    fit = lmmscope.lmm("y ~ x + (1 | a) + (1 | b)", df)
    ref = _lmer("y ~ x + (1 | a) + (1 | b)", df, True)
    assert fit.singular and fit.converged and fit.theta[1] == 0
    np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=0, atol=1e-6)


# ----- the one-term column checks on the several-term path ---------------------------------

def _with_columns(**columns):
    df = _simulated(n_a=8)
    for name, values in columns.items():
        df[name] = values(df)
    return df


def _outcome(fit, formula, df, **kw):
    """(error message or None, the scale and rank warnings) of lmmscope.<fit>."""
    import warnings
    from lmmscope.checks import ScaleWarning
    from lmmscope.rank import RankDeficiencyWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            getattr(lmmscope, fit)(formula, df, **kw)
            error = None
        except ValueError as e:
            error = str(e)
    kinds = (ScaleWarning, RankDeficiencyWarning)
    return error, sorted(str(w.message) for w in caught if issubclass(w.category, kinds))


@pytest.mark.parametrize("fit", ["lmm", "lmm_scope"])
@pytest.mark.parametrize("extra, values", [
    ("big", lambda d: 1e5 * d["x"] ** 2),  # standard deviations 1 and 2e5: checkScaleX
    ("z", lambda d: 2 * d["x"] + 1),  # aliased (lmm drops it) / duplicated (refused)
    ("z", lambda d: np.full(len(d), 3.0)),  # constant
], ids=["scales", "duplicate", "constant"])
def test_column_checks_say_what_one_term_says(fit, extra, values):
    """The several-term fits run the one-term checks on the same statistics: the same
    refusal as one term's fit, else the same warnings as one term's lmm (the one-term
    lmm_scope skips checkScaleX where it keeps no Gram)."""
    df = _with_columns(**{extra: values})
    kw = {"k": 1, "a": 0.5} if fit == "lmm_scope" else {}
    several = _outcome(fit, f"y ~ x + {extra} + (1 | a) + (1 | b)", df, **kw)
    one = _outcome(fit, f"y ~ x + {extra} + (1 | a)", df, **kw)
    assert several[0] == one[0]
    if several[0] is None:
        assert several[1] == _outcome("lmm", f"y ~ x + {extra} + (1 | a)", df)[1]
        assert several[1]
    else:
        assert "column(s) in the fixed-effects design" in several[0]


def test_scope_refuses_a_copy_of_the_response():
    df = _with_columns(w=lambda d: 3 * d["y"] - 1)
    with pytest.raises(ValueError, match="response up to location and scale"):
        lmmscope.lmm_scope("y ~ x + w + (1 | a) + (1 | b)", df, k=1, a=0.5)


# ----- anova and simulate with several terms -----------------------------------------------

@needs_lme4
def test_anova_of_several_term_fits_as_lme4():
    """lme4's anova(m0, m1, m2) of REML fits (ML refits, LRT, AIC/BIC), models given out
    of order: every number as lme4's (measured: logLik, AIC, BIC 1e-15 relative, a
    chi-square of 0.0026 9e-11 relative, its p-value 2e-12)."""
    from lme4_helper import LMER_CONTROL, ro, pandas2ri, localconverter
    df = _simulated(n_a=10, n_b=6)
    df["z"] = np.random.default_rng(5).standard_normal(len(df))
    formulas = ["y ~ x + z + (1 | a) + (1 | b)", "y ~ 1 + (1 | a) + (1 | b)",
                "y ~ x + (1 | a) + (1 | b)"]
    fits = [lmmscope.lmm(f, df) for f in formulas]
    with pytest.warns(UserWarning, match="refitting model"):
        ours = fits[0].anova(*fits[1:], names=["m2", "m0", "m1"])
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
    for name, f in zip(["m2", "m0", "m1"], formulas):
        ro.r(f"{name} <- lmer({f}, data = d, control = {LMER_CONTROL})")
    with localconverter(ro.default_converter + pandas2ri.converter):
        ref = ro.conversion.rpy2py(ro.r("as.data.frame(suppressMessages(anova(m2, m0, m1)))"))
    assert list(ours.index) == ["m0", "m1", "m2"] == list(ref.index)
    for column in ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]:
        np.testing.assert_allclose(ours[column].to_numpy(float), ref[column].to_numpy(float),
                                   rtol=1e-6, atol=0, err_msg=column)


def test_anova_refuses_models_of_different_data():
    df = _simulated(n_a=10, n_b=6)
    a = lmmscope.lmm("y ~ x + (1 | a) + (1 | b)", df)
    b = lmmscope.lmm("y ~ x + (1 | a) + (1 | b)", df.iloc[:-3])
    with pytest.raises(ValueError, match="same size of dataset"):
        a.anova(b)


@needs_lme4
def test_simulate_draws_every_term_with_the_fitted_variances():
    """Penicillin (plate x sample crossed): 4,000 draws.  Unconditional (lme4's default
    re.form = NA): mean X beta, the covariance of two rows sharing only a plate is
    sigma_plate^2, only a sample sigma_sample^2, the same row the sum with sigma^2 (lme4's
    VarCorr).  Conditional on every term (re_form=None): mean the fitted values, variance
    sigma^2, rows uncorrelated.  Tolerance: 5 standard errors of each sample moment at
    this draw count, (v_i v_j + v_ij^2) / n for a covariance."""
    df = r_frame("Penicillin")
    fit = lmmscope.lmm("diameter ~ 1 + (1|plate) + (1|sample)", df)
    ref = _lmer("diameter ~ 1 + (1|plate) + (1|sample)", df, True)
    vc = dict(zip(fit.varcorr["group"], ref["sdcor"] ** 2))  # lme4's variances
    n = 4000
    sims = fit.simulate(n, seed=11).to_numpy()
    assert sims.shape == (len(df), n)
    plate, sample = df["plate"].astype(str).to_numpy(), df["sample"].astype(str).to_numpy()
    i = 0
    j = int(np.flatnonzero((plate == plate[i]) & (sample != sample[i]))[0])
    k = int(np.flatnonzero((plate != plate[i]) & (sample == sample[i]))[0])
    m = int(np.flatnonzero((plate != plate[i]) & (sample != sample[i]))[0])
    total = vc["plate"] + vc["sample"] + vc["Residual"]
    cov = np.cov(sims[[i, j, k, m]])
    expected = {(0, 0): total, (0, 1): vc["plate"], (0, 2): vc["sample"], (0, 3): 0.0}
    for (a, b), value in expected.items():
        np.testing.assert_allclose(cov[a, b], value, rtol=0,
                                   atol=5 * np.sqrt((total * total + value ** 2) / n))
    np.testing.assert_allclose(sims.mean(axis=1), ref["fixef"][0], rtol=0,
                               atol=5 * np.sqrt(total / n))
    conditional = fit.simulate(n, seed=12, re_form=None).to_numpy()
    np.testing.assert_allclose(conditional.mean(axis=1), ref["fitted"], rtol=0,
                               atol=5 * np.sqrt(vc["Residual"] / n))
    cov = np.cov(conditional[[i, j]])
    np.testing.assert_allclose(cov[0, 0], vc["Residual"], rtol=0,
                               atol=5 * vc["Residual"] * np.sqrt(2 / n))
    np.testing.assert_allclose(cov[0, 1], 0.0, rtol=0, atol=5 * vc["Residual"] / np.sqrt(n))
    # conditioning on plate only: a shared sample still covaries, a shared plate not
    partial = np.cov(fit.simulate(n, seed=13, re_form=["plate"]).to_numpy()[[i, j, k]])
    np.testing.assert_allclose([partial[0, 1], partial[0, 2]], [0.0, vc["sample"]], rtol=0,
                               atol=5 * (vc["sample"] + vc["Residual"]) / np.sqrt(n))


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x | a) + (1 | b)", "y ~ x + (1 | a) + (x | b)"])
def test_sparse_lu_path_reaches_the_block_schur_optimum(formula):
    """Above Control.dense_schur_limit the refit runs on SuperLU (its ordering reused)
    with central differences: the same optimum as the block Schur factor with its exact
    gradient (measured: deviance 1e-16 relative, theta 2e-8)."""
    from lmmscope.sparse_factor import LUSystem
    from lmmscope.sparse_pls import SparseStats, optimise_theta
    design, rt, _rows = build_reterms(parse_bar_terms(formula), _simulated(n_a=12))
    X = np.asarray(design.X, dtype=float)
    schur = optimise_theta(SparseStats.from_arrays(X, design.y, rt.Zt, 0), rt, True)
    stats = SparseStats.from_arrays(X, design.y, rt.Zt, 0)
    lu = optimise_theta(stats, rt, True, lmmscope.Control(dense_schur_limit=0))
    assert isinstance(stats._system, LUSystem)
    assert lu.converged and stats._system.ordering is not None
    np.testing.assert_allclose(lu.solution.deviance(True), schur.solution.deviance(True),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(lu.theta, schur.theta, rtol=0, atol=1e-6)


@pytest.mark.parametrize("formula, data", [
    ("y ~ x + (1 + x | b) + (1 | a)", lambda: _simulated(n_a=5, n_b=12)),
    ("y ~ x + (0 + f | g) + (1 | h)", _factor_slopes),
])
def test_the_optimum_is_polished_whatever_the_start(formula, data):
    """L-BFGS-B stops where the deviance's relative reduction is tiny, ~1e-6 short in
    theta and wherever its path led; the Newton polish after it reaches the optimum:
    from the ANOVA start, lme4's theta0 and 3 theta0, REML and ML (measured: thetas
    1.4e-14 apart, exact gradient at most 2.1e-13 on deviances of 600-1100)."""
    from lmmscope.sparse_pls import SparseStats, deviance_gradient, optimise_theta
    design, rt, _rows = build_reterms(parse_bar_terms(formula), data())
    stats = SparseStats.from_arrays(np.asarray(design.X, dtype=float), design.y, rt.Zt, 0)
    for reml in (True, False):
        optima = [optimise_theta(stats, rt, reml, theta0=start)
                  for start in (None, rt.theta0, 3 * rt.theta0)]
        for optimum in optima:
            assert optimum.converged and optimum.message.endswith("Newton polish: converged")
            gradient = deviance_gradient(stats, rt, optimum.solution, reml)
            np.testing.assert_allclose(gradient, 0, rtol=0, atol=5e-12)
            np.testing.assert_allclose(optimum.theta, optima[0].theta, rtol=1e-12, atol=1e-13)


def test_several_terms_checks_follow_the_users_control():
    """rank_tol and scale_ratio_tol of the user's Control decide the several-term checks
    (lmm and lmm_scope), as for one term."""
    df = _simulated()
    rng = np.random.default_rng(5)
    df["near"] = df["x"] + 1e-5 * rng.standard_normal(len(df))
    formula = "y ~ x + near + (1 | a) + (1 | b)"
    import warnings as w

    from lmmscope.checks import ScaleWarning
    from lmmscope.rank import RankDeficiencyWarning
    with w.catch_warnings():
        w.simplefilter("error", RankDeficiencyWarning)
        kept = lmmscope.lmm(formula, df)  # default rank_tol 1e-7: 'near' is not aliased
    assert "near" in kept.fixef.index
    with pytest.warns(RankDeficiencyWarning, match="near"):
        dropped = lmmscope.lmm(formula, df, control=lmmscope.Control(rank_tol=1e-3))
    assert "near" not in dropped.fixef.index
    df["big"] = 100 * rng.standard_normal(len(df))
    with w.catch_warnings():
        w.simplefilter("error", ScaleWarning)  # lme4's default tol 1e3: no warning
        lmmscope.lmm_scope("y ~ x + big + (1 | a) + (1 | b)", df, k=1)
    with pytest.warns(ScaleWarning, match="different scales"):
        lmmscope.lmm_scope("y ~ x + big + (1 | a) + (1 | b)", df, k=1,
                           control=lmmscope.Control(scale_ratio_tol=10.0))


# -- review fixes: aliased candidates in the tuning's refits, grouping columns that are also
# -- fixed effects, interaction labels of numbers stored as int or float

def _aliased_candidates():
    rng = np.random.default_rng(7)
    subj, item = np.repeat(np.arange(15), 10), np.tile(np.arange(10), 15)
    df = pd.DataFrame({"x0": rng.standard_normal(150), "x1": rng.standard_normal(150)})
    df["x2"] = 2 * df["x0"] - df["x1"] + 3  # in the span of the intercept, x0 and x1
    df["y"] = (df["x0"] + rng.standard_normal(15)[subj] + rng.standard_normal(10)[item]
               + rng.standard_normal(150))
    df["subj"], df["item"] = subj, item
    return df


def test_tuning_refits_drop_aliased_candidates_as_lme4():
    """a=None tunes a by refits on supports that may hold x2 = 2 x0 - x1 + 3: such a refit
    drops x2 (lme4's rank rule) and equals the refit without it; a fit whose solution
    is not positive definite says so (no AttributeError on a None solution)."""
    from lmmscope.exceptions import RankDeficientError
    from lmmscope.multiterm import MultiTermFit
    from lmmscope.multiterm_scope import SeveralTermsData, SeveralTermsRefitter
    df = _aliased_candidates()
    formula = "y ~ x0 + x1 + x2 + (1 | subj) + (1 | item)"
    design, rt, _rows = build_reterms(parse_bar_terms(formula), df)
    X = np.asarray(design.X, dtype=float)
    data = SeveralTermsData(X, design.y, rt, intercept=0)
    refitter = SeveralTermsRefitter(data, design.fixed_names, 0)
    aliased, full = refitter.fit([0, 1, 2, 3], reml=False), refitter.fit([0, 1, 2], reml=False)
    assert aliased.fixed_names == ["Intercept", "x0", "x1"]
    np.testing.assert_allclose(aliased.deviance, full.deviance, rtol=1e-14, atol=0)
    np.testing.assert_allclose(refitter.variance_ratio([0, 1, 2, 3]),
                               refitter.variance_ratio([0, 1, 2]), rtol=1e-14, atol=0)
    # a column of zeros: X'X - X'Z A^-1 Z'X has an exactly zero pivot at every theta
    zero = SeveralTermsData(np.column_stack([X[:, :2], np.zeros(len(X))]), design.y, rt, 0)
    with pytest.raises(RankDeficientError, match="Intercept, x0, zero"):
        MultiTermFit(zero.stats, rt, ["Intercept", "x0", "zero"], 0)
    for kw in ({}, {"k": 3}):  # a refit-tuned: every support the search reaches is refitted
        fit = lmmscope.lmm_scope("y ~ . + (1 | subj) + (1 | item)", df, **kw)
        refit = lmmscope.lmm("y ~ " + " + ".join(fit.selected[1:]) + " + (1 | subj) + (1 | item)",
                             df)
        np.testing.assert_allclose(fit.loglik, refit.loglik, rtol=1e-12, atol=0)
    # k = 3 selects the three collinear columns; the final refit drops x2 as lme4 does
    assert fit.support == ["x0", "x1", "x2"] and fit.dropped_columns == ["x2"]


@needs_lme4
def test_interaction_labels_are_rs_text_of_each_part():
    """lme4 labels s:it by pasting each factor's levels as R writes them: a float column
    holding 2.0 gives "2", 0.5 gives "0.5".  An object column mixing the int 2 and the
    float 2.0 is one level (as R's factor of its text), so the fit equals the int one's."""
    require_lme4()
    from lme4_helper import ro
    rng = np.random.default_rng(3)
    s, it = np.repeat(np.arange(8), 12), np.tile(np.arange(6), 16)
    df = pd.DataFrame({"x0": rng.standard_normal(96), "s": s, "it": it / 2})  # 0, 0.5 .. 2.5
    df["y"] = (df["x0"] + rng.standard_normal(8)[s] + rng.standard_normal(48)[s * 6 + it]
               + rng.standard_normal(96))
    formula = "y ~ x0 + (1 | s/it)"
    ours = lmmscope.lmm(formula, df)
    ref = _lmer(formula, df, True)
    labels = ro.r("rownames(ranef(m)[['it:s']])")
    assert sorted(ours.ranef["it:s"].index) == sorted(labels) and "2:7" in list(labels)
    np.testing.assert_allclose(ours.loglik, ref["loglik"], rtol=1e-12, atol=0)
    mixed = df.assign(it=pd.Series([float(v) if v % 1 else int(v) for v in it / 2], dtype=object))
    assert {type(v) for v in mixed["it"]} == {int, float}
    again = lmmscope.lmm(formula, mixed)
    assert again.ngroups == ours.ngroups == {"it:s": 48, "s": 8}
    np.testing.assert_allclose(again.loglik, ours.loglik, rtol=1e-13, atol=0)


@needs_lme4
@pytest.mark.parametrize("formula", ["Reaction ~ Days + (1 | Subject) + (1 | Days)",
                                     "Reaction ~ Days + (Days | Subject) + (1 | Days)"])
def test_a_grouping_factor_may_also_be_a_fixed_effect_or_a_slope(formula, tmp_path):
    """Days fixed (and a slope of Subject) and a grouping factor: lme4 fits it (logLik
    -893.2325 for the first); '.' alone leaves the grouping factors out.  The same on
    parquet files and in memory.  Measured: logLik 4e-16 relative (the second lme4
    fit is singular), fixef 1.4e-14; tolerances as the other lmer cases."""
    df = r_frame("sleepstudy")
    ours, ref = lmmscope.lmm(formula, df), _lmer(formula, df, True)
    assert ours.fixef.index.tolist() == ["Intercept", "Days"]
    np.testing.assert_allclose(ours.loglik, ref["loglik"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.fixef.to_numpy(), ref["fixef"], rtol=1e-7, atol=0)
    df.iloc[:90].to_parquet(tmp_path / "a.parquet")
    df.iloc[90:].to_parquet(tmp_path / "b.parquet")
    streamed = lmmscope.lmm(formula, str(tmp_path / "*.parquet"))
    np.testing.assert_allclose(streamed.loglik, ours.loglik, rtol=1e-12, atol=0)
    dotted = lmmscope.lmm(formula.replace("Days +", ". +", 1), df)
    assert dotted.fixef.index.tolist() == ["Intercept"]
    np.testing.assert_allclose(
        dotted.loglik, lmmscope.lmm(formula.replace("Days +", "1 +", 1), df).loglik,
        rtol=1e-14, atol=0)


# ----- the refit does not depend on Z's units (helper "units") -----------------------------

def _slope_in_units(scale):
    """25 subjects x 12 items crossed, a random slope of z by subject; z times ``scale``."""
    rng = np.random.default_rng(11)
    s, it = np.repeat(np.arange(25), 12), np.tile(np.arange(12), 25)
    X, z = rng.standard_normal((s.size, 8)), rng.standard_normal(s.size)
    y = X[:, 0] - X[:, 1] + rng.standard_normal(25)[s] + z * 0.8 * rng.standard_normal(25)[s] \
        + rng.standard_normal(12)[it] + rng.standard_normal(s.size)
    columns = {f"x{j}": X[:, j] for j in range(8)}
    return pd.DataFrame(columns | {"z": z * scale, "y": y, "s": s, "it": it})


def _fit_quietly(fit, formula, df, **kw):
    """lmmscope.<fit>: lme4's scale warning (z * 1e-3 beside x) is expected; any other
    warning (a convergence warning) fails."""
    import warnings
    from lmmscope.checks import ScaleWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ScaleWarning)
        return getattr(lmmscope, fit)(formula, df, **kw)


@needs_lme4
@pytest.mark.parametrize("bars", ["(z || s) + (1 | it)", "(z | s) + (1 | it)"])
def test_several_term_fit_and_selection_do_not_depend_on_z_units(bars):
    """theta is optimised on Z's columns at unit root mean square and mapped back, so
    z -> z * 1e3 or z * 1e-3 gives the same model: ML logLik equal, REML logLik moved by
    exactly -log(scale) (log|X'V^-1 X| of the rescaled fixed column z, as in lme4), the
    z variance and fixed effect rescaled, the fitted values equal, the selection's
    support equal.  Before, z * 1e3 gave ML logLik -538.62 (slope theta 0) where lme4
    has -493.57 on z.  Measured: logLik vs lmer on z 4e-16 relative, theta 9e-8 (lmer's
    precision); rescaled logLik 3e-16 relative, sd 1.4e-14, fixef 1e-14, fitted 3e-15
    absolute; the selection's refit logLik 2e-16."""
    formula = f"y ~ x0 + x1 + z + {bars}"
    base = _slope_in_units(1.0)
    for method in ("REML", "ML"):
        fit = _fit_quietly("lmm", formula, base, method=method)
        ref = _lmer(formula, base, method == "REML")
        assert fit.converged
        np.testing.assert_allclose(fit.loglik, ref["loglik"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(fit.theta, ref["theta"], rtol=0, atol=1e-6)
        for scale in (1e3, 1e-3):
            scaled = _fit_quietly("lmm", formula, _slope_in_units(scale), method=method)
            assert scaled.converged
            shift = np.log(scale) if method == "REML" else 0.0
            np.testing.assert_allclose(scaled.loglik + shift, fit.loglik, rtol=1e-13, atol=0)
            vc = scaled.varcorr
            z_sd = (vc["var1"] == "z").to_numpy() & vc["var2"].isna().to_numpy()
            assert z_sd.sum() == 1
            np.testing.assert_allclose(vc["std_dev"].to_numpy() * np.where(z_sd, scale, 1.0),
                                       fit.varcorr["std_dev"].to_numpy(), rtol=1e-12, atol=0)
            np.testing.assert_allclose(
                scaled.fixef.to_numpy() * np.where(scaled.fixef.index == "z", scale, 1.0),
                fit.fixef.to_numpy(), rtol=1e-12, atol=0)
            np.testing.assert_allclose(scaled.fitted(), fit.fitted(), rtol=0, atol=1e-12)
    candidates = "y ~ " + " + ".join(f"x{j}" for j in range(8)) + f" + z + {bars}"
    selected = _fit_quietly("lmm_scope", candidates, base)
    assert selected.support == ["x0", "x1"]
    for scale in (1e3, 1e-3):
        scaled = _fit_quietly("lmm_scope", candidates, _slope_in_units(scale))
        assert scaled.support == selected.support
        np.testing.assert_allclose(scaled.loglik + np.log(scale), selected.loglik,
                                   rtol=1e-13, atol=0)
