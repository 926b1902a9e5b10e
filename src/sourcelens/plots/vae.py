"""Figures of the VAE evaluation (study 000): reconstructions of test galaxies, decoder samples
from the prior, and interpolation in latent space. Images are peak-normalised stamps."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .style import as_stack, colorbar, image_grid, panel, peak_asinh_norm, residual_norm

__all__ = ["vae_reconstructions", "image_gallery", "latent_interpolation"]


def vae_reconstructions(
    inputs: np.ndarray, reconstructions: np.ndarray, labels: Sequence[str] | None = None,
    *, suptitle: str | None = None,
) -> Figure:
    """Input, VAE reconstruction and residual (input − reconstruction) of example galaxies.

    One column per galaxy; rows input / reconstruction (shared arcsinh stretch) and residual
    (diverging, symmetric about 0). ``labels`` title each column (e.g. source id and SSIM).
    """
    inputs, recs = as_stack(inputs), as_stack(reconstructions)
    n = len(inputs)
    res = inputs - recs
    norm = peak_asinh_norm(inputs, vmin_floor=-0.05, vmax_floor=1.0)
    rnorm = residual_norm(res)
    fig, axes = image_grid(3, n, panel=1.5, extra_width=1.2)
    im = rim = None
    for c in range(n):
        im = panel(axes[0, c], inputs[c], norm, title=None if labels is None else str(labels[c]))
        panel(axes[1, c], recs[c], norm)
        rim = panel(axes[2, c], res[c], rnorm, cmap="RdBu_r")
    for r, name in enumerate(("input", "reconstruction", "residual")):
        axes[r, 0].set_ylabel(name, fontsize=9)
    if im is not None:
        colorbar(fig, im, axes[:2].ravel().tolist(), "flux / peak flux", shrink=0.8, pad=0.01)
        colorbar(fig, rim, axes[2].ravel().tolist(), "input − model", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "VAE reconstructions of test galaxies (encoder mean → decoder)", fontsize=11)
    return fig


def image_gallery(
    images: np.ndarray, *, n_cols: int = 8, titles: Sequence[str] | None = None, suptitle: str | None = None,
) -> Figure:
    """A grid of images with one shared arcsinh stretch (e.g. decoder samples from the prior)."""
    images = as_stack(images)
    n = len(images)
    n_cols = max(1, min(int(n_cols), n))
    n_rows = int(np.ceil(n / n_cols))
    norm = peak_asinh_norm(images)
    fig, axes = image_grid(n_rows, n_cols, panel=1.4, extra_width=1.0)
    im = None
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_axis_off()
            continue
        im = panel(ax, images[k], norm, title=None if titles is None else str(titles[k]))
    if im is not None:
        colorbar(fig, im, axes.ravel().tolist(), "flux", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "Galaxies decoded from the prior z ~ N(0, I)", fontsize=11)
    return fig


def latent_interpolation(
    images: np.ndarray, *, endpoints: np.ndarray | None = None, labels: tuple[str, str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Decoded images along a straight line in latent space between two galaxies.

    ``images`` (n_steps, H, W) from t = 0 to 1; ``endpoints`` (2, H, W), the two input galaxies, are
    drawn at both ends of a second row when given.
    """
    images = as_stack(images)
    n = len(images)
    rows = 1 if endpoints is None else 2
    stack = images if endpoints is None else np.concatenate([images, as_stack(endpoints)])
    norm = peak_asinh_norm(stack)
    fig, axes = image_grid(rows, n, panel=1.4, extra_width=1.0)
    im = None
    for c in range(n):
        t = c / max(n - 1, 1)
        im = panel(axes[0, c], images[c], norm, title=f"t = {t:.2f}")
    axes[0, 0].set_ylabel("decoded", fontsize=9)
    if endpoints is not None:
        endpoints = as_stack(endpoints)
        for c in range(n):
            axes[1, c].set_axis_off()
        for c, k in ((0, 0), (n - 1, 1)):
            axes[1, c].set_axis_on()
            panel(axes[1, c], endpoints[k], norm, title=None if labels is None else str(labels[k]))
        axes[1, 0].set_ylabel("input", fontsize=9)
    colorbar(fig, im, axes.ravel().tolist(), "flux", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "Latent interpolation z(t) = (1 − t) z₀ + t z₁ between two test galaxies", fontsize=11)
    return fig
