"""polars and pyarrow tables give exactly the fit of the same data as pandas."""

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope.formula import build_design

pa = pytest.importorskip("pyarrow")
pl = pytest.importorskip("polars")


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(11)
    n_groups, m = 30, 5
    N = n_groups * m
    df = pd.DataFrame({f"x{j}": rng.standard_normal(N) for j in range(12)})
    df["count"] = rng.integers(0, 5, N)  # an integer column
    df["f"] = rng.choice(["lo", "mid", "hi"], N)
    df["z"] = rng.standard_normal(N)
    g = np.repeat(np.arange(n_groups), m)
    df["g"] = [f"s{i}" for i in g]
    df["y"] = (1 + 2 * df.x1 - df.x5 + 0.3 * df["count"] + (df.f == "hi") * 0.8
               + rng.standard_normal(n_groups)[g] * (1 + 0.5 * df.z) + 0.5 * rng.standard_normal(N))
    return df


def _as(kind, df):
    if kind == "pyarrow":
        return pa.Table.from_pandas(df, preserve_index=False)
    if kind == "polars":
        return pl.from_pandas(df)
    if kind == "record batch":
        return pa.RecordBatch.from_pandas(df, preserve_index=False)
    if kind == "arrow stream":  # only the Arrow C stream protocol
        table = pa.Table.from_pandas(df, preserve_index=False)

        class Stream:
            def __arrow_c_stream__(self, requested_schema=None):
                return table.__arrow_c_stream__(requested_schema)
        return Stream()
    if kind == "interchange":  # only the dataframe interchange protocol
        table = pa.Table.from_pandas(df, preserve_index=False)

        class Interchange:
            def __dataframe__(self, nan_as_null=False, allow_copy=True):
                return table.__dataframe__(nan_as_null, allow_copy)
        return Interchange()
    raise AssertionError(kind)


KINDS = ["pyarrow", "polars", "record batch", "arrow stream", "interchange"]
FORMULA = "y ~ . - z + (z | g)"


@pytest.mark.parametrize("kind", KINDS)
def test_lmm_scope_equal_to_pandas_bit_for_bit(frame, kind):
    ref = lmmscope.lmm_scope(FORMULA, frame)
    fit = lmmscope.lmm_scope(FORMULA, _as(kind, frame))
    assert fit.support == ref.support and fit.a == ref.a
    np.testing.assert_array_equal(fit.coef.to_numpy(), ref.coef.to_numpy())
    np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())
    assert fit.loglik == ref.loglik


@pytest.mark.parametrize("kind", ["pyarrow", "polars"])
def test_lmm_and_predict_equal_to_pandas(frame, kind):
    ref = lmmscope.lmm("y ~ x1 + x5 + count + f + (z | g)", frame)
    fit = lmmscope.lmm("y ~ x1 + x5 + count + f + (z | g)", _as(kind, frame))
    np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())
    assert fit.loglik == ref.loglik
    new = frame.iloc[::7]
    for level in (0, 1):
        np.testing.assert_array_equal(fit.predict(_as(kind, new), level=level),
                                      ref.predict(new, level=level))


def test_missing_values_in_arrow_dropped_like_pandas(frame):
    df = frame.copy()
    df.loc[[3, 40], "x2"] = np.nan
    df["count"] = df["count"].astype("Int64")
    df.loc[7, "count"] = pd.NA
    with pytest.warns(UserWarning, match="dropped 3 rows"):
        ref = build_design("y ~ x2 + count + (1 | g)", df)
    with pytest.warns(UserWarning, match="dropped 3 rows"):
        arrow = build_design("y ~ x2 + count + (1 | g)", pa.Table.from_pandas(df, preserve_index=False))
    np.testing.assert_array_equal(np.asarray(arrow.X), np.asarray(ref.X))
    assert arrow.dropped_rows == ref.dropped_rows == [3, 7, 40]


def test_arrow_float_columns_read_in_place(frame):
    from lmmscope.frames import as_source
    table = pa.Table.from_pandas(frame, preserve_index=False)
    column = as_source(table).numeric("x3")
    assert np.shares_memory(column, table.column("x3").chunk(0).to_numpy(zero_copy_only=True))


def test_other_objects_rejected_clearly():
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        build_design("y ~ x + (1 | g)", {"y": [1.0], "x": [2.0], "g": [1]})
