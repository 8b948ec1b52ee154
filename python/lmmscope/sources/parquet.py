"""Parquet files on one machine: record batches streamed with pyarrow, memory bounded.

At most ``chunk_rows`` rows (of the model's columns only) are materialised at a time;
pyarrow reads a row group at a time, so files written with huge row groups cost a
row group of memory in its Arrow form.  Files are read one after the other with no
read-ahead: memory does not grow with the number or size of the files.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from ..exceptions import InputError, MissingFileError

DEFAULT_CHUNK_ROWS = 16384  # 10^6 rows x 100 columns: peak 0.78 GB (65536: 1.1 GB)


def parquet_files(path) -> list:
    """A file, a directory (every *.parquet in it) or a glob, as a sorted list of files."""
    text = os.fspath(path)
    if os.path.isdir(text):
        files = sorted(str(p) for p in Path(text).glob("*.parquet"))
        where = f"directory {text!r} holds no *.parquet files"
    elif any(ch in text for ch in "*?["):
        files = sorted(glob.glob(text))
        where = f"no file matches {text!r}"
    else:
        files = [text] if os.path.isfile(text) else []
        where = f"no such file: {text!r}"
    if not files:
        raise MissingFileError(where)
    return files


class ParquetSource:
    """Chunks of parquet files in file order, read by pyarrow.dataset."""

    kind = "parquet"

    def __init__(self, path, chunk_rows=None):
        import pyarrow.dataset as ds

        chunk_rows = DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.files = parquet_files(path)
        self.chunk_rows = chunk_rows
        try:
            self.dataset = ds.dataset(self.files, format="parquet")
        except Exception as exc:  # pyarrow's errors name the bad file
            raise InputError(f"cannot read the parquet files: {exc}") from None
        # A pandas index written along (``__index_level_0__``) is not a data column: '.'
        # must not expand to it, as it does not for the DataFrame read back.
        metadata = self.dataset.schema.pandas_metadata or {}
        index_columns = {c for c in metadata.get("index_columns", []) if isinstance(c, str)}
        self.columns = [str(name) for name in self.dataset.schema.names
                        if name not in index_columns]

    def describe(self) -> str:
        return f"{len(self.files)} parquet file(s), chunks of {self.chunk_rows} rows"

    def meta(self):
        """An empty DataFrame with the columns' pandas dtypes."""
        return self.dataset.schema.empty_table().to_pandas()

    def head(self, columns):
        """The first chunk, all of ``columns``."""
        for batch in self._batches(columns):
            return batch.to_pandas().reset_index(drop=True)

    def _batches(self, columns):
        """Record batches file by file, a row group at a time: no read-ahead, no
        pre-buffering of whole files (a dataset scan held a file and more in memory)."""
        import pyarrow.parquet as pq

        for path in self.files:
            with pq.ParquetFile(path, pre_buffer=False, buffer_size=2**20) as reader:
                for group in range(reader.num_row_groups):
                    table = reader.read_row_group(group, columns=columns)
                    yield from table.to_batches(max_chunksize=self.chunk_rows)
                    del table

    def map_combine(self, columns, func, args, combiner, progress, label):
        """combiner(func(*args, i, chunk_i)) for every chunk, one chunk in memory at a time."""
        n = 0
        for n, batch in enumerate(self._batches(columns), start=1):
            frame = batch.to_pandas().reset_index(drop=True)  # rows from 0 in every chunk
            combiner(func(*args, n - 1, frame))
            if n % 50 == 0:
                progress(f"{label}: {n} chunks done")
        progress(f"{label}: {n} chunks done")
