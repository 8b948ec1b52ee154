"""The R package's bridge: R's design arrays in, the versioned plain-values schema out."""

import json

import numpy as np
import pytest

from lmmscope import api, rbridge, schema
from lmmscope.exceptions import InputError
from lmmscope.simulate import seed_frame, seed_formula


def _plain_only(v):
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_only(w) for k, w in v.items())
    if isinstance(v, list):
        return all(_plain_only(w) for w in v)
    return isinstance(v, (str, int, float, bool, type(None)))


def _seed_arrays():
    df, beta = seed_frame()
    xs = [f"x{j}" for j in range(50)]
    X = df[xs].to_numpy()  # the seed formula has no intercept, Z = z0..z3
    Z = df[["z0", "z1", "z2", "z3"]].to_numpy()
    codes = np.unique(df["cluster"].to_numpy(), return_inverse=True)[1]
    return df, beta, X, Z, codes, xs


ZN = ["z0", "z1", "z2", "z3"]


def _r_bytes(a):
    """What R's writeBin(as.numeric(x), raw(), 8, endian = "little") sends: column-major."""
    return bytearray(np.asarray(a, dtype="<f8").ravel(order="F").tobytes())


def test_arrays_as_r_sends_them_give_the_formula_fit():
    df, beta, X, Z, codes, names = _seed_arrays()
    out = rbridge.fit_arrays(_r_bytes(X), _r_bytes(df["y"]), _r_bytes(Z), _r_bytes(codes),
                             names, ZN, "cluster", [], inference=False)
    assert _plain_only(out)
    json.dumps(out)
    assert out["schema_version"] == schema.SCHEMA_VERSION
    assert out["support"] == ["x1", "x5", "x10"]
    ref = api.lmm_scope(seed_formula(), df)
    np.testing.assert_allclose(out["fixef"], ref.fixef.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(out["loglik"], ref.loglik, rtol=1e-10)
    assert out["fixef_names"] == ["x1", "x5", "x10"]


def test_ml_refit_and_both_criteria_at_the_estimates():
    df, beta, X, Z, codes, names = _seed_arrays()
    cols = [1, 5, 10]
    reml = rbridge.lmm_arrays(X[:, cols], df["y"].to_numpy(), Z, codes,
                              [names[j] for j in cols], ZN, "cluster")
    ml = rbridge.lmm_arrays(X[:, cols], df["y"].to_numpy(), Z, codes,
                            [names[j] for j in cols], ZN, "cluster",
                            reml=False)
    # the ML refit stored with a REML fit is the ML fit itself
    assert reml["ml_refit"]["loglik"] == pytest.approx(ml["loglik"], rel=1e-9)
    assert reml["deviance_reml_at_estimates"] == pytest.approx(-2 * reml["loglik"], rel=1e-12)
    # the ML criterion at the REML estimates cannot beat the ML optimum
    assert reml["deviance_ml_at_estimates"] >= -2 * ml["loglik"] - 1e-8
    q, n = 4, len(reml["group_labels"])
    cv = np.array(reml["ranef_condvar"])
    assert cv.shape == (n, q, q)
    assert np.all(np.linalg.eigvalsh(cv) > 0)


def test_core_warnings_are_returned_not_printed():
    df, beta, X, Z, codes, names = _seed_arrays()
    out = rbridge.lmm_arrays(X[:, :3], df["y"].to_numpy(), Z, codes, names[:3],
                             ZN, "cluster")
    assert isinstance(out["warnings"], list)


def test_to_dict_is_the_schema_payload():
    df, beta = seed_frame()
    fit = api.lmm_scope(seed_formula(), df)
    d = fit.to_dict()
    assert d["schema_version"] == schema.SCHEMA_VERSION and d["kind"] == "lmm_scope"
    assert d["support"] == ["x1", "x5", "x10"]
    assert _plain_only(d)
    assert len(d["vcov"]) == len(d["fixef"]) == 3




def test_inference_by_default_up_to_the_memory_guard():
    """No cap on the number of columns: an R fit carries its debiased table (a saved R fit
    has no Python to compute it later); 600 candidates, above the former 500-column cap.
    Only a Gram too large for memory leaves it out."""
    from lmmscope.control import Performance

    rng = np.random.default_rng(3)
    N, p = 200, 600
    X = rng.standard_normal((N, p))
    codes = np.repeat(np.arange(20), 10)
    y = X[:, 0] + rng.standard_normal(20)[codes] + rng.standard_normal(N)
    names = [f"x{j}" for j in range(p)]
    out = rbridge.fit_arrays(X, y, np.ones((N, 1)), codes, names, ["(Intercept)"], "g",
                             k=1, a=1.0)
    table = out["inference"]
    assert table["term"] == names and table["df"] == 19
    est = dict(zip(table["term"], table["estimate"]))
    se = dict(zip(table["term"], table["std_error"]))
    assert abs(est["x0"] - 1) < 4 * se["x0"]  # the true effect, within its interval
    # above the memory guard (the p x p Gram's size) the table is left out, with a warning
    guard = {"performance": Performance(inference_auto_gram_bytes=2 * 8 * p * p - 1)}
    out = rbridge.fit_arrays(X, y, np.ones((N, 1)), codes, names, ["(Intercept)"], "g",
                             k=1, a=1.0, control=guard)
    assert out["inference"] is None
    assert any("pass inference = TRUE" in w["message"] for w in out["warnings"])


def test_control_from_r_becomes_the_core_control_with_clear_errors():
    from lmmscope.control import Control

    # R sends whole numbers as doubles: int fields get ints back
    control = rbridge._control({"search_effort": 2.0, "unit_free_z": False, "a_relative_tol": 0.05})
    assert control == Control(search_effort=2, unit_free_z=False, a_relative_tol=0.05)
    assert isinstance(control.search_effort, int)
    assert rbridge._control(None) is None
    with pytest.raises(ValueError, match="unknown control option\\(s\\) nope; lmm_scope_control"):
        rbridge._control({"nope": 1})
    with pytest.raises(ValueError, match=r"Control\(search_effort=2.5\): must be an integer >= 0"):
        rbridge._control({"search_effort": 2.5})
    with pytest.raises(ValueError, match=r"Control\(unit_free_z=1.0\): must be True or False"):
        rbridge._control({"unit_free_z": 1.0})


# -- several random-effects terms --------------------------------------------------------

def _crossed_frame(seed=0, n_subject=12, n_item=9, p=6):
    """Subjects x items crossed (standard normals only), x0 and x1 matter."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(n_subject), n_item)
    item = np.tile(np.arange(n_item), n_subject)
    X = rng.standard_normal((subject.size, p))
    y = (1 + 2 * X[:, 0] - X[:, 1] + rng.standard_normal(n_subject)[subject]
         + 0.6 * rng.standard_normal(n_item)[item] + rng.standard_normal(subject.size))
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    df["subject"] = [f"s{v:02d}" for v in subject]
    df["item"] = [f"i{v:02d}" for v in item]
    df["y"] = y
    return df


def _r_term(df, column, Z=None, cnms=("(Intercept)",)):
    """One term as R's terms_for_core() sends it: bytes, 0-based codes, labels."""
    levels, codes = np.unique(df[column].to_numpy(), return_inverse=True)
    Z = np.ones((len(df), 1)) if Z is None else Z
    return {"Z": _r_bytes(Z), "codes": _r_bytes(codes), "levels": list(levels),
            "cnms": list(cnms), "group_name": column}


def test_several_terms_as_r_sends_them_give_the_formula_fit():
    df = _crossed_frame()
    names = ["(Intercept)", "x0", "x1"]
    X = np.column_stack([np.ones(len(df)), df["x0"], df["x1"]])
    # R sends the terms in the formula's order; the core answers in lme4's (most levels first)
    out = rbridge.lmm_terms_arrays(_r_bytes(X), _r_bytes(df["y"]),
                                   [_r_term(df, "item"), _r_term(df, "subject")], names)
    assert _plain_only(out)
    json.dumps(out)
    assert [t["group_name"] for t in out["terms"]] == ["subject", "item"]
    assert [t["source"] for t in out["terms"]] == [1, 0]
    ref = api.lmm("y ~ x0 + x1 + (1 | subject) + (1 | item)", df)
    # the same model from differently summed statistics: logLik to rounding (measured 1e-15);
    # L-BFGS-B's path depends on the last bits (it stopped 1.9e-9 apart in theta), the
    # Newton polish after it does not: measured theta 1.4e-15, fixef 2.9e-15 relative
    np.testing.assert_allclose(out["loglik"], ref.loglik, rtol=1e-12)
    np.testing.assert_allclose(out["fixef"], ref.fixef.to_numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out["theta"], ref.theta, rtol=1e-12, atol=1e-13)
    subject = out["terms"][0]
    assert subject["levels"] == sorted(df["subject"].unique())
    np.testing.assert_allclose(np.asarray(subject["ranef"])[:, 0],
                               ref.ranef["subject"].iloc[:, 0].to_numpy(), rtol=1e-12,
                               atol=1e-13)  # measured 1.1e-15
    assert np.asarray(subject["condvar"]).shape == (12, 1, 1)
    # the ML refit of a REML fit is the ML fit itself
    ml = rbridge.lmm_terms_arrays(X, df["y"].to_numpy(), [_r_term(df, "item"),
                                  _r_term(df, "subject")], names, reml=False)
    assert out["ml_refit"]["loglik"] == pytest.approx(ml["loglik"], rel=1e-9)
    assert out["deviance_ml_at_estimates"] > ml["deviance"]  # ML optimum minimises it


def test_several_terms_the_core_drops_aliased_columns_and_checks_codes():
    df = _crossed_frame()
    X = np.column_stack([np.ones(len(df)), df["x0"], 2 * df["x0"]])
    out = rbridge.lmm_terms_arrays(X, df["y"].to_numpy(), [_r_term(df, "subject"),
                                   _r_term(df, "item")], ["(Intercept)", "x0", "x0_twice"])
    assert out["dropped"] == ["x0_twice"]
    assert out["fixef_names"] == ["(Intercept)", "x0"]
    assert any("rank deficient" in w["message"] for w in out["warnings"])
    bad = _r_term(df, "item")
    bad["levels"] = bad["levels"][:3]
    with pytest.raises(InputError, match="level codes of grouping factor 'item'"):
        rbridge.lmm_terms_arrays(X[:, :2], df["y"].to_numpy(), [_r_term(df, "subject"), bad],
                                 ["(Intercept)", "x0"])


def test_several_terms_selection_speaks_r_and_refuses_crossed_inference_by_default():
    df = _crossed_frame()
    names = ["(Intercept)"] + [f"x{j}" for j in range(6)]
    X = np.column_stack([np.ones(len(df))] + [df[n] for n in names[1:]])
    terms = [_r_term(df, "subject"), _r_term(df, "item")]
    out = rbridge.fit_terms_arrays(X, df["y"].to_numpy(), terms, names, unpenalised=[0])
    assert out["support"] == ["x0", "x1"]
    assert out["inference"] is None
    assert any("crossed" in w["message"] for w in out["warnings"])
    ref = api.lmm_scope("y ~ x0 + x1 + x2 + x3 + x4 + x5 + (1 | subject) + (1 | item)", df)
    # the refit's optimum (polished) on both paths: measured 3.2e-15 relative
    np.testing.assert_allclose(out["coef"], ref.coef.to_numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out["loglik"], ref.loglik, rtol=1e-12)
    with pytest.raises(InputError, match='k = "cv" and a = "cv" hold out whole clusters.*k = NULL'):
        rbridge.fit_terms_arrays(X, df["y"].to_numpy(), terms, names, unpenalised=[0], k="cv")
