"""A full default fit (k searched by GIC, a tuned) at N = 100,000 rows (10,000 clusters),
p = 1,000, q = 4, against the time of one X.T @ X on the same data in the same run.
Also reports peak memory (traced by the process's max RSS) against the size of X."""

import resource
import sys
import time

import numpy as np

import lmmscope


def rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(n=10_000, m=10, p=1000, q=4, seed=0):
    rng = np.random.default_rng(seed)
    N = n * m
    X = rng.standard_normal((N, p))
    Z = np.column_stack([np.ones(N), rng.standard_normal((N, q - 1))])
    groups = np.repeat(np.arange(n), m)
    beta = np.zeros(p)
    beta[[1, 5, 10]] = [1, 0.5, 0.3]
    gamma = rng.standard_normal((n, q)) * 0.5
    y = X @ beta + np.einsum("ij,ij->i", Z, gamma[groups]) + rng.standard_normal(N) * 0.5
    base_rss = rss_bytes()
    t0 = time.perf_counter()
    _ = X.T @ X
    t_floor = time.perf_counter() - t0
    del _
    t0 = time.perf_counter()
    est = lmmscope.LmmScope(verbose="-v" in sys.argv).fit(X, y, Z=Z, groups=groups)
    t_fit = time.perf_counter() - t0
    peak_extra = rss_bytes() - base_rss
    print(f"N={N}, p={p}, q={q}, clusters={n}")
    print(f"one X.T @ X:          {t_floor:7.2f} s")
    print(f"lmmscope default fit: {t_fit:7.2f} s  (support {est.support_.tolist()}, a={est.a_:.3g}, "
          f"a rounds={len(est.result_.a_history)})")
    print(f"fit / X'X ratio: {t_fit / t_floor:.2f}x")
    print(f"X is {X.nbytes / 2**20:.0f} MiB; memory added during the run (peak RSS growth): "
          f"{peak_extra / 2**20:.0f} MiB = {peak_extra / X.nbytes:.2f}x the size of X")


if __name__ == "__main__":
    main()
