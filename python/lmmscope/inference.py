"""Debiased inference for fixed effects (Li, Cai and Li 2022), from whitened cross-products.

For coordinate j, on the whitened data (X_a, y_a) = Sigma_a^{-1/2}(X, y):

1. node-wise lasso of X_a[:, j] on X_a[:, -j] with the scaled-lasso penalty
   lambda = sigma_j sqrt(2 log p / N) (sigma_j re-estimated from the residual until it
   settles), on columns scaled to unit mean square; score w_j = X_a[:, j] - X_a[:, -j] g_j;
2. beta_db_j = beta_hat_j + w_j'(y_a - X_a beta_hat) / (w_j' X_a[:, j]);
3. cluster-sandwich standard error sqrt(sum_i (w_j,i' r_a,i)^2) / (w_j' X_a[:, j]), valid
   without knowing Psi; intervals and tests use Student's t with (clusters - 1) degrees of
   freedom, the usual small-sample reference for a cluster sandwich.

Nothing N x N and no whitened rows are needed: w_j'X_a[:, k] comes from the whitened Gram
matrix, and w_j,i'r_a,i from the per-cluster vectors X_i' Sigma_a,i^{-1} r_i (Woodbury).
The node-wise lassos need only that Gram matrix too (:mod:`lmmscope.nodewise`: all
columns at once, coordinate descent on active sets, no rows).

Location: the statistics are centred when the model has an intercept, so the node-wise
regressions, scores and every row but the intercept's do not depend on where X and y
sit.  The original intercept is a linear function of the centred coefficients; its row
is the debiased linear function (see :func:`debias`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cluster_blocks import cluster_transpose_operator
from .whitening import cluster_factors
from .exceptions import InputError
from .nodewise import nodewise_lasso

ADJUSTMENTS = ("bh", "holm", None)


class WhitenedGram:
    """X_a'X_a of the centred columns (see :mod:`lmmscope.centring`), read a few columns
    at a time (``columns(idx)``, ``diagonal``) or ``whole()``, from the data backend's own
    source of it (each backend's ``whitened_gram(a)``: an object with ``diagonal``,
    ``columns(idx)`` and ``whole()``); carrying the centring (``intercept``, ``x_shift``) so that
    :func:`debias` can report the intercept on the original scale.  Inference for a few
    columns then costs in proportion to them, not to p^2."""

    def __init__(self, source, stats):
        self._source = source
        self._whole = None
        self.diagonal = np.asarray(source.diagonal)
        self.shape = (self.diagonal.size, self.diagonal.size)
        self.intercept, self.x_shift = stats.intercept, stats.x_shift

    def columns(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return self._source.columns(idx) if self._whole is None else self._whole[:, idx]

    def whole(self) -> np.ndarray:
        """The p x p matrix (read-only), formed once: once every column was asked for,
        the next calls (other columns, the debiasing) read it."""
        if self._whole is None:
            self._whole = self._source.whole()
            self._whole.flags.writeable = False
        return self._whole


def whitened_gram(data, a) -> WhitenedGram:
    """X_a'X_a of the centred columns, from any data backend (in memory, streamed, Dask)."""
    return WhitenedGram(data.whitened_gram(a), data.stats)


def cluster_scores(data, a, beta):
    """Per-cluster Xc_i' Sigma_a,i^{-1} (yc_i - Xc_i c): (clusters, p).

    ``beta`` is in the original parametrisation; the scores are formed on the centred
    data of ``data.stats`` (c = beta but for the intercept), one chunk of rows at a
    time, so they do not depend on the location of X or y.
    """
    stats = data.stats
    coef = stats.centred_coef(beta)
    Xr = np.zeros((data.n_groups, data.p))
    r = np.empty(data.N)
    rows_per_chunk = max(512, (32 * 2**20) // (8 * max(data.p, 1)))
    for first in range(0, data.N, rows_per_chunk):
        rows = slice(first, min(first + rows_per_chunk, data.N))
        Xc = np.asarray(data.X[rows]) - stats.x_shift
        r[rows] = (data.y[rows] - stats.y_shift) - Xc @ coef
        indicator = sp.csr_matrix((r[rows], (data.codes[rows], np.arange(Xc.shape[0]))),
                                  shape=(data.n_groups, Xc.shape[0]))
        Xr += indicator @ Xc
    Zt = cluster_transpose_operator(data.Z, data.codes, data.n_groups)
    q = data.Z.shape[1]
    Zr = np.asarray(Zt @ r).reshape(data.n_groups, q)
    # Sigma^{-1} r = r - a Z (I + a Z'Z)^{-1} Z'r
    c = cluster_directions(stats.ZtZ, Zr, a)
    return Xr - a * np.einsum("iqp,iq->ip", stats.ZtX, c)


def cluster_directions(ZtZ, Zr, a) -> np.ndarray:
    """c_i = (I + a Z_i'Z_i)^{-1} Z_i'r_i for every cluster, (clusters, q), by the
    Cholesky factors L_i of I + a Z_i'Z_i: c_i = L_i^{-T} L_i^{-1} Z_i'r_i."""
    _, Linv = cluster_factors(ZtZ, a)
    return (np.swapaxes(Linv, 1, 2) @ (Linv @ Zr[:, :, None]))[:, :, 0]


def adjust_pvalues(p, method):
    """Benjamini-Hochberg ('bh'), Holm ('holm') or none (None)."""
    p = np.asarray(p, dtype=float)
    if method is None or p.size == 0:
        return p.copy()
    known = ~np.isnan(p)
    if not known.all():  # as R's p.adjust: NaN stays NaN and does not count
        out = np.full(p.size, np.nan)
        out[known] = adjust_pvalues(p[known], method)
        return out
    n = p.size
    order = np.argsort(p)
    ranked = p[order]
    if method == "bh":
        adj = np.minimum.accumulate((ranked * n / np.arange(1, n + 1))[::-1])[::-1]
    elif method == "holm":
        adj = np.maximum.accumulate(ranked * (n - np.arange(n)))
    else:
        raise InputError(f"adjust must be one of 'bh', 'holm' or None, got {method!r}")
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def debias(G, scores, beta, cols, D):
    """Debiased estimates and cluster-sandwich standard errors for the columns ``cols``,
    with ``D`` their score directions (rows of :attr:`NodewiseFit.coef`).

    ``beta`` is in the original parametrisation.  The directions and scores are those
    of the centred columns, so every row but the intercept's is free of the location
    of X and y.  The original intercept is the linear function c_int - x_shift'c (+
    y_shift) of the centred coefficients: its estimate and sandwich standard error come
    from the debiased coordinates' per-cluster influences, so they need the rows of
    every shifted column (all terms, the default); otherwise its row is NaN.
    """
    cols = np.asarray(cols, dtype=np.int64)
    denom = np.einsum("kp,pk->k", D, G.columns(cols))  # w_j'X_a[:, j]
    influence = (scores @ D.T) / denom  # (clusters, k): w_j,i' r_a,i / w_j'X_a[:, j]
    estimate = beta[cols] + influence.sum(axis=0)
    std_error = np.sqrt((influence ** 2).sum(axis=0))
    _original_intercept(G, cols, beta, influence, estimate, std_error)
    return estimate, std_error


def _original_intercept(G, cols, beta, influence, estimate, std_error):
    """Replace the intercept's row (centred) by the original intercept's, in place."""
    intercept, shift = getattr(G, "intercept", None), getattr(G, "x_shift", None)
    if intercept is None or shift is None or not np.any(shift) or intercept not in cols:
        return
    at = {int(c): i for i, c in enumerate(cols)}
    row = at[int(intercept)]
    shifted = np.flatnonzero(shift)
    if not all(int(j) in at for j in shifted):
        estimate[row] = std_error[row] = np.nan
        return
    weights = np.zeros(len(cols))
    weights[row] = 1.0
    weights[[at[int(j)] for j in shifted]] -= shift[shifted]
    functional = influence @ weights  # per cluster
    estimate[row] = beta[intercept] + functional.sum()
    std_error[row] = np.sqrt(functional @ functional)


def table_from_cache(G, scores, rows, names, columns, coef, n_obs, df, level, adjust, progress,
                     tol, sigma_tol):
    """The inference table of ``columns`` from a fit's cached whitened Gram ``G`` and
    cluster ``scores``, and the node-wise directions ``rows`` fitted so far (a dict,
    updated): node-wise fits for the columns not yet fitted (only those), then the
    debiased estimates and the table."""
    needed = list(dict.fromkeys(int(j) for j in columns))
    intercept, shift = getattr(G, "intercept", None), getattr(G, "x_shift", None)
    if intercept is not None and intercept in needed and shift is not None:
        # the original intercept's row is a function of every shifted column's influences
        needed += [int(j) for j in np.flatnonzero(shift) if int(j) not in needed]
    todo = [j for j in needed if j not in rows]
    if todo:
        progress(f"node-wise scaled lasso for {len(todo)} coordinates")
        fit = nodewise_lasso(G, n_obs, todo, free=intercept, tol=tol, sigma_tol=sigma_tol,
                             progress=progress)
        rows.update(zip(todo, fit.coef))
    directions = np.array([rows[j] for j in needed]).reshape(len(needed), len(names))
    est, se = debias(G, scores, coef, needed, directions)
    at = {j: i for i, j in enumerate(needed)}
    asked = [at[int(j)] for j in columns]
    return inference_table(names, columns, est[asked], se[asked], df, level, adjust)


def inference_table(names, columns, estimate, std_error, df, level, adjust) -> pd.DataFrame:
    """The table of :meth:`LmmScopeResult.inference`: the statistic (``t``, or ``z`` when
    ``df`` is infinite: the normal reference) and its p-values and intervals."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.number)) \
            or not 0 < level < 1:
        raise InputError(f"level must be a number between 0 and 1 (0.95 for 95%), got {level!r}")
    if adjust not in ADJUSTMENTS:
        raise InputError(f"adjust must be one of 'bh', 'holm' or None, got {adjust!r}")
    from scipy import stats as sps  # lazily: it loads scipy.optimize (seconds)

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = estimate / std_error  # referred to Student's t with df degrees of freedom
    p_value = 2 * sps.t.sf(np.abs(ratio), df)
    half = sps.t.ppf(0.5 + level / 2, df) * std_error
    table = pd.DataFrame({
        "estimate": estimate, "std_error": std_error, "z" if np.isinf(df) else "t": ratio,
        "p_value": p_value, "ci_lower": estimate - half, "ci_upper": estimate + half,
        "p_adjusted": adjust_pvalues(p_value, adjust),
    }, index=pd.Index([names[j] for j in columns], name="term"))
    table.attrs.update(df=df, level=level, adjust=adjust)
    return table


def statsmodels_names(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """An inference table under statsmodels' summary names: ``coef``, ``std err``, ``t``
    or ``z``, ``P>|t|`` or ``P>|z|``, ``[0.025``, ``0.975]`` (for level 0.95); the
    ``p_adjusted`` column only when the table was adjusted."""
    stat = "z" if "z" in table.columns else "t"
    tail = (1 - level) / 2
    out = table.rename(columns={
        "estimate": "coef", "std_error": "std err", "p_value": f"P>|{stat}|",
        "ci_lower": f"[{tail:g}", "ci_upper": f"{1 - tail:g}]"})
    if table.attrs.get("adjust") is None:
        out = out.drop(columns="p_adjusted")
    return out
