"""The search engines (``Control(engine=...)``) side by side, timed in one run.

1. Issue 24's hard design: N = 600 (60 clusters of 10), p = 2,000 AR(0.8)-correlated
   columns, 5 weak effects (0.25-0.5), a random intercept and slope with Psi = 4 I,
   noise sd 1 (:func:`lmmscope.simulate.make_correlated`), ``--seeds`` seeds.  For each
   seed: the default fit at the true k (``LmmScope(k=5)``, a tuned), then at the a it
   chose, the path k = 0..8 of engine "skscope" and of "splicing" at search_effort 0,
   1 (default) and 8: the whitened RSS at k = 5 against the true support's, whether the
   support is the true one, the sizes of the path whose support agrees with the default
   engine's, and the time of the path.
2. A small design (p = ``--small-p``, k = 0..5, AR(0.8), 4 effects, a = 3) where
   engine "exact" enumerates: per engine, the sizes whose RSS is the optimum's, the
   largest relative excess, and the time of the path.

Run: python bench/search.py [--seeds 10] [--p 2000] [--spacing 2] [--small-p 16]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import lmmscope
from lmmscope.cluster_blocks import encode_groups
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.reduction import reduce_gram
from lmmscope.selection import selection_path
from lmmscope.simulate import make_correlated
from lmmscope.whitening import whiten_stats

warnings.filterwarnings("ignore")

SEARCHES = {"skscope": ("skscope", 0), "splicing e0": ("splicing", 0),
            "splicing e1": ("splicing", 1), "splicing e8": ("splicing", 8)}
DEFAULT = "splicing e1"


def timed_path(problem, ks, engine, effort):
    t0 = time.perf_counter()
    steps = selection_path(problem, ks, search_effort=effort, engine=engine)
    return steps, time.perf_counter() - t0


def hard_design(args):
    worse = dict.fromkeys(SEARCHES, 0)
    exact = dict.fromkeys(list(SEARCHES) + ["fit"], 0)
    agree = dict.fromkeys(SEARCHES, 0)
    times = {name: [] for name in SEARCHES}
    sizes = 0
    where = "at random" if args.spacing is None else f"every {args.spacing}th"
    print(f"N = {args.n * 10}, p = {args.p}, AR(0.8) X, 5 effects 0.25-0.5, Psi = 4 I, "
          f"noise sd 1, true columns {where}; whitened RSS at k = 5 at the fit's a minus "
          "the truth's")
    for seed in range(args.seeds):
        X, Z, y, groups, beta = make_correlated(n=args.n, p=args.p, spacing=args.spacing,
                                                seed=seed)
        truth = tuple(int(j) + 1 for j in np.flatnonzero(beta))  # + 1: the intercept
        k = len(truth)
        fit = lmmscope.LmmScope(k=k).fit(X, y, Z=Z, groups=groups)
        result = fit.result_
        problem, _ = result._data.reduced(result.a, sorted(result._unpenalised_columns))
        rss_truth = problem.loss.rss(problem.loss.solve_on(np.searchsorted(problem.penalised, truth)))
        exact["fit"] += tuple(int(j) for j in result.selection.support) == truth
        ks = range(k + 4)
        if seed == 0:  # skscope's first solve starts JAX: not part of its search time
            timed_path(problem, [1], "skscope", 0)
        paths, row = {}, [f"seed {seed}: a = {result.a:6.3f}, truth {rss_truth:9.3f}"]
        for name, (engine, effort) in SEARCHES.items():
            paths[name], elapsed = timed_path(problem, ks, engine, effort)
            times[name].append(elapsed)
            step = paths[name][k]
            worse[name] += step.rss > rss_truth + 1e-8 * rss_truth
            exact[name] += tuple(int(j) for j in step.support) == truth
            row.append(f"{name} {step.rss - rss_truth:+8.3f}")
        for name in SEARCHES:
            agree[name] += sum(np.array_equal(a.support, b.support)
                               for a, b in zip(paths[name], paths[DEFAULT]))
        sizes += len(ks)
        print(", ".join(row), flush=True)
    print(f"\n{'engine':<12} {'RSS above truth':>16} {'exact support':>14} "
          f"{'sizes as default':>17} {'path time (median)':>19}")
    for name in SEARCHES:
        print(f"{name:<12} {worse[name]:>10} / {args.seeds} {exact[name]:>8} / {args.seeds} "
              f"{agree[name]:>10} / {sizes} {np.median(times[name]) * 1e3:>15.1f} ms")
    print(f"default fit at k = 5 (splicing, effort 1), exact support: {exact['fit']} / {args.seeds}")


def small_design(args):
    engines = {"exact": ("exact", 0), **SEARCHES}
    optimal = dict.fromkeys(engines, 0)
    excess = dict.fromkeys(engines, 0.0)
    times = {name: [] for name in engines}
    sizes = 0
    for seed in range(args.seeds):
        X, Z, y, groups, _beta = make_correlated(n=20, p=args.small_p, n_effects=4, seed=seed)
        codes, labels = encode_groups(groups)
        Zu = Z / np.sqrt((Z ** 2).mean(axis=0))
        stats = compute_cluster_stats(np.column_stack([np.ones(len(y)), X]), y, Zu, codes,
                                      labels.size)
        w = whiten_stats(stats, 3.0)
        problem = reduce_gram(w.gram.copy(), w.xty, w.yty, [0])
        paths = {}
        for name, (engine, effort) in engines.items():
            paths[name], elapsed = timed_path(problem, range(6), engine, effort)
            times[name].append(elapsed)
        best = np.array([s.rss for s in paths["exact"]])
        for name in engines:
            rel = np.array([s.rss for s in paths[name]]) / best - 1
            optimal[name] += int(np.sum(rel <= 1e-9))
            excess[name] = max(excess[name], float(rel.max()))
        sizes += 6
    print(f"\nN = 200, p = {args.small_p}, AR(0.8) X, 4 effects, a = 3, k = 0..5, "
          f"{args.seeds} seeds: against engine 'exact' (every subset enumerated)")
    print(f"{'engine':<12} {'sizes at the optimum':>21} {'largest RSS excess':>19} "
          f"{'path time (median)':>19}")
    for name in engines:
        print(f"{name:<12} {optimal[name]:>14} / {sizes} {excess[name]:>19.2e} "
              f"{np.median(times[name]) * 1e3:>15.1f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--p", type=int, default=2000)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--spacing", type=int, default=None,
                        help="true columns every SPACING-th column (default: random places)")
    parser.add_argument("--small-p", type=int, default=16)
    args = parser.parse_args()
    hard_design(args)
    small_design(args)


if __name__ == "__main__":
    main()
