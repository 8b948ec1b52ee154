"""Peak memory added by a Gram-path fit (k and a fixed) at N = 12,000, p = 8,000 (issue
12's row), as a multiple of the size of X, for this tree and, when a second source
tree is given, for it too (each in a child process, one after the other, same data).

    python bench/gram_memory.py [--other /path/to/other/python] [--n 12000 --p 8000]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def reset_peak():
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
import lmmscope
N, p = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.standard_normal((N, p))
groups = np.repeat(np.arange(N // 6), 6)
y = X[:, :3] @ [1.0, -1.0, 0.5] + rng.standard_normal(N // 6)[groups] + rng.standard_normal(N)
import gc; gc.collect()
reset_peak()
base = peak()
t0 = time.perf_counter()
est = lmmscope.LmmScope(k=3, a=1.0).fit(X, y, groups=groups)
seconds = time.perf_counter() - t0
assert est.result_._data.use_gram
print(json.dumps({"added": peak() - base, "x": X.nbytes, "seconds": seconds,
                  "support": [int(j) for j in est.support_]}))
"""


def run(source, n, p):
    env = dict(os.environ, PYTHONPATH=source)
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(p)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", help="python/ folder of another tree (e.g. main) to compare")
    ap.add_argument("--n", type=int, default=12_000)
    ap.add_argument("--p", type=int, default=8_000)
    args = ap.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")
    rows = [("this tree", here)] + ([("other", args.other)] if args.other else [])
    print(f"N = {args.n}, p = {args.p}, Gram path, k = 3, a = 1 (peak RSS added)")
    for name, source in rows:
        r = run(source, args.n, args.p)
        print(f"{name:<10} added {r['added'] / 2**30:6.2f} GiB = {r['added'] / r['x']:4.2f} x X, "
              f"{r['seconds']:6.1f} s, support {r['support']}")


if __name__ == "__main__":
    main()
