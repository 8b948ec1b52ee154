"""The model specification and the engine below every front (issue 21).

Tuning arguments are parsed once (``TuningArguments``), every front reaches the same
checks through ``engine.fit`` (R's ``lmm()`` included), the statistical tolerances are
Control fields that change the decisions they name, and the decisions made once
(Z units, singularity, random intercept only) follow their one rule.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope import engine, rbridge
from lmmscope.checks import ScaleWarning
from lmmscope.control import Control
from lmmscope.convergence import is_singular
from lmmscope.exceptions import InputError
from lmmscope.rank import RankDeficiencyWarning
from lmmscope.specification import (ModelSpec, RowData, TuningArguments, parse_a_text,
                                    parse_k_text, random_intercept_only)
from lmmscope.z_units import proxy_z_scale


def _frame(seed=0, n_groups=30, m=6, p=4):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), m)
    X = rng.standard_normal((n_groups * m, p))
    y = X[:, 0] + 0.5 * rng.standard_normal(n_groups)[g] + rng.standard_normal(n_groups * m)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(1, p + 1)])
    df["y"], df["g"] = y, g
    return df, rng


# -- tuning arguments, parsed once ------------------------------------------------------

def test_tuning_arguments_are_normalised_once():
    t = TuningArguments(np.int64(2), 1, a_grid=[1, 2])
    assert (t.k, type(t.k)) == (2, int)
    assert (t.a, type(t.a)) == (1.0, float)
    assert t.a_grid == (1.0, 2.0)
    assert t.k_fixed and t.a_fixed and t.single_problem and not t.uses_cv
    cv = TuningArguments("cv", None)
    assert cv.uses_cv and not cv.k_fixed and not cv.a_fixed and cv.a is None
    assert TuningArguments(None, "cv").uses_cv


@pytest.mark.parametrize("kwargs, argument", [
    (dict(k="3"), "k"), (dict(k=-1), "k"), (dict(k=True), "k"), (dict(a=-1.0), "a"),
    (dict(a="no"), "a"), (dict(a="cv", a_grid=()), "a_grid"), (dict(cv_folds=1), "cv_folds"),
    (dict(k_max=-2), "k_max"), (dict(criterion="foo"), "criterion"),
    (dict(random_state=-1), "random_state")])
def test_tuning_arguments_refuse_bad_values_by_name(kwargs, argument):
    with pytest.raises(InputError, match=argument):
        TuningArguments(**kwargs)


def test_text_arguments_of_the_command_line():
    assert parse_k_text("3") == 3 and parse_k_text("cv") == "cv" and parse_k_text(None) is None
    assert parse_a_text("0.5") == 0.5 and parse_a_text("cv") == "cv"
    with pytest.raises(InputError, match="--k"):
        parse_k_text("three")
    with pytest.raises(InputError, match="--a"):
        parse_a_text("x")


def test_model_spec_refuses_inconsistent_parts():
    X, y, Z = np.zeros((4, 2)), np.zeros(4), np.ones((4, 1))
    rows = RowData(X, y, Z, np.array([0, 0, 1, 1]))
    with pytest.raises(InputError, match="unpenalised"):
        ModelSpec(["a", "b"], ["(Intercept)"], "g", np.array([0, 1]), rows, unpenalised=[2])
    with pytest.raises(InputError, match="3 names"):
        ModelSpec(["a", "b", "c"], ["(Intercept)"], "g", np.array([0, 1]), rows)
    spec = ModelSpec(["a", "b"], ["(Intercept)"], "g", np.array([0, 1]), rows,
                     unpenalised=[1, 0, 1], reml=False)
    assert spec.unpenalised == (0, 1) and spec.method == "ML" and not spec.selects
    with pytest.raises(Exception):  # frozen: a specification is not patched later
        spec.reml = True


# -- one engine, the same checks from every front ----------------------------------------

def test_every_front_gives_the_same_selection():
    df, _rng = _frame()
    formula = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + x4 + (1 | g)", df, k=1, a=1.0)
    est = lmmscope.LmmScope(k=1, a=1.0).fit(df[["x1", "x2", "x3", "x4"]], df["y"],
                                            groups=df["g"])
    names = ["Intercept", "x1", "x2", "x3", "x4"]
    X = np.column_stack([np.ones(len(df)), df[names[1:]].to_numpy()])
    r = rbridge.fit_arrays(X, df["y"].to_numpy(), np.ones((len(df), 1)), df["g"].to_numpy(),
                           names, ["(Intercept)"], "g", [0], k=1, a=1.0, inference=False)
    assert formula.support == ["x1"] == r["support"]
    assert list(est.support_) == [0]
    # one engine on the same columns: measured equal (estimator), 5e-16 apart (R's bytes)
    np.testing.assert_allclose(est.result_.fixef.to_numpy(), formula.fixef.to_numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r["fixef"], formula.fixef.to_numpy(), rtol=1e-12, atol=1e-14)


def test_r_lmm_runs_the_rank_and_response_checks():
    """R's lmm() reaches the engine's checks: an aliased column is dropped with lme4's
    message (returned among the warnings), a copy of the response refused."""
    df, _rng = _frame()
    X = np.column_stack([np.ones(len(df)), df["x1"], df["x2"], df["x1"] + df["x2"]])
    names = ["(Intercept)", "x1", "x2", "x12"]
    y, Z, g = df["y"].to_numpy(), np.ones((len(df), 1)), df["g"].to_numpy()
    out = rbridge.lmm_arrays(X, y, Z, g, names, ["(Intercept)"], "g")
    assert out["fixef_names"] == ["(Intercept)", "x1", "x2"]
    assert out["dropped_columns"] == ["x12"]  # the decision, sent to R as a value
    assert any("rank deficient" in w["message"] and "x12" in w["message"]
               for w in out["warnings"])
    with pytest.raises(InputError, match="copy of y"):
        rbridge.lmm_arrays(np.column_stack([X[:, :2], 3 * y + 1]), y, Z, g,
                           ["(Intercept)", "x1", "ycopy"], ["(Intercept)"], "g")


def test_results_are_built_whole_with_their_dropped_columns():
    df, _rng = _frame()
    df["x5"] = df["x1"] - 2 * df["x2"]
    with pytest.warns(RankDeficiencyWarning, match="x5"):
        fit = lmmscope.lmm("y ~ x1 + x2 + x5 + (1 | g)", df)
    assert fit.dropped_columns == ["x5"]
    assert list(fit.fixef.index) == ["Intercept", "x1", "x2"]
    np.testing.assert_allclose(fit.predict(df), fit.predict(), rtol=1e-12, atol=1e-12)


def test_ml_refit_of_a_reml_fit_is_the_ml_fit():
    df, _rng = _frame(seed=3)
    reml = lmmscope.lmm("y ~ x1 + x2 + (1 | g)", df)
    ml = lmmscope.lmm("y ~ x1 + x2 + (1 | g)", df, method="ML")
    again = engine.ml_refit(reml)
    assert again.method == "ML"
    # both optimise the same ML deviance (from the REML optimum, and from the multi-start):
    # measured logLik equal, theta 3e-11 apart
    assert again.loglik == pytest.approx(ml.loglik, rel=1e-12)
    np.testing.assert_allclose(again.theta, ml.mixed.theta, rtol=1e-9)
    assert engine.ml_refit(ml) is ml.mixed


# -- statistical tolerances are Control fields -------------------------------------------

def test_rank_tol_decides_what_is_aliased():
    df, rng = _frame()
    df["x5"] = df["x1"] + df["x2"] + 1e-5 * rng.standard_normal(len(df))
    formula = "y ~ x1 + x2 + x5 + (1 | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        assert lmmscope.lmm(formula, df).dropped_columns == []  # R's qr tol 1e-7 keeps it
    with pytest.warns(RankDeficiencyWarning, match="x5"):
        loose = lmmscope.lmm(formula, df, control=Control(rank_tol=1e-3))
    assert loose.dropped_columns == ["x5"]


def test_scale_ratio_tol_is_lme4s_check_scale_x():
    df, _rng = _frame()
    df["x2"] = 50 * df["x2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        lmmscope.lmm("y ~ x1 + x2 + (1 | g)", df)  # a factor 50 is within lme4's 1e3
    with pytest.warns(ScaleWarning, match="x2"):
        lmmscope.lmm("y ~ x1 + x2 + (1 | g)", df, control=Control(scale_ratio_tol=10))


def test_duplicate_and_response_copy_tolerances():
    df, rng = _frame()
    df["x5"] = df["x1"] + 1e-5 * rng.standard_normal(len(df))  # correlation ~ 1 - 5e-11
    formula = "y ~ x1 + x2 + x5 + (1 | g)"
    lmmscope.lmm_scope(formula, df, a=1.0)  # not a duplicate at 1e-12
    with pytest.raises(InputError, match="duplicated column.*x1 = x5"):
        lmmscope.lmm_scope(formula, df, a=1.0, control=Control(duplicate_tol=1e-8))
    df["x5"] = df["y"] + 1e-4 * rng.standard_normal(len(df))  # correlation ~ 1 - 1e-9
    lmmscope.lmm_scope(formula, df, a=1.0)  # not a copy of y at 1e-10
    with pytest.raises(InputError, match="x5.*response"):
        lmmscope.lmm_scope(formula, df, a=1.0, control=Control(response_copy_tol=1e-6))


@pytest.mark.parametrize("field, value", [("rank_tol", 0.0), ("scale_ratio_tol", 1.0),
                                          ("constant_tol", -1.0), ("duplicate_tol", np.nan)])
def test_tolerance_fields_have_rules(field, value):
    with pytest.raises(InputError, match=field):
        Control(**{field: value})


# -- decisions made once -------------------------------------------------------------------

def test_proxy_z_scale_follows_unit_free_z():
    Z = np.array([[1.0, 2.0, 0.0], [1.0, -4.0, 0.0]])
    squares = (Z * Z).sum(axis=0)
    np.testing.assert_allclose(proxy_z_scale(Control(), squares, 2), [1.0, np.sqrt(10.0), 1.0],
                               rtol=1e-15)
    np.testing.assert_array_equal(proxy_z_scale(Control(unit_free_z=False), squares, 2), 1.0)


def test_is_singular_judges_bounded_entries_only():
    lower = np.array([0.0, -np.inf, 0.0])
    assert not is_singular([0.5, -1e-9, 0.2], lower, Control())
    assert is_singular([0.5, 0.3, 5e-5], lower, Control())
    assert not is_singular([0.5, 0.3, 5e-5], lower, Control(singular_tol=1e-5))


def test_random_intercept_only_is_one_rule():
    assert random_intercept_only(["Intercept"]) and random_intercept_only(["(Intercept)"])
    assert not random_intercept_only(["(Intercept)", "days"])
    assert random_intercept_only(["z0"], Z=np.ones((5, 1)))
    assert not random_intercept_only(["z0"], Z=np.arange(5.0)[:, None])
    assert not random_intercept_only(["z0"])


def test_performance_settings_change_the_layout_not_the_result():
    from lmmscope.control import Performance
    from lmmscope.layouts import choose_layout

    on_demand = Control(performance=Performance(on_demand_gram_bytes=0))
    assert not choose_layout(1000, 20).columns_on_demand
    assert choose_layout(1000, 20, control=on_demand).columns_on_demand
    df, _rng = _frame(seed=5)
    formula = "y ~ x1 + x2 + x3 + x4 + (1 | g)"
    base = lmmscope.lmm_scope(formula, df)
    lazy = lmmscope.lmm_scope(formula, df, control={"performance": {"on_demand_gram_bytes": 0}})
    assert lazy.support == base.support and lazy.k == base.k
    # the same arithmetic on the same columns: measured equal, 1e-12 allowed
    np.testing.assert_allclose(lazy.fixef.to_numpy(), base.fixef.to_numpy(), rtol=1e-12,
                               atol=1e-14)
    with pytest.raises(InputError, match="performance.on_demand_gram_bytes"):
        Performance(on_demand_gram_bytes=-1)
