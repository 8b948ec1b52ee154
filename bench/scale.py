"""A full default fit (k searched by GIC, a tuned) at N = 100,000 rows (10,000 clusters),
p = 1,000, q = 4, against the time of one X.T @ X on the same data in the same run.
Also reports peak memory (traced by the process's max RSS) against the size of X.

``--gram-row`` adds a second size, N = 12,000 rows (1,200 clusters), p = 8,000: the
Gram path (p x p whitened Gram) at a size where its memory matters (target: memory
added at most 1.5x X); ``--only-gram-row`` runs that size alone.

Options: ``--shuffle`` puts the rows in random order (the sparse Z'X path instead of
the batched one); ``--re-sd S`` sets the random-effect standard deviation (default
0.5, noise 0.5, so the variance ratio is 1 = the starting a; 1.5 gives 9 and makes
the a-iteration take several rounds); ``-v`` shows progress.
"""

import argparse
import resource
import time

import numpy as np

import lmmscope


def reset_peak_rss():
    """Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so
    temporaries made while building the data do not hide the fit's own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _gram_seconds(X):
    t0 = time.perf_counter()
    _ = X.T @ X
    return time.perf_counter() - t0


def main(n=10_000, m=10, p=1000, q=4, seed=0, re_sd=0.5, shuffle=False, verbose=False):
    rng = np.random.default_rng(seed)
    N = n * m
    X = rng.standard_normal((N, p))
    Z = np.column_stack([np.ones(N), rng.standard_normal((N, q - 1))])
    groups = np.repeat(np.arange(n), m)
    beta = np.zeros(p)
    beta[[1, 5, 10]] = [1, 0.5, 0.3]
    gamma = rng.standard_normal((n, q)) * re_sd
    y = X @ beta + np.einsum("ij,ij->i", Z, gamma[groups]) + rng.standard_normal(N) * 0.5
    order = rng.permutation(N) if shuffle else None
    if shuffle:
        X, Z, groups, y = X[order], Z[order], groups[order], y[order]
    # the first fit of a process starts JAX/XLA and scipy's BLAS buffers (~175 MiB,
    # ~0.3 s), once per process whatever the data: a small fit first, as a session would
    warm = np.random.default_rng(1)
    lmmscope.LmmScope().fit(warm.standard_normal((400, 30)), warm.standard_normal(400),
                            Z=np.ones((400, 1)), groups=np.repeat(np.arange(40), 10))
    floors = [_gram_seconds(X)]
    del order
    reset_peak_rss()
    base_rss = peak_rss_bytes()
    t0 = time.perf_counter()
    est = lmmscope.LmmScope(verbose=verbose).fit(X, y, Z=Z, groups=groups)
    t_fit = time.perf_counter() - t0
    peak_extra = peak_rss_bytes() - base_rss
    # the unit varies with the load of a shared machine: one X'X before the fit and two
    # after, their median
    floors += [_gram_seconds(X), _gram_seconds(X)]
    t_floor = float(np.median(floors))
    use_gram = getattr(getattr(est.result_, "_data", None), "use_gram", None)
    path = {True: "Gram", False: "rows", None: "?"}[use_gram]
    print(f"N={N}, p={p}, q={q}, clusters={n}, {path} path, random-effect sd {re_sd}, "
          f"rows {'shuffled' if shuffle else 'sorted by cluster'}")
    print(f"one X.T @ X:          {t_floor:7.2f} s  (median of {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"lmmscope default fit: {t_fit:7.2f} s  (support {est.support_.tolist()}, a={est.a_:.3g}, "
          f"a rounds={len(est.result_.a_history)})")
    print(f"fit / X'X ratio: {t_fit / t_floor:.2f}x")
    print(f"X is {X.nbytes / 2**20:.0f} MiB; memory added during the run (peak RSS growth): "
          f"{peak_extra / 2**20:.0f} MiB = {peak_extra / X.nbytes:.2f}x the size of X")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--re-sd", type=float, default=0.5)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--gram-row", action="store_true", help="also N = 12,000, p = 8,000")
    parser.add_argument("--only-gram-row", action="store_true", help="only N = 12,000, p = 8,000")
    args = parser.parse_args()
    if not args.only_gram_row:
        main(re_sd=args.re_sd, shuffle=args.shuffle, verbose=args.verbose)
    if args.gram_row or args.only_gram_row:
        main(n=1200, m=10, p=8000, re_sd=args.re_sd, shuffle=args.shuffle, verbose=args.verbose)
