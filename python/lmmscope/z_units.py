"""The unit of Z's columns: theta is optimised (and ``a`` chosen) on Z's columns scaled
to unit root mean square, so starts and boundary tests do not depend on Z's units;
theta is mapped back to Z's own units (Lambda_Z = D^{-1} Lambda) at the end.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .cluster_stats import ClusterStats
from .theta_layout import theta_positions, theta_to_lambda


def column_root_mean_squares(Z: np.ndarray) -> np.ndarray:
    """Root mean square of each column of Z, 1 where it is 0 or not finite: the unit
    in which Z's columns enter the proxy covariance and theta."""
    scale = np.sqrt(np.einsum("ij,ij->j", Z, Z) / max(Z.shape[0], 1))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


def z_column_scale(stats: ClusterStats) -> np.ndarray:
    """Root mean square of each column of Z: the unit in which theta is optimised."""
    ms = np.einsum("njj->j", stats.ZtZ) / max(stats.n_obs, 1)
    scale = np.sqrt(np.clip(ms, 0, None))
    return np.where((scale > 0) & np.isfinite(scale), scale, 1.0)


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
