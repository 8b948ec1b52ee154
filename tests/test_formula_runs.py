"""Plain numeric columns read as runs (what '.' expands to): the names and the matrix
exactly as the frame's columns stacked by hand, whatever interrupts or reorders a run."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmscope.formula import build_design, new_design_matrices
from lmmscope.formula import columns as formula_columns
from lmmscope.formula.terms import ColumnRun
from lmmscope.frames import PandasSource, _numeric_dtype


@pytest.fixture
def frame():
    """Float columns around an int, a factor, a bool and a float32 column."""
    rng = np.random.default_rng(7)
    n = 60
    cols = {f"x{j}": rng.standard_normal(n) for j in range(4)}
    cols |= {"a": rng.integers(-3, 4, n), "f": rng.choice(list("uvw"), n),
             "x4": rng.standard_normal(n), "b": rng.random(n) > 0.5,
             "h": rng.standard_normal(n).astype(np.float32), "x5": rng.standard_normal(n),
             "y": rng.standard_normal(n), "g": np.repeat(np.arange(12), 5)}
    return pd.DataFrame(cols)


def stacked(df, names, rows=slice(None), intercept=True):
    """The design matrix by hand: a column of ones and the frame's columns as float64."""
    parts = [np.ones(len(df))] if intercept else []
    parts += [df[name].to_numpy(dtype=np.float64) for name in names]
    return np.column_stack(parts)[rows]


def f_dummies(df):
    return [(df["f"] == level).to_numpy(dtype=float) for level in ("v", "w")]


def test_dot_run_interrupted_by_factor_and_bool(frame):
    d = build_design("y ~ . + (1 | g)", frame)
    assert d.fixed_names == ["Intercept", "x0", "x1", "x2", "x3", "a", "f[T.v]", "f[T.w]",
                             "x4", "b", "h", "x5"]
    expected = np.column_stack([stacked(frame, ["x0", "x1", "x2", "x3", "a"]), *f_dummies(frame),
                                stacked(frame, ["x4", "b", "h", "x5"], intercept=False)])
    np.testing.assert_array_equal(np.asarray(d.X), expected)
    kinds = [kind for kind, _ in d.fixed_spec.entries]
    assert kinds == ["columns", "term", "columns", "term", "columns"]
    assert d.fixed_spec.entries[0][1] == ["x0", "x1", "x2", "x3", "a"]
    assert d.fixed_spec.required_variables == {"x0", "x1", "x2", "x3", "a", "x4", "h", "x5",
                                               "f", "b"}
    X, _ = new_design_matrices(d, frame.iloc[::-1], need_random=False)
    np.testing.assert_array_equal(X, expected[::-1])


def test_dot_minus_several_columns(frame):
    d = build_design("y ~ . - x1 - f - h - b - x5 + (x1 | g)", frame)
    assert d.fixed_names == ["Intercept", "x0", "x2", "x3", "a", "x4"]
    np.testing.assert_array_equal(np.asarray(d.X), stacked(frame, ["x0", "x2", "x3", "a", "x4"]))
    np.testing.assert_array_equal(d.Z, stacked(frame, ["x1"]))


def test_duplicated_terms_keep_their_first_place(frame):
    d = build_design("y ~ x3 + . - f - b + x3 + x0 + (1 | g)", frame)
    names = ["x3", "x0", "x1", "x2", "a", "x4", "h", "x5"]
    assert d.fixed_names == ["Intercept"] + names
    np.testing.assert_array_equal(np.asarray(d.X), stacked(frame, names))
    assert [kind for kind, _ in d.fixed_spec.entries] == ["columns"]  # one run


def test_removed_then_added_again_goes_last(frame):
    d = build_design("y ~ x0 + x1 + x2 - x1 + x1 + (1 | g)", frame)
    assert d.fixed_names == ["Intercept", "x0", "x2", "x1"]
    np.testing.assert_array_equal(np.asarray(d.X), stacked(frame, ["x0", "x2", "x1"]))


def test_columns_out_of_frame_order_and_interactions_last(frame):
    d = build_design("y ~ 0 + x3 + x0:x2 + x1 + x5 + x0 + (1 | g)", frame)
    assert d.fixed_names == ["x3", "x1", "x5", "x0", "x0:x2"]
    expected = np.column_stack([stacked(frame, ["x3", "x1", "x5", "x0"], intercept=False),
                                frame["x0"] * frame["x2"]])
    np.testing.assert_array_equal(np.asarray(d.X), expected)
    # the plain columns either side of the interaction are one run
    assert d.fixed_spec.entries[0] == ("columns", ["x3", "x1", "x5", "x0"])


def test_nan_rows_in_a_plain_run_dropped(frame):
    df = frame.copy()
    df.loc[[3, 17], "x2"] = np.nan
    df.loc[17, "x4"] = np.nan
    df.loc[40, "x5"] = np.nan
    with pytest.warns(UserWarning, match="dropped 3 rows"):
        d = build_design("y ~ . - f - b + (1 | g)", df)
    keep = ~np.isin(np.arange(len(df)), [3, 17, 40])
    assert d.dropped_rows == [3, 17, 40] and d.n_dropped == 3
    names = ["x0", "x1", "x2", "x3", "a", "x4", "h", "x5"]
    np.testing.assert_array_equal(np.asarray(d.X), stacked(df, names, keep))
    np.testing.assert_array_equal(d.y, df["y"].to_numpy()[keep])
    with pytest.raises(ValueError, match="3 rows have missing values"):
        build_design("y ~ . - f - b + (1 | g)", df, na_action="fail")


def test_infinite_values_named_and_huge_values_kept(frame):
    df = frame.copy()
    df.loc[5, "x3"] = -np.inf
    df.loc[5, "x1"] = np.inf  # inf and -inf in one row: the row's sum is NaN
    with pytest.raises(ValueError, match="column 'x1' contains infinite values"):
        build_design("y ~ . + (1 | g)", df)
    with pytest.raises(ValueError, match="column 'x3' contains infinite values"):
        build_design("y ~ x3 + x1 + (1 | g)", df)  # the first in the formula's order
    df = frame.copy()
    df.loc[9, ["x0", "x1", "x2"]] = 1e308  # column sums overflow; no value is missing
    df.loc[10, "x0"] = 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row dropped, no overflow warning
        d = build_design("y ~ x0 + x1 + x2 + (1 | g)", df)
    assert d.n_dropped == 0
    np.testing.assert_array_equal(np.asarray(d.X), stacked(df, ["x0", "x1", "x2"]))


def test_nan_scan_over_many_suspect_columns():
    """The suspect columns are inspected a few at a time: every NaN row is found, and the
    first column holding an infinity is named, whichever group it falls in."""
    from lmmscope.control import Performance
    pairs = Performance(suspect_chunk=2)
    rng = np.random.default_rng(3)
    block = rng.standard_normal((30, 9))
    block[[1, 4], 0], block[7, 3], block[8, 4], block[20, 8] = np.nan, np.nan, np.nan, np.nan
    names = [f"c{j}" for j in range(9)]
    missing = formula_columns._nan_rows(np.asfortranarray(block), names, pairs)
    np.testing.assert_array_equal(np.flatnonzero(missing), [1, 4, 7, 8, 20])
    np.testing.assert_array_equal(formula_columns._nan_rows(block, names, pairs), missing)  # C
    block[2, 6], block[3, 7] = np.inf, -np.inf
    with pytest.raises(ValueError, match="column 'c6' contains infinite values"):
        formula_columns._nan_rows(block, names, pairs)


def test_column_named_intercept_in_a_run(frame):
    df = frame.assign(Intercept=frame["x0"] + 2.0)
    d = build_design("y ~ x1 + Intercept + x2 + (1 | g)", df)
    assert d.fixed_names == ["Intercept", "x1", "`Intercept`", "x2"]
    np.testing.assert_array_equal(np.asarray(d.X), stacked(df, ["x1", "Intercept", "x2"]))
    with pytest.raises(ValueError, match="both be named '`Intercept`'"):
        build_design("y ~ Intercept + Q('`Intercept`') + (1 | g)",
                     df.assign(**{"`Intercept`": df["x1"]}))


def test_plan_holds_one_run_not_a_term_per_column(frame):
    from lmmscope.formula.design import _plans
    from lmmscope.formula.names import ColumnNames
    from lmmscope.formula.parse import parse_formula
    source = PandasSource(frame)
    plans = _plans(parse_formula("y ~ . - f - b + (1 | g)"), ColumnNames(source.columns), source)
    assert len(plans.fixed.items) == 1 and isinstance(plans.fixed.items[0], ColumnRun)
    assert plans.fixed.plain == ["x0", "x1", "x2", "x3", "a", "x4", "h", "x5"]
    assert [t.name for t in plans.response.terms] == ["y"]  # the per-term view remains


def test_dtype_flags_equal_per_column_classification(frame):
    fragmented = pd.DataFrame({"g": frame["g"]})
    for name in frame.columns.drop("g"):  # one block per column, out of position order
        fragmented.insert(0, name, frame[name])
    fragmented["e"] = pd.array([1, None] * 30, dtype="Int64")
    fragmented["c"] = pd.Categorical(frame["f"])
    for df in (frame, fragmented):
        source = PandasSource(df)
        assert [source.is_numeric(c) for c in df.columns] == \
            [_numeric_dtype(dt) for dt in df.dtypes]
        assert list(source._float64_at) == [dt == np.float64 for dt in df.dtypes]
        assert source.non_numeric == [c for c in df.columns if not _numeric_dtype(df[c].dtype)]


def test_dtype_flags_without_usable_blocks(frame):
    """pandas' blocks are private: without them (or if they did not cover each column
    once) the flags come from the public per-column dtypes, the same."""
    from types import SimpleNamespace
    from lmmscope.frames import _dtype_flags
    expected = _dtype_flags(frame)
    twice_column_0 = SimpleNamespace(as_array=np.zeros(2, np.intp))
    overlapping = SimpleNamespace(blocks=[SimpleNamespace(dtype=np.dtype(float),
                                                          mgr_locs=twice_column_0)])
    for mgr in (None, overlapping):
        stand_in = SimpleNamespace(shape=frame.shape, dtypes=frame.dtypes, _mgr=mgr)
        got = _dtype_flags(stand_in)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert expected[0].tolist() == [True] * 5 + [False, True, False, True, True, True, True]


def test_fragmented_frame_gives_the_same_design(frame):
    fragmented = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        fragmented[name] = frame[name].copy()
    a = build_design("y ~ . - f + (x1 | g)", frame)
    b = build_design("y ~ . - f + (x1 | g)", fragmented)
    assert a.fixed_names == b.fixed_names
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    np.testing.assert_array_equal(a.Z, b.Z)


def test_new_rows_read_in_runs_whatever_their_layout(frame):
    """Prediction reads the fitted plain columns run by run from the new table, whose
    columns may come in another order, with other dtypes, or with missing values."""
    d = build_design("y ~ x3 + . - f - b + (x1 | g)", frame)
    names = ["x3", "x0", "x1", "x2", "a", "x4", "h", "x5"]
    new = frame.iloc[7:19][list(reversed(frame.columns))].astype({"a": float, "x0": np.float32})
    new = new.assign(x2=new["x2"].where(new.index != 9))  # NaN passes through
    X, Z = new_design_matrices(d, new, need_random=True)
    np.testing.assert_array_equal(X, stacked(new, names))
    np.testing.assert_array_equal(Z, stacked(new, ["x1"]))
    assert np.isnan(X[2, 4]) and np.isfinite(np.delete(X, 4, axis=1)).all()


@pytest.mark.parametrize("group", [1, 3, 64])
def test_arrow_columns_read_in_groups_equal_pandas(frame, group):
    import pyarrow as pa
    from lmmscope.control import Performance
    groups = Performance(arrow_run=group)
    df = frame.copy()
    df.loc[[4, 30], "x2"] = np.nan
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        expected = build_design("y ~ . - f + (x1 | g)", df)
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        got = build_design("y ~ . - f + (x1 | g)", pa.Table.from_pandas(df, preserve_index=False),
                           performance=groups)
    assert got.fixed_names == expected.fixed_names
    np.testing.assert_array_equal(np.asarray(got.X), np.asarray(expected.X))
    np.testing.assert_array_equal(got.Z, expected.Z)
    np.testing.assert_array_equal(got.y, expected.y)
    X, _ = new_design_matrices(got, pa.Table.from_pandas(df.iloc[:9], preserve_index=False),
                               need_random=False)
    np.testing.assert_array_equal(X, new_design_matrices(expected, df.iloc[:9], False)[0])
