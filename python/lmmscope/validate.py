"""Check a fit against R's reference implementation, ``lme4::lmer``, through rpy2.

``check_against_lme4(fit)`` (also ``fit.check_against_lme4()`` and ``lmmscope validate``)
runs lme4's side, the R file ``lme4_reference.R`` shipped in this package
(:data:`REFERENCE_R`, which the R package's ``check_against_lmer()`` sources too): it
refits the model the fit ended with (for ``lmm_scope``: the selected columns plus the
unpenalised ones) by ``lme4::lmer`` on the fit's own design columns (so a factor enters
both fits as the same 0/1 columns, with the same reference level), with BOBYQA run to
``rhoend = 1e-12``, and returns plain values with our names.  The comparison is
:func:`lmmscope.lme4_comparison.compare_values`, the one R and the tests use: see that
module for how each quantity is judged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .exceptions import InputError, InputTypeError, Lme4Error, Lme4Unavailable
from .lme4_comparison import (REFERENCE_R, FitValues, Lme4Check, _tolerance_rule, compare_values,
                              fit_values, kind_of)

__all__ = ["FitValues", "Lme4Check", "Lme4Error", "Lme4Unavailable", "REFERENCE_R",
           "check_against_lme4", "compare_values", "fit_values", "kind_of"]

INSTALL_HINT = ("check_against_lme4 needs rpy2 (pip install 'lmmscope[r]'), R, and the R package "
                "lme4 (in R: install.packages('lme4'); Debian/Ubuntu: apt install r-cran-lme4)")
_LME4 = "lme4"  # the R package required (a name the tests can replace)


def _r():
    """rpy2's robjects with lme4 loaded, or :class:`Lme4Unavailable` naming what is missing."""
    try:
        import rpy2.robjects as ro
    except ImportError as exc:
        raise Lme4Unavailable(f"{INSTALL_HINT}: rpy2 is not installed ({exc})") from exc
    except Exception as exc:  # rpy2 present but R cannot be found or started
        raise Lme4Unavailable(f"{INSTALL_HINT}: R could not be started through rpy2 ({exc})") from exc
    if not ro.r["requireNamespace"](_LME4, quietly=True)[0]:
        raise Lme4Unavailable(f"{INSTALL_HINT}: the R package {_LME4} is not installed in R "
                              f"(library paths: {', '.join(ro.r['.libPaths']())})")
    return ro


@lru_cache(maxsize=1)
def reference_env():
    """``lme4_reference.R`` sourced (once) into an R environment of its own, through rpy2."""
    ro = _r()
    return ro.r("function(path) { env <- new.env(); sys.source(path, envir = env); env }")(str(REFERENCE_R))


def call_reference(name: str, *args, **kwargs):
    """Call the R function ``name`` of ``lme4_reference.R``; an R error becomes
    :class:`Lme4Error` carrying R's message."""
    ro = _r()
    env = reference_env()
    guarded = ro.r("function(f, ...) tryCatch(f(...), error = function(e) structure("
                   "list(conditionMessage(e)), class = 'lmmscope_r_error'))")
    out = guarded(env[name], *args, **kwargs)
    if "lmmscope_r_error" in tuple(ro.r["class"](out)):
        raise Lme4Error(f"lme4::lmer refused the model: {str(out[0][0]).strip()}")
    return out


def from_r(obj):
    """An rpy2 object as plain Python: named list -> dict, data.frame -> pandas (factors
    as strings), vectors -> numpy arrays (strings as lists), NULL -> None."""
    import rpy2.rinterface as ri
    import rpy2.robjects as ro

    if obj is ri.NULL or isinstance(obj, type(ri.NULL)):
        return None
    if isinstance(obj, ro.vectors.DataFrame):
        return pd.DataFrame({name: from_r(col) for name, col in zip(obj.names, obj)})
    if isinstance(obj, ro.vectors.FactorVector):
        return [str(v) for v in ro.r["as.character"](obj)]
    if isinstance(obj, ro.vectors.ListVector) or isinstance(obj, ri.ListSexpVector):
        names = list(obj.names) if obj.names is not ri.NULL else [str(i) for i in range(len(obj))]
        return {name: from_r(v) for name, v in zip(names, obj)}
    if isinstance(obj, (ro.vectors.StrVector, ri.StrSexpVector)):
        return [str(v) for v in obj]
    if isinstance(obj, (ro.vectors.BoolVector, ri.BoolSexpVector)):
        return np.asarray(obj, dtype=bool)
    if isinstance(obj, (ro.vectors.FloatVector, ro.vectors.IntVector, ri.FloatSexpVector, ri.IntSexpVector)):
        return np.asarray(obj, dtype=float)
    return obj  # an R object with no plain form (the lmer fit): left as it is


def _r_matrix(ro, M: np.ndarray):
    M = np.asarray(M, dtype=float).reshape(M.shape[0], -1)
    return ro.r["matrix"](ro.FloatVector(M.ravel(order="F")), nrow=M.shape[0], ncol=M.shape[1])


def _design_arrays(result, fit):
    """(y, X, fixed names, terms, response name) of the model ``fit`` of ``result``."""
    y = np.asarray(result._y, dtype=float)
    response = result.design.response_name if getattr(result, "design", None) is not None else "y"
    if hasattr(result, "reterms"):
        X = np.asarray(result._X, dtype=float)
        terms = [(t.Z, t.cnms, np.asarray(t.levels)[t.codes], t.group_name) for t in result.reterms.terms]
    else:
        X = np.asarray(result._X[:, np.asarray(result._refit_columns)], dtype=float)
        labels = np.asarray(result._group_labels)[result._codes]
        terms = [(result._Z, fit.random_names, labels, fit.group_name)]
    return y, X.reshape(len(y), -1), list(fit.fixef.index), terms, response


def _other_method_fit(result, method):
    """The same columns refitted by ``method`` ("REML"/"ML") instead of the fit's own, by
    the class of the fit's own (RE)ML fit (validate imports no front or result module)."""
    if hasattr(result, "fit_by"):  # several terms: the result refits its own columns
        return result.fit_by(method)
    reml = method == "REML"
    own = result.mixed
    from .cluster_stats import compute_cluster_stats
    X = np.asarray(result._X[:, np.asarray(result._refit_columns)], dtype=float)
    stats = compute_cluster_stats(X, np.asarray(result._y, dtype=float), np.asarray(result._Z, dtype=float),
                                  result._codes, len(result._group_labels))
    return type(own)(stats, own.fixed_names, own.random_names, own.group_labels, own.group_name, reml=reml)


def lme4_reference_of(result, fit=None, lmer_control: str | None = None) -> dict:
    """lme4's plain values for the model of ``result`` (``fit``: its (RE)ML fit, by
    default ``result.mixed``), refitted by lmer on the fit's own design columns, with the
    deviance at our theta: ``lmer_check_reference()`` of ``lme4_reference.R``."""
    ro = _r()
    fit = result.mixed if fit is None else fit
    y, X, names, terms, response = _design_arrays(result, fit)
    r_terms = ro.r["list"](*[ro.r["list"](Z=_r_matrix(ro, Z), names=ro.StrVector([str(n) for n in cnms]),
                                          group=ro.StrVector([str(v) for v in groups]), group_name=str(name))
                             for Z, cnms, groups, name in terms])
    control = {} if lmer_control is None else {"control": ro.r(lmer_control)}
    out = call_reference("lmer_check_reference", ro.FloatVector(y), _r_matrix(ro, X),
                         ro.StrVector(names), r_terms, response=str(response),
                         REML=fit.method == "REML", theta=ro.FloatVector(np.asarray(fit.theta, dtype=float)),
                         **control)
    return from_r(out)


def check_against_lme4(result, tol: float = 1e-6, method=None, *, tolerances=None,
                       lmer_control: str | None = None) -> Lme4Check:
    """Refit ``result``'s final model with ``lme4::lmer`` (via rpy2) and compare every quantity.

    ``result``: a result of :func:`lmmscope.lmm_scope` (the selected columns plus the
    unpenalised ones are refitted) or :func:`lmmscope.lmm` (one or several random-effects
    terms).  ``method``: None (the fit's own REML/ML), "REML" or "ML" (both sides
    refitted by it).  ``tolerances``: per-kind overrides of ``tol`` (see
    :func:`compare_values`); ``lmer_control``: R code of the ``lme4::lmerControl()`` lmer
    runs with (default: BOBYQA to ``rhoend = 1e-12``).  Raises :class:`Lme4Unavailable`
    (an ImportError) when rpy2, R or lme4 is missing, :class:`Lme4Error` when lmer
    refuses the model.
    """
    if not (hasattr(result, "mixed") and hasattr(result, "_y")):
        raise InputTypeError(f"check_against_lme4 needs a result of lmm_scope() or lmm(), "
                             f"got {type(result).__name__}")
    if result._y is None:
        raise InputError("check_against_lme4 needs the fit's rows, which a fit on streamed data "
                         "(parquet files or a Dask DataFrame) does not keep: fit the same data in "
                         "memory (a pandas DataFrame) to check it against lme4")
    _tolerance_rule(tol, tolerances)
    if method not in (None, "REML", "ML"):
        raise InputError(f"method must be None (the fit's own), 'REML' or 'ML', got {method!r}")
    fit = result.mixed if method in (None, result.mixed.method) else _other_method_fit(result, method)
    reference = lme4_reference_of(result, fit, lmer_control)
    check = compare_values(fit_values(result, fit), reference, tol, tolerances)
    check.data = reference["data"]
    check.groups = list(reference["groups"])
    return check
