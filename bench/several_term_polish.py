"""The several-term refit's optimiser (sparse_pls.optimise_theta) of this tree against
an older commit's, alternated in one process on InstEval (issue 25):

    y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)     (73,421 rows, REML)

The older sparse_pls.py is read from git (``--old``, default ``main``) and loaded beside
this tree's; lmmscope.lmm runs with one or the other optimise_theta (the rest of the
fit is this tree's), alternating (new, old, mixedlm, new, ...) so that machine load
affects all.  Prints wall and CPU times, their median ratios, the deviance
evaluations, each fit's exact gradient at its optimum and the thetas' difference.
mixedlm is timed where it is installed (not a dependency of lmmscope).

    PYTHONPATH=python python bench/several_term_polish.py [--old COMMIT] [--repeats N]
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from several_terms_stream import FORMULA, instEval  # noqa: E402 (this folder is sys.path[0])

import lmmscope
from lmmscope import multiterm, sparse_pls


def older_sparse_pls(commit):
    """``python/lmmscope/sparse_pls.py`` at ``commit`` as a module of the lmmscope package
    (its relative imports resolve against this tree)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "-C", root, "show", f"{commit}:python/lmmscope/sparse_pls.py"],
                            check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "sparse_pls_old.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("lmmscope._sparse_pls_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fit_with(optimiser, df, record):
    """lmmscope.lmm with ``optimiser`` as the refit's optimise_theta; its optimum goes
    into ``record``."""
    def recording(stats, reterms, reml, control=None, theta0=None):
        optimum = optimiser(stats, reterms, reml, control, theta0)
        gradient = sparse_pls.deviance_gradient(stats, reterms, optimum.solution, reml)
        record.append((optimum, gradient))
        return optimum
    multiterm.optimise_theta = recording
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        fit = lmmscope.lmm(FORMULA, df)
        return fit, time.perf_counter() - wall, time.process_time() - cpu
    finally:
        multiterm.optimise_theta = sparse_pls.optimise_theta


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", default="main")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    old = older_sparse_pls(args.old)
    df = instEval()
    try:
        import mixedlm
    except ImportError:
        mixedlm = None
    optimisers = {"new": sparse_pls.optimise_theta, "old": old.optimise_theta}
    times = {"new": [], "old": [], "mixedlm": []}
    records = {"new": [], "old": []}
    fits = {}
    for _ in range(args.repeats):
        for name, optimiser in optimisers.items():
            fits[name], wall, cpu = fit_with(optimiser, df, records[name])
            times[name].append((wall, cpu))
        if mixedlm is not None:
            wall, cpu = time.perf_counter(), time.process_time()
            peer = mixedlm.lmer(FORMULA, df)
            times["mixedlm"].append((time.perf_counter() - wall, time.process_time() - cpu))
            ll = peer.logLik()
            fits["mixedlm_loglik"] = float(ll.value if hasattr(ll, "value") else ll)
        print("   ".join(f"{k} {v[-1][0]:.2f} s (cpu {v[-1][1]:.2f})" for k, v in times.items()
                         if v) + f"   load {os.getloadavg()[0]:.1f}", flush=True)
    med = {k: np.median(np.array(v), axis=0) for k, v in times.items() if v}
    print("median wall (cpu): " + ", ".join(f"{k} {m[0]:.2f} s ({m[1]:.2f})"
                                            for k, m in med.items()))
    print(f"new / old {med['new'][0] / med['old'][0]:.2f} wall, "
          f"{med['new'][1] / med['old'][1]:.2f} cpu")
    if "mixedlm" in med:
        for name in optimisers:
            print(f"{name} / mixedlm {med[name][0] / med['mixedlm'][0]:.2f} wall, "
                  f"{med[name][1] / med['mixedlm'][1]:.2f} cpu")
        print(f"mixedlm logLik {fits['mixedlm_loglik']:.10f}")
    for name in optimisers:
        optimum, gradient = records[name][-1]
        print(f"{name}: logLik {fits[name].loglik:.10f}, {optimum.n_evaluations} evaluations, "
              f"|gradient| {np.abs(gradient).max():.1e}, theta {optimum.theta}, "
              f"{optimum.message}")
    theta_new, theta_old = records["new"][-1][0].theta, records["old"][-1][0].theta
    print(f"theta new vs old: {np.max(np.abs(theta_new - theta_old) / theta_new):.1e} relative")


if __name__ == "__main__":
    main()
