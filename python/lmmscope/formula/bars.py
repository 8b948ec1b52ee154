"""Formulas with several random-effects terms (lme4's ``findbars`` and ``expandDoubleVerts``).

    y ~ x + (1 | subject) + (1 | item)        crossed
    y ~ x + (1 | school/class)                nested: (1 | school) + (1 | school:class)
    y ~ x + (1 | a:b)                         the interaction factor of a and b
    y ~ Days + (Days || Subject)              (1 | Subject) + (0 + Days | Subject)
    y ~ x + (1 | g) + (0 + x | g)             several terms on one factor

:func:`parse_bar_terms` returns the response, the fixed part and the expanded bar terms;
:func:`has_several_terms` tells whether a formula needs the several-terms engine
(:mod:`lmmscope.reterms`) rather than the one-factor path of :func:`parse.parse_formula`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..exceptions import InputError, InputTypeError
from .parse import bar_groups, split_summands, tokenize


@dataclass(frozen=True)
class BarTerm:
    """One ``(random | group)`` term after expansion: ``group`` names the columns whose
    interaction is the grouping factor (one column for ``(1 | g)``, two for ``(1 | a:b)``)."""

    random: str
    group: tuple

    @property
    def group_name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class BarFormula:
    response: str
    fixed: str
    terms: tuple  # of BarTerm, in the formula's order (lme4 sorts them later by levels)


def _strip_backticks(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "`" else name


def has_several_terms(formula: str) -> bool:
    """Whether the formula (lme4 syntax) has more than one bar term once expanded:
    several ``( | )`` groups, a ``||``, or a grouping factor ``a/b`` or ``a:b``."""
    if not isinstance(formula, str) or "|" not in formula:
        return False
    bar = formula.find("|")
    if formula.count("|") == 1 and not any(c in formula[bar:] for c in ":/"):
        return False  # one bar, a plain factor: no tokenizing of a long fixed part
    return _has_several_terms(formula)


@lru_cache(maxsize=64)
def _has_several_terms(formula: str) -> bool:
    try:
        tokens = list(tokenize(formula))
    except Exception:  # the ordinary parser reports a malformed formula
        return False
    groups = bar_groups(tokens)
    if len(groups) > 1:
        return True
    for _start, end, bars in groups:
        if tokens[bars[0]].token == "||":
            return True
        if any(t.kind.name == "OPERATOR" and t.token in ("/", ":")
               for t in tokens[bars[-1] + 1:end]):
            return True
    return False


def parse_bar_terms(formula: str) -> BarFormula:
    """Response, fixed part and expanded bar terms of an lme4-syntax formula."""
    if not isinstance(formula, str):
        raise InputTypeError(f"formula must be a string, got {type(formula).__name__}")
    return _parse_bars(formula)


@lru_cache(maxsize=64)
def _parse_bars(formula: str) -> BarFormula:
    tokens = list(tokenize(formula))
    groups = bar_groups(tokens)
    if not groups:
        raise InputError(f"formula has no random-effects term '(z | group)': {formula!r}")
    terms, kept, last = [], [], 0
    for start, end, bars in groups:
        if len(bars) > 1:
            raise InputError("a random-effects term must contain exactly one '|' or '||': "
                             + formula[tokens[start].source_start:tokens[end].source_end + 1])
        open_pos, close_pos = tokens[start].source_start, tokens[end].source_end
        bar = tokens[bars[0]]
        random = formula[open_pos + 1:bar.source_start].strip()
        group_text = formula[bar.source_end + 1:close_pos].strip()
        if not random:
            raise InputError(f"random-effects term ({random} | {group_text}) has nothing before "
                             "'|'; use (1 | group) for a random intercept")
        for group in _grouping_factors(group_text):
            if bar.token == "||":
                terms.extend(BarTerm(r, group) for r in _uncorrelated(random))
            else:
                terms.append(BarTerm(random, group))
        kept.append(formula[last:open_pos])
        last = close_pos + 1
    kept.append(formula[last:])
    kept = _design_syntax_bar_removed(kept, formula)
    remainder = " ".join(kept)
    if remainder.count("~") != 1:
        raise InputError(f"formula needs exactly one '~' separating response and predictors: {formula!r}")
    lhs, rhs = (s.strip() for s in remainder.split("~", 1))
    if not lhs:
        raise InputError("formula has no response on the left of '~'")
    if "|" in rhs:
        raise InputError(f"unexpected '|' in the fixed-effects part {rhs!r}; the design syntax "
                         "puts every random-effects term after one '|': "
                         "'y ~ x1 + x2 | (1 | a) + (1 | b)'")
    # the '+' that joined the removed terms: collapse runs, trim the ends
    rhs = re.sub(r"\+(\s*\+)+", "+", rhs).strip()
    rhs = re.sub(r"\+\s*-", "-", rhs)
    rhs = re.sub(r"^\+|\+$", "", rhs).strip()
    return BarFormula(response=lhs, fixed=rhs or "1", terms=tuple(terms))


def _design_syntax_bar_removed(pieces: list, formula: str) -> list:
    """The text around the bar groups without the design syntax's separator: in
    ``y ~ x1 + x2 | (1 | a) + (1 | b)`` the '|' before the first group means '+' (the
    design syntax's random-effects terms are lme4's), provided only groups joined by '+'
    follow it."""
    head = pieces[0].rstrip()
    if not head.endswith("|") or head.endswith("||"):
        return pieces
    if any(p.replace("+", "").strip() for p in pieces[1:]):
        raise InputError("in the design syntax the random-effects terms come last, joined by "
                         f"'+': 'y ~ x1 + x2 | (1 | a) + (1 | b)'; got {formula!r}")
    return [head[:-1]] + pieces[1:]


def _grouping_factors(text: str) -> list:
    """``a`` -> [(a,)]; ``a:b`` -> [(a, b)]; ``a/b/c`` -> [(a,), (b, a), (c, b, a)]:
    lme4's nesting, whose inner factors are named and labelled ``b:a``, ``c:b:a``."""
    tokens = list(tokenize(text)) if text else []
    parts, current, expect_name = [], [], True
    for tok in tokens:
        if expect_name and tok.kind.name == "NAME":
            current.append(_strip_backticks(tok.token))
            expect_name = False
        elif not expect_name and tok.kind.name == "OPERATOR" and tok.token in (":", "/"):
            if tok.token == "/":
                parts.append(tuple(current))
                current = []
            expect_name = True
        else:
            raise InputError(
                f"grouping factor {text!r}: lme4 writes a grouping factor as a column name g, "
                "an interaction a:b or a nesting a/b (= a + b:a); anything else (a call, a "
                "sum) is not a grouping factor here: compute it as a column first")
    if expect_name:
        raise InputError(f"grouping factor {text!r} is empty or ends with an operator")
    parts.append(tuple(current))
    nested = [parts[0]]
    for part in parts[1:]:
        nested.append(part + nested[-1])
    return nested


def _uncorrelated(random: str) -> list:
    """lme4's ``||``: (1 + x + z || g) -> (1 | g) + (0 + x | g) + (0 + z | g)."""
    intercept, others = True, []
    for summand in split_summands(random):
        if summand.text in ("0", "1"):
            intercept = summand.text == "1" and summand.sign > 0
        elif summand.sign < 0:
            raise InputError(f"'||' term ({random} || ...): only '- 1' may be subtracted")
        else:
            others.append(f"0 + {summand.text}")
    return (["1"] if intercept else []) + others
