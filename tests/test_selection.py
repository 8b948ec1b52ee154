"""Support recovery and estimation accuracy of lmm_scope / LmmScope."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.simulate import make_data, make_unbalanced, seed_formula


def test_seed_example_default_tuning(seed_data):
    df, beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df)
    assert fit.support == ["x1", "x5", "x10"]
    est = fit.coef.reindex([f"x{j}" for j in range(50)]).to_numpy()
    assert np.linalg.norm(est - beta) < 0.1
    assert fit.k == 3 and fit.a > 1
    # path: one row per k = 0..k_max with the criteria; chosen k minimises GIC
    assert list(fit.path["k"]) == list(range(len(fit.path)))
    assert int(fit.path.loc[fit.path["gic"].idxmin(), "k"]) == 3


@pytest.mark.slow
def test_recovery_p1000_nine_of_ten_seeds():
    hits = 0
    for seed in range(10):
        X, _Z, Zs, y, beta, _g = make_data(m=10, n=200, p=1000, q=4, seed=seed)
        est = lmmscope.LmmScope().fit(X, y, Z=Zs, groups=np.repeat(np.arange(200), 10))
        hits += list(est.support_) == [1, 5, 10]
    assert hits >= 9


def test_unbalanced_shuffled_equals_sorted():
    X, Zs, y, groups, beta = make_unbalanced(n=60, p=30, q=3, seed=5)
    fit1 = lmmscope.LmmScope().fit(X, y, Z=Zs, groups=groups)
    order = np.argsort(groups, kind="stable")
    fit2 = lmmscope.LmmScope().fit(X[order], y[order], Z=Zs[order], groups=groups[order])
    # a comes out of a numerical REML optimisation: equal to its tolerance
    assert fit1.a_ == pytest.approx(fit2.a_, rel=1e-7)
    np.testing.assert_allclose(fit1.coef_, fit2.coef_, atol=1e-8)
    np.testing.assert_allclose(fit1.result_.fixef, fit2.result_.fixef, atol=1e-8)
    assert list(fit1.support_) == [1, 5, 10]


def test_fixed_k_and_a_and_always(seed_data):
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df, k=2, a=1.0, always=["x20"])
    assert fit.k == 2 and fit.a == 1.0
    assert fit.support == ["x1", "x5"]
    assert "x20" in fit.selected and fit.coef["x20"] != 0
    assert len(fit.path) == 1


def test_k_cv_selects_true_support(seed_data):
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df, k="cv", a=5.0, k_max=8)
    assert fit.support == ["x1", "x5", "x10"]
    assert fit.criterion == "cv"
    assert int(fit.path.loc[fit.path["cv_error"].idxmin(), "k"]) == 3


def test_a_cv_picks_from_grid(seed_data):
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df, k=3, a="cv", a_grid=(0.5, 2.0, 8.0))
    assert fit.a in (0.5, 2.0, 8.0)
    assert fit.support == ["x1", "x5", "x10"]
    errs = fit.a_history["cv_error"].to_numpy()
    assert fit.a == (0.5, 2.0, 8.0)[int(np.argmin(errs))]


def test_row_form_for_p_larger_than_gram_limit(monkeypatch):
    """p > N and above the Gram limit: whitened rows instead of a p x p Gram, same answer."""
    from lmmscope import tuning
    X, Zs, y, groups, beta = make_unbalanced(n=40, p=120, q=2, seed=8)
    gram_fit = lmmscope.LmmScope(a=2.0).fit(X, y, Z=Zs, groups=groups)
    monkeypatch.setattr(tuning, "GRAM_LIMIT", 10)
    rows_fit = lmmscope.LmmScope(a=2.0).fit(X, y, Z=Zs, groups=groups)
    assert list(rows_fit.support_) == list(gram_fit.support_) == [1, 5, 10]
    np.testing.assert_allclose(rows_fit.coef_, gram_fit.coef_, atol=1e-8)


def test_predict_population_level(small_frame):
    fit = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + f + (1 | cluster)", small_frame)
    assert set(fit.support) == {"x1", "x3", "f[T.b]"}
    new = small_frame.iloc[:5]
    pred = fit.predict(new)
    beta = fit.fixef
    manual = (beta["Intercept"] + beta["x1"] * new.x1 + beta["x3"] * new.x3
              + beta["f[T.b]"] * (new.f == "b"))
    np.testing.assert_allclose(pred, manual.to_numpy(), atol=1e-10)
    # a subset of the factor's levels in new data is fine
    only_a = small_frame[small_frame.f == "a"].iloc[:3]
    np.testing.assert_allclose(fit.predict(only_a),
                               beta["Intercept"] + beta["x1"] * only_a.x1 + beta["x3"] * only_a.x3,
                               atol=1e-10)


def test_plot_path_draws_both_panels(seed_data):
    import matplotlib
    matplotlib.use("Agg")
    df, _ = seed_data
    fig = lmmscope.lmm_scope(seed_formula(), df, a=5.0).plot_path()
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "support size k"


def test_verbose_prints_progress(seed_data, capsys):
    df, _ = seed_data
    lmmscope.lmm_scope(seed_formula(), df, verbose=True)
    out = capsys.readouterr().out
    assert "a=1:" in out and "k=3" in out
