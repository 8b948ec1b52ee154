"""Gram or rows: the two layouts of the whitened problem, chosen once per fit.

:class:`GramLayout` works on the p x p whitened Gram, computed from the per-cluster
cross-products by Woodbury (no pass over the rows per a); :class:`RowLayout` on the
whitened rows X_a themselves, for p too large for a Gram (p >> N) or for one fixed
(k, a) problem.  A data backend (:class:`lmmscope.tuning.Data`, or a streamed one)
holds one of them and answers ``reduced``, ``fold_problems`` and ``whitened_gram``
through it (``use_gram`` says which).  The layout also supplies what the column and
rank checks read (``column_products``: a
:class:`~lmmscope.column_products.ColumnProducts` from the Gram or from X's rows) and
the refit's statistics of a few columns (``subset_stats``: from the Gram, or one pass
over those columns), so that neither the checks nor the backend branch on the layout.

One fixed (k, a) problem never forms a second array as large as its data: on a
Gram, the whitened Gram's columns are computed as the search asks for them
(:class:`~lmmscope.whitening.WhitenedGramColumns`; so is every problem on a Gram
over ``Control.performance.on_demand_gram_bytes``); on rows without a shift or unpenalised columns,
X_a is an operator (:class:`~lmmscope.row_whitening.WhitenedOperator`).
"""

from __future__ import annotations

import numpy as np

from . import checks
from .backend import FoldProblem, fold_problems_of_whitened
from .cluster_stats import compute_cluster_stats
from .column_products import GramProducts, RowProducts
from .control import Control, as_control
from .whitening import WhitenedGramColumns, whiten_stats
from .reduction import reduce_gram, reduce_gram_columns, reduce_operator, reduce_rows
from .threads import one_blas_thread



def _single_problem(k, a) -> bool:
    """k and a both fixed numbers: one selection, no tuning."""
    return checks.is_whole_number(k) and checks.is_number(a)


def whitens_rows_once(n_obs: int, p: int, k=None, a=None, control: Control | None = None
                      ) -> bool:
    """One selection (k and a fixed) on the whitened rows: X is whitened once."""
    return _single_problem(k, a) and not choose_layout(n_obs, p, k, a, control).uses_gram


def choose_layout(n_obs: int, p: int, k=None, a=None, control: Control | None = None):
    """GramLayout unless one fixed (k, a) problem fits in ``single_problem_rows_bytes``
    (tens of O(Np) gradients cost less than the O(Np^2) Gram), or p exceeds both N
    and ``gram_limit``."""
    control = as_control(control)
    single_problem = _single_problem(k, a)
    if single_problem and 8 * n_obs * p <= control.single_problem_rows_bytes:
        return RowLayout()
    if p > max(n_obs, control.gram_limit):
        return RowLayout()
    return GramLayout(columns_on_demand=single_problem
                      or 8 * p * p > control.performance.on_demand_gram_bytes)


def gram_fold_problems(stats, fold_stats, a, unpenalised):
    """A :class:`~lmmscope.backend.FoldProblem` per fold, the training statistics being
    the totals minus the held-out fold's."""
    return fold_problems_of_whitened(whiten_stats(stats, a),
                                     [whiten_stats(st, a) for st in fold_stats], fold_stats,
                                     unpenalised)


class GramLayout:
    """Whitened cross-products X_a'X_a, X_a'y_a from the per-cluster statistics.

    ``columns_on_demand``: the search reads the whitened Gram's columns as it asks
    for them (those of its supports and screens) instead of forming it: no second
    p x p array beside X'X, and for one selection (k and a fixed) far fewer flops."""

    uses_gram = True

    def __init__(self, columns_on_demand: bool = False):
        self.columns_on_demand = columns_on_demand

    def reduced(self, data, a, unpenalised):
        if self.columns_on_demand:
            w = WhitenedGramColumns(data.stats, a)
            return reduce_gram_columns(w, unpenalised), w.trace_inv
        w = whiten_stats(data.stats, a)
        return reduce_gram(w.gram, w.xty, w.yty, unpenalised), w.trace_inv

    def fold_problems(self, data, a, unpenalised, folds):
        return gram_fold_problems(data.stats, [st for _rows, st in folds], a, unpenalised)

    def whitened_gram(self, data, a):
        """X_a'X_a by columns (for inference: a few columns cost a few columns)."""
        return WhitenedGramColumns(data.stats, a)

    def column_products(self, stats, X, raw=None):
        """What the column and rank checks read: the Gram of ``stats``."""
        return GramProducts(stats)

    def subset_stats(self, data, columns):
        """The statistics of the columns ``columns``, taken from the Gram."""
        return data.stats.subset(columns)


class RowLayout:
    """Whitened rows (X_a, y_a), one copy of X at a time."""

    uses_gram = False

    def reduced(self, data, a, unpenalised):
        # passes over the rows (matrix-vector products, rank-k updates) are bound by
        # memory: a second BLAS thread adds little, and waits on a busy core
        with one_blas_thread():
            op = None if len(unpenalised) else data.whitened_operator(a)
            if op is not None:  # nothing the size of X is formed
                return reduce_operator(op), None
            w = data.whitened_rows(a)
            return reduce_rows(w.X, w.y, unpenalised, squares=w.squares, xty=w.xty), None

    def fold_problems(self, data, a, unpenalised, folds):
        w = data.whitened_rows(a)
        Xa, ya = w.X, w.y
        out = []
        for rows, _st in folds:
            train = reduce_rows(Xa[~rows], ya[~rows], unpenalised)
            Xh, yh = Xa[rows], ya[rows]
            Xr, yr = data.held_out_rows(rows)
            out.append(FoldProblem(train, (Xh.T @ Xh, Xh.T @ yh, float(yh @ yh)),
                                   (Xr.T @ Xr, Xr.T @ yr, float(yr @ yr)), int((~rows).sum())))
        return out

    def whitened_gram(self, data, a):
        """X_a'X_a by columns, from X_a (for inference: a few columns cost a few columns)."""
        return RowGram(data.whitened_rows(a).X)

    def column_products(self, stats, X, raw=None):
        """What the column and rank checks read: X's rows (``raw``: the
        :class:`~lmmscope.column_products.RawMoments` of X's own columns, if known)."""
        return RowProducts(stats, X, raw=raw)

    def subset_stats(self, data, columns):
        """The statistics of the columns ``columns``: no Gram to take them from, so one
        pass over these columns, shifted as ``data.stats`` (so that a subset without the
        intercept is the Gram layout's too)."""
        columns = np.asarray(columns, dtype=np.int64)
        stats = data.stats
        shifts = (stats.x_shift[columns], stats.y_shift) if stats.centred else False
        return compute_cluster_stats(data.X[:, columns], data.y, data.Z, data.codes,
                                     data.n_groups, center=shifts,
                                     performance=data.control.performance)


class RowGram:
    """X_a'X_a from the whitened rows X_a: ``diagonal``, ``columns(idx)`` = X_a'X_a[:, idx]."""

    def __init__(self, Xa):
        self.Xa = Xa
        self.diagonal = np.einsum("ij,ij->j", Xa, Xa)

    def columns(self, idx) -> np.ndarray:
        return self.Xa.T @ self.Xa[:, idx]

    def whole(self) -> np.ndarray:
        return self.Xa.T @ self.Xa
