"""Parquet files on one machine: record batches streamed with pyarrow, memory bounded.

At most ``chunk_rows`` rows (of the model's columns only) are materialised at a time;
pyarrow reads a row group at a time, so files written with huge row groups cost a
row group of memory in its Arrow form.  Files are read one after the other with no
read-ahead: memory does not grow with the number or size of the files.

A directory is read as pyarrow and dask read one: recursively, every file with a
parquet suffix (or the parquet magic bytes) whose name does not start with '.' or '_'
(``_SUCCESS``, ``_metadata``, ``.crc`` files), and folders named ``key=value`` (hive
partitioning) give every row of the files under them a column ``key``.  Each file's
schema is read first: a model column missing from a file, or text in one file and
numbers in another, is an error naming both files (pyarrow would fill nulls, or fail
with a comparison of mixed types later).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from urllib.parse import unquote

from ..exceptions import InputError, MissingFileError

DEFAULT_CHUNK_ROWS = 16384  # 10^6 rows x 100 columns: peak 0.78 GB (65536: 1.1 GB)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _is_parquet_file(path: Path) -> bool:
    if path.name.startswith((".", "_")) or not path.is_file():
        return False
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:  # a parquet file without the suffix (some writers omit it)
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def _files_under(directory: Path) -> list:
    """Parquet files anywhere under ``directory`` (hidden and '_' folders skipped)."""
    found = []
    for root, folders, names in os.walk(directory):
        folders[:] = sorted(f for f in folders if not f.startswith((".", "_")))
        found += [Path(root) / n for n in sorted(names) if _is_parquet_file(Path(root) / n)]
    return found


def parquet_files(path) -> list:
    """A file, a directory (read recursively) or a glob, as a list of files in path order."""
    text = os.fspath(path)
    if os.path.isdir(text):
        files = [str(p) for p in _files_under(Path(text))]
        where = (f"{text!r} is a directory without parquet files: it holds no *.parquet, "
                 "*.pq or *.parq file, nor do its subfolders")
    elif any(ch in text for ch in "*?["):
        files = []
        for match in sorted(glob.glob(text, recursive=True)):
            files += ([str(p) for p in _files_under(Path(match))] if os.path.isdir(match)
                      else [match])
        where = f"no file matches {text!r}"
    else:
        files = [text] if os.path.isfile(text) else []
        where = f"no such file: {text!r}"
    if not files:
        raise MissingFileError(where)
    return files


def hive_partitions(files, root) -> list:
    """Per file, the ``key=value`` folders between ``root`` and the file, as a dict."""
    out = []
    for path in files:
        parts = Path(os.path.relpath(path, root)).parts[:-1] if root else ()
        keys = {}
        for part in parts:
            if "=" in part:
                key, value = part.split("=", 1)
                keys[unquote(key)] = None if value == HIVE_NULL else unquote(value)
        out.append(keys)
    if out and any(set(keys) != set(out[0]) for keys in out):
        bad = next(i for i, keys in enumerate(out) if set(keys) != set(out[0]))
        raise InputError(f"parquet file {files[bad]!r} lies under the partition folders "
                         f"{sorted(out[bad]) or 'none'}, file {files[0]!r} under "
                         f"{sorted(out[0]) or 'none'}: every file must be partitioned by the "
                         "same key=value folders")
    return out


def _partition_type(values):
    """pyarrow's inference for hive partition values: integers if all are, else text."""
    import pyarrow as pa
    present = [v for v in values if v is not None]
    try:
        [int(v) for v in present]
        return pa.int64() if present else pa.string()
    except ValueError:
        return pa.string()


def type_family(arrow_type) -> str:
    """What a column's values are for a model: numbers, bool, text, time, or the type."""
    import pyarrow.types as pat
    if pat.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pat.is_integer(arrow_type) or pat.is_floating(arrow_type) or pat.is_decimal(arrow_type):
        return "numbers"
    if pat.is_boolean(arrow_type):
        return "bool"
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type):
        return "text"
    if pat.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _root_of(text: str):
    """The folder hive partitions are read below: the directory itself, or a glob's
    fixed leading folder; None for a single file."""
    if os.path.isdir(text):
        return text
    cut = min((text.index(ch) for ch in "*?[" if ch in text), default=None)
    return None if cut is None else os.path.dirname(text[:cut]) or "."


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ParquetSource:
    """Chunks of parquet files in file order, read by pyarrow."""

    kind = "parquet"

    def __init__(self, path, chunk_rows=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        chunk_rows = DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.files = parquet_files(path)
        self.chunk_rows = chunk_rows
        self.schemas, n_rows, index_columns = [], 0, set()
        for file in self.files:
            try:
                metadata = pq.read_metadata(file)
                schema = metadata.schema.to_arrow_schema()
            except Exception as exc:  # pyarrow's own error types, for any unreadable file
                raise InputError(f"cannot read {file!r} as parquet: {_one_line(exc)}") from None
            self.schemas.append(schema)
            n_rows += metadata.num_rows
            # A pandas index written along (``__index_level_0__``) is not a data column:
            # '.' must not expand to it, as it does not for the DataFrame read back.
            index_columns |= {c for c in (schema.pandas_metadata or {}).get("index_columns", [])
                              if isinstance(c, str)}
        if n_rows == 0:
            raise InputError(f"the parquet data {os.fspath(path)!r} hold no rows "
                             f"({len(self.files)} file(s), every one empty)")
        types = {}
        for schema in self.schemas:
            for fld in schema:
                if fld.name not in index_columns and (
                        fld.name not in types or pa.types.is_null(types[fld.name])):
                    types[fld.name] = fld.type
        # hive folders key=value: a column of the rows beneath (a column in the files wins)
        keys = hive_partitions(self.files, _root_of(os.fspath(path)))
        names = [key for key in keys[0] if key not in types]
        self.partitions = []
        for name in names:
            types[name] = _partition_type([k[name] for k in keys])
        for k in keys:
            self.partitions.append({
                name: (None if k[name] is None else
                       int(k[name]) if pa.types.is_integer(types[name]) else k[name])
                for name in names})
        self.types = types
        self.columns = list(types)
        self._checked = set()

    def describe(self) -> str:
        return f"{len(self.files)} parquet file(s), chunks of {self.chunk_rows} rows"

    def meta(self):
        """An empty DataFrame with the columns' pandas dtypes."""
        import pyarrow as pa
        return pa.schema(list(self.types.items())).empty_table().to_pandas()

    def check_columns(self, columns) -> None:
        """Every file holds every one of ``columns``, with values of one kind (numbers,
        text, bool ...) across files: else an error naming the column and the files."""
        for name in columns:
            if name in self._checked or name in self.partitions[0]:
                continue
            having = [(f, s.field(name).type) for f, s in zip(self.files, self.schemas)
                      if name in s.names]
            lacking = [f for f, s in zip(self.files, self.schemas) if name not in s.names]
            if lacking:
                raise InputError(f"column {name!r} is missing from parquet file {lacking[0]!r}"
                                 + (f" ({len(lacking)} files lack it)" if len(lacking) > 1
                                    else "") + f"; file {having[0][0]!r} has it")
            family = {}
            for file, arrow_type in having:
                family.setdefault(type_family(arrow_type), (file, arrow_type))
            family.pop("null", None)
            if len(family) > 1:
                (f1, t1), (f2, t2) = list(family.values())[:2]
                raise InputError(f"column {name!r} holds {t1} values in parquet file {f1!r} but "
                                 f"{t2} values in {f2!r}; give it one type in every file")
            self._checked.add(name)

    def head(self, columns):
        """The first chunk, all of ``columns``."""
        for batch in self._batches(columns):
            return batch.to_pandas().reset_index(drop=True)
        return self.meta()[list(columns)]

    def _batches(self, columns):
        """Record batches file by file, a row group at a time: no read-ahead, no
        pre-buffering of whole files (a dataset scan held a file and more in memory)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(columns)
        self.check_columns(columns)
        for path, keys in zip(self.files, self.partitions):
            in_file = [c for c in columns if c not in keys]
            with pq.ParquetFile(path, pre_buffer=False, buffer_size=2**20) as reader:
                for group in range(reader.num_row_groups):
                    table = reader.read_row_group(group, columns=in_file)
                    if len(in_file) < len(columns):
                        table = pa.Table.from_arrays(
                            [pa.repeat(pa.scalar(keys[c], self.types[c]), table.num_rows)
                             if c in keys else table.column(c) for c in columns], names=columns)
                    yield from table.to_batches(max_chunksize=self.chunk_rows)
                    del table

    def read_table(self):
        """Every row and column as one pyarrow Table (types promoted across files)."""
        import pyarrow as pa
        tables = [pa.Table.from_batches([b]) for b in self._batches(self.columns)]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"cannot combine the parquet files: {_one_line(exc)}") from None

    def map_combine(self, columns, func, args, combiner, progress, label):
        """combiner(func(*args, i, chunk_i)) for every chunk, one chunk in memory at a time."""
        n = 0
        for n, batch in enumerate(self._batches(columns), start=1):
            frame = batch.to_pandas().reset_index(drop=True)  # rows from 0 in every chunk
            combiner(func(*args, n - 1, frame))
            if n % 50 == 0:
                progress(f"{label}: {n} chunks done")
        progress(f"{label}: {n} chunks done")
