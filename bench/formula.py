"""The formula front against the arrays front on the same data, in one run.

For each size, ``lmm_scope("y ~ . - z + (z | g)", frame)`` against
``LmmScope().fit(X, y, Z=[1, z], groups=g)`` (both with an unpenalised intercept), at
fixed k = 3, a = 1 and with default tuning (k by GIC, a by the variance-ratio
iteration).  Prints each front's median time and memory added during the call (peak
RSS growth; the frame and X exist before either call) and the ratios formula / arrays.
The two fronts' calls alternate (at fixed k and a 11 pairs, 5 for the two large sizes;
with default tuning 7 and 4) after one untimed pair that also checks they select the
same support.

Sizes: N = 2,000 rows (200 clusters) with p = 1,000, 5,000 and 20,000 candidates, and
N = 1,000,000 rows (100,000 clusters) with p = 50.  ``--quick`` runs the two smallest.
"""

import argparse
import gc
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

import lmmscope

warnings.filterwarnings("ignore")


def reset_peak_rss():
    """Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_bytes(field="VmHWM:"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def measured_once(run):
    """(seconds, memory added in bytes) of one call."""
    gc.collect()
    reset_peak_rss()
    base = rss_bytes("VmRSS:")
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    added = rss_bytes() - base
    del out
    return seconds, added


def interleaved(runs, repeats):
    """Per named call: (median seconds, largest memory added).  The calls alternate
    (A, B, A, B, ...), so drift of the machine's state (page cache, huge pages, other
    load) falls on both alike; a single call of a 0.1 s fit varies by 30%."""
    times = {name: [] for name in runs}
    added = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds, grown = measured_once(run)
            times[name].append(seconds)
            added[name].append(grown)
    return {name: (float(np.median(times[name])), max(added[name])) for name in runs}


def make(N, p, n_groups, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, p))
    g = np.repeat(np.arange(n_groups), N // n_groups)
    z = rng.standard_normal(N)
    y = (X[:, 1] + 0.5 * X[:, 5] + 0.3 * X[:, 10] + rng.standard_normal(n_groups)[g]
         + 0.5 * rng.standard_normal(n_groups)[g] * z + 0.5 * rng.standard_normal(N))
    frame = pd.DataFrame({f"x{j}": X[:, j] for j in range(p)} | {"z": z, "y": y, "g": g})
    return X, y, np.column_stack([np.ones(N), z]), g, frame


def compare(N, p, n_groups, repeats):
    """``repeats``: pairs of calls (fixed k and a, default tuning)."""
    X, y, Z, g, frame = make(N, p, n_groups)
    rows = []
    for (label, k, a), pairs in zip((("fixed k=3, a=1", 3, 1.0), ("default tuning", None, None)),
                                    repeats):
        arrays = lmmscope.LmmScope(k=k, a=a).fit(X, y, Z=Z, groups=g)
        formula = lmmscope.lmm_scope("y ~ . - z + (z | g)", frame, k=k, a=a)
        same = sorted(formula.support) == sorted(f"x{j}" for j in arrays.support_)
        del arrays, formula
        m = interleaved({
            "arrays": lambda: lmmscope.LmmScope(k=k, a=a).fit(X, y, Z=Z, groups=g),
            "formula": lambda: lmmscope.lmm_scope("y ~ . - z + (z | g)", frame, k=k, a=a)},
            pairs)
        (t_arr, m_arr), (t_for, m_for) = m["arrays"], m["formula"]
        rows.append((N, p, label, t_arr, t_for, m_arr, m_for, X.nbytes, same))
    return rows


def warm_up():
    """Imports and JIT compilation happen on first use: not part of either front's cost."""
    X, y, Z, g, frame = make(400, 20, 40)
    lmmscope.LmmScope().fit(X, y, Z=Z, groups=g)
    lmmscope.lmm_scope("y ~ . - z + (z | g)", frame)


def main(quick=False, repeats=7):
    warm_up()
    print(" ".join(f"{name}={os.environ.get(name)}" for name in ENVIRONMENT))
    sizes = [(2000, 1000, 200), (2000, 5000, 200)]
    if not quick:
        sizes += [(2000, 20000, 200), (1_000_000, 50, 100_000)]
    print(f"{'N':>8} {'p':>6}  {'tuning':<16} {'arrays s':>9} {'formula s':>9} {'time x':>7} "
          f"{'arrays +mem/X':>13} {'formula +mem/X':>14} {'mem x':>6}  same support")
    for N, p, n_groups in sizes:
        for N_, p_, label, t_arr, t_for, m_arr, m_for, xbytes, same in compare(
                N, p, n_groups, (11, repeats) if N * p <= 1e7 else (5, 4)):
            print(f"{N_:>8} {p_:>6}  {label:<16} {t_arr:9.3f} {t_for:9.3f} {t_for / t_arr:7.2f} "
                  f"{m_arr / xbytes:13.2f} {m_for / xbytes:14.2f} "
                  f"{m_for / max(m_arr, 1):6.2f}  {same}", flush=True)


# Set before the interpreter starts (re-executed with them unless already set):
# - glibc keeps freed memory of a size it has seen before on its heap, which hides later
#   peaks from RSS; a fixed mmap threshold returns large blocks when freed.
# - OpenBLAS's idle worker threads spin for ~2^28 cycles after each threaded call; on a
#   2-vCPU machine a spinning worker halves the speed of the single-threaded steps that
#   follow, in some calls and not others (a 0.1 s fit took 0.11-0.28 s).  A short spin
#   (2^4 cycles) leaves the medians as they are and removes that tail, for both fronts.
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "OPENBLAS_THREAD_TIMEOUT": "4"}

if __name__ == "__main__":
    if any(name not in os.environ for name in ENVIRONMENT):
        os.environ.update({k: v for k, v in ENVIRONMENT.items() if k not in os.environ})
        os.execv(sys.executable, [sys.executable] + sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    main(quick=args.quick, repeats=args.repeats)
