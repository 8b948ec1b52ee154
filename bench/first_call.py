"""The first fit of a fresh Python process against the second, for two source trees.

    python bench/first_call.py OLD_PYTHON_DIR NEW_PYTHON_DIR [--runs 3]

Each run starts a fresh interpreter per tree (alternating old, new), imports lmmscope
and times: the import, the first default fit (what a fresh R session's first
``lmm_scope()`` pays in Python: lazy imports, JAX's start where a search loads it) and
a second identical fit.  Prints the medians and the ratio new / old of the first fit,
and whether JAX was loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import lmmscope
t1 = time.perf_counter()
rng = np.random.default_rng(0)
X = rng.standard_normal((400, 50)); g = np.repeat(np.arange(40), 10)
Z = np.column_stack([np.ones(400), rng.standard_normal(400)])
y = X[:, :3] @ [1.0, 0.5, 0.3] + Z[:, 1] * rng.standard_normal(40)[g] + rng.standard_normal(400)
t2 = time.perf_counter(); lmmscope.LmmScope().fit(X, y, Z=Z, groups=g); t3 = time.perf_counter()
lmmscope.LmmScope().fit(X, y, Z=Z, groups=g); t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "second": t4 - t3,
                  "jax": "jax" in sys.modules}))
"""


def run(source):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(source))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {"old": [], "new": []}
    for _ in range(args.runs):
        results["old"].append(run(args.old))
        results["new"].append(run(args.new))
    for name in ("old", "new"):
        rows = results[name]
        med = {key: float(np.median([r[key] for r in rows])) for key in ("import", "first", "second")}
        print(f"{name}: import {med['import']:.2f} s, first fit {med['first']:.2f} s, "
              f"second fit {med['second']:.3f} s, JAX loaded: {rows[0]['jax']}")
    first = [float(np.median([r["first"] for r in results[n]])) for n in ("old", "new")]
    print(f"first fit new / old: {first[1] / first[0]:.2f} (medians of {args.runs} fresh processes)")


if __name__ == "__main__":
    main()
