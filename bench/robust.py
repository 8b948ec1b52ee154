"""The eight cases of issue 10 ("Robust on real data"), lmmscope beside lme4::lmer.

Each row: the case, what lmmscope answers, what lme4 answers on the same data (through
rpy2).  Cases that could kill the interpreter (a non-finite objective used to abort
skscope's C++ core) run in a child process.  Run: python bench/robust.py
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import rpy2.robjects as ro
from rpy2.robjects import pandas2ri
from rpy2.robjects.conversion import localconverter

import lmmscope

ro.r("suppressPackageStartupMessages({library(lme4); library(nlme)})")


def r_frame(expr):
    with localconverter(ro.default_converter + pandas2ri.converter):
        df = ro.conversion.rpy2py(ro.r(
            "local({d <- as.data.frame(" + expr + "); "
            "d[] <- lapply(d, function(v) if (is.factor(v)) as.character(v) else v); d})"))
    return df.reset_index(drop=True)


def lmer(code: str, df: pd.DataFrame) -> str:
    """Run R code with the frame as ``d``; its value (or its error/warnings) as text."""
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = df
    wrapped = ("local({w <- character(0); r <- tryCatch(withCallingHandlers(suppressMessages({" + code +
               "}), warning = function(x) {w <<- c(w, conditionMessage(x)); invokeRestart('muffleWarning')}),"
               " error = function(e) paste('error:', conditionMessage(e)));"
               " paste(c(r, if (length(w)) paste('warning:', w)), collapse = '; ')})")
    return str(ro.r(wrapped)[0])


def ours(fn) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except Exception as exc:  # the point of the table: what the user sees
            out = f"{type(exc).__name__}: {exc}"
    noted = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, DeprecationWarning)]
    return "; ".join([out] + noted)[:220]


def with_noise(df, n_noise, seed=1):
    rng = np.random.default_rng(seed)
    out = df.copy()
    for j in range(n_noise):
        out[f"noise{j}"] = rng.standard_normal(len(out))
    return out


def case_random_slope(sleep):
    d = with_noise(sleep, 50)
    ol = lambda pen: ours(lambda: (lambda f: f"selected {f.selected}, a = {f.a:.3g}")(
        lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", d, penalize_random_slopes=pen)))
    return ("1. random slope + 50 noise columns (sleepstudy)",
            f"default: {ol(False)}; penalize_random_slopes=True: {ol(True)}",
            lmer("m <- lmer(Reaction ~ Days + (Days | Subject), d); "
                 "sprintf('Days t = %.2f', coef(summary(m))['Days', 't value'])", sleep))


def case_location(sleep):
    d = sleep.assign(Reaction=sleep.Reaction + 1e7)
    fit = lambda: (lambda f: f"sigma {f.sigma:.4g}, logLik {f.loglik:.2f}")(
        lmmscope.lmm("Reaction ~ Days + (Days | Subject)", d))
    return ("2. y + 1e7 (sleepstudy, lmm)", ours(fit),
            lmer("m <- lmer(Reaction ~ Days + (Days | Subject), d); "
                 "sprintf('sigma %.4g, logLik %.2f', sigma(m), logLik(m))", d))


def case_units(sleep):
    d = sleep.assign(slope=sleep.Days * 1e6)
    fit = lambda: (lambda f: f"logLik {f.loglik:.2f}, singular {f.singular}, converged {f.converged}")(
        lmmscope.lmm("Reaction ~ Days + (slope | Subject)", d))
    return ("3. random-slope column x 1e6 (sleepstudy)", ours(fit),
            lmer("m <- lmer(Reaction ~ Days + (slope | Subject), d); "
                 "sprintf('logLik %.2f, singular %s', logLik(m), isSingular(m))", d))


def case_rank(ortho):
    d = ortho.assign(age2=2 * ortho.age + 1)
    fit = lambda: (lambda f: "fixef " + ", ".join(f"{k} {v:.4f}" for k, v in f.fixef.items()))(
        lmmscope.lmm("distance ~ age + age2 + (1 | Subject)", d))
    return ("4. aliased column age2 = 2 age + 1 (Orthodont, lmm)", ours(fit),
            lmer("m <- lmer(distance ~ age + age2 + (1 | Subject), d); "
                 "paste(names(fixef(m)), collapse = ', ')", d))


def case_identifiability(sleep):
    d = sleep.groupby("Subject").head(2).assign(Days2=lambda x: x.Days ** 2 + 0.1 * x.index)
    fit = lambda: (lambda f: f"sigma {f.sigma:.4g}")(
        lmmscope.lmm("Reaction ~ Days + (Days + Days2 | Subject)", d))
    return ("5. q = 3 random effects, 2 rows per cluster", ours(fit),
            lmer("m <- lmer(Reaction ~ Days + (Days + Days2 | Subject), d); sprintf('sigma %.4g', sigma(m))", d))


def case_nonfinite(sleep):
    import tempfile
    d = with_noise(sleep, 10).assign(Reaction=sleep.Reaction * 1e155)
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as handle:
        d.to_csv(handle.name, index=False)
    code = textwrap.dedent(f"""
        import pandas as pd, lmmscope
        d = pd.read_csv({handle.name!r})
        try:
            f = lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", d)
            print("selected", f.selected)
        except Exception as e:
            print(type(e).__name__ + ":", str(e)[:150])
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    answer = run.stdout.strip() or f"process died (exit code {run.returncode})"
    return ("6. y x 1e155 (sleepstudy + 10 noise columns)", answer,
            lmer("m <- lmer(Reaction ~ Days + (Days | Subject), d); sprintf('sigma %.4g', sigma(m))", d))


def case_labels(sleep):
    d = sleep.assign(Subject=sleep.Subject.astype(int))
    def fit():
        f = lmmscope.lmm("Reaction ~ Days + (Days | Subject)", d)
        new = d.iloc[[0]].assign(Subject="308")
        return f"level-1 prediction with '308' for 308: {f.predict(new, level=1)[0]:.3f}"
    return ("7. cluster label '308' (string) for 308 (integer)", ours(fit),
            lmer("m <- lmer(Reaction ~ Days + (Days | Subject), d); "
                 "nd <- d[1, ]; nd$Subject <- '308'; sprintf('%.3f', predict(m, nd))", d))


def case_convergence(sleep):
    from lmmscope import theta_optimiser
    saved = theta_optimiser._fisher_scoring
    theta_optimiser._fisher_scoring = lambda *a, **k: None  # force L-BFGS-B, then stop it early
    try:
        fit = lambda: (lambda f: f"converged {f.converged}")(lmmscope.lmm(
            "Reaction ~ Days + (Days | Subject)", sleep,
            control=lmmscope.Control(optimizer_maxiter=1)))
        answer = ours(fit)
    finally:
        theta_optimiser._fisher_scoring = saved
    return ("8. optimiser stopped after 1 iteration", answer,
            lmer("m <- lmer(Reaction ~ Days + (Days | Subject), d, control = lmerControl("
                 "optimizer = 'bobyqa', optCtrl = list(maxfun = 10))); 'fitted'", sleep))


def main():
    sleep = r_frame("lme4::sleepstudy")
    ortho = r_frame("nlme::Orthodont")
    rows = [case_random_slope(sleep), case_location(sleep), case_units(sleep), case_rank(ortho),
            case_identifiability(sleep), case_nonfinite(sleep), case_labels(sleep),
            case_convergence(sleep)]
    print("| case | lmmscope | lme4 |\n|---|---|---|")
    cell = lambda text: str(text).replace("|", "\\|")  # markdown: a bar inside a cell
    for case, mine, theirs in rows:
        print(f"| {cell(case)} | {cell(mine)} | {cell(theirs)} |")


if __name__ == "__main__":
    main()
