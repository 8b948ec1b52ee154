"""Tables of any library, read as named numpy columns without a trip through Python objects.

The formula front needs little from a table: its column names, each numeric column as
a float64 array (a view of the table's memory where the library allows), a small
pandas frame of the few columns formulaic must encode (factors, transforms), and for
pandas the chance to take a whole run of float columns as one 2-D view.  pandas
frames are read as they are; polars, pyarrow and anything speaking the Arrow C stream
(``__arrow_c_stream__``) or the dataframe interchange protocol (``__dataframe__``)
become a pyarrow Table, whose numeric columns numpy reads in place.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from .control import DEFAULT_PERFORMANCE, Performance
from .exceptions import InputError, InputTypeError

ACCEPTED = ("a pandas DataFrame (or a polars or pyarrow table, or an object with "
            "__arrow_c_stream__ or __dataframe__)")


def as_source(data, what: str = "data", performance: Performance = DEFAULT_PERFORMANCE):
    """A :class:`PandasSource` or :class:`ArrowSource` over ``data``; it carries
    ``performance`` (the block sizes its readers use) to them."""
    if isinstance(data, pd.DataFrame):
        return PandasSource(data, performance)
    table = _as_arrow_table(data)
    if table is None:
        raise InputTypeError(f"{what} must be {ACCEPTED}; got {type(data).__name__}")
    return ArrowSource(table, performance)


def _as_arrow_table(data):
    module = type(data).__module__.split(".")[0]
    if module not in ("pyarrow", "polars") and not hasattr(data, "__arrow_c_stream__") \
            and not hasattr(data, "__dataframe__"):
        return None
    import pyarrow as pa
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if module == "polars" and hasattr(data, "collect") and not hasattr(data, "to_arrow"):
        data = data.collect()  # a LazyFrame: its query runs here, once
    try:
        if module == "polars" and hasattr(data, "to_arrow"):
            return data.to_arrow()
        if hasattr(data, "__arrow_c_stream__"):
            return pa.table(data)
        from pyarrow.interchange import from_dataframe
        return from_dataframe(data)
    except Exception as exc:  # each library raises its own types
        raise InputTypeError(f"cannot read the {type(data).__name__} as a table: "
                             + " ".join(str(exc).split())) from None


def _as_text(names: list) -> list:
    return names if set(map(type, names)) <= {str} else [str(name) for name in names]


def _repeated(names: list, position: dict) -> set:
    """Names given to several columns (none when every name has its own position)."""
    return set() if len(position) == len(names) else set(_duplicates(names))


def _column_names(index: pd.Index) -> list:
    names = index.tolist()
    if isinstance(index.dtype, pd.StringDtype) and not index.hasnans:
        return names  # pandas 3's str index: every label a str already
    return _as_text(names)


def _dtype_flags(df: pd.DataFrame):
    """(numeric, float64) boolean arrays by position.  From pandas' blocks (each holds
    many columns of one dtype) where they cover every column once; else per column,
    each distinct dtype classified once."""
    n = df.shape[1]
    numeric, float64 = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    try:
        blocks = [(block.dtype, block.mgr_locs.as_array) for block in df._mgr.blocks]
    except AttributeError:  # not pandas' block manager
        blocks = []
    if blocks and np.array_equal(np.bincount(np.concatenate([at for _, at in blocks]),
                                             minlength=n), np.ones(n, dtype=np.intp)):
        for dtype, at in blocks:
            numeric[at], float64[at] = _numeric_dtype(dtype), dtype == np.float64
        return numeric, float64
    dtypes = df.dtypes.tolist()
    kinds = list(set(dtypes))
    code = dict(zip(kinds, range(len(kinds))))
    at = np.fromiter(map(code.__getitem__, dtypes), dtype=np.intp, count=n)
    return (np.array([_numeric_dtype(dt) for dt in kinds], dtype=bool)[at],
            np.array([dt == np.float64 for dt in kinds], dtype=bool)[at])


def _duplicates(names) -> list:
    seen, dup = set(), []
    for name in names:
        if name in seen and name not in dup:
            dup.append(name)
        seen.add(name)
    return dup


class PandasSource:
    """Columns of a pandas DataFrame (names as strings, as formulas see them)."""

    def __init__(self, df: pd.DataFrame, performance: Performance = DEFAULT_PERFORMANCE):
        self.df = df
        self.performance = performance
        # in one call: pandas 3's Arrow-backed index is slow element by element
        self.columns = _column_names(df.columns)
        self.n_rows = df.shape[0]
        self.position = dict(zip(self.columns, range(len(self.columns))))  # last one if repeated
        self.duplicated = _repeated(self.columns, self.position)
        # per position, as arrays: 10^4 columns share a few dtypes, classified once each
        self._numeric_at, self._float64_at = _dtype_flags(df)
        self.non_numeric = [self.columns[j] for j in np.flatnonzero(~self._numeric_at)]
        self._last_run = (None, None, None)

    @property
    def index(self):
        return self.df.index

    def is_numeric(self, name: str) -> bool:
        return bool(self._numeric_at[self.position[name]])

    def is_bool(self, name: str) -> bool:
        return is_bool_dtype(self._series(name).dtype)

    def positions(self, names) -> np.ndarray:
        """Each column's position in the table (the last one of a repeated name)."""
        return np.fromiter(map(self.position.__getitem__, names), dtype=np.intp, count=len(names))

    def _series(self, name: str) -> pd.Series:
        return self.df.iloc[:, self.position[name]]

    def numeric(self, name: str) -> np.ndarray:
        """float64 values, NaN where missing (a view when the column is float64 already)."""
        return self._numeric_at_position(self.position[name])

    def _numeric_at_position(self, j: int) -> np.ndarray:
        s = self.df.iloc[:, j]
        if s.dtype == np.float64:
            return s.to_numpy()
        return self._as_float(first=j, last=j + 1)[:, 0]

    def _as_float(self, first: int, last: int) -> np.ndarray:
        """Columns first..last-1 as float64, NaN where missing; a column that is not numbers
        (new data for a model fitted on numbers, say) is an error naming it."""
        try:
            return self.df.iloc[:, first:last].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            dtypes = self.df.dtypes
            bad = [f"{str(self.df.columns[j])!r} ({dtypes.iloc[j]})" for j in range(first, last)
                   if not (pd.api.types.is_numeric_dtype(dtypes.iloc[j])
                           or is_bool_dtype(dtypes.iloc[j]))]
            raise InputError(f"column(s) {', '.join(bad) or 'in this range'} must hold numbers, "
                             "as when the model was fitted") from None

    def column_runs(self, names, positions=None):
        """(index in ``names``, N x r float64 array) for each run of neighbouring columns;
        a run inside one float64 block of the frame is a view of it, not a copy.
        ``positions``: :meth:`positions` of ``names``, when known already."""
        pos = self.positions(names) if positions is None else positions
        if not len(pos):
            return
        cuts = np.flatnonzero(np.diff(pos) != 1) + 1
        for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(pos)]):
            first, last = int(pos[start]), int(pos[end - 1]) + 1
            if last - first == 1:  # a column alone: read as a Series (a frame slice costs more)
                yield start, self._numeric_at_position(first)[:, None]
            elif self._float64_at[first:last].all():
                yield start, self._float_view(first, last)
            else:
                yield start, self._as_float(first, last)

    def _float_view(self, first: int, last: int) -> np.ndarray:
        """Columns first..last-1, all float64, as one array: a view when they lie in one
        block.  The last one is kept (this source lives for one call, and the NaN scan and
        the design matrix read the same run; one only, in case it is a copy)."""
        if self._last_run[:2] != (first, last):
            self._last_run = (first, last, self.df.iloc[:, first:last].to_numpy())
        return self._last_run[2]

    def isna(self, name: str) -> np.ndarray:
        return self._series(name).isna().to_numpy()

    def values(self, name: str) -> np.ndarray:
        return self._series(name).to_numpy()

    def pandas(self, names) -> pd.DataFrame:
        """A frame of the columns ``names``, sharing the data."""
        return pd.DataFrame({n: self._series(n) for n in names}, copy=False)


def is_bool_dtype(dtype) -> bool:
    """numpy bool, pandas "boolean" or Arrow bool."""
    return pd.api.types.is_bool_dtype(dtype)


NUMBER_KINDS = ("integer", "floating", "mixed-integer-float", "decimal", "complex")


def factor_column(column: pd.Series, name: str) -> pd.Series:
    """A non-numeric column as formulaic must see it to encode it as R encodes a factor
    or character column: text of any pandas dtype ("string", Arrow) as plain objects;
    dates, time spans, numbers stored as objects and mixed types refused, naming the
    column (formulaic would fail with numpy's text, or encode them silently)."""
    dtype = column.dtype
    kind = getattr(dtype, "kind", "")
    if kind in "mM" or isinstance(dtype, pd.DatetimeTZDtype) or (
            isinstance(dtype, pd.ArrowDtype) and dtype.kind in "mM"):
        what = "time spans" if kind == "m" else "dates"
        raise InputError(f"column {name!r} holds {what} ({dtype}); lmmscope needs numbers or "
                         "categories: convert it (e.g. days since a start as numbers, or "
                         ".astype(str) for a factor)")
    if pd.api.types.is_complex_dtype(dtype):
        raise InputError(f"column {name!r} holds complex numbers; lmmscope fits real values "
                         "only (use the real and imaginary parts as two columns)")
    if isinstance(dtype, pd.CategoricalDtype):
        inner = column.cat.categories.dtype
        if getattr(inner, "kind", "") in "mM":
            raise InputError(f"column {name!r} is a categorical of {inner} values; convert its "
                             "categories to text (.astype(str)) for a factor")
        return column
    if pd.api.types.is_string_dtype(dtype) and dtype != object:
        return column.astype(object)  # "string" / "str" / Arrow text: R's character, a factor
    if dtype == object:
        # pandas' own scan (in C) of the values' types: text or bools are a factor
        kind = pd.api.types.infer_dtype(column, skipna=True)
        if kind not in ("string", "boolean", "empty"):
            what = ("numbers stored as Python objects" if kind in NUMBER_KINDS
                    else f"values of several types ({kind})" if kind.startswith("mixed")
                    else f"{kind} values")
            raise InputError(
                f"column {name!r} (dtype object) holds {what}; convert it: pd.to_numeric(...) "
                "for a numeric predictor, .astype(str) for a factor")
    return column


def _numeric_dtype(dtype) -> bool:
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not isinstance(dtype, pd.CategoricalDtype)
            and not pd.api.types.is_complex_dtype(dtype))  # refused by factor_column


class ArrowSource:
    """Columns of a pyarrow Table (what polars, interchange and C-stream tables become)."""

    def __init__(self, table, performance: Performance = DEFAULT_PERFORMANCE):
        import pyarrow.types as pat
        self.table = table
        self.performance = performance
        self.columns = _as_text(list(table.column_names))
        self.n_rows = table.num_rows
        self.position = {name: j for j, name in enumerate(self.columns)}
        self.duplicated = _repeated(self.columns, self.position)
        self._numeric = {name: bool(pat.is_integer(f.type) or pat.is_floating(f.type)
                                    or pat.is_decimal(f.type))
                         for name, f in zip(self.columns, table.schema)}
        self.non_numeric = [name for name in self.columns if not self._numeric[name]]

    @property
    def index(self):
        return pd.RangeIndex(self.n_rows)

    def is_numeric(self, name: str) -> bool:
        return self._numeric[name]

    def is_bool(self, name: str) -> bool:
        import pyarrow.types as pat
        return pat.is_boolean(self._column(name).type)

    def _column(self, name: str):
        return self.table.column(self.position[name])

    def numeric(self, name: str) -> np.ndarray:
        import pyarrow as pa
        col = self._column(name)
        if col.num_chunks == 1 and col.null_count == 0 and col.type == pa.float64():
            return col.chunk(0).to_numpy(zero_copy_only=True)
        if col.null_count:
            col = col.cast(pa.float64())
        return np.asarray(col.to_numpy(), dtype=np.float64)

    def positions(self, names) -> np.ndarray:
        return np.fromiter(map(self.position.__getitem__, names), dtype=np.intp, count=len(names))

    def column_runs(self, names, positions=None):
        """(index in ``names``, N x r column-major float64 array) per group of up to
        ``performance.arrow_run`` columns and ``arrow_run_bytes``: Arrow keeps each column
        in its own buffer,
        so a group is a copy (small: it saves a Python round per column in the NaN scan
        and the assembly)."""
        size = max(1, min(self.performance.arrow_run,
                          self.performance.arrow_run_bytes // (8 * max(self.n_rows, 1))))
        for start in range(0, len(names), size):
            group = names[start:start + size]
            block = np.empty((len(group), self.n_rows)).T
            for j, name in enumerate(group):
                block[:, j] = self.numeric(name)
            yield start, block

    def isna(self, name: str) -> np.ndarray:
        col = self._column(name)
        mask = col.is_null(nan_is_null=True) if self._numeric[name] else col.is_null()
        return mask.to_numpy(zero_copy_only=False)

    def values(self, name: str) -> np.ndarray:
        return self.pandas([name])[name].to_numpy()

    def pandas(self, names) -> pd.DataFrame:
        part = self.table.select([self.position[n] for n in names])
        df = part.to_pandas(split_blocks=True)
        df.columns = list(names)
        return df
