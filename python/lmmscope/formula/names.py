"""Any column name, safely: data columns are handed to formulaic under placeholder names.

A column may be called ``Sepal.Length``, ``a b``, ``1x``, ``exp`` or ``C``; in Python code
the first is an attribute access, the next two are not identifiers, and the last two
shadow functions.  So every column a formula uses is renamed to a placeholder
(``__lmmscope_c3__`` where the formula names it as a variable, ``__lmmscope_p3__``
inside Python code such as ``log(x)``), formulaic sees only placeholders and its own
functions, and the names of the design's columns are mapped back afterwards.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import tokenize as pytokenize
from ..exceptions import InputError

_PLACEHOLDER = re.compile(r"__lmmscope_([cp])(\d+)__")
_BACKTICKED = re.compile(r"`([^`]*)`")
_UNKNOWN = re.compile(r"__lmmscope_u(\d+)__")
# terminal colour codes and the markers formulaic puts around the offending text
_TERMINAL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\u29db\u29da]")


def plain_message(text: str, names: "ColumnNames | None" = None) -> str:
    """A message of formulaic (or any library) for a user: placeholders turned back into
    column names, no terminal escape codes, on one line."""
    text = str(text)
    if names is not None:
        text = names.restore(text)
    return " ".join(_TERMINAL.sub(" ", text).split())


def spelled(name: str) -> str:
    """How a column is written inside code: bare if an identifier (or R-style dotted
    identifiers, ``Sepal.Length``), else in backticks."""
    bare = all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))
    return name if bare else f"`{name}`"


class ColumnNames:
    """Placeholders for the columns of one table, and the way back."""

    def __init__(self, columns, position: dict | None = None):
        """``position``: name -> index in ``columns`` (the last of a repeated name), when
        the table has it already."""
        self.columns = list(columns)
        self.position = dict(zip(self.columns, range(len(self.columns)))) if position is None \
            else position
        self.used = {}  # placeholder -> column name
        self.unknown = []

    def __contains__(self, name) -> bool:
        return name in self.position

    def variable(self, name: str) -> str:
        """Placeholder of a column used as a formula variable (``x``, ``x:f``)."""
        return self._placeholder("c", name)

    def variables(self, names: list) -> list:
        """:meth:`variable` of each of ``names``."""
        return [self.variable(name) for name in names]

    def variable_column(self, text: str):
        """The column whose :meth:`variable` placeholder is ``text``, else None."""
        match = _PLACEHOLDER.fullmatch(text)
        return self.columns[int(match.group(2))] if match and match.group(1) == "c" else None

    def in_code(self, name: str) -> str:
        """Placeholder of a column read inside Python code (``log(x)``)."""
        return self._placeholder("p", name)

    def _placeholder(self, kind: str, name: str) -> str:
        if name not in self.position:
            if name not in self.unknown:
                self.unknown.append(name)
            return f"__lmmscope_u{len(self.unknown)}__"
        text = f"__lmmscope_{kind}{self.position[name]}__"
        self.used[text] = name
        return text

    def restore(self, text: str) -> str:
        """Names of design columns (or messages) with placeholders turned back into columns."""
        def back(match):
            name = self.columns[int(match.group(2))]
            return name if match.group(1) == "c" else spelled(name)

        def unknown(match):
            j = int(match.group(1)) - 1
            return self.unknown[j] if 0 <= j < len(self.unknown) else match.group(0)
        return _UNKNOWN.sub(unknown, _PLACEHOLDER.sub(back, text))

    def referenced(self, text: str) -> list:
        """The data columns behind the placeholders in ``text``."""
        return [self.columns[int(m.group(2))] for m in _PLACEHOLDER.finditer(text)]

    def q_argument(self, code: str):
        """The column of ``Q('name')`` (the whole code), else None."""
        try:
            node = ast.parse(code, mode="eval").body
        except SyntaxError:
            return None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Q"
                and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            return node.args[0].value
        return None

    def rewrite_code(self, code: str) -> str:
        """Python code with each column reference replaced by its placeholder.

        ``^`` is R's power (``**``), as in lme4's ``I(x^2)``; R's ``factor(x)`` is
        formulaic's ``C(x)``.  References are backticked
        names, ``Q('name')``, and identifiers (or R-style dotted
        names like ``Sepal.Length``) that name a column and are not called, not an
        attribute and not a keyword argument: so ``exp(exp)`` reads the column ``exp``
        with numpy's ``exp``.
        """
        code = _BACKTICKED.sub(lambda m: self.in_code(m.group(1)), code)
        try:
            tokens = [t for t in pytokenize.generate_tokens(io.StringIO(code).readline)
                      if t.type not in (pytokenize.NEWLINE, pytokenize.ENDMARKER, pytokenize.NL)]
        except (pytokenize.TokenError, SyntaxError, IndentationError) as exc:
            raise InputError(f"cannot parse {code!r} as Python code: {exc}") from None
        edits, i = [], 0
        while i < len(tokens):
            step, edit = self._reference_at(tokens, i)
            if edit:
                edits.append(edit)
            i += step
        for start, end, text in reversed(edits):
            code = code[:start] + text + code[end:]
        return code

    def _reference_at(self, tokens, i):
        """(tokens consumed, (start, end, replacement) or None) at token i."""
        tok = tokens[i]
        if tok.type == pytokenize.OP and tok.string == "^":
            # R's power, as formulas are written (lme4's I(x^2)); Python's XOR of integer
            # columns would be a silent wrong answer
            return 1, (tok.start[1], tok.end[1], "**")
        if tok.type == pytokenize.NAME and tok.string == "factor" and \
                i + 1 < len(tokens) and tokens[i + 1].string == "(" and not _after_dot(tokens, i):
            return 1, (tok.start[1], tok.end[1], "C")  # R's factor(x): formulaic's C(x)
        if tok.type != pytokenize.NAME or keyword.iskeyword(tok.string) or _after_dot(tokens, i):
            return 1, None
        nxt = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if tok.string == "Q" and nxt == "(" and i + 3 < len(tokens) and tokens[i + 3].string == ")" \
                and tokens[i + 2].type == pytokenize.STRING:
            name = ast.literal_eval(tokens[i + 2].string)
            return 4, (tok.start[1], tokens[i + 3].end[1], self.in_code(name))
        # R-style dotted names: the longest chain a.b.c that names a column.
        chain, j, best = tok.string, i, None
        while j + 2 < len(tokens) and tokens[j + 1].string == "." and tokens[j + 2].type == pytokenize.NAME:
            chain, j = chain + "." + tokens[j + 2].string, j + 2
            if chain in self.position:
                best = (j, chain)
        if best is not None:
            j, chain = best
            return j - i + 1, (tok.start[1], tokens[j].end[1], self.in_code(chain))
        if nxt in ("(", "=", ".") or tok.string not in self.position:
            return 1, None  # a function, a keyword argument, a module, or not a column
        return 1, (tok.start[1], tok.end[1], self.in_code(tok.string))


def _after_dot(tokens, i) -> bool:
    return i > 0 and tokens[i - 1].string == "."
