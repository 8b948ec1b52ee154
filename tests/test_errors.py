"""Bad input: a clear error naming the problem, one test per case."""

import numpy as np
import pytest

import lmmscope


def test_unknown_column(small_frame):
    with pytest.raises(KeyError, match="unknown column\\(s\\) in formula: nope"):
        lmmscope.lmm_scope("y ~ x1 + nope + (1 | cluster)", small_frame)


def test_unknown_grouping_column(small_frame):
    with pytest.raises(KeyError, match="grp"):
        lmmscope.lmm_scope("y ~ x1 + (1 | grp)", small_frame)


def test_infinite_values(small_frame):
    df = small_frame.copy()
    df.loc[4, "x2"] = np.inf
    with pytest.raises(ValueError, match="column 'x2' contains infinite values"):
        lmmscope.lmm_scope("y ~ x1 + x2 + (1 | cluster)", df)


def test_nan_in_arrays():
    X = np.random.default_rng(0).standard_normal((40, 3))
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in column\\(s\\): x2"):
        lmmscope.LmmScope().fit(X, np.ones(40), groups=np.repeat(np.arange(8), 5))


def test_non_numeric_response(small_frame):
    with pytest.raises(ValueError, match="response 'f' must be numeric"):
        lmmscope.lmm_scope("f ~ x1 + (1 | cluster)", small_frame)


def test_every_cluster_single_row(small_frame):
    df = small_frame.assign(one=np.arange(len(small_frame)))
    with pytest.raises(ValueError, match="every cluster has a single row"):
        lmmscope.lmm_scope("y ~ x1 + (1 | one)", df)


def test_k_not_below_rows(small_frame):
    df = small_frame.iloc[:12]
    with pytest.raises(ValueError, match="exceeds the number of candidate predictors"):
        lmmscope.lmm_scope("y ~ x1 + x2 + (1 | cluster)", df, k=5)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 30))
    with pytest.raises(ValueError, match="must be smaller than the number of rows \\(10\\)"):
        lmmscope.LmmScope(k=9).fit(X, rng.standard_normal(10), groups=np.repeat([0, 1], 5))


def test_constant_column(small_frame):
    df = small_frame.assign(c=3.0)
    with pytest.raises(ValueError, match="constant column\\(s\\).*: c"):
        lmmscope.lmm_scope("y ~ x1 + c + (1 | cluster)", df)


def test_duplicated_column(small_frame):
    df = small_frame.assign(x1b=small_frame.x1)
    with pytest.raises(ValueError, match="duplicated column\\(s\\).*x1 = x1b"):
        lmmscope.lmm_scope("y ~ x1 + x2 + x1b + (1 | cluster)", df)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_duplicated_and_constant_columns_on_the_row_path(fit_intercept):
    """k and a fixed: whitened rows, no Gram; duplicates found by random projections."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 8))
    X[:, 6] = X[:, 2]
    X[:, 7] = X[:, 4]
    groups = np.repeat(np.arange(12), 5)
    with pytest.raises(ValueError, match="duplicated column\\(s\\).*x2 = x6, x4 = x7"):
        lmmscope.LmmScope(k=2, a=1.0, fit_intercept=fit_intercept).fit(X, X[:, 0], groups=groups)
    X[:, 6] = 2.0
    if fit_intercept:
        with pytest.raises(ValueError, match="constant column\\(s\\).*: x6"):
            lmmscope.LmmScope(k=2, a=1.0, fit_intercept=True).fit(X, X[:, 0], groups=groups)
    else:  # without an intercept a constant column is aliased with nothing: a candidate
        X[:, 7] = rng.standard_normal(60)
        fit = lmmscope.LmmScope(k=2, a=1.0, fit_intercept=False).fit(X, X[:, 0], groups=groups)
        assert 0 in fit.support_


def test_bad_k_and_a_and_criterion(small_frame):
    f = "y ~ x1 + x2 + (1 | cluster)"
    with pytest.raises(ValueError, match="k must be an integer, None or 'cv'"):
        lmmscope.lmm_scope(f, small_frame, k="two")
    with pytest.raises(ValueError, match="a must be a non-negative"):
        lmmscope.lmm_scope(f, small_frame, a=-1)
    with pytest.raises(ValueError, match="criterion must be one of"):
        lmmscope.lmm_scope(f, small_frame, criterion="xic")


def test_always_unknown(small_frame):
    with pytest.raises(KeyError, match="always= names unknown column 'x9'"):
        lmmscope.lmm_scope("y ~ x1 + x2 + (1 | cluster)", small_frame, always=["x9"])


def test_data_not_a_frame():
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        lmmscope.lmm_scope("y ~ x + (1 | g)", {"y": [1, 2]})


def test_cli_reports_errors_cleanly(tmp_path, small_frame, capsys):
    from lmmscope.cli import main
    path = tmp_path / "d.csv"
    small_frame.to_csv(path, index=False)
    assert main(["fit", str(path), "--formula", "y ~ x1 + nope + (1 | cluster)"]) == 2
    assert "unknown column(s) in formula: nope" in capsys.readouterr().err
    assert main(["fit", str(path), "--formula", "y ~ x1 + x2 + x3 + (1 | cluster)", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert set(out["support"]) == {"x1", "x3"}
