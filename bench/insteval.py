"""lmmscope.lmm against lme4::lmer (rpy2) and mixedlm on InstEval, three crossed random
intercepts:

    y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)     (73,421 rows)

service, lectage and studage as numbers (their factor codes), as in issue 25.  Fits
alternate (ours, lmer, mixedlm, ours, ...) in one run so that machine load affects all;
prints each time (wall clock and this process's CPU time: on a shared machine the CPU
time is the steadier comparison), the ratios of the medians and the logLik
differences.  lmer runs with its defaults (the user's experience), REML.  mixedlm
(Python, Rust core, the fastest peer named in the issue) is timed when it is installed
(pip install mixedlm; not a dependency of lmmscope).

Then a selection on a crossed design of 60 subjects x 50 items with 200 candidate
columns (issue 25: "in seconds").  Not a test: it takes a few minutes.
"""

import os
import time

import numpy as np
import pandas as pd
import rpy2.robjects as ro
from rpy2.robjects import pandas2ri
from rpy2.robjects.conversion import localconverter

import lmmscope

FORMULA = "y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)"


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def insteval(repeats=3):
    ro.r("suppressPackageStartupMessages(library(lme4))")
    ro.r("d <- InstEval; d$service <- as.numeric(d$service); d$lectage <- as.numeric(d$lectage); "
         "d$studage <- as.numeric(d$studage); d$y <- as.numeric(d$y)")
    with localconverter(ro.default_converter + pandas2ri.converter):
        df = ro.conversion.rpy2py(ro.r("local({x <- d[c('y','service','lectage','studage')]; "
                                       "x$s <- as.character(d$s); x$d <- as.character(d$d); "
                                       "x$dept <- as.character(d$dept); x})"))
    df = df.reset_index(drop=True)
    try:
        import mixedlm
    except ImportError:
        mixedlm = None
    times = {"lmmscope": [], "lmer": [], "mixedlm": []}
    peer_ll = None
    for _ in range(repeats):
        fit, wall, cpu = timed(lambda: lmmscope.lmm(FORMULA, df))
        times["lmmscope"].append((wall, cpu))
        _, wall, cpu = timed(lambda: ro.r(f"m <- lmer({FORMULA}, data = d)"))
        times["lmer"].append((wall, cpu))  # R runs in this process: its CPU time counts
        if mixedlm is not None:
            peer, wall, cpu = timed(lambda: mixedlm.lmer(FORMULA, df))
            times["mixedlm"].append((wall, cpu))
            ll = peer.logLik()
            peer_ll = float(ll.value if hasattr(ll, "value") else ll)
        print("   ".join(f"{k} {v[-1][0]:.2f} s (cpu {v[-1][1]:.2f})" for k, v in times.items()
                         if v) + f"   load {os.getloadavg()[0]:.1f}", flush=True)
    med = {k: np.median(np.array(v), axis=0) for k, v in times.items() if v}
    ll = float(ro.r("as.numeric(logLik(m))")[0])
    print("median wall (cpu): " + ", ".join(f"{k} {m[0]:.2f} s ({m[1]:.2f})"
                                            for k, m in med.items()))
    print(f"lmmscope / lmer {med['lmmscope'][0] / med['lmer'][0]:.2f} wall")
    if "mixedlm" in med:
        print(f"lmmscope / mixedlm {med['lmmscope'][0] / med['mixedlm'][0]:.2f} wall, "
              f"{med['lmmscope'][1] / med['mixedlm'][1]:.2f} cpu; mixedlm logLik {peer_ll:.6f}")
    print(f"logLik lmmscope {fit.loglik:.6f}  lmer {ll:.6f}  relative difference "
          f"{abs(fit.loglik - ll) / abs(ll):.2e}; fixef max |diff| "
          f"{np.max(np.abs(fit.fixef.to_numpy() - np.array(ro.r('fixef(m)')))):.2e}; "
          f"{fit.mixed.n_evaluations} deviance evaluations, converged {fit.converged}")


def crossed_selection(n_s=60, n_i=50, p=200, seed=0):
    """A 60 x 50 crossed design, 3 of 200 candidate columns active."""
    rng = np.random.default_rng(seed)
    s, item = np.repeat(np.arange(n_s), n_i), np.tile(np.arange(n_i), n_s)
    X = rng.standard_normal((s.size, p))
    y = (X[:, :3] @ np.array([1.0, -0.8, 0.6]) + rng.standard_normal(n_s)[s]
         + 0.7 * rng.standard_normal(n_i)[item] + rng.standard_normal(s.size))
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    df["y"], df["subj"], df["item"] = y, s, item
    formula = "y ~ " + " + ".join(df.columns[:p]) + " + (1 | subj) + (1 | item)"
    fit, wall, cpu = timed(lambda: lmmscope.lmm_scope(formula, df))
    print(f"selection, {n_s} x {n_i} crossed, {p} candidates: {wall:.2f} s (cpu {cpu:.2f}), "
          f"support {fit.support}, a {fit.a:.3g}")


if __name__ == "__main__":
    insteval()
    crossed_selection()
