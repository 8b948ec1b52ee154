"""Units of Z, convergence reporting and rank problems of the (RE)ML refit (issue 10,
items 3 and 8)."""

import warnings

import numpy as np
import pytest

import lmmscope
from lmmscope import Control, ConvergenceWarning, RankDeficientError, theta_optimiser
from lmmscope.cluster_blocks import encode_groups
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.mixed import MixedModelFit
from lme4_helper import needs_lme4, r_frame


@pytest.fixture(scope="module")
def sleep():
    return r_frame("lme4::sleepstudy")


def _fit(frame, scale, method="REML"):
    """The random slope's column alone rescaled (rescaling a fixed column shifts the REML
    criterion by log(scale), in lme4 too)."""
    d = frame.copy()
    d["slope"] = d["Days"] * scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return lmmscope.lmm("Reaction ~ Days + (slope | Subject)", d, method=method)


@needs_lme4
@pytest.mark.parametrize("scale", [1e6, 1e-6, 1e12])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_random_slope_units_do_not_matter(sleep, scale, method):
    """Days (fixed and random slope) times 1e6 used to give a false singular fit, times
    1e12 an unchanged start theta: now logLik is unchanged and VarCorr rescales exactly."""
    ref, fit = _fit(sleep, 1.0, method), _fit(sleep, scale, method)
    assert fit.converged and not fit.singular and not ref.singular
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-9)
    sd_ref, sd = np.sqrt(np.diag(ref.psi)), np.sqrt(np.diag(fit.psi))
    np.testing.assert_allclose(sd * [1, scale], sd_ref, rtol=1e-6)
    assert fit.mixed.corr[0, 1] == pytest.approx(ref.mixed.corr[0, 1], rel=1e-6)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-8)
    np.testing.assert_allclose(fit.fixef, ref.fixef, rtol=1e-8)


@needs_lme4
def test_selection_with_scaled_random_slope(sleep):
    """The unit of Days (fixed and random slope) leaves the selected model and the ML
    logLik unchanged, and rescales its coefficient exactly."""
    rng = np.random.default_rng(3)
    d = sleep.copy()
    for j in range(10):
        d[f"n{j}"] = rng.standard_normal(len(d))
    fits = []
    for scale in (1.0, 1e6, 1e-6):
        e = d.copy()
        e["Days"] = e["Days"] * scale
        fits.append(lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", e, method="ML"))
    for fit, scale in zip(fits[1:], (1e6, 1e-6)):
        assert fit.selected == fits[0].selected == ["Intercept", "Days"]
        assert fit.loglik == pytest.approx(fits[0].loglik, rel=1e-9)
        assert fit.fixef["Days"] * scale == pytest.approx(fits[0].fixef["Days"], rel=1e-6)
    assert fits[0].mixed.converged and fits[1].mixed.converged


def _stats(seed=0, n=30, m=6):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n), m)
    x = rng.standard_normal(n * m)
    z = rng.standard_normal(n * m)
    Z = np.column_stack([np.ones(n * m), z])
    b = rng.standard_normal((n, 2)) * [1.0, 0.5]
    y = 1 + 2 * x + np.einsum("ij,ij->i", Z, b[g]) + rng.standard_normal(n * m)
    codes, labels = encode_groups(g)
    X = np.column_stack([np.ones(n * m), x])
    return compute_cluster_stats(X, y, Z, codes, n), labels


def test_regular_fit_reports_convergence():
    stats, labels = _stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels)
    assert fit.converged and fit.convergence_messages == []
    assert fit.optimizer_message == "Fisher scoring converged"


def test_failed_gradient_check_warns():
    """A gradient tolerance below what the optimiser reaches must trigger lme4's warning."""
    stats, labels = _stats()
    strict = Control(check_conv_grad_tol=1e-300)
    with pytest.warns(ConvergenceWarning, match=r"max\|grad\| = .* \(tol = 1e-300"):
        fit = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels, control=strict)
    assert not fit.converged
    assert "convergence:" in "\n".join(fit.summary_lines())


def test_lbfgsb_failure_is_reported(monkeypatch):
    """L-BFGS-B's success flag is read: stopped after one iteration, the fit says so."""
    stats, labels = _stats(seed=1)
    monkeypatch.setattr(theta_optimiser, "_fisher_scoring", lambda *a, **k: None)
    with pytest.warns(ConvergenceWarning, match="L-BFGS-B did not converge"):
        fit = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels,
                            control=Control(optimizer_maxiter=1))
    assert not fit.converged
    assert "L-BFGS-B" in fit.optimizer_message and "Newton polish" in fit.optimizer_message


def test_rank_deficient_fixed_effects_named():
    """Linearly dependent columns are refused by name, not hidden as an infinite deviance."""
    stats, labels = _stats()
    n = stats.n_obs
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n)
    X = np.column_stack([np.ones(n), x, 2 * x])
    codes = np.repeat(np.arange(30), 6)
    dependent = compute_cluster_stats(X, rng.standard_normal(n), np.ones((n, 1)), codes, 30)
    with pytest.raises(RankDeficientError, match=r"\(Intercept, x, x2\) are linearly dependent"):
        MixedModelFit(dependent, ["Intercept", "x", "x2"], ["Intercept"], labels)
    with pytest.raises(RankDeficientError):
        theta_optimiser.optimise_theta(dependent)


def test_theta_given_as_optimal_is_checked():
    """theta_optimal=True (theta from elsewhere) skips the optimisation, not the check:
    the optimum passes, a point twice as far fails with lme4's gradient message."""
    stats, labels = _stats()
    fit = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels)
    again = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels,
                          theta0=fit.theta, theta_optimal=True)
    # the same theta solved again: equal up to rounding (measured 1 ulp)
    assert again.converged and again.loglik == pytest.approx(fit.loglik, rel=1e-12, abs=1e-12)
    with pytest.warns(ConvergenceWarning, match="failed to converge with max"):
        off = MixedModelFit(stats, ["Intercept", "x"], ["Intercept", "z"], labels,
                            theta0=2 * fit.theta, theta_optimal=True)
    assert not off.converged and off.loglik < fit.loglik


@needs_lme4
def test_second_local_minimum_is_not_taken():
    """A random intercept without a fixed intercept: the profiled deviance has a worse
    local minimum near the identity start (age 2.094, REML logLik -309.511, where a
    single start stopped, and where lme4 stops with our tests' tight BOBYQA settings);
    the scaled starts find the better one (age 0.7303, logLik -278.150, lmer's default
    fit)."""
    fit = lmmscope.lmm("distance ~ 0 + age + (1 | Subject)", r_frame("nlme::Orthodont"))
    assert fit.converged
    assert fit.loglik == pytest.approx(-278.15006577, abs=1e-6)
    assert fit.fixef["age"] == pytest.approx(0.73034452, rel=1e-6)
