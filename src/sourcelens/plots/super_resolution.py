"""Figures of super-resolution (studies 001 and 004): every method against the noise (study 004's "limit test
with noisy images") and example images of every method with their residuals.

They read the per-image table of :func:`sourcelens.evaluate.super_resolution.evaluate_super_resolution`
(``snr``, ``noise``, ``method`` and the metrics) and its examples (low-res image, noiseless high-res truth and
each method's image, flux per pixel; shown divided by the truth's peak, the evaluation's normalisation)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..names import PISR_ABLATION, SR_METHODS
from .style import colorbar, extent, image_grid, panel, peak_asinh_norm, residual_norm, running_median, scale_bar

__all__ = ["SR_METHOD_COLOURS", "SR_METHOD_LABELS", "sr_noise_limit", "sr_method_examples"]

#: One colour per super-resolution method (:data:`sourcelens.names.SR_METHODS`), then the PISR ablation variants.
SR_METHOD_COLOURS = {
    "bicubic": "0.45", "supervised": "#9467bd", "lenssr_with_source": "#ff7f0e", "lenssr_no_source": "#1f77b4",
    "pisr": "#2ca02c", "pisr_chi2": "#8c564b", "pisr_tv": "#e377c2", "pisr_tv_mask": "#17becf",
    "pisr_tv_mask_magnification": "#bcbd22",
}
#: Legend and title labels of the methods.
SR_METHOD_LABELS = {
    "bicubic": "bicubic", "supervised": "supervised SISR", "lenssr_with_source": "LensSR with source",
    "lenssr_no_source": "LensSR no source", "pisr": "PISR",
    **{k: f"PISR {label}" for k, (label, _) in PISR_ABLATION.items()},
}
_METRIC_LABELS = {"ssim": "SSIM (truth peak = 1)", "psnr": "PSNR [dB]"}


def _methods(present: Sequence[str]) -> list[str]:
    known = list(SR_METHODS) + list(PISR_ABLATION)
    present = list(dict.fromkeys(map(str, present)))
    return [m for m in known if m in present] + [m for m in present if m not in known]


def _colour(method: str, k: int) -> str:
    return SR_METHOD_COLOURS.get(method, f"C{k % 10}")


def sr_noise_limit(per_image: pd.DataFrame, metrics: Sequence[str] = ("ssim", "psnr"), *,
                   suptitle: str | None = None) -> Figure:
    """Each metric of every method against the low-res image's S/N (log axis; one panel per metric): the
    images as faint points, the running median as a line, one colour per method; the median on noiseless
    images (no S/N) as a dashed horizontal line. Returns a figure with ``len(metrics)`` axes."""
    for metric in metrics:
        if metric not in per_image:
            raise KeyError(f"metric {metric!r} is not a column of the per-image table")
    fig = Figure(figsize=(5.0 * len(metrics), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    snr = per_image["snr"].to_numpy(dtype=float)
    noisy = np.isfinite(snr) & (snr > 0)
    any_noiseless = False
    for k, method in enumerate(_methods(per_image["method"])):
        rows = (per_image["method"].astype(str) == method).to_numpy()
        colour = _colour(method, k)
        for ax, metric in zip(axes, metrics):
            y = per_image[metric].to_numpy(dtype=float)
            ok = rows & noisy & np.isfinite(y)
            if ok.any():
                ax.scatter(snr[ok], y[ok], s=8, alpha=0.3, color=colour, lw=0, label="_images")
                ax.plot(*running_median(snr[ok], y[ok]), color=colour, lw=1.8, marker="o", ms=3,
                        label=SR_METHOD_LABELS.get(method, method))
            clean = rows & ~noisy & np.isfinite(y)
            if clean.any():
                any_noiseless = True
                ax.axhline(float(np.median(y[clean])), color=colour, lw=1.2, ls="--",
                           label="_noiseless" if ok.any() else SR_METHOD_LABELS.get(method, method))
    for ax, metric in zip(axes, metrics):
        if noisy.any():
            ax.set_xscale("log")
        ax.set_xlabel("S/N of the low-resolution image (matched filter)")
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3, which="both")
    if not noisy.any():
        axes[0].text(0.5, 0.5, "no noisy images", transform=axes[0].transAxes, ha="center", va="center")
    axes[-1].legend(fontsize=8, loc="best", frameon=False,
                    title="dashed: noiseless images (median)" if any_noiseless else None, title_fontsize=7)
    fig.suptitle(suptitle or "Super-resolution against the noise: each method against the noiseless high-res "
                 "truth (lines: running medians)", fontsize=11)
    return fig


def sr_method_examples(examples: Sequence[Mapping[str, Any]], *, metrics: Sequence[Mapping[str, float]] | None = None,
                       suptitle: str | None = None) -> Figure:
    """Super-resolution examples, two rows each: the low-res image, each method's super-resolved image and the
    noiseless high-res truth (all divided by the truth's peak, the low-res image per high-res pixel area, on one
    arcsinh scale); under each method its residual method − truth (one diverging scale).

    ``examples``: mappings with ``low_res`` (n, n), ``truth`` (fn, fn), ``estimates`` ({method: (fn, fn)}, the
    same methods for every example), ``pixel_scale`` (low-res, arcsec), ``factor`` and ``label``; ``metrics``: per
    example {method: SSIM}, written in the panels. Returns a figure of 2 N × (methods + 2) axes and two colour
    bars."""
    if not examples:
        raise ValueError("no examples to plot")
    methods = _methods(examples[0]["estimates"])
    if any(set(ex["estimates"]) != set(methods) for ex in examples):
        raise ValueError("every example needs the images of the same methods")
    n_cols = len(methods) + 2
    fig, axes = image_grid(2 * len(examples), n_cols, panel=1.6, extra_width=0.3)
    im = rim = None
    images, residuals = [], []
    for ex in examples:
        f = int(ex["factor"])
        peak = float(np.max(ex["truth"]))
        peak = peak if peak > 0 else 1.0
        images.append((np.asarray(ex["low_res"], float) / (f * f * peak), np.asarray(ex["truth"], float) / peak,
                       {m: np.asarray(ex["estimates"][m], float) / peak for m in methods}))
        residuals.append({m: images[-1][2][m] - images[-1][1] for m in methods})
    norm = peak_asinh_norm(np.concatenate([np.ravel(x[1]) for x in images]), vmin_floor=-0.1, vmax=1.0)
    rnorm = residual_norm(np.concatenate([r.ravel() for res in residuals for r in res.values()]))
    for i, (ex, (lr, truth, est), res) in enumerate(zip(examples, images, residuals)):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        scale = float(ex["pixel_scale"])
        lr_ext, hr_ext = extent(lr.shape, scale), extent(truth.shape, scale / int(ex["factor"]))
        im = panel(top[0], lr, norm, extent=lr_ext)
        for j, m in enumerate(methods):
            panel(top[1 + j], est[m], norm, extent=hr_ext)
            rim = panel(bottom[1 + j], res[m], rnorm, cmap="RdBu_r", extent=hr_ext)
            if metrics is not None and m in metrics[i]:
                top[1 + j].text(0.97, 0.04, f"SSIM {metrics[i][m]:.2f}", transform=top[1 + j].transAxes,
                                ha="right", va="bottom", color="white", fontsize=6,
                                bbox={"fc": "black", "alpha": 0.5, "lw": 0, "pad": 1.2})
        panel(top[-1], truth, norm, extent=hr_ext)
        bottom[0].axis("off")
        bottom[-1].axis("off")
        top[0].set_ylabel(textwrap.shorten(str(ex.get("label", "")), 34, placeholder="…"), fontsize=6)
        bottom[1].set_ylabel("method − truth", fontsize=6)
        scale_bar(top[0], lr_ext[1] - lr_ext[0], 1.0)
    for j, title in enumerate(("low-res input", *[SR_METHOD_LABELS.get(m, m) for m in methods], "high-res truth")):
        axes[0, j].set_title(textwrap.fill(title, 16), fontsize=8)
    colorbar(fig, im, axes[0::2].ravel().tolist(), "surface brightness / truth peak", location="right", shrink=0.6)
    colorbar(fig, rim, axes[1::2].ravel().tolist(), "residual / truth peak", location="right", shrink=0.6)
    fig.suptitle(suptitle or "Super-resolution examples: each method against the noiseless truth", fontsize=11)
    return fig
