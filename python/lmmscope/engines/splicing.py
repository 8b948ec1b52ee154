"""The ``"splicing"`` engine (the default): best subsets by splicing (the algorithm of
abess and skscope, Zhu et al. 2020, PNAS 117:33117) alternated with exact single-swap
exchange moves, with closed-form least-squares solves on the Gram's columns, in numpy.

It replaced the call of skscope's ``ScopeSolver`` in issue 24 (now the ``"skscope"``
engine): on the same problems it is faster and finds subsets no worse.
``bench/search.py`` runs both side by side: on issue 24's hard design (p = 2,000, true
columns 2 apart) its path takes 35 ms against skscope's 238 ms, and skscope leaves an
RSS above the true support's in 5 of 10 seeds, this engine in 0; against enumeration at
p = 20 it is at the optimum at 59 of 60 sizes, skscope at 49.  A fit with it loads no
JAX.  Small problems (at most ``limits.enumeration_limit`` subsets of size k, a
:class:`lmmscope.engines.SearchLimits` from Control) are enumerated.
"""

from __future__ import annotations

import math

import numpy as np

from ..loss import QuadraticLoss
from . import DEFAULT_SEARCH_EFFORT, DEFAULT_SEARCH_LIMITS, SearchLimits
from .exact import least_rss_subset

class SplicingEngine:
    """Splicing with exchange moves along a path (see the module's docstring)."""

    def path(self, loss: QuadraticLoss, ks, search_effort: int = DEFAULT_SEARCH_EFFORT,
             limits: SearchLimits = DEFAULT_SEARCH_LIMITS):
        """Best subsets for each k in ``ks`` (increasing), warm-started from the last;
        with ``search_effort`` >= 1 then a backward sweep: each k's search again from the
        next k's support less its weakest column (a larger model can hold effects that
        only enter together), kept where it lowers the RSS.  A single k >= 1 (with
        effort >= 1): the better of its own search and the path k = 0..k + 3 with the
        sweep."""
        ks = [int(k) for k in ks]
        if search_effort >= 1 and len(ks) == 1 and ks[0] >= 1:
            return [self._fixed_k(loss, ks[0], search_effort, limits)]
        coefs, warm = [], None
        for k in ks:
            b = best_subset(loss, k, init_support=warm, search_effort=search_effort,
                            limits=limits)
            local = np.flatnonzero(b)
            warm = local if len(local) else None
            coefs.append(b)
        if search_effort >= 1:
            _backward_sweep(loss, ks, coefs, limits.restart_k * search_effort, limits)
        return coefs

    def _fixed_k(self, loss: QuadraticLoss, k: int, search_effort: int,
                 limits: SearchLimits) -> np.ndarray:
        own = best_subset(loss, k, search_effort=search_effort, limits=limits)
        sizes = range(0, min(k + 3, loss.p) + 1)
        on_path = self.path(loss, sizes, search_effort, limits)[k]
        return on_path if loss.rss(on_path) < loss.rss(own) else own


def best_subset(loss: QuadraticLoss, k: int, init_support=None,
                search_effort: int = DEFAULT_SEARCH_EFFORT,
                limits: SearchLimits = DEFAULT_SEARCH_LIMITS) -> np.ndarray:
    """Coefficients on the best subset of size k (at most ``loss.p``): splicing with
    exchange moves (:func:`_gram_search`) from the warm start ``init_support`` and
    ``search_effort`` more starts, the best local optimum kept."""
    if k == 0:
        return np.zeros(loss.p)
    if k == loss.p:
        return loss.solve_on(np.arange(loss.p))
    return _gram_search(loss, k, init_support, search_effort, limits)


class _GramSupport:
    """The least-squares fit of a loss on one support S and what the exact swap and
    splicing tests need: the Gram's columns G[:, S] (the loss's ``gram_columns``, in Gram
    or row form), (G_SS)^{-1}, b_S, the gradient X'r and the RSS.  Columns have unit
    norm (the reductions scale them), so the diagonal of G is 1."""

    def __init__(self, loss: QuadraticLoss, support):
        self.support = np.asarray(support, dtype=np.int64)
        self.columns = loss.gram_columns(self.support)  # p x k
        block = self.columns[self.support]
        block = (block + block.T) / 2
        c_s = loss.xty[self.support]
        try:
            lower = np.linalg.cholesky(block)
            if not np.all(np.isfinite(lower)) or np.min(np.diag(lower)) < 1e-7:
                raise np.linalg.LinAlgError
            inv_lower = np.linalg.inv(lower)
            self.inverse = inv_lower.T @ inv_lower
            self.ok = True
        except np.linalg.LinAlgError:  # collinear candidates: no swap is judged from here
            self.inverse = np.linalg.pinv(block)
            self.ok = False
        self.coef = self.inverse @ c_s
        self.gradient = loss.xty - self.columns @ self.coef  # X'r: zero on the support
        self.rss = float(loss.yty - c_s @ self.coef)

    def best_swap(self, diagonal):
        """(drop position, column to add, exact RSS change) of the best single swap."""
        P = self.columns @ self.inverse  # p x k: each column regressed on the support
        resid = diagonal - np.einsum("ij,ij->i", P, self.columns)  # d_i after S
        h = np.diag(self.inverse)
        drop = self.coef ** 2 / h  # RSS rises by this when j leaves
        g_after = self.gradient[:, None] + P * (self.coef / h)[None, :]
        d_after = resid[:, None] + P ** 2 / h[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(d_after > 1e-8, g_after ** 2 / d_after, 0.0)
        change = drop[None, :] - gain
        change[self.support] = np.inf
        i, j = np.unravel_index(np.argmin(change), change.shape)
        return int(j), int(i), float(change[i, j])


def _top(score, exclude, count):
    """The ``count`` largest entries of ``score`` outside ``exclude``, largest first."""
    score = np.array(score, dtype=float)
    score[exclude] = -np.inf
    count = min(count, score.size - len(exclude))
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count < score.size:
        part = np.argpartition(-score, count - 1)[:count]
        return part[np.argsort(-score[part], kind="stable")]
    return np.argsort(-score, kind="stable")[:count]


def _local_search(loss: QuadraticLoss, k: int, start, limits: SearchLimits,
                  max_iter: int = 100) -> _GramSupport:
    """Splicing (swaps of c = 1..5 columns chosen by the backward and forward
    sacrifices, as abess) alternated with exact single-swap exchange moves, from
    ``start`` until neither lowers the RSS: the result is a local optimum with respect
    to every single swap."""
    diagonal = np.ones(loss.p)  # unit-norm columns
    fit = _GramSupport(loss, start)
    tol = 1e-10 * max(loss.yty, 1e-300)
    for _ in range(max_iter):
        candidate = _splice_step(loss, fit, k, tol, limits.max_exchange)
        if candidate is None and fit.ok:  # no splicing step helps: the exact single swaps
            j, i, change = fit.best_swap(diagonal)
            if change < -tol:
                support = fit.support.copy()
                support[j] = i
                candidate = _GramSupport(loss, np.sort(support))
                if candidate.rss >= fit.rss - tol:
                    candidate = None
        if candidate is None:
            break
        fit = candidate
    return fit


def _support_rss(loss: QuadraticLoss, support) -> float:
    """The least-squares RSS on ``support`` from the Gram block alone (inf if singular;
    a near-singular block is judged again by :class:`_GramSupport` before it is kept)."""
    c_s = loss.xty[support]
    try:
        coef = np.linalg.solve(loss.gram_block(support), c_s)  # numpy's: 1/4 of scipy's cost
    except np.linalg.LinAlgError:
        return np.inf
    rss = float(loss.yty - c_s @ coef)
    return rss if np.isfinite(rss) else np.inf


def _splice_step(loss, fit, k, tol, max_exchange):
    """The best of abess's splicing swaps of c = 1..``max_exchange`` columns (skscope's
    max_exchange_num, 5), if it lowers the RSS."""
    backward = fit.coef ** 2  # unit-norm columns: sacrifices up to the factor 1/2
    forward = fit.gradient ** 2
    order_out = fit.support[np.argsort(backward, kind="stable")]
    order_in = _top(forward, fit.support, min(k, max_exchange))
    best, best_rss = None, fit.rss - tol
    for c in range(1, order_in.size + 1):
        support = np.sort(np.concatenate([order_out[c:], order_in[:c]]))
        rss = _support_rss(loss, support)
        if rss < best_rss:
            best, best_rss = support, rss
    if best is None:
        return None
    fit_best = _GramSupport(loss, best)  # its RSS again, by Cholesky (near-singular blocks)
    return fit_best if fit_best.rss < fit.rss - tol else None


def _gram_search(loss: QuadraticLoss, k: int, init_support, search_effort: int,
                 limits: SearchLimits) -> np.ndarray:
    """The best subset by enumeration where there are at most ``limits.enumeration_limit``;
    else the best of the local searches (:func:`_local_search`) from: the warm start (the
    previous k's support completed by the largest gradients), the marginal ranking
    (largest |X'y|), and ``search_effort - 1`` perturbations of the best support so far
    (half of it replaced by columns drawn among the 2k largest gradients).  The restarts
    run for k <= ``limits.restart_k`` x ``search_effort``: a start far from the warm one costs
    many steps at large k, beyond the sizes a criterion picks."""
    if math.comb(loss.p, k) <= limits.enumeration_limit:
        support, _rss = least_rss_subset(loss, k)
        if support is not None:  # else no subset's RSS is finite: the local search decides
            return _coefficients(loss, _GramSupport(loss, support))
    warm = np.asarray([] if init_support is None else init_support, dtype=np.int64)[:k]
    starts = []
    if warm.size:
        gradient = _GramSupport(loss, warm).gradient
        starts.append(np.concatenate([warm, _top(np.abs(gradient), warm, k - warm.size)]))
    restarts = search_effort if k <= limits.restart_k * search_effort else 0
    if restarts >= 1 or not starts:
        starts.append(_top(np.abs(loss.xty), np.zeros(0, dtype=np.int64), k))
    best = None
    for start in starts:
        fit = _local_search(loss, k, np.sort(start), limits)
        if best is None or fit.rss < best.rss:
            best = fit
    rng = np.random.default_rng(k)
    for _ in range(max(restarts - 1, 0)):
        pool = _top(np.abs(best.gradient), best.support, 2 * k)
        if pool.size == 0:
            break
        out = rng.choice(k, size=min(max(1, k // 2), pool.size), replace=False)
        support = best.support.copy()
        support[out] = rng.choice(pool, size=out.size, replace=False)
        fit = _local_search(loss, k, np.sort(support), limits)
        if fit.rss < best.rss:
            best = fit
    return _coefficients(loss, best)


def _coefficients(loss: QuadraticLoss, fit: _GramSupport) -> np.ndarray:
    """The full coefficient vector of a support's fit."""
    if not fit.ok:
        return loss.solve_on(fit.support)  # its warning and minimum-norm solution
    b = np.zeros(loss.p)
    b[fit.support] = fit.coef
    return b


def _backward_sweep(loss: QuadraticLoss, ks, coefs, k_most: int, limits: SearchLimits) -> None:
    """Replace coefs[i] by the local search from coefs[i + 1]'s support less its
    weakest column (exact RSS rise of dropping it), from k = ``k_most`` down (as the
    restarts: the sizes a criterion picks), where consecutive sizes allow and the RSS
    drops."""
    tol = 1e-10 * max(loss.yty, 1e-300)
    for i in range(len(ks) - 2, -1, -1):
        k = ks[i]
        if (ks[i + 1] != k + 1 or not 1 <= k <= k_most
                or math.comb(loss.p, k) <= limits.enumeration_limit):
            continue
        above = _GramSupport(loss, np.flatnonzero(coefs[i + 1]))
        if not above.ok:
            continue
        weakest = int(np.argmin(above.coef ** 2 / np.diag(above.inverse)))
        fit = _local_search(loss, k, np.delete(above.support, weakest), limits)
        if fit.ok and fit.rss < loss.rss(coefs[i]) - tol:
            coefs[i] = _coefficients(loss, fit)
