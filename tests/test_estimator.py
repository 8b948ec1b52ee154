"""LmmScope as a scikit-learn estimator: clone, parameters, Pipeline, GridSearchCV, CV."""

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks

import lmmscope
from lmmscope.api import LmmScope as LmmScopeFromApi
from lmmscope.estimator import LmmScope
from lmmscope.simulate import make_unbalanced


@pytest.fixture(scope="module")
def data():
    X, Zs, y, groups, beta = make_unbalanced(n=48, p=20, q=2, min_size=3, max_size=9, seed=11)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
    frame["z0"], frame["z1"] = Zs[:, 0], Zs[:, 1]
    frame["g"] = [f"subject{c}" for c in groups]  # string labels
    return X, Zs, y, frame["g"].to_numpy(), frame


def r2_by_hand(y, pred):
    return 1 - np.sum((y - pred) ** 2) / np.sum((y - np.mean(y)) ** 2)


def population_prediction(est, X):
    """X beta from the refit's fixed effects, by hand (not through predict)."""
    fixef = est.result_.fixef
    pred = np.full(X.shape[0], fixef.get("Intercept", 0.0))
    for name, value in fixef.items():
        if name != "Intercept":
            pred += value * X[name]
    return pred


def test_one_class_everywhere():
    assert lmmscope.LmmScope is LmmScope is LmmScopeFromApi


def test_clone_get_params_set_params_round_trip():
    est = LmmScope(k=3, a=2.0, criterion="bic", always=["x2"], a_grid=(0.5, 1.0),
                   group_column="g", random_columns=["z0"])
    params = est.get_params()
    assert params == {"k": 3, "a": 2.0, "fit_intercept": True, "always": ["x2"],
                      "criterion": "bic", "k_max": None, "cv_folds": 5, "a_grid": (0.5, 1.0),
                      "method": "REML", "random_state": 0, "verbose": False,
                      "group_column": "g", "random_columns": ["z0"],
                      "penalize_random_slopes": False, "control": None}
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    assert LmmScope(**params).get_params() == params
    assert twin.set_params(k=5, method="ML") is twin
    assert (twin.k, twin.method, est.k) == (5, "ML", 3)
    with pytest.raises(ValueError, match="Invalid parameter"):
        twin.set_params(not_a_parameter=1)


@pytest.mark.parametrize("check", [
    "check_no_attributes_set_in_init", "check_estimator_cloneable",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_do_not_raise_errors_in_init_or_set_params",
])
def test_sklearn_checks_of_parameters(check):
    getattr(estimator_checks, check)("LmmScope", LmmScope())


def test_fit_neither_modifies_nor_adds_public_parameters(data):
    """sklearn's rule (check_estimators_overwrite_params, check_dont_overwrite_parameters)
    on clustered data: parameters unchanged (by hash), only trailing-underscore
    attributes added by fit."""
    X, Zs, y, groups, frame = data
    est = LmmScope(always=[3], a_grid=[1.0, 4.0], a="cv", k=3)
    before = {name: joblib.hash(value) for name, value in est.get_params().items()}
    public_before = set(vars(est))
    est.fit(X, y, Z=Zs, groups=groups)
    assert {name: joblib.hash(value) for name, value in est.get_params().items()} == before
    added = set(vars(est)) - public_before
    assert added and all(name.endswith("_") for name in added), added
    assert list(est.support_) == [1, 5, 10] and est.coef_[3] != 0


def test_column_route_equals_array_route(data):
    """group_column/random_columns read from a DataFrame give the fit of groups=/Z=."""
    X, Zs, y, groups, frame = data
    by_columns = LmmScope(group_column="g", random_columns=["z0", "z1"]).fit(frame, y)
    Z = np.column_stack([np.ones(len(y)), Zs])
    by_arrays = LmmScope().fit(frame.drop(columns="g"), y, Z=Z, groups=frame["g"].to_numpy())
    assert list(by_columns.support_) == list(by_arrays.support_) == [1, 5, 10]
    np.testing.assert_allclose(by_columns.coef_, by_arrays.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(by_columns.result_.fixef, by_arrays.result_.fixef, atol=1e-12)
    assert by_columns.n_features_in_ == X.shape[1] + 3
    assert list(by_columns.feature_names_in_) == list(frame.columns)
    # the same model through the formula interface
    formula = "y ~ " + " + ".join(frame.columns[:-1]) + " + (z0 + z1 | g)"
    fit = lmmscope.lmm_scope(formula, frame.assign(y=y))
    np.testing.assert_allclose(by_columns.result_.fixef.to_numpy(), fit.fixef.to_numpy(),
                               rtol=1e-7)
    # population-level predict = X beta of the refit, computed by hand
    np.testing.assert_allclose(by_columns.predict(frame), population_prediction(by_columns, frame),
                               atol=1e-10)
    # level 1 reads the clusters and the random slopes from the same columns
    np.testing.assert_allclose(by_columns.predict(frame, level=1),
                               by_arrays.predict(frame.drop(columns="g"), Z=Z, groups=groups),
                               rtol=0, atol=1e-10)
    assert not np.allclose(by_columns.predict(frame, level=1), by_columns.predict(frame))
    with pytest.raises(ValueError, match="do not pass groups"):
        LmmScope(group_column="g").fit(frame, y, groups=groups)
    with pytest.raises(KeyError, match="group_column: no column 'nope'"):
        LmmScope(group_column="nope").fit(frame, y)


def test_pipeline_with_standard_scaler(data):
    """Scaling the predictors changes neither the selection nor the population-level
    predictions (the intercept absorbs the shifts, the coefficients the scales)."""
    X, Zs, y, groups, frame = data
    pipe = Pipeline([("scale", StandardScaler()), ("lmmscope", LmmScope())])
    pipe.fit(X * 10 + 3, y, lmmscope__groups=groups, lmmscope__Z=Zs)
    plain = LmmScope().fit(X, y, Z=Zs, groups=groups)
    assert list(pipe[-1].support_) == list(plain.support_) == [1, 5, 10]
    np.testing.assert_allclose(pipe.predict(X * 10 + 3), plain.predict(X), rtol=0, atol=1e-8)
    assert pipe[-1].a_ == pytest.approx(plain.a_, rel=1e-7)
    assert pipe.score(X * 10 + 3, y) == pytest.approx(r2_by_hand(y, plain.predict(X)), abs=1e-10)


def manual_group_cv_scores(estimator, frame, y, groups, n_splits):
    """R^2 of X beta on each held-out fold of clusters, fitted fold by fold by hand."""
    scores = []
    for train, test in GroupKFold(n_splits).split(frame, y, groups):
        assert not set(groups[train]) & set(groups[test])  # whole clusters held out
        est = clone(estimator).fit(frame.iloc[train], y[train])
        scores.append(r2_by_hand(y[test], population_prediction(est, frame.iloc[test])))
    return np.array(scores)


def test_cross_val_score_with_group_kfold(data):
    X, Zs, y, groups, frame = data
    est = LmmScope(k=3, a=1.0, group_column="g")
    scores = cross_val_score(est, frame, y, groups=frame["g"], cv=GroupKFold(4))
    np.testing.assert_allclose(scores, manual_group_cv_scores(est, frame, y, groups, 4),
                               rtol=0, atol=1e-10)
    # held-out clusters are predicted (R^2 > 0 beyond the fold-to-fold noise), though the
    # random effects' share of the variance is not predictable there
    assert scores.mean() > 2 * scores.std(ddof=1) / np.sqrt(scores.size), scores


def test_cross_val_score_with_metadata_routing(data):
    """groups routed both to GroupKFold and to fit (and Z to fit), sliced per fold."""
    X, Zs, y, groups, frame = data
    expected = manual_group_cv_scores(LmmScope(k=3, a=1.0, group_column="g",
                                               random_columns=["z0", "z1"]), frame, y, groups, 4)
    Z = np.column_stack([np.ones(len(y)), Zs])
    with sklearn.config_context(enable_metadata_routing=True):
        est = LmmScope(k=3, a=1.0).set_fit_request(groups=True, Z=True)
        scores = cross_val_score(est, frame.drop(columns="g"), y, cv=GroupKFold(4),
                                 params={"groups": frame["g"].to_numpy(), "Z": Z})
    # the same selections; the two routes' REML refits stop at optima up to ~1e-5 apart in
    # logLik (fold 2), which moves a score by up to 8e-8
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


def test_grid_search_over_k(data):
    X, Zs, y, groups, frame = data
    ks = [1, 2, 3, 6]
    search = GridSearchCV(LmmScope(a=1.0, group_column="g"), {"k": ks}, cv=GroupKFold(4))
    search.fit(frame, y, groups=frame["g"])
    folds = {k: manual_group_cv_scores(LmmScope(k=k, a=1.0, group_column="g"), frame, y, groups, 4)
             for k in ks}
    manual = [folds[k].mean() for k in ks]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], manual, rtol=0, atol=1e-10)
    assert search.best_params_["k"] == ks[int(np.argmax(manual))]
    # x5 (coefficient 0.5) pays off on held-out clusters: the fold-wise gain of k = 2 over
    # k = 1 exceeds twice its standard error across folds (the CV noise level)
    gain = folds[2] - folds[1]
    assert gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(gain.size), gain
    # the refitted best estimator is the fit on all rows at the best k
    best = search.best_estimator_
    assert best.k_ == search.best_params_["k"] and set(best.support_) <= {1, 5, 10}


def test_score_is_population_level_r2(data):
    X, Zs, y, groups, frame = data
    est = LmmScope(group_column="g").fit(frame, y)
    assert est.score(frame, y) == pytest.approx(r2_by_hand(y, population_prediction(est, frame)),
                                                abs=1e-12)
    # level 1 (the fitted clusters' random effects) explains more on the training rows
    assert r2_by_hand(y, est.predict(frame, level=1)) > est.score(frame, y)


def test_not_fitted_error():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError, match="not fitted"):
        LmmScope().predict(np.zeros((2, 3)))


def test_sleepstudy_with_noise_columns_matches_lmer(lme4):
    """Real data: sleepstudy plus 10 pure-noise columns; the estimator keeps Days only
    (a random slope, so unpenalised by default; and selected when penalised), and its
    refit is lmer's Reaction ~ Days + (Days | Subject)."""
    df = lme4.r_frame("lme4::sleepstudy")
    rng = np.random.default_rng(1)
    X = df[["Days", "Subject"]].copy()
    for j in range(10):
        X[f"noise{j}"] = rng.standard_normal(len(df))
    est = LmmScope(group_column="Subject", random_columns=["Days"]).fit(X, df["Reaction"])
    assert est.result_.selected == ["Intercept", "Days"] and list(est.support_) == []
    penalised = LmmScope(group_column="Subject", random_columns=["Days"],
                         penalize_random_slopes=True).fit(X, df["Reaction"])
    assert [X.drop(columns="Subject").columns[j] for j in penalised.support_] == ["Days"]
    ref = lme4.lmer_fit("Reaction ~ Days + (Days | Subject)", df)
    lme4.assert_agrees(est.result_, ref, case="LmmScope on sleepstudy + noise", ranef=False)
    scores = {k: cross_val_score(LmmScope(k=k, group_column="Subject", random_columns=["Days"],
                                          penalize_random_slopes=True),
                                 X, df["Reaction"], groups=X["Subject"], cv=GroupKFold(6))
              for k in (None, 0)}
    # Days predicts the reaction times of unseen subjects better than their mean does
    assert scores[None].mean() > scores[0].mean() + 0.05, scores


def test_row_order_and_label_type_do_not_matter(data):
    X, Zs, y, groups, frame = data
    base = LmmScope(group_column="g").fit(frame, y)
    order = np.random.default_rng(2).permutation(len(y))
    shuffled = LmmScope(group_column="g").fit(frame.iloc[order], y[order])
    codes = frame.assign(g=pd.factorize(frame["g"])[0] + 100)  # integer labels
    relabelled = LmmScope(group_column="g").fit(codes, y)
    for other in (shuffled, relabelled):
        assert list(other.support_) == list(base.support_)
        np.testing.assert_allclose(other.coef_, base.coef_, rtol=0, atol=1e-10)
        assert other.a_ == pytest.approx(base.a_, rel=1e-7)


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("k, a", [(3, 1.0), (None, None)])  # rows layout, Gram layout
@pytest.mark.parametrize("order", ["C", "F"])
def test_fit_leaves_the_callers_arrays_and_frame_untouched(intercept, k, a, order):
    """Centring, scaling and whitening work on buffers of their own (and the column
    checks reuse the input checks' moments of X; a column-major X is whitened in a
    row-major copy): the caller's X, y, Z and data frame are bit for bit what they were."""
    from lmmscope.simulate import make_data

    X, _Z, Zs, y, _beta, _ = make_data(m=8, n=40, p=60, q=2, seed=3)
    X = np.asarray(X + 5.0, order=order)  # a location to centre away
    groups = np.repeat(np.arange(40), 8)
    copies = [X.copy(), y.copy(), Zs.copy()]
    lmmscope.LmmScope(k=k, a=a, fit_intercept=intercept).fit(X, y, Z=Zs, groups=groups)
    for before, after in zip(copies, (X, y, Zs)):
        np.testing.assert_array_equal(before, after)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(60)]).assign(
        y=y, z0=Zs[:, 0], z1=Zs[:, 1], g=groups)
    snapshot = frame.copy()
    lmmscope.lmm_scope("y ~ . - z0 - z1 + (0 + z0 + z1 | g)", frame, k=k, a=a)
    pd.testing.assert_frame_equal(frame, snapshot, check_exact=True)
