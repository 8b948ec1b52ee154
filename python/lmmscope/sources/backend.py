"""The data backend (:class:`lmmscope.backend.DataBackend`) of streamed data: statistics
alone, no rows.

Everything selection and the REML refit need is a function of the per-cluster
statistics: the whitened Gram of each ``a`` by Woodbury (whitening.whiten_stats), the
training problem of a cross-validation fold as totals minus the fold's, the refit's
statistics as a column subset.  Only the cluster scores of inference read the rows
again (one more pass over ``source``).
"""

from __future__ import annotations

import numpy as np

from ..backend import OneFactorBackend, check_folds_of_the_pass
from ..control import as_control
from ..cluster_stats import ClusterStats
from ..exceptions import InputError
from ..whitening import WhitenedGramColumns, whiten_stats
from ..z_units import proxy_z_scale, rescale_z
from ..layouts import gram_fold_problems
from ..reduction import reduce_gram
from .inference import cluster_scores


class StatsBackend(OneFactorBackend):
    """The data backend over a :class:`ClusterStats` with its p x p Gram; ``source`` and
    ``spec`` (the data and how to read the model's arrays from it) for the one pass of
    inference's cluster scores."""

    use_gram = True

    def __init__(self, stats: ClusterStats, folds=None, fold_stats=None, control=None,
                 source=None, spec=None):
        # As tuning.Data: the proxy is built on Z's columns scaled to unit root mean square;
        # ``stats`` describe the scaled columns, ``subset_stats`` (the refit) the data's own.
        control = as_control(control)
        self.z_scale = proxy_z_scale(control, np.einsum("njj->j", stats.ZtZ), stats.n_obs)
        self.stats = rescale_z(stats, self.z_scale)
        if fold_stats is not None:
            fold_stats = [rescale_z(st, self.z_scale) for st in fold_stats]
        self.N, self.p, self.n_groups = stats.n_obs, stats.p, stats.n_groups
        self._folds, self._fold_stats = folds, fold_stats
        self._source, self._spec = source, spec

    def reduced(self, a, unpenalised):
        w = whiten_stats(self.stats, a)
        return reduce_gram(w.gram, w.xty, w.yty, unpenalised), w.trace_inv

    def subset_stats(self, columns) -> ClusterStats:
        return rescale_z(self.stats.subset(columns), 1.0 / self.z_scale)

    def whitened(self, a):
        return whiten_stats(self.stats, a)

    def whitened_gram(self, a):
        """X_a'X_a by columns, for inference (as tuning.Data's)."""
        return WhitenedGramColumns(self.stats, a)

    def cluster_Zt_Xbeta(self, beta) -> np.ndarray:
        """Z_i'X_i beta for every cluster, (clusters, q)."""
        return np.einsum("iqp,p->iq", self.stats.ZtX, beta)

    def cluster_scores(self, a, beta, progress=None):
        """Per-cluster scores by one more pass over the data (see .inference)."""
        if self._source is None:
            raise InputError("inference needs the data again (one pass for the cluster scores), "
                             "and these statistics were given without their source")
        return cluster_scores(self._source, self._spec, self, a, beta,
                              progress or (lambda message: None))

    def fold_problems(self, a, unpenalised, fold_of_cluster):
        """As tuning.Data.fold_problems: training statistics are totals minus the fold's."""
        check_folds_of_the_pass(fold_of_cluster, self._folds)
        return gram_fold_problems(self.stats, self._fold_stats, a, unpenalised)
