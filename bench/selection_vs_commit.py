"""An older selection.py (the monolith before the engines split, e.g. main's before the
merge of branch engine), loaded beside this tree's modules in one process, against this
tree's selection_path on the same reduced problems, calls alternated; supports and RSS
must agree.  Prints the median and the minimum time of each and their ratios.

    git show <commit>:python/lmmscope/selection.py > /tmp/old_selection.py
    python bench/selection_vs_commit.py /tmp/old_selection.py [pairs]
"""
import importlib.util
import sys
import time

import numpy as np

from lmmscope import reduction, selection
from lmmscope.cluster_blocks import encode_groups
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.simulate import make_correlated, make_data
from lmmscope.whitening import whiten_stats


def load_old(path):
    """The old selection.py as module lmmscope._old_selection (its relative imports
    resolve to this tree's modules)."""
    spec = importlib.util.spec_from_file_location("lmmscope._old_selection", path)
    old = importlib.util.module_from_spec(spec)
    old.__package__ = "lmmscope"
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    return old


def designs():
    X, _Z, Zs, y, _b, _g = make_data(m=10, n=200, p=1000, q=4, seed=0)
    groups = np.repeat(np.arange(200), 10)
    X2, Z2, y2, groups2, _beta = make_correlated(n=60, p=2000, seed=0)
    return {"p1000 path 0..20": (X, Zs, y, groups, range(21)),
            "p1000 fixed k=3": (X, Zs, y, groups, [3]),
            "corr p2000 path 0..8": (X2, Z2, y2, groups2, range(9))}


def main():
    old = load_old(sys.argv[1])
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 31
    for name, (X, Z, y, groups, ks) in designs().items():
        codes, labels = encode_groups(groups)
        stats = compute_cluster_stats(np.column_stack([np.ones(len(y)), X]), y,
                                      Z / np.sqrt((Z ** 2).mean(0)), codes, labels.size)
        w = whiten_stats(stats, 2.0)
        times = {"old": [], "new": []}
        for _ in range(pairs):
            found = {}
            for which, reduce_with, path_with in (("old", old, old), ("new", reduction, selection)):
                problem = reduce_with.reduce_gram(w.gram.copy(), w.xty, w.yty, [0])
                t0 = time.perf_counter()
                steps = path_with.selection_path(problem, ks)
                times[which].append(time.perf_counter() - t0)
                found[which] = ([tuple(s.support) for s in steps], np.array([s.rss for s in steps]))
            assert found["old"][0] == found["new"][0]
            np.testing.assert_allclose(found["new"][1], found["old"][1], rtol=1e-12, atol=0)
        mo, mn = np.median(times["old"]), np.median(times["new"])
        lo, ln = min(times["old"]), min(times["new"])
        print(f"{name:<22} median old {mo * 1e3:7.2f} ms new {mn * 1e3:7.2f} ms ratio {mn / mo:5.2f}; "
              f"min old {lo * 1e3:7.2f} new {ln * 1e3:7.2f} ratio {ln / lo:5.2f} "
              "(same supports and RSS)")


if __name__ == "__main__":
    main()
