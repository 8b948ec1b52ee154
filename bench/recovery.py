"""Exact support recovery over many seeds (moved here from the test suite: a statistic over
seeds, about 4 s per fit on 2 cores). The tests keep a three-seed form.

Seed design scaled up: 200 clusters of 10 rows, p = 1,000, q = 4, true beta_1, beta_5,
beta_10 = 1, 0.5, 0.3; default tuning. Prints each seed's support and the hit count.

    python bench/recovery.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lmmscope
from lmmscope.simulate import make_data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    hits = 0
    for seed in range(args.seeds):
        X, _Z, Zs, y, _beta, _g = make_data(m=10, n=200, p=1000, q=4, seed=seed)
        start = time.perf_counter()
        est = lmmscope.LmmScope().fit(X, y, Z=Zs, groups=np.repeat(np.arange(200), 10))
        exact = list(est.support_) == [1, 5, 10]
        hits += exact
        print(f"seed {seed}: support {[int(j) for j in est.support_]}  exact {exact}  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"exact support in {hits} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
