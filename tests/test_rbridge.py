"""The R package's bridge: R spellings of names, plain values, a picklable predictor."""

import numpy as np

from lmmscope import rbridge
from lmmscope.simulate import seed_frame, seed_formula


def test_r_names():
    cols = {"f", "my var", "x"}
    assert rbridge.r_name("Intercept", cols) == "(Intercept)"
    assert rbridge.r_name("f[T.b]", cols) == "fb"
    assert rbridge.r_name("f[T.b]:my var", cols) == "fb:`my var`"
    assert rbridge.r_name("I(x ** 2)", cols) == "I(x^2)"
    assert rbridge.r_name("log(`my var`)", cols) == "log(`my var`)"


def test_fit_returns_plain_values_and_predicts_after_pickling():
    df, beta = seed_frame()
    out = rbridge.fit(seed_formula(), {c: df[c].to_numpy() for c in df.columns}, {})
    plain = (list, dict, str, int, float, bool, type(None))

    def check(v):
        assert isinstance(v, plain), type(v)
        if isinstance(v, dict):
            for w in v.values():
                check(w)
        elif isinstance(v, list):
            for w in v:
                check(w)

    check(out)
    assert out["support"] == ["x1", "x5", "x10"]
    cols = {c: df[c].to_numpy()[:5] for c in df.columns}
    pred = rbridge.predict(out["predictor"], cols, {}, level=1)
    np.testing.assert_allclose(pred, out["fitted"][:5], rtol=1e-12)
    assert len(out["inference"]["estimate"]) == 50  # p <= 500: computed by default


def test_factor_codes_round_trip():
    frame = rbridge.frame_from_columns({"f": np.array([0, 2, -1]), "x": np.array([1.0, np.nan, 3])},
                                       {"f": ["a", "b", "c"]})
    assert frame["f"].tolist()[:2] == ["a", "c"] and frame["f"].isna().tolist() == [False, False, True]
    assert list(frame["f"].cat.categories) == ["a", "b", "c"]
