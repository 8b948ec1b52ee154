"""The R package's door into the core: numeric arrays in, plain values out.

R builds the design itself (model.frame / model.matrix, its contrasts, na.action,
offsets, lme4's bar semantics) and hands over X (N x p), y, Z (N x q), the cluster
code of each row, the column names as R spells them and the 0-based indices of the
unpenalised columns.  What comes back is the versioned plain-values schema of
:mod:`lmmscope.schema` plus what only R needs (conditional variances of the random
effects, the ML refit used by ``anova``, the warnings raised), so an R fit is ordinary
R data: it survives ``saveRDS`` and predicts without Python.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from . import checks, engine
from .control import Control, as_control
from .exceptions import InputError
from .schema import inference_payload, plain, result_payload
from .specification import TuningArguments, with_random_slopes
from .tuning import DEFAULT_A_GRID, Progress
from .schema import SCHEMA_VERSION, _selection_payload


def _names(x) -> list:
    """reticulate turns a length-1 character vector into a str: always a list."""
    if x is None:
        return []
    return [str(v) for v in ([x] if isinstance(x, str) else list(np.atleast_1d(x)))]


def _column_major(values, n_rows: int) -> np.ndarray:
    """R's numbers as an (n_rows, m) float array.  R sends raw little-endian doubles
    (a bytearray; reticulate 1.28 cannot hand numpy 2 a matrix) in column-major order;
    Python callers may pass arrays."""
    if isinstance(values, (bytes, bytearray, memoryview)):
        flat = np.frombuffer(values, dtype="<f8")
        return flat.reshape(-1, n_rows).T
    return np.asarray(values, dtype=float).reshape(n_rows, -1)


def _arrays(X, y, Z, groups):
    y = _column_major(y, len(y) // 8 if isinstance(y, (bytes, bytearray)) else np.size(y))[:, 0]
    n = y.size
    X = np.asfortranarray(_column_major(X, n))
    Z = np.asfortranarray(_column_major(Z, n))
    groups = _column_major(groups, n)[:, 0].astype(np.int64)
    return np.ascontiguousarray(y), X, Z, groups


def _control(values) -> Control | None:
    """R's ``lmm_scope_control(...)`` list as a :class:`Control`, whose own rules check
    the values (R's whole doubles become ints there); unknown names in R's words."""
    if values is None:
        return None
    fields = [f.name for f in dataclasses.fields(Control)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown control option(s) {', '.join(unknown)}; lmm_scope_control() "
                         f"takes {', '.join(fields)}")
    return Control(**values)


def _core_fit(X, y, Z, groups, names, random_names, group_name, unpenalised, reml, selection,
              control=None):
    """The engine on R's arrays (:func:`lmmscope.engine.fit_rows`: the same checks as every
    front).  ``selection`` is None for a plain LMM, else the tuning keyword arguments
    (plus ``verbose`` and ``penalize_random_slopes``).  Returns (result, ML refit of the
    same columns)."""
    selection = dict(selection or {})
    verbose = selection.pop("verbose", False)
    slopes_penalised = selection.pop("penalize_random_slopes", False)
    tuning = TuningArguments(**selection) if selection else None
    if tuning is not None:
        unpenalised = with_random_slopes(names, random_names, sorted(set(unpenalised)), tuning.k,
                                         slopes_penalised, Progress(verbose))
    result = engine.fit_rows(X, y, Z, groups, names, random_names, group_name,
                             unpenalised=unpenalised, tuning=tuning, reml=reml,
                             control=control, verbose=verbose)
    return result, engine.ml_refit(result)


def _condvar(mixed) -> list:
    """Conditional covariance of each cluster's random effects, sigma^2 F_i'F_i
    (F_i = L_i^{-1} Lambda'), as lme4's ranef(condVar = TRUE): (clusters, q, q)."""
    F = mixed._sol.LinvLamT
    return (mixed.sigma ** 2 * np.swapaxes(F, 1, 2) @ F).tolist()


def _ml_summary(ml) -> dict:
    return {"loglik": float(ml.loglik), "deviance": float(ml.deviance),
            "n_params": int(ml.n_params), "fixef": ml.fixef.tolist(), "theta": ml.theta.tolist(),
            "sigma": float(ml.sigma)}


def _warning_list(caught) -> list:
    out = []
    for w in caught:
        cat = w.category.__name__
        text = str(w.message)
        if not any(o["category"] == cat and o["message"] == text for o in out):
            out.append({"category": cat, "message": text})
    return out


def _finish(result, ml, caught, inference=None) -> dict:
    out = result_payload(result, inference)
    out["dropped"] = list(getattr(result, "dropped_columns", []))
    out["ranef_condvar"] = _condvar(result.mixed)
    out["ml_refit"] = _ml_summary(ml)
    out["warnings"] = _warning_list(caught)
    return plain(out)


def _inference_fits_memory(p: int, control: Control | None) -> bool:
    """inference = NULL: computed at fit time unless the two p x p arrays the node-wise
    fits hold (the whitened Gram and its scaled copy) would pass
    ``Performance.inference_auto_gram_bytes`` (1 GiB: p above ~8,200), then said; a
    memory guard, not a time one."""
    gram_bytes = 2 * 8 * p ** 2
    if gram_bytes <= as_control(control).performance.inference_auto_gram_bytes:
        return True
    warnings.warn(f"no debiased inference computed: the two {p} x {p} arrays it needs take "
                  f"{gram_bytes / 2**30:.1f} GiB; pass inference = TRUE to compute it anyway")
    return False


def _whole(value):
    """R's numbers are doubles: 5 arrives as 5.0 and becomes 5; anything else (2.5, NaN for
    NA, text) is passed on for the core's checks to refuse by name, never truncated."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fit_arrays(X, y, Z, groups, names, random_names, group_name, unpenalised=None, k=None,
               a=None, criterion="gic", k_max=None, cv_folds=5, reml=True, inference=None,
               conf_level=0.95, random_state=0, verbose=False, penalize_random_slopes=False,
               a_grid=None, control=None) -> dict:
    """Select and refit on R's design arrays; ``unpenalised``: 0-based column indices;
    ``control``: a dict of :class:`Control` fields."""
    y, X, Z, groups = _arrays(X, y, Z, groups)
    names, random_names = _names(names), _names(random_names)
    unpenalised = [int(j) for j in np.atleast_1d(unpenalised if unpenalised is not None else [])]
    selection = dict(k=_whole(k), a=a, criterion=criterion, k_max=_whole(k_max),
                     cv_folds=_whole(cv_folds),
                     a_grid=DEFAULT_A_GRID if a_grid is None else
                     tuple(float(v) for v in np.atleast_1d(a_grid)),
                     random_state=_whole(random_state), verbose=bool(verbose),
                     penalize_random_slopes=bool(penalize_random_slopes))
    try:
        checks.check_tuning_arguments(selection["k"], a, criterion, selection["k_max"],
                                      selection["cv_folds"], selection["a_grid"],
                                      "REML" if reml else "ML", selection["random_state"])
    except InputError as exc:  # in the words of R's lmm_scope(), whose argument is seed
        raise InputError(str(exc).replace("random_state", "seed")) from None
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, ml = _core_fit(X, y, Z, groups, names, random_names, str(group_name),
                               unpenalised, bool(reml), selection, control)
        # by default at fit time: the node-wise fits cost about the fit's own time
        # (bench/inference.py), and a saved R fit has no Python to compute them later
        if inference is None:
            inference = _inference_fits_memory(len(names), control)
        table = None
        if inference:
            tab = result.inference(level=float(conf_level), adjust="bh", verbose=verbose)
            table = inference_payload(tab, result.ngroups - 1, float(conf_level), "BH")
    return _finish(result, ml, caught, table)


def lmm_arrays(X, y, Z, groups, names, random_names, group_name, reml=True,
               control=None) -> dict:
    """Fit the LMM with every column of X (no selection), as lme4::lmer does."""
    y, X, Z, groups = _arrays(X, y, Z, groups)
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, ml = _core_fit(X, y, Z, groups, _names(names), _names(random_names),
                               str(group_name), [], bool(reml), None, control)
    return _finish(result, ml, caught)


# -- several random-effects terms ----------------------------------------------------
# R sends each term as it built it (the formula's order): its model matrix Z_i (N x p_i),
# the 0-based level code of each row, the level labels, the column names and the grouping
# factor's name.  The core orders the terms as lme4 does (ReTerms) and answers in that
# order, each term saying which of R's it is ("source", 0-based).


# The core's Python spellings of lmm_scope()'s arguments, as R's lmm_scope() writes them.
R_WORDS = (("random_state", "seed"), ("k=None", "k = NULL"), ("a=None", "a = NULL"),
           ("k='cv'", 'k = "cv"'), ("a='cv'", 'a = "cv"'))


def _in_r_words(message: str) -> str:
    for python, r in R_WORDS:
        message = message.replace(python, r)
    return message


def _several_terms(terms, n_rows: int):
    """R's terms as the core's :class:`~lmmscope.reterms.ReTerms` (lme4's order) and the
    position in R's list of each of its terms."""
    from .reterms import ReTerm, ReTerms
    if isinstance(terms, dict):  # reticulate: a list of one R list
        terms = [terms]
    given = []
    for t in terms:
        cnms, name = _names(t["cnms"]), str(t["group_name"])
        levels = np.asarray(_names(t["levels"]), dtype=object)
        Z = checks.as_float_matrix(_column_major(t["Z"], n_rows), f"Z of ({' + '.join(cnms)} | {name})")
        checks.check_finite_columns(Z, cnms, f"Z of ({' + '.join(cnms)} | {name})")
        codes = _column_major(t["codes"], n_rows)[:, 0]
        if codes.size and (codes.min() < 0 or codes.max() >= levels.size or
                           np.any(codes != np.round(codes))):
            raise InputError(f"the level codes of grouping factor {name!r} must be whole numbers "
                             f"in 0..{levels.size - 1}")
        given.append(ReTerm(name, (name,), levels, codes.astype(np.int64), cnms,
                            np.asfortranarray(Z), None))
    reterms = ReTerms(given)
    source = [next(i for i, g in enumerate(given) if g is t) for t in reterms.terms]
    return reterms, source


class _ArraysDesign:
    """The fixed design R built, in the shape the several-terms selection reads."""

    def __init__(self, X, y, names):
        self.X, self.y, self.fixed_names = X, y, list(names)

    def without_data(self):
        return self


def _several_mixed_payload(mixed, source) -> dict:
    """lme4's quantities of a several-term (RE)ML fit, terms in lme4's order."""
    reterms, sol = mixed.reterms, mixed._sol
    terms = []
    for i, (t, block, (_g, _n, condvar), (_g2, _n2, cov)) in enumerate(zip(
            reterms.terms, reterms.split(mixed.b), mixed.condvar(), mixed.term_covariances())):
        terms.append({"source": int(source[i]), "group_name": t.group_name, "cnms": list(t.cnms),
                      "levels": [str(v) for v in t.levels.tolist()], "ranef": block,
                      "condvar": condvar, "cov": cov,
                      "theta": mixed.theta[reterms.theta_term == i]})
    return {
        "method": mixed.method, "fixef_names": list(mixed.fixed_names), "fixef": mixed.fixef,
        "vcov": mixed.vcov_matrix, "sigma": float(mixed.sigma), "theta": mixed.theta,
        "lower": reterms.lower, "terms": terms, "loglik": float(mixed.loglik),
        "n_params": int(mixed.n_params), "deviance": float(mixed.deviance),
        "deviance_ml_at_estimates": float(sol.deviance_ml),
        "deviance_reml_at_estimates": float(sol.deviance_reml),
        "nobs": int(mixed.nobs), "singular": bool(mixed.singular),
        "converged": bool(mixed.converged),
        "convergence_messages": list(mixed.convergence_messages),
        "optimizer_message": str(mixed.optimizer_message),
    }


def _several_fixed(X, y, names):
    X = checks.as_float_matrix(_column_major(X, y.size), "X")
    checks.check_finite_columns(X, names, "X")
    return X


def lmm_terms_arrays(X, y, terms, names, reml=True, control=None) -> dict:
    """lme4's ``lmer`` of a model with several random-effects terms (or one term whose
    grouping factor is an interaction): every column of X, aliased ones dropped as lme4
    does (the core decides which and returns them as ``dropped``)."""
    from .random_effects import several_terms_spec
    y = _column_major(y, len(y) // 8 if isinstance(y, (bytes, bytearray)) else np.size(y))[:, 0]
    y = checks.check_response(np.ascontiguousarray(y), y.size)
    names = _names(names)
    X = _several_fixed(X, y, names)
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reterms, source = _several_terms(terms, y.size)
        result = engine.fit(several_terms_spec(_ArraysDesign(X, y, names), reterms,
                                               reml=bool(reml), control=control))
        fit, kept = result.mixed, result._refit_columns
        names = [names[j] for j in kept]
        ml = result.ml_fit()
        dropped = result.dropped_columns
    out = {"schema_version": SCHEMA_VERSION, "kind": "lmm", "names": names, "coef": fit.fixef,
           "support": [], "selected": names, "unpenalised": [], "k": None, "a": None,
           "criterion": None, "path": None, "coef_path": None, "a_history": None,
           "dropped": dropped, "inference": None}
    out.update(_several_mixed_payload(fit, source))
    out["ml_refit"] = {"loglik": float(ml.loglik), "n_params": int(ml.n_params)}
    out["warnings"] = _warning_list(caught)
    return plain(out)


def fit_terms_arrays(X, y, terms, names, unpenalised=None, k=None, a=None, criterion="gic",
                     k_max=None, cv_folds=5, reml=True, inference=None, conf_level=0.95,
                     random_state=0, verbose=False, penalize_random_slopes=False, a_grid=None,
                     control=None) -> dict:
    """:func:`fit_arrays` for several random-effects terms: selection by the proxy
    a Z Z' + I over every term, (RE)ML refit of the selected columns as lme4."""
    from .multiterm_scope import _outermost_nesting
    from .random_effects import several_terms_spec
    from .tuning import Progress
    y = _column_major(y, len(y) // 8 if isinstance(y, (bytes, bytearray)) else np.size(y))[:, 0]
    y = checks.check_response(np.ascontiguousarray(y), y.size)
    names = _names(names)
    X = _several_fixed(X, y, names)
    unpen = sorted({int(j) for j in np.atleast_1d(unpenalised if unpenalised is not None else [])})
    k, k_max, cv_folds, random_state = (_whole(v) for v in (k, k_max, cv_folds, random_state))
    a_grid = (DEFAULT_A_GRID if a_grid is None
              else tuple(float(v) for v in np.atleast_1d(a_grid)))
    method = "REML" if reml else "ML"
    try:
        checks.check_tuning_arguments(k, a, criterion, k_max, cv_folds, a_grid, method,
                                      random_state)
    except InputError as exc:  # in the words of R's lmm_scope(), whose argument is seed
        raise InputError(_in_r_words(str(exc))) from None
    control = _control(control)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reterms, source = _several_terms(terms, y.size)
        random_names = [c for t in reterms.terms for c in t.cnms]
        try:
            unpen = with_random_slopes(names, random_names, unpen, k,
                                       bool(penalize_random_slopes), Progress(verbose))
            tuning = TuningArguments(k, a, criterion, k_max, cv_folds, a_grid, random_state)
            result = engine.fit(several_terms_spec(
                _ArraysDesign(X, y, names), reterms, unpenalised=unpen, tuning=tuning,
                reml=bool(reml), control=control, verbose=bool(verbose)))
        except InputError as exc:
            raise InputError(_in_r_words(str(exc))) from None
        outer = _outermost_nesting(reterms)
        table = None
        if inference is None and outer is None:
            warnings.warn("no debiased inference computed: it needs one clustering of the rows "
                          "for the cluster-robust sandwich, and this model's random-effects "
                          "terms are crossed")
        elif inference or (inference is None and _inference_fits_memory(len(names), control)):
            tab = result.inference(level=float(conf_level), adjust="bh", verbose=verbose)
            table = inference_payload(tab, outer.n_levels - 1, float(conf_level), "BH")
        mixed = result.mixed
        ml = result.ml_fit()
    out = {"schema_version": SCHEMA_VERSION, "kind": "lmm_scope", "dropped": []}
    out.update(_selection_payload(result))
    out.update(_several_mixed_payload(mixed, source))
    out["ml_refit"] = {"loglik": float(ml.loglik), "n_params": int(ml.n_params)}
    out["inference"] = table
    out["warnings"] = _warning_list(caught)
    return plain(out)


# R's names of the adjustments the core makes (stats::p.adjust's spelling)
R_ADJUSTMENTS = {"BH": "bh", "fdr": "bh", "holm": "holm", "none": None}


def inference_at(terms, estimate, std_error, df, level, adjust="BH") -> dict:
    """The debiased-inference table of a stored fit at another ``level`` or adjustment
    (R's ``confint(method = "debiased", level =)``, ``inference(adjust =)``): the core's
    :func:`lmmscope.inference.inference_table` on the stored estimates and standard
    errors, adjusted across every column (the family), so R computes none of it."""
    if adjust not in R_ADJUSTMENTS:
        raise InputError(f"adjust must be one of {', '.join(map(repr, R_ADJUSTMENTS))} (the "
                         f"adjustments the core makes), got {adjust!r}")
    from .inference import inference_table
    terms = _names(terms)
    table = inference_table(terms, range(len(terms)),
                            np.asarray(estimate, dtype=float).reshape(-1),
                            np.asarray(std_error, dtype=float).reshape(-1),
                            float(df), float(level), R_ADJUSTMENTS[adjust])
    out = inference_payload(table, float(df), float(level), adjust)
    out["warnings"] = []
    return plain(out)


__all__ = ["fit_arrays", "lmm_arrays", "fit_terms_arrays", "lmm_terms_arrays", "inference_at"]
