"""Command line: ``lmmscope demo`` and ``lmmscope fit data.csv --formula ...``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import pandas as pd


def _parse_k(value):
    if value in (None, "cv"):
        return value
    return int(value)


def _parse_a(value):
    if value in (None, "cv"):
        return value
    return float(value)


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


def fit_csv(args) -> int:
    from . import lmm_scope

    data = pd.read_csv(args.csv)
    always = [s.strip() for s in args.always.split(",")] if args.always else None
    fit = lmm_scope(args.formula, data, k=_parse_k(args.k), a=_parse_a(args.a), always=always,
                    criterion=args.criterion, method=args.method, verbose=args.verbose)
    if args.json:
        json.dump(fit.to_dict(), sys.stdout, indent=2, default=float)
        print()
    else:
        print(fit.summary())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lmmscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fit the seed example and compare with statsmodels")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--verbose", action="store_true")
    p_demo.set_defaults(func=demo)
    p_fit = sub.add_parser("fit", help="fit a CSV file")
    p_fit.add_argument("csv")
    p_fit.add_argument("--formula", required=True)
    p_fit.add_argument("--k", default=None, help="support size, or 'cv' (default: GIC)")
    p_fit.add_argument("--a", default=None, help="proxy scale a, or 'cv' (default: variance ratio)")
    p_fit.add_argument("--always", default=None, help="comma-separated columns forced in")
    p_fit.add_argument("--criterion", default="gic", choices=["gic", "ebic", "bic", "aic"])
    p_fit.add_argument("--method", default="REML", choices=["REML", "ML"])
    p_fit.add_argument("--json", action="store_true", help="print the result as JSON")
    p_fit.add_argument("--verbose", action="store_true")
    p_fit.set_defaults(func=fit_csv)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lmmscope: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
