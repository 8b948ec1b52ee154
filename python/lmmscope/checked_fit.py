"""The fit without selection on checked arrays, shared by :func:`lmmscope.lmm` (formula
front) and the R package's bridge, so both run the same checks and drop the same
aliased columns.

On the cluster statistics: finite values, the response not among the predictors,
lme4's checkScaleX, then lme4's rank rule on the centred Gram (the intercept first,
constant columns aliased; R's limited pivoting), then the (RE)ML fit of the kept columns.
"""

from __future__ import annotations

import numpy as np

from . import checks, rank
from .cluster_stats import compute_cluster_stats
from .mixed import MixedModelFit


def fit_all_columns(X, y, Z, codes, labels, names, random_names, group_name, reml=True,
                    control=None):
    """(MixedModelFit of the kept columns, their positions, names of the dropped ones)."""
    stats = compute_cluster_stats(X, y, Z, codes, labels.size)
    checks.check_statistics_finite(stats, names, y_scale=float(np.abs(y).max()))
    checks.check_response_not_a_predictor(stats, names)
    checks.check_scales(stats, names)
    kept = rank.full_rank_columns(stats, names)  # aliased columns dropped, as lme4
    mixed = MixedModelFit(stats.subset(kept), [names[j] for j in kept], random_names, labels,
                          group_name, reml=reml, control=control)
    dropped = [names[j] for j in np.setdiff1d(np.arange(len(names)), kept)]
    return mixed, kept, dropped


__all__ = ["fit_all_columns"]
