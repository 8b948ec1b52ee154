"""Rank: aliased columns are dropped with lme4's message, naming them; candidates in the
span of the unpenalised columns leave the candidate set; nothing arbitrary is returned."""

import os

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.rank import RankDeficiencyWarning
from lmmscope.loss import SingularSupportWarning


def cohort_frame(seed=4, n=60, m=6, noise=10):
    """Subjects born in byear, seen at several ages; calendar year = age + byear."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n), m)
    byear = rng.integers(1940, 1990, size=n)[g].astype(float)
    age = (rng.integers(20, 40, size=n)[g] + np.tile(np.arange(m) * 3, n)).astype(float)
    df = pd.DataFrame({"age": age, "byear": byear, "year": age + byear,
                       "x1": rng.standard_normal(n * m)})
    for j in range(noise):
        df[f"n{j}"] = rng.standard_normal(n * m)
    u = rng.standard_normal(n)
    df["y"] = (0.5 * age - 0.3 * (byear - 1960) + 2 * df.x1 + u[g]
               + 0.5 * rng.standard_normal(n * m))
    df["g"] = g
    return df


@pytest.fixture(scope="module")
def cohort():
    return cohort_frame()


def test_candidate_in_span_of_always_leaves_the_candidate_set(cohort):
    with pytest.warns(RankDeficiencyWarning, match="leave the candidate set: year$"):
        fit = lmmscope.lmm_scope("y ~ . + (1 | g)", cohort, always=["age", "byear"])
    assert fit.support == ["x1"]
    assert fit.dropped_columns == ["year"]
    assert fit.coef["year"] == 0.0
    assert fit.fixef["age"] == pytest.approx(0.5, abs=0.02)
    assert fit.fixef["byear"] == pytest.approx(-0.3, abs=0.02)
    assert fit.fixef["x1"] == pytest.approx(2.0, abs=0.1)
    assert np.all(np.diff(fit.path["rss_whitened"]) <= 1e-9 * fit.path["rss_whitened"].iloc[0])


@pytest.mark.parametrize("a", [None, 1.0], ids=["gram", "rows"])
def test_fixed_k_in_a_rank_deficient_design_is_a_real_best_subset(cohort, a):
    """k = 5 used to return arbitrary coefficients here: now the refit equals lmm() on
    the same columns, and the selection's coefficients are its least-squares fit."""
    with pytest.warns(RankDeficiencyWarning, match="year"):
        fit = lmmscope.lmm_scope("y ~ . + (1 | g)", cohort, always=["age", "byear"], k=5, a=a)
    assert fit._data.use_gram == (a is None)
    assert len(fit.support) == 5 and "x1" in fit.support and "year" not in fit.support
    formula = "y ~ " + " + ".join(["age", "byear"] + fit.support) + " + (1 | g)"
    reference = lmmscope.lmm(formula, cohort)
    np.testing.assert_allclose(fit.fixef[reference.fixef.index], reference.fixef, rtol=1e-6)
    assert fit.loglik == pytest.approx(reference.loglik, rel=1e-9)
    assert abs(fit.coef["age"] - 0.5) < 0.02 and abs(fit.coef["byear"] + 0.3) < 0.02


def test_all_three_forced_drops_the_aliased_one_with_lme4s_message(cohort):
    """lme4 keeps the earlier columns and drops the later aliased one."""
    with pytest.warns(RankDeficiencyWarning, match="rank deficient so dropping 1 column / "
                      "coefficient: year"):
        fit = lmmscope.lmm_scope("y ~ . + (1 | g)", cohort, always=["age", "byear", "year"])
    assert "year" not in fit.fixef.index and fit.dropped_columns == ["year"]
    assert fit.support == ["x1"]
    assert np.all(np.isfinite(fit.bse))


def test_constant_column_forced_in_is_dropped_as_aliased_with_the_intercept(cohort):
    df = cohort.assign(site=7.0)
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column / coefficient: site"):
        fit = lmmscope.lmm_scope("y ~ . + (1 | g)", df, always=["age", "byear", "site"])
    assert "site" not in fit.fixef.index and fit.coef["site"] == 0.0
    with pytest.warns(RankDeficiencyWarning):
        plain = lmmscope.lmm_scope("y ~ . + (1 | g)", cohort, always=["age", "byear"])
    np.testing.assert_allclose(fit.bse, plain.bse, rtol=1e-9)  # no SE of 778,659
    assert fit.bse.drop("Intercept").max() < 0.1  # (the intercept is at byear = 0)


def test_lmm_drops_collinear_fixed_effects_instead_of_a_lapack_error(cohort):
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column / coefficient: year"):
        fit = lmmscope.lmm("y ~ age + byear + year + x1 + (1 | g)", cohort)
    reference = lmmscope.lmm("y ~ age + byear + x1 + (1 | g)", cohort)
    assert list(fit.fixef.index) == ["Intercept", "age", "byear", "x1"]
    assert fit.dropped_columns == ["year"]
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=1e-9)
    assert fit.loglik == pytest.approx(reference.loglik, rel=1e-12)
    np.testing.assert_allclose(fit.fitted(), reference.fitted(), rtol=1e-9)


def test_lmm_drops_the_same_columns_as_lmer(cohort):
    lmer_fit = lme4_or_skip()
    import rpy2.robjects as ro
    df = cohort.assign(site=7.0, x2=2 * cohort.x1 - cohort.n0)
    formula = "y ~ age + year + byear + site + x1 + n0 + x2 + (1 | g)"
    with pytest.warns(RankDeficiencyWarning, match="dropping 3 columns / coefficients: "
                      "byear, site, x2"):
        fit = lmmscope.lmm(formula, df)
    ref = lmer_fit(formula, df)
    assert list(ro.r("names(fixef(m))")) == ["(Intercept)", "age", "year", "x1", "n0"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-6)
    assert fit.loglik == pytest.approx(ref["loglik"], abs=1e-6)


def test_collinear_candidates_in_a_fixed_support_are_dropped_from_the_refit():
    """k = 3 of three candidates, x2 = x0 + x1: the support is singular."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((120, 3))
    X[:, 2] = X[:, 0] + X[:, 1]
    groups = np.repeat(np.arange(20), 6)
    y = X[:, 0] + X[:, 1] + rng.standard_normal(20)[groups] + 0.3 * rng.standard_normal(120)
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column / coefficient: x2"):
        with pytest.warns(SingularSupportWarning, match="minimum-norm"):
            est = lmmscope.LmmScope(k=3, a=1.0).fit(X, y, groups=groups)
    assert set(est.support_) == {0, 1, 2}
    assert list(est.result_.fixef.index) == ["Intercept", "x0", "x1"]
    np.testing.assert_allclose(est.result_.fixef[["x0", "x1"]], [1, 1], atol=0.1)


def test_an_all_ones_column_is_the_intercept():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((90, 5))
    groups = np.repeat(np.arange(15), 6)
    y = 3 + X[:, 1] + rng.standard_normal(15)[groups] + 0.3 * rng.standard_normal(90)
    with_ones = np.column_stack([X[:, :2], np.ones(90), X[:, 2:]])
    with pytest.warns(RankDeficiencyWarning, match="'x2' is all ones: it is the intercept"):
        a = lmmscope.LmmScope(fit_intercept=False).fit(with_ones, y, groups=groups)
    b = lmmscope.LmmScope(fit_intercept=True).fit(X, y, groups=groups)
    assert a.coef_[2] == pytest.approx(b.intercept_, rel=1e-9)
    np.testing.assert_allclose(np.delete(a.coef_, 2), b.coef_, rtol=1e-9, atol=1e-12)
    assert a.result_.loglik == pytest.approx(b.result_.loglik, rel=1e-12)


def lme4_or_skip():
    """lmer through rpy2; a failure (not a skip) in CI when R, lme4 or rpy2 is missing."""
    from lme4_helper import HAVE_LME4, WHY, lmer_fit
    if not HAVE_LME4:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(WHY)
    return lmer_fit


def test_span_candidates_excluded_on_the_wide_rows_path():
    """p > N beyond the Gram limit: the same checks run on row chunks of X."""
    rng = np.random.default_rng(10)
    groups = np.repeat(np.arange(20), 5)
    X = rng.standard_normal((100, 150))
    X[:, 149] = 2 * X[:, 0] - X[:, 1] + 3
    y = X[:, 0] + X[:, 1] + 2 * X[:, 2] + rng.standard_normal(20)[groups] \
        + 0.3 * rng.standard_normal(100)
    with pytest.warns(RankDeficiencyWarning, match="leave the candidate set: x149$"):
        est = lmmscope.LmmScope(always=[0, 1], control=lmmscope.Control(gram_limit=50)).fit(
            X, y, groups=groups)
    assert not est.result_._data.use_gram
    assert 2 in est.support_ and 149 not in est.support_
    assert est.coef_[149] == 0.0 and est.result_.dropped_columns == ["x149"]


@pytest.mark.parametrize("prepended", [True, False])
def test_row_moments_equal_the_centred_columns_own_sums(prepended):
    """One scan gives the centred sums, sums of squares and projections, also for a column
    at epoch-seconds location (computed on centred chunks) and with a prepended intercept."""
    from lmmscope.intercept import InterceptPrepended
    from lmmscope.column_products import row_moments

    rng = np.random.default_rng(3)
    base = rng.standard_normal((500, 6)) * [1, 10, 1e-3, 1, 5, 1]
    base[:, 1] += 1.7e9  # far location: the raw-product route would lose every digit
    base[:, 4] += 3.0
    shift = base.mean(axis=0)
    X = InterceptPrepended(base) if prepended else base
    full_shift = np.concatenate([[0.0], shift]) if prepended else shift
    dense = np.column_stack([np.ones(500), base]) if prepended else base
    centred = dense - full_shift
    got = row_moments(X, full_shift)
    np.testing.assert_allclose(got.squares, (centred ** 2).sum(axis=0), rtol=1e-9)
    np.testing.assert_allclose(got.sums, centred.sum(axis=0), atol=1e-9 * np.sqrt(500))
    R = np.random.default_rng(0).standard_normal((2, 500))
    np.testing.assert_allclose(got.keys, R @ centred, rtol=1e-9, atol=1e-8)


def test_screen_from_row_moments_equals_the_gram_route():
    """The rows route (moments, the intercept's row from the centred sums) drops and
    excludes what the Gram route does."""
    from lmmscope.cluster_stats import compute_cluster_stats
    from lmmscope.intercept import InterceptPrepended
    from lmmscope.column_products import RowProducts
    from lmmscope.rank import screen_design

    rng = np.random.default_rng(5)
    base = rng.standard_normal((300, 5))
    base[:, 3] = 2.0 + 1e-14 * rng.standard_normal(300)  # constant to its precision
    base[:, 4] += 1e8
    X = InterceptPrepended(base)
    y = base[:, 0] + rng.standard_normal(300)
    codes = np.repeat(np.arange(30), 10)
    names = ["(Intercept)"] + [f"x{j}" for j in range(5)]
    outcomes = []
    for gram in (True, False):
        stats = compute_cluster_stats(X, y, np.ones((300, 1)), codes, 30, gram=gram)
        products = stats if gram else RowProducts(stats, X)
        with pytest.warns(RankDeficiencyWarning, match="x3"):
            outcomes.append(screen_design(products, names, [0]))
    assert outcomes[0] == outcomes[1] == ([0], [4])
