"""Random effects that the data cannot identify are refused as lme4 refuses them
(lmerControl defaults: check.nobs.vs.nlev and check.nobs.vs.nRE are errors,
check.nobs.vs.rankZ is ignored); designs lme4 fits are fitted, and agree with it."""

import os

import numpy as np
import pandas as pd
import pytest

import lmmscope


def slopes_frame(seed=0, n=40, m=2):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": rng.standard_normal(n * m), "x": rng.standard_normal(n * m),
                         "z1": rng.standard_normal(n * m), "z2": rng.standard_normal(n * m),
                         "g": np.repeat(np.arange(n), m)})


LME4_NRE = ("number of observations \\(=80\\) <= number of random effects \\(=120\\) for term "
            "\\(Intercept \\+ z1 \\+ z2 \\| group\\); the random-effects parameters and the "
            "residual variance are probably unidentifiable")


def test_more_random_effects_than_rows_is_refused_as_lme4_does():
    """q = 3 with clusters of 2 rows: q exceeds every cluster size (lme4: the same error)."""
    df = slopes_frame()
    with pytest.raises(ValueError, match=LME4_NRE):
        lmmscope.lmm("y ~ x + (1 + z1 + z2 | g)", df)
    with pytest.raises(ValueError, match=LME4_NRE):
        lmmscope.lmm_scope("y ~ x + (1 + z1 + z2 | g)", df)
    Z = df[["z1", "z2"]].to_numpy()
    with pytest.raises(ValueError, match="number of random effects \\(=80\\)"):
        lmmscope.LmmScope().fit(df[["x"]].to_numpy(), df.y, Z=Z, groups=df.g)


def test_as_many_levels_as_rows_is_refused():
    df = slopes_frame().assign(g=np.arange(80))
    with pytest.raises(ValueError, match="number of levels of the grouping factor must be < "
                                         "number of observations"):
        lmmscope.lmm("y ~ x + (1 | g)", df)


def one_big_cluster_frame(seed=1):
    """100 clusters of one row and one of five: lme4 fits this (sigma from one cluster)."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(100), np.full(5, 100)])
    u = rng.standard_normal(101)
    x = rng.standard_normal(105)
    df = pd.DataFrame({"y": 1 + 2 * x + u[g] + 0.5 * rng.standard_normal(105), "x": x,
                       "g": g.astype(str)})
    for j in range(4):
        df[f"n{j}"] = rng.standard_normal(105)
    return df


def test_singletons_but_one_cluster_fitted_as_lmer_fits_them():
    lmer_fit = lme4_or_skip()
    df = one_big_cluster_frame()
    ours = lmmscope.lmm("y ~ x + (1 | g)", df)
    ref = lmer_fit("y ~ x + (1 | g)", df)
    assert ours.sigma == pytest.approx(ref["sigma"], rel=1e-6)
    assert np.sqrt(ours.psi[0, 0]) == pytest.approx(ref["sd"][0], rel=1e-6)
    assert ours.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    np.testing.assert_allclose(ours.fixef, ref["fixef"], rtol=1e-6)
    selected = lmmscope.lmm_scope("y ~ . + (1 | g)", df)
    assert selected.support == ["x"]
    assert selected.sigma == pytest.approx(ref["sigma"], rel=1e-6)
    assert 0.5 < selected.a < 20  # a sane variance ratio (truth 1 / 0.25 = 4)


def lme4_or_skip():
    """lmer through rpy2; a failure (not a skip) in CI when R, lme4 or rpy2 is missing."""
    from lme4_helper import HAVE_LME4, WHY, lmer_fit
    if not HAVE_LME4:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(WHY)
    return lmer_fit
