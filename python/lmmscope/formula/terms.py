"""The terms of one right-hand side, in formulaic's order, without parsing plain columns.

R's sum of terms is a set built left to right (``+`` adds a term where it first
appears, ``-`` removes it), ordered by degree at the end (intercept, main effects,
two-way interactions, ...): formulaic's rule too.  Summands that are a bare column
name, ``Q('name')``, ``.``, ``0`` or ``1`` are handled here in linear time; only the
others (factors, calls, interactions, parenthesised sums) are parsed by formulaic,
each on its own.  A term that is a single numeric data column is read straight from
the table; neighbours in the design form one :class:`ColumnRun` (what ``.`` expands
to: tens of thousands of columns as one list of names); every other term is
materialised by formulaic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

from .names import ColumnNames, plain_message
from .parse import Summand, split_summands
from ..exceptions import InputError


class Column(NamedTuple):
    """A numeric data column used as a term as it is."""

    name: str
    placeholder: str  # the variable placeholder: formulaic's factor for this column


class ColumnRun:
    """Numeric data columns used as they are, next to each other in the design."""

    __slots__ = ("names",)

    def __init__(self, names: list):
        self.names = names

    def __repr__(self) -> str:
        return f"ColumnRun({self.names!r})"


@dataclass
class Dot:
    """What ``.`` stands for: the table's columns but the response and the grouping
    column, in the table's order, and which of them formulaic encodes (factors, bool)."""

    columns: list
    non_numeric: set
    excluded: set  # the columns it leaves out


@dataclass
class TermPlan:
    """The ordered terms of a right-hand side."""

    intercept: bool
    items: list  # ColumnRun or formulaic Term (in placeholder names), in design order
    names: ColumnNames
    removed_response: bool = False
    referenced: list = field(default_factory=list)  # data columns read by formulaic terms

    def __post_init__(self):
        self.formulaic_terms = [t for t in self.items if not isinstance(t, ColumnRun)]
        runs = [t.names for t in self.items if isinstance(t, ColumnRun)]
        # the plain columns in design order (the run itself when there is one)
        self.plain = runs[0] if len(runs) == 1 else list(chain.from_iterable(runs))
        self.n_terms = len(self.plain) + len(self.formulaic_terms)

    @property
    def terms(self) -> list:
        """Every term: :class:`Column` per plain column, formulaic's Term otherwise."""
        out = []
        for item in self.items:
            if isinstance(item, ColumnRun):
                out.extend(Column(n, self.names.variable(n)) for n in item.names)
            else:
                out.append(item)
        return out

    def margins(self) -> list:
        """Plain columns (as :class:`Column`, in design order) that are a factor of a
        formulaic term: formulaic needs them to choose the same (full- or reduced-rank)
        coding as for the whole formula."""
        inside = {self.names.variable_column(f.expr) for t in self.formulaic_terms
                  for f in t.factors} - {None}
        if not inside:
            return []
        return [Column(n, self.names.variable(n)) for n in self.plain if n in inside]


def _key(term) -> tuple:
    return tuple(sorted(f.expr for f in term.factors))


class _Terms:
    """An insertion-ordered set of terms keyed like formulaic's Term equality: a plain
    column by its name (value None), a formulaic term by its factors (a tuple: never a
    name; value the Term)."""

    def __init__(self):
        self.items = {}
        self.formulaic = set()  # keys of the formulaic terms

    def add(self, term):
        if type(term) is Column:
            self.items.setdefault(term.name, None)
        elif _key(term) not in self.items:
            self.items[_key(term)] = term
            self.formulaic.add(_key(term))

    def add_columns(self, names: list):
        """:meth:`add` for many plain columns ('.'): a name already there keeps its place."""
        if self.items:
            self.items.update(dict.fromkeys(names))
        else:
            self.items = dict.fromkeys(names)

    def add_dot(self, dot: Dot, names: ColumnNames):
        if not dot.non_numeric:
            self.add_columns(dot.columns)
            return
        from formulaic.parser.types import Factor, Term
        start = 0
        for j, column in enumerate(dot.columns):
            if column in dot.non_numeric:
                self.add_columns(dot.columns[start:j])
                self.add(Term([Factor(names.variable(column), eval_method="lookup")]))
                start = j + 1
        self.add_columns(dot.columns[start:])

    def remove(self, term):
        key = term.name if type(term) is Column else _key(term)
        self.items.pop(key, None)
        self.formulaic.discard(key)

    def ordered(self) -> list:
        """Runs of plain columns and formulaic terms, by degree (stable: first appearance
        within a degree), neighbouring plain columns in one run."""
        keys = list(self.items)
        if not self.formulaic:
            return [ColumnRun(keys)] if keys else []  # all of degree 1
        values = list(self.items.values())
        pieces, start = [], 0
        for j in [j for j, v in enumerate(values) if v is not None]:
            pieces += [(1, keys[start:j]), (values[j].degree, values[j])]
            start = j + 1
        pieces.append((1, keys[start:]))
        out = []
        for _degree, piece in sorted(pieces, key=lambda d_p: d_p[0]):
            if type(piece) is not list:
                out.append(piece)
            elif out and isinstance(out[-1], ColumnRun):
                out[-1].names.extend(piece)
            elif piece:
                out.append(ColumnRun(piece))
        return out


def plan_terms(rhs: str, names: ColumnNames, is_numeric, dot: Dot | None = None,
               intercept: bool = True, response: str | None = None) -> TermPlan:
    """Ordered terms of ``rhs``; ``.`` means ``dot`` (None: '.' not allowed)."""
    terms, dotted = _Terms(), False
    for summand in split_summands(rhs):
        switch = _intercept_switch(summand)
        if switch is not None:
            intercept = switch
            continue
        if _is_dot(summand):
            _check_dot(dot, summand.sign)
            terms.add_dot(dot, names)
            dotted = True
            continue
        for term in _summand_terms(summand, names, is_numeric, dot):
            (terms.add if summand.sign > 0 else terms.remove)(term)
    removed = response is not None and response in terms.items
    if removed:
        del terms.items[response]
    plan = TermPlan(intercept, terms.ordered(), names, removed_response=removed)
    plan.referenced = sorted({c for t in plan.formulaic_terms for f in t.factors
                              for c in names.referenced(f.expr)}, key=names.position.get)
    if dotted:  # as if '.' had named all its columns (formulaic's frame holds them so)
        names.variables([c for c in plan.referenced if c not in dot.excluded])
    return plan


def _intercept_switch(summand: Summand):
    """True/False for '1'/'0' summands (with their sign), else None."""
    if len(summand.tokens) == 1 and summand.tokens[0].kind.name == "VALUE" \
            and summand.tokens[0].token in ("0", "1"):
        return (summand.tokens[0].token == "1") == (summand.sign > 0)
    return None


def _is_dot(summand: Summand) -> bool:
    tok = summand.tokens[0]
    return len(summand.tokens) == 1 and tok.kind.name == "VALUE" and tok.token == "."


def _check_dot(dot: Dot | None, sign: int) -> None:
    if dot is None:
        raise InputError("'.' is only allowed in the fixed-effects part of the formula")
    if sign < 0:
        raise InputError("'- .' is not supported; remove columns one by one")


def _summand_terms(summand: Summand, names: ColumnNames, is_numeric, dot) -> list:
    tokens = summand.tokens
    if len(tokens) == 1:
        tok = tokens[0]
        kind = tok.kind.name
        name = tok.token if kind == "NAME" else names.q_argument(tok.token) if kind == "PYTHON" else None
        if name is not None:
            return [_column_term(name, names, is_numeric)]
    return _parsed_terms(summand, names, is_numeric, dot)


def _column_term(name: str, names: ColumnNames, is_numeric):
    from formulaic.parser.types import Factor, Term
    placeholder = names.variable(name)
    if name in names and is_numeric(name):
        return Column(name, placeholder)
    return Term([Factor(placeholder, eval_method="lookup")])


def _parsed_terms(summand: Summand, names: ColumnNames, is_numeric, dot) -> list:
    """formulaic's terms of a summand that is more than a column name."""
    from formulaic import Formula
    from formulaic.errors import FormulaicError
    text = " ".join(_rewritten(tok, names, dot) for tok in summand.tokens)
    out = []
    try:
        parsed = Formula(text)
    except (FormulaicError, ValueError, TypeError, SyntaxError) as exc:
        raise InputError(f"cannot parse the formula term {names.restore(text)!r}: "
                         + plain_message(exc, names)) from None
    for term in parsed:
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


def _rewritten(tok, names: ColumnNames, dot) -> str:
    kind = tok.kind.name
    if kind == "NAME":
        return names.variable(tok.token)
    if kind == "PYTHON":
        if tok.token.replace(" ", "").startswith("offset("):
            raise InputError("offset() is not supported in Python formulas: subtract the offset "
                             "from the response (an LMM's fit is the same) and add it back to "
                             "predictions; the R package supports offset()")
        q = names.q_argument(tok.token)
        return names.variable(q) if q is not None else "{" + names.rewrite_code(tok.token) + "}"
    if kind == "VALUE" and tok.token == ".":
        _check_dot(dot, 1)
        return "(" + " + ".join(names.variable(c) for c in dot.columns) + ")"
    if kind == "OPERATOR" and tok.token == "in":
        return "%in%"
    return tok.token
