"""Location and units: shifting y or X columns, or changing a column's units, changes
nothing but the intercept (and rescales that column's coefficient).

Data are put on a binary grid so that y + 1e7 and x + 1.7e9 (epoch seconds) are exact
in float64: any difference between the fits comes from the fitting, not from the data.
Measured agreement is ~1e-14 relative; the tolerances below are 1e-10.
"""

import numpy as np
import pandas as pd
import pytest

import lmmscope

RTOL = 1e-10
Y_SHIFT, X_SHIFT = 1e7, 1.7e9


def _grid(v, bits=10):
    return np.round(np.asarray(v) * 2.0 ** bits) / 2.0 ** bits


def longitudinal_frame(seed=0, n=30, m=10, noise=6):
    """sleepstudy-like: days 0..m-1 with a random slope, two real covariates, noise."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n), m)
    days = np.tile(np.arange(m), n).astype(float)
    df = pd.DataFrame({"days": days, "x1": _grid(rng.standard_normal(n * m)),
                       "x2": _grid(rng.standard_normal(n * m))})
    for j in range(noise):
        df[f"n{j}"] = _grid(rng.standard_normal(n * m))
    u = rng.standard_normal((n, 2)) * [25, 6]
    y = (250 + 10 * days + 3 * df.x1 - 2 * df.x2 + u[g, 0] + u[g, 1] * days
         + rng.standard_normal(n * m) * 20)
    df["y"] = _grid(y.to_numpy(), 20)
    df["g"] = g
    return df


@pytest.fixture(scope="module")
def frames():
    df = longitudinal_frame()
    shifted = df.assign(y=df.y + Y_SHIFT, x1=df.x1 + X_SHIFT, x2=df.x2 + X_SHIFT)
    assert np.array_equal(shifted.x1 - X_SHIFT, df.x1)  # the shift is exact
    assert np.array_equal(shifted.y - Y_SHIFT, df.y)
    return df, shifted


def _close(a, b, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=0)


def _intercept_after_shift(fixef):
    """The intercept the shifted data must give: b0 + 1e7 - 1.7e9 (b_x1 + b_x2)."""
    return fixef["Intercept"] + Y_SHIFT - X_SHIFT * (fixef.get("x1", 0.0) + fixef.get("x2", 0.0))


def _same_mixed_fit(a, b):
    _close(b.sigma, a.sigma)
    _close(b.loglik, a.loglik)
    _close(b.mixed.theta, a.mixed.theta, rtol=1e-8)
    slopes = [n for n in a.fixef.index if n != "Intercept"]
    _close(b.fixef[slopes], a.fixef[slopes])
    _close(b.bse[slopes], a.bse[slopes])
    _close(b.ranef, a.ranef, rtol=1e-8)
    _close(b.fixef["Intercept"], _intercept_after_shift(a.fixef))


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_lmm_unchanged_by_location(frames, method):
    df, shifted = frames
    f = "y ~ days + x1 + x2 + (days | g)"
    a, b = lmmscope.lmm(f, df, method=method), lmmscope.lmm(f, shifted, method=method)
    assert a.sigma == pytest.approx(20, rel=0.15)  # a sensible fit to begin with
    _same_mixed_fit(a, b)
    # the intercept's variance is that of b0 - 1.7e9 (b_x1 + b_x2)
    V = a.vcov().to_numpy()
    t = np.array([1.0, 0.0, -X_SHIFT, -X_SHIFT])
    _close(b.vcov().iloc[0, 0], t @ V @ t, rtol=1e-6)


def _same_selection(a, b):
    assert b.support == a.support
    _close(b.a, a.a)
    _close(b.path["rss_whitened"], a.path["rss_whitened"])
    slopes = [n for n in a.coef.index if n != "Intercept"]
    _close(b.coef[slopes], a.coef[slopes])
    _close(b.coef["Intercept"], _intercept_after_shift(a.coef))
    _same_mixed_fit(a, b)


@pytest.mark.parametrize("kwargs", [{}, {"k": "cv"}, {"k": 3, "a": 0.5}],
                         ids=["default-gram", "k-cv", "fixed-rows"])
def test_lmm_scope_unchanged_by_location(frames, kwargs):
    """Default tuning and k="cv" run on the Gram; fixed k and a on whitened rows."""
    df, shifted = frames
    f = "y ~ . + (days | g)"
    a, b = lmmscope.lmm_scope(f, df, **kwargs), lmmscope.lmm_scope(f, shifted, **kwargs)
    assert "days" in a.selected  # a random slope: unpenalised, like the intercept
    if "k" in kwargs:
        assert "x1" in a.support
    _same_selection(a, b)


def _wide_arrays(seed=1, n=20, m=6, p=150):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n), m)
    X = _grid(rng.standard_normal((n * m, p)))
    Z = np.column_stack([np.ones(n * m), _grid(rng.standard_normal(n * m))])
    u = rng.standard_normal((n, 2))
    y = 1 + 2 * X[:, 0] - 1.5 * X[:, 1] + np.einsum("ij,ij->i", Z, u[groups]) \
        + 0.5 * rng.standard_normal(n * m)
    return X, _grid(y, 20), Z, groups


@pytest.mark.parametrize("kwargs", [{}, {"k": 2, "a": 1.0}], ids=["tuned", "fixed"])
def test_arrays_rows_path_unchanged_by_location(kwargs):
    """p > N beyond the Gram limit: the whitened-rows path, with an implicit intercept."""
    control = lmmscope.Control(gram_limit=50)
    X, y, Z, groups = _wide_arrays()
    Xs = X.copy()
    Xs[:, :2] += X_SHIFT
    a = lmmscope.LmmScope(**kwargs, control=control).fit(X, y, Z=Z, groups=groups)
    b = lmmscope.LmmScope(**kwargs, control=control).fit(Xs, y + Y_SHIFT, Z=Z, groups=groups)
    assert not a.result_._data.use_gram
    assert set(a.support_) >= {0, 1}
    np.testing.assert_array_equal(b.support_, a.support_)
    _close(b.a_, a.a_)
    _close(b.coef_, a.coef_)
    _close(b.intercept_, a.intercept_ + Y_SHIFT - X_SHIFT * (a.coef_[0] + a.coef_[1]))
    _close(b.result_.loglik, a.result_.loglik)
    _close(b.result_.sigma, a.result_.sigma)


def test_debiased_inference_unchanged_by_location(frames):
    df, shifted = frames
    f = "y ~ . + (days | g)"
    a = lmmscope.lmm_scope(f, df).inference(adjust=None)
    b = lmmscope.lmm_scope(f, shifted).inference(adjust=None)
    slopes = [t for t in a.index if t != "Intercept"]
    for column in ("estimate", "std_error", "p_value"):
        _close(b.loc[slopes, column], a.loc[slopes, column], rtol=1e-8)
    # the original intercept is the debiased linear function of the centred coefficients
    _close(b.loc["Intercept", "estimate"], _intercept_after_shift(a["estimate"]), rtol=1e-8)
    assert b.loc["Intercept", "std_error"] > 1e3 * a.loc["Intercept", "std_error"]


def test_intercept_row_needs_every_shifted_column(frames):
    df, _ = frames
    fit = lmmscope.lmm_scope("y ~ . + (days | g)", df)
    table = fit.inference(terms=["Intercept", "x1"], adjust=None)
    whole = fit.inference(adjust=None)
    # asked with one other column, the intercept's row still uses every shifted column
    for term in ("Intercept", "x1"):
        _close(table.loc[term, "std_error"], whole.loc[term, "std_error"])
        _close(table.loc[term, "estimate"], whole.loc[term, "estimate"])


UNITS = {"x1": 1e6, "x2": 1e-6, "n0": 1e6}


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_lmm_units_rescale_coefficients_exactly(frames, method):
    df, _ = frames
    scaled = df.assign(**{c: df[c] * s for c, s in UNITS.items()})
    f = "y ~ days + x1 + x2 + n0 + (days | g)"
    a, b = lmmscope.lmm(f, df, method=method), lmmscope.lmm(f, scaled, method=method)
    s = pd.Series(1.0, index=a.fixef.index)
    for c, v in UNITS.items():
        s[c] = v
    _close(b.fixef * s, a.fixef)
    _close(b.bse * s, a.bse)
    _close(b.sigma, a.sigma)
    # ML's likelihood is unit-free; REML's criterion has log|X'V^-1 X| in it, so (as in
    # lme4) it moves by -log(prod of the scale factors) = -log(1e6), exactly.
    shift = 0.0 if method == "ML" else -np.log(np.prod(list(UNITS.values())))
    assert b.loglik - a.loglik == pytest.approx(shift, abs=1e-9)


@pytest.mark.parametrize("kwargs", [{}, {"k": "cv"}])
def test_lmm_scope_units(frames, kwargs):
    df, _ = frames
    scaled = df.assign(**{c: df[c] * s for c, s in UNITS.items()})
    f = "y ~ . + (days | g)"
    a, b = lmmscope.lmm_scope(f, df, **kwargs), lmmscope.lmm_scope(f, scaled, **kwargs)
    assert b.support == a.support
    _close(b.a, a.a)
    s = pd.Series(1.0, index=a.coef.index)
    for c, v in UNITS.items():
        s[c] = v
    _close(b.coef * s, a.coef)
    _close(b.fixef * s[b.fixef.index], a.fixef)
    # REML logLik moves by -log(scale) of each refitted rescaled column (see above)
    moved = -sum(np.log(v) for c, v in UNITS.items() if c in a.fixef.index)
    assert b.loglik - a.loglik == pytest.approx(moved, abs=1e-9)


def test_sleepstudy_with_noise_unchanged_by_location():
    """Real data: lme4's sleepstudy with 20 pure-noise columns, two of them as epoch
    seconds, and the response + 1e7."""
    import os
    from lme4_helper import HAVE_LME4, WHY, r_frame
    if not HAVE_LME4:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(WHY)
    df = r_frame("lme4::sleepstudy")
    rng = np.random.default_rng(5)
    for j in range(20):
        df[f"noise{j}"] = _grid(rng.standard_normal(len(df)))
    shifted = df.assign(Reaction=df.Reaction + Y_SHIFT, noise0=df.noise0 + X_SHIFT,
                        noise1=df.noise1 + X_SHIFT)
    f = "Reaction ~ . + (Days | Subject)"
    a, b = lmmscope.lmm_scope(f, df, k="cv"), lmmscope.lmm_scope(f, shifted, k="cv")
    assert "Days" in a.selected  # a random slope: unpenalised
    assert b.support == a.support
    _close(b.a, a.a)
    _close(b.sigma, a.sigma)
    _close(b.loglik, a.loglik)
    slopes = [n for n in a.fixef.index if n != "Intercept"]
    _close(b.fixef[slopes], a.fixef[slopes])


def test_inference_with_the_intercept_as_the_only_other_column(frames):
    """Two columns, both unpenalised: each node-wise fit has nothing to penalise."""
    df, shifted = frames
    f = "y ~ days + (days | g)"
    a = lmmscope.lmm_scope(f, df, always=["days"]).inference(adjust=None)
    b = lmmscope.lmm_scope(f, shifted, always=["days"]).inference(adjust=None)
    assert np.all(np.isfinite(a.to_numpy()))
    _close(b.loc["days"], a.loc["days"], rtol=1e-8)


def test_statistics_from_the_input_checks_moments_equal_their_own_pass():
    """Data reuses the input checks' column sums and squares of X (no second pass):
    the statistics are bit for bit those of their own pass, with a location to centre away."""
    from lmmscope.checks import check_finite_columns
    from lmmscope.cluster_blocks import encode_groups
    from lmmscope.cluster_stats import compute_cluster_stats
    from lmmscope.intercept import InterceptPrepended

    rng = np.random.default_rng(8)
    X = rng.standard_normal((240, 12)) + np.r_[np.zeros(11), 1.7e9]
    y = X[:, 0] + rng.standard_normal(240)
    Z = np.column_stack([np.ones(240), rng.standard_normal(240)])
    codes, _ = encode_groups(np.repeat(np.arange(30), 8))
    moments = check_finite_columns(X, [f"x{j}" for j in range(12)], "X")
    for gram in (True, False):
        own = compute_cluster_stats(InterceptPrepended(X), y, Z, codes, 30, gram=gram)
        reused = compute_cluster_stats(InterceptPrepended(X), y, Z, codes, 30, gram=gram,
                                       moments=(moments.sums, moments.squares))
        np.testing.assert_array_equal(reused.x_shift, own.x_shift)
        for name in ("ZtX", "Xty", "ZtZ") + (("XtX",) if gram else ()):
            np.testing.assert_array_equal(getattr(reused, name), getattr(own, name))
