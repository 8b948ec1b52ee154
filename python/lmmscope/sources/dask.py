"""A Dask DataFrame: statistics per partition on the workers, summed on the client.

Each partition goes through the same code as a parquet chunk (``spec.arrays`` then
``compute_cluster_stats``) in a task of its own; the scheduler runs the tasks (a
``distributed.Client`` when one is active, so the dashboard shows them, else Dask's
default scheduler).  A partition's result holds only the clusters present in it, so
clusters straddling partitions are combined by cluster key on the client, as each
result arrives: the client holds the per-cluster blocks Z_i'Z_i, Z_i'X_i, Z_i'y_i of
all clusters (n_groups * q * (p + q + 1) floats, the size of the in-memory fit's
statistics) and the p x p Gram, never the rows; every later step (the whitened Gram of
each ``a``, cross-validation, the REML refit) runs there from these statistics.
"""

from __future__ import annotations

from functools import partial


def is_dask_dataframe(data) -> bool:
    module = type(data).__module__ or ""
    return module.startswith("dask") and hasattr(data, "to_delayed") and hasattr(data, "columns")


def _apply(mapper, index, frame):
    return mapper(index, frame)


class DaskSource:
    """Partitions of a dask.dataframe.DataFrame."""

    kind = "dask"

    def __init__(self, ddf):
        self.ddf = ddf
        self.columns = [str(c) for c in ddf.columns]
        if len(set(self.columns)) != len(self.columns) or any(
                not isinstance(c, str) for c in ddf.columns):
            raise ValueError("the Dask DataFrame's columns must be distinct strings")

    def describe(self) -> str:
        return f"Dask DataFrame with {self.ddf.npartitions} partitions"

    def _client(self):
        try:
            from distributed import get_client
            return get_client()
        except (ImportError, ValueError):
            return None

    def map_combine(self, columns, mapper, combiner, progress, label):
        import dask

        parts = self.ddf[columns].to_delayed()
        tasks = [dask.delayed(partial(_apply, mapper))(i, part)
                 for i, part in enumerate(parts)]
        client = self._client()
        total = len(tasks)
        if client is None:
            results = dask.compute(*tasks)
            for done, result in enumerate(results, start=1):
                combiner(result)
            progress(f"{label}: {total} partitions done")
            return
        from distributed import as_completed

        futures = client.compute(tasks)
        step = max(1, total // 10)
        for done, (future, result) in enumerate(as_completed(futures, with_results=True), start=1):
            combiner(result)
            future.release()
            if done % step == 0 or done == total:
                progress(f"{label}: {done}/{total} partitions done")
