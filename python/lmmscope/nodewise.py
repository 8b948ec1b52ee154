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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .exceptions import ConvergenceWarning

SIGMA_TOL = 1e-6
MAX_ROUNDS = 30
# Largest coordinate change (unit-scale columns) at which coordinate descent stops: the
# intervals' ends then agree with the exact lasso's to ~1e-12 relative (test_inference).
DEFAULT_TOL = 1e-10
CHUNK_BYTES = 32 * 2**20  # p x columns working arrays of one chunk
GROUP_ELEMENTS = 2**21  # padded active blocks (columns x m x m) swept together
MAX_SWEEPS = 100_000


@dataclass
class NodewiseFit:
    """Node-wise scaled lasso results for the coordinates ``columns``."""

    columns: np.ndarray
    coef: np.ndarray  # (len(columns), p): row r is e_j - g_j, the score direction on X_a
    sigma: np.ndarray  # the scaled lasso's noise level of each column (unit scale)
    iterations: np.ndarray  # scaled-lasso rounds of each column


def nodewise_lasso(G, n_obs, columns, *, free=None, tol=DEFAULT_TOL, progress=None
                   ) -> NodewiseFit:
    """Score directions of the columns ``columns`` (indices) from the Gram matrix
    ``G`` = X_a'X_a of ``n_obs`` rows; ``free``: the unpenalised column, or None.
    Solves exactly ``len(columns)`` node-wise problems."""
    G = np.asarray(G)
    p = G.shape[0]
    columns = np.asarray(columns, dtype=np.int64).reshape(-1)
    scale = np.sqrt(np.clip(np.diag(G) / n_obs, 1e-300, None))
    weight = 1.0 / (np.sqrt(n_obs) * scale)
    S = G * weight[:, None]
    S *= weight[None, :]  # unit diagonal
    lam0 = np.sqrt(2 * np.log(max(p, 2)) / n_obs)
    coef = np.zeros((columns.size, p))
    sigma = np.zeros(columns.size)
    rounds = np.zeros(columns.size, dtype=np.int64)

    def solve(Q, at, excluded):
        B, sigma[at], rounds[at] = _scaled_lassos(Q, columns[at], excluded, lam0, tol,
                                                  progress, columns.size)
        coef[at] = -B.T
        coef[at, columns[at]] = 1.0
        return B

    free = None if free is None else int(free)
    own = np.flatnonzero(columns == free) if free is not None else np.array([], int)
    if own.size:  # the free column's own problem: on S, nothing profiled out
        solve(S, own, ())
    rest = np.flatnonzero(columns != free) if free is not None else np.arange(columns.size)
    if rest.size:
        if free is not None:
            s_free = S[:, free].copy()
            S -= np.outer(s_free / s_free[free], s_free)  # profile the free column out
            S[free, :] = 0.0
            S[:, free] = 0.0
        B = solve(S, rest, () if free is None else (free,))
        if free is not None:  # least squares of the lasso's residual on the free column
            coef[rest, free] = -(s_free[columns[rest]] - B.T @ s_free) / s_free[free]
    coef *= (scale[columns][:, None] / scale[None, :])  # back to X_a's column scale
    return NodewiseFit(columns, coef, sigma, rounds)


def _scaled_lassos(Q, targets, excluded, lam0, tol, progress, total):
    """Scaled lassos of the columns ``targets`` of Q on all other coordinates but
    ``excluded``, chunk by chunk.  Returns (B (p, n), sigma (n,), rounds (n,))."""
    p, n = Q.shape[0], targets.size
    B = np.zeros((p, n))
    sigma = np.zeros(n)
    rounds = np.zeros(n, dtype=np.int64)
    chunk = max(16, CHUNK_BYTES // (8 * p))
    for first in range(0, n, chunk):
        at = slice(first, min(first + chunk, n))
        B[:, at], sigma[at], rounds[at] = _scaled_chunk(Q, targets[at], excluded, lam0, tol)
        if progress is not None and n > chunk:
            progress(f"node-wise lasso {at.stop}/{total}")
    return B, sigma, rounds


def _scaled_chunk(Q, targets, excluded, lam0, tol):
    p, n = Q.shape[0], targets.size
    Qj = Q[:, targets]  # (p, n): each target's column of Q
    qjj = Q[targets, targets]
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
        settled = (np.abs(new - old) <= SIGMA_TOL * np.maximum(old, 1e-12)) | (new <= 0)
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
        corr = Qj - (sp.csr_matrix(B.T) @ Q).T if B.any() else Qj.copy()
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
    QA = Q[idx[:, :, None], idx[:, None, :]]  # (n, m, m)
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
