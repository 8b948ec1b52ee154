"""The terms of one right-hand side, in formulaic's order, without parsing plain columns.

R's sum of terms is a set built left to right (``+`` adds a term where it first
appears, ``-`` removes it), ordered by degree at the end (intercept, main effects,
two-way interactions, ...): formulaic's rule too.  Summands that are a bare column
name, ``Q('name')``, ``.``, ``0`` or ``1`` are handled here in linear time; only the
others (factors, calls, interactions, parenthesised sums) are parsed by formulaic,
each on its own.  A term that is a single numeric data column is a :class:`Column`,
read straight from the table; every other term is materialised by formulaic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .names import ColumnNames
from .parse import Summand, split_summands


class Column(NamedTuple):
    """A numeric data column used as a term as it is."""

    name: str
    placeholder: str  # the variable placeholder: formulaic's factor for this column


@dataclass
class TermPlan:
    """The ordered terms of a right-hand side."""

    intercept: bool
    terms: list  # Column or formulaic Term (in placeholder names), in design order
    removed_response: bool = False
    referenced: list = field(default_factory=list)  # data columns read by formulaic terms

    def __post_init__(self):
        self.formulaic_terms = [t for t in self.terms if not isinstance(t, Column)]

    def margins(self) -> list:
        """Column terms that are a factor of a formulaic term: formulaic needs them to
        choose the same (full- or reduced-rank) coding as for the whole formula."""
        inside = {f.expr for t in self.formulaic_terms for f in t.factors}
        return [t for t in self.terms if isinstance(t, Column) and t.placeholder in inside]


def _key(term) -> tuple:
    if isinstance(term, Column):
        return (term.placeholder,)
    return tuple(sorted(f.expr for f in term.factors))


def _degree(term) -> int:
    return 1 if isinstance(term, Column) else term.degree


class _Terms:
    """An insertion-ordered set of terms keyed like formulaic's Term equality."""

    def __init__(self):
        self.items = {}

    def add(self, term):
        self.items.setdefault(_key(term), term)

    def add_columns(self, columns: list):
        """:meth:`add` for many :class:`Column` terms (what '.' expands to)."""
        setdefault = self.items.setdefault
        for column in columns:
            setdefault((column.placeholder,), column)

    def remove(self, term):
        self.items.pop(_key(term), None)

    def ordered(self) -> list:
        terms = list(self.items.values())
        if all(type(t) is Column for t in terms):
            return terms  # all of degree 1
        return sorted(terms, key=_degree)  # stable: first appearance within a degree


def plan_terms(rhs: str, names: ColumnNames, is_numeric, dot_columns=None,
               intercept: bool = True, response: str | None = None) -> TermPlan:
    """Ordered terms of ``rhs``; ``.`` means ``dot_columns`` (None: '.' not allowed)."""
    terms = _Terms()
    for summand in split_summands(rhs):
        switch = _intercept_switch(summand)
        if switch is not None:
            intercept = switch
            continue
        found = _summand_terms(summand, names, is_numeric, dot_columns)
        if summand.sign > 0 and all(type(t) is Column for t in found):
            terms.add_columns(found)
            continue
        for term in found:
            (terms.add if summand.sign > 0 else terms.remove)(term)
    removed = response is not None and terms.items.pop((names.variable(response),), None) is not None
    plan = TermPlan(intercept, terms.ordered(), removed_response=removed)
    plan.referenced = sorted({c for t in plan.formulaic_terms for f in t.factors
                              for c in names.referenced(f.expr)}, key=names.position.get)
    return plan


def _intercept_switch(summand: Summand):
    """True/False for '1'/'0' summands (with their sign), else None."""
    if len(summand.tokens) == 1 and summand.tokens[0].kind.name == "VALUE" \
            and summand.tokens[0].token in ("0", "1"):
        return (summand.tokens[0].token == "1") == (summand.sign > 0)
    return None


def _summand_terms(summand: Summand, names: ColumnNames, is_numeric, dot_columns) -> list:
    tokens = summand.tokens
    if len(tokens) == 1:
        tok = tokens[0]
        kind = tok.kind.name
        if kind == "VALUE" and tok.token == ".":
            if dot_columns is None:
                raise ValueError("'.' is only allowed in the fixed-effects part of the formula")
            if summand.sign < 0:
                raise ValueError("'- .' is not supported; remove columns one by one")
            from formulaic.parser.types import Factor, Term
            # '.' may mean tens of thousands of columns: kept lean
            return [Column(c, placeholder) if is_numeric(c)
                    else Term([Factor(placeholder, eval_method="lookup")])
                    for c, placeholder in zip(dot_columns, names.variables(dot_columns))]
        name = tok.token if kind == "NAME" else names.q_argument(tok.token) if kind == "PYTHON" else None
        if name is not None:
            return [_column_term(name, names, is_numeric)]
    return _parsed_terms(summand, names, is_numeric, dot_columns)


def _column_term(name: str, names: ColumnNames, is_numeric):
    from formulaic.parser.types import Factor, Term
    placeholder = names.variable(name)
    if name in names and is_numeric(name):
        return Column(name, placeholder)
    return Term([Factor(placeholder, eval_method="lookup")])


def _parsed_terms(summand: Summand, names: ColumnNames, is_numeric, dot_columns) -> list:
    """formulaic's terms of a summand that is more than a column name."""
    from formulaic import Formula
    text = " ".join(_rewritten(tok, names, dot_columns) for tok in summand.tokens)
    out = []
    for term in Formula(text):
        if str(term) == "1":
            continue  # the intercept is decided at the top level
        factors = term.factors
        if len(factors) == 1 and factors[0].eval_method.name == "LOOKUP":
            name = names.referenced(factors[0].expr)
            if name and is_numeric(name[0]):
                out.append(Column(name[0], factors[0].expr))
                continue
        out.append(term)
    return out


def _rewritten(tok, names: ColumnNames, dot_columns) -> str:
    kind = tok.kind.name
    if kind == "NAME":
        return names.variable(tok.token)
    if kind == "PYTHON":
        if tok.token.replace(" ", "").startswith("offset("):
            raise ValueError("offset() is not supported in Python formulas: subtract the offset "
                             "from the response (an LMM's fit is the same) and add it back to "
                             "predictions; the R package supports offset()")
        q = names.q_argument(tok.token)
        return names.variable(q) if q is not None else "{" + names.rewrite_code(tok.token) + "}"
    if kind == "VALUE" and tok.token == ".":
        if dot_columns is None:
            raise ValueError("'.' is only allowed in the fixed-effects part of the formula")
        return "(" + " + ".join(names.variable(c) for c in dot_columns) + ")"
    if kind == "OPERATOR" and tok.token == "in":
        return "%in%"
    return tok.token
