"""Command line: ``lmmscope demo``, ``lmmscope fit DATA --formula ...`` and
``lmmscope validate DATA --formula ...``.

DATA is a CSV file, a parquet file, or a directory of parquet files (read into memory,
or streamed in chunks of ``--chunk-rows`` rows for data larger than memory).  A problem with
the input (a missing file, a bad formula, an unknown column) is reported as one line
on stderr with exit status 2; ``--json`` writes strict JSON (null for NaN and Inf).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .exceptions import InputError
from .sources.parquet import PARQUET_SUFFIXES
from .specification import parse_a_text, parse_k_text

USAGE_ERROR = 2


def read_data(path_text: str):
    """A CSV file as pandas; a parquet file or a directory of them (read recursively,
    as :func:`lmmscope.sources.parquet.parquet_files` lists them for streaming) as a
    pyarrow Table."""
    path = Path(path_text)
    if not path.exists():
        raise InputError(f"no such file or directory: {path_text}")
    if path.is_dir() or _is_parquet(path):
        from .sources.parquet import parquet_files
        parquet_files(path_text)  # no parquet file under a directory: say so first
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise InputError(f"reading parquet needs pyarrow ({exc}): pip install pyarrow") from None
        from .sources.parquet import ParquetSource
        return ParquetSource(path_text).read_table()
    import pandas as pd
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path_text} as CSV: {_one_line(exc)}") from None


def _is_parquet(path: Path) -> bool:
    from .sources.parquet import _is_parquet_file
    return path.suffix.lower() in PARQUET_SUFFIXES or _is_parquet_file(path)


def _parquet_path(path_text: str) -> str:
    """A parquet file or a directory of them, checked, for streaming."""
    path = Path(path_text)
    if not path.exists():
        raise InputError(f"no such file or directory: {path_text}")
    if path.is_dir() or _is_parquet(path):
        return str(path)
    raise InputError(f"--chunk-rows streams parquet files; {path_text} is not a parquet file "
                     "or a directory of them")


def strict_json(value):
    """Plain JSON values: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [strict_json(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def demo(args) -> int:
    from . import lmm_scope
    from .simulate import make_data, seed_frame, seed_formula

    df, beta = seed_frame(seed=args.seed)
    print("Seed example: m=8 rows x n=15 clusters, p=50 candidate fixed effects, q=4 random slopes")
    print("true support: x1, x5, x10 with coefficients 1, 0.5, 0.3\n")
    fit = lmm_scope(seed_formula(), df, verbose=args.verbose)
    true_names = [f"x{j}" for j in np.flatnonzero(beta)]
    est = fit.coef.reindex([f"x{j}" for j in range(50)]).to_numpy()
    err = float(np.linalg.norm(est - beta))
    print(f"chosen a = {fit.a:.4g} (variance-ratio iteration), k = {fit.k} (GIC)")
    print(f"recovered support: {fit.support}   exact: {sorted(fit.support) == sorted(true_names)}")
    print("estimates:", {name: round(float(fit.coef[name]), 4) for name in fit.support})
    print(f"l2 error of lmmscope:       {err:.4f}")
    try:
        from statsmodels.regression.mixed_linear_model import MixedLM
        X, _Z, Zs, y, _b, _g = make_data(m=8, n=15, p=50, q=4, seed=args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MixedLM(endog=y, exog=X, groups=np.repeat(np.arange(15), 8), exog_re=Zs).fit()
        print(f"l2 error of statsmodels MixedLM (all 50 fixed effects): "
              f"{np.linalg.norm(res.fe_params - beta):.4f}")
    except ImportError:
        print("(statsmodels not installed: skipping the MixedLM comparison)")
    return 0


def fit_data(args) -> int:
    from . import lmm_scope

    always = [s.strip() for s in args.always.split(",")] if args.always else None
    options = dict(k=parse_k_text(args.k), a=parse_a_text(args.a), always=always,
                   criterion=args.criterion, method=args.method, verbose=args.verbose)
    if args.chunk_rows is not None:  # out of core: parquet streamed by lmmscope.sources
        fit = lmm_scope(args.formula, _parquet_path(args.data), chunk_rows=args.chunk_rows,
                        **options)
    else:
        fit = lmm_scope(args.formula, read_data(args.data), **options)
    if args.json:
        print(json.dumps(strict_json(fit.to_dict()), indent=2, allow_nan=False))
    else:
        print(fit.summary())
    return 0


def validate_data(args) -> int:
    from . import lmm_scope
    from .validate import check_against_lme4

    fit = lmm_scope(args.formula, read_data(args.data), k=parse_k_text(args.k), a=parse_a_text(args.a),
                    method=args.method)
    check = check_against_lme4(fit, tol=args.tol)
    print(check)
    return 0 if check.passed else 1


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(text).split()) or type(exc).__name__


def _user_errors() -> tuple:
    errors = [ValueError, KeyError, TypeError, OSError]
    try:
        from formulaic.errors import FormulaicError
        errors.append(FormulaicError)
    except ImportError:
        pass
    return tuple(errors)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    text = " ".join(str(message).split()).removeprefix("lmmscope: ")
    print(f"lmmscope: warning: {text}", file=file or sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmmscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fit the seed example and compare with statsmodels")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--verbose", action="store_true")
    p_demo.set_defaults(func=demo)
    p_fit = sub.add_parser("fit", help="select and fit on a CSV or parquet file")
    p_fit.add_argument("data", help="CSV file, parquet file, or directory of parquet files")
    p_fit.add_argument("--formula", required=True)
    p_fit.add_argument("--k", default=None, help="support size, or 'cv' (default: GIC)")
    p_fit.add_argument("--a", default=None, help="proxy scale a, or 'cv' (default: variance ratio)")
    p_fit.add_argument("--always", default=None, help="comma-separated columns forced in")
    p_fit.add_argument("--criterion", default="gic", choices=["gic", "ebic", "bic", "aic"])
    p_fit.add_argument("--method", default="REML", choices=["REML", "ML"])
    p_fit.add_argument("--json", action="store_true", help="print the result as strict JSON")
    p_fit.add_argument("--chunk-rows", type=int, default=None,
                       help="stream parquet input in chunks of this many rows (data larger "
                            "than memory) instead of reading it whole")
    p_fit.add_argument("--verbose", action="store_true")
    p_fit.set_defaults(func=fit_data)
    p_val = sub.add_parser("validate", help="fit, then check the fit against lme4::lmer")
    p_val.add_argument("data", help="CSV file, parquet file, or directory of parquet files")
    p_val.add_argument("--formula", required=True)
    p_val.add_argument("--tol", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    p_val.add_argument("--method", default="REML", choices=["REML", "ML"])
    p_val.add_argument("--k", default=None, help="support size, or 'cv' (default: GIC)")
    p_val.add_argument("--a", default=None, help="proxy scale a, or 'cv' (default: variance ratio)")
    p_val.set_defaults(func=validate_data)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"lmmscope: error: {_one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:
        if os.environ.get("LMMSCOPE_DEBUG"):
            raise
        print(f"lmmscope: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set LMMSCOPE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
