"""Weak correlated effects: which tuning recovers them without false positives?

Designs (:func:`lmmscope.simulate.make_correlated`: AR(rho) columns, 5 effects of random
sign, Psi = 4 I on a random intercept and slope, noise sd 1, clusters of 10 rows; and
the seed example's and the unbalanced generators with their strong effects), each over
``--seeds`` seeds; for each tuning option (k and a tuned as by default, only the k
choice differs) the number of seeds with the exact support, the mean numbers of true
effects missed and of false positives, and the l2 error of the coefficients relative to
the oracle (the REML refit on the true support, ``lmmscope.lmm``-equivalent through the
arrays front with the true columns forced in, k = 0).  Run: python bench/weak.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import lmmscope
from lmmscope.simulate import make_correlated, make_data, make_unbalanced

warnings.filterwarnings("ignore")

OPTIONS = {"gic (default)": {}, "ebic": {"criterion": "ebic"}, "bic": {"criterion": "bic"},
           "k = cv": {"k": "cv"}}
def correlated(n, p, rho, effects, spacing=None):
    return lambda seed: make_correlated(n=n, p=p, rho=rho, effect_range=effects,
                                        spacing=spacing, seed=seed)


def seed_design(seed):
    """The seed example's generator (strong effects 1, 0.5, 0.3), N = 2,000, p = 1,000."""
    X, _Z, Zs, y, beta, _g = make_data(m=10, n=200, p=1000, q=4, seed=seed)
    return X, Zs, y, np.repeat(np.arange(200), 10), beta


def unbalanced(seed):
    X, Zs, y, groups, beta = make_unbalanced(n=200, p=1000, q=4, seed=seed)
    return X, Zs, y, groups, beta


DESIGNS = {
    "N=600 p=2000 AR(0.8) 0.25-0.5": correlated(60, 2000, 0.8, (0.25, 0.5)),
    "same, true columns 2 apart": correlated(60, 2000, 0.8, (0.25, 0.5), spacing=2),
    "N=600 p=500 AR(0.5) 0.2-0.4": correlated(60, 500, 0.5, (0.2, 0.4)),
    "N=1200 p=2000 AR(0.8) 0.25-0.5": correlated(120, 2000, 0.8, (0.25, 0.5)),
    "seed design N=2000 p=1000": seed_design,
    "unbalanced N~2200 p=1000": unbalanced,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--designs", default=",".join(str(i) for i in range(len(DESIGNS))))
    args = parser.parse_args()
    chosen = [list(DESIGNS)[int(i)] for i in args.designs.split(",")]
    print("| design | tuning | exact support | missed (mean) | false positives (mean) "
          "| l2 / oracle l2 (median) | time per fit |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in chosen:
        rows = {option: [] for option in OPTIONS}
        for seed in range(args.seeds):
            X, Z, y, groups, beta = DESIGNS[name](seed)
            truth = np.flatnonzero(beta)
            oracle = lmmscope.LmmScope(k=0, always=list(range(truth.size))).fit(
                X[:, truth], y, Z=Z, groups=groups)
            oracle_l2 = np.linalg.norm(oracle.coef_ - beta[truth])
            for option, settings in OPTIONS.items():
                t0 = time.perf_counter()
                fit = lmmscope.LmmScope(**settings).fit(X, y, Z=Z, groups=groups)
                elapsed = time.perf_counter() - t0
                support = set(fit.support_.tolist())
                l2 = np.linalg.norm(fit.coef_ - beta)
                rows[option].append((support == set(truth.tolist()),
                                     len(set(truth.tolist()) - support),
                                     len(support - set(truth.tolist())), l2 / oracle_l2, elapsed))
        for option, results in rows.items():
            exact, missed, false, ratio, seconds = (np.array(c, dtype=float) for c in zip(*results))
            print(f"| {name} | {option} | {int(exact.sum())}/{args.seeds} | {missed.mean():.1f} | "
                  f"{false.mean():.1f} | {np.median(ratio):.2f} | {np.median(seconds):.2f} s |",
                  flush=True)


if __name__ == "__main__":
    main()
