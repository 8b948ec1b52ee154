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
The lasso itself runs on "pseudo-rows" R with R'R equal to the scaled Gram matrix
(min(N, p) rows), with scikit-learn's coordinate descent.

Location: the statistics are centred when the model has an intercept, so the node-wise
regressions, scores and every row but the intercept's do not depend on where X and y
sit.  The original intercept is a linear function of the centred coefficients; its row
is the debiased linear function (see :func:`debias`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats as sps

from .crossprod import cluster_factors, cluster_transpose_operator

ADJUSTMENTS = ("bh", "holm", None)


@dataclass
class NodewiseFit:
    """Node-wise lasso results for the coordinates ``columns``."""

    columns: np.ndarray
    coef: np.ndarray  # (len(columns), p): row r is e_j - g_j, the score direction on X_a
    iterations: np.ndarray


class CentredGram(np.ndarray):
    """X_a'X_a of the centred columns, carrying their centring (``intercept``,
    ``x_shift``) so that :func:`debias` can report the intercept on the original scale."""

    def __array_finalize__(self, obj):
        self.intercept = getattr(obj, "intercept", None)
        self.x_shift = getattr(obj, "x_shift", None)


def _carrying_centring(G, stats):
    out = np.asarray(G).view(CentredGram)
    out.intercept, out.x_shift = stats.intercept, stats.x_shift
    return out


def whitened_gram(data, a):
    """X_a'X_a (of the centred columns, see :mod:`lmmscope.crossprod`), and pseudo-rows R
    (r x p, r <= min(N, p)) with R'R = X_a'X_a / N, from the data backend's layout
    (:mod:`lmmscope.layouts`: the Gram, or whitened rows)."""
    G, R = data.whitened_gram(a)
    return _carrying_centring(G, data.stats), R


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
    _, Linv = cluster_factors(stats.ZtZ, a)
    # Sigma^{-1} = I - a Z (I + a Z'Z)^{-1} Z' = I - a Z L^{-T} L^{-1} Z'
    c = (np.swapaxes(Linv, 1, 2) @ (Linv @ Zr[:, :, None]))[:, :, 0]  # (I + aZ'Z)^{-1} Z'r
    return Xr - a * np.einsum("iqp,iq->ip", stats.ZtX, c)


def _scaled_lasso(R, j, lam0, tol, max_iter, sigma_tol=1e-6, max_rounds=30, free=None):
    """Scaled lasso of R[:, j] on the other columns (unit-scale columns); the column
    ``free`` (the intercept) is not penalised: it is profiled out first, as in the
    selection, so the direction does not depend on where the other columns sit."""
    from sklearn.linear_model import Lasso

    r = R.shape[0]
    free = None if free is None or free == j else int(free)
    others = np.setdiff1d(np.arange(R.shape[1]), [j] if free is None else [j, free])
    X = np.asfortranarray(R[:, others])
    y = R[:, j]
    if free is not None:
        u = R[:, free] / np.sqrt(R[:, free] @ R[:, free])
        X -= np.outer(u, u @ X)
        y = y - u * (u @ y)
    model = Lasso(alpha=lam0 / r, fit_intercept=False, warm_start=True, tol=tol,
                  max_iter=max_iter, selection="cyclic")
    sigma = float(np.sqrt(y @ y))
    coef, rounds = np.zeros(others.size), 0
    for rounds in range(1, max_rounds + 1 if others.size else 1):  # nothing to regress on
        model.alpha = lam0 * sigma / r
        model.fit(X, y)
        coef = model.coef_
        resid = y - X @ coef
        new_sigma = float(np.sqrt(resid @ resid))
        if abs(new_sigma - sigma) <= sigma_tol * max(sigma, 1e-12) or new_sigma <= 0:
            sigma = new_sigma
            break
        sigma = new_sigma
    direction = np.zeros(R.shape[1])
    direction[j] = 1.0
    direction[others] = -coef
    if free is not None:  # the free column's least-squares coefficient given the others
        rest = R[:, j] - R[:, others] @ coef
        direction[free] = -(R[:, free] @ rest) / (R[:, free] @ R[:, free])
    return direction, sigma, rounds


def nodewise_lasso(G, R, n_obs, columns, *, tol=1e-8, max_iter=10_000, n_jobs=None,
                   progress=None) -> NodewiseFit:
    """Scaled node-wise lasso for each coordinate in ``columns`` (threads over columns).

    ``G`` is X_a'X_a and ``R`` its pseudo-rows (see :func:`whitened_gram`).
    """
    from joblib import Parallel, delayed

    p = G.shape[0]
    scale = np.sqrt(np.clip(np.diag(G) / n_obs, 1e-300, None))
    Rs = R / scale[None, :]  # unit mean-square columns
    lam0 = np.sqrt(2 * np.log(max(p, 2)) / n_obs)
    columns = np.asarray(columns, dtype=np.int64)
    n_jobs = n_jobs or min(len(columns), os.cpu_count() or 1)
    done = [0]

    intercept = getattr(G, "intercept", None)  # unpenalised in every node-wise fit

    def one(j):
        out = _scaled_lasso(Rs, j, lam0, tol, max_iter, free=intercept)
        done[0] += 1
        if progress is not None and (done[0] % max(1, len(columns) // 10) == 0):
            progress(f"node-wise lasso {done[0]}/{len(columns)}")
        return out

    results = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(one)(j) for j in columns)
    coef = np.array([d for d, _, _ in results]).reshape(len(columns), p)
    coef = coef / scale[None, :] * scale[columns][:, None]  # back to X_a's column scale
    return NodewiseFit(columns, coef, np.array([k for _, _, k in results]))


def adjust_pvalues(p, method):
    """Benjamini-Hochberg ('bh'), Holm ('holm') or none (None)."""
    p = np.asarray(p, dtype=float)
    if method is None or p.size == 0:
        return p.copy()
    n = p.size
    order = np.argsort(p)
    ranked = p[order]
    if method == "bh":
        adj = np.minimum.accumulate((ranked * n / np.arange(1, n + 1))[::-1])[::-1]
    elif method == "holm":
        adj = np.maximum.accumulate(ranked * (n - np.arange(n)))
    else:
        raise ValueError(f"adjust must be one of 'bh', 'holm' or None, got {method!r}")
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
    cols = np.asarray(cols)
    denom = np.einsum("kp,pk->k", D, np.asarray(G)[:, cols])  # w_j'X_a[:, j]
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


def table_from_cache(cache, names, columns, coef, n_obs, df, level, adjust, n_jobs, progress,
                     tol):
    """The inference table of ``columns`` from a fit's cache (whitened Gram ``G``, its
    pseudo-rows ``R``, cluster ``scores``, node-wise ``rows`` fitted so far): the missing
    node-wise fits first, then the debiased estimates and the table."""
    todo = [j for j in columns if j not in cache["rows"]]
    if todo:
        progress(f"node-wise scaled lasso for {len(todo)} coordinates")
        fit = nodewise_lasso(cache["G"], cache["R"], n_obs, todo, n_jobs=n_jobs,
                             progress=progress, tol=tol)
        cache["rows"].update(zip(todo, fit.coef))
    directions = np.array([cache["rows"][j] for j in columns])
    est, se = debias(cache["G"], cache["scores"], coef, columns, directions)
    return inference_table(names, columns, est, se, df, level, adjust)


def inference_table(names, columns, estimate, std_error, df, level, adjust) -> pd.DataFrame:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"adjust must be one of 'bh', 'holm' or None, got {adjust!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = estimate / std_error  # referred to Student's t with df degrees of freedom
    p_value = 2 * sps.t.sf(np.abs(t), df)
    half = sps.t.ppf(0.5 + level / 2, df) * std_error
    return pd.DataFrame({
        "estimate": estimate, "std_error": std_error, "t": t, "p_value": p_value,
        "ci_lower": estimate - half, "ci_upper": estimate + half,
        "p_adjusted": adjust_pvalues(p_value, adjust),
    }, index=pd.Index([names[j] for j in columns], name="term"))
