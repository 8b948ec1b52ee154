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
    df = frame.assign(part=np.arange(len(frame)) % 3)
    df.to_parquet(tmp_path / "hive", partition_cols=["part"])
    reference = lmmscope.lmm("y ~ x1 + part + (1 | cluster)", df)
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
