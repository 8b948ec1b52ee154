"""Pictures of the tuning: criterion against support size, and the coefficient path."""

from __future__ import annotations

import numpy as np


def plot_path(result, ax=None, show_coefficients=True):
    import matplotlib.pyplot as plt

    path = result.path
    column = "cv_error" if "cv_error" in path.columns else result.criterion
    if ax is None:
        ncols = 2 if show_coefficients else 1
        fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    a0 = axes[0]
    a0.plot(path["k"], path[column], marker="o", ms=3)
    a0.axvline(result.k, color="tab:red", ls="--", lw=1, label=f"chosen k = {result.k}")
    a0.set_xlabel("support size k")
    a0.set_ylabel(column.upper() if column != "cv_error" else "held-out error")
    a0.set_title(f"selection path (a = {result.a:.3g})")
    a0.legend()
    if show_coefficients and len(axes) > 1:
        a1 = axes[1]
        coefs = result.coef_path.drop(columns=result.unpenalised)
        active = coefs.columns[(coefs != 0).any(axis=0)]
        for name in active:
            a1.plot(coefs.index, coefs[name], lw=1, label=name if len(active) <= 10 else None)
        a1.axvline(result.k, color="tab:red", ls="--", lw=1)
        a1.set_xlabel("support size k")
        a1.set_ylabel("coefficient")
        a1.set_title("coefficient path")
        if len(active) <= 10:
            a1.legend(fontsize="small")
    fig.tight_layout()
    return fig
