"""The unit of Z's columns: theta is optimised (and ``a`` chosen) on Z's columns scaled
to unit root mean square, so starts and boundary tests do not depend on Z's units;
theta is mapped back to Z's own units (Lambda_Z = D^{-1} Lambda) at the end.  One term
rescales its statistics (:func:`rescale_z`); several terms (:func:`several_term_theta_scale`,
per term and model-matrix column) map theta instead, as Z~ Lambda~ = Z Lambda.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .cluster_stats import ClusterStats
from .control import Control
from .theta_layout import theta_positions, theta_to_lambda


def root_mean_squares(sum_of_squares: np.ndarray, n_rows: int) -> np.ndarray:
    """Root mean square of each column from its sum of squares; 1 where that is 0 or
    not finite (a column of zeros keeps its units)."""
    scale = np.sqrt(np.clip(np.asarray(sum_of_squares, float), 0, None) / max(n_rows, 1))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


def z_column_scale(stats: ClusterStats) -> np.ndarray:
    """Root mean square of each column of Z: the unit in which theta is optimised."""
    return root_mean_squares(np.einsum("njj->j", stats.ZtZ), stats.n_obs)


def proxy_z_scale(control: Control, sum_of_squares: np.ndarray, n_rows: int) -> np.ndarray:
    """The divisor of each column of Z in the proxy covariance Sigma_a = a Z~ Z~' + I,
    the one decision of ``Control.unit_free_z`` that every data backend (in memory,
    streamed, Dask, several terms) calls: its root mean square when ``unit_free_z`` (so
    a, the support and the coefficients do not depend on Z's units), else 1 (the paper's
    raw Z).  ``sum_of_squares``: of each column of Z over the ``n_rows`` rows (the
    diagonal of sum_i Z_i'Z_i).  (The (RE)ML optimiser's own unit-free scaling,
    :func:`z_column_scale`, is a numerical choice that does not change the fit, so it
    runs whatever ``unit_free_z`` says.)"""
    if not control.unit_free_z:
        return np.ones(np.shape(sum_of_squares)[0])
    return root_mean_squares(sum_of_squares, n_rows)


def rescale_z(stats: ClusterStats, scale: np.ndarray, inplace: bool = False) -> ClusterStats:
    """The statistics of Z D^{-1}, D = diag(scale) (theta then has unit-free entries).
    ``inplace``: overwrite ``stats``' arrays (Z'X is as large as X / mean cluster size
    times q: a fresh copy costs more to fault in than the products themselves)."""
    inv = 1.0 / scale
    if inplace:
        stats.ZtZ *= inv[None, :, None] * inv[None, None, :]
        stats.ZtX *= inv[None, :, None]
        stats.Zty *= inv[None, :]
        return stats
    return replace(stats, ZtZ=stats.ZtZ * inv[None, :, None] * inv[None, None, :],
                   ZtX=stats.ZtX * inv[None, :, None], Zty=stats.Zty * inv[None, :])


def theta_rescaled(theta, scale: np.ndarray, to_scaled: bool) -> np.ndarray:
    """theta for Z D^{-1} from theta for Z (``to_scaled``) or back: Lambda_Z = D^{-1} Lambda."""
    q = scale.size
    Lam = theta_to_lambda(np.asarray(theta, float), q)
    Lam = Lam * scale[:, None] if to_scaled else Lam / scale[:, None]
    return Lam[theta_positions(q)]


def term_column_sums_of_squares(ZtZ, reterms) -> list:
    """Each random-effects term's model-matrix columns' sums of squares (a p_i-vector per
    term), read off Z'Z's diagonal summed over the term's levels (every row is in one
    level of a term; columns laid out levels outer, as :class:`lmmscope.reterms.ReTerms`)."""
    diagonal = ZtZ.diagonal()
    return [diagonal[lo:hi].reshape(t.n_levels, t.p).sum(axis=0)
            for t, lo, hi in zip(reterms.terms, reterms.Gp[:-1], reterms.Gp[1:])]


def several_term_theta_scale(ZtZ, reterms, n_obs: int) -> np.ndarray:
    """For each entry of a several-term theta, the root mean square s_r of the column of
    its row r in its term's model matrix: with each column of Z divided by its s
    (Z~ = Z S^-1), Z~ Lambda~ = Z Lambda for Lambda = S^-1 Lambda~ (each term's block of
    T~ with row r divided by s_r), so theta~ = theta * this.  The several-term analogue
    of :func:`theta_rescaled` (same theta order: each T_i's lower triangle column by
    column)."""
    sums = term_column_sums_of_squares(ZtZ, reterms)
    return np.concatenate([root_mean_squares(s, n_obs)[theta_positions(t.p)[0]]
                           for s, t in zip(sums, reterms.terms)])
