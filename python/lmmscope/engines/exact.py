"""The ``"exact"`` engine: the best subset of each size by enumerating every subset
(batched k x k solves on the Gram), for small problems only.  It is the reference the
heuristic engines are tested against (``tests/test_paths.py``); the splicing engine
also enumerates where a size has few subsets."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..exceptions import InputError
from ..loss import QuadraticLoss
from . import DEFAULT_SEARCH_LIMITS, SearchLimits

class ExactEngine:
    """Enumeration of all C(p, k) subsets for each k of the path."""

    def path(self, loss: QuadraticLoss, ks, search_effort: int = 0,
             limits: SearchLimits = DEFAULT_SEARCH_LIMITS):
        """Refused above ``limits.exact_limit`` subsets (summed over the sizes of the
        path; the default 10^6 is about 1-2 s of batched solves at k ~ 6)."""
        ks = [int(k) for k in ks]
        count = sum(math.comb(loss.p, k) for k in set(ks))
        if count > limits.exact_limit:
            raise InputError(
                f"Control(engine='exact') enumerates every subset: {count:.3g} subsets of "
                f"the {loss.p} candidate columns for k up to {max(ks)}, above its limit of "
                f"{limits.exact_limit:,}; use the default engine='splicing', or a smaller k "
                "(k_max) or fewer candidate columns")
        gram = loss.gram_block(np.arange(loss.p)) if loss.p else None
        coefs = []
        for k in ks:
            if k == 0:
                coefs.append(np.zeros(loss.p))
                continue
            support, _rss = least_rss_subset(loss, k, gram)
            if support is None:
                raise FloatingPointError(f"engine='exact': no subset of size {k} has a finite "
                                         "RSS (an overflow); rescale y or the columns of X")
            coefs.append(loss.solve_on(support))
        return coefs


def least_rss_subset(loss: QuadraticLoss, k: int, gram=None):
    """(support, RSS) of least RSS among all C(p, k) subsets of size k >= 1, by batched
    k x k solves on the Gram (``gram``: the loss's p x p Gram when the caller has it).
    A batch holding a singular subset is solved subset by subset (minimum-norm least
    squares: a collinear subset's RSS is that of its span)."""
    if k == 1:  # unit-norm columns: the RSS of column j is y'y - (x_j'y)^2
        j = int(np.argmax(np.abs(loss.xty)))
        return np.array([j]), float(loss.yty - loss.xty[j] ** 2)
    if gram is None:
        gram = loss.gram_block(np.arange(loss.p))
    subsets = itertools.combinations(range(loss.p), k)
    batch = max(2000, 2**22 // (k * k))  # k x k blocks of at most 32 MB at a time
    best, best_rss = None, np.inf
    while True:
        combos = np.asarray(list(itertools.islice(subsets, batch)), dtype=np.int64)
        if combos.size == 0:
            break
        rss = _batch_rss(gram, loss.xty, loss.yty, combos)
        at = int(np.argmin(rss))
        if rss[at] < best_rss:
            best, best_rss = combos[at], float(rss[at])
    return best, best_rss


def _batch_rss(gram, xty, yty, combos):
    """The least-squares RSS of each subset (row) of ``combos``; inf where not finite."""
    c = xty[combos]
    blocks = gram[combos[:, :, None], combos[:, None, :]]
    try:
        coef = np.linalg.solve(blocks, c[..., None])[..., 0]
    except np.linalg.LinAlgError:
        coef = np.stack([np.linalg.lstsq(block, rhs, rcond=None)[0]
                         for block, rhs in zip(blocks, c)])
    rss = yty - np.einsum("tk,tk->t", c, coef)
    return np.where(np.isfinite(rss), rss, np.inf)
