"""Formula parsing (strings only) and materialisation (formula + data -> arrays).

Two syntaxes describe the same model:

    design syntax:  y ~ x1 + x2 | (z1 + z2 | cluster)
    lme4 syntax:    y ~ x1 + x2 + (z1 + z2 | cluster)

formulaic rejects ``|`` inside parentheses, so a small pre-pass over formulaic's own
tokens finds the random-effects group, cuts it out of the string by token position,
and hands formulaic three ordinary formulas (fixed, random, grouping).  Everything
else (factors, interactions, transforms, ``0 +``) is formulaic's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix
from formulaic.errors import DataMismatchWarning
from formulaic.parser.algos.tokenize import tokenize

INTERCEPT = "Intercept"

# Math functions R users write in formulas; formulaic's own context has only Python
# builtins, ``np`` and its transforms (log, exp, C, poly, scale, ...).
R_FUNCTIONS = {name: getattr(np, name) for name in
               ("sqrt", "exp", "log", "log2", "log10", "log1p", "expm1", "abs", "sin", "cos", "tan")}


@dataclass(frozen=True)
class ParsedFormula:
    """The parts of a mixed-model formula, as formula strings for formulaic."""

    response: str
    fixed: str  # right-hand side, may contain '.'
    random: str  # right-hand side of the random-effects term
    group: str  # name of the grouping column
    syntax: str  # "design" or "lme4"


def _strip_backticks(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "`" else name


def parse_formula(formula: str) -> ParsedFormula:
    """Split a mixed-model formula into response, fixed, random and grouping parts."""
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string, got {type(formula).__name__}")
    tokens = list(tokenize(formula))
    tildes = [t for t in tokens if t.kind.name == "OPERATOR" and t.token == "~"]
    if len(tildes) != 1:
        raise ValueError(f"formula needs exactly one '~' separating response and predictors: {formula!r}")
    # Locate top-level parenthesised groups and the '|' inside them.
    groups, depth, start, bars = [], 0, None, []
    for idx, tok in enumerate(tokens):
        if tok.kind.name == "CONTEXT" and tok.token == "(":
            depth += 1
            if depth == 1:
                start, bars = idx, []
        elif tok.kind.name == "CONTEXT" and tok.token == ")":
            if depth == 1 and bars:
                groups.append((start, idx, bars))
            depth -= 1
        elif tok.kind.name == "OPERATOR" and tok.token in ("|", "||") and depth == 1:
            bars.append(idx)
    if not groups:
        raise ValueError("formula has no random-effects term of the form '(z1 + z2 | cluster)': "
                         f"{formula!r}")
    if len(groups) > 1:
        raise ValueError("only one random-effects term with a single grouping factor is "
                         f"supported; the formula has {len(groups)}: {formula!r}")
    start, end, bars = groups[0]
    if len(bars) > 1:
        raise ValueError("the random-effects term must contain exactly one '|'")
    bar = tokens[bars[0]]
    if bar.token == "||":
        raise ValueError("'||' (uncorrelated random effects) is not supported; use '|'")
    open_pos, close_pos = tokens[start].source_start, tokens[end].source_end
    random = formula[open_pos + 1:bar.source_start].strip()
    group = formula[bar.source_end + 1:close_pos].strip()
    group_tokens = [t for t in tokenize(group)] if group else []
    if len(group_tokens) != 1 or group_tokens[0].kind.name != "NAME":
        raise ValueError(f"grouping factor must be a single column name, got {group!r}; "
                         "nested or crossed grouping (a/b, a:b, several factors) is not supported")
    group = _strip_backticks(group_tokens[0].token)
    if not random:
        raise ValueError("random-effects term has nothing before '|'; use (1 | group) for a random intercept")

    # Remove the group and the operator joining it to the rest.
    left, right = formula[:open_pos].rstrip(), formula[close_pos + 1:].lstrip()
    syntax = "lme4"
    if left.endswith("|"):
        left, syntax = left[:-1].rstrip(), "design"
    elif left.endswith("+"):
        left = left[:-1].rstrip()
    elif right.startswith("+"):
        right = right[1:].lstrip()
    remainder = (left + " " + right).strip()
    lhs, rhs = remainder.split("~", 1)
    lhs, rhs = lhs.strip(), rhs.strip()
    if not lhs:
        raise ValueError("formula has no response on the left of '~'")
    if any(t.kind.name == "OPERATOR" and t.token in ("|", "||") for t in tokenize(rhs)) if rhs else False:
        raise ValueError(f"unexpected '|' in the fixed-effects part {rhs!r}")
    if syntax == "design" and right:
        raise ValueError("in the design syntax the random-effects term must come last: "
                         "'y ~ x1 + x2 | (z1 | cluster)'")
    return ParsedFormula(response=lhs, fixed=rhs or "1", random=random, group=group, syntax=syntax)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def expand_dot(rhs: str, columns, exclude) -> str:
    """Replace '.' by every data column except ``exclude`` (R's convention)."""
    tokens = list(tokenize(rhs))
    if not any(t.token == "." and t.kind.name == "VALUE" for t in tokens):
        return rhs
    keep = [c for c in columns if c not in exclude]
    if not keep:
        raise ValueError("'.' expands to no columns: the data hold only the response and grouping columns")
    expansion = "(" + " + ".join(_quote(str(c)) for c in keep) + ")"
    out, pos = [], 0
    for t in tokens:
        if t.token == "." and t.kind.name == "VALUE":
            out.append(rhs[pos:t.source_start])
            out.append(expansion)
            pos = t.source_end + 1
    out.append(rhs[pos:])
    return "".join(out)


@dataclass
class Design:
    """Materialised arrays of a mixed model, with what prediction needs to redo it."""

    X: np.ndarray
    y: np.ndarray
    Z: np.ndarray
    groups: np.ndarray
    fixed_names: list
    random_names: list
    group_name: str
    response_name: str
    fixed_spec: object
    random_spec: object
    parsed: ParsedFormula
    fixed_formula: str
    n_dropped: int = 0
    dropped_rows: list = field(default_factory=list)
    factor_levels: dict = field(default_factory=dict)
    row_index: object = None

    def without_data(self) -> "Design":
        """The encodings only (no training arrays): what prediction needs, small to pickle."""
        empty = np.empty((0, 0))
        return replace(self, X=empty, y=np.empty(0), Z=empty,
                       groups=np.empty(0), dropped_rows=[], row_index=None)


def _required(expr: str) -> set:
    """Data columns an expression reads (function names are not columns)."""
    names = set(Formula(expr).required_variables) if expr.strip() else set()
    return names - set(R_FUNCTIONS)


def _is_categorical(s: pd.Series) -> bool:
    return (isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object
            or pd.api.types.is_string_dtype(s.dtype) or s.dtype == bool)


def build_design(formula: str, data: pd.DataFrame, na_action: str = "omit") -> Design:
    """Materialise a mixed-model formula on a DataFrame (R's na.omit by default)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if na_action not in ("omit", "fail"):
        raise ValueError("na_action must be 'omit' or 'fail'")
    parsed = parse_formula(formula)
    columns = [str(c) for c in data.columns]
    if parsed.group not in columns:
        raise KeyError(f"unknown column(s) in formula: {parsed.group} (grouping factor)")
    response_vars = _required(parsed.response)
    fixed_rhs = expand_dot(parsed.fixed, columns, response_vars | {parsed.response, parsed.group})
    needed = {"response": response_vars, "fixed": _required(fixed_rhs), "random": _required(parsed.random)}
    unknown = sorted(v for vs in needed.values() for v in vs if v not in columns)
    if unknown:
        raise KeyError("unknown column(s) in formula: " + ", ".join(unknown))
    used = sorted(set().union(*needed.values()) | {parsed.group}, key=columns.index)
    frame = data.loc[:, used] if list(data.columns) == columns else data.rename(columns=str).loc[:, used]

    for name in needed["response"]:
        if _is_categorical(frame[name]) and frame[name].dtype != bool:
            raise ValueError(f"the response {name!r} must be numeric, got {frame[name].dtype}")
    for name in used:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) and col.dtype != bool:
            vals = col.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(vals).any():
                raise ValueError(f"column {name!r} contains infinite values")
    missing = frame.isna().any(axis=1).to_numpy()
    dropped = []
    if missing.any():
        dropped = list(frame.index[missing])
        if na_action == "fail":
            raise ValueError(f"{int(missing.sum())} rows have missing values in the model's "
                             "columns (na_action='fail')")
        frame = frame.loc[~missing]
        warnings.warn(f"lmmscope: dropped {int(missing.sum())} rows with missing values "
                      "(na.omit)", stacklevel=3)
    if frame.shape[0] == 0:
        raise ValueError("no rows left after removing missing values")

    fixed_formula = f"{parsed.response} ~ {fixed_rhs}"
    mm = model_matrix(fixed_formula, frame, na_action="raise", context=R_FUNCTIONS)
    y_df, X_df = mm.lhs, mm.rhs
    if y_df.shape[1] != 1:
        raise ValueError(f"the response must be one numeric column, got {y_df.shape[1]}")
    Z_df = model_matrix(parsed.random, frame, na_action="raise", context=R_FUNCTIONS)
    levels = {name: list(pd.Categorical(frame[name]).categories)
              for name in needed["fixed"] if _is_categorical(frame[name])}
    return Design(
        X=np.asarray(X_df, dtype=float), y=np.asarray(y_df, dtype=float)[:, 0],
        Z=np.asarray(Z_df, dtype=float), groups=frame[parsed.group].to_numpy(),
        fixed_names=[str(c) for c in X_df.columns], random_names=[str(c) for c in Z_df.columns],
        group_name=parsed.group, response_name=str(y_df.columns[0]),
        fixed_spec=X_df.model_spec, random_spec=Z_df.model_spec, parsed=parsed,
        fixed_formula=fixed_formula, n_dropped=int(missing.sum()), dropped_rows=dropped,
        factor_levels=levels, row_index=frame.index,
    )


def _materialise(spec, newdata: pd.DataFrame, factor_levels: dict) -> np.ndarray:
    for name, levels in factor_levels.items():
        if name in newdata.columns:
            unseen = sorted(set(newdata[name].dropna().astype(object)) - set(levels), key=str)
            if unseen:
                raise ValueError(f"newdata column {name!r} has level(s) not seen in fitting: "
                                 + ", ".join(map(str, unseen)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            return np.asarray(spec.get_model_matrix(newdata, na_action="ignore", context=R_FUNCTIONS), dtype=float)
        except DataMismatchWarning as exc:
            raise ValueError(f"newdata does not match the fitted model: {exc}") from None


def new_design_matrices(design: Design, newdata: pd.DataFrame, need_random: bool):
    """Fixed (and random) model matrices for new rows, with the fitted encodings."""
    if not isinstance(newdata, pd.DataFrame):
        raise TypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    newdata = newdata.rename(columns=str)
    needed = set(design.fixed_spec.required_variables)
    if need_random:
        needed |= set(design.random_spec.required_variables) | {design.group_name}
    unknown = sorted(v for v in needed if v not in newdata.columns)
    if unknown:
        raise KeyError("newdata lacks column(s): " + ", ".join(unknown))
    X = _materialise(design.fixed_spec, newdata, design.factor_levels)
    Z = _materialise(design.random_spec, newdata, {}) if need_random else None
    return X, Z
