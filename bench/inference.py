"""Debiased inference against the fit it follows: times measured in one run.

For each size (default N = 2,000 rows in clusters of 10, q = 2: intercept and one random
slope; p = 1,000 and p = 5,000 standard-normal candidates, 3 true non-zeros), a default
fit (k by GIC, a tuned), then ``inference(columns=5 columns)`` on the fresh fit, then
``inference()`` of every column (the 5 already fitted are reused).  Prints the fit's
time, the inference times and inference / fit.

``--parquet`` adds the same p = 1,000 data fitted from a parquet file (the streamed
backend: the inference makes one more pass over the file for the cluster scores, and
solves the node-wise lassos as in memory).  ``--tolerances`` reports, at the first size,
how far the interval ends move with the node-wise tolerance ``lasso_tol`` against a
near-exact 1e-14, and the time each tolerance takes.

    python bench/inference.py [--sizes 2000x1000 2000x5000] [--parquet] [--tolerances]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import lmmscope

CLUSTER_SIZE = 10


def simulate(N, p, seed=0):
    rng = np.random.default_rng(seed)
    n = N // CLUSTER_SIZE
    X = rng.standard_normal((N, p))
    Z = np.column_stack([np.ones(N), rng.standard_normal(N)])
    groups = np.repeat(np.arange(n), CLUSTER_SIZE)
    beta = np.zeros(p)
    beta[[1, 5, 10]] = [1.0, 0.5, 0.3]
    gamma = rng.standard_normal((n, 2)) * 0.5
    y = X @ beta + np.einsum("ij,ij->i", Z, gamma[groups]) + rng.standard_normal(N) * 0.5
    return X, y, Z, groups


def timed(call):
    t0 = time.perf_counter()
    out = call()
    return out, time.perf_counter() - t0


def report(label, t_fit, t_five, t_all, n_columns):
    print(f"{label:<28}fit {t_fit:7.2f} s   inference: 5 columns {t_five:6.2f} s, "
          f"all {n_columns} columns {t_five + t_all:6.2f} s   inference / fit "
          f"{(t_five + t_all) / t_fit:5.2f}", flush=True)


def in_memory(N, p):
    X, y, Z, groups = simulate(N, p)
    est, t_fit = timed(lambda: lmmscope.LmmScope().fit(X, y, Z=Z, groups=groups))
    res = est.result_
    _, t_five = timed(lambda: res.inference(columns=[1, 2, 5, 10, 20]))
    table, t_all = timed(res.inference)
    report(f"N={N}, p={p} (memory)", t_fit, t_five, t_all, len(table))
    return res


def from_parquet(N, p):
    X, y, Z, groups = simulate(N, p)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    frame["z"], frame["g"], frame["y"] = Z[:, 1], groups, y
    formula = "y ~ " + " + ".join(frame.columns[:p]) + " + (1 + z | g)"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        frame.to_parquet(path, row_group_size=500)
        res, t_fit = timed(lambda: lmmscope.lmm_scope(formula, path))
        _, t_five = timed(lambda: res.inference(columns=["x1", "x2", "x5", "x10", "x20"]))
        table, t_all = timed(res.inference)
    report(f"N={N}, p={p} (parquet)", t_fit, t_five, t_all, len(table))


def tolerances(res):
    exact, t_exact = timed(lambda: res.inference(adjust=None, lasso_tol=1e-14))
    ends = exact[["ci_lower", "ci_upper"]].to_numpy()
    width = (exact["ci_upper"] - exact["ci_lower"]).to_numpy()
    print(f"interval ends against lasso_tol=1e-14 ({t_exact:.2f} s):")
    for tol in (1e-4, 1e-6, 1e-8, 1e-10, 1e-12):
        tab, t = timed(lambda: res.inference(adjust=None, lasso_tol=tol))
        move = np.abs(tab[["ci_lower", "ci_upper"]].to_numpy() - ends)
        print(f"  lasso_tol={tol:g}: {t:6.2f} s; largest move {move.max():.2e} "
              f"= {(move / width[:, None]).max():.2e} of the interval's width, "
              f"{(move / np.abs(ends)).max():.2e} relative to the end")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["2000x1000", "2000x5000"],
                    help="N x p pairs (default: 2000x1000 2000x5000)")
    ap.add_argument("--parquet", action="store_true")
    ap.add_argument("--tolerances", action="store_true")
    args = ap.parse_args()
    # the first fit of a process starts JAX/XLA and BLAS buffers: a small fit first
    warm = simulate(400, 30, seed=1)
    lmmscope.LmmScope().fit(warm[0], warm[1], Z=warm[2], groups=warm[3]).result_.inference()
    first = None
    for size in args.sizes:
        N, p = (int(v) for v in size.lower().split("x"))
        res = in_memory(N, p)
        first = first or res
        if args.parquet and p == 1000:
            from_parquet(N, p)
    if args.tolerances:
        tolerances(first)


if __name__ == "__main__":
    main()
