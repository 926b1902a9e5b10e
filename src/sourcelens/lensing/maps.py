"""Lensing maps: deflection field, convergence, shear, magnification, critical curves and
caustics, and the convergence mask of a source grid.

Derivatives of the deflection come from autograd (each ray's deflection depends only on its
own position, so gradients of the summed field are the pointwise Jacobian).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .backward import OverlapOperator, SourceGrid
from .conventions import pixel_grid
from .lenses import deflection, ray_shoot

__all__ = ["deflection_field", "deflection_jacobian", "convergence", "shear",
           "magnification", "critical_curves", "caustics", "convergence_mask"]


def deflection_field(lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                     n_pix: int, pixel_scale: float, supersample: int = 1, *,
                     dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Deflection ``(alpha_x, alpha_y)`` (arcsec) at the (sub)pixel centres of a centred grid."""
    x, y = pixel_grid(n_pix, pixel_scale, supersample, dtype=dtype, device=device)
    return deflection(x, y, lens_models, kwargs_lens)


def deflection_jacobian(x: Tensor, y: Tensor, lens_models: Sequence[str],
                        kwargs_lens: Sequence[Mapping[str, Any]],
                        create_graph: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(d ax/dx, d ax/dy, d ay/dx, d ay/dy)`` at ``x, y`` (batched like the deflection)."""
    with torch.no_grad():
        shape = deflection(x[..., :1, :1], y[..., :1, :1], lens_models, kwargs_lens)[0].shape
    shape = shape[:-2] + x.shape[-2:]
    with torch.enable_grad():
        xg = x.detach().expand(shape).clone().requires_grad_(True)
        yg = y.detach().expand(shape).clone().requires_grad_(True)
        ax, ay = deflection(xg, yg, lens_models, kwargs_lens)
        axx, axy = torch.autograd.grad(ax.sum(), (xg, yg), create_graph=True)
        ayx, ayy = torch.autograd.grad(ay.sum(), (xg, yg), create_graph=create_graph)
    if not create_graph:
        axx, axy = axx.detach(), axy.detach()
    return axx, axy, ayx, ayy


def convergence(x: Tensor, y: Tensor, lens_models: Sequence[str],
                kwargs_lens: Sequence[Mapping[str, Any]]) -> Tensor:
    """Convergence ``kappa = (d ax/dx + d ay/dy) / 2``."""
    axx, _, _, ayy = deflection_jacobian(x, y, lens_models, kwargs_lens)
    return 0.5 * (axx + ayy)


def shear(x: Tensor, y: Tensor, lens_models: Sequence[str],
          kwargs_lens: Sequence[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
    """Shear components ``(gamma1, gamma2)`` (lenstronomy's ``gamma``)."""
    axx, axy, ayx, ayy = deflection_jacobian(x, y, lens_models, kwargs_lens)
    return 0.5 * (axx - ayy), 0.5 * (axy + ayx)


def magnification(x: Tensor, y: Tensor, lens_models: Sequence[str],
                  kwargs_lens: Sequence[Mapping[str, Any]]) -> Tensor:
    """Signed magnification ``mu = 1 / det(I - d alpha / d theta)``."""
    axx, axy, ayx, ayy = deflection_jacobian(x, y, lens_models, kwargs_lens)
    return 1 / ((1 - axx) * (1 - ayy) - axy * ayx)


def critical_curves(lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                    n_pix: int, pixel_scale: float, supersample: int = 4,
                    min_points: int = 8) -> list[np.ndarray]:
    """Critical curves (``1/mu = 0``) as ``(K, 2)`` arrays of image-plane ``(x, y)`` arcsec.

    Contours of ``det A`` on the grid refined ``supersample`` times (marching squares).
    """
    from skimage.measure import find_contours

    x, y = pixel_grid(n_pix, pixel_scale, supersample)
    axx, axy, ayx, ayy = deflection_jacobian(x, y, lens_models, kwargs_lens)
    det = ((1 - axx) * (1 - ayy) - axy * ayx).detach().cpu().numpy()
    if det.ndim != 2:
        raise ValueError("critical_curves takes one lens (unbatched parameters)")
    step = pixel_scale / supersample
    centre = (n_pix * supersample - 1) / 2
    curves = []
    for c in find_contours(det, 0.0):
        if len(c) >= min_points:
            curves.append(np.stack([(c[:, 1] - centre) * step, (c[:, 0] - centre) * step], -1))
    return curves


def caustics(curves: Sequence[np.ndarray], lens_models: Sequence[str],
             kwargs_lens: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """Caustics: critical curves ray-traced to the source plane, ``(K, 2)`` arcsec each."""
    out = []
    for c in curves:
        t = torch.as_tensor(c, dtype=torch.float64)
        bx, by = ray_shoot(t[:, 0], t[:, 1], lens_models, kwargs_lens)
        out.append(torch.stack([bx, by], -1).detach().cpu().numpy())
    return out


def convergence_mask(lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                     n_pix: int, pixel_scale: float, grid: SourceGrid, **kwargs: Any) -> Tensor:
    """Source cells that receive any image pixel (exact traced-pixel overlaps)."""
    return OverlapOperator(lens_models, kwargs_lens, n_pix, pixel_scale, grid, **kwargs).mask
