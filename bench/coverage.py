"""Coverage of the debiased 95% intervals (not a test: about 20 minutes on 2 cores).

Seed-like design: 60 clusters of 8 rows (m=8, n=60), p=300, q=4 random slopes, true
beta_1, beta_5, beta_10 = 1, 0.5, 0.3; plus an unbalanced variant (cluster sizes 4..12,
rows shuffled).  Default tuning (k by GIC, a by the REML variance ratio).  Reports the
empirical coverage for each non-zero coefficient and averaged over the null ones, and
the average CI length against the oracle GLS interval on the true support (true Psi and
noise variance, normal quantile).

    python bench/coverage.py [--reps 200] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from joblib import Parallel, delayed

import lmmscope
from lmmscope.simulate import make_data, make_unbalanced

P, Q, TRUE = 300, 4, [1, 5, 10]
PSI = np.fromfunction(lambda i, j: 0.56 ** (abs(i - j)), (Q, Q))


def oracle_se(X, Z, groups, noise_sd):
    """GLS standard errors on the true support with the true covariance."""
    XS = X[:, TRUE]
    info = np.zeros((len(TRUE), len(TRUE)))
    for g in np.unique(groups):
        rows = groups == g
        V = Z[rows] @ PSI @ Z[rows].T + noise_sd ** 2 * np.eye(rows.sum())
        info += XS[rows].T @ np.linalg.solve(V, XS[rows])
    return np.sqrt(np.diag(np.linalg.inv(info)))


def one(design, rep):
    if design == "balanced":
        X, _, Zs, y, beta, _ = make_data(m=8, n=60, p=P, q=Q, seed=rep)
        groups = np.repeat(np.arange(60), 8)
        noise_sd = 0.25
    else:
        X, Zs, y, groups, beta = make_unbalanced(n=60, p=P, q=Q, min_size=4, max_size=12,
                                                 seed=rep)
        noise_sd = 0.25
    res = lmmscope.LmmScope().fit(X, y, Z=Zs, groups=groups).result_
    tab = res.inference(n_jobs=1, adjust=None)
    lo = tab["ci_lower"].to_numpy()[1:]  # drop the intercept row
    hi = tab["ci_upper"].to_numpy()[1:]
    covered = (lo <= beta) & (beta <= hi)
    return covered, hi - lo, 2 * 1.959964 * oracle_se(X, Zs, groups, noise_sd), res.support


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    null = np.setdiff1d(np.arange(P), TRUE)
    print(f"{args.reps} replications, p={P}, 60 clusters, q={Q}; 95% debiased intervals")
    print(f"{'design':<11}{'beta1':>8}{'beta5':>8}{'beta10':>8}{'null avg':>10}"
          f"{'len/oracle (1,5,10)':>24}{'exact support':>15}{'sec':>7}")
    for design in ("balanced", "unbalanced"):
        t0 = time.perf_counter()
        out = Parallel(n_jobs=args.jobs)(delayed(one)(design, r) for r in range(args.reps))
        cov = np.array([o[0] for o in out])
        length = np.array([o[1][TRUE] for o in out])
        oracle = np.array([o[2] for o in out])
        exact = np.mean([set(o[3]) == {f"x{j}" for j in TRUE} for o in out])
        ratio = length.mean(axis=0) / oracle.mean(axis=0)
        print(f"{design:<11}" + "".join(f"{c:>8.3f}" for c in cov[:, TRUE].mean(axis=0))
              + f"{cov[:, null].mean():>10.3f}"
              + f"{' / '.join(f'{r:.2f}' for r in ratio):>24}{exact:>15.2f}"
              + f"{time.perf_counter() - t0:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
