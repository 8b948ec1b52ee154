"""Data larger than memory: parquet streamed on one machine, and a 2-worker Dask cluster.

Writes N rows x p candidates (float64) as parquet files of ``--file-rows`` rows
(clusters of ``--cluster-size`` rows, cut by file boundaries), then for each size in
``--rows`` (the first files of the same set):

  (a) lmm_scope on the directory, streamed with pyarrow, in a child process whose peak
      resident set (VmHWM) is reported;
  (b) lmm_scope on dd.read_parquet(...) with a 2-worker LocalCluster;
  (c) the floor: one pass of reading the same files and forming X'X with Dask
      (one task per partition, tree-summed, same cluster); and the same floor in
      one process with pyarrow, which is what (a) competes with.

Ratios (a)/(c) and (b)/(c) are measured in one run.  The full size (10^7 x 100, 8 GB)
takes a while to write on a small machine: make ``--rows`` smaller to try it out.

    python bench/dask.py --rows 1000000 3000000 10000000 --dir /tmp/lmmscope-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

# This file is named dask.py: keep its folder off the import path, or ``import dask``
# would import this file.
sys.path[:] = [p for p in sys.path
               if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import numpy as np  # noqa: E402

FORMULA = "y ~ . + (1 | g)"
TRUE_COLUMNS = {0: 1.0, 1: -0.8, 2: 0.6, 3: 0.5, 4: -0.4}


def write_dataset(directory, n_rows, p, file_rows, cluster_size, seed=0):
    """Files of file_rows rows; cluster g = row // cluster_size straddles file boundaries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_clusters = -(-n_rows // cluster_size)
    u = rng.standard_normal(n_clusters)
    names = [f"x{j}" for j in range(p)]
    files = []
    for index, start in enumerate(range(0, n_rows, file_rows)):
        stop = min(start + file_rows, n_rows)
        X = rng.standard_normal((stop - start, p))
        g = np.arange(start, stop) // cluster_size
        y = sum(b * X[:, j] for j, b in TRUE_COLUMNS.items()) + u[g] + rng.standard_normal(stop - start)
        table = pa.table([pa.array(X[:, j]) for j in range(p)] + [pa.array(y), pa.array(g)],
                         names=names + ["y", "g"])
        path = os.path.join(directory, f"part{index:04d}.parquet")
        pq.write_table(table, path, row_group_size=2**16)
        files.append(path)
    return files


def subset_dir(base, files, n_files):
    """A directory of links to the first n_files files (the same bytes, no copy)."""
    directory = f"{base}-first{n_files}"
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for f in files[:n_files]:
        os.symlink(os.path.abspath(f), os.path.join(directory, os.path.basename(f)))
    return directory


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_parquet_fit(directory, chunk_rows):
    """Run in a fresh process: (a), with its own peak resident set."""
    import lmmscope  # noqa: F401  (imports counted in the baseline)

    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    fit = lmmscope.lmm_scope(FORMULA, directory, chunk_rows=chunk_rows)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "import_mb": baseline,
                      "support": fit.support, "a": fit.a, "nobs": fit.nobs}))


def run_parquet(directory, chunk_rows):
    out = subprocess.run([sys.executable, __file__, "--child", directory,
                          "--chunk-rows", str(chunk_rows)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_dask_fit(directory):
    import dask.dataframe as dd

    import lmmscope

    t0 = time.perf_counter()
    fit = lmmscope.lmm_scope(FORMULA, dd.read_parquet(directory))
    return time.perf_counter() - t0, fit


def _gram_of_partition(frame):
    values = frame.to_numpy(dtype=float)
    return values.T @ values


def _sum(*grams):
    return sum(grams)


def run_local_floor(directory, p, chunk_rows):
    """The same floor in one process with pyarrow (what (a) is up against)."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    columns = [f"x{j}" for j in range(p)] + ["y"]
    gram = np.zeros((p + 1, p + 1))
    for name in sorted(os.listdir(directory)):
        with pq.ParquetFile(os.path.join(directory, name)) as reader:
            for batch in reader.iter_batches(batch_size=chunk_rows, columns=columns):
                values = np.column_stack([c.to_numpy() for c in batch.columns])
                gram += values.T @ values
    return time.perf_counter() - t0


def run_floor(directory, p):
    """One read of the files and X'X (with y) on the same cluster: the floor.

    One task per partition forms its [X y]'[X y], and a tree (fan-in 8) sums them.
    """
    import dask
    import dask.dataframe as dd

    t0 = time.perf_counter()
    parts = dd.read_parquet(directory, columns=[f"x{j}" for j in range(p)] + ["y"]).to_delayed()
    level = [dask.delayed(_gram_of_partition)(part) for part in parts]
    while len(level) > 1:
        level = [dask.delayed(_sum)(*level[i:i + 8]) for i in range(0, len(level), 8)]
    level[0].compute()
    return time.perf_counter() - t0


def measure(directory, n, args):
    """(a), (b), (c) and the one-process floor, interleaved ``args.repeat`` times."""
    runs = []
    for _ in range(args.repeat):  # interleaved, so a noisy spell hits every column
        floor = run_floor(directory, args.p)
        local_floor = run_local_floor(directory, args.p, args.chunk_rows)
        dask_seconds, fit = run_dask_fit(directory)
        local = run_parquet(directory, args.chunk_rows)
        assert local["support"] == fit.support, (local["support"], fit.support)
        runs.append((floor, local_floor, dask_seconds, local))
    floor = min(r[0] for r in runs)
    local_floor = min(r[1] for r in runs)
    dask_seconds = min(r[2] for r in runs)
    local = min((r[3] for r in runs), key=lambda r: r["seconds"])
    return {"rows": n, "floor_s": floor, "local_floor_s": local_floor,
            "parquet_s": local["seconds"], "dask_s": dask_seconds,
            "parquet_ratio": local["seconds"] / floor,
            "parquet_local_ratio": local["seconds"] / local_floor,
            "dask_ratio": dask_seconds / floor,
            "peak_mb": max(r[3]["peak_mb"] for r in runs),
            "import_mb": local["import_mb"], "support": len(fit.support)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10**6, 3 * 10**6, 10**7])
    ap.add_argument("--p", type=int, default=100)
    ap.add_argument("--file-rows", type=int, default=250_000)
    ap.add_argument("--cluster-size", type=int, default=20)
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--dir", default="/tmp/lmmscope-bench")
    ap.add_argument("--keep", action="store_true", help="keep the parquet files")
    ap.add_argument("--reuse", action="store_true", help="reuse files kept by --keep")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each measurement (the minimum is reported)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_parquet_fit(args.child, args.chunk_rows)
    for n in args.rows:
        if n % args.file_rows and n != max(args.rows):
            ap.error("--rows must be multiples of --file-rows (subsets are whole files)")
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    if args.reuse:
        files = sorted(os.path.join(args.dir, f) for f in os.listdir(args.dir))
    else:
        files = write_dataset(args.dir, max(args.rows), args.p, args.file_rows, args.cluster_size)
    print(f"wrote {max(args.rows)} rows x {args.p} candidates in {len(files)} files "
          f"({sum(os.path.getsize(f) for f in files) / 2**30:.2f} GiB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        for n in sorted(args.rows):
            directory = subset_dir(args.dir, files, -(-n // args.file_rows))
            rows.append(measure(directory, n, args))
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(directory)
    print("\n| rows | (c) floor: read + X'X, Dask | (a) out of core, one process | (a)/(c) | "
          "(a) / pyarrow floor | (a) peak RSS (of it imports) | (b) 2-worker LocalCluster | "
          "(b)/(c) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rows']:,} | {r['floor_s']:.1f} s | {r['parquet_s']:.1f} s | "
              f"{r['parquet_ratio']:.2f}x | {r['parquet_local_ratio']:.2f}x "
              f"({r['local_floor_s']:.1f} s) | {r['peak_mb']:.0f} MB ({r['import_mb']:.0f} MB) | "
              f"{r['dask_s']:.1f} s | {r['dask_ratio']:.2f}x |")
    if not args.keep:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
