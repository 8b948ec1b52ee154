"""Does the best-subset search find the best subset it can?  Issue 24's hard design.

N = 600 (60 clusters of 10), p = 2,000 AR(0.8)-correlated columns, 5 weak effects
(0.25-0.5), a random intercept and slope with Psi = 4 I, noise sd 1
(:func:`lmmscope.simulate.make_correlated`), 10 seeds.  For each seed: the default fit
at the true k (``LmmScope(k=5)``, a tuned), then at the a it chose, the whitened RSS
(the estimator's objective) of

* skscope's splicing (the search before this change, run here on the same problem,
  on all columns where it used a screen above 500),
* the search of this version at ``search_effort`` 0, 1 (default) and 8,
* the true support.

Prints per seed which support each returns, how many seeds each search leaves an RSS
above the truth's, and the time of each search (the path k = 0..8 at that a), measured
in this run.  Run: python bench/search.py [--seeds 10] [--p 2000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import lmmscope
from lmmscope import selection
from lmmscope.simulate import make_correlated

warnings.filterwarnings("ignore")


def skscope_search(loss, k, init_support, search_effort):
    """The search before this change: skscope's splicing with a closed-form least-squares
    inner solve (here on all columns, not screened), on the Gram-form loss."""
    from skscope import ScopeSolver

    def value(b):
        return 0.5 * loss.rss(b)

    def gradient(b):
        s = np.flatnonzero(b)
        return loss.gram_columns(s) @ b[s] - loss.xty

    def numeric_solver(objective, value_and_grad, init_params, support, data):
        b = loss.solve_on(np.asarray(support))
        return value(b), b

    solver = ScopeSolver(loss.p, sparsity=k, numeric_solver=numeric_solver, max_iter=20)
    solver.hessian = lambda params, data=None: loss.gram
    init = None if init_support is None or len(init_support) == 0 else init_support
    b = np.asarray(solver.solve(lambda params: value(params),
                                gradient=lambda params: gradient(params),
                                init_support_set=init))
    return loss.solve_on(np.flatnonzero(b))


def path_with(problem, k_true, search, effort):
    """(support at k_true, its whitened RSS, seconds for the path k = 0..k_true + 3)."""
    original = selection._gram_search
    if search is not None:
        selection._gram_search = search
    try:
        t0 = time.perf_counter()
        steps = selection.selection_path(problem, range(k_true + 4), search_effort=effort)
        elapsed = time.perf_counter() - t0
    finally:
        selection._gram_search = original
    step = steps[k_true]
    return tuple(int(j) for j in step.support), step.rss, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--p", type=int, default=2000)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--spacing", type=int, default=None,
                        help="true columns every SPACING-th column (default: random places)")
    args = parser.parse_args()
    searches = {"skscope": (skscope_search, 0), "effort 0": (None, 0),
                "effort 1": (None, 1), "effort 8": (None, 8)}
    worse = dict.fromkeys(searches, 0)
    exact = dict.fromkeys(list(searches) + ["fit"], 0)
    times = {name: [] for name in searches}
    print(f"N = {args.n * 10}, p = {args.p}, AR(0.8) X, 5 effects 0.25-0.5, Psi = 4 I, "
          f"noise sd 1, true columns {'at random' if args.spacing is None else f'every {args.spacing}th'}; "
          "whitened RSS at the fit's a minus the truth's")
    for seed in range(args.seeds):
        X, Z, y, groups, beta = make_correlated(n=args.n, p=args.p, spacing=args.spacing, seed=seed)
        truth = tuple(int(j) + 1 for j in np.flatnonzero(beta))  # + 1: the intercept
        k = len(truth)
        fit = lmmscope.LmmScope(k=k).fit(X, y, Z=Z, groups=groups)
        result = fit.result_
        problem, _ = result._data.reduced(result.a, sorted(result._unpenalised_columns))
        local = np.searchsorted(problem.penalised, truth)
        rss_truth = problem.loss.rss(problem.loss.solve_on(local))
        fitted = tuple(int(j) for j in result.selection.support)
        exact["fit"] += fitted == truth
        if seed == 0:  # skscope's first solve starts JAX: not part of its search time
            path_with(problem, k, skscope_search, 0)
        row = [f"seed {seed}: a = {result.a:6.3f}, truth {rss_truth:9.3f}"]
        for name, (search, effort) in searches.items():
            support, rss, elapsed = path_with(problem, k, search, effort)
            times[name].append(elapsed)
            worse[name] += rss > rss_truth + 1e-8 * rss_truth
            exact[name] += support == truth
            row.append(f"{name} {rss - rss_truth:+8.3f}")
        print(", ".join(row), flush=True)
    print(f"\n{'search':<10} {'RSS above truth':>16} {'exact support':>14} {'path time (median)':>19}")
    for name in searches:
        print(f"{name:<10} {worse[name]:>10} / {args.seeds} {exact[name]:>8} / {args.seeds} "
              f"{np.median(times[name]) * 1e3:>15.1f} ms")
    print(f"default fit at k = 5 (effort 1), exact support: {exact['fit']} / {args.seeds}")


if __name__ == "__main__":
    main()
