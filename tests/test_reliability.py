"""Issue 23: each input that gave a silent wrong answer, a raw error or a misleading
message now gives the right answer or an lmmscope error naming what is wrong."""

import os
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import lmmscope
from lmmscope import Control, LmmscopeError
from lmmscope.cli import main as cli_main
from lmmscope.exceptions import InputError
from lmmscope.simulate import seed_frame

FORMULA = "y ~ x1 + x2 + (1 | cluster)"


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(23)
    n, m = 20, 6
    N = n * m
    df = pd.DataFrame({"x1": rng.standard_normal(N), "x2": rng.standard_normal(N),
                       "x3": rng.standard_normal(N),
                       "f": rng.choice(["a", "b", "c"], size=N),
                       "cluster": np.repeat([f"c{i:02d}" for i in range(n)], m)})
    df["y"] = (1 + 2 * df.x1 - df.x3 + rng.standard_normal(n)[np.repeat(np.arange(n), m)]
               + 0.5 * rng.standard_normal(N))
    return df


def fixef(fit):
    return fit.fixef.to_numpy()


# -- 1. silent wrong answers ------------------------------------------------------------

def _write_nested(df, root):
    """Rows split over a.parquet, 2024/b.pq and a hive folder part=1/c.parquet (plus the
    files pyarrow and dask skip: _SUCCESS, .hidden)."""
    (root / "2024").mkdir(parents=True)
    df.iloc[:40].to_parquet(root / "a.parquet")
    df.iloc[40:80].to_parquet(root / "2024" / "b.pq")
    (root / "_SUCCESS").write_text("")
    (root / ".hidden.parquet").write_text("not parquet")
    return root


def test_parquet_folder_with_subfolders_read_recursively(frame, tmp_path, capsys):
    root = _write_nested(frame.iloc[:120], tmp_path / "visits")
    (root / "more").mkdir()
    frame.iloc[80:].to_parquet(root / "more" / "c.parquet")
    reference = lmmscope.lmm(FORMULA, frame)
    for fit in (lmmscope.lmm(FORMULA, str(root)), lmmscope.lmm(FORMULA, root, chunk_rows=25)):
        assert fit.mixed.nobs == len(frame)
        np.testing.assert_allclose(fixef(fit), fixef(reference), rtol=1e-7, atol=1e-9)
    for extra in ([], ["--chunk-rows", "25"]):
        assert cli_main(["fit", str(root), "--formula", FORMULA, "--k", "2", *extra]) == 0
        assert f"Number of obs: {len(frame)}" in capsys.readouterr().out


def test_hive_partitioned_folder_gives_its_key_column(frame, tmp_path):
    """The key is a factor, as pandas and dask read the folder (integer keys included)."""
    df = frame.assign(part=np.arange(len(frame)) % 3 + 1)
    df.to_parquet(tmp_path / "hive", partition_cols=["part"])
    read = pd.read_parquet(tmp_path / "hive")
    assert isinstance(read["part"].dtype, pd.CategoricalDtype)
    reference = lmmscope.lmm("y ~ x1 + part + (1 | cluster)", read)
    assert list(reference.fixef.index) == ["Intercept", "x1", "part[T.2]", "part[T.3]"]
    for chunk_rows in (None, 17):
        fit = lmmscope.lmm("y ~ x1 + part + (1 | cluster)", tmp_path / "hive", chunk_rows=chunk_rows)
        assert fit.mixed.nobs == len(df)
        np.testing.assert_allclose(fixef(fit), fixef(reference), rtol=1e-7, atol=1e-9)


def test_parquet_files_lacking_a_column_or_typed_differently_are_named(frame, tmp_path, capsys):
    (tmp_path / "lack").mkdir()
    frame.iloc[:60].to_parquet(tmp_path / "lack" / "a.parquet")
    frame.iloc[60:].drop(columns="x2").to_parquet(tmp_path / "lack" / "b.parquet")
    missing = r"column 'x2' is missing from parquet file .*b\.parquet"
    with pytest.raises(LmmscopeError, match=missing):
        lmmscope.lmm(FORMULA, tmp_path / "lack")
    for extra in ([], ["--chunk-rows", "25"]):  # the CLI no longer fills nulls and drops rows
        assert cli_main(["fit", str(tmp_path / "lack"), "--formula", FORMULA, *extra]) == 2
        assert re.search(missing, capsys.readouterr().err)
    (tmp_path / "mixed").mkdir()
    frame.iloc[:60].assign(cluster=np.repeat(np.arange(10), 6)).to_parquet(tmp_path / "mixed" / "a.parquet")
    frame.iloc[60:].to_parquet(tmp_path / "mixed" / "b.parquet")
    with pytest.raises(LmmscopeError, match=r"column 'cluster' holds int64 values in parquet file "
                       r".*a\.parquet.* but .*string values in .*b\.parquet"):
        lmmscope.lmm(FORMULA, tmp_path / "mixed")


def test_empty_parquet_file_is_named(frame, tmp_path):
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(LmmscopeError, match=r"empty\.parquet' hold no rows"):
        lmmscope.lmm(FORMULA, tmp_path / "empty.parquet")
    frame.to_parquet(tmp_path / "full.parquet")  # an empty file among others is harmless
    fit = lmmscope.lmm(FORMULA, str(tmp_path / "*.parquet"))
    np.testing.assert_allclose(fixef(fit), fixef(lmmscope.lmm(FORMULA, frame)), rtol=1e-7, atol=1e-9)


@pytest.fixture(scope="module")
def arrays(frame):
    X = frame[["x1", "x2", "x3"]]
    return X, frame.y.to_numpy(), frame.cluster.to_numpy()


@pytest.fixture(scope="module")
def estimator(arrays):
    X, y, g = arrays
    return lmmscope.LmmScope(k=2).fit(X, y, groups=g)


def test_predict_matches_dataframe_columns_by_name(estimator, arrays):
    X, _y, _g = arrays
    expected = X.to_numpy() @ estimator.coef_ + estimator.intercept_
    np.testing.assert_allclose(estimator.predict(X), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(estimator.predict(X[["x3", "x1", "x2"]]), expected,
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(LmmscopeError, match="feature names should match.*unseen at fit time: w"
                       ".*seen at fit time, yet now missing: x1"):
        estimator.predict(X.rename(columns={"x1": "w"}))
    with pytest.raises(LmmscopeError, match="yet now missing: x3"):
        estimator.predict(X[["x1", "x2"]])
    with pytest.raises(LmmscopeError, match="X has 2 features, but LmmScope is expecting 3"):
        estimator.predict(X[["x1", "x2"]].to_numpy())


@pytest.mark.parametrize("field, value, message", [
    ("singular_tol", float("nan"), "a finite number >= 0"),
    ("singular_tol", -1, "a finite number >= 0"),
    ("unit_free_z", "no", "True or False, got str"),
    ("gram_limit", -1, "an integer >= 0"),
    ("gram_limit", "big", "an integer >= 0, got str"),
    ("search_effort", -1, "an integer >= 0"),
    ("a_relative_tol", -1, "a finite number > 0"),
    ("max_a_iter", 0, "an integer >= 1"),
    ("optimizer_maxiter", 0, "an integer >= 1"),
    ("optimizer_ftol", float("inf"), "a finite number >= 0"),
    ("max_a_iter", 2.5, "an integer >= 1"),
])
def test_control_values_are_validated(field, value, message):
    with pytest.raises(LmmscopeError, match=re.escape(f"Control({field}=") + ".*" + re.escape(message)):
        Control(**{field: value})
    with pytest.raises(LmmscopeError, match=field):
        Control().updated(**{field: value})


def test_control_every_field_has_a_rule_and_r_doubles_are_integers():
    from dataclasses import fields
    from lmmscope.control import RULES, as_control
    assert [f.name for f in fields(Control)] == list(RULES)
    assert Control(gram_limit=50.0).gram_limit == 50 and type(Control(gram_limit=50.0).gram_limit) is int
    with pytest.raises(LmmscopeError, match="no field.*'gramlimit'"):
        as_control({"gramlimit": 5})


def test_arrays_front_inputs(arrays):
    """list of rows and scipy sparse X fit as the dense array; complex X, 2-D groups, Z with
    the wrong rows or no columns are errors naming them."""
    import scipy.sparse as sparse
    X, y, g = arrays
    dense = lmmscope.LmmScope(k=2).fit(X.to_numpy(), y, groups=g)
    for other in (X.to_numpy().tolist(), sparse.csr_matrix(X.to_numpy()),
                  sparse.csc_array(X.to_numpy())):
        fit = lmmscope.LmmScope(k=2).fit(other, y, groups=g)
        np.testing.assert_allclose(fit.coef_, dense.coef_, rtol=1e-12, atol=1e-12)
    fit = lmmscope.LmmScope(k=2).fit(X.to_numpy(), y, groups=g)
    np.testing.assert_allclose(fit.predict(sparse.csr_matrix(X.to_numpy())), fit.predict(X.to_numpy()),
                               rtol=1e-12, atol=1e-12)
    cases = [
        (dict(X=X.to_numpy() + 1j), "X holds complex numbers"),
        (dict(groups=np.c_[g, g]), r"groups must hold one cluster label per row \(1-D\), got shape \(120, 2\)"),
        (dict(Z=np.ones((len(y) - 1, 1))), "Z has 119 rows but X has 120"),
        (dict(Z=np.ones((len(y), 0))), "Z has no columns"),
        (dict(y=y + 0j), "the response holds complex numbers"),
        (dict(X=[[1.0, 2.0]] * 119 + [[1.0]]), "X must be a rectangular numeric array"),
        (dict(X=X.assign(t=pd.Timestamp("2020")).to_numpy()), "X must be numeric"),
        (dict(X=X.assign(s="a", t=pd.Timestamp("2020"))),
         r"X must be numeric; non-numeric column\(s\): s \(.*\), t \(datetime64"),
        (dict(y=pd.Series(y).astype(str)), "the response must be numeric, got Python objects "
         "holding string values"),
        (dict(groups=pd.Series(g, dtype="string").where(np.arange(len(g)) != 3, pd.NA)),
         r"groups contains missing values \(1 rows\)"),
        (dict(groups=pd.Series(g, dtype=object).where(np.arange(len(g)) != 3, np.nan)),
         r"groups contains missing values \(1 rows\)"),
    ]
    for change, message in cases:
        args = dict(X=X.to_numpy(), y=y, groups=g) | change
        with pytest.raises(LmmscopeError, match=message):
            lmmscope.LmmScope(k=1).fit(args.pop("X"), args.pop("y"), **args)


def test_sparse_x_too_large_for_memory_is_refused(monkeypatch):
    import scipy.sparse as sparse
    from lmmscope import checks
    monkeypatch.setattr(checks, "_free_memory_bytes", lambda: 2**20)
    with pytest.raises(LmmscopeError, match=r"X is a sparse 1000 x 1000 matrix whose dense form "
                       r"needs 0\.0 GiB, more than half of the free memory"):
        checks.as_float_matrix(sparse.eye(1000, format="csr"), "X")


@pytest.mark.parametrize("always", [{"x2"}, (c for c in ["x2"]), np.array([False, True, False]),
                                    pd.Index(["x2"]), "x2", 1, [np.int64(1)]])
def test_always_as_set_generator_mask_index_name_or_position(arrays, always):
    X, y, g = arrays
    fit = lmmscope.LmmScope(k=0, always=always).fit(X, y, groups=g)
    assert list(fit.result_.fixef.index) == ["Intercept", "x2"]


@pytest.mark.parametrize("always, message", [
    ([3], r"always= position 3 is out of range: there are 3 predictor columns in X \(positions 0\.\.2\)"),
    ([True, False], r"boolean mask must have one entry per predictor columns in X \(3\), got 2"),
    (True, "always= must name columns"),
    ([1.5], "always= entries must be column names or positions"),
    (["nope"], "always= names unknown column 'nope'"),
])
def test_always_errors_name_the_value(arrays, always, message):
    X, y, g = arrays
    with pytest.raises(LmmscopeError, match=message):
        lmmscope.LmmScope(k=0, always=always).fit(X, y, groups=g)


def test_always_intercept_with_a_data_column_named_intercept(frame):
    df = frame.assign(Intercept=frame.x3)
    formula = "y ~ x1 + x2 + Intercept + (1 | cluster)"
    with pytest.raises(LmmscopeError, match="always= 'Intercept' is ambiguous.*`Intercept`"):
        lmmscope.lmm_scope(formula, df, k=0, always=["Intercept"])
    fit = lmmscope.lmm_scope(formula, df, k=0, always=["`Intercept`"])
    assert list(fit.fixef.index) == ["Intercept", "`Intercept`"]
    X = df[["x1", "Intercept"]]
    with pytest.raises(LmmscopeError, match="ambiguous"):
        lmmscope.LmmScope(k=0, always=["Intercept"]).fit(X, df.y, groups=df.cluster)
    est = lmmscope.LmmScope(k=0, always=["`Intercept`"]).fit(X, df.y, groups=df.cluster)
    assert list(est.result_.fixef.index) == ["Intercept", "`Intercept`"]


def test_dask_fit_after_its_client_closed_or_unpickled(frame):
    """inference() needs the per-cluster blocks kept on the workers: once the Client is
    gone they are rebuilt by another statistics pass (Dask's default scheduler), giving
    the in-memory fit's table.  A LocalCluster start takes ~2 s of this test."""
    import pickle

    import dask.dataframe as dd
    import distributed
    formula = "y ~ x1 + x2 + x3 + (1 | cluster)"
    expected = lmmscope.lmm_scope(formula, frame, k=1).inference()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with distributed.Client(cluster):
            fit = lmmscope.lmm_scope(formula, dd.from_pandas(frame, npartitions=3), k=1)
            blob = pickle.dumps(fit)
    for late in (fit, pickle.loads(blob)):
        table = late.inference()
        np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-6, atol=1e-9)


def test_pickled_fit_keeps_the_intercept_of_its_inference_cache(frame):
    import pickle
    fit = lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", frame, k=1)
    table = fit.inference()
    again = pickle.loads(pickle.dumps(fit)).inference()
    np.testing.assert_allclose(again.to_numpy(), table.to_numpy(), rtol=1e-12, atol=1e-12)


# -- 2. questionable: text, levels, bool, copies of y ---------------------------------------

def test_string_dtype_is_a_factor_like_str(frame):
    as_str = lmmscope.lmm("y ~ x1 + f + (1 | cluster)", frame.assign(f=frame.f.astype(str)))
    for dtype in ("string", "object"):
        fit = lmmscope.lmm("y ~ x1 + f + (1 | cluster)", frame.assign(f=frame.f.astype(dtype)))
        assert list(fit.fixef.index) == list(as_str.fixef.index)
        np.testing.assert_allclose(fixef(fit), fixef(as_str), rtol=1e-12, atol=1e-12)
    digits = frame.assign(d=(np.arange(len(frame)) % 3).astype(str)).assign(d=lambda d: d.d.astype("string"))
    fit = lmmscope.lmm("y ~ d + (1 | cluster)", digits)  # numeric text: a factor, as R's character
    assert list(fit.fixef.index) == ["Intercept", "d[T.1]", "d[T.2]"]


def test_unused_categorical_levels_are_dropped(frame):
    used = lmmscope.lmm("y ~ f + (1 | cluster)", frame.assign(f=pd.Categorical(frame.f)))
    unused = lmmscope.lmm("y ~ f + (1 | cluster)",
                          frame.assign(f=pd.Categorical(frame.f, categories=["0", "a", "b", "c", "z"])))
    assert list(unused.fixef.index) == list(used.fixef.index) == ["Intercept", "f[T.b]", "f[T.c]"]
    np.testing.assert_allclose(fixef(unused), fixef(used), rtol=1e-12, atol=1e-12)


def test_bool_response_is_zero_one(frame):
    df = frame.assign(b=frame.y > 1)
    expected = fixef(lmmscope.lmm("b ~ x1 + (1 | cluster)", df.assign(b=df.b.astype(float))))
    for b in (df.b, df.b.astype("boolean")):
        np.testing.assert_allclose(fixef(lmmscope.lmm("b ~ x1 + (1 | cluster)", df.assign(b=b))),
                                   expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("values, message", [
    (lambda n: pd.Series([1 if i % 2 else "a" for i in range(n)], dtype=object),
     r"column 'o' \(dtype object\) holds values of several types \(mixed-integer\)"),
    (lambda n: pd.Series([1.5 if i % 2 else 2 for i in range(n)], dtype=object),
     r"column 'o' \(dtype object\) holds numbers stored as Python objects"),
    (lambda n: pd.date_range("2020-01-01", periods=n), r"column 'o' holds dates \(datetime64"),
    (lambda n: pd.to_timedelta(np.arange(n), "D"), r"column 'o' holds time spans \(timedelta64"),
    (lambda n: np.arange(n) + 1j, r"column 'o' holds complex numbers"),
])
def test_columns_formulaic_cannot_encode_are_named(frame, values, message):
    with pytest.raises(LmmscopeError, match=message):
        lmmscope.lmm("y ~ x1 + o + (1 | cluster)", frame.assign(o=values(len(frame))))


def test_a_copy_or_affine_function_of_y_among_the_predictors(frame):
    for w in (frame.y, 3 * frame.y + 1, -frame.y):
        with pytest.raises(LmmscopeError, match="predictor column\\(s\\) w are the response up to "
                           "location and scale"):
            lmmscope.lmm_scope("y ~ x1 + x2 + w + (1 | cluster)", frame.assign(w=w))
    with pytest.raises(LmmscopeError, match="w are the response"):
        lmmscope.lmm("y ~ x1 + w + (1 | cluster)", frame.assign(w=2 * frame.y))
    X = frame[["x1", "x2"]].assign(w=frame.y - 4)
    with pytest.raises(LmmscopeError, match="w are the response"):  # rows, no Gram
        lmmscope.LmmScope(k=1, a=1.0, control=Control(gram_limit=1, single_problem_rows_bytes=0)
                          ).fit(X, frame.y, groups=frame.cluster)


def test_k_on_an_exactly_aliased_design_drops_the_column_as_lmm(frame):
    rng = np.random.default_rng(5)
    df = frame.assign(w=frame.x1 + frame.x2, v=rng.standard_normal(len(frame)))
    formula = "y ~ x1 + x2 + x3 + w + v + (1 | cluster)"
    with pytest.warns(UserWarning, match="rank deficient so dropping 1 column / coefficient: w"):
        fit = lmmscope.lmm_scope(formula, df, k=5)  # every candidate: w with x1 and x2
    assert fit.dropped_columns == ["w"]
    with pytest.warns(UserWarning, match="dropping 1 column / coefficient: w"):
        reference = lmmscope.lmm(formula, df)
    np.testing.assert_allclose(fixef(fit), fixef(reference), rtol=1e-6, atol=1e-8)


# -- 3. messages -------------------------------------------------------------------------

def _no_internal_text(message: str):
    assert "__lmmscope" not in message and "\x1b" not in message and "⧛" not in message


@pytest.mark.parametrize("formula", [
    "y ~ `a``b` + (1 | cluster)",  # two backticked names with no operator
    "y ~ log(`a`b`) + (1 | cluster)",  # an unclosed backtick
    "y ~ {x1 + (1 | cluster)",
    "y ~ C(nope) + (1 | cluster)",
    "y ~ x1 + nope + (1 | cluster)",
])
def test_messages_have_no_placeholders_or_escape_codes(frame, formula):
    df = frame.assign(**{"a`b": frame.x1})
    with pytest.raises(LmmscopeError) as info:
        lmmscope.lmm(formula, df)
    _no_internal_text(str(info.value))


def test_backtick_and_unicode_names_through_dot(frame):
    df = frame[["y", "cluster"]].assign(**{"a`b": frame.x1, "ü x.1": frame.x2})
    fit = lmmscope.lmm("y ~ . + (1 | cluster)", df)
    assert list(fit.fixef.index) == ["Intercept", "a`b", "ü x.1"]
    reference = lmmscope.lmm("y ~ x1 + x2 + (1 | cluster)", frame)
    np.testing.assert_allclose(fixef(fit), fixef(reference), rtol=1e-12, atol=1e-12)


def test_polars_lazyframe(frame):
    import polars as pl
    fit = lmmscope.lmm(FORMULA, pl.from_pandas(frame).lazy())
    np.testing.assert_allclose(fixef(fit), fixef(lmmscope.lmm(FORMULA, frame)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options, message", [
    (dict(k_max=10), r"k_max = 10 exceeds the number of candidate predictors \(3\)"),
    (dict(k_max=-1), "k_max must be a non-negative integer"),
    (dict(a="cv", a_grid=[]), r"a_grid must hold at least one value of a for a='cv', got \[\]"),
    (dict(a="cv", a_grid=[1.0, -2.0]), "a_grid values must be non-negative finite numbers, got -2.0"),
    (dict(k="cv", cv_folds=50), r"cv_folds = 50 exceeds the number of clusters \(20\)"),
    (dict(cv_folds=1), "cv_folds must be an integer >= 2"),
    (dict(criterion="GIC"), "criterion must be one of gic, ebic, bic, aic"),
    (dict(a="big"), "a must be a non-negative number, None or 'cv'"),
    (dict(k=True), "k must be an integer, None or 'cv'"),
])
def test_tuning_arguments_are_named(frame, options, message):
    with pytest.raises(LmmscopeError, match=message):
        lmmscope.lmm_scope("y ~ x1 + x2 + x3 + (1 | cluster)", frame, **options)


# -- 4. property: any data frame gives the cleaned reference's fit, or an lmmscope error ----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KINDS = ["float", "int", "nullable int", "bool", "str", "string", "category", "datetime"]
NAME_PARTS = ["x", "Sepal.Length", "a b", "a`b", "ü", "élan", "x.1", "1st", "exp", "C", "y2",
              "Intercept"]


@st.composite
def frames(draw):
    """(data frame, its cleaned reference or None when a column must be refused)."""
    n_clusters, size = draw(st.integers(6, 10)), draw(st.integers(3, 6))
    n = n_clusters * size
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labels = draw(st.sampled_from(["int", "str", "float", "mixed"]))
    codes = np.repeat(np.arange(n_clusters), size)
    group = {"int": codes * 7 + 3, "str": np.array([f"g{c}" for c in codes], dtype=object),
             "float": codes + 0.5,
             "mixed": np.array([c if c % 2 else f"s{c}" for c in codes], dtype=object)}[labels]
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    names = draw(st.lists(st.sampled_from(NAME_PARTS), min_size=len(kinds), max_size=len(kinds),
                          unique=True))
    data, reference = {}, {}
    y = rng.standard_normal(n) + rng.standard_normal(n_clusters)[codes]
    missing_y = rng.random(n) < draw(st.sampled_from([0.0, 0.05]))
    for kind, name in zip(kinds, names):
        missing = rng.random(n) < draw(st.sampled_from([0.0, 0.1]))
        values = rng.standard_normal(n)
        y = y + 0.3 * values
        if kind == "float":
            col = pd.Series(np.where(missing, np.nan, values))
            ref = col
        elif kind in ("int", "nullable int"):
            ints = np.round(values * 3).astype(np.int64)
            col = (pd.Series(ints, dtype="Int64").mask(missing) if kind == "nullable int"
                   else pd.Series(np.where(missing, np.nan, ints)) if missing.any()
                   else pd.Series(ints))
            ref = col.astype(float)
        elif kind == "bool":
            flags = values > 0
            col = pd.Series(flags, dtype="boolean").mask(missing) if missing.any() else pd.Series(flags)
            ref = col.astype(float)  # formulaic's one 0/1 column, named as the column
        elif kind == "datetime":
            col = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), "D"))
            ref = None
        else:
            letters = np.array(["lo", "mid", "hi"])[np.digitize(values, [-0.5, 0.5])]
            text = pd.Series(letters, dtype=object).mask(missing)
            if kind == "category":  # an unused level first: R drops it
                col = pd.Series(pd.Categorical(text, categories=["zz", "hi", "lo", "mid"]))
                ref = col
            else:
                col = text.astype("string") if kind == "string" else text
                ref = text
        data[name], reference[name] = col, ref
    y_col = pd.Series(np.where(missing_y, np.nan, y))
    frame = pd.DataFrame({"y": y_col, **data, "g": group})
    order = draw(st.permutations(range(n)))
    shuffled = frame.iloc[list(order)]
    if draw(st.booleans()):
        shuffled = shuffled.reset_index(drop=True)
    if any(ref is None for ref in reference.values()):
        return shuffled, None
    clean = pd.DataFrame({"y": y_col, **reference, "g": pd.Series(group).astype(str)})
    clean = clean.dropna().reset_index(drop=True)
    for name in names:
        if isinstance(clean[name].dtype, pd.CategoricalDtype):
            clean[name] = clean[name].cat.remove_unused_categories()
    return shuffled, clean


def _outcome(data, select=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if select:  # the selection front too: one candidate at a fixed a
                return lmmscope.lmm_scope("y ~ . + (1 | g)", data, k=1, a=1.0)
            return lmmscope.lmm("y ~ . + (1 | g)", data)
        except LmmscopeError as exc:
            _no_internal_text(str(exc))
            return exc


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frames())
def test_any_frame_gives_the_cleaned_fit_or_an_lmmscope_error(case):
    data, clean = case
    fit = _outcome(data)  # anything but an LmmscopeError propagates and fails the test
    if clean is None:  # a column lmmscope must refuse (dates)
        assert isinstance(fit, LmmscopeError) and "holds dates" in str(fit)
        return
    reference = _outcome(clean)
    assert isinstance(fit, LmmscopeError) == isinstance(reference, LmmscopeError), (fit, reference)
    if not isinstance(fit, LmmscopeError):
        assert list(fit.fixef.index) == list(reference.fixef.index)
        assert fit.nobs == reference.nobs
        np.testing.assert_allclose(fixef(fit), fixef(reference), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(fit.mixed.sigma, reference.mixed.sigma, rtol=1e-6, atol=1e-10)
    selected, reference = _outcome(data, select=True), _outcome(clean, select=True)
    assert isinstance(selected, LmmscopeError) == isinstance(reference, LmmscopeError), \
        (selected, reference)
    if not isinstance(selected, LmmscopeError):
        assert selected.support == reference.support
        np.testing.assert_allclose(selected.coef.to_numpy(), reference.coef.to_numpy(),
                                   rtol=1e-6, atol=1e-8)


def test_predict_errors_name_columns_not_placeholders(frame):
    df = frame.assign(**{"a b": frame.f})
    fit = lmmscope.lmm("y ~ `a b` + log(abs(x1)) + (1 | cluster)", df)
    with pytest.raises(LmmscopeError, match="cannot evaluate the formula's terms on newdata: "
                       r"Unable to evaluate factor `log\(abs\(x1\)\)`") as info:
        fit.predict(df.assign(x1="t"))
    _no_internal_text(str(info.value))


def test_streamed_parquet_text_bool_and_dates_as_in_memory(frame, tmp_path):
    df = frame.assign(s=frame.f.astype("string"), b=frame.y > 1,
                      t=pd.date_range("2020-01-01", periods=len(frame)))
    df.to_parquet(tmp_path / "d.parquet")
    for formula in ("y ~ x1 + s + (1 | cluster)", "b ~ x1 + (1 | cluster)"):
        expected = lmmscope.lmm(formula, df)
        fit = lmmscope.lmm(formula, tmp_path / "d.parquet", chunk_rows=25)
        assert list(fit.fixef.index) == list(expected.fixef.index)
        np.testing.assert_allclose(fixef(fit), fixef(expected), rtol=1e-7, atol=1e-9)
    with pytest.raises(LmmscopeError, match=r"column 't' holds dates"):
        lmmscope.lmm("y ~ x1 + t + (1 | cluster)", tmp_path / "d.parquet")


def test_streamed_categorical_keeps_its_level_order_as_in_memory(frame, tmp_path):
    df = frame.assign(c=pd.Categorical(frame.f.map({"a": "lo", "b": "hi", "c": "lo"}),
                                       categories=["zz", "lo", "hi"]))
    df.to_parquet(tmp_path / "c.parquet")
    expected = lmmscope.lmm("y ~ x1 + c + (1 | cluster)", df)
    assert list(expected.fixef.index) == ["Intercept", "x1", "c[T.hi]"]  # zz unused, lo first
    fit = lmmscope.lmm("y ~ x1 + c + (1 | cluster)", tmp_path / "c.parquet", chunk_rows=25)
    assert list(fit.fixef.index) == list(expected.fixef.index)
    np.testing.assert_allclose(fixef(fit), fixef(expected), rtol=1e-7, atol=1e-9)


def test_new_data_with_text_in_a_numeric_column_is_named():
    df, _beta = seed_frame()
    m = lmmscope.lmm("y ~ x1 + x5 + (1 | cluster)", df)
    for bad in ("x1", "x5"):
        with pytest.raises(InputError, match=rf"column\(s\) '{bad}' \(str\) must hold numbers"):
            m.predict(df.assign(**{bad: "a"}))
