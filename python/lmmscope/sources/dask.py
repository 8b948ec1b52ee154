"""A Dask DataFrame: every pass runs as Dask tasks, one per partition.

Each partition goes through the same code as a parquet chunk (``spec.arrays`` then
``compute_cluster_stats``).  The tasks go to the active ``distributed.Client`` when
there is one (so the dashboard shows them as usual), else to Dask's default
scheduler.  Pass 1 (levels, cluster labels, missing rows) returns small summaries to
the client; pass 2 keeps the per-cluster blocks on the workers, combined by cluster
key there (:mod:`.dask_backend`).
"""

from __future__ import annotations

from ..exceptions import InputError


def is_dask_dataframe(data) -> bool:
    module = type(data).__module__ or ""
    return module.startswith("dask") and hasattr(data, "to_delayed") and hasattr(data, "columns")


class DaskSource:
    """Partitions of a dask.dataframe.DataFrame."""

    kind = "dask"

    def __init__(self, ddf):
        self.ddf = ddf
        self.columns = [str(c) for c in ddf.columns]
        if len(set(self.columns)) != len(self.columns) or any(
                not isinstance(c, str) for c in ddf.columns):
            raise InputError("the Dask DataFrame's columns must be distinct strings")

    def describe(self) -> str:
        return f"Dask DataFrame with {self.ddf.npartitions} partitions"

    def _client(self):
        try:
            from distributed import get_client
            return get_client()
        except (ImportError, ValueError):
            return None

    def meta(self):
        return self.ddf._meta

    def head(self, columns):
        """The first partition's first rows."""
        from .spec import PROTOTYPE_ROWS

        return self.ddf[columns].partitions[0].compute().head(4 * PROTOTYPE_ROWS)

    def partitions(self, columns):
        return self.ddf[columns].to_delayed()

    def persist(self, items):
        client = self._client()
        if client is not None:
            return client.persist(items)
        import dask

        return list(dask.persist(*items))

    def compute(self, *items):
        client = self._client()
        if client is not None:
            return tuple(client.gather(client.compute(list(items))))
        import dask

        return dask.compute(*items)

    def share(self, value):
        """One copy of ``value`` for every task (the model spec, the cluster labels):
        scattered to the workers once, not embedded in each task of the graph."""
        client = self._client()
        if client is not None:
            return client.scatter(value, broadcast=True, hash=False)
        import dask

        return dask.delayed(value, traverse=False)

    def map_combine(self, columns, func, args, combiner, progress, label):
        """combiner(func(*args, i, partition_i)) for every partition, as results arrive."""
        import dask

        parts = self.ddf[columns].to_delayed()
        shared = [self.share(a) for a in args]
        tasks = [dask.delayed(func)(*shared, i, part) for i, part in enumerate(parts)]
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
