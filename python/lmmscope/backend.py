"""The data-backend contract: what tuning, the refit and inference ask of the data.

A backend holds the statistics of one model's data and answers, for a proxy scale a,
the whitened problem (``reduced``), the cross-validation folds' problems
(``fold_problems``), the statistics of a column subset for the (RE)ML refit
(``subset_stats``) and what debiased inference needs (``inference_statistics``).
Tuning, the refit and the results call only these, so a new storage format or engine
plugs in by implementing :class:`DataBackend`.  The implementations:

* :class:`lmmscope.tuning.Data`: arrays in memory, on the whitened Gram or on the
  whitened rows (:mod:`lmmscope.layouts`);
* :class:`lmmscope.sources.backend.StatsBackend`: parquet files streamed once into
  the statistics;
* :class:`lmmscope.sources.dask_backend.DaskStatsBackend`: the per-cluster blocks kept
  on Dask workers;
* :class:`lmmscope.multiterm_scope.SeveralTermsData`: several random-effects terms, and
  :class:`lmmscope.sources.several_terms.StreamedSeveralTermsData` on streamed data.

``tests/test_backend_contract.py`` runs one conformance check on every one of them (the
same data give the same answers).  The three one-factor backends share
:class:`OneFactorBackend`: inference statistics and the fold problems of whitened
statistics are written here once.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from .column_products import GramProducts
from .exceptions import InputError
from .reduction import ReducedProblem, reduce_gram


class FoldProblem(NamedTuple):
    """One cross-validation fold: the training problem and the held-out quadratics
    (G, c, yy) with error yy - 2 c'beta + beta'G beta, whitened and raw (centred by
    the statistics' shifts)."""

    train: ReducedProblem
    held_whitened: tuple
    held_raw: tuple
    n_train: int


@runtime_checkable
class DataBackend(Protocol):
    """What :func:`lmmscope.tuning.select`, the refit and ``inference()`` use of the data.

    ``stats``: the statistics of every column (centred when the model has an
    intercept; Z's columns divided by ``z_scale``, so that a is unit-free);
    ``use_gram``: whether they hold the p x p Gram X'X (else the rows of X are kept and
    the column checks read them)."""

    N: int
    p: int
    n_groups: int
    stats: object
    z_scale: np.ndarray
    use_gram: bool

    def reduced(self, a, unpenalised) -> tuple:
        """(:class:`~lmmscope.reduction.ReducedProblem` at a on all clusters,
        tr(Sigma_a^{-1}) or None)."""

    def fold_problems(self, a, unpenalised, fold_of_cluster) -> list:
        """A :class:`FoldProblem` per fold of whole clusters (or a clear refusal)."""

    def subset_stats(self, columns):
        """The statistics of the columns ``columns`` in the data's own Z units (the refit)."""

    def inference_statistics(self, a, beta, progress=None) -> tuple:
        """(:class:`~lmmscope.inference.WhitenedGram` of the centred columns, the
        per-cluster scores X_i' Sigma_a,i^{-1} r_i (clusters, p)) at a, ``beta`` in the
        original parametrisation."""


class OneFactorBackend:
    """What the one-factor backends share; each supplies ``whitened_gram(a)`` (a source
    of X_a'X_a's columns) and ``cluster_scores(a, beta, progress)``."""

    def inference_statistics(self, a, beta, progress=None):
        from .inference import whitened_gram
        return whitened_gram(self, a), self.cluster_scores(a, beta, progress)

    def column_products(self):
        """What the column and rank checks read: the Gram (the streamed and Dask
        statistics hold one; ``tuning.Data`` asks its layout)."""
        return GramProducts(self.stats)


def fold_problems_of_whitened(total, held, held_raw, unpenalised) -> list:
    """Per fold: the training problem as the totals minus the held-out fold's whitened
    statistics (``total`` and ``held``: :class:`~lmmscope.whitening.WhitenedStats`),
    with the fold's whitened and raw quadratics (``held_raw``: the fold's X'X, X'y, y'y
    as a ClusterStats)."""
    out = []
    for white, raw in zip(held, held_raw):
        train = reduce_gram(total.gram - white.gram, total.xty - white.xty,
                            total.yty - white.yty, unpenalised)
        out.append(FoldProblem(train, (white.gram, white.xty, white.yty),
                               (raw.XtX, raw.Xty, raw.yty), total.n_obs - white.n_obs))
    return out


def check_folds_of_the_pass(fold_of_cluster, accumulated) -> None:
    """Streamed and Dask statistics hold the folds fixed before the data pass: refuse
    others (they would need another pass)."""
    if accumulated is None:
        raise InputError("cross-validation folds were not accumulated in the data pass")
    if not np.array_equal(fold_of_cluster, accumulated):
        raise InputError("streamed data accumulate the statistics of the folds fixed before "
                         "the data pass (cv_folds, random_state); other folds need another pass")

