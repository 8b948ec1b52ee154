"""Node-wise scaled lassos on a Gram matrix, many columns at once.

Column j's score direction in the debiased inference (:mod:`lmmscope.inference`) comes
from the scaled lasso of column j on the other columns, on columns scaled to unit mean
square.  With S = D^{-1} X_a'X_a D^{-1} / N (unit diagonal; D the columns' RMS), it solves
round by round

    b = argmin  b'S_oo b / 2 - S_oj'b + lam0 sigma ||b||_1,   lam0 = sqrt(2 log p / N)
    sigma_new = sqrt(S_jj - 2 S_oj'b + b'S_oo b)                  (the residual's RMS)

from sigma = sqrt(S_jj), stopping when |sigma_new - sigma| <= 1e-6 sigma, at most 30
rounds.  The unpenalised column f (the intercept) is profiled out first, S - s_f s_f'/s_ff,
as a least-squares fit on it would, so the direction does not depend on where the other
columns sit; its own coefficient is then the least-squares one given the others.

Only S enters, never rows.  The lassos of many columns run together (numpy operations
over all of them, no Python loop over columns):

- an active set per column: the coordinates that broke the lasso's optimality
  conditions |S_kj - (S b)_k| <= lam, checked for every coordinate with one sparse
  product S B (B holds the few non-zeros of each column's b);
- cyclic coordinate descent on the active blocks S_AA of all columns at once (columns
  grouped by active-set size, blocks padded to the group's largest), until no
  coefficient moves by more than ``tol`` (on the unit-scale columns);
- then the conditions again, until no coordinate breaks them: the exact lasso solution
  at that tolerance, whatever the solver;
- warm starts along the rounds; a column whose sigma has settled leaves the batch.

Columns are processed in chunks that bound the extra memory to a few p-vectors each.
The Gram is read through ``diagonal``, ``columns(idx)`` and ``whole()``
(:class:`lmmscope.inference.WhitenedGram`, or :class:`DenseGram` for an array): for a few
columns only those their lassos touch are formed and scaled, so the cost follows the
number of columns asked, not p^2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .control import DEFAULT_CONTROL
from .exceptions import ConvergenceWarning

MAX_ROUNDS = 30
CHUNK_BYTES = 32 * 2**20  # p x columns working arrays of one chunk
GROUP_ELEMENTS = 2**21  # padded active blocks (columns x m x m) swept together
# scale the whole Gram at once when at least 1 / DENSE_FRACTION of its columns are asked
DENSE_FRACTION = 8
MAX_SWEEPS = 100_000


@dataclass
class NodewiseFit:
    """Node-wise scaled lasso results for the coordinates ``columns``."""

    columns: np.ndarray
    coef: np.ndarray  # (len(columns), p): row r is e_j - g_j, the score direction on X_a
    sigma: np.ndarray  # the scaled lasso's noise level of each column (unit scale)
    iterations: np.ndarray  # scaled-lasso rounds of each column


def nodewise_lasso(G, n_obs, columns, *, free=None, tol=DEFAULT_CONTROL.lasso_tol,
                   sigma_tol=DEFAULT_CONTROL.lasso_sigma_tol, progress=None) -> NodewiseFit:
    """Score directions of the columns ``columns`` (indices) from the Gram matrix
    ``G`` = X_a'X_a of ``n_obs`` rows; ``free``: the unpenalised column, or None.
    Solves exactly ``len(columns)`` node-wise problems; for a few columns, only the
    Gram's columns they touch are scaled (cost in proportion to the columns asked)."""
    if isinstance(G, np.ndarray):
        G = DenseGram(G)
    p = G.shape[0]
    columns = np.asarray(columns, dtype=np.int64).reshape(-1)
    scale = np.sqrt(np.clip(G.diagonal / n_obs, 1e-300, None))
    lam0 = np.sqrt(2 * np.log(max(p, 2)) / n_obs)
    coef = np.zeros((columns.size, p))
    sigma = np.zeros(columns.size)
    rounds = np.zeros(columns.size, dtype=np.int64)
    free = None if free is None else int(free)

    def solve(Q, at, excluded):
        """Fill the rows ``at`` of the outputs, chunk by chunk (no p x len(at) array)."""
        chunk = max(16, CHUNK_BYTES // (8 * p))
        for first in range(0, at.size, chunk):
            rows = at[first:first + chunk]
            B, sigma[rows], rounds[rows] = _scaled_chunk(Q, columns[rows], excluded, lam0, tol,
                                                         sigma_tol)
            coef[rows] = -B.T
            coef[rows, columns[rows]] = 1.0
            if excluded:  # least squares of the lasso's residual on the free column
                s_free = Q.free_column
                coef[rows, free] = -(s_free[columns[rows]] - B.T @ s_free) / s_free[free]
            if progress is not None and at.size > chunk:
                progress(f"node-wise lasso {min(first + chunk, at.size)}/{at.size}")

    rest = np.flatnonzero(columns != free)
    if rest.size:  # first: when it forms the whole Gram, the free column's problem reads it
        solve(UnitGram(G, free, rest.size * DENSE_FRACTION >= p), rest,
              () if free is None else (free,))
    own = np.flatnonzero(columns == free) if free is not None else np.array([], dtype=int)
    if own.size:  # the free column's own problem: nothing profiled out
        solve(UnitGram(G, None, DENSE_FRACTION >= p), own, ())
    coef *= (scale[columns][:, None] / scale[None, :])  # back to X_a's column scale
    return NodewiseFit(columns, coef, sigma, rounds)


class DenseGram:
    """A Gram matrix held whole, read as :class:`lmmscope.inference.WhitenedGram` is."""

    def __init__(self, G):
        self._G = np.asarray(G)
        self.shape = self._G.shape
        self.diagonal = np.diag(self._G).copy()

    def columns(self, idx) -> np.ndarray:
        return self._G[:, np.asarray(idx, dtype=np.int64)]

    def whole(self) -> np.ndarray:
        return self._G


class UnitGram:
    """S = D^{-1} G D^{-1} / N (unit diagonal), with the column ``free`` profiled out
    (S - s_f s_f'/s_ff, its row and column then 0) unless ``free`` is None.  ``dense``:
    formed once (every column will be needed); else its columns are formed as asked
    and kept."""

    def __init__(self, G, free, dense):
        p = G.shape[0]
        self.shape = G.shape
        self.weight = 1.0 / np.sqrt(np.clip(G.diagonal, 1e-300, None))  # 1 / (sqrt(N) D)
        self.free = free
        self.free_column = None
        if free is not None:  # s_f, unprofiled
            self.free_column = G.columns([free])[:, 0] * self.weight * self.weight[free]
            self._u = self.free_column / self.free_column[free]
        if dense:
            S = G.whole() * self.weight[:, None]
            S *= self.weight[None, :]
            if free is not None:
                step = max(1, CHUNK_BYTES // (8 * p))
                for first in range(0, p, step):  # profile the free column out, rows at a time
                    S[first:first + step] -= np.outer(self._u[first:first + step],
                                                      self.free_column)
                S[free, :] = 0.0
                S[:, free] = 0.0
            self._dense = S
        else:
            self._G, self._kept = G, {}
            self._dense = None

    def columns(self, idx) -> np.ndarray:
        """S[:, idx], (p, len(idx))."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._dense is not None:
            return self._dense[:, idx]
        missing = [k for k in dict.fromkeys(idx.tolist()) if k not in self._kept]
        if missing:
            block = self._G.columns(missing) * self.weight[:, None] * self.weight[missing][None, :]
            if self.free is not None:
                block -= np.outer(self._u, self.free_column[missing])
                block[self.free] = 0.0
                block[:, np.asarray(missing) == self.free] = 0.0
            self._kept.update(zip(missing, block.T))
        out = np.empty((self.weight.size, idx.size))
        for at, k in enumerate(idx.tolist()):
            out[:, at] = self._kept[k]
        return out

    def entries(self, rows, cols) -> np.ndarray:
        """S[rows, cols] (broadcast index arrays)."""
        if self._dense is not None:
            return self._dense[rows, cols]
        rows, cols = np.broadcast_arrays(rows, cols)
        distinct, where = np.unique(cols, return_inverse=True)
        return self.columns(distinct)[rows, where.reshape(cols.shape)]

    def times(self, B) -> np.ndarray:
        """S B for B (p, n) with few non-zero rows."""
        used = np.flatnonzero(B.any(axis=1))
        if used.size == 0:
            return np.zeros_like(B)
        if self._dense is not None:  # one sparse pass: (B' S)' costs nnz(B) x p
            return (sp.csr_matrix(B.T) @ self._dense).T
        return (sp.csr_matrix(B[used].T) @ self.columns(used).T).T


def _scaled_chunk(Q, targets, excluded, lam0, tol, sigma_tol):
    p, n = Q.shape[0], targets.size
    Qj = Q.columns(targets)  # (p, n): each target's column of Q
    qjj = Q.entries(targets, targets)
    B = np.zeros((p, n))
    active = np.zeros((p, n), dtype=bool)
    sigma = np.sqrt(np.maximum(qjj, 0.0))
    rounds = np.zeros(n, dtype=np.int64)
    # ``excluded`` never holds a target; with nothing to regress on, no rounds
    todo = np.arange(n) if p - 1 - len(excluded) > 0 else np.arange(0)
    for _ in range(MAX_ROUNDS):
        if todo.size == 0:
            break
        Bt, act = B[:, todo], active[:, todo]
        corr = _lasso(Q, targets[todo], Qj[:, todo], excluded, Bt, lam0 * sigma[todo], act,
                      tol)
        B[:, todo], active[:, todo] = Bt, act
        # ||resid||^2 = S_jj - 2 S_oj'b + b'S b, with S b = S_oj - corr
        new = np.sqrt(np.maximum(qjj[todo] - np.einsum("pn,pn->n", Qj[:, todo], Bt)
                                 - np.einsum("pn,pn->n", Bt, corr), 0.0))
        rounds[todo] += 1
        old = sigma[todo]
        sigma[todo] = new
        settled = (np.abs(new - old) <= sigma_tol * np.maximum(old, 1e-12)) | (new <= 0)
        todo = todo[~settled]
    return B, sigma, rounds


def _lasso(Q, targets, Qj, excluded, B, lam, active, tol):
    """Lassos of the columns ``targets`` of Q at penalties ``lam`` (one per column):
    B (p, n) and the active sets ``active`` (p, n) are warm and updated in place.
    Returns the correlations S_oj - S b at the solution, (p, n)."""
    cols = np.arange(targets.size)
    while True:
        if active.any():
            _descend_active(Q, targets, Qj, B, lam, active, tol)
        corr = Qj - Q.times(B)
        # the optimality conditions of every coordinate: |S_kj - (S b)_k| <= lam
        free_corr = np.abs(corr)
        free_corr[targets, cols] = 0.0
        for e in excluded:
            free_corr[e] = 0.0
        violated = free_corr > lam[None, :] * (1 + 1e-12)
        violated &= ~active
        if not violated.any():
            return corr
        active |= violated


def _descend_active(Q, targets, Qj, B, lam, active, tol):
    """Coordinate descent on the active blocks, columns grouped by active-set size."""
    n = targets.size
    counts = np.maximum(active.sum(axis=0), 1)
    order = np.argsort(counts, kind="stable")
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and (stop - start + 1) * int(counts[order[stop]]) ** 2 <= GROUP_ELEMENTS:
            stop += 1
        group = order[start:stop]
        idx, valid = _padded_active(active, group)
        b = B[idx, group[:, None]] * valid
        _descend_blocks(Q, Qj[idx, group[:, None]] * valid, idx, valid, b, lam[group], tol)
        owner = np.broadcast_to(group[:, None], idx.shape)
        B[idx[valid], owner[valid]] = b[valid]
        start = stop


def _padded_active(active, group):
    """Each column of ``group``'s active coordinates, padded to one length m: (indices
    (n, m), valid (n, m)); padding points at coordinate 0 and is masked."""
    owner, coords = np.nonzero(active[:, group].T)
    counts = np.bincount(owner, minlength=group.size)
    m = max(int(counts.max(initial=0)), 1)
    slot = np.arange(owner.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[owner]
    idx = np.zeros((group.size, m), dtype=np.int64)
    valid = np.zeros((group.size, m), dtype=bool)
    idx[owner, slot] = coords
    valid[owner, slot] = True
    return idx, valid


def _descend_blocks(Q, cA, idx, valid, b, lam, tol):
    """Cyclic coordinate descent of  b'Q_AA b / 2 - cA'b + lam ||b||_1  for every column
    at once on its padded block A = ``idx``; ``b`` (n, m) is updated in place."""
    m = idx.shape[1]
    QA = Q.entries(idx[:, :, None], idx[:, None, :])  # (n, m, m)
    QA *= valid[:, :, None] & valid[:, None, :]
    diag = QA[:, np.arange(m), np.arange(m)]
    usable = valid & (diag > 1e-12)  # a column collinear with the free one cannot enter
    inv_diag = np.where(usable, 1.0 / np.where(usable, diag, 1.0), 0.0)
    grad = cA - np.einsum("nkm,nm->nk", QA, b)  # cA - Q_AA b
    for _ in range(MAX_SWEEPS):
        biggest = 0.0
        for t in range(m):
            old = b[:, t]
            z = grad[:, t] + diag[:, t] * old
            new = np.sign(z) * np.maximum(np.abs(z) - lam, 0.0) * inv_diag[:, t]
            delta = new - old
            if not delta.any():
                continue
            b[:, t] = new
            grad -= QA[:, :, t] * delta[:, None]
            biggest = max(biggest, float(np.abs(delta).max()))
        if biggest <= tol:
            return
    warnings.warn(f"node-wise lasso: coordinate descent did not reach its tolerance {tol:g} in "
                  f"{MAX_SWEEPS} sweeps for some columns; their intervals may be less accurate",
                  ConvergenceWarning, stacklevel=2)
