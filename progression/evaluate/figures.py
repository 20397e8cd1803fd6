"""Evaluation figures as PNG bytes (matplotlib's object API with the Agg canvas, no pyplot).

Each function returns the encoded PNG so the caller writes it atomically (progression.io).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from progression.evaluate.survival import KaplanMeierResult
from progression.metrics import calibration_table
from progression.plotting import new_figure, png_bytes


def calibration_figure(frames: Mapping[str, pd.DataFrame], horizon_label: str) -> bytes:
    """Decile calibration of p_rapid (left) and of the predicted change (right) per method.

    ``frames``: method -> rows with ``p_rapid``, ``rapid_obs``, ``delta_svdh_pred``,
    ``delta_svdh_obs`` for one horizon.
    """
    fig = new_figure(10, 4.4)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.25)
    ax_p, ax_d = fig.subplots(1, 2)
    lows, highs = [], []
    for method, frame in frames.items():
        table = calibration_table(frame["rapid_obs"].to_numpy(float),
                                  frame["p_rapid"].to_numpy(float))
        if not table.empty:
            ax_p.plot(table["predicted_mean"], table["observed_mean"], "o-", label=method, ms=4)
        table = calibration_table(frame["delta_svdh_obs"].to_numpy(float),
                                  frame["delta_svdh_pred"].to_numpy(float))
        if not table.empty:
            ax_d.plot(table["predicted_mean"], table["observed_mean"], "o-", label=method, ms=4)
            lows.append(min(table["predicted_mean"].min(), table["observed_mean"].min()))
            highs.append(max(table["predicted_mean"].max(), table["observed_mean"].max()))
    ax_p.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax_p.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted p_rapid (decile mean)",
             ylabel="observed fraction rapid", title=f"Rapid progression, {horizon_label}")
    if lows:
        lo, hi = min(lows), max(highs)
        ax_d.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax_d.set(xlabel="predicted change, SvdH units (decile mean)",
             ylabel="observed change (mean)", title=f"Change in SvdH, {horizon_label}")
    if ax_p.get_legend_handles_labels()[0]:
        ax_p.legend(fontsize=8)
    return png_bytes(fig)


def scatter_figure(frames: Mapping[str, pd.DataFrame], horizon_label: str) -> bytes:
    """Predicted vs observed change, one panel per method, identity line dashed."""
    n = len(frames)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(4 * cols, 3.6 * rows)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.88, wspace=0.3, hspace=0.45)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    values = np.concatenate([
        np.concatenate([f["delta_svdh_pred"].to_numpy(float), f["delta_svdh_obs"].to_numpy(float)])
        for f in frames.values()
    ])
    values = values[np.isfinite(values)]
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
    for ax, (method, frame) in zip(axes, frames.items()):
        ax.scatter(frame["delta_svdh_pred"], frame["delta_svdh_obs"], s=8, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax.set(title=method, xlabel="predicted change (SvdH units)",
               ylabel="observed change (SvdH units)", xlim=(lo, hi), ylim=(lo, hi))
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(f"Predicted vs observed change over {horizon_label}")
    return png_bytes(fig)


def km_figure(result: KaplanMeierResult, method: str) -> bytes:
    """Progression-free Kaplan-Meier curves by risk tertile with the log-rank p-value."""
    fig = new_figure(7, 4.6)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    ax = fig.subplots()
    for fitter in result.fitters.values():
        fitter.plot_survival_function(ax=ax, ci_show=True)
    ax.set(xlabel="years from index", ylabel="progression-free fraction", ylim=(0, 1.02),
           title=f"Time to progression by {method} risk tertile "
                 f"(log-rank p = {result.logrank_p:.2g})")
    return png_bytes(fig)
