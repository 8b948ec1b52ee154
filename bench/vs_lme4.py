"""lmmscope.lmm against lme4::lmer (through rpy2, timing only the fit) on N = 100,000 rows,
5,000 clusters, 10 fixed effects, q = 2 correlated random effects. Prints both times,
their ratio (ours / lme4) and the largest disagreements."""

import time

import numpy as np
import pandas as pd
import rpy2.robjects as ro
from rpy2.robjects import pandas2ri
from rpy2.robjects.conversion import localconverter

import lmmscope
from lmmscope.simulate import normal_rows


def main(n=5000, m=20, p=10, seed=0):
    rng = np.random.default_rng(seed)
    N = n * m
    X = rng.standard_normal((N, p))
    g = np.repeat(np.arange(n), m)
    Psi = np.array([[1.0, 0.3], [0.3, 0.5]])
    b = normal_rows(rng, Psi, n)
    y = 1 + X @ np.linspace(-1, 1, p) + b[g, 0] + X[:, 0] * b[g, 1] + rng.standard_normal(N)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    df["y"], df["g"] = y, g.astype(str)
    formula = "y ~ " + " + ".join(df.columns[:p]) + " + (x0 | g)"
    ro.r("suppressPackageStartupMessages(library(lme4))")
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
    ro.r("d$g <- factor(d$g)")
    t0 = time.perf_counter()
    ro.r(f"m <- lmer({formula}, data = d)")
    t_lme4 = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = lmmscope.lmm(formula, df)
    t_ours = time.perf_counter() - t0
    fe = np.array(ro.r("fixef(m)"))
    se = np.array(ro.r("sqrt(diag(as.matrix(vcov(m))))"))
    ll = float(ro.r("as.numeric(logLik(m))")[0])
    print(f"N={N}, clusters={n}, fixed effects={p + 1}, q=2")
    print(f"lme4::lmer: {t_lme4:6.2f} s    lmmscope.lmm (formula to fit): {t_ours:6.2f} s")
    print(f"ratio ours / lme4: {t_ours / t_lme4:.2f}")
    print(f"max rel diff fixef {np.max(np.abs(ours.fixef.values - fe) / np.abs(fe)):.1e}, "
          f"SE {np.max(np.abs(ours.bse.values - se) / se):.1e}, |logLik diff| {abs(ours.loglik - ll):.1e}")


if __name__ == "__main__":
    main()
