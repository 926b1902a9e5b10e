"""The lensing demonstration of the workflow (rule ``lensing_demo``): a clumpy source, four lens
configurations, and the three figures (lensed images per model, magnification with critical
curves and caustics, naive scatter versus exact-overlap backward mapping)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .backward import OverlapOperator, SourceGrid, naive_scatter
from .conventions import pixel_grid
from .forward import LensingSimulator
from .lenses import ray_shoot

LensCase = tuple[str, Sequence[str], Sequence[Mapping[str, Any]]]


def clumpy_source(n_pix: int, pixel_scale: float, rng: np.random.Generator, n_clumps: int = 4) -> torch.Tensor:
    """An elliptical exponential galaxy with Gaussian star-forming clumps (flux per pixel, float64),
    zero on a 2-pixel border so that nothing is cut at the grid edge. Scale lengths in arcsec."""
    c = (torch.arange(n_pix, dtype=torch.float64) - (n_pix - 1) / 2) * pixel_scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    x0, y0 = rng.uniform(-0.08, 0.08, 2)
    angle = torch.tensor(rng.uniform(0, np.pi), dtype=torch.float64)
    xr = (x - x0) * torch.cos(angle) + (y - y0) * torch.sin(angle)
    yr = -(x - x0) * torch.sin(angle) + (y - y0) * torch.cos(angle)
    img = torch.exp(-((xr**2 + (yr / 0.6) ** 2).sqrt() / 0.12))
    for _ in range(n_clumps):
        cx, cy = rng.uniform(-0.25, 0.25, 2)
        img = img + rng.uniform(0.3, 0.8) * torch.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / 0.03**2)
    img[:2], img[-2:], img[:, :2], img[:, -2:] = 0, 0, 0, 0
    return img * pixel_scale**2


def demo_lens_cases(rng: np.random.Generator, theta_E: float = 1.0) -> list[LensCase]:
    """SIS, SIE, EPL (slope 2.3) and SIE + external shear around ``theta_E`` arcsec, slightly jittered."""

    def jitter(value: float, width: float = 0.03) -> float:
        return float(value + rng.uniform(-width, width))

    theta = jitter(theta_E, 0.1)
    return [
        ("SIS", ["SIS"], [dict(theta_E=theta, center_x=0.0, center_y=0.0)]),
        ("SIE", ["SIE"], [dict(theta_E=theta, e1=jitter(0.15), e2=jitter(-0.1))]),
        ("EPL (gamma=2.3)", ["EPL"], [dict(theta_E=theta, gamma=2.3, e1=jitter(0.1), e2=jitter(0.15))]),
        ("SIE + shear", ["SIE", "SHEAR"], [dict(theta_E=theta, e1=jitter(-0.1), e2=jitter(0.1)),
                                           dict(gamma1=jitter(0.06, 0.01), gamma2=jitter(-0.04, 0.01))]),
    ]


def demo_figures(rng: np.random.Generator, source_pixels: int = 64, source_scale: float = 0.015,
                 image_pixels: int = 80, image_scale: float = 0.04) -> dict[str, Figure]:
    """The three demonstration figures: ``models``, ``magnification`` and ``backward``.

    The backward figure maps an image whose traced pixels are sparser than the source cells, where
    naive scattering leaves holes and piles (the "flower" artefact of study 004) and exact
    overlaps do not.
    """
    from ..plots.lensing import plot_backward, plot_lens_models, plot_magnification  # deferred: it imports this package

    cases = demo_lens_cases(rng)
    source = clumpy_source(source_pixels, source_scale, rng)
    figures = {"models": plot_lens_models(source, source_scale, cases)}
    name, lens_models, kwargs_lens = cases[-1]
    figures["magnification"] = plot_magnification(lens_models, kwargs_lens, title=f"({name})")
    image = LensingSimulator(image_pixels, image_scale, 4).image(
        lens_models, kwargs_lens, ["PIXELATED"], [dict(image=source, pixel_scale=source_scale)])
    grid = SourceGrid((source_pixels, source_pixels), source_scale)
    bx, by = ray_shoot(*pixel_grid(image_pixels, image_scale), lens_models, kwargs_lens)
    naive, _ = naive_scatter(image, bx, by, grid, image_scale)
    op = OverlapOperator(lens_models, kwargs_lens, image_pixels, image_scale, grid, refine=4, refine_radius=0.3)
    figures["backward"] = plot_backward(image, image_scale, source, naive, op.to_source(image), grid, op.mask)
    return figures
