"""Several random-effects terms on parquet files and a Dask DataFrame give the in-memory
fit: the statistics (Z'Z sparse, Z'X, Z'y, X'X, X'y, y'y) summed over chunks go to the
same refit and selection.  Measured agreement with memory (the four lmm formulas below,
REML and ML, parquet chunks of 17, 37, 100 and 16384 rows, Dask with 2, 3 and 5
partitions: 56 cases): logLik 6e-16 relative, sigma 1.1e-15, theta 5e-15 (absolute and
relative), fixef 9e-15 and random effects 1e-14 relative to the largest.  The 1e-16
differences of the sums can send L-BFGS-B on another path (it stopped up to 8e-8 apart
in theta), but the Newton polish after it takes both to the optimum to rounding; hence
OPT_RTOL, 100x the worst."""

import dask.dataframe as dd  # the lmmscope[dask] extra: a missing install fails, not skips
import numpy as np
import pandas as pd
import pytest
from test_sources_parquet import fit_quietly, write_parts

from lmmscope import lmm, lmm_scope
from lmmscope.exceptions import InputError, MissingFileError
from lmmscope.sources import ParquetSource
from lmmscope.sources.several_terms import (SPARSE_ENTRY_BYTES, StatisticsSum,
                                            _chunk_statistics, read_model)

RTOL, ATOL = 1e-10, 1e-12  # logLik, the selection's coefficients at a fixed a
OPT_RTOL = 1e-12  # what the (RE)ML optimum fixes: theta, and fixef and ranef through it
CANDIDATES = " + ".join(f"x{j}" for j in range(6))


def several_terms_frame(seed=3):
    """Subjects x items crossed, subjects in classes in schools (class labels repeat
    across schools: nested only as school/cls), a factor, a slope, two NA rows, rows
    shuffled so that every level straddles files and chunks."""
    rng = np.random.default_rng(seed)
    n_subj, n_item = 24, 12
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    N = subj.size
    df = pd.DataFrame(rng.standard_normal((N, 6)), columns=[f"x{j}" for j in range(6)])
    df["z"] = rng.standard_normal(N)
    df["f"] = pd.Categorical(rng.choice(["mid", "lo", "hi"], N), categories=["mid", "lo", "hi"])
    school, cls = subj % 6, subj // 6
    u_subj, u_slope = rng.standard_normal(n_subj), 0.5 * rng.standard_normal(n_subj)
    u_item, u_school = 0.7 * rng.standard_normal(n_item), 0.8 * rng.standard_normal(6)
    df["y"] = (2 + df.x0 - 0.8 * df.x1 + 0.5 * df.z + (df.f == "hi") + u_subj[subj]
               + u_slope[subj] * df.z + u_item[item] + u_school[school]
               + rng.standard_normal(N))
    df["subj"] = np.array([f"s{i:02d}" for i in range(n_subj)])[subj]
    df["item"] = item
    df["school"] = np.array([f"sch{i}" for i in range(6)])[school]
    df["cls"] = cls
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    df.loc[[4, 9], "x3"] = np.nan
    return df


@pytest.fixture(scope="module")
def frame():
    return several_terms_frame()


@pytest.fixture(scope="module")
def folder(frame, tmp_path_factory):
    return write_parts(frame, tmp_path_factory.mktemp("several"), n_files=3, row_group_size=40)


def assert_same_refit(mem, ext):
    """logLik, fixef, theta, sigma, every term's random effects (same levels, same order)."""
    assert ext.loglik == pytest.approx(mem.loglik, rel=RTOL)
    assert ext.fixef.index.tolist() == mem.fixef.index.tolist()
    np.testing.assert_allclose(ext.fixef.to_numpy(), mem.fixef.to_numpy(), rtol=OPT_RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(ext.theta, mem.theta, rtol=OPT_RTOL, atol=ATOL)
    assert ext.sigma == pytest.approx(mem.sigma, rel=OPT_RTOL)
    assert ext.nobs == mem.nobs and ext.ngroups == mem.ngroups
    assert list(ext.ranef) == list(mem.ranef)
    for name, table in mem.ranef.items():
        pd.testing.assert_index_equal(ext.ranef[name].index, table.index)
        assert ext.ranef[name].columns.tolist() == table.columns.tolist()
        np.testing.assert_allclose(ext.ranef[name].to_numpy(), table.to_numpy(), rtol=OPT_RTOL,
                                   atol=OPT_RTOL * np.abs(table.to_numpy()).max())


LMM_FORMULAS = [
    "y ~ x0 + x1 + f + (1 | subj) + (1 | item)",  # crossed
    "y ~ x0 + x1 + x3 + (1 | school/cls)",  # nested a/b, NA rows dropped
    "y ~ x0 + z + (z || subj) + (1 | item)",  # uncorrelated slope, crossed
    "y ~ x0 + (0 + f | item) + (1 | subj)",  # a factor as random-effect columns
]


@pytest.mark.parametrize("formula", LMM_FORMULAS)
def test_lmm_on_parquet_chunks_equals_memory(frame, folder, formula):
    mem = fit_quietly(lmm, formula, frame)
    ext = fit_quietly(lmm, formula, str(folder), chunk_rows=37)  # chunks straddle row groups
    assert_same_refit(mem, ext)
    new = frame.head(7)
    np.testing.assert_allclose(ext.predict(new, level=1), mem.predict(new, level=1),
                               rtol=OPT_RTOL, atol=ATOL)


def test_glob_file_ml_and_the_rows_methods(frame, folder):
    formula = LMM_FORMULAS[0]
    mem = fit_quietly(lmm, formula, frame, method="ML")
    ext = fit_quietly(lmm, formula, str(folder / "part*.parquet"), method="ML")
    assert ext.method == "ML"
    assert_same_refit(mem, ext)
    with pytest.raises(NotImplementedError, match="fitted.*predict\\(newdata"):
        ext.fitted()
    with pytest.raises(NotImplementedError, match="newdata"):
        ext.predict()
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        lmm(LMM_FORMULAS[1], str(folder))
    with pytest.raises(InputError, match="missing values.*na_action='fail'"):
        lmm(LMM_FORMULAS[1], str(folder), na_action="fail")


def test_lmm_scope_crossed_on_parquet_equals_memory(frame, folder):
    formula = f"y ~ {CANDIDATES} + (1 | subj) + (1 | item)"
    mem = fit_quietly(lmm_scope, formula, frame)
    ext = fit_quietly(lmm_scope, formula, str(folder), chunk_rows=50)
    assert mem.support == ["x0", "x1"]  # the simulated signal is found
    assert ext.support == mem.support and ext.k == mem.k
    # a comes from the REML refit's theta (a=None), and the coefficients from a
    assert ext.a == pytest.approx(mem.a, rel=2 * OPT_RTOL)
    np.testing.assert_allclose(ext.coef.to_numpy(), mem.coef.to_numpy(), rtol=2 * OPT_RTOL,
                               atol=ATOL)
    assert_same_refit(mem, ext)
    with pytest.raises(InputError, match="crossed"):
        ext.inference()
    with pytest.raises(InputError, match="whole clusters"):  # before reading the data
        lmm_scope(formula, str(folder), k="cv")


def test_lmm_scope_nested_inference_by_a_third_pass_equals_memory(frame, folder):
    formula = f"y ~ {CANDIDATES} + (1 | school/cls)"
    mem = fit_quietly(lmm_scope, formula, frame, k=2, a=0.5)
    ext = fit_quietly(lmm_scope, formula, str(folder), k=2, a=0.5)
    assert ext.support == mem.support == ["x0", "x1"]
    assert_same_refit(mem, ext)
    ours, theirs = ext.inference(), mem.inference()
    for column in ("estimate", "std_error", "p_value"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-9, atol=1e-12)


def test_dask_partitions_equal_memory(frame):
    ddf = dd.from_pandas(frame, npartitions=3)  # shuffled rows: levels straddle partitions
    formula = LMM_FORMULAS[2]
    assert_same_refit(fit_quietly(lmm, formula, frame), fit_quietly(lmm, formula, ddf))
    formula = f"y ~ {CANDIDATES} + (1 | school/cls)"
    mem = fit_quietly(lmm_scope, formula, frame, k=2, a=0.5)
    ext = fit_quietly(lmm_scope, formula, ddf, k=2, a=0.5)
    assert ext.support == mem.support
    np.testing.assert_allclose(ext.coef.to_numpy(), mem.coef.to_numpy(), rtol=RTOL, atol=ATOL)
    assert_same_refit(mem, ext)
    np.testing.assert_allclose(ext.inference()["std_error"], mem.inference()["std_error"],
                               rtol=1e-9)


def test_clear_errors(frame, folder, tmp_path):
    formula = LMM_FORMULAS[0]
    with pytest.raises(MissingFileError, match="no such file"):
        lmm(formula, str(tmp_path / "absent.parquet"))
    with pytest.raises(InputError, match="unknown column.*klass.*grouping factor"):
        lmm("y ~ x0 + (1 | subj) + (1 | klass)", str(folder))
    odd = tmp_path / "odd"
    odd.mkdir()
    frame.iloc[:100].to_parquet(odd / "a.parquet")
    frame.iloc[100:].drop(columns="item").to_parquet(odd / "b.parquet")
    with pytest.raises(InputError, match="column 'item' is missing from parquet file .*b.parquet"):
        lmm(formula, str(odd))
    with pytest.raises(InputError, match="chunk_rows must be a positive integer"):
        lmm(formula, str(folder), chunk_rows=0)


def test_statistics_too_large_for_memory_are_refused_naming_the_factor(folder):
    source = ParquetSource(str(folder))
    # the bound: Z'X (36 x 5 doubles) and Z'Z's entries (24 + 12 diagonal, 2 x 24 x 12 pairs)
    bound = (24 + 12 + 2 * 24 * 12) * SPARSE_ENTRY_BYTES + 36 * 5 * 8
    with pytest.raises(InputError, match="grouping factor 'subj' has 24 levels"):
        read_model(source, LMM_FORMULAS[0], "omit", lambda message: None, limit=bound - 1)
    model = read_model(source, LMM_FORMULAS[0], "omit", lambda message: None, limit=bound)
    assert model.stats.ZtZ.nnz <= 24 + 12 + 2 * 24 * 12


def test_chunks_z_crossproducts_merged_in_batches_sum_exactly(frame, folder):
    """Z'Z of many chunks merged in batches (after every chunk here) equals one chunk's."""
    spec = read_model(ParquetSource(str(folder)), LMM_FORMULAS[2], "omit",
                      lambda message: None).spec
    total = StatisticsSum(spec)
    total.merge_entries = 0
    for start in range(0, len(frame), 23):
        total.add(_chunk_statistics(spec, start, frame.iloc[start:start + 23]))
    whole = _chunk_statistics(spec, 0, frame).stats.ZtZ
    merged = total.statistics(spec).ZtZ
    assert merged.nnz == whole.nnz
    np.testing.assert_allclose(merged.toarray(), whole.toarray(), rtol=1e-14, atol=1e-12)


def test_nesting_is_judged_across_chunks(frame, tmp_path):
    """One row a chunk: a level seen with two outer levels in two chunks makes the terms
    crossed (inference refused), as in memory."""
    path = tmp_path / "head.parquet"
    frame.head(60).to_parquet(path)
    for formula, nested in (("y ~ x0 + (1 | subj) + (1 | item)", False),
                            ("y ~ x0 + (1 | school/cls)", True)):
        model = read_model(ParquetSource(str(path), chunk_rows=1), formula, "omit",
                           lambda message: None)
        assert model.nested is nested
        memory = fit_quietly(lmm_scope, formula, frame.head(60), k=1, a=0.5)
        assert (memory._data.outermost_factor() is not None) is nested


def test_an_interaction_of_columns_stored_as_int_in_one_file_and_float_in_another(frame, tmp_path):
    """a:b and a/b label each part by its values' text (R's as.character of the levels):
    item stored as int64 in one file and float64 in another (2 and 2.0) is one factor, so
    (1 | school/item) has the in-memory fit's levels and optimum (it split each level of
    item:school in two before).  Measured: as the other cases, to rounding."""
    formula = "y ~ x0 + (1 | school/item)"
    half = len(frame) // 2
    frame.iloc[:half].to_parquet(tmp_path / "a.parquet", index=False)
    floats = frame.iloc[half:].astype({"item": float})
    floats.to_parquet(tmp_path / "b.parquet", index=False)
    mem = fit_quietly(lmm, formula, frame)
    assert mem.ngroups == {"item:school": 72, "school": 6}
    assert "3:sch1" in mem.ranef["item:school"].index
    for data in (str(tmp_path / "*.parquet"), dd.read_parquet(str(tmp_path / "*.parquet"))):
        assert_same_refit(mem, fit_quietly(lmm, formula, data))
