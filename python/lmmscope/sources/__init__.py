"""Sources of the per-cluster statistics beyond a pandas DataFrame in memory.

* parquet files on one machine (:mod:`.parquet`): streamed in chunks with pyarrow;
* a Dask DataFrame (:mod:`.dask`): statistics per partition on the workers.

Both feed the same two passes (:mod:`.spec`: levels, clusters, missing rows;
:mod:`.accumulate`: additive per-cluster statistics), after which selection and the
refit run on the statistics alone (:mod:`.backend`), as for data in memory.
"""

from __future__ import annotations

import os

from .dask import DaskSource, is_dask_dataframe
from .parquet import ParquetSource
from ..exceptions import InputError


def is_external(data) -> bool:
    """A path or glob of parquet files, or a Dask DataFrame."""
    return isinstance(data, (str, os.PathLike)) or is_dask_dataframe(data)


def open_source(data, chunk_rows=None):
    if is_dask_dataframe(data):
        if chunk_rows is not None:
            raise InputError("chunk_rows applies to parquet files; a Dask DataFrame is read "
                             "by partitions (repartition it to change their size)")
        return DaskSource(data)
    return ParquetSource(data, chunk_rows)


def fit_external(kind, formula, data, *, chunk_rows=None, **options):
    """``lmm_scope`` (kind="scope") or ``lmm`` (kind="lmm") on external data."""
    from ..formula.bars import has_several_terms
    from .fit import fit_lmm, fit_scope

    source = open_source(data, chunk_rows)
    if has_several_terms(formula):
        from .several_terms import fit_lmm_several_terms, fit_scope_several_terms
        fit_lmm, fit_scope = fit_lmm_several_terms, fit_scope_several_terms
    if kind == "lmm":
        return fit_lmm(source, formula, **options)
    return fit_scope(source, formula, **options)


__all__ = ["is_external", "fit_external", "open_source", "ParquetSource", "DaskSource"]
