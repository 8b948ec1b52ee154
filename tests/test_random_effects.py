"""The random-effects structure of a ModelSpec (lmmscope.random_effects): several terms
reach the same engine steps as one grouping factor, so they get the same checks of the
tuning arguments against the data, with the same messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.exceptions import InputError
from lmmscope.random_effects import SeveralTerms, structure_of
from lmmscope.specification import ModelSpec, SeveralTermsRows

FORMULA = "y ~ . + (1 | a) + (1 | b)"


@pytest.fixture(scope="module")
def crossed():
    rng = np.random.default_rng(3)
    n = 300
    df = pd.DataFrame({"a": rng.integers(0, 12, n).astype(str),
                       "b": rng.integers(0, 9, n).astype(str)})
    for j in range(3):
        df[f"x{j}"] = rng.standard_normal(n)
    df["y"] = df.x0 + rng.standard_normal(n)
    return df


def test_k_max_is_checked_against_the_candidates_by_its_own_name(crossed):
    # before the engine ran several terms, k_max's error called it "k"
    with pytest.raises(InputError, match=r"^k_max = 10 exceeds the number of candidate "
                                         r"predictors \(3\)"):
        lmmscope.lmm_scope(FORMULA, crossed, k_max=10)


def test_cross_validation_is_refused_before_its_folds_are_drawn(crossed):
    # a="cv" with more folds than levels raised numpy's ValueError from the fold drawing
    with pytest.raises(InputError, match="hold out whole clusters"):
        lmmscope.lmm_scope(FORMULA, crossed, a="cv", cv_folds=1000)


def test_a_several_term_fit_carries_its_structure(crossed):
    result = lmmscope.lmm_scope(FORMULA, crossed, k=1, a=1.0)
    assert result.selected == ["Intercept", "x0"]
    assert [t.group_name for t in result.reterms.terms] == ["a", "b"]


def test_the_structure_of_a_spec():
    rows = SeveralTermsRows(np.ones((4, 1)), np.arange(4.0))
    with pytest.raises(TypeError, match="several-term structure"):
        ModelSpec(["x"], ["Intercept"], "a", np.arange(2), rows)
    structure = SeveralTerms(reterms=None)
    spec = ModelSpec(["x"], ["Intercept"], "a", np.arange(2), rows, random_effects=structure)
    assert structure_of(spec) is structure
