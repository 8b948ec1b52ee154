"""Formula parsing (strings only): the parts of a mixed-model formula, and a sum's summands.

Two syntaxes describe the same model:

    design syntax:  y ~ x1 + x2 | (z1 + z2 | cluster)
    lme4 syntax:    y ~ x1 + x2 + (z1 + z2 | cluster)

formulaic rejects ``|`` inside parentheses, so a small pre-pass over formulaic's own
tokens finds the random-effects group, cuts it out of the string by token position,
and leaves three ordinary formulas (fixed, random, grouping).  Each right-hand side is
then cut at its top-level ``+`` and ``-`` into signed summands, so that plain column
names and ``.`` never reach formulaic's parser (whose cost grows as p^2 in the terms).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ..exceptions import InputError, InputTypeError


def tokenize(text: str):
    """formulaic's tokenizer (imported on first use: formulaic is a heavy import)."""
    from formulaic.errors import FormulaicError
    from formulaic.parser.algos.tokenize import tokenize as formulaic_tokenize
    from .names import plain_message
    try:
        return list(formulaic_tokenize(text))
    except FormulaicError as exc:
        raise InputError(f"cannot parse the formula {text!r}: {plain_message(exc)}") from None



SEVERAL_TERMS = ("several random-effects terms (crossed (1 | a) + (1 | b), nested (1 | a/b), "
                 "(1 | a:b), uncorrelated (x || g)) are fitted by lmmscope.lmm() and lmm_scope() "
                 "(tables, parquet files, Dask DataFrames), in lme4's syntax; the other fronts take "
                 "one term for now")


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


def bar_groups(tokens) -> list:
    """(open index, close index, bar indices) of each top-level parenthesised group of
    ``tokens`` holding a '|' or '||' (the random-effects terms)."""
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
    return groups


def parse_formula(formula: str) -> ParsedFormula:
    """Split a mixed-model formula into response, fixed, random and grouping parts."""
    if not isinstance(formula, str):
        raise InputTypeError(f"formula must be a string, got {type(formula).__name__}")
    return _parse(formula)


@lru_cache(maxsize=64)  # a function of the string alone; the result is immutable
def _parse(formula: str) -> ParsedFormula:
    tokens = list(tokenize(formula))
    tildes = [t for t in tokens if t.kind.name == "OPERATOR" and t.token == "~"]
    if len(tildes) != 1:
        raise InputError(f"formula needs exactly one '~' separating response and predictors: {formula!r}")
    groups = bar_groups(tokens)
    if not groups:
        raise InputError("formula has no random-effects term of the form '(z1 + z2 | cluster)': "
                         f"{formula!r}")
    if len(groups) > 1:
        raise InputError(f"only one random-effects term here; the formula has {len(groups)}: "
                         f"{formula!r}: " + SEVERAL_TERMS)
    start, end, bars = groups[0]
    if len(bars) > 1:
        raise InputError("the random-effects term must contain exactly one '|'")
    bar = tokens[bars[0]]
    if bar.token == "||":
        raise InputError("'||' (uncorrelated random effects) is not supported here: " + SEVERAL_TERMS)
    open_pos, close_pos = tokens[start].source_start, tokens[end].source_end
    random = formula[open_pos + 1:bar.source_start].strip()
    group = formula[bar.source_end + 1:close_pos].strip()
    group_tokens = [t for t in tokenize(group)] if group else []
    if len(group_tokens) != 1 or group_tokens[0].kind.name != "NAME":
        raise InputError(f"grouping factor must be a single column name here, got {group!r}; "
                         "nested or crossed grouping: " + SEVERAL_TERMS)
    group = _strip_backticks(group_tokens[0].token)
    if not random:
        raise InputError("random-effects term has nothing before '|'; use (1 | group) for a random intercept")

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
        raise InputError("formula has no response on the left of '~'")
    if any(t.kind.name == "OPERATOR" and t.token in ("|", "||") for t in tokenize(rhs)) if rhs else False:
        raise InputError(f"unexpected '|' in the fixed-effects part {rhs!r}")
    if syntax == "design" and right:
        raise InputError("in the design syntax the random-effects term must come last: "
                         "'y ~ x1 + x2 | (z1 | cluster)'")
    return ParsedFormula(response=lhs, fixed=rhs or "1", random=random, group=group, syntax=syntax)


@dataclass(frozen=True)
class Summand:
    """One top-level term of a sum: its sign, its tokens and its source text."""

    sign: int  # +1 or -1
    tokens: tuple
    text: str


def _is(token, kind: str, text: str | None = None) -> bool:
    return token.kind.name == kind and (text is None or token.token == text)


def split_summands(rhs: str) -> list:
    """Cut a right-hand side at its top-level '+' and '-' (R's sum of terms)."""
    return list(_split(rhs))


@lru_cache(maxsize=64)
def _split(rhs: str) -> tuple:
    summands, current, sign, depth = [], [], 1, 0
    for tok in tokenize(rhs):
        if _is(tok, "CONTEXT", "("):
            depth += 1
        elif _is(tok, "CONTEXT", ")"):
            depth -= 1
        if depth == 0 and _is(tok, "OPERATOR") and tok.token in ("+", "-"):
            if current:
                summands.append(_summand(rhs, sign, current))
                current, sign = [], 1
            sign = -sign if tok.token == "-" else sign
            continue
        current.append(tok)
    if current:
        summands.append(_summand(rhs, sign, current))
    elif summands or sign != 1:
        raise InputError(f"formula ends with an operator: {rhs!r}")
    return tuple(summands)


def _summand(rhs: str, sign: int, tokens: list) -> Summand:
    text = rhs[tokens[0].source_start:tokens[-1].source_end + 1]
    return Summand(sign, tuple(tokens), text)
