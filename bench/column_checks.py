"""Memory and time of the duplicate-column check on the Gram path (issue 12: at
N = 12,000, p = 8,000 the check added 1.93 GB and 6 s), before and after, in one run.

"before" is the check as it was on main at 89a9988 (dense p x p distance and tolerance
matrices plus triangle indices); "after" is :func:`lmmscope.column_products.duplicate_pairs_from_gram`
(a block of rows of the Gram at a time).  Both see the same p x p Gram of N = 12,000
rows, built here as the Gram of a random X (``--cheap`` builds a random SPD matrix
of the same size instead: the checks only read the Gram).  Memory is numpy's traced
peak allocation during the check (tracemalloc), beside the size of X.
"""

import argparse
import time
import tracemalloc

import numpy as np

from lmmscope.checks import check_design_columns
from lmmscope.column_products import duplicate_pairs_from_gram
from lmmscope.cluster_stats import compute_cluster_stats


def old_duplicate_pairs(gram):
    """main at 89a9988, checks.check_columns_distinct's Gram branch."""
    p = gram.shape[0]
    d = np.diag(gram)
    dist = d[:, None] + d[None, :] - 2 * gram
    tol = 1e-12 * np.maximum(d[:, None], d[None, :]).clip(min=1e-300)
    iu = np.triu_indices(p, 1)
    dup = np.flatnonzero(dist[iu] <= tol[iu])
    return [(iu[0][i], iu[1][i]) for i in dup]


def traced(fn, *args):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12_000)
    ap.add_argument("--p", type=int, default=8_000)
    ap.add_argument("--cheap", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    N, p = args.n, args.p
    x_bytes = 8 * N * p
    if args.cheap:
        A = rng.standard_normal((p, 64))
        gram = A @ A.T + N * np.eye(p)
    else:
        X = rng.standard_normal((N, p))
        X[:, 7] = X[:, 3]
        stats = compute_cluster_stats(X, rng.standard_normal(N), np.ones((N, 1)),
                                      np.repeat(np.arange(N // 6), 6), N // 6)
        gram = stats.XtX
    before, peak_before, t_before = traced(old_duplicate_pairs, gram)
    after, peak_after, t_after = traced(duplicate_pairs_from_gram, gram)
    assert sorted(map(tuple, before)) == after, (before, after)
    print(f"N = {N}, p = {p}, X = {x_bytes / 2**30:.2f} GiB, Gram = {8 * p * p / 2**30:.2f} GiB")
    print(f"{'check':<8} {'peak added':>12} {'x X':>7} {'seconds':>8}")
    for name, peak, sec in (("before", peak_before, t_before), ("after", peak_after, t_after)):
        print(f"{name:<8} {peak / 2**20:9.1f} MiB {peak / x_bytes:7.3f} {sec:8.2f}")
    print(f"ratio before/after: memory {peak_before / max(peak_after, 1):.0f}x, "
          f"time {t_before / max(t_after, 1e-9):.1f}x; pairs found: {after}")
    if not args.cheap:
        names = [f"x{j}" for j in range(p)]
        _, peak_all, t_all = traced(lambda: _all_checks(stats, names))
        print(f"all column checks (constant, duplicate): {peak_all / 2**20:.1f} MiB, {t_all:.2f} s")


def _all_checks(stats, names):
    try:
        check_design_columns(stats, names, [])
    except ValueError as exc:
        return str(exc)


if __name__ == "__main__":
    main()
