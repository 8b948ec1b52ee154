"""Level-1 prediction: cluster labels matched by value across types, unseen clusters as
lme4 (issue 10, item 7)."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.prediction import Predictor


@pytest.fixture(scope="module")
def int_labelled():
    rng = np.random.default_rng(4)
    n, m = 20, 6
    g = np.repeat(np.arange(1, n + 1), m)  # integer cluster ids 1..20
    df = pd.DataFrame({"x": rng.standard_normal(n * m), "cluster": g})
    df["y"] = 1 + 2 * df.x + rng.standard_normal(n)[g - 1] + 0.3 * rng.standard_normal(n * m)
    return lmmscope.lmm("y ~ x + (1 | cluster)", df), df


def test_string_label_is_the_integer_cluster(int_labelled):
    fit, df = int_labelled
    rows = df.iloc[[0, 7, 13]].copy()
    expected = fit.predict(rows, level=1)
    # the conditional prediction differs from the population one (the effect is used)
    assert np.all(np.abs(expected - fit.predict(rows, level=0)) > 1e-3)
    for converted in (rows.cluster.astype(str), rows.cluster.astype(float)):
        as_text = rows.assign(cluster=converted)
        np.testing.assert_array_equal(fit.predict(as_text, level=1), expected)
    np.testing.assert_allclose(expected, fit.fitted()[[0, 7, 13]], rtol=1e-12)


def test_unseen_cluster_raises_unless_allowed(int_labelled):
    fit, df = int_labelled
    rows = df.iloc[[0, 7]].copy()
    rows["cluster"] = [1, 999]
    with pytest.raises(ValueError, match=r"new level\(s\) of the grouping factor in newdata: 999"):
        fit.predict(rows, level=1)
    pred = fit.predict(rows, level=1, allow_new_levels=True)
    population = fit.predict(rows, level=0)
    assert pred[1] == pytest.approx(population[1], rel=1e-14)  # unseen: population level
    assert pred[0] == pytest.approx(fit.fitted()[0], rel=1e-12)  # seen: its random effect
    assert fit.predict(rows, level=0).shape == (2,)  # level 0 needs no known cluster


def test_integer_label_is_the_string_cluster():
    ranef = np.array([[1.0], [2.0], [3.0]])
    model = Predictor(None, np.array([0.5]), ranef, np.array(["1", "2", "3"]), True)
    X = np.ones((3, 1))
    np.testing.assert_array_equal(model.predict(X, level=1, groups=[3, 1.0, "2"]), [3.5, 1.5, 2.5])
    with pytest.raises(ValueError, match="'x'"):
        model.predict(X, level=1, groups=["x", "1", "2"])
