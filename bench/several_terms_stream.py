"""lmmscope.lmm with several random-effects terms: in memory, streamed from parquet, Dask.

InstEval (lme4, 73,421 rows) with three crossed random intercepts, as bench/insteval.py:

    y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)

written to parquet in 4 files.  Fits alternate (memory, parquet, Dask) in one run so
that machine load affects all; prints each time, the ratios of the medians to memory,
the time of the two streamed passes alone, and the logLik / fixef differences from the
in-memory fit.  Needs rpy2 and lme4 (for the data).  Not a test: about a minute.
"""

import sys
import tempfile
import time
import warnings
from pathlib import Path

# bench/dask.py would shadow the dask package: not this folder on the path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402

import lmmscope  # noqa: E402
from lmmscope.sources import open_source  # noqa: E402
from lmmscope.sources.several_terms import read_model  # noqa: E402

FORMULA = "y ~ service + lectage + studage + (1|s) + (1|d) + (1|dept)"  # bench/insteval.py's


def instEval():
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    ro.r("suppressPackageStartupMessages(library(lme4))")
    with localconverter(ro.default_converter + pandas2ri.converter):
        df = ro.conversion.rpy2py(ro.r(
            "local({d <- InstEval; data.frame(y = as.numeric(d$y), service = as.numeric(d$service), "
            "lectage = as.numeric(d$lectage), studage = as.numeric(d$studage), "
            "s = as.character(d$s), d = as.character(d$d), dept = as.character(d$dept))})"))
    return df.reset_index(drop=True)


def main(repeats=2):
    import dask.dataframe as dd

    df = instEval()
    folder = Path(tempfile.mkdtemp()) / "insteval"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(df)), 4)):
        df.iloc[part].to_parquet(folder / f"part{i}.parquet")
    ddf = dd.from_pandas(df, npartitions=4)
    times = {"memory": [], "parquet": [], "dask": [], "passes": []}
    fits = {}
    for _ in range(repeats):
        for name, data in (("memory", df), ("parquet", str(folder)), ("dask", ddf)):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits[name] = lmmscope.lmm(FORMULA, data)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        read_model(open_source(str(folder)), FORMULA, "omit", lambda message: None)
        times["passes"].append(time.perf_counter() - t)
        print("   ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    base = np.median(times["memory"])
    print("median: " + ", ".join(f"{k} {np.median(v):.2f} s ({np.median(v) / base:.2f}x memory)"
                                 for k, v in times.items()))
    mem = fits["memory"]
    for name in ("parquet", "dask"):
        fit = fits[name]
        print(f"{name}: logLik {fit.loglik:.6f} (memory {mem.loglik:.6f}, relative "
              f"{abs(fit.loglik / mem.loglik - 1):.1e}); fixef max relative "
              f"{np.max(np.abs(fit.fixef.to_numpy() / mem.fixef.to_numpy() - 1)):.1e}; theta "
              f"{np.max(np.abs(fit.theta - mem.theta) / np.abs(mem.theta)):.1e}")


if __name__ == "__main__":
    main()
