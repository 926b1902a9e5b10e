"""Figures of lensing (rule ``lensing_demo``): lensed images per lens model, magnification with
critical curves and caustics, and naive vs exact-overlap backward mapping.

Imports torch and :mod:`sourcelens.lensing`; :mod:`sourcelens.plots` loads it only when one of
these figures is asked for.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..lensing.backward import SourceGrid
from ..lensing.conventions import pixel_grid
from ..lensing.forward import LensingSimulator
from ..lensing.maps import caustics, critical_curves, magnification
from .style import IMAGE_CMAP, extent

__all__ = ["plot_lens_models", "plot_magnification", "plot_backward"]

LensCase = tuple[str, Sequence[str], Sequence[Mapping[str, Any]]]


def _curves(ax: Axes, curves: Sequence[np.ndarray], color: str, label: str | None = None) -> None:
    """Draw (K, 2) arrays of (x, y) arcsec as lines, the first one labelled."""
    for k, c in enumerate(curves):
        ax.plot(c[:, 0], c[:, 1], color=color, lw=0.9, label=label if k == 0 else None)


def _image(ax: Axes, img: np.ndarray, ext, title: str, cmap: str = IMAGE_CMAP, **kw) -> AxesImage:
    """An image on arcsec axes with a title; ``kw`` go to ``imshow`` (norm, vmin, vmax)."""
    im = ax.imshow(img, origin="lower", extent=ext, cmap=cmap, **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x [arcsec]", fontsize=8)
    ax.tick_params(labelsize=7)
    return im


def plot_lens_models(source: torch.Tensor, source_pixel_scale: float, cases: Sequence[LensCase],
                     n_pix: int = 96, pixel_scale: float = 0.04, supersample: int = 2) -> Figure:
    """Top row: the source (flux per pixel) with each lens' caustics; bottom row: its lensed
    image with the critical curves, one column per lens model."""
    sim = LensingSimulator(n_pix, pixel_scale, supersample)
    fig = Figure(figsize=(3.0 * len(cases), 6.2), layout="constrained")
    axes = fig.subplots(2, len(cases), squeeze=False)
    src_ext = extent(tuple(source.shape), source_pixel_scale)
    img_ext = extent((n_pix, n_pix), pixel_scale)
    for k, (name, models, kws) in enumerate(cases):
        img = sim.image(models, kws, ["PIXELATED"], [dict(image=source, pixel_scale=source_pixel_scale)])
        crit = critical_curves(models, kws, n_pix, pixel_scale)
        for ax, shown, ext, title, curves in (
            (axes[0, k], source, src_ext, f"source, {name} caustics", caustics(crit, models, kws)),
            (axes[1, k], img, img_ext, f"lensed by {name}", crit),
        ):
            _image(ax, shown.numpy(), ext, title)
            _curves(ax, curves, "cyan")
            ax.set_xlim(ext[:2])  # the curves may leave the image
            ax.set_ylim(ext[2:])
    axes[0, 0].set_ylabel("y [arcsec]", fontsize=8)
    axes[1, 0].set_ylabel("y [arcsec]", fontsize=8)
    return fig


def plot_magnification(lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                       n_pix: int = 200, pixel_scale: float = 0.02, title: str = "") -> Figure:
    """``|mu|`` (log scale) with critical curves, and the source plane with the caustics."""
    x, y = pixel_grid(n_pix, pixel_scale)
    mu = magnification(x + 1e-7, y + 1e-7, lens_models, kwargs_lens).abs().numpy()
    crit = critical_curves(lens_models, kwargs_lens, n_pix, pixel_scale)
    cau = caustics(crit, lens_models, kwargs_lens)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    a, b = fig.subplots(1, 2)
    im = _image(a, np.clip(mu, 1e-2, 1e3), extent((n_pix, n_pix), pixel_scale), f"|magnification| {title}",
                cmap="viridis", norm=LogNorm(1e-1, 1e2))
    fig.colorbar(im, ax=a, label="|mu|")
    _curves(a, crit, "red", "critical curves")
    a.legend(fontsize=7, loc="lower right")
    a.set_ylabel("y [arcsec]", fontsize=8)
    _curves(b, cau, "red", "caustics")
    b.set_aspect("equal")
    span = max(0.6, max((np.abs(c).max() for c in cau), default=0.6) * 1.2)
    b.set_xlim(-span, span)
    b.set_ylim(-span, span)
    b.set_title("source plane", fontsize=9)
    b.set_xlabel("x [arcsec]", fontsize=8)
    b.legend(fontsize=7, loc="lower right")
    return fig


def plot_backward(image: torch.Tensor, image_pixel_scale: float, true_source: torch.Tensor,
                  naive_source: torch.Tensor, overlap_source: torch.Tensor, grid: SourceGrid,
                  mask: torch.Tensor | None = None) -> Figure:
    """Lensed image, true source, naive-scatter and exact-overlap reconstructions (same grid,
    same linear scale from 0 to the true source's peak); ``mask`` outlines the traced region."""
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 4)
    vmax = float(true_source.max())
    _image(axes[0], image.numpy(), extent(tuple(image.shape), image_pixel_scale), "lensed image")
    _image(axes[1], true_source.numpy(), grid.extent, "true source", vmin=0, vmax=vmax)
    _image(axes[2], naive_source.numpy(), grid.extent, "naive pixel scatter", vmin=0, vmax=vmax)
    _image(axes[3], overlap_source.numpy(), grid.extent, "exact pixel overlaps", vmin=0, vmax=vmax)
    if mask is not None:
        for ax in axes[2:]:
            ax.contour(mask.numpy().astype(float), levels=[0.5], colors="cyan", linewidths=0.7,
                       extent=grid.extent, origin="lower")
    axes[0].set_ylabel("y [arcsec]", fontsize=8)
    return fig
