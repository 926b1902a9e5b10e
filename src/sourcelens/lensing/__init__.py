"""Differentiable strong lensing in torch, in lenstronomy's conventions.

Forward lensing (batched, CPU/CUDA, float32/float64) built on caustics' functional lens
formulas; lensing maps (convergence, magnification, critical curves and caustics); backward
mapping of images to a source grid by naive scatter or by exact pixel-overlap areas; the per-lens operators of
lensed-image super-resolution (:mod:`.superres`).
See :mod:`sourcelens.lensing.conventions` for units and conventions; figures are in
:mod:`sourcelens.plots.lensing` (not imported here, so matplotlib stays optional).
"""

from .backward import (
    OverlapOperator, SourceGrid, naive_scatter, polygon_area, quad_cell_overlaps, trace_pixel_quads,
)
from .conventions import (
    ellipticity_to_phi_q, phi_q_to_ellipticity, pixel_centres, pixel_corners, pixel_grid,
)
from .forward import (
    LensingSimulator, compiled_image, convolve, convolve_direct, convolve_fft, downsample, pixelated, sersic,
    surface_brightness,
)
from .lenses import LENS_MODELS, deflection, ray_shoot
from .maps import (
    caustics, convergence, convergence_mask, critical_curves, deflection_field,
    deflection_jacobian, magnification, shear,
)
from .sparse import BilinearLensingOperator, bilinear_weights
from .superres import (
    INTERPOLATIONS, SRGeometry, SRLens, SRLensCache, block_mean, chi2_per_pixel, data_consistency, fine_sigma,
    psf_kernel, total_variation,
)

__all__ = [
    "caustics", "convergence", "convergence_mask", "critical_curves", "deflection_field",
    "deflection_jacobian", "magnification", "shear",
    "OverlapOperator", "SourceGrid", "naive_scatter", "polygon_area", "quad_cell_overlaps",
    "trace_pixel_quads",
    "ellipticity_to_phi_q", "phi_q_to_ellipticity", "pixel_centres", "pixel_corners",
    "pixel_grid", "LensingSimulator", "compiled_image", "convolve", "convolve_direct",
    "convolve_fft", "downsample", "pixelated", "sersic", "surface_brightness",
    "LENS_MODELS", "deflection", "ray_shoot", "BilinearLensingOperator", "bilinear_weights",
    "INTERPOLATIONS", "SRGeometry", "SRLens", "SRLensCache", "block_mean", "chi2_per_pixel", "data_consistency",
    "fine_sigma", "psf_kernel",
    "total_variation",
]
