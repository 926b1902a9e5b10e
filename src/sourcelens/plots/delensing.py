"""Figures of delensing (study 002): example sources recovered by each method, U-Net examples with their
residuals, and a metric of every method against the signal-to-noise and the Einstein radius.

They read a :class:`sourcelens.evaluate.delensing.DelensingResult`: ``lensed`` (N, n, n) noisy lensed images on
the image grid, ``truth`` and ``estimates`` (N, m, m) peak-normalised sources on the source grid (both grids
centred on the optical axis), and the ``per_pair`` table (``snr``, ``theta_E``, ``method`` and the metrics)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .style import (
    FLUX_UNITS,
    as_stack,
    asinh_norm,
    colorbar,
    extent,
    image_grid,
    panel,
    peak_asinh_norm,
    residual_norm,
    robust_sigma,
    running_median,
    scale_bar,
)

__all__ = ["METHOD_COLOURS", "METRIC_LABELS", "delensing_examples", "delensing_vs_snr", "unet_examples"]

#: One colour per delensing method (:data:`sourcelens.evaluate.delensing.METHODS`, in its order).
METHOD_COLOURS = {
    "identity": "0.55", "backward (true lens)": "#1f77b4", "backward (CNN lens)": "#ff7f0e", "U-Net": "#2ca02c",
    "backward (true lens, noiseless)": "#9467bd",
}
#: Axis labels of the delensing metrics (:data:`sourcelens.evaluate.delensing.DELENSING_METRICS`).
METRIC_LABELS = {
    "mse": "MSE (peak-normalised)", "ssim": "SSIM", "psnr": "PSNR [dB]", "ssim_ceiling": "SSIM noise ceiling",
    "ssim_fraction": "SSIM / noise ceiling",
}
_SOURCE_UNITS = "flux / peak flux"


def _stacks(lensed: np.ndarray, truth: np.ndarray, estimates: Mapping[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The images as (N, H, W) stacks with the same number of pairs, or a ValueError."""
    lensed, truth = as_stack(lensed), as_stack(truth)
    est = {name: as_stack(images) for name, images in estimates.items()}
    if len(lensed) == 0:
        raise ValueError("no examples to plot")
    if any(len(s) != len(lensed) for s in (truth, *est.values())):
        raise ValueError("lensed, truth and every estimate must have the same number of examples")
    return lensed, truth, est


def _title(text: str) -> str:
    return textwrap.fill(text, 18)


def _source_panels(
    fig: Figure, axes: np.ndarray, lensed: np.ndarray, sources: dict[str, np.ndarray], pixel_scale: float,
    grid_scale: float, row_labels: Sequence[str] | None,
) -> None:
    """Column 0: the lensed images (one arcsinh scale tied to the noise, extent from ``pixel_scale``); then one
    column per entry of ``sources`` (one peak-normalised arcsinh scale, extent from ``grid_scale``), titled by
    its key; scale bars on the first row and a colour bar under each group of columns."""
    n, k = len(lensed), len(sources)
    noise = float(np.median([robust_sigma(im) for im in lensed]))
    img_norm = asinh_norm(lensed, noise)
    src_norm = peak_asinh_norm(np.stack(list(sources.values())), vmin_floor=-0.1, vmax=1.0)
    img_ext, src_ext = extent(lensed.shape, pixel_scale), extent(next(iter(sources.values())).shape, grid_scale)
    im = sim = None
    for i in range(n):
        im = panel(axes[i, 0], lensed[i], img_norm, extent=img_ext)
        for j, images in enumerate(sources.values()):
            sim = panel(axes[i, 1 + j], images[i], src_norm, extent=src_ext)
        if row_labels is not None:
            axes[i, 0].set_ylabel(textwrap.shorten(str(row_labels[i]), 28, placeholder="…"), fontsize=7)
    for j, title in enumerate(("lensed image", *sources)):
        axes[0, j].set_title(_title(title), fontsize=8)
    scale_bar(axes[0, 0], img_ext[1] - img_ext[0], 1.0)
    scale_bar(axes[0, 1], src_ext[1] - src_ext[0], 1.0)
    colorbar(fig, im, axes[:, 0].tolist(), FLUX_UNITS, location="bottom", shrink=0.9, pad=0.01)
    colorbar(fig, sim, axes[:, 1:1 + k].ravel().tolist(), _SOURCE_UNITS, location="bottom", shrink=0.6, pad=0.01)


def _metric_values(metrics: pd.DataFrame, method: str, n: int, column: str = "ssim") -> np.ndarray:
    """``column`` of the ``n`` rows of ``method`` in a per-pair table, in the order of the examples."""
    values = metrics.loc[metrics["method"] == method, column].to_numpy(dtype=float)
    if len(values) != n:
        raise ValueError(f"metrics has {len(values)} rows of method {method!r}, expected one per example ({n})")
    return values


def _corner_text(ax: Axes, text: str) -> None:
    ax.text(0.97, 0.04, text, transform=ax.transAxes, ha="right", va="bottom", color="white", fontsize=7,
            bbox={"fc": "black", "alpha": 0.5, "lw": 0, "pad": 1.5})


def delensing_examples(
    lensed: np.ndarray, truth: np.ndarray, estimates: Mapping[str, np.ndarray], pixel_scale: float,
    grid_scale: float, *, row_labels: Sequence[str] | None = None, metrics: pd.DataFrame | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Delensing examples, one row per pair: the noisy lensed image, the true source, and the source of each
    method of ``estimates`` ({method: (N, m, m)}), all sources peak-normalised on one arcsinh scale.

    The lensed image spans ±n·``pixel_scale``/2, the sources ±m·``grid_scale``/2 arcsec (the source grid is
    smaller: scale bars on the first row). ``metrics`` (the per-pair table of the shown pairs: per method one row
    per example, in their order) writes each method's SSIM in its panel. Returns a figure with N × (2 + methods)
    image axes and two colour bars."""
    lensed, truth, est = _stacks(lensed, truth, estimates)
    n = len(lensed)
    fig, axes = image_grid(n, 2 + len(est), panel=1.7, extra_width=0.3)
    _source_panels(fig, axes, lensed, {"true source": truth, **est}, pixel_scale, grid_scale, row_labels)
    if metrics is not None:
        for j, method in enumerate(est):
            for i, value in enumerate(_metric_values(metrics, method, n)):
                _corner_text(axes[i, 2 + j], f"SSIM {value:.2f}")
    fig.suptitle(suptitle or "Delensing: lensed image, true source and the source of each method", fontsize=11)
    return fig


def unet_examples(
    lensed: np.ndarray, truth: np.ndarray, unet: np.ndarray, pixel_scale: float, grid_scale: float, *,
    row_labels: Sequence[str] | None = None, suptitle: str | None = None,
) -> Figure:
    """U-Net delensing examples, one row per pair: lensed image, true source, U-Net source (one peak-normalised
    scale) and the residual U-Net − truth (diverging, symmetric about 0). Returns a figure with 4 N image axes
    and three colour bars."""
    lensed, truth, est = _stacks(lensed, truth, {"U-Net": unet})
    n = len(lensed)
    resid = est["U-Net"] - truth
    fig, axes = image_grid(n, 4, panel=1.8, extra_width=0.3)
    _source_panels(fig, axes, lensed, {"true source": truth, "U-Net source": est["U-Net"]}, pixel_scale,
                   grid_scale, row_labels)
    rnorm = residual_norm(resid)
    src_ext = extent(truth.shape, grid_scale)
    rim: AxesImage | None = None
    for i in range(n):
        rim = panel(axes[i, 3], resid[i], rnorm, cmap="RdBu_r", extent=src_ext)
    axes[0, 3].set_title(_title("U-Net − truth"), fontsize=8)
    colorbar(fig, rim, axes[:, 3].tolist(), "U-Net − truth", location="bottom", shrink=0.9, pad=0.01)
    fig.suptitle(suptitle or "U-Net delensing: lensed image, true source, U-Net source and residual", fontsize=11)
    return fig


def _methods(per_pair: pd.DataFrame) -> list[str]:
    """The methods of a per-pair table: those of :data:`METHOD_COLOURS` in its order, then others as they come."""
    present = list(pd.unique(per_pair["method"].astype(str)))
    return [m for m in METHOD_COLOURS if m in present] + [m for m in present if m not in METHOD_COLOURS]


def delensing_vs_snr(per_pair: pd.DataFrame, metric: str = "ssim", *, suptitle: str | None = None) -> Figure:
    """``metric`` of every method against the optimal S/N (left, log axis) and the Einstein radius (right): the
    pairs as faint points and the running median as a line, one colour per method, to show where each method
    holds up and where the noise or a small lens defeats it. Returns a figure with 2 axes."""
    if metric not in per_pair:
        raise KeyError(f"metric {metric!r} is not a column of the per-pair table")
    fig = Figure(figsize=(10.0, 3.9), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for k, method in enumerate(_methods(per_pair)):
        rows = per_pair[per_pair["method"].astype(str) == method]
        y = rows[metric].to_numpy(dtype=float)
        colour = METHOD_COLOURS.get(method, f"C{(k + 5) % 10}")
        for ax, column in zip(axes, ("snr", "theta_E")):
            x = rows[column].to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=8, alpha=0.35, color=colour, lw=0, label="_pairs")
            ax.plot(*running_median(x[ok], y[ok]), color=colour, lw=1.8, label=method)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("S/N (optimal)")
    axes[1].set_xlabel(r"Einstein radius $\theta_\mathrm{E}$ [arcsec]")
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8, loc="best", frameon=False)
    fig.suptitle(suptitle or f"Delensing: {METRIC_LABELS.get(metric, metric)} against S/N and Einstein radius "
                 "(lines: running medians)", fontsize=11)
    return fig
