"""A Dask DataFrame on a 2-worker LocalCluster gives the in-memory fit."""

import dask.dataframe as dd  # the lmmscope[dask] extra: a missing install fails, not skips
import distributed
import numpy as np
import pandas as pd
import pytest
from test_sources_parquet import (FORMULA, RTOL, assert_same_fit, fit_quietly, streamed_frame,
                                  write_parts)

from lmmscope import lmm, lmm_scope
from lmmscope.sources import dask_backend


@pytest.fixture(scope="module")
def frame():
    return streamed_frame(seed=2)


def test_lmm_and_default_scheduler(frame, monkeypatch):
    # runs before the module's Client starts: Dask's default scheduler, same tasks
    with pytest.raises(ValueError):
        distributed.get_client()
    formula = "y ~ x0 + x3 + f + (1 + z1 | g)"
    mem = fit_quietly(lmm, formula, frame)
    read = []
    pieces = dask_backend.partition_pieces
    monkeypatch.setattr(dask_backend, "partition_pieces",
                        lambda *args: read.append(args[4]) or pieces(*args))
    ext = fit_quietly(lmm, formula, dd.from_pandas(frame, npartitions=3))
    assert sorted(read) == [0, 1, 2]  # the statistics pass reads each partition once
    np.testing.assert_allclose(ext.fixef.to_numpy(), mem.fixef.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ext.mixed.theta, mem.mixed.theta, rtol=RTOL)
    with pytest.raises(ValueError, match="chunk_rows applies to parquet"):
        lmm(formula, dd.from_pandas(frame, npartitions=3), chunk_rows=10)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def memory_fit(frame):
    return fit_quietly(lmm_scope, FORMULA, frame)


def test_partitions_on_two_workers_equal_memory(client, frame, memory_fit):
    ddf = dd.from_pandas(frame, npartitions=5)  # shuffled rows: clusters straddle partitions
    assert ddf.npartitions > 1
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        ext = lmm_scope(FORMULA, ddf)
    assert_same_fit(memory_fit, ext)
    assert len(client.cluster.workers) == 2
    # Z_i'X_i stayed on the workers: the client's statistics hold none of its columns,
    # and the per-cluster blocks were combined there in several buckets
    assert ext._data.stats.ZtX.shape[2] == 0 and ext._data.n_buckets == 5
    mem_table, ext_table = memory_fit.inference(terms=["x0", "x1", "f[T.lo]"]), \
        ext.inference(terms=["x0", "x1", "f[T.lo]"])
    for column in ("estimate", "std_error"):
        np.testing.assert_allclose(ext_table[column], mem_table[column], rtol=RTOL)


def test_read_parquet_and_cross_validation(client, frame, tmp_path):
    ddf = dd.read_parquet(str(write_parts(frame, tmp_path / "d", n_files=4)))
    mem = fit_quietly(lmm_scope, FORMULA, frame, k="cv", cv_folds=3)
    ext = fit_quietly(lmm_scope, FORMULA, ddf, k="cv", cv_folds=3)
    assert_same_fit(mem, ext)
    np.testing.assert_allclose(ext.path["cv_error"], mem.path["cv_error"], rtol=RTOL)
    grid = (0.5, 2.0, 8.0)
    mem = fit_quietly(lmm_scope, FORMULA, frame, a="cv", a_grid=grid, cv_folds=3)
    ext = fit_quietly(lmm_scope, FORMULA, ddf, a="cv", a_grid=grid, cv_folds=3)
    assert_same_fit(mem, ext)
    np.testing.assert_allclose(ext.a_history["cv_error"], mem.a_history["cv_error"], rtol=RTOL)




def test_missing_only_clusters_and_levels_equal_memory(client):
    from test_sources_parquet import frame_with_missing_only_clusters_and_levels

    df = frame_with_missing_only_clusters_and_levels(seed=6)
    mem = fit_quietly(lmm_scope, FORMULA, df, k="cv", cv_folds=3)
    ext = fit_quietly(lmm_scope, FORMULA, dd.from_pandas(df, npartitions=4), k="cv", cv_folds=3)
    assert_same_fit(mem, ext)


def test_categorical_of_integers_is_a_factor_as_in_memory(client):
    """pd.Categorical of ints (a hive key read by dask) is a factor, not refused as numbers
    stored as objects; the fit equals the in-memory one."""
    rng = np.random.default_rng(0)
    N = 600
    df = pd.DataFrame({"g": rng.integers(0, 30, N), "x": rng.standard_normal(N),
                       "site": pd.Categorical(rng.integers(1, 4, N))})
    df["y"] = df.x + df.site.astype(int) * 0.3 + rng.standard_normal(30)[df.g] + rng.standard_normal(N)
    mem = fit_quietly(lmm, "y ~ x + site + (1 | g)", df)
    ext = fit_quietly(lmm, "y ~ x + site + (1 | g)", dd.from_pandas(df, npartitions=3))
    assert list(ext.fixef.index) == ["Intercept", "x", "site[T.2]", "site[T.3]"]
    np.testing.assert_allclose(ext.fixef, mem.fixef, rtol=RTOL, atol=1e-10)


def test_an_error_of_a_task_on_live_buckets_is_not_taken_for_a_lost_client(client, frame,
                                                                           monkeypatch):
    """Only lost buckets make the statistics pass run again; a task's own error reaches
    the caller as it is."""
    fit = fit_quietly(lmm_scope, FORMULA, dd.from_pandas(frame, npartitions=3))
    passes = []
    monkeypatch.setattr(dask_backend.DaskStatsBackend, "_rebuilt_buckets",
                        lambda self: passes.append(1) or pytest.fail("rebuilt live buckets"))

    def broken(bucket, beta):
        raise RuntimeError("a bug in a worker task")

    monkeypatch.setattr(dask_backend, "cluster_Zt_Xbeta", broken)
    with pytest.raises(RuntimeError, match="a bug in a worker task"):
        fit.inference()
    assert passes == []
