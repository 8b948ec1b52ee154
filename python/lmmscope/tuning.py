"""Selection with tuning of the support size k and of the proxy-covariance scale a.

k (the k choice, :func:`choose_k`): an integer fixes it; ``None`` walks k = 0..k_max
(warm-started best subsets) and picks the minimiser of an information criterion of
the profiled quasi-likelihood (GIC by default); ``"cv"`` scores each k by the
whitened prediction error on held-out clusters (K-fold, folds of whole clusters).

a (the tuning of a) scales the proxy Sigma_a = a Z~ Z~' + I, where Z~ is Z with each
column divided by its root mean square (``Control.unit_free_z``), so neither a nor the
selection depends on Z's units:
- a number fixes it.
- ``None`` (default): "select, refit the mixed model by REML on the selected support,
  set a to the fitted random-effect to noise variance ratio", repeated until the
  support stops changing or a moves by less than ``Control.a_relative_tol``, from
  a = 0 (no whitening, so no fixed slope can be whitened away into the random slope)
  and, unless that iteration selected one support throughout, from the REML variance
  ratio of the model with only the unpenalised columns.  Every support visited is then scored on the mixed model refitted
  by ML on it (-2 log-likelihood, plus the penalty of ``criterion`` on its size) and
  the best one is returned, with the a at which it was selected: the iteration cannot
  settle on a fixed point that another start beats on the refitted likelihood.
- ``"cv"`` picks a on a grid by the raw prediction error sum((y - X beta)^2) on
  held-out clusters, which is comparable across a (the whitened loss is not).  The
  k of each training fold is fixed when k is an integer, and chosen on the fold by
  ``criterion`` when k is None or "cv" (one level of cross-validation, not nested).
  Then k is chosen at that a as for a fixed a: by ``criterion``, fixed, or (k="cv")
  by the whitened held-out error.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import checks
from .backend import OneFactorBackend
from .control import Control, as_control
from .cluster_stats import compute_cluster_stats
from .row_whitening import WhitenedOperator, whitened_rows
from .z_units import proxy_z_scale
from .intercept import InterceptPrepended
from .layouts import GramLayout, RowLayout, choose_layout
from .z_units import rescale_z
from .refit import Refitter
from .criteria import CRITERIA, information_criteria
from .selection import PathStep, selection_path

DEFAULT_A_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


def gram_pays_off(n_obs: int, p: int, k, a, control: Control | None = None) -> bool:
    """Whether to work on the p x p whitened Gram (True) or on whitened rows."""
    return choose_layout(n_obs, p, k, a, control).uses_gram


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


def _like(X, copy):
    """``copy`` (X's values after its first column for an InterceptPrepended X) as X."""
    return InterceptPrepended(copy[:, 1:]) if isinstance(X, InterceptPrepended) else copy


class Data(OneFactorBackend):
    """The in-memory data backend (:class:`lmmscope.backend.DataBackend`): the raw
    arrays, their per-cluster statistics (one pass) and the layout (Gram or rows,
    :mod:`lmmscope.layouts`) chosen once.  ``layout`` may be given; else ``use_gram``
    picks it, else the size.  ``x_moments``: the :class:`~lmmscope.column_products.RawMoments` of
    X's own columns, where the input checks computed them (the statistics then need no
    pass of their own for them)."""

    def __init__(self, X, y, Z, codes, n_groups, use_gram=None, control: Control | None = None,
                 layout=None, x_moments=None):
        self.X, self.y, self.Z, self.codes, self.n_groups = X, y, Z, codes, n_groups
        self.N, self.p = X.shape
        self.control = as_control(control)
        if layout is None:
            layout = (choose_layout(self.N, self.p, control=self.control) if use_gram is None
                      else GramLayout() if use_gram else RowLayout())
        self.layout = layout
        # The proxy Sigma_a = a Z Z' + I is built on Z's columns scaled to unit root mean
        # square, so a and the selection do not depend on Z's units; ``stats`` and ``Z``
        # describe the scaled columns, ``subset_stats`` (for the refit) the data's own.
        # Z's columns are scaled before the products: rescaling Z'X afterwards would
        # cost a pass over an array q / (mean cluster size) times the size of X.
        Z = np.asarray(Z, dtype=float)
        self.z_scale = proxy_z_scale(self.control, np.einsum("ij,ij->j", Z, Z), Z.shape[0])
        self.Z = Z / self.z_scale
        known = None if x_moments is None else (x_moments.sums, x_moments.squares)
        self._x_raw, self._column_products = x_moments, None
        self._x_squares = None if x_moments is None else x_moments.squares
        # a row-major copy of a column-major X, made by the input checks: the products
        # read it, and the first whitening overwrites it (it becomes X_a)
        self._overwritable = None if x_moments is None else x_moments.row_major
        if self._overwritable is not None:
            x_moments.row_major = None  # owned here
            if self._overwritable.shape != X.shape:
                raise ValueError("the row-major copy does not match X's shape")
        rows = X if self._overwritable is None else _like(X, self._overwritable)
        self.stats = compute_cluster_stats(rows, y, self.Z, codes, n_groups,
                                           gram=self.use_gram, moments=known,
                                           performance=self.control.performance)
        self._fold_cache = {}

    @property
    def use_gram(self) -> bool:
        return self.layout.uses_gram

    def release_row_major_copy(self):
        """Free the row-major copy of X if no whitening took it (the fit is over)."""
        self._overwritable = None

    def reduced(self, a, unpenalised):
        """(penalised problem at ``a`` on all clusters, tr(Sigma_a^{-1}) or None)."""
        return self.layout.reduced(self, a, unpenalised)

    def whitened_gram(self, a):
        """X_a'X_a, for inference (as the streamed and Dask backends')."""
        return self.layout.whitened_gram(self, a)

    def cluster_scores(self, a, beta, progress=None):
        """Per-cluster Xc_i' Sigma_a,i^{-1} r_i, from the rows (see inference.cluster_scores)."""
        from .inference import cluster_scores  # scipy.stats: loaded when inference runs
        return cluster_scores(self, a, beta)

    def whitened_operator(self, a):
        """X_a as a :class:`~lmmscope.row_whitening.WhitenedOperator` (nothing the size of X
        formed), or None where centring must come first (shifted statistics, or an
        intercept prepended)."""
        if self.stats.centred or isinstance(self.X, InterceptPrepended):
            return None
        self._overwritable = None  # X_a is not formed: the row-major copy is not needed
        return WhitenedOperator(self.X, self.y, self.Z, self.codes, self.n_groups, a, self.stats,
                                raw_squares=self._x_squares)

    def held_out_rows(self, rows):
        """(X, y) of the rows ``rows`` (a boolean mask), for held-out errors: centred by
        the statistics' shifts, as the coefficients inside tuning are."""
        return self.X[rows] - self.stats.x_shift, self.y[rows] - self.stats.y_shift

    def whitened_rows(self, a):
        """:class:`~lmmscope.row_whitening.WhitenedRows` (fresh X_a, y_a, X_a's column sums
        of squares and X_a'y_a), reusing the stored cross-products."""
        overwrite, self._overwritable = self._overwritable, None
        return whitened_rows(self.X, self.y, self.Z, self.codes, self.n_groups, a,
                             stats=self.stats, overwrite=overwrite,
                             performance=self.control.performance)

    def subset_stats(self, columns):
        """Cross-products restricted to the columns ``columns`` of X (for REML fits), in
        the data's own Z units."""
        return rescale_z(self.layout.subset_stats(self, columns), 1.0 / self.z_scale)

    def column_products(self):
        """What the column and rank checks read (the layout's
        :class:`~lmmscope.column_products.ColumnProducts`), made once: on rows, its
        moments are one scan shared by every check."""
        if self._column_products is None:
            self._column_products = self.layout.column_products(self.stats, self.X,
                                                                raw=self._x_raw)
        return self._column_products

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
                                           center=(self.stats.x_shift, self.stats.y_shift),
                                           performance=self.control.performance)
                out.append((rows, st))
            self._fold_cache[key] = out
        return self._fold_cache[key]

    def fold_problems(self, a, unpenalised, fold_of_cluster):
        """Per fold: (training problem, held-out whitened and raw quadratics, training rows)."""
        return self.layout.fold_problems(self, a, unpenalised, self.fold_stats(fold_of_cluster))


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
    """``path`` (one row per k) and ``a_history`` are data frames built on first use
    (a frame costs about as much as a small fit's selection step)."""

    coef: np.ndarray
    support: np.ndarray  # penalised columns selected (indices)
    k: int
    a: float
    path_parts: tuple  # (path steps, their criteria, held-out errors or None)
    path_coef: np.ndarray  # (len(path), p)
    criterion: str
    history: list  # the rows of a_history

    @functools.cached_property
    def path(self) -> pd.DataFrame:
        return _path_frame(*self.path_parts)

    @functools.cached_property
    def a_history(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)


@dataclass
class KChoice:
    """The selection path at one a and the k chosen on it."""

    a: float
    chosen: object  # selection.PathStep
    path_parts: tuple  # see SelectionResult
    path_coef: np.ndarray


@dataclass
class Tuning:
    """The fixed settings of one :func:`select` call, and its caches."""

    data: object  # a lmmscope.backend.DataBackend
    unpenalised: list
    k: object
    criterion: str
    k_max: int
    cv_folds: int
    random_state: object
    progress: Progress
    control: Control
    refitter: Refitter
    paths: dict = field(default_factory=dict)  # a -> (steps, criteria rows)
    cv_errors: dict = field(default_factory=dict)  # a -> whitened held-out error per k

    @property
    def n_pen(self) -> int:
        return self.data.p - len(self.unpenalised)


def _path_frame(steps, criterion_rows, cv_error=None):
    columns = {"k": [s.k for s in steps], "rss_whitened": [s.rss for s in steps]}
    columns.update({name: [row[name] for row in criterion_rows] for name in CRITERIA})
    if cv_error is not None:
        columns["cv_error"] = cv_error
    return pd.DataFrame(columns)  # at once: a column added to a frame costs ~0.1 ms


def _ks(t: Tuning):
    return np.arange(0, t.k_max + 1) if (t.k is None or isinstance(t.k, str)) else np.array([t.k])


def _selection_path(t: Tuning, problem, ks, progress=None):
    """selection_path with the search settings of ``t.control``."""
    return selection_path(problem, ks, progress=progress, search_effort=t.control.search_effort,
                          engine=t.control.engine, limits=t.control.search_limits())


def _path_at(t: Tuning, a):
    """Best subsets over k at ``a`` with their criteria (cached by a)."""
    if a not in t.paths:
        problem, _ = t.data.reduced(a, t.unpenalised)
        ks = _ks(t)
        report = None
        if t.progress.verbose and len(ks) > 1:
            report = lambda s: t.progress(f"  a={a:.4g} k={s.k} rss={s.rss:.6g}")
        steps = _selection_path(t, problem, ks, progress=report)
        crit = [information_criteria(s.rss, s.k, len(t.unpenalised), t.data.N, t.n_pen)
                for s in steps]
        t.paths[a] = (steps, crit)
    return t.paths[a]


def choose_k(t: Tuning, a, k_index=None, cv_error=None) -> KChoice:
    """The k choice at ``a``: by the criterion, by CV (whitened held-out error), fixed,
    or (``k_index``) a position on the path chosen elsewhere."""
    steps, crit = _path_at(t, a)
    if isinstance(t.k, str) and cv_error is None:
        cv_error = _whitened_cv_errors(t, a)
    if k_index is not None:
        best = int(k_index)
    elif isinstance(t.k, str):
        best = int(np.argmin(cv_error))
    elif t.k is None:
        best = int(np.argmin([c[t.criterion] for c in crit]))
    else:
        best = 0
    return KChoice(a, steps[best], (steps, crit, cv_error), np.array([s.coef for s in steps]))


def _whitened_cv_errors(t: Tuning, a) -> np.ndarray:
    if a in t.cv_errors:
        return t.cv_errors[a]
    folds = make_folds(t.data.n_groups, t.cv_folds, t.random_state)
    ks = _ks(t)
    errors = np.zeros(len(ks))
    for f, (train, held_white, _raw, _n) in enumerate(t.data.fold_problems(a, t.unpenalised, folds)):
        errors += [quadratic_error(held_white, s.coef)
                   for s in _selection_path(t, train, ks)]
        t.progress(f"  a={a:.4g} fold {f + 1}/{t.cv_folds} done")
    t.cv_errors[a] = errors
    return errors


def _refit_score(t: Tuning, support) -> float:
    """-2 log-likelihood of the ML refit on the support plus the criterion's penalty."""
    columns = sorted(set(t.unpenalised) | set(int(j) for j in support))
    N = t.data.N
    penalty = information_criteria(N, len(support), len(t.unpenalised), N, t.n_pen)[t.criterion]
    return t.refitter.ml_deviance(columns) + penalty


def _a_starts(t: Tuning):
    """Unit-free starts: a = 0 (its whitened Gram is X'X itself), then the REML variance
    ratio of the unpenalised-only model (a callable: computed only if that start runs)."""
    return [("a = 0", lambda: 0.0),
            ("unpenalised REML", lambda: t.refitter.variance_ratio(t.unpenalised))]


def _stable(history, label) -> bool:
    """Whether the iteration from ``label`` selected one support throughout and ended
    at a fixed point (a support selected twice, or a that no longer moves)."""
    rows = [row for row in history if row["start"] == label]
    return len(rows) > 1 and len({row["support"] for row in rows}) == 1


def _iterate_from(t: Tuning, label, a_start, visited, history):
    """The select/refit iteration from one start; records every support it selects
    (and, for k=None, the path's supports up to two beyond the chosen size)."""
    earlier = set(visited)
    a_cur, previous = a_start, None
    for it in range(t.control.max_a_iter):
        choice = choose_k(t, a_cur)
        support = tuple(int(j) for j in choice.chosen.support)
        history.append({"start": label, "iteration": it, "a": a_cur, "k": choice.chosen.k,
                        "support": support})
        _record(t, visited, earlier, a_cur, choice)
        t.progress(f"[{label}] a={a_cur:.4g}: k={choice.chosen.k}, support={list(support)}")
        if support == previous or support in earlier:
            break  # a fixed point, or the path an earlier start already followed
        previous = support
        a_next = _support_ratio(t, support)
        history[-1]["a_next"] = a_next
        if abs(a_next - a_cur) <= t.control.a_relative_tol * max(a_cur, 1e-8):
            break  # a selection at a_next would be at (almost) the same a
        a_cur = a_next


def _support_ratio(t: Tuning, support) -> float:
    return t.refitter.variance_ratio(sorted(set(t.unpenalised) | set(support)))


def _record(t: Tuning, visited, earlier, a, choice):
    """support -> the a it was selected at; an earlier start's record is kept."""
    support = tuple(int(j) for j in choice.chosen.support)
    if support not in earlier:
        visited[support] = a
    if t.k is None:
        steps, _ = _path_at(t, a)
        for step in steps[:choice.chosen.k + 3]:
            visited.setdefault(tuple(int(j) for j in step.support), a)


def _tune_a_by_refit(t: Tuning):
    visited, history = {}, []
    for number, (label, a_start) in enumerate(_a_starts(t)):
        if number and _stable(history, first):
            break  # the second start only where the first one's support moved
        first = first if number else label
        _iterate_from(t, label, a_start(), visited, history)
    scores = {s: _refit_score(t, s) for s in visited}
    for row in history:
        row["refit_criterion"] = scores[row["support"]]
    best = min(scores, key=scores.get)
    t.progress(f"refitted-likelihood comparison of {len(scores)} supports: "
               f"{list(best)} ({scores[best]:.6g})")
    a_best = _support_ratio(t, best)
    if abs(a_best - visited[best]) <= t.control.a_relative_tol * max(visited[best], 1e-8):
        a_best = visited[best]  # selected at its own variance ratio: a fixed point
    history.append({"start": "refitted likelihood", "iteration": 0, "a": a_best,
                    "k": len(best), "support": best, "refit_criterion": scores[best]})
    return _forced_choice(t, a_best, best), history


def _forced_choice(t: Tuning, a, support) -> KChoice:
    """The path at ``a``, with the quasi-likelihood fit on ``support`` as the chosen step."""
    steps, crit = _path_at(t, a)
    for index, step in enumerate(steps):
        if tuple(int(j) for j in step.support) == tuple(support):
            return choose_k(t, a, k_index=index)
    problem, _ = t.data.reduced(a, t.unpenalised)
    local = np.searchsorted(problem.penalised, np.asarray(support, dtype=np.int64))
    b = problem.loss.solve_on(local)
    chosen = PathStep(k=len(support), support=np.asarray(support, dtype=np.int64),
                      coef=problem.recover(b / problem.scale), rss=problem.loss.rss(b))
    cv_error = _whitened_cv_errors(t, a) if isinstance(t.k, str) else None
    return KChoice(a, chosen, (steps, crit, cv_error), np.array([s.coef for s in steps]))


def _tune_a_by_cv(t: Tuning, grid):
    """a by the raw held-out prediction error; then k at that a by the rule asked."""
    folds = make_folds(t.data.n_groups, t.cv_folds, t.random_state)
    errors = [_raw_cv_error(t, a, folds) for a in grid]
    history = [{"iteration": i, "a": a, "cv_error": err} for i, (a, err) in enumerate(zip(grid, errors))]
    for row in history:
        t.progress(f"a={row['a']:.4g}: held-out prediction error {row['cv_error']:.6g}")
    return choose_k(t, grid[int(np.argmin(errors))]), history


def _raw_cv_error(t: Tuning, a, folds) -> float:
    """Summed raw held-out error at ``a`` of each training fold's fit, its k fixed (integer
    k) or chosen on the fold by ``criterion`` (k None or "cv": one CV level, not nested)."""
    ks = _ks(t)
    total = 0.0
    for train, _held_white, held_raw, n_train in t.data.fold_problems(a, t.unpenalised, folds):
        steps = _selection_path(t, train, ks)
        crit = [information_criteria(s.rss, s.k, len(t.unpenalised), n_train, t.n_pen)[t.criterion]
                for s in steps]
        total += quadratic_error(held_raw, steps[int(np.argmin(crit))].coef)
    return total


def _validated_settings(data, unpenalised, k, criterion, k_max):
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    N = data.N
    n_unpen = len(unpenalised)
    n_pen = data.p - n_unpen
    if n_unpen >= N:
        raise ValueError(f"{n_unpen} unpenalised columns but only {N} rows")
    if isinstance(k, str) and not checks.is_cv(k):
        raise ValueError(f"k must be an integer, None or 'cv', got {k!r}")
    if k is not None and not checks.is_cv(k):
        k = checks.check_k(k, n_pen, N, n_unpen)
    k_max = default_k_max(n_pen, N, n_unpen) if k_max is None else checks.check_k(k_max, n_pen, N, n_unpen)
    return k, k_max


def select(data, *, unpenalised, names, k=None, a=None, criterion="gic", k_max=None,
           cv_folds=5, a_grid=DEFAULT_A_GRID, random_state=0, verbose=False,
           control: Control | None = None, refitter: Refitter | None = None) -> SelectionResult:
    """Best-subset selection of fixed effects with k and a tuned as documented above.

    ``refitter`` (a :class:`~lmmscope.refit.Refitter` on ``data``) is shared with the
    caller so the final refit reuses the tuning's fits."""
    control = as_control(control)
    progress = verbose if isinstance(verbose, Progress) else Progress(verbose)
    unpenalised = sorted(int(j) for j in unpenalised)
    k, k_max = _validated_settings(data, unpenalised, k, criterion, k_max)
    t = Tuning(data, unpenalised, k, criterion, k_max, cv_folds, random_state, progress,
               control, refitter or Refitter(data, control))
    if a is None:
        choice, history = _tune_a_by_refit(t)
    elif checks.is_cv(a):
        choice, history = _tune_a_by_cv(t, [checks.check_a(v) for v in a_grid])
    elif checks.is_number(a):
        choice = choose_k(t, checks.check_a(a))
        history = [{"iteration": 0, "a": choice.a, "k": choice.chosen.k,
                    "support": tuple(int(j) for j in choice.chosen.support)}]
    else:
        raise ValueError(f"a must be a non-negative number, None or 'cv', got {a!r}")
    chosen = choice.chosen
    return SelectionResult(coef=chosen.coef, support=np.asarray(chosen.support, dtype=np.int64),
                           k=chosen.k, a=float(choice.a), path_parts=choice.path_parts,
                           path_coef=choice.path_coef,
                           criterion="cv" if checks.is_cv(k) else criterion,
                           history=history)
