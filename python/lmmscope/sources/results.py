"""Results of fits on streamed or Dask data: everything but what needs the rows.

Fixed effects, variance components, random effects (by cluster label), the selection
path and ``predict(newdata)`` are in memory, as for an in-memory fit.  ``fitted()``,
``residuals()`` and ``predict()`` without newdata would need the rows back and raise a
clear error instead; ``inference()`` makes one more pass over the data.
"""

from __future__ import annotations

import numpy as np

from ..prediction import Predictor
from ..results import LmmResult, LmmScopeResult
from ..specification import random_intercept_only


def _not_available(what: str, why: str):
    raise NotImplementedError(f"{what} is not available for streamed data (parquet files or a "
                              f"Dask DataFrame): {why}")


class _StreamedMethods:
    """Overrides shared by the two streamed result classes."""

    def _full_fixef(self) -> np.ndarray:
        beta = np.zeros(len(self.design.fixed_names))
        beta[self._refit_columns] = self.mixed.fixef.to_numpy()
        return beta

    def fitted(self):
        _not_available("fitted()", "the rows were not kept; use predict(newdata, level=1) "
                       "on the rows you need")

    def residuals(self):
        _not_available("residuals()", "the rows were not kept; compute y - predict(newdata, "
                       "level=1) on the rows you need")

    def predictor(self) -> Predictor:
        return Predictor(self.design.without_data(), self._full_fixef(),
                         self.mixed.ranef.to_numpy(), self._group_labels,
                         random_intercept_only(self.mixed.random_names))

    def predict(self, newdata=None, level: int = 0, Z=None, groups=None) -> np.ndarray:
        if newdata is None:
            _not_available("predict() without newdata", "pass the rows as newdata")
        return self.predictor().predict(newdata, level=level, Z=Z, groups=groups)


class StreamedLmmResult(_StreamedMethods, LmmResult):
    """:func:`lmmscope.lmm` on parquet files or a Dask DataFrame."""

    def __init__(self, mixed, design, group_labels, refit_columns=None, dropped_columns=()):
        super().__init__(mixed, design, np.empty((0, len(design.fixed_names))), None, None,
                         None, group_labels, refit_columns, dropped_columns)


class StreamedScopeResult(_StreamedMethods, LmmScopeResult):
    """:func:`lmmscope.lmm_scope` on parquet files or a Dask DataFrame."""

    def __init__(self, selection, mixed, design, group_labels, names, unpenalised,
                 refit_columns, backend, source=None, spec=None, dropped_columns=()):
        super().__init__(selection, mixed, design, None, None, None, None, group_labels,
                         names, unpenalised, refit_columns, data=backend,
                         dropped_columns=dropped_columns)
        self._source, self._spec = source, spec

    def _inference_statistics(self, progress):
        """As :meth:`LmmScopeResult._inference_statistics`; the cluster scores take one more
        pass over the data (parquet files or the Dask DataFrame, which must still be
        readable)."""
        from .. import inference as inf
        from .inference import cluster_scores

        return (inf.whitened_gram(self._data, self.a),
                cluster_scores(self._source, self._spec, self._data, self.a,
                               self.coef.to_numpy(), progress))
