"""Input validation: clear errors naming the problem, before any numerics run."""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import rank
from .column_products import as_column_products, raw_moments
from .control import DEFAULT_CONTROL, DEFAULT_PERFORMANCE, Control, Performance
from .exceptions import InputError


# What a tuning argument is, decided here for every module (k: an integer, None or "cv";
# a: a number, None or "cv"); :class:`lmmscope.specification.TuningArguments` parses them once.
CV = "cv"


def is_cv(value) -> bool:
    """Whether a tuning argument (k or a) asks for cross-validation."""
    return isinstance(value, str) and value == CV


def is_whole_number(value) -> bool:
    """An integer (numpy's too), not a bool: a fixed k."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """A real number (numpy's too), not a bool: a fixed a."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def as_float_matrix(values, what: str, names=None) -> np.ndarray:
    """A 2-D float64 array of ``values`` (an array, a list of rows, a DataFrame, a
    scipy sparse matrix: densified when it fits in memory), or an error saying why not."""
    if _is_sparse(values):
        values = dense_from_sparse(values, what)
    if hasattr(values, "columns") and hasattr(values, "dtypes"):  # a DataFrame: name columns
        values = _frame_values(values, what)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise InputError(f"{what} must be a rectangular numeric array: {exc}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array, got {arr.ndim} dimensions")
    _check_numeric_dtype(arr, what)
    return np.asarray(arr, dtype=float)


def _frame_values(frame, what: str) -> np.ndarray:
    """A pandas DataFrame's values as float64 (NaN where missing), or an error naming
    its non-numeric columns."""
    import pandas as pd
    bad = [str(c) for c, dt in frame.dtypes.items()
           if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))
           or pd.api.types.is_complex_dtype(dt) or isinstance(dt, pd.CategoricalDtype)]
    if bad:
        kinds = ", ".join(f"{c} ({frame[c].dtype})" for c in bad[:10])
        raise InputError(f"{what} must be numeric; non-numeric column(s): {kinds}")
    return frame.to_numpy(dtype=float, na_value=np.nan)


NUMERIC_KINDS = ("integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty")


def _check_numeric_dtype(arr: np.ndarray, what: str) -> None:
    if np.iscomplexobj(arr):
        raise InputError(f"{what} holds complex numbers; lmmscope fits real values only "
                         "(pass the real and imaginary parts as separate columns)")
    if arr.dtype == object:
        import pandas as pd
        # numbers stored as Python objects (lists of numbers and None); not text, which
        # astype(float) would parse silently
        kind = pd.api.types.infer_dtype(arr.ravel(), skipna=True)
        if kind in NUMERIC_KINDS:
            return
        raise InputError(f"{what} must be numeric, got Python objects holding {kind} values")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        kind = {"M": "dates", "m": "time spans", "U": "text", "S": "bytes", "O": "objects"}
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}"
                         + (f" ({kind[arr.dtype.kind]})" if arr.dtype.kind in kind else ""))


def _is_sparse(values) -> bool:
    module = type(values).__module__ or ""
    return module.startswith("scipy.sparse") and hasattr(values, "toarray")


def _free_memory_bytes():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def dense_from_sparse(values, what: str) -> np.ndarray:
    """A scipy sparse matrix as a dense float64 array, when that takes at most half of
    the free memory (the fit works on dense columns and their cross-products)."""
    n_rows, n_cols = values.shape
    needed = 8 * n_rows * n_cols
    free = _free_memory_bytes()
    if free is not None and needed > free / 2:
        raise InputError(f"{what} is a sparse {n_rows} x {n_cols} matrix whose dense form needs "
                         f"{needed / 2**30:.1f} GiB, more than half of the free memory "
                         f"({free / 2**30:.1f} GiB); select fewer columns first")
    if np.iscomplexobj(values.data if hasattr(values, "data") else values):
        _check_numeric_dtype(np.asarray(values.data), what)
    return values.toarray().astype(float, copy=False)


def check_response(y, n_rows: int) -> np.ndarray:
    try:
        y = np.asarray(y.toarray() if _is_sparse(y) else y)
    except (ValueError, TypeError) as exc:
        raise InputError(f"the response must be one numeric column: {exc}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"the response must be a single numeric column, got shape {y.shape}")
    _check_numeric_dtype(y, "the response")
    if y.shape[0] != n_rows:
        raise InputError(f"the response has {y.shape[0]} rows but X has {n_rows}")
    y = y.astype(float)
    if not np.all(np.isfinite(y)):
        raise InputError("the response contains NaN or infinite values "
                         f"({int((~np.isfinite(y)).sum())} rows)")
    largest = float(np.abs(y).max()) if y.size else 0.0
    if largest > HUGE or 0 < largest < TINY:
        verb = "overflow" if largest > HUGE else "underflow"
        raise InputError(f"the response's scale ({largest:.3g}) would {verb} the "
                         "cross-products; rescale y")
    return y


def as_list(items) -> list:
    """None, one item, or a list, tuple or array of them, as a list (``items or []``
    would drop a one-element array holding 0, which is falsy)."""
    if items is None:
        return []
    return list(items) if np.ndim(items) else [items]


def always_items(always, n_columns: int, what: str = "columns", argument: str = "always") -> list:
    """``always=`` (or another ``argument`` naming columns) as a list of names and in-range
    positions: None, one name or position, any iterable of them (list, tuple, set,
    generator, array, Index), or a boolean mask over the ``n_columns`` columns."""
    if always is None:
        return []
    if isinstance(always, (str, bytes)) or np.ndim(always) == 0 and not hasattr(always, "__iter__"):
        if isinstance(always, (bool, np.bool_)):
            raise InputError(f"{argument}= must name columns (names, positions or a boolean mask), "
                             f"got {always!r}")
        items = [always]
    else:
        items = list(always)
    if items and all(isinstance(v, (bool, np.bool_)) for v in items):
        if len(items) != n_columns:
            raise InputError(f"{argument}= as a boolean mask must have one entry per {what} "
                             f"({n_columns}), got {len(items)}")
        return [int(j) for j in np.flatnonzero(items)]
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise InputError(f"{argument}= mixes booleans with names or positions: give a boolean "
                             "mask, or names, or positions")
        if isinstance(item, (int, np.integer)):
            if not 0 <= item < n_columns:
                raise InputError(f"{argument}= position {int(item)} is out of range: there are "
                                 f"{n_columns} {what} (positions 0..{n_columns - 1})")
            item = int(item)
        elif not isinstance(item, str):
            raise InputError(f"{argument}= entries must be column names or positions, got "
                             f"{item!r} ({type(item).__name__})")
        out.append(item)
    return out


# Squares of values beyond these magnitudes overflow (or underflow) in X'X and y'y.
HUGE, TINY = 1e150, 1e-150


def check_finite_columns(M: np.ndarray, names, what: str, row_major_lead=None,
                         performance: Performance = DEFAULT_PERFORMANCE):
    """Raise naming the columns that hold NaN or Inf, or values whose squares overflow
    or underflow the cross-products; return the columns'
    :class:`~lmmscope.column_products.RawMoments`.

    Their sums of squares clear most columns at once (finite and at most HUGE^2: every
    value is finite and at most HUGE; at least N TINY^2: some value is at least TINY);
    only the other columns are scanned value by value.  ``row_major_lead`` (an int)
    and a column-major M: the moments' ``row_major`` is a row-major N x (lead + p)
    copy of M made in the same pass, M in its columns after the first ``lead``."""
    copy = None
    if row_major_lead is not None and M.flags.f_contiguous and not M.flags.c_contiguous:
        copy = np.empty((M.shape[0], row_major_lead + M.shape[1]))
    moments = raw_moments(M, copy_to=None if copy is None else copy[:, row_major_lead:],
                               performance=performance)
    moments.row_major = copy
    squares = moments.squares
    with np.errstate(invalid="ignore"):
        cleared = np.isfinite(squares) & (squares <= HUGE ** 2) \
            & (squares >= M.shape[0] * TINY ** 2) & np.isfinite(moments.sums) \
            & np.isfinite(moments.projections).all(axis=0)
    suspect = np.flatnonzero(~cleared)
    if suspect.size:
        _check_values(M[:, suspect], [names[j] for j in suspect], what)
    return moments


def _check_values(M: np.ndarray, names, what: str, chunk_rows: int = 8192) -> None:
    """The value-by-value check of :func:`check_finite_columns`: column maxima and minima
    find NaN and Inf too (they propagate), in two reductions without temporaries."""
    largest = np.zeros(M.shape[1])
    ok = np.ones(M.shape[1], dtype=bool)
    for start in range(0, M.shape[0], chunk_rows):
        chunk = M[start:start + chunk_rows]
        if chunk.shape[0] == 0:
            continue
        with np.errstate(invalid="ignore"):
            hi, lo = chunk.max(axis=0), chunk.min(axis=0)
        ok &= np.isfinite(hi) & np.isfinite(lo)
        largest = np.fmax(largest, np.fmax(np.abs(hi), np.abs(lo)))
    bad = [names[j] for j in np.flatnonzero(~ok)]
    if bad:
        raise InputError(f"{what} contains NaN or infinite values in column(s): {_shown(bad)}")
    _check_magnitudes(largest, names, what)


def _shown(items, limit=10):
    items = list(map(str, items))
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def _check_magnitudes(largest, names, what):
    for bad, verb in ((largest > HUGE, "overflow"), ((largest > 0) & (largest < TINY), "underflow")):
        if np.any(bad):
            cols = np.flatnonzero(bad)
            scales = ", ".join(f"{names[j]} ({largest[j]:.3g})" for j in cols[:10])
            raise InputError(f"{what}: the scale of column(s) {scales} would {verb} the "
                             "cross-products; rescale them")


def check_statistics_finite(stats, names, y_scale=None, products=None) -> None:
    """Nothing non-finite may reach the search and the refit (a non-finite objective gives a
    silently wrong subset or theta): name what overflowed in the cross-products.
    ``products``: the layout's :class:`~lmmscope.column_products.ColumnProducts` of
    ``stats`` (default: their Gram)."""
    if not (np.isfinite(stats.yty) and np.all(np.isfinite(stats.Zty))):
        scale = "" if y_scale is None else f" ({y_scale:.3g})"
        raise InputError(f"the response's scale{scale} overflows the cross-products; rescale y")
    if not np.all(np.isfinite(stats.ZtZ)):
        raise InputError("the random-effects columns (Z) overflow the cross-products; rescale them")
    # a column's sum is non-finite iff an entry is, or the entries are near overflow
    bad = ~np.isfinite(stats.Xty) | ~np.isfinite(stats.ZtX.sum(axis=(0, 1)))
    bad |= ~np.isfinite(as_column_products(stats if products is None else products).squares)
    if np.any(bad):
        raise InputError("column(s) " + _shown(names[j] for j in np.flatnonzero(bad))
                         + " overflow the cross-products; rescale them")


def check_response_not_a_predictor(products, names, control: Control = DEFAULT_CONTROL) -> None:
    """Refuse predictors that are an affine function of the response (a copy of y among
    the columns), naming them.  From the columns' squares and sums (``products``: the
    layout's :class:`~lmmscope.column_products.ColumnProducts`, or statistics with a
    Gram) and the statistics' X'y, y'y: O(p).  A predictor
    whose correlation with the response is within ``control.response_copy_tol`` of +-1
    (a copy of y, 3 y + 1) would fit with zero residual variance (sigma ~ 1e-8)."""
    products = as_column_products(products)
    stats = products.stats
    own, sums = products.squares, products.sums
    cov, var_y = np.asarray(stats.Xty, float), float(stats.yty)
    if stats.intercept is not None:  # centre the shifted statistics exactly
        N, y_sum = stats.n_obs, float(stats.Xty[stats.intercept])
        cov = cov - sums * y_sum / N
        own = own - sums ** 2 / N
        var_y -= y_sum ** 2 / N
    usable = own > 0
    if stats.intercept is not None:
        usable[stats.intercept] = False
    if not var_y > 0 or not usable.any():
        return
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(cov[usable]) / np.sqrt(own[usable] * var_y)
    copies = np.flatnonzero(usable)[corr >= 1 - control.response_copy_tol]
    if copies.size:
        raise InputError("predictor column(s) " + _shown(names[j] for j in copies)
                         + " are the response up to location and scale (a copy of y, or "
                         "a + b y): the model would fit with zero residual variance; remove "
                         "them from the predictors")


def check_scales(products, names, control: Control = DEFAULT_CONTROL) -> None:
    """lme4's checkScaleX: warn when the standard deviations of the non-binary columns
    differ by more than a factor ``tol`` = ``control.scale_ratio_tol``, or one is above
    ``tol`` or below 1/tol.
    Needs centred statistics (a model with an intercept); the fit itself does not
    depend on units (columns are normalised for the selection; the refit is
    equivariant), so this is advice for the reader, as in lme4.  From the columns'
    squares and sums (``products``: the layout's
    :class:`~lmmscope.column_products.ColumnProducts`, or statistics with a Gram): it
    runs on every layout."""
    products = as_column_products(products)
    stats = products.stats
    if stats.intercept is None or stats.n_obs < 2:
        return
    spread, sums = np.clip(products.squares, 0, None), products.sums
    tol = control.scale_ratio_tol
    N = stats.n_obs
    raw_sum = N * stats.x_shift + sums
    raw_squares = spread + 2 * stats.x_shift * sums + N * stats.x_shift ** 2
    # a 0/1 column has sum(x^2) = sum(x); 1e-9 allows the rounding of the sums rebuilt
    # from centred ones (not a Control field: it only decides which columns this advice
    # looks at, as lme4's own test of two distinct values does, never a result)
    binary = np.abs(raw_squares - raw_sum) <= 1e-9 * np.maximum(raw_squares, 1e-300)
    continuous = np.flatnonzero(~binary & (spread > 0))
    if continuous.size == 0:
        return
    sd = np.sqrt(spread[continuous] / (N - 1))
    if sd.max() / sd.min() > tol or sd.max() > tol or sd.min() < 1 / tol:
        lo, hi = continuous[np.argmin(sd)], continuous[np.argmax(sd)]
        warnings.warn("Some predictor variables are on very different scales: consider "
                      f"rescaling (standard deviations from {sd.min():.3g} ({names[lo]}) to "
                      f"{sd.max():.3g} ({names[hi]}))", ScaleWarning, stacklevel=3)


class ScaleWarning(UserWarning):
    """Predictors on very different scales (lme4's check.scaleX)."""


def check_design_columns(products, names, unpenalised,
                         control: Control = DEFAULT_CONTROL) -> None:
    """Columns that make the selection ill-posed, from ``products`` (the layout's
    :class:`~lmmscope.column_products.ColumnProducts`, or statistics with a Gram):
    constant candidates (with an intercept) and duplicated columns (equal after
    centring and normalising, either sign; ``control``: constant_tol and duplicate_tol).
    No p x p or N x p temporary."""
    products = as_column_products(products)
    stats = products.stats
    unpen = set(int(j) for j in unpenalised)
    constant = np.flatnonzero(rank.constant_mask(products, control))
    pairs = products.duplicate_pairs(constant, tol=control.duplicate_tol)
    constant = [names[j] for j in constant if j not in unpen]
    if constant:
        raise InputError("constant column(s) in the fixed-effects design: " + _shown(constant)
                         + " (remove them; the intercept is already in the model)")
    if pairs:
        shown = ", ".join(f"{names[i]} = {names[j]}" for i, j in pairs[:5])
        raise InputError(f"duplicated column(s) in the fixed-effects design: {shown} (equal "
                         "up to location and scale)" if stats.intercept is not None else
                         f"duplicated column(s) in the fixed-effects design: {shown} (equal "
                         "up to scale)")


def check_groups(groups, n_rows: int) -> np.ndarray:
    g = np.asarray(groups.toarray() if _is_sparse(groups) else groups)
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.ndim != 1:
        raise InputError(f"groups must hold one cluster label per row (1-D), got shape {g.shape}")
    if np.iscomplexobj(g):
        raise InputError("groups holds complex numbers; give cluster labels (integers or text)")
    if g.shape[0] != n_rows:
        raise InputError(f"groups has {g.shape[0]} entries but the data have {n_rows} rows")
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise InputError("groups contains NaN or infinite values")
    if g.dtype == object or g.dtype.kind in "mM":
        import pandas as pd
        missing = pd.isna(g)
        if missing.any():
            raise InputError(f"groups contains missing values ({int(missing.sum())} rows)")
    return g


def check_clusters(sizes: np.ndarray) -> None:
    if sizes.size < 2:
        raise InputError("the grouping factor has a single level; a mixed model needs "
                         "at least two clusters")
    if np.all(sizes == 1):  # lme4's check.nobs.vs.nlev (an error by default)
        raise InputError("every cluster has a single row, so random effects cannot be "
                         "told apart from the noise (number of levels of the grouping factor "
                         "must be < number of observations); check the grouping column")


def check_random_effects_identifiable(sizes: np.ndarray, Z: np.ndarray, random_names) -> None:
    """lme4's check.nobs.vs.nRE (an error by default): more random effects (clusters x q)
    than rows leave the random effects and the residual variance unidentifiable.  (lme4's
    check.nobs.vs.nlev, levels < rows, is :func:`check_clusters`.)"""
    n_obs, q = int(sizes.sum()), Z.shape[1]
    n_random = int(sizes.size) * q
    if n_obs <= n_random:
        term = " + ".join(map(str, random_names))
        raise InputError(f"number of observations (={n_obs}) <= number of random effects "
                         f"(={n_random}) for term ({term} | group); the random-effects "
                         "parameters and the residual variance are probably unidentifiable")


def check_more_rows_than_columns(n_columns: int, n_obs: int) -> None:
    """lme4's check: fewer fixed-effect columns than observations (one term or several)."""
    if n_columns >= n_obs:
        raise InputError(f"{n_columns} fixed effects but only {n_obs} rows")


def check_k_selectable(k, n_selectable: int) -> None:
    """An explicit k must not exceed the candidates left after the rank checks."""
    if is_whole_number(k) and k > n_selectable:
        raise InputError(f"k = {k} exceeds the number of candidate predictors left after "
                         f"dropping aliased columns ({n_selectable})")


def check_k(k, n_penalised: int, n_obs: int, n_unpenalised: int, what: str = "k") -> int:
    """``k`` (or ``k_max``, named by ``what``) as an int in range."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise InputError(f"{what} must be an integer{', None or' if what == 'k' else ' or None'}"
                         f"{' ' + repr('cv') if what == 'k' else ''}, got {k!r}")
    k = int(k)
    if k < 0:
        raise InputError(f"{what} must be non-negative, got {k}")
    if k > n_penalised:
        raise InputError(f"{what} = {k} exceeds the number of candidate predictors ({n_penalised})")
    if k + n_unpenalised >= n_obs:
        raise InputError(f"{what} = {k} (+{n_unpenalised} unpenalised) must be smaller than the "
                         f"number of rows ({n_obs})")
    return k


def check_tuning_arguments(k, a, criterion, k_max, cv_folds, a_grid, method,
                           random_state=0) -> None:
    """The tuning arguments of lmm_scope / LmmScope on their own (before any data is
    read), each error naming its argument; :func:`check_tuning_on_data` checks them
    against the data."""
    from .criteria import CRITERIA
    if not (k is None or is_cv(k) or is_whole_number(k)):
        raise InputError(f"k must be an integer, None or 'cv', got {k!r}")
    if is_whole_number(k) and k < 0:
        raise InputError(f"k must be non-negative, got {k}")
    if k_max is not None and (isinstance(k_max, (bool, np.bool_))
                              or not isinstance(k_max, (int, np.integer)) or k_max < 0):
        raise InputError(f"k_max must be a non-negative integer or None, got {k_max!r}")
    if not (a is None or is_cv(a)):
        if isinstance(a, (str, bool, np.bool_)):
            raise InputError(f"a must be a non-negative number, None or 'cv', got {a!r}")
        check_a(a)
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if method not in ("REML", "ML"):
        raise InputError(f"method must be 'REML' or 'ML', got {method!r}")
    if isinstance(cv_folds, (bool, np.bool_)) or not isinstance(cv_folds, (int, np.integer)) \
            or cv_folds < 2:
        raise InputError(f"cv_folds must be an integer >= 2, got {cv_folds!r}")
    if random_state is not None and (isinstance(random_state, (bool, np.bool_))
                                     or not isinstance(random_state, (int, np.integer))
                                     or random_state < 0):
        raise InputError(f"random_state must be a non-negative integer or None, got {random_state!r}")
    grid_given = a_grid is not None and not isinstance(a_grid, (str, bytes)) and np.ndim(a_grid)
    if is_cv(a) and not (grid_given and len(a_grid)):
        raise InputError(f"a_grid must hold at least one value of a for a='cv', got {a_grid!r}")
    if a_grid is not None and not grid_given:
        raise InputError(f"a_grid must be a sequence of values of a, got {a_grid!r}")
    if grid_given:  # checked even when a is not 'cv': a wrong grid is a mistake either way
        for value in a_grid:
            if isinstance(value, (str, bool, np.bool_)):
                raise InputError(f"a_grid values must be non-negative numbers, got {value!r}")
            try:
                check_a(value)
            except InputError:
                raise InputError(f"a_grid values must be non-negative finite numbers, got "
                                 f"{value!r}") from None


def check_tuning_on_data(k, a, k_max, cv_folds, n_candidates, n_obs, n_unpenalised,
                         n_groups) -> None:
    """k_max and cv_folds against the data (k has its own, later check)."""
    if k_max is not None:
        check_k(k_max, n_candidates, n_obs, n_unpenalised, what="k_max")
    uses_cv = is_cv(k) or is_cv(a)
    if uses_cv and cv_folds > n_groups:
        raise InputError(f"cv_folds = {cv_folds} exceeds the number of clusters ({n_groups}); "
                         "cross-validation splits whole clusters")


def check_a(a) -> float:
    try:
        a = float(a)
    except (TypeError, ValueError):
        raise InputError(f"a must be a non-negative number, None or 'cv', got {a!r}") from None
    if not np.isfinite(a) or a < 0:
        raise InputError(f"a must be a non-negative finite number, got {a}")
    return a
