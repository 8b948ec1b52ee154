"""Debiased inference: equal to a dense computation, row-order free, calibrated."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import Lasso

from ci_guard import require_module

import lmmscope
from lmmscope.inference import adjust_pvalues
from lmmscope.simulate import make_unbalanced


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
    np.testing.assert_allclose(tab["std_error"].to_numpy(), ref_se, rtol=1e-13, atol=0)
    # t, p-values and intervals from the dense estimates with scipy's Student t on the
    # documented clusters - 1 degrees of freedom
    df = len(np.unique(groups)) - 1
    t = ref_est / ref_se
    np.testing.assert_allclose(tab["t"].to_numpy(), t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tab["p_value"].to_numpy(), 2 * stats.t.sf(np.abs(t), df), rtol=1e-10)
    ci = res.inference(level=0.9, lasso_tol=1e-13)
    half = stats.t.ppf(0.95, df) * ref_se
    np.testing.assert_allclose(ci["ci_lower"].to_numpy(), ref_est - half, rtol=1e-12)
    np.testing.assert_allclose(ci["ci_upper"].to_numpy(), ref_est + half, rtol=1e-12)
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
        np.testing.assert_allclose(tabs[0][col], tabs[1][col], rtol=1e-12, atol=0)
    np.testing.assert_allclose(tabs[0]["std_error"], tabs[1]["std_error"], rtol=1e-13, atol=0)


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
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        res.confint(level=95)
