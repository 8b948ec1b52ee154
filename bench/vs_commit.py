"""Fits of two lmmscope source trees (default, or --k / --a fixed), timed alternately in one run.

    python bench/vs_commit.py OLD_PYTHON_DIR NEW_PYTHON_DIR [--pairs 7] [--designs seed,p1000,...]

e.g. ``git worktree add /tmp/old 89a9988`` then
``python bench/vs_commit.py /tmp/old/python python``.  Each tree is imported in its own
worker process; the workers receive the same data (drawn here, once) and are asked to
fit in turn, old then new then old ..., so load on the machine affects both alike.
Prints per design and front the median time of each and their ratio new / old.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = textwrap.dedent(r"""
    import os, pickle, sys, time, warnings
    sys.path.insert(0, sys.argv[1])
    warnings.filterwarnings("ignore")
    import numpy as np
    import lmmscope
    from lmmscope.simulate import as_frame
    out = sys.stdout
    sys.stdout = sys.stderr
    data = {}
    for line in sys.stdin:
        name, front, path, k, a = line.split()
        settings = {key: (None if v == "None" else int(v) if key == "k" else float(v))
                    for key, v in (("k", k), ("a", a))}
        if name not in data:
            with open(path, "rb") as f:
                X, Zs, y, groups = pickle.load(f)
            fixed = " + ".join(f"x{j}" for j in range(X.shape[1]))
            rand = " + ".join(f"z{j}" for j in range(Zs.shape[1]))
            data[name] = (X, Zs, y, groups, as_frame(X, Zs, y, groups),
                          f"y ~ {fixed} + ({rand} | cluster)")
        X, Zs, y, groups, frame, formula = data[name]
        t0 = time.perf_counter()
        if front == "arrays":
            fit = lmmscope.LmmScope(**settings).fit(X, y, Z=Zs, groups=groups)
            support = sorted(int(j) for j in fit.support_)
        else:
            fit = lmmscope.lmm_scope(formula, frame, **settings)
            support = sorted(str(s) for s in fit.support)
        elapsed = time.perf_counter() - t0
        out.write(repr((elapsed, support)) + "\n")
        out.flush()
""")


def designs():
    """name -> (X, Z columns, y, groups), drawn with standard normals."""
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    from lmmscope.simulate import make_data, make_unbalanced

    out = {}
    X, _Z, Zs, y, _b, _g = make_data(q=4, seed=0)  # the seed design, q = 4: N = 240, p = 300
    out["seed"] = (X, Zs, y, np.repeat(np.arange(30), 8))
    X, _Z, Zs, y, _b, _g = make_data(m=10, n=200, p=1000, q=4, seed=1)
    out["p1000"] = (X, Zs, y, np.repeat(np.arange(200), 10))
    X, Zs, y, groups, _b = make_unbalanced(n=200, p=1000, q=4, seed=2)
    out["p1000-unbalanced"] = (X, Zs, y, groups)
    # p > N and above the Gram limit: the row form (standard normals: a 10,000-column
    # covariance would take minutes to factor)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1000, 10_000))
    Zs = np.column_stack([np.ones(1000), rng.standard_normal((1000, 3))])
    groups = np.repeat(np.arange(100), 10)
    y = X[:, [1, 5, 10]] @ [1.0, 0.5, 0.3] + np.einsum(
        "ij,ij->i", Zs, 0.7 * rng.standard_normal((100, 4))[groups]) + 0.25 * rng.standard_normal(1000)
    out["p10000"] = (X, Zs, y, groups)
    return out


class Worker:
    def __init__(self, source):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, os.path.abspath(source)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def fit(self, name, front, path, k=None, a=None):
        self.proc.stdin.write(f"{name} {front} {path} {k} {a}\n")
        self.proc.stdin.flush()
        return eval(self.proc.stdout.readline())  # noqa: S307 - our own worker's repr

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--designs", default="seed,p1000,p1000-unbalanced,p10000")
    parser.add_argument("--fronts", default="arrays,formula")
    parser.add_argument("--k", type=int, default=None, help="a fixed k (default: tuned)")
    parser.add_argument("--a", type=float, default=None, help="a fixed a (default: tuned)")
    args = parser.parse_args()
    wanted = args.designs.split(",")
    env_note = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, arrays in designs().items():
            if name in wanted:
                paths[name] = os.path.join(tmp, name + ".pkl")
                with open(paths[name], "wb") as f:
                    pickle.dump(arrays, f)
        old, new = Worker(args.old), Worker(args.new)
        print(f"k = {args.k}, a = {args.a} (None: tuned); "
              f"old = {args.old}, new = {args.new}, {args.pairs} alternating pairs "
              f"after one warm-up each (OPENBLAS_THREAD_TIMEOUT={env_note})")
        print(f"{'design':<18} {'front':<8} {'old s':>8} {'new s':>8} {'new/old':>8}  supports")
        for name in wanted:
            for front in args.fronts.split(","):
                old.fit(name, front, paths[name], args.k, args.a)
                new.fit(name, front, paths[name], args.k, args.a)
                t_old, t_new = [], []
                for _ in range(args.pairs):
                    e, s_old = old.fit(name, front, paths[name], args.k, args.a)
                    t_old.append(e)
                    e, s_new = new.fit(name, front, paths[name], args.k, args.a)
                    t_new.append(e)
                mo, mn = float(np.median(t_old)), float(np.median(t_new))
                same = "same" if s_old == s_new else f"old {s_old} new {s_new}"
                print(f"{name:<18} {front:<8} {mo:8.4f} {mn:8.4f} {mn / mo:8.2f}  {same}",
                      flush=True)
        old.close()
        new.close()


if __name__ == "__main__":
    main()
