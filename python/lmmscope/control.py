"""Tuning constants of a fit, in one object (in the spirit of ``lme4::lmerControl``).

Pass ``control=Control(...)`` to :func:`lmmscope.lmm_scope` / :func:`lmmscope.lmm`;
every stage reads its constants from it instead of module globals, so a test or a
user changes one fit without touching any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from .engines import DEFAULT_ENGINE, DEFAULT_SEARCH_EFFORT, ENGINE_RULE, SearchLimits
from .exceptions import InputError, InputTypeError


@dataclass(frozen=True)
class Rule:
    """What a Control field accepts: ``kind`` ("int", "float", "floats" (a non-empty
    sequence of floats, kept as a tuple) or "bool") and, for numbers, the smallest value
    (``low``; excluded when ``open_low``).  Floats must be finite, so NaN and
    infinities are refused."""

    kind: str
    low: float | None = None
    open_low: bool = False

    def check(self, name: str, value):
        """The value as the field's type, or an InputError naming the field."""
        if self.kind == "performance":
            return as_performance(value, name)
        if self.kind == "floats":
            items = np.atleast_1d(np.asarray(value, dtype=object))
            if items.ndim != 1 or items.size == 0:
                raise InputError(f"Control({name}={value!r}): must be {self.describe()}")
            return tuple(Rule("float", self.low, self.open_low).check(name, v) for v in items)
        if (self.kind == "int" and isinstance(value, (float, np.floating))
                and math.isfinite(value) and float(value).is_integer()):
            value = int(value)  # R's numbers are doubles: 50 arrives as 50.0
        ok = {"bool": isinstance(value, (bool, np.bool_)),
              "int": isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)),
              "float": isinstance(value, (int, float, np.integer, np.floating))
              and not isinstance(value, (bool, np.bool_))}[self.kind]
        if not ok:
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}, "
                             f"got {type(value).__name__}")
        value = {"bool": bool, "int": int, "float": float}[self.kind](value)
        if self.kind == "float" and not math.isfinite(value):
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}")
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise InputError(f"Control({name}={value!r}): must be {self.describe()}")
        return value

    def describe(self) -> str:
        what = {"bool": "True or False", "int": "an integer", "float": "a finite number",
                "floats": "one or more finite numbers, each"}[self.kind]
        if self.low is not None:
            what += f" {'>' if self.open_low else '>='} {self.low:g}"
        return what


# One line per field: a new Control field needs its rule here (tests check every
# field has one).
RULES = {
    "gram_limit": Rule("int", 0),
    "single_problem_rows_bytes": Rule("int", 0),
    "dense_schur_limit": Rule("int", 0),
    "max_schur_pairs": Rule("int", 0),
    "search_effort": Rule("int", 0),
    "engine": ENGINE_RULE,
    "enumeration_limit": Rule("int", 0),
    "restart_k": Rule("int", 0),
    "max_exchange": Rule("int", 1),
    "unit_free_z": Rule("bool"),
    "a_relative_tol": Rule("float", 0, open_low=True),
    "max_a_iter": Rule("int", 1),
    "optimizer_ftol": Rule("float", 0),
    "optimizer_gtol": Rule("float", 0),
    "optimizer_maxiter": Rule("int", 1),
    "check_conv_grad_tol": Rule("float", 0, open_low=True),
    "check_conv_hess_tol": Rule("float", 0),
    "singular_tol": Rule("float", 0),
    "theta_start_scales": Rule("floats", 0, open_low=True),
    "rank_tol": Rule("float", 0, open_low=True),
    "constant_tol": Rule("float", 0),
    "duplicate_tol": Rule("float", 0),
    "response_copy_tol": Rule("float", 0),
    "scale_ratio_tol": Rule("float", 1, open_low=True),
    "lasso_tol": Rule("float", 0, open_low=True),
    "lasso_sigma_tol": Rule("float", 0, open_low=True),
    "performance": Rule("performance"),
}


@dataclass(frozen=True)
class Performance:
    """Memory and speed settings: they change how a fit runs (block sizes, when to
    batch, when to form an array), never its result (unlike :class:`Control`'s
    tolerances; tests check that small values give the default's numbers).  Passed as
    ``Control(performance=Performance(...))``, or to the low-level functions that read
    them as ``performance=``.

      on_demand_gram_bytes: above this size of the p x p Gram, even a path of selections
        reads the whitened Gram's columns on demand (the screens of successive k
        overlap, and are cached) rather than forming a second p x p array beside X'X.
      chunk_bytes: rows of X centred (and summed) at a time, in bytes (32 MiB: big
        enough for BLAS-3 efficiency, small enough to stay a fraction of X).
      min_chunk_rows: the fewest rows of such a chunk (512).
      moment_tile_bytes: a column-major X's moments are read in tiles of whole columns
        of this size (1 MiB).
      copy_block_bytes: within such a tile, blocks of rows copied to the row-major copy
        of X at a time (128 KiB, in cache).
      column_tile: columns per tile where a column-major X is read by rows of clusters
        (products and whitening; 256 columns of 1,024 rows are 2 MB).
      plain_pages_bytes: arrays of Z'X from this size up are mapped without huge-page
        advice (16 MiB; see :func:`lmmscope.dense_kernels.plain_pages_empty`).
      theta_batch_doubles: most doubles in one batched evaluation of the profiled
        deviance at several theta (2^17): batches pay where one theta's blocks are small.
      suspect_chunk: columns of a data frame inspected for missing values at once
        (256): bounds the copy when many hold NaN.
      arrow_run: columns copied together from an Arrow table (64).
      arrow_run_bytes: and at most this many bytes of them (4 MiB).
      inference_auto_gram_bytes: R's inference = NULL computes the debiased table at
        fit time unless the two p x p arrays of the node-wise fits would pass this size
        (1 GiB: p above ~8,200); a memory guard: then no table, with a warning.
      exact_limit: engine="exact" refuses to enumerate more subsets than this (summed
        over the sizes of a path; 10^6, about 1-2 s of batched solves at k ~ 6).
      small_dense_block: below this many columns after the first random-effects term
        the several-term refit runs LAPACK on one thread: on two busy cores InstEval's
        1,142 took 0.12-0.18 s a deviance on one thread, 0.19-0.41 s on two.
    """

    on_demand_gram_bytes: int = 2**28
    chunk_bytes: int = 32 * 2**20
    min_chunk_rows: int = 512
    moment_tile_bytes: int = 2**20
    copy_block_bytes: int = 2**17
    column_tile: int = 256
    plain_pages_bytes: int = 2**24
    theta_batch_doubles: int = 2**17
    suspect_chunk: int = 256
    arrow_run: int = 64
    arrow_run_bytes: int = 4 << 20
    inference_auto_gram_bytes: int = 2**30
    exact_limit: int = SearchLimits.exact_limit
    small_dense_block: int = 2000

    def __post_init__(self):
        for f in fields(self):
            value = PERFORMANCE_RULES[f.name].check(f"performance.{f.name}", getattr(self, f.name))
            object.__setattr__(self, f.name, value)


# One line per field, as RULES (tests check every field has one).
PERFORMANCE_RULES = {
    "on_demand_gram_bytes": Rule("int", 0),
    "chunk_bytes": Rule("int", 1),
    "min_chunk_rows": Rule("int", 1),
    "moment_tile_bytes": Rule("int", 1),
    "copy_block_bytes": Rule("int", 1),
    "column_tile": Rule("int", 1),
    "plain_pages_bytes": Rule("int", 0),
    "theta_batch_doubles": Rule("int", 1),
    "suspect_chunk": Rule("int", 1),
    "arrow_run": Rule("int", 1),
    "arrow_run_bytes": Rule("int", 1),
    "inference_auto_gram_bytes": Rule("int", 0),
    "exact_limit": Rule("int", 0),
    "small_dense_block": Rule("int", 0),
}

DEFAULT_PERFORMANCE = Performance()


def as_performance(value, name: str = "performance") -> Performance:
    """A Performance as it is, a dict of its fields as a Performance; else an InputError."""
    if isinstance(value, Performance):
        return value
    if isinstance(value, dict):
        known = [f.name for f in fields(Performance)]
        unknown = [k for k in value if k not in known]
        if unknown:
            raise InputError(f"Performance has no field(s) {', '.join(map(repr, unknown))}; its "
                             f"fields are {', '.join(known)}")
        return Performance(**value)
    raise InputError(f"Control({name}=...): must be a lmmscope.control.Performance or a dict, "
                     f"got {type(value).__name__}")


@dataclass(frozen=True)
class Control:
    """Constants of selection, tuning and refit.

    Data layout (Gram or rows, chosen once per fit):
      gram_limit: above this many columns (and when p > N) the p x p Gram is not formed.
      single_problem_rows_bytes: one selection (k and a both fixed) runs on whitened
        rows up to this many bytes of X (tens of O(Np) gradients cost less than the
        O(Np^2) Gram).
    Several random-effects terms (which factorisation of A = Lambda'Z'Z Lambda + I):
      dense_schur_limit: largest q - q_1 (columns after the first, largest term)
        factored by eliminating the first term and a dense Cholesky of the Schur
        complement (72 MB at 3,000), with an exact gradient; above it SuperLU, whose
        optimiser uses central differences (its optimum ~3e-8 from the exact one).
        InstEval (1,142 of 4,114 remain): 0.17 s a factor, SuperLU on the whole A 0.41 s.
      max_schur_pairs: most pairs of nonzeros (per level of the first term) for the
        index map of the Schur complement's product (12 bytes a kept pair; ~40 a pair
        while built); above it the product is a sparse matrix product per theta and the
        optimiser uses central differences.  InstEval has 3.6 million (22 MB, 0.1 s).
      search_effort: extra starts of the best-subset search at each k (an integer >= 0;
        up to enumeration_limit subsets of size k are enumerated instead):
        0 only the warm start from the previous k; 1 (default) also the marginal
        ranking; each further one a perturbation of the best support found; the
        restarts run for k <= restart_k x search_effort.
      engine: the best-subset search (lmmscope.engines): "splicing" (default, numpy,
        faster than skscope's on the same problems), "skscope" (skscope's ScopeSolver;
        loads JAX) or "exact" (every subset enumerated; small problems only).
      enumeration_limit: the splicing engine enumerates every subset of size k where
        there are at most this many (2,000); above, it searches.
      restart_k: its restarts (search_effort) run for k up to restart_k x search_effort
        (10: beyond the sizes a criterion picks, a start far from the warm one costs
        many steps); so does its backward sweep.
      max_exchange: most columns one of its splicing steps exchanges (skscope's
        max_exchange_num, 5).
      These three shape the search, so they can change the support found (unlike
      ``Performance.exact_limit``, which only refuses).
    Proxy covariance:
      unit_free_z: True (default): Sigma_a = a Z~ Z~' + I with Z~ = Z's columns divided by
        their root mean square, so a, the support and the coefficients do not depend on
        Z's units (a random-slope column in days or in seconds); False: the raw Z of the
        paper's and the seed example's definition (then a depends on those units).
    Tuning of ``a``:
      a_relative_tol: the a-iteration stops when a moves by less than this share.
      max_a_iter: most rounds of the a-iteration, per start.
    Refit (profiled (RE)ML optimisation of theta):
      optimizer_ftol, optimizer_gtol, optimizer_maxiter: L-BFGS-B's options.
      check_conv_grad_tol: lme4's ``check.conv.grad`` tolerance (2e-3) on the scaled
        gradient at the optimum; above it a ConvergenceWarning is issued.
      check_conv_hess_tol: lme4's ``check.conv.hess`` tolerance (1e-6): a Hessian
        eigenvalue below -tol is reported as a degenerate Hessian.
      singular_tol: lme4's ``check.conv.singular`` / ``isSingular`` tolerance (1e-4)
        on the bounded entries of theta (relative to the unit-free scale of Z).
      theta_start_scales: multiples of the (unit-free) identity theta tried before
        optimising, the lowest deviance's the start: the profiled deviance can have a
        second, worse local minimum (e.g. a random intercept without a fixed one, where
        the intercept variance must absorb the mean), which a single start may fall
        into; so they can change the result.
    Checks of the fixed-effects design (lme4's check.rankX and check.scaleX):
      rank_tol: R's ``qr(X, tol = 1e-7)`` as lme4's chkRank.drop.cols uses it: a column
        whose norm, after projecting out the columns kept before it, falls below this
        share of its own norm is aliased and dropped (:mod:`lmmscope.rank`).
      constant_tol: a column whose spread around its mean is below this share of its
        magnitude is constant to the precision of its values (1e-11).
      duplicate_tol: two columns whose correlation (cosine without an intercept) is
        within this of +-1 are duplicates (1e-12: independent parts below ~1e-6).
      response_copy_tol: a predictor whose correlation with the response is within
        this of +-1 is the response up to location and scale, refused (1e-10).
      scale_ratio_tol: lme4's checkScaleX: warn when the standard deviations of the
        non-binary columns differ by more than this factor, or one lies outside
        [1/tol, tol] (1e3).
    Debiased inference (the node-wise scaled lassos, :mod:`lmmscope.nodewise`):
      lasso_tol: the largest coefficient change (unit-scale columns) at which coordinate
        descent stops (1e-10: the intervals' ends then agree with the exact lasso's to
        ~1e-12 relative); ``inference(lasso_tol=)`` overrides it for one call.
      lasso_sigma_tol: the scaled lasso's noise level settles when it moves by less than
        this fraction (1e-6).
    Memory and speed (never the result): ``performance``, a :class:`Performance`.
    """

    gram_limit: int = 4000
    single_problem_rows_bytes: int = 2**28
    dense_schur_limit: int = 3000
    max_schur_pairs: int = 10_000_000
    search_effort: int = DEFAULT_SEARCH_EFFORT
    engine: str = DEFAULT_ENGINE
    enumeration_limit: int = SearchLimits.enumeration_limit
    restart_k: int = SearchLimits.restart_k
    max_exchange: int = SearchLimits.max_exchange
    unit_free_z: bool = True
    a_relative_tol: float = 1e-2
    max_a_iter: int = 6
    optimizer_ftol: float = 1e-10
    optimizer_gtol: float = 1e-10
    optimizer_maxiter: int = 2000
    check_conv_grad_tol: float = 2e-3
    check_conv_hess_tol: float = 1e-6
    singular_tol: float = 1e-4
    theta_start_scales: tuple = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    rank_tol: float = 1e-7
    constant_tol: float = 1e-11
    duplicate_tol: float = 1e-12
    response_copy_tol: float = 1e-10
    scale_ratio_tol: float = 1e3
    lasso_tol: float = 1e-10
    lasso_sigma_tol: float = 1e-6
    performance: Performance = DEFAULT_PERFORMANCE

    def __post_init__(self):
        # every value checked (and made the field's type) here, once: a NaN tolerance
        # or "no" for a flag must not reach the numerics
        for f in fields(self):
            rule = RULES.get(f.name)
            if rule is None:  # a field without a rule: its default's type, any value
                rule = Rule({bool: "bool", int: "int"}.get(type(f.default), "float"))
            object.__setattr__(self, f.name, rule.check(f.name, getattr(self, f.name)))

    def search_limits(self) -> SearchLimits:
        """The engines' limits (:class:`lmmscope.engines.SearchLimits`)."""
        return SearchLimits(enumeration_limit=self.enumeration_limit, restart_k=self.restart_k,
                            max_exchange=self.max_exchange,
                            exact_limit=self.performance.exact_limit)

    def updated(self, **changes) -> "Control":
        """A copy with some fields changed."""
        _check_names(changes)
        return replace(self, **changes)


def _check_names(values: dict) -> None:
    known = [f.name for f in fields(Control)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise InputError(f"Control has no field(s) {', '.join(map(repr, unknown))}; its fields "
                         f"are {', '.join(known)}")


DEFAULT_CONTROL = Control()


def as_control(control) -> Control:
    """``None`` -> the defaults; a dict -> Control(**dict); a Control as it is."""
    if control is None:
        return DEFAULT_CONTROL
    if isinstance(control, Control):
        return control
    if isinstance(control, dict):
        _check_names(control)
        return Control(**control)
    raise InputTypeError(f"control must be a lmmscope.Control, a dict or None, got {type(control).__name__}")
