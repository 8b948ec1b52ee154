"""compute_cluster_stats with automatic centring (this tree) against another tree's
(e.g. main's uncentred one), same data, one run, in CPU seconds of the process (less
sensitive than wall time to other load on a shared machine).  N = 100,000, p = 1,000,
q = 4, an intercept column, rows sorted by cluster (batched path) and shuffled (sparse).

    python bench/centring_speed.py --other /path/to/main/python
"""

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import lmmscope.cluster_stats as here  # noqa: E402
from lmmscope.intercept import InterceptPrepended  # noqa: E402


def load_other(python_dir):
    """The other tree's lmmscope package as ``lmmscope_other``, and its module holding
    compute_cluster_stats (``cluster_stats``; ``crossprod`` before the split)."""
    package = os.path.join(python_dir, "lmmscope")
    spec = importlib.util.spec_from_file_location(
        "lmmscope_other", os.path.join(package, "__init__.py"),
        submodule_search_locations=[package])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    name = "cluster_stats" if os.path.exists(os.path.join(package, "cluster_stats.py")) \
        else "crossprod"
    return (importlib.import_module(f"lmmscope_other.{name}"),
            importlib.import_module("lmmscope_other.intercept").InterceptPrepended)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="python/ folder of the tree to compare with")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    other, other_prepended = load_other(args.other)
    rng = np.random.default_rng(0)
    N, p, q = 100_000, 1000, 4
    n = N // 10
    base = rng.standard_normal((N, p))  # each tree's own InterceptPrepended (isinstance)
    designs = {"other": other_prepended(base), "this tree": InterceptPrepended(base)}
    Z, y = rng.standard_normal((N, q)), rng.standard_normal(N) + 1e3
    for order in ("sorted", "shuffled"):
        codes = np.repeat(np.arange(n), 10)
        if order == "shuffled":
            codes = rng.permutation(codes)
        best = {"other": np.inf, "this tree": np.inf}
        for _ in range(args.reps):
            for name, module in (("other", other), ("this tree", here)):
                t0 = time.process_time()
                module.compute_cluster_stats(designs[name], y, Z, codes, n)
                best[name] = min(best[name], time.process_time() - t0)
        print(f"{order:<9} other {best['other']:6.2f} s, this tree {best['this tree']:6.2f} s "
              f"(CPU), ratio {best['this tree'] / best['other']:.2f}")


if __name__ == "__main__":
    main()
