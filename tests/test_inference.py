"""Debiased inference: equal to a dense computation, row-order free, calibrated."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import Lasso

from ci_guard import require_module

import lmmscope
from lmmscope import nodewise
from lmmscope.inference import adjust_pvalues, debias, whitened_gram
from lmmscope.exceptions import InputError
from lmmscope.simulate import make_unbalanced, seed_frame


def _dense_reference(X, Z, y, groups, a, beta_hat, tol):
    """The same formulas on explicit whitened rows: Sigma_a,i^{-1/2} per cluster."""
    Xa, ya, blocks = np.empty_like(X), np.empty_like(y), []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        S = a * Z[rows] @ Z[rows].T + np.eye(rows.size)
        vals, vecs = np.linalg.eigh(S)
        W = vecs @ np.diag(vals ** -0.5) @ vecs.T
        Xa[rows], ya[rows] = W @ X[rows], W @ y[rows]
        blocks.append(rows)
    N, p = X.shape
    scale = np.sqrt((Xa ** 2).sum(axis=0) / N)
    Xs = Xa / scale
    lam0 = np.sqrt(2 * np.log(p) / N)
    ra = ya - Xa @ beta_hat
    est, se = np.empty(p), np.empty(p)
    for j in range(p):
        others = np.delete(np.arange(p), j)
        model = Lasso(fit_intercept=False, tol=tol, max_iter=100_000, warm_start=True)
        sigma = np.sqrt(Xs[:, j] @ Xs[:, j] / N)
        for _ in range(30):
            model.alpha = lam0 * sigma
            model.fit(Xs[:, others], Xs[:, j])
            new = np.sqrt(np.mean((Xs[:, j] - Xs[:, others] @ model.coef_) ** 2))
            done = abs(new - sigma) <= 1e-6 * sigma
            sigma = new
            if done:
                break
        g = model.coef_ * scale[j] / scale[others]
        w = Xa[:, j] - Xa[:, others] @ g
        den = w @ Xa[:, j]
        est[j] = beta_hat[j] + w @ ra / den
        se[j] = np.sqrt(sum((w[r] @ ra[r]) ** 2 for r in blocks)) / abs(den)
    return est, se


def test_debiased_estimates_equal_dense_computation():
    X, Zs, y, groups, beta = make_unbalanced(n=25, p=15, q=2, min_size=3, max_size=9, seed=4)
    Zs = Zs / np.sqrt((Zs ** 2).mean(axis=0))  # the proxy's units (Control.unit_free_z)
    est = lmmscope.LmmScope(k=3, a=1.5, fit_intercept=False).fit(X, y, Z=Zs, groups=groups)
    res = est.result_
    tab = res.inference(lasso_tol=1e-13)
    ref_est, ref_se = _dense_reference(X, Zs, y, groups, 1.5, res.coef.to_numpy(), tol=1e-13)
    # measured: 2.4e-14 (estimates), 2.6e-15 (standard errors) relative
    # (an estimate near 0 agrees to 1e-16 absolute, so an absolute floor of 1e-14)
    np.testing.assert_allclose(tab["estimate"].to_numpy(), ref_est, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tab["std_error"].to_numpy(), ref_se, rtol=1e-13, atol=1e-15)
    # t, p-values and intervals from the dense estimates with scipy's Student t on the
    # documented clusters - 1 degrees of freedom
    df = len(np.unique(groups)) - 1
    t = ref_est / ref_se
    np.testing.assert_allclose(tab["t"].to_numpy(), t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tab["p_value"].to_numpy(), 2 * stats.t.sf(np.abs(t), df), rtol=1e-10,
                               atol=1e-14)
    ci = res.inference(level=0.9, lasso_tol=1e-13)
    half = stats.t.ppf(0.95, df) * ref_se
    # an interval end near 0 agrees to ~1e-16 absolute: an absolute floor of 1e-14
    np.testing.assert_allclose(ci["ci_lower"].to_numpy(), ref_est - half, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ci["ci_upper"].to_numpy(), ref_est + half, rtol=1e-12, atol=1e-14)
    # the true non-zeros are far from 0; the null columns are not (smallest null p: 0.056)
    assert (tab["p_value"].iloc[[1, 5, 10]] < 1e-4).all()
    assert tab["p_value"].drop(["x1", "x5", "x10"]).min() > 0.01


def test_inference_is_free_of_row_order():
    X, Zs, y, groups, beta = make_unbalanced(n=40, p=30, q=2, min_size=2, max_size=12, seed=5)
    order = np.argsort(groups, kind="stable")
    fits = [lmmscope.LmmScope(k=3, a=1.0).fit(X[rows], y[rows], Z=Zs[rows], groups=groups[rows])
            for rows in (np.arange(len(y)), order)]
    tabs = [f.result_.inference(lasso_tol=1e-12) for f in fits]
    # measured: at most 6.3e-14 relative (ci_lower), 1.7e-15 (std_error)
    for col in ("estimate", "t", "p_value", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(tabs[0][col], tabs[1][col], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tabs[0]["std_error"], tabs[1]["std_error"], rtol=1e-13, atol=1e-15)


def test_null_pvalues_are_uniform():
    pooled = []
    for rep in range(30):
        X, Zs, y, groups, beta = make_unbalanced(n=40, p=40, q=2, min_size=4, max_size=8,
                                                 seed=100 + rep)
        est = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups)
        tab = est.result_.inference()
        null = [f"x{j}" for j in range(40) if beta[j] == 0]
        pooled.extend(tab.loc[null, "p_value"].to_numpy())
    ks = stats.kstest(pooled, "uniform")
    assert ks.pvalue > 0.01, ks


def test_adjustments_equal_statsmodels():
    """BH and Holm against statsmodels' multipletests on the raw p-values."""
    multitest = require_module("statsmodels.stats.multitest", "reference p-value adjustments")
    X, Zs, y, groups, beta = make_unbalanced(n=30, p=20, q=2, seed=6)
    res = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups).result_
    raw = res.inference(adjust=None)
    assert np.array_equal(raw["p_adjusted"], raw["p_value"])
    for ours, theirs in (("bh", "fdr_bh"), ("holm", "holm")):
        tab = res.inference(adjust=ours)
        np.testing.assert_allclose(tab["p_value"], raw["p_value"], rtol=0, atol=0)
        expected = multitest.multipletests(raw["p_value"].to_numpy(), method=theirs)[1]
        np.testing.assert_allclose(tab["p_adjusted"].to_numpy(), expected, rtol=1e-14, atol=0)
    # the adjustment runs over the rows returned: a subset gives its own adjustment
    sub = res.inference(terms=["x1", "x2", "x3"], adjust="holm")
    expected = multitest.multipletests(raw.loc[["x1", "x2", "x3"], "p_value"].to_numpy(),
                                       method="holm")[1]
    np.testing.assert_allclose(sub["p_adjusted"].to_numpy(), expected, rtol=1e-14)
    p = np.array([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, 0.5])


def test_intervals_cover_the_truth():
    """90% intervals of the true coefficients: coverage over 12 replicates x 41 columns
    within binomial limits of 0.9 (an independent check of the interval's width)."""
    covered = []
    for rep in range(12):
        X, Zs, y, groups, beta = make_unbalanced(n=40, p=40, q=2, min_size=4, max_size=8,
                                                 seed=300 + rep)
        ci = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups).result_.confint(level=0.9)
        truth = np.r_[0.0, beta]  # the intercept is 0
        assert ci.index[0] == "Intercept"
        covered.extend((ci["ci_lower"].to_numpy() <= truth) & (truth <= ci["ci_upper"].to_numpy()))
    n = len(covered)
    low, high = stats.binom.ppf([0.0005, 0.9995], n, 0.9) / n
    assert low <= np.mean(covered) <= high, np.mean(covered)


def test_bad_arguments():
    X, Zs, y, groups, beta = make_unbalanced(n=30, p=20, q=2, seed=6)
    res = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups).result_
    with pytest.raises(KeyError, match="unknown column"):
        res.inference(terms=["nope"])
    with pytest.raises(ValueError, match="adjust"):
        res.inference(adjust="fdr")
    with pytest.raises(ValueError, match="level must be a number between 0 and 1"):
        res.confint(level=95)


def _reference_directions(G, n_obs, columns, free, tol):
    """The node-wise scaled lasso as lmmscope ran it before the Gram solver: scikit-learn's
    Lasso on pseudo-rows R (R'R = G / N, unit-scale columns), one column at a time, the
    free column projected out first."""
    vals, vecs = np.linalg.eigh(G / n_obs)
    keep = vals > 1e-12 * vals.max()
    R = (vecs[:, keep] * np.sqrt(vals[keep])).T
    p = G.shape[0]
    scale = np.sqrt(np.diag(G) / n_obs)
    Rs = R / scale
    lam0 = np.sqrt(2 * np.log(max(p, 2)) / n_obs)
    out = np.zeros((len(columns), p))
    for row, j in enumerate(columns):
        f = None if free == j else free
        others = np.setdiff1d(np.arange(p), [j] if f is None else [j, f])
        X, y = Rs[:, others].copy(), Rs[:, j].copy()
        if f is not None:
            u = Rs[:, f] / np.linalg.norm(Rs[:, f])
            X -= np.outer(u, u @ X)
            y -= u * (u @ y)
        model = Lasso(fit_intercept=False, warm_start=True, tol=tol, max_iter=100_000)
        sigma, coef = np.linalg.norm(y), np.zeros(others.size)
        for _ in range(30 if others.size else 0):
            model.alpha = lam0 * sigma / R.shape[0]
            coef = model.fit(X, y).coef_
            new = np.linalg.norm(y - X @ coef)
            done = abs(new - sigma) <= 1e-6 * sigma or new <= 0
            sigma = new
            if done:
                break
        out[row, j] = 1.0
        out[row, others] = -coef
        if f is not None:
            rest = Rs[:, j] - Rs[:, others] @ coef
            out[row, f] = -(Rs[:, f] @ rest) / (Rs[:, f] @ Rs[:, f])
    return out / scale * scale[np.asarray(columns)][:, None]


@pytest.mark.filterwarnings("ignore:Objective did not converge")  # sklearn at a 1e-15 gap
@pytest.mark.parametrize("n, p, intercept", [(25, 15, False), (40, 30, True), (30, 20, True),
                                             (12, 120, True)])
def test_gram_solver_equals_the_pseudo_row_lasso(n, p, intercept):
    """The vectorised Gram solver against the former implementation (kept above), on the
    designs of this file's tests; (12, 120): p above the ~70 rows, a singular Gram."""
    X, Zs, y, groups, beta = make_unbalanced(n=n, p=p, q=2, min_size=3, max_size=9, seed=4)
    res = lmmscope.LmmScope(k=3, a=1.5, fit_intercept=intercept).fit(
        X, y, Z=Zs, groups=groups).result_
    G = whitened_gram(res._data, res.a)
    columns = list(range(G.shape[0]))
    ours = nodewise.nodewise_lasso(G, res.nobs, columns, free=G.intercept)
    ref = _reference_directions(G.whole(), res.nobs, columns, G.intercept, tol=1e-15)
    # measured: 4.1e-15 (n=25, no intercept), 1.1e-12, 1.1e-12, 6.6e-13 (p > N) largest
    # difference, on directions whose largest entry is 1 (lasso_tol 1e-10 against an exact
    # solution)
    np.testing.assert_allclose(ours.coef, ref, rtol=0, atol=1e-11)
    # intervals: measured at most 1.0e-12 relative, 4.1e-14 absolute (ends >= 0.002 from 0).
    # The former code at its own default (a 1e-8 duality gap) was further from this exact
    # solution: up to 4.6e-5 relative (3.1e-4 for p > N), 8.1e-6 absolute.
    table = res.inference(adjust=None)
    est, se = debias(G, res._inference_cache["scores"], res.coef.to_numpy(), columns, ref)
    half = stats.t.ppf(0.975, res.ngroups - 1) * se
    np.testing.assert_allclose(table["ci_lower"], est - half, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(table["ci_upper"], est + half, rtol=1e-11, atol=1e-13)


def test_columns_asked_are_the_only_nodewise_problems_solved(monkeypatch):
    """5 of 1,000 columns: 5 node-wise scaled lassos, counted where they are solved; a
    second call solves only the columns not yet fitted; names and indices both work."""
    rng = np.random.default_rng(11)
    N, p = 300, 1000
    X = rng.standard_normal((N, p))
    groups = np.repeat(np.arange(30), 10)
    y = X[:, 1] + 0.5 * X[:, 5] + rng.standard_normal(30)[groups] + rng.standard_normal(N)
    res = lmmscope.LmmScope(k=3, a=1.0).fit(X, y, Z=np.ones((N, 1)), groups=groups).result_
    solved = []
    chunk = nodewise._scaled_chunk

    def counting(Q, targets, *args):
        solved.extend(targets.tolist())
        return chunk(Q, targets, *args)

    monkeypatch.setattr(nodewise, "_scaled_chunk", counting)
    first = res.inference(columns=["x1", "x5", "x7", "x300", "x999"])
    assert sorted(solved) == [2, 6, 8, 301, 1000]  # X's columns after the intercept
    assert list(first.index) == ["x1", "x5", "x7", "x300", "x999"]
    second = res.inference(columns=[2, 6, 3, 4], adjust=None)  # indices: x1, x5, x2, x3
    assert sorted(solved) == [2, 3, 4, 6, 8, 301, 1000]
    assert list(second.index) == ["x1", "x5", "x2", "x3"]
    # the directions do not depend on which columns are solved together
    # (measured: no difference against all 1,001 at once)
    G = res._inference_cache["G"]
    every = nodewise.nodewise_lasso(G, N, np.arange(p + 1), free=G.intercept)
    cached = res._inference_cache["rows_by_tol"][lmmscope.Control().lasso_tol]
    np.testing.assert_allclose(np.array([cached[j] for j in (2, 6, 8, 301, 1000)]),
                               every.coef[[2, 6, 8, 301, 1000]], rtol=0, atol=1e-14)
    assert first.loc["x1", "p_value"] < 1e-6


def test_column_arguments():
    X, Zs, y, groups, beta = make_unbalanced(n=30, p=20, q=2, seed=6)
    res = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups).result_
    by_name = res.inference(terms=["x1", "x3"])  # the older name of columns=
    np.testing.assert_array_equal(res.inference(columns=[2, 4]).to_numpy(), by_name.to_numpy())
    np.testing.assert_array_equal(res.confint(0.9, "x3").to_numpy(),
                                  res.confint(level=0.9, terms=["x3"]).to_numpy())
    with pytest.raises(InputError, match=r"columns= position 21 is out of range: there are 21 "
                                         r"columns \(positions 0..20\)"):
        res.inference(columns=[21])
    with pytest.raises(InputError, match="boolean mask must have one entry per columns"):
        res.inference(columns=[True])
    mask = np.zeros(21, bool)
    mask[[1, 5]] = True
    assert list(res.inference(columns=mask).index) == list(res.inference(columns=[1, 5]).index)
    with pytest.raises(TypeError, match="not both"):
        res.inference(columns=["x1"], terms=["x1"])


def test_lmm_wald_inference_equals_lme4_confint_wald():
    """lmm(): no selection, so Wald inference from the refit's vcov, as lme4's
    confint(method = "Wald"), with the table's shape and statsmodels' names."""
    from lme4_helper import lmer_fit, r_frame, ro
    sleep = r_frame("lme4::sleepstudy")
    fit = lmmscope.lmm("Reaction ~ Days + (Days | Subject)", sleep)
    lmer_fit("Reaction ~ Days + (Days | Subject)", sleep)
    theirs = np.array(ro.r('confint(m, parm = "beta_", method = "Wald", level = 0.9)'))
    ours = fit.inference(level=0.9, adjust="holm")
    assert list(ours.columns) == ["estimate", "std_error", "z", "p_value", "ci_lower",
                                  "ci_upper", "p_adjusted"]
    # measured: 1.5e-8 relative (lme4 at its BOBYQA tolerance)
    np.testing.assert_allclose(ours[["ci_lower", "ci_upper"]].to_numpy(), theirs, rtol=1e-6)
    np.testing.assert_allclose(fit.confint(0.9, "Days").to_numpy(), theirs[[1]], rtol=1e-6)
    z = ours["estimate"] / ours["std_error"]
    np.testing.assert_allclose(ours["p_value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)


def test_summary_frame_has_statsmodels_names():
    sm = require_module("statsmodels.api", "statsmodels' summary names")
    rng = np.random.default_rng(0)
    Xo = sm.add_constant(rng.standard_normal((40, 2)))
    ols = sm.OLS(Xo @ [1.0, 2.0, 0.0] + rng.standard_normal(40), Xo).fit()
    header = ols.summary(alpha=0.1).tables[1].data[0][1:]  # coef, std err, t, P>|t|, [..
    X, Zs, y, groups, beta = make_unbalanced(n=30, p=20, q=2, seed=6)
    res = lmmscope.LmmScope(a=1.0).fit(X, y, Z=Zs, groups=groups).result_
    frame = res.summary_frame(["x1", "x2"], level=0.9)
    assert list(frame.columns) == header
    table = res.inference(["x1", "x2"], level=0.9, adjust=None)
    np.testing.assert_array_equal(frame.to_numpy(), table.drop(columns="p_adjusted").to_numpy())
    header_95 = ols.summary().tables[1].data[0][1:]  # ..., [0.025, 0.975]
    assert list(res.summary_frame(adjust="bh").columns) == header_95 + ["p_adjusted"]
    mixed = lmmscope.lmm("y ~ x1 + (1 | g)", pd.DataFrame({"y": y, "x1": X[:, 1], "g": groups}))
    assert list(mixed.summary_frame().columns) == [{"t": "z", "P>|t|": "P>|z|"}.get(h, h)
                                                   for h in header_95]


def test_columns_with_the_intercept_equal_the_whole_table_and_bad_arguments_are_named():
    """The original intercept's row needs every shifted column's influences: asking it among
    a few columns gives the whole table's row (not NaN, which BH spread to every row)."""
    from lmmscope.exceptions import ColumnError
    df, _beta = seed_frame()
    formula = "y ~ . + (z0 + z1 + z2 + z3 | cluster)"
    whole = lmmscope.lmm_scope(formula, df).inference()
    cols = ["x3", "Intercept", "x1", "x40"]
    part = lmmscope.lmm_scope(formula, df).inference(columns=cols)
    assert list(part.index) == cols and not part.isna().any().any()
    # the same arithmetic on the same cached directions (measured: 3e-18)
    np.testing.assert_allclose(part[["estimate", "std_error", "ci_lower", "ci_upper"]],
                               whole.loc[cols, ["estimate", "std_error", "ci_lower", "ci_upper"]],
                               rtol=1e-12, atol=1e-14)
    fit = lmmscope.lmm_scope(formula, df, k=3, a=1.0)
    with pytest.raises(ColumnError, match="unknown column.*'nope'"):
        fit.inference(columns=["x1", "nope"])
    with pytest.raises(InputError, match="columns= position 99 is out of range"):
        fit.inference(columns=[99])
    with pytest.raises(InputError, match="level must be a number between 0 and 1"):
        fit.inference(columns=["x1"], level=95)
    with pytest.raises(InputError, match="adjust must be one of"):
        fit.inference(columns=["x1"], adjust="fdr")


def test_bh_leaves_nan_out_as_r_p_adjust():
    from lmmscope.inference import adjust_pvalues
    p = np.array([0.01, np.nan, 0.04, 0.03])
    out = adjust_pvalues(p, "bh")
    assert np.isnan(out[1])
    # R: p.adjust(c(0.01, NA, 0.04, 0.03), "BH") = 0.03, NA, 0.04, 0.04
    np.testing.assert_allclose(out[[0, 2, 3]], [0.03, 0.04, 0.04], rtol=1e-15)


def test_the_fits_control_sets_the_nodewise_tolerances():
    """Control.lasso_tol is inference()'s default (inference(lasso_tol=) overrides it for a
    call) and Control.lasso_sigma_tol reaches the scaled lasso's noise iteration."""
    rng = np.random.default_rng(3)
    N, p = 300, 40
    # correlated columns: coordinate descent needs many sweeps (measured: lasso_tol 1e-2
    # moves an estimate by 2.3e-3, lasso_sigma_tol 0.5 a standard error by 1.1e-2)
    X = rng.standard_normal((N, p)) + 1.5 * rng.standard_normal((N, 1))
    groups = np.repeat(np.arange(30), 10)
    y = X[:, 1] + 0.5 * X[:, 5] + rng.standard_normal(30)[groups] + rng.standard_normal(N)

    def fit(**control):
        return lmmscope.LmmScope(k=2, a=1.0, control=lmmscope.Control(**control)).fit(
            X, y, Z=np.ones((N, 1)), groups=groups).result_

    default = fit().inference()
    loose = fit(lasso_tol=1e-2).inference()
    np.testing.assert_allclose(loose.to_numpy(), fit().inference(lasso_tol=1e-2).to_numpy(),
                               rtol=1e-14, atol=1e-15)
    assert np.max(np.abs(loose["estimate"] - default["estimate"])) > 1e-4
    rough = fit(lasso_sigma_tol=0.5).inference()
    assert np.max(np.abs(rough["std_error"] - default["std_error"])) > 1e-4
    with pytest.raises(lmmscope.InputError, match="lasso_sigma_tol"):
        lmmscope.Control(lasso_sigma_tol=0)
