"""The selection path: best subsets of the penalised columns for each k, by the
search engine ``Control.engine`` names (:mod:`lmmscope.engines`), on the problem a
reduction (:mod:`lmmscope.reduction`) built; criteria in :mod:`lmmscope.criteria`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engines import (DEFAULT_ENGINE, DEFAULT_SEARCH_EFFORT, DEFAULT_SEARCH_LIMITS, SearchLimits,
                      engine_named)
from .reduction import ReducedProblem
from .threads import one_blas_thread


@dataclass
class PathStep:
    k: int
    support: np.ndarray  # indices into the full column set (penalised only)
    coef: np.ndarray  # full coefficient vector (unpenalised included), original scale
    rss: float  # whitened residual sum of squares


def selection_path(problem: ReducedProblem, ks, progress=None,
                   search_effort: int = DEFAULT_SEARCH_EFFORT, engine: str = DEFAULT_ENGINE,
                   limits: SearchLimits = DEFAULT_SEARCH_LIMITS):
    """Best subsets for each k in ``ks`` (increasing; a k above the candidates left is
    their number, see rank.py) by the engine named ``engine``, with ``search_effort``
    (``Control.search_effort``); ``progress`` is called with each step."""
    ks = [min(int(k), problem.loss.p) for k in ks]
    search = engine_named(engine)
    with one_blas_thread():  # splicing steps are k-column products and k x k solves
        steps = [_path_step(problem, k, b)
                 for k, b in zip(ks, search.path(problem.loss, ks, search_effort, limits))]
    if progress is not None:
        for step in steps:
            progress(step)
    return steps


def _path_step(problem: ReducedProblem, k: int, b: np.ndarray) -> PathStep:
    """The path's record of the penalised coefficients ``b`` (unit-norm scale)."""
    return PathStep(k=k, support=problem.penalised[np.flatnonzero(b)],
                    coef=problem.recover(b / problem.scale), rss=problem.loss.rss(b))
