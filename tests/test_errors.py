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
        # y near x0, not a copy of it (a copy of y among the predictors is refused)
        y = X[:, 0] + 0.1 * np.random.default_rng(3).standard_normal(60)
        fit = lmmscope.LmmScope(k=2, a=1.0, fit_intercept=False).fit(X, y, groups=groups)
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


def test_overflowing_scales_are_refused_without_aborting_the_interpreter(tmp_path):
    """y * 1e155 used to abort the process inside skscope's C++ core; x * 1e160 was
    reported as a duplicated column.  Run in a child process: an abort must not take
    the test session with it."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np, lmmscope
        from conftest import small_frame
        df = small_frame.__wrapped__()
        for frame in (df.assign(y=df.y * 1e155), df.assign(x1=df.x1 * 1e160)):
            try:
                lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", frame)
            except ValueError as exc:
                print("ValueError:", exc)
    """)
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(__file__), env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ValueError: the response's scale (")
    assert lines[0].endswith("would overflow the cross-products; rescale y")
    assert lines[1].startswith("ValueError: X: the scale of column(s) x1 (")
    assert "duplicated" not in out.stdout


def test_non_finite_statistics_never_reach_the_solver():
    """Statistics from another source (streamed chunks) are checked too."""
    from lmmscope.checks import check_statistics_finite
    from lmmscope.cluster_stats import compute_cluster_stats
    from lmmscope.reduction import reduce_gram
    rng = np.random.default_rng(3)
    X, codes = rng.standard_normal((40, 3)), np.repeat(np.arange(8), 5)
    stats = compute_cluster_stats(X, rng.standard_normal(40) * 1e160, np.ones((40, 1)), codes, 8)
    with pytest.raises(ValueError, match="the response's scale overflows the cross-products"):
        check_statistics_finite(stats, ["a", "b", "c"])
    stats = compute_cluster_stats(X * [1, 1e160, 1], np.ones(40), np.ones((40, 1)), codes, 8)
    with pytest.raises(ValueError, match="column\\(s\\) b overflow the cross-products"):
        check_statistics_finite(stats, ["a", "b", "c"])
    G = X.T @ X
    with pytest.raises(ValueError, match="whitened cross-products are not finite"):
        reduce_gram(G, np.array([1.0, np.inf, 0.0]), 1.0, [])


def test_tiny_scales_are_refused_not_reported_as_constant(small_frame):
    with pytest.raises(ValueError, match="scale of column\\(s\\) x2 \\(.*e-16.\\) would underflow"):
        lmmscope.lmm_scope("y ~ x1 + x2 + (1 | cluster)", small_frame.assign(x2=small_frame.x2 * 1e-160))


def test_location_shifted_columns_are_not_duplicates(small_frame):
    """x + 1.7e9 on two columns used to raise a false "duplicated column(s)"."""
    df = small_frame.assign(x1=small_frame.x1 + 1.7e9, x3=small_frame.x3 + 1.7e9)
    fit = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", df)
    assert fit.support == ["x1", "x3"]


def test_columns_equal_up_to_location_and_scale_are_duplicates(small_frame):
    df = small_frame.assign(x1b=3 * small_frame.x1 - 7)
    with pytest.raises(ValueError, match="duplicated column\\(s\\).*x1 = x1b \\(equal up to "
                                         "location and scale\\)"):
        lmmscope.lmm_scope("y ~ x1 + x2 + x1b + (1 | cluster)", df)


def test_mixed_type_cluster_labels(small_frame):
    """Labels of mixed types compare as strings (R's factor()): 3 and "3" are one cluster."""
    df = small_frame.copy()
    codes = df.cluster.str[1:].astype(int)
    df["mixed"] = [c if c % 2 else str(c) for c in codes]
    df.loc[df.index[codes == 2][:3], "mixed"] = 2  # the integer 2 and the string "2": one cluster
    fit = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | mixed)", df)
    reference = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", small_frame)
    assert fit.ngroups == 30
    assert fit.support == reference.support
    assert fit.loglik == pytest.approx(reference.loglik, rel=1e-9)


def test_scale_warning_as_lme4s_check_scale_x(small_frame):
    from lmmscope.checks import ScaleWarning
    with pytest.warns(ScaleWarning, match="Some predictor variables are on very different "
                                          "scales: consider rescaling .*\\(x1\\)"):
        lmmscope.lmm("y ~ x1 + x2 + (1 | cluster)", small_frame.assign(x1=small_frame.x1 * 1e4))
    binary = small_frame.assign(b=(small_frame.x3 > 0).astype(float), x2=small_frame.x2 * 0.01)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)  # a 0/1 column is not "on a scale"
        lmmscope.lmm("y ~ x1 + x2 + b + (1 | cluster)", binary)


def test_column_checks_run_from_summed_chunk_statistics_alone():
    """A streamed source has only statistics (chunks added up, one shared shift): the
    constant, duplicate and rank checks need no rows of X."""
    from lmmscope.checks import check_design_columns
    from lmmscope.cluster_stats import compute_cluster_stats
    from lmmscope.intercept import InterceptPrepended
    from lmmscope.rank import screen_design
    rng = np.random.default_rng(4)
    X = rng.standard_normal((90, 5)) + 1.7e9
    X[:, 4] = 2 * (X[:, 1] - 1.7e9) + 5  # equal to x1 up to location and scale
    codes = np.repeat(np.arange(15), 6)
    Xp, y, Z = InterceptPrepended(X), rng.standard_normal(90), np.ones((90, 1))
    whole = compute_cluster_stats(Xp, y, Z, codes, 15)
    shift = (whole.x_shift, whole.y_shift)
    rows = [slice(0, 40), slice(40, 90)]
    parts = [compute_cluster_stats(InterceptPrepended(X[r]), y[r], Z[r], codes[r], 15,
                                   center=shift) for r in rows]
    total = parts[0] + parts[1]
    names = ["Intercept", "x0", "x1", "x2", "x3", "x4"]
    with pytest.raises(ValueError, match="duplicated column\\(s\\).*: x1 = x4"):
        check_design_columns(total, names, [0])
    from lmmscope.rank import RankDeficiencyWarning
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column / coefficient: x4"):
        kept, excluded = screen_design(total, names, [0, 2, 5])
    assert kept == [0, 2] and excluded == [5]


@pytest.mark.parametrize("value, message", [
    (1e151, "would overflow"), (1e149, None), (1e-151, "would underflow"), (1e-149, None),
    (np.inf, "NaN or infinite"), (-np.inf, "NaN or infinite"), (np.nan, "NaN or infinite"),
    (0.0, None)])
def test_column_value_checks_decide_as_the_value_by_value_scan(value, message):
    """The sums of squares clear a column only where the scan of its values would; near
    the limits (1e149 and 1e-149 in 2,000 rows) the column is scanned, not refused."""
    from lmmscope.checks import check_finite_columns

    X = np.random.default_rng(0).standard_normal((2000, 3))
    if value in (1e149, 1e-149, 1e-151, 0.0):
        X[:, 1] = value  # a whole column at that magnitude
    else:
        X[7, 1] = value
    names = ["a", "b", "c"]
    if message is None:
        moments = check_finite_columns(X, names, "X")
        np.testing.assert_allclose(moments.squares, (X ** 2).sum(axis=0), rtol=1e-12)
    else:
        with pytest.raises(ValueError, match=message) as err:
            check_finite_columns(X, names, "X")
        assert "column(s) b" in str(err.value) or "column(s): b" in str(err.value)
