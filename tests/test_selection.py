"""Support recovery and estimation accuracy of lmm_scope / LmmScope."""

import numpy as np
import pytest

import lmmscope
from lmmscope import Control
from lmmscope.reduction import reduce_gram, reduce_rows
from lmmscope.selection import selection_path
from lmmscope.simulate import as_frame, make_data, make_unbalanced, seed_formula


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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovery_p1000(seed):
    """Exact recovery at p = 1,000 with the default tuning (bench/recovery.py: 10 of 10 seeds);
    the signals (1, 0.5, 0.3 against noise sd 0.25) are far from the GIC threshold."""
    X, _Z, Zs, y, beta, _g = make_data(m=10, n=200, p=1000, q=4, seed=seed)
    est = lmmscope.LmmScope().fit(X, y, Z=Zs, groups=np.repeat(np.arange(200), 10))
    assert list(est.support_) == [1, 5, 10]


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


@pytest.mark.parametrize("always", [np.array([20]), np.array([0]), 0, np.array([0, 20])])
def test_always_as_an_array_or_a_scalar(seed_data, always):
    """``always`` as a numpy array or a scalar index means the same as the list: a
    one-element array holding 0 is falsy, and an ``always or []`` silently dropped it."""
    df, _beta = seed_data
    X = df[[f"x{j}" for j in range(50)]].to_numpy()
    Z = df[[c for c in df.columns if c.startswith("z")]].to_numpy()
    listed = list(np.atleast_1d(always))
    kwargs = dict(k=2, a=1.0, fit_intercept=False)
    given = lmmscope.LmmScope(always=always, **kwargs).fit(X, df["y"].to_numpy(), Z=Z, groups=df["cluster"])
    as_list = lmmscope.LmmScope(always=listed, **kwargs).fit(X, df["y"].to_numpy(), Z=Z, groups=df["cluster"])
    assert set(listed) <= set(np.flatnonzero(given.coef_).tolist())
    np.testing.assert_array_equal(given.coef_, as_list.coef_)
    names = [f"x{j}" for j in listed]
    by_name = lmmscope.lmm_scope(seed_formula(), df, k=2, a=1.0, always=np.array(names))
    assert set(names) <= set(by_name.selected)


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


def _frame_fit(X, Zs, y, groups, always=(), **settings):
    """lmm_scope on the arrays as a frame: x0.. fixed (with intercept), z0.. random slopes."""
    df = as_frame(X, Zs, y, groups)
    xs = " + ".join(f"x{j}" for j in range(X.shape[1]))
    zs = " + ".join(f"z{j}" for j in range(Zs.shape[1]))
    return lmmscope.lmm_scope(f"y ~ {xs} + (0 + {zs} | cluster)", df,
                              always=[f"x{j}" for j in always] or None, **settings)


def test_row_form_for_p_larger_than_gram_limit():
    """p > N and above the Gram limit: whitened rows instead of a p x p Gram, same answer."""
    X, Zs, y, groups, beta = make_unbalanced(n=40, p=450, q=2, seed=8)
    assert X.shape[1] > len(y)  # p > N: only the Gram limit decides
    gram_fit = _frame_fit(X, Zs, y, groups, a=2.0)
    rows_fit = _frame_fit(X, Zs, y, groups, a=2.0, control=Control(gram_limit=10))
    assert rows_fit._data.use_gram is False and gram_fit._data.use_gram is True
    assert rows_fit.support == gram_fit.support == ["x1", "x5", "x10"]
    np.testing.assert_allclose(rows_fit.coef, gram_fit.coef, atol=1e-8)


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
    assert "[unpenalised REML] a=" in out and "[a = 0] a=0:" in out and "k=3" in out


@pytest.mark.parametrize("settings", [{}, {"k": 3, "a": 1.0}, {"k": "cv", "a": 2.0, "k_max": 5}])
def test_implicit_intercept_equals_explicit_column(settings):
    """fit_intercept=True borders the statistics instead of copying X; the answer is
    that of an explicit column of ones forced into the model (Gram path, single-problem
    row path, cross-validation folds, inference)."""
    X, Zs, y, groups, beta = make_unbalanced(n=50, p=40, q=2, seed=12)
    y = y + 3.0
    implicit = lmmscope.LmmScope(**settings).fit(X, y, Z=Zs, groups=groups)
    explicit = lmmscope.LmmScope(fit_intercept=False, always=[0], **settings).fit(
        np.column_stack([np.ones(len(y)), X]), y, Z=Zs, groups=groups)
    assert list(implicit.support_) == [j - 1 for j in explicit.support_]
    assert {1, 5, 10} <= set(implicit.support_)
    np.testing.assert_allclose(implicit.result_.coef.to_numpy(), explicit.result_.coef.to_numpy(),
                               atol=1e-8)
    np.testing.assert_allclose(implicit.result_.fixef.to_numpy(), explicit.result_.fixef.to_numpy(),
                               atol=1e-7)
    np.testing.assert_allclose(implicit.result_.fitted(), explicit.result_.fitted(), atol=1e-7)
    if not settings:
        a = implicit.result_.inference().to_numpy(dtype=float)
        b = explicit.result_.inference().to_numpy(dtype=float)
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_single_problem_rows_equal_gram():
    """Fixed k and a run on whitened rows (cheaper than the Gram); same fit as the Gram."""
    from lmmscope import tuning
    X, Zs, y, groups, beta = make_unbalanced(n=60, p=80, q=3, seed=9)
    assert not tuning.gram_pays_off(len(y), 81, 3, 1.5)
    on_gram = Control(single_problem_rows_bytes=0)
    rows_fit = _frame_fit(X, Zs, y, groups, k=3, a=1.5)
    gram_fit = _frame_fit(X, Zs, y, groups, k=3, a=1.5, control=on_gram)
    assert rows_fit._data.use_gram is False and gram_fit._data.use_gram is True
    assert rows_fit.support == gram_fit.support == ["x1", "x5", "x10"]
    np.testing.assert_allclose(rows_fit.coef, gram_fit.coef, atol=1e-9)
    np.testing.assert_allclose(rows_fit.fixef, gram_fit.fixef, atol=1e-8)
    # a forced-in column between penalised ones: the row path projects a copy
    rows_fit = _frame_fit(X, Zs, y, groups, always=[7], k=3, a=1.5,
                          control=Control(single_problem_rows_bytes=2**40))
    gram_fit = _frame_fit(X, Zs, y, groups, always=[7], k=3, a=1.5, control=on_gram)
    assert rows_fit.support == gram_fit.support == ["x1", "x5", "x10"]
    assert rows_fit.coef["x7"] != 0
    np.testing.assert_allclose(rows_fit.coef, gram_fit.coef, atol=1e-9)


def test_row_form_search_matches_the_gram_form():
    """The search on whitened rows (Gram columns X'x_j computed as it visits them) and on
    the whitened Gram find the same subsets along the whole k path."""
    from lmmscope.cluster_blocks import encode_groups
    from lmmscope.cluster_stats import compute_cluster_stats
    from lmmscope.row_whitening import whiten_rows
    from lmmscope.whitening import whiten_stats
    X, Zs, y, groups, beta = make_unbalanced(n=60, p=150, q=2, seed=21)
    X[:, 40] = X[:, 1] + 0.3 * X[:, 40]  # a close competitor of a true column
    codes, labels = encode_groups(groups)
    stats = compute_cluster_stats(X, y, Zs, codes, labels.size)
    Xa, ya = whiten_rows(X, y, Zs, codes, labels.size, 1.5, stats=stats)
    rows = selection_path(reduce_rows(Xa, ya, []), range(12))
    w = whiten_stats(stats, 1.5)
    gram = selection_path(reduce_gram(w.gram, w.xty, w.yty, []), range(12))
    for a, b in zip(rows, gram):
        assert list(a.support) == list(b.support)
        assert a.rss == pytest.approx(b.rss, rel=1e-10)
    assert list(rows[3].support) == [1, 5, 10]


GUARD_SCRIPT = """
import numpy as np, lmmscope
from lmmscope.loss import QuadraticLoss
from lmmscope.simulate import make_data
X, Z, Zs, y, beta, _ = make_data(m=10, n=40, p=60, q=2, seed=0)
calls = {"n": 0}
real = QuadraticLoss.gram_columns
def interrupted(self, s):
    calls["n"] += 1
    if calls["n"] == 1:
        raise {exc}
    return real(self, s)
QuadraticLoss.gram_columns = interrupted
try:
    lmmscope.LmmScope(k=3, a=1.0, control=lmmscope.Control(engine="{engine}")).fit(
        X, y, Z=Zs, groups=np.repeat(np.arange(40), 10))
except {exc} as err:
    print("raised", type(err).__name__)
QuadraticLoss.gram_columns = real
est = lmmscope.LmmScope(k=3, a=1.0, control=lmmscope.Control(engine="{engine}")).fit(X, y, Z=Zs, groups=np.repeat(np.arange(40), 10))
print("support", sorted(est.support_.tolist()))
"""


@pytest.mark.parametrize("exc,engine", [("KeyboardInterrupt", "splicing"),
                                        ("MemoryError", "splicing"),
                                        ("KeyboardInterrupt", "skscope")])
def test_an_exception_inside_the_search_reaches_the_caller_without_aborting(exc, engine):
    """An exception inside the search (Ctrl-C in an R session or a notebook) reaches the
    caller, and the process goes on to fit again (skscope's C++ core aborts the process
    when its callback raises: the skscope engine's callbacks run under a guard; this
    case takes ~5 s, JAX's start in a fresh process)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GUARD_SCRIPT.replace("{exc}", exc).replace("{engine}", engine)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"raised {exc}" in out.stdout
    assert "support [1, 5, 10]" in out.stdout
