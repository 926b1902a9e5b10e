"""Figures of the decoder fits' posteriors (study 000): per-pixel mean and standard deviation of example
sources, unlensed and through a lens, and the calibration of their intervals."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import KIND_COLOURS, KIND_LABELS, colorbar, image_grid, linear_norm, panel, peak_asinh_norm, residual_norm

__all__ = ["posterior_maps", "posterior_calibration"]


def posterior_maps(examples: Sequence[dict], *, suptitle: str | None = None) -> Figure:
    """One row per example galaxy (dicts with ``data``, ``model_mean``, ``model_std``, ``truth``,
    ``source_mean``, ``source_std`` and a ``label``): the data and the posterior mean and standard deviation
    of the model image (through the lens, if any), then the true source and the posterior mean and standard
    deviation of the source (images in units of the model's peak, sources of the true source's peak), and
    (truth − mean) / σ, which a calibrated posterior keeps within ±2 on
    95 % of the galaxy's pixels (σ² = std² + ``truth_sigma``², the noise of a truth that carries its own: a real
    galaxy's HST stamp; 0 where the model cannot reach)."""
    cols = ["data", "model mean", "model std", "true source", "source mean", "source std", "(true − mean) / σ"]
    fig, axes = image_grid(len(examples), len(cols), panel=1.55, extra_width=0.8)
    for r, ex in enumerate(examples):
        ex = dict(ex)   # images in units of the model mean's peak, sources of the true source's peak
        img_peak, src_peak = float(np.max(ex["model_mean"])) or 1.0, float(np.max(ex["truth"])) or 1.0
        for key in ("data", "model_mean", "model_std"):
            ex[key] = np.asarray(ex[key], dtype=float) / img_peak
        for key in ("truth", "source_mean", "source_std"):
            ex[key] = np.asarray(ex[key], dtype=float) / src_peak
        norm_img = peak_asinh_norm([ex["data"], ex["model_mean"]], vmin_floor=-0.05, vmax_floor=1.0)
        norm_src = peak_asinh_norm([ex["truth"], ex["source_mean"]], vmin_floor=-0.05, vmax_floor=1.0)
        spread = np.sqrt(ex["source_std"] ** 2 + (float(ex.get("truth_sigma", 0.0)) / src_peak) ** 2)
        z = np.where(spread > 0, (ex["truth"] - ex["source_mean"]) / np.where(spread > 0, spread, 1.0), 0.0)
        maps = [(ex["data"], norm_img, None), (ex["model_mean"], norm_img, None),
                (ex["model_std"], linear_norm(ex["model_std"]), "magma"), (ex["truth"], norm_src, None),
                (ex["source_mean"], norm_src, None), (ex["source_std"], linear_norm(ex["source_std"]), "magma"),
                (np.clip(z, -4, 4), residual_norm(np.array([-3.0, 3.0])), "RdBu_r")]
        for c, (image, norm, cmap) in enumerate(maps):
            kw = {"cmap": cmap} if cmap else {}
            im = panel(axes[r, c], image, norm, title=cols[c] if r == 0 else None, **kw)
            if c in (2, 5, 6):
                colorbar(fig, im, axes[r, c], fontsize=6)
        axes[r, 0].set_ylabel(ex["label"], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def posterior_calibration(summary: pd.DataFrame) -> Figure:
    """Observed coverage of the per-pixel intervals against their nominal level (the diagonal: calibrated),
    over the galaxy's pixels: one line per set and source kind for the Laplace posterior, NUTS as open
    markers; for the lensed set, the coverage of the lensed image too (dotted). Above the diagonal the
    intervals are too wide, below too narrow."""
    fig = Figure(figsize=(10.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    sets = list(dict.fromkeys(summary["set"]))
    for ax, title, wanted in ((axes[0], "galaxies drawn from the decoder (model exact)", ["model"]),
                              (axes[1], "test galaxies (real first), unlensed and lensed",
                               [s for s in sets if s != "model"])):
        ax.plot([0, 1], [0, 1], color="k", ls="--", lw=0.8)
        for k, ((set_name, kind), rows) in enumerate(summary[summary["set"].isin(wanted)]
                                                    .groupby(["set", "kind"], sort=False)):
            colour = KIND_COLOURS.get(kind, f"C{k}")
            name = f"{set_name}: {KIND_LABELS.get(kind, kind)}"
            lap = rows[rows["method"] == "laplace"]
            if len(lap):
                ax.plot(lap["level"], lap["coverage_galaxy"], "-o", ms=3, lw=1.2, color=colour,
                        ls="-" if set_name != "lensed" else "-.", label=f"{name} (Laplace)")
                if set_name == "lensed" and lap["coverage_image"].notna().any():
                    ax.plot(lap["level"], lap["coverage_image"], ":", lw=1.0, color=colour,
                            label=f"{name}, lensed image")
            nuts = rows[rows["method"] == "nuts"]
            if len(nuts):
                ax.plot(nuts["level"], nuts["coverage_galaxy"], "s", ms=5, mfc="none", color=colour,
                        label=f"{name} (NUTS, {int(nuts['galaxies'].max())} galaxies)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("nominal level of the per-pixel interval")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6.5, loc="upper left", frameon=False)
    axes[0].set_ylabel("fraction of true source pixels inside")
    fig.suptitle("Decoder-fit posteriors: calibration of the per-pixel intervals", fontsize=11)
    return fig
