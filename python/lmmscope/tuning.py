"""Selection with tuning of the support size k and of the proxy-covariance scale a.

k: an integer fixes it; ``None`` walks k = 0..k_max (warm-started best subsets) and
picks the minimiser of an information criterion of the profiled quasi-likelihood
(GIC by default); ``"cv"`` scores each k by the whitened prediction error on held-out
clusters (K-fold, folds of whole clusters).

a: a number fixes it; ``None`` (default) iterates "select, refit the mixed model by
REML on the selected support, set a to the fitted random-effect to noise variance
ratio" until the support stops changing or a moves by less than 1%; ``"cv"`` picks a on a grid by the raw
prediction error sum((y - X beta)^2) on held-out clusters, which is comparable
across a (the whitened loss is not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import checks
from .crossprod import compute_cluster_stats, whiten_rows, whiten_stats
from .profiled import optimise_theta, solve_pls
from .selection import CRITERIA, information_criteria, reduce_gram, reduce_rows, selection_path

DEFAULT_A_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# Above this many columns (and when p > N) the p x p Gram is not formed.
GRAM_LIMIT = 4000
# A single selection (k and a both fixed) runs on whitened rows up to this size:
# its tens of O(Np) gradient evaluations cost less than the O(Np^2) Gram, and the
# rows are one copy of X.
SINGLE_PROBLEM_ROWS_BYTES = 2**28


A_RELATIVE_TOL = 1e-2  # the a-iteration stops when a moves by less than 1%


def gram_pays_off(n_obs: int, p: int, k, a) -> bool:
    """Whether to work on the p x p whitened Gram (True) or on whitened rows."""
    single_problem = (isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                      and isinstance(a, (int, float, np.number)) and not isinstance(a, bool))
    if single_problem and 8 * n_obs * p <= SINGLE_PROBLEM_ROWS_BYTES:
        return False
    return p <= max(n_obs, GRAM_LIMIT)


def default_k_max(n_penalised: int, n_obs: int, n_unpenalised: int) -> int:
    """min(p, N / log N, 50), and always below the residual degrees of freedom."""
    by_n = int(n_obs / np.log(max(n_obs, 3)))
    return int(max(0, min(n_penalised, by_n, 50, n_obs - n_unpenalised - 2)))


class Progress:
    def __init__(self, verbose):
        self.verbose = bool(verbose)
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        if self.verbose:
            print(f"[lmmscope {time.perf_counter() - self.t0:7.2f}s] {msg}", flush=True)


class Data:
    """The raw arrays and their per-cluster statistics (one pass), Gram or row form."""

    def __init__(self, X, y, Z, codes, n_groups, use_gram=None):
        self.X, self.y, self.Z, self.codes, self.n_groups = X, y, Z, codes, n_groups
        self.N, self.p = X.shape
        self.use_gram = gram_pays_off(self.N, self.p, None, None) if use_gram is None else use_gram
        self.stats = compute_cluster_stats(X, y, Z, codes, n_groups, gram=self.use_gram)
        self._fold_cache = {}

    def reduced(self, a, unpenalised, rows=None):
        """The penalised problem at ``a`` on all clusters, or on the rows ``rows``."""
        if self.use_gram:
            if rows is None:
                w = whiten_stats(self.stats, a)
                return reduce_gram(w.gram, w.xty, w.yty, unpenalised), w.trace_inv
            raise ValueError("use fold_problems for subsets in Gram form")
        Xa, ya = self.whitened_rows(a)
        if rows is not None:
            Xa, ya = Xa[rows], ya[rows]
        return reduce_rows(Xa, ya, unpenalised), None

    def whitened_rows(self, a):
        """(X_a, y_a): fresh arrays, reusing the stored cross-products."""
        return whiten_rows(self.X, self.y, self.Z, self.codes, self.n_groups, a, stats=self.stats)

    def subset_stats(self, columns):
        """Cross-products restricted to the columns ``columns`` of X (for REML fits)."""
        if self.stats.XtX is not None:
            return self.stats.subset(columns)
        return compute_cluster_stats(self.X[:, columns], self.y, self.Z, self.codes, self.n_groups)

    def fold_stats(self, fold_of_cluster):
        """Per-fold ClusterStats (computed once; cluster codes renumbered within a fold)."""
        key = fold_of_cluster.tobytes()
        if key not in self._fold_cache:
            out = []
            for f in np.unique(fold_of_cluster):
                clusters = np.flatnonzero(fold_of_cluster == f)
                rows = np.isin(self.codes, clusters)
                remap = -np.ones(self.n_groups, dtype=np.int64)
                remap[clusters] = np.arange(clusters.size)
                st = compute_cluster_stats(self.X[rows], self.y[rows], self.Z[rows],
                                           remap[self.codes[rows]], clusters.size,
                                           gram=self.use_gram,
                                           center=(self.stats.x_shift, self.stats.y_shift))
                out.append((rows, st))
            self._fold_cache[key] = out
        return self._fold_cache[key]

    def fold_problems(self, a, unpenalised, fold_of_cluster):
        """Per fold: (training problem, held-out whitened and raw quadratics, training rows)."""
        folds = self.fold_stats(fold_of_cluster)
        out = []
        if self.use_gram:
            total = whiten_stats(self.stats, a)
            for rows, st in folds:
                held = whiten_stats(st, a)
                train = reduce_gram(total.gram - held.gram, total.xty - held.xty,
                                    total.yty - held.yty, unpenalised)
                out.append((train, (held.gram, held.xty, held.yty), (st.XtX, st.Xty, st.yty),
                            self.N - st.n_obs))
        else:
            Xa, ya = self.whitened_rows(a)
            for rows, st in folds:
                train = reduce_rows(Xa[~rows], ya[~rows], unpenalised)
                Xh, yh = Xa[rows], ya[rows]
                Xr = self.X[rows] - self.stats.x_shift  # centred, as the coefficients
                yr = self.y[rows] - self.stats.y_shift
                out.append((train, (Xh.T @ Xh, Xh.T @ yh, float(yh @ yh)),
                            (Xr.T @ Xr, Xr.T @ yr, float(yr @ yr)), int((~rows).sum())))
        return out


def quadratic_error(quad, beta):
    G, c, yy = quad
    return float(yy - 2 * c @ beta + beta @ G @ beta)


def make_folds(n_groups, n_folds, random_state):
    if n_folds < 2 or n_folds > n_groups:
        raise ValueError(f"cross-validation needs 2 <= folds <= clusters ({n_groups}), got {n_folds}")
    rng = np.random.default_rng(random_state)
    fold = np.empty(n_groups, dtype=np.int64)
    fold[rng.permutation(n_groups)] = np.arange(n_groups) % n_folds
    return fold


@dataclass
class SelectionResult:
    coef: np.ndarray
    support: np.ndarray  # penalised columns selected (indices)
    k: int
    a: float
    path: pd.DataFrame  # one row per k
    path_coef: np.ndarray  # (len(path), p)
    criterion: str
    a_history: pd.DataFrame
    trace_inv: float | None
    reml_start: tuple | None = None  # (columns, theta) of the last REML fit, for warm starts


def _path_frame(steps, criterion_rows, cv_error=None):
    df = pd.DataFrame({"k": [s.k for s in steps], "rss_whitened": [s.rss for s in steps]})
    for name in CRITERIA:
        df[name] = [row[name] for row in criterion_rows]
    if cv_error is not None:
        df["cv_error"] = cv_error
    return df


def select_at_a(data: Data, a, unpenalised, k, criterion, k_max, n_folds, random_state, progress):
    """Selection for one value of a: the path over k and the chosen k."""
    n_unpen = len(unpenalised)
    n_pen = data.p - n_unpen
    problem, trace_inv = data.reduced(a, unpenalised)
    ks = np.arange(0, k_max + 1) if (k is None or isinstance(k, str)) else np.array([k])
    steps = selection_path(problem, ks, progress=(lambda s: progress(f"  a={a:.4g} k={s.k} "
                                                                     f"rss={s.rss:.6g}"))
                           if progress.verbose and len(ks) > 1 else None)
    crit = [information_criteria(s.rss, s.k, n_unpen, data.N, n_pen) for s in steps]
    cv_error = None
    if isinstance(k, str):  # "cv"
        folds = make_folds(data.n_groups, n_folds, random_state)
        cv_error = np.zeros(len(ks))
        for f, (train, held_white, _raw, _n) in enumerate(data.fold_problems(a, unpenalised, folds)):
            fold_steps = selection_path(train, ks)
            cv_error += [quadratic_error(held_white, s.coef) for s in fold_steps]
            progress(f"  a={a:.4g} fold {f + 1}/{n_folds} done")
        best = int(np.argmin(cv_error))
    elif k is None:
        best = int(np.argmin([c[criterion] for c in crit]))
    else:
        best = 0
    path = _path_frame(steps, crit, cv_error)
    chosen = steps[best]
    return chosen, path, np.array([s.coef for s in steps]), trace_inv


def variance_ratio(data: "Data", columns):
    """a = tr(Psi S) / (sigma^2 tr S), S = sum_i Z_i'Z_i, from a REML fit on ``columns``.

    Returns (a, theta); theta warm-starts the final refit on the same support.
    This is the average share of random-effect to noise variance per row, in the
    units of the data, so it is invariant to rescaling the columns of Z.
    """
    stats = data.stats
    sub = data.subset_stats(columns)
    theta, _dev, _ = optimise_theta(sub, reml=True)
    sol = solve_pls(sub, theta)
    # Psi / sigma^2 = Lam Lam'
    S = stats.ZtZ.sum(axis=0)
    rel = sol.Lam @ sol.Lam.T
    return float(np.trace(rel @ S) / max(np.trace(S), 1e-300)), theta


def select(data: Data, *, unpenalised, names, k=None, a=None, criterion="gic",
           k_max=None, cv_folds=5, a_grid=DEFAULT_A_GRID, max_a_iter=6,
           random_state=0, verbose=False) -> SelectionResult:
    """Best-subset selection of fixed effects with k and a tuned as documented above."""
    progress = verbose if isinstance(verbose, Progress) else Progress(verbose)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    N, p, n_groups = data.N, data.p, data.n_groups
    unpenalised = sorted(int(j) for j in unpenalised)
    n_unpen = len(unpenalised)
    n_pen = p - n_unpen
    if n_unpen >= N:
        raise ValueError(f"{n_unpen} unpenalised columns but only {N} rows")
    if isinstance(k, str) and k != "cv":
        raise ValueError(f"k must be an integer, None or 'cv', got {k!r}")
    if k is not None and not isinstance(k, str):
        k = checks.check_k(k, n_pen, N, n_unpen)
    if k_max is None:
        k_max = default_k_max(n_pen, N, n_unpen)
    else:
        k_max = checks.check_k(k_max, n_pen, N, n_unpen)

    history = []
    reml_start = None
    if a is None or isinstance(a, (int, float, np.floating, np.integer)) and not isinstance(a, bool):
        if a is not None:
            a_values = [checks.check_a(a)]
        else:
            a_values = [1.0]
        previous = None
        for it in range(max_a_iter if a is None else 1):
            a_cur = a_values[-1]
            chosen, path, path_coef, trace_inv = select_at_a(
                data, a_cur, unpenalised, k, criterion, k_max, cv_folds, random_state, progress)
            support = tuple(chosen.support)
            row = {"iteration": it, "a": a_cur, "k": chosen.k, "support": support}
            history.append(row)
            progress(f"a={a_cur:.4g}: k={chosen.k}, support={[int(j) for j in support]}")
            if a is not None or support == previous:
                break
            previous = support
            reml_columns = sorted(set(unpenalised) | set(support))
            a_next, theta = variance_ratio(data, reml_columns)
            reml_start = (tuple(reml_columns), theta)
            row["a_next"] = a_next
            if abs(a_next - a_cur) <= A_RELATIVE_TOL * max(a_cur, 1e-8):
                break  # a selection at a_next would be at (almost) the same a
            a_values.append(a_next)
    elif a == "cv":
        grid = [checks.check_a(v) for v in a_grid]
        folds = make_folds(n_groups, cv_folds, random_state)
        errors = []
        for a_cur in grid:
            err = 0.0
            for train, _held_white, held_raw, n_train in data.fold_problems(a_cur, unpenalised, folds):
                if k is None or isinstance(k, str):
                    ks = np.arange(0, k_max + 1)
                    steps = selection_path(train, ks)
                    crit = [information_criteria(s.rss, s.k, n_unpen, n_train, n_pen)[criterion]
                            for s in steps]
                    beta = steps[int(np.argmin(crit))].coef
                else:
                    beta = selection_path(train, [k])[0].coef
                err += quadratic_error(held_raw, beta)
            errors.append(err)
            history.append({"iteration": len(history), "a": a_cur, "cv_error": err})
            progress(f"a={a_cur:.4g}: held-out prediction error {err:.6g}")
        a_cur = grid[int(np.argmin(errors))]
        chosen, path, path_coef, trace_inv = select_at_a(
            data, a_cur, unpenalised, k, criterion, k_max, cv_folds, random_state, progress)
    else:
        raise ValueError(f"a must be a non-negative number, None or 'cv', got {a!r}")
    return SelectionResult(coef=chosen.coef, support=np.asarray(chosen.support, dtype=np.int64),
                           k=chosen.k, a=float(a_cur), path=path, path_coef=path_coef,
                           criterion="cv" if isinstance(k, str) else criterion,
                           a_history=pd.DataFrame(history), trace_inv=trace_inv,
                           reml_start=reml_start)
