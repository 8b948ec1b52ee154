"""Input validation: clear errors naming the problem, before any numerics run."""

from __future__ import annotations

import numpy as np

from .intercept import InterceptPrepended, left_multiply


def as_float_matrix(values, what: str, names=None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got {arr.ndim} dimensions")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=float)


def check_response(y, n_rows: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError("the response must be a single numeric column")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"the response must be numeric, got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise ValueError(f"the response has {y.shape[0]} rows but X has {n_rows}")
    y = y.astype(float)
    if not np.all(np.isfinite(y)):
        raise ValueError("the response contains NaN or infinite values "
                         f"({int((~np.isfinite(y)).sum())} rows)")
    return y


def check_finite_columns(M: np.ndarray, names, what: str, chunk_rows: int = 8192) -> None:
    """Raise naming the columns that hold NaN or Inf (row chunks keep the temporary small)."""
    ok = np.ones(M.shape[1], dtype=bool)
    for start in range(0, M.shape[0], chunk_rows):
        ok &= np.isfinite(M[start:start + chunk_rows]).all(axis=0)
    bad = [names[j] for j in np.flatnonzero(~ok)]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(f"{what} contains NaN or infinite values in column(s): {shown}")


def column_ranges(X) -> np.ndarray:
    """max - min of each column; 0 for the implicit column of an InterceptPrepended."""
    if isinstance(X, InterceptPrepended):
        return np.concatenate([[0.0], np.ptp(X.base, axis=0)])
    return np.ptp(X, axis=0)


def check_columns_distinct(X: np.ndarray, names, unpenalised, gram=None) -> None:
    """Constant (non-intercept) and exactly duplicated columns make the selection ill-posed."""
    unpen = set(unpenalised)
    spread = column_ranges(X)
    constant = [names[j] for j in np.flatnonzero(spread == 0) if j not in unpen]
    if constant:
        raise ValueError("constant column(s) in the fixed-effects design: "
                         + ", ".join(map(str, constant[:10]))
                         + " (remove them; the intercept is already in the model)")
    p = X.shape[1]
    if gram is not None:
        d = np.diag(gram)
        # ||x_j - x_k||^2 = G_jj + G_kk - 2 G_jk, zero exactly for duplicates.
        dist = d[:, None] + d[None, :] - 2 * gram
        tol = 1e-12 * np.maximum(d[:, None], d[None, :]).clip(min=1e-300)
        iu = np.triu_indices(p, 1)
        dup = np.flatnonzero(dist[iu] <= tol[iu])
        pairs = [(iu[0][i], iu[1][i]) for i in dup]
    else:
        # Equal columns have (almost: BLAS may sum in another order) equal random
        # projections; only neighbours in projection order are compared exactly.
        keys = left_multiply(np.random.default_rng(0).standard_normal((2, X.shape[0])), X)
        order = np.argsort(keys[0], kind="stable")
        gap = np.abs(np.diff(keys[:, order], axis=1))
        tol = 1e-9 * (np.abs(keys[:, order[1:]]) + np.abs(keys[:, order[:-1]]) + 1e-300)
        candidates = np.flatnonzero(np.all(gap <= tol, axis=0))
        pairs = sorted(tuple(sorted((int(order[t]), int(order[t + 1])))) for t in candidates
                       if np.array_equal(X[:, order[t]], X[:, order[t + 1]]))
    if pairs:
        shown = ", ".join(f"{names[i]} = {names[j]}" for i, j in pairs[:5])
        raise ValueError(f"duplicated column(s) in the fixed-effects design: {shown}")


def check_groups(groups, n_rows: int) -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1:
        g = g.ravel()
    if g.shape[0] != n_rows:
        raise ValueError(f"groups has {g.shape[0]} entries but the data have {n_rows} rows")
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise ValueError("groups contains NaN or infinite values")
    if g.dtype == object and any(v is None for v in g):
        raise ValueError("groups contains missing values")
    return g


def check_clusters(sizes: np.ndarray) -> None:
    if sizes.size < 2:
        raise ValueError("the grouping factor has a single level; a mixed model needs "
                         "at least two clusters")
    if np.all(sizes == 1):
        raise ValueError("every cluster has a single row, so random effects cannot be "
                         "told apart from the noise; check the grouping column")


def check_k(k, n_penalised: int, n_obs: int, n_unpenalised: int) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, None or 'cv', got {k!r}")
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if k > n_penalised:
        raise ValueError(f"k = {k} exceeds the number of candidate predictors ({n_penalised})")
    if k + n_unpenalised >= n_obs:
        raise ValueError(f"k = {k} (+{n_unpenalised} unpenalised) must be smaller than the "
                         f"number of rows ({n_obs})")
    return k


def check_a(a) -> float:
    try:
        a = float(a)
    except (TypeError, ValueError):
        raise ValueError(f"a must be a non-negative number, None or 'cv', got {a!r}") from None
    if not np.isfinite(a) or a < 0:
        raise ValueError(f"a must be a non-negative finite number, got {a}")
    return a
