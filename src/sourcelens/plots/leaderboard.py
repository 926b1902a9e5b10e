"""The leaderboard figure: every source-recovery method on the common test set, each metric's difference from the
best method with its paired bootstrap interval, one colour per source kind (real galaxies first).

It reads the table of :func:`sourcelens.evaluate.leaderboard.leaderboard_table`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import KIND_COLOURS, KIND_LABELS

__all__ = ["leaderboard_figure"]

_PANELS = (("ssim", "SSIM − best SSIM"), ("psnr", "PSNR − best PSNR [dB]"), ("chi2_nu", "χ²/ν of the re-lensed model"))


def leaderboard_figure(table: pd.DataFrame, *, suptitle: str | None = None) -> Figure:
    """Three panels, the methods down the side (ordered by mean SSIM over all galaxies, the best on top): the
    differences in SSIM and PSNR from the best method of each source kind with their intervals (the best at 0;
    left of 0 is worse), and the mean χ²/ν of the re-lensed model (log scale; 1 is a fit to the noise; dotted:
    the true source re-lensed the same way, the floor of the source grid)."""
    kinds = [k for k in dict.fromkeys(table["kind"]) if k != "all"] + ["all"]
    overall = table[table["kind"] == "all"].sort_values("ssim_mean", ascending=False, na_position="last")
    methods = list(overall["method"]) or list(dict.fromkeys(table["method"]))
    y0 = {m: len(methods) - 1 - i for i, m in enumerate(methods)}
    fig = Figure(figsize=(13.0, 0.42 * len(methods) + 2.3), layout="constrained")
    axes = fig.subplots(1, len(_PANELS), sharey=True)
    step = 0.7 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        rows = table[table["kind"] == kind]
        y = np.array([y0[m] for m in rows["method"]]) + 0.35 - (j + 0.5) * step
        colour = KIND_COLOURS.get(kind, "black")
        label = f"{KIND_LABELS.get(kind, kind)} ({int(rows['n_galaxies'].max())})"
        for ax, (metric, _) in zip(axes, _PANELS):
            if metric == "chi2_nu":
                ax.plot(rows[f"{metric}_mean"], y, "o", color=colour, ms=4, label=label)
                continue
            diff = rows[f"{metric}_diff"].to_numpy(dtype=float)
            err = np.vstack([diff - rows[f"{metric}_diff_low"].to_numpy(dtype=float),
                             rows[f"{metric}_diff_high"].to_numpy(dtype=float) - diff])
            ax.errorbar(diff, y, xerr=np.abs(err), fmt="o", color=colour, ms=4, capsize=2, lw=1, label=label)
    for ax, (metric, title) in zip(axes, _PANELS):
        ax.set_xlabel(title)
        ax.grid(axis="x", alpha=0.3)
        if metric == "chi2_nu":
            ax.set_xscale("log")
            ax.axvline(1.0, color="0.5", lw=0.8, ls="--")
            if "chi2_nu_true_source_mean" in overall and len(overall):   # the floor the source grid allows
                ax.axvline(float(overall["chi2_nu_true_source_mean"].iloc[0]), color="black", lw=0.8, ls=":",
                           label="true source re-lensed (all)")
        else:
            ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    axes[0].set_yticks(range(len(methods)), [methods[len(methods) - 1 - i] for i in range(len(methods))], fontsize=8)
    axes[0].set_ylim(-0.6, len(methods) - 0.4)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(kinds), fontsize=8,
               title="source kind (galaxies)", title_fontsize=8)
    fig.suptitle(suptitle or "Leaderboard: every source-recovery method on one lensed test set "
                 "(paired bootstrap intervals on the difference from the best)", fontsize=10)
    return fig
