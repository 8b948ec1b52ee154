"""lmmscope.lmm against lme4::lmer (rpy2) on InstEval, three crossed random intercepts:

    y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)     (73,421 rows)

service, lectage and studage as numbers (their factor codes), as in issue 25.  Fits
alternate (ours, lmer, mixedlm, ours, lmer, mixedlm) in one run so that machine load
affects all; prints each time, the ratios of the medians and the logLik differences.
lmer runs with its defaults (the user's experience), REML.  mixedlm (Python, Rust core,
the fastest peer named in the issue) is timed when it is installed (pip install mixedlm;
not a dependency of lmmscope).  Not a test: it takes a minute or more.
"""

import time

import numpy as np
import pandas as pd
import rpy2.robjects as ro
from rpy2.robjects import pandas2ri
from rpy2.robjects.conversion import localconverter

import lmmscope

FORMULA = "y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)"


def main(repeats=2):
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
    ours_t, lmer_t, peer_t, peer_ll = [], [], [], None
    for _ in range(repeats):
        t = time.perf_counter()
        fit = lmmscope.lmm(FORMULA, df)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ro.r(f"m <- lmer({FORMULA}, data = d)")
        lmer_t.append(time.perf_counter() - t)
        line = f"lmmscope {ours_t[-1]:.1f} s   lmer {lmer_t[-1]:.1f} s"
        if mixedlm is not None:
            t = time.perf_counter()
            peer = mixedlm.lmer(FORMULA, df)
            peer_t.append(time.perf_counter() - t)
            peer_ll = float(peer.logLik().value if hasattr(peer.logLik(), "value")
                            else peer.logLik())
            line += f"   mixedlm {peer_t[-1]:.1f} s"
        print(line, flush=True)
    ll = float(ro.r("as.numeric(logLik(m))")[0])
    print(f"median: lmmscope {np.median(ours_t):.1f} s, lmer {np.median(lmer_t):.1f} s, "
          f"ratio {np.median(ours_t) / np.median(lmer_t):.2f}")
    print(f"logLik lmmscope {fit.loglik:.6f}  lmer {ll:.6f}  relative difference "
          f"{abs(fit.loglik - ll) / abs(ll):.2e}; fixef max |diff| "
          f"{np.max(np.abs(fit.fixef.to_numpy() - np.array(ro.r('fixef(m)')))):.2e}; "
          f"{fit.mixed.n_evaluations} deviance evaluations, converged {fit.converged}")
    if peer_t:
        print(f"mixedlm median {np.median(peer_t):.1f} s, lmmscope / mixedlm "
              f"{np.median(ours_t) / np.median(peer_t):.2f}; mixedlm logLik {peer_ll:.6f}")


if __name__ == "__main__":
    main()
