"""Figures of galaxy fits (study 000): data, model and residual per fit method, unlensed
(:func:`fit_comparison`) and lensed with the reconstructed source (:func:`fit_comparison_lensed`)."""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from .style import (
    IMAGE_CMAP, as_stack, asinh_norm, colorbar, extent, image_grid, panel, peak_asinh_norm, residual_norm, scale_bar,
)

__all__ = ["fit_comparison", "fit_comparison_lensed"]


def fit_comparison(
    data: np.ndarray, models: dict[str, np.ndarray], *, labels: Sequence[str] | None = None,
    chi2_nu: dict[str, Sequence[float]] | None = None, noise_sigma: Sequence[float] | float | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Data, then model and normalised residual (data − model)/σ per fit method, one row per galaxy.

    ``models``: {method: (N, H, W)}; ``chi2_nu``: {method: (N,)} written in the model panels;
    residuals are divided by ``noise_sigma`` when given (shown from −5 to 5) and raw otherwise.
    """
    data = as_stack(data)
    n = len(data)
    methods = list(models)
    n_cols = 1 + 2 * len(methods)
    norm = peak_asinh_norm(data, vmin_floor=-0.1, vmax_floor=1.0)
    sig = None if noise_sigma is None else np.broadcast_to(np.asarray(noise_sigma, dtype=float), (n,))
    residuals = {m: data - as_stack(models[m]) for m in methods}
    if sig is not None:
        residuals = {m: r / sig[:, None, None] for m, r in residuals.items()}
        rnorm = colors.Normalize(-5, 5)
    else:
        rnorm = residual_norm(np.concatenate(list(residuals.values())))
    fig, axes = image_grid(n, n_cols, panel=1.35, extra_width=1.2)
    im = rim = None
    for r in range(n):
        im = panel(axes[r, 0], data[r], norm, title="data" if r == 0 else None)
        if labels is not None:
            axes[r, 0].set_ylabel(textwrap.shorten(str(labels[r]), 20, placeholder="…"), fontsize=7)
        for k, m in enumerate(methods):
            title = None
            if chi2_nu is not None:
                title = (f"{m}\n" if r == 0 else "") + f"χ²/ν={float(chi2_nu[m][r]):.2f}"
            elif r == 0:
                title = m
            panel(axes[r, 1 + 2 * k], as_stack(models[m])[r], norm, title=title)
            rim = panel(axes[r, 2 + 2 * k], residuals[m][r], rnorm, cmap="RdBu_r",
                        title="residual" if r == 0 else None)
    colorbar(fig, im, axes[:, 0].tolist(), "flux / peak flux", shrink=0.6, pad=0.01, location="left")
    colorbar(fig, rim, axes.ravel().tolist(), "(data − model)/σ" if sig is not None else "data − model",
             shrink=0.6, pad=0.01)
    fig.suptitle(suptitle or "Galaxy fits: data, model and residual per method", fontsize=11)
    return fig


def fit_comparison_lensed(
    data: np.ndarray,
    noise_sigma: np.ndarray | float,
    models: dict[str, np.ndarray],
    sources: dict[str, np.ndarray],
    true_source: np.ndarray,
    pixel_scale: float,
    source_pixel_scale: float,
    *,
    scores: dict[str, str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Lensed source fits of one galaxy, one row per method (study 000's ``fit_comparison_lensed``).

    Columns: data, model, normalised residual ``(data - model) / sigma`` (±5), reconstructed source,
    true source. ``models`` (image grid) and ``sources`` (source grid, centred on (0, 0)) are keyed
    by method name; ``scores`` adds a line per method (e.g. χ²/ν and SSIM) to its row label.
    Images share one arcsinh stretch set by the noise; sources one linear stretch set by the truth.
    """
    names = list(models)
    data = np.asarray(data, dtype=float)
    sigma = np.broadcast_to(np.asarray(noise_sigma, dtype=float), data.shape)
    fig, axes = image_grid(len(names), 5, panel=2.0, extra_width=1.2)
    img_norm = asinh_norm([data, *models.values()], float(np.median(sigma)))
    src_vmax = float(np.nanmax(true_source)) or 1.0
    src_norm = colors.Normalize(vmin=-0.05 * src_vmax, vmax=1.05 * src_vmax)
    ext_img, ext_src = extent(data.shape, pixel_scale), extent(np.shape(true_source), source_pixel_scale)
    titles = ("data", "model", "(data − model) / σ", "reconstructed source", "true source")
    for r, name in enumerate(names):
        resid = (data - np.asarray(models[name], dtype=float)) / sigma
        panels = [(data, img_norm, ext_img, IMAGE_CMAP), (models[name], img_norm, ext_img, IMAGE_CMAP),
                  (resid, colors.Normalize(-5, 5), ext_img, "RdBu_r"),
                  (sources[name], src_norm, ext_src, IMAGE_CMAP), (true_source, src_norm, ext_src, IMAGE_CMAP)]
        for c, (img, norm, ext, cmap) in enumerate(panels):
            ax = axes[r, c]
            im = panel(ax, np.asarray(img, dtype=float), norm, cmap, extent=ext)
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 2 and r == len(names) - 1:
                colorbar(fig, im, axes[:, 2].tolist(), location="bottom", shrink=0.8)
        label = name if not scores or name not in scores else f"{name}\n{scores[name]}"
        axes[r, 0].set_ylabel(label, fontsize=8)
    scale_bar(axes[0, 0], ext_img[1] - ext_img[0], 1.0)
    scale_bar(axes[0, 4], ext_src[1] - ext_src[0], 1.0)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
