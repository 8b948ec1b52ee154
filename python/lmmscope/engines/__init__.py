"""Search engines of the best-subset selection, behind one named choice point
(``Control(engine=...)``).

An engine solves, for each k of a path, min ||y - X b||^2 subject to ||b||_0 = k on the
penalised problem of :mod:`lmmscope.reduction` (unit-norm columns, the unpenalised ones
profiled out), seen only through its :class:`lmmscope.loss.QuadraticLoss`.  Engines:

* ``"splicing"`` (default): our numpy splicing with exact single-swap exchange moves,
  restarts and a backward sweep (:mod:`lmmscope.engines.splicing`); faster than
  skscope's on the same problem (issue 24) and loads no JAX.
* ``"skscope"``: skscope's ``ScopeSolver`` (:mod:`lmmscope.engines.skscope_engine`),
  JAX loaded when it first runs.
* ``"exact"``: enumeration of every subset (:mod:`lmmscope.engines.exact`), for small
  problems; refused above ``Performance.exact_limit`` subsets.

Their limits come as one :class:`SearchLimits`, built from Control
(:meth:`lmmscope.control.Control.search_limits`).

This module imports nothing heavy: an engine's module loads when it is first asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..exceptions import InputError

DEFAULT_ENGINE = "splicing"
# extra starts of the best-subset search: Control.search_effort's default, and the
# engines' when called without a Control
DEFAULT_SEARCH_EFFORT = 1
# name -> "module:class" (relative to this package), imported on first use
REGISTRY = {
    "splicing": ".splicing:SplicingEngine",
    "skscope": ".skscope_engine:SkscopeEngine",
    "exact": ".exact:ExactEngine",
}


@dataclass(frozen=True)
class SearchLimits:
    """The engines' limits, from Control (see its docstring): ``enumeration_limit``,
    ``restart_k`` and ``max_exchange`` shape the splicing search (they can change the
    support found: Control fields); ``exact_limit`` only refuses a too large
    enumeration (a Performance field)."""

    enumeration_limit: int = 2000
    restart_k: int = 10
    max_exchange: int = 5
    exact_limit: int = 1_000_000


DEFAULT_SEARCH_LIMITS = SearchLimits()


class SearchEngine(Protocol):
    """What an engine provides."""

    def path(self, loss, ks: Sequence[int], search_effort: int,
             limits: SearchLimits = DEFAULT_SEARCH_LIMITS) -> list[np.ndarray]:
        """For each k of ``ks`` (increasing, each at most ``loss.p``) the least-squares
        coefficients on the best support of size k found: a vector of length ``loss.p``
        (unit-norm columns) with k nonzeros.  ``search_effort`` is
        ``Control.search_effort``, ``limits`` ``Control.search_limits()`` (engines
        without restarts or limits ignore them)."""


_engines: dict = {}


def engine_named(name: str) -> SearchEngine:
    """The engine registered as ``name`` (one instance per process)."""
    if name not in _engines:
        if name not in REGISTRY:
            raise InputError(ENGINE_RULE.message(name))
        module, cls = REGISTRY[name].split(":")
        _engines[name] = getattr(importlib.import_module(module, __name__), cls)()
    return _engines[name]


class EngineRule:
    """The rule of ``Control.engine`` (the interface of :class:`lmmscope.control.Rule`):
    a registered engine's name."""

    def check(self, name: str, value):
        if not isinstance(value, str) or value not in REGISTRY:
            raise InputError(self.message(value, name))
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, REGISTRY))

    def message(self, value, name: str = "engine") -> str:
        return f"Control({name}={value!r}): must be {self.describe()}"


ENGINE_RULE = EngineRule()
