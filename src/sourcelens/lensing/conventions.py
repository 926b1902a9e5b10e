"""Conventions shared with lenstronomy: pixel grids, ellipticities, units.

* Angles on the sky are in arcsec; position angles in radians, counter-clockwise from +x.
* Images are arrays ``[..., row, col]`` with ``x`` along columns and ``y`` along rows, on
  lenstronomy's centred grid: the centre of pixel ``i`` is at ``(i - (n - 1) / 2) * scale``
  (i.e. lenstronomy with ``transform_pix2angle = scale * identity``; flip the column axis
  yourself for an RA-to-the-left orientation).
* Images hold **flux per pixel** (what lenstronomy's ``ImageModel`` returns); analytic light
  profiles are surface brightness (flux / arcsec^2), as lenstronomy's ``amp``.
* Ellipticities are lenstronomy's ``(e1, e2)``: ``phi = atan2(e2, e1) / 2`` and
  ``q = (1 - |e|) / (1 + |e|)`` with ``|e|`` capped at 0.9999
  (:func:`lenstronomy.Util.param_util.ellipticity2phi_q`). ``phi`` is the major-axis angle;
  this is also caustics' ``phi`` (its ``translate_rotate`` rotates by ``-phi``), and caustics'
  SIE/EPL ``Rein`` equals lenstronomy's ``theta_E`` (both scale by ``sqrt(q)``: Keeton's
  ``b = theta_E sqrt(q)``), checked numerically in ``tests/test_lensing_forward.py``.
* The EPL slope is lenstronomy's 3-D ``gamma`` (2 = isothermal); caustics uses ``t = gamma - 1``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ellipticity_to_phi_q", "phi_q_to_ellipticity", "pixel_centres", "pixel_grid",
    "pixel_corners", "as_param",
]


def as_param(value: Any, like: Tensor, ndim_grid: int = 2) -> Tensor:
    """A parameter as a tensor on ``like``'s dtype/device, broadcastable over a grid.

    Scalars stay 0-d; a batch ``(B,)`` becomes ``(B, 1, 1)`` (``ndim_grid`` trailing ones).
    """
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape + (1,) * ndim_grid)


def ellipticity_to_phi_q(e1: Tensor | float, e2: Tensor | float) -> tuple[Tensor, Tensor]:
    """lenstronomy's ``ellipticity2phi_q``: major-axis angle (rad) and axis ratio (minor/major)."""
    e1 = e1 if isinstance(e1, Tensor) else torch.as_tensor(e1, dtype=torch.float64)
    e2 = torch.as_tensor(e2, dtype=e1.dtype, device=e1.device)
    phi = torch.atan2(e2, e1) / 2
    c = torch.sqrt(e1**2 + e2**2).clamp(max=0.9999)
    return phi, (1 - c) / (1 + c)


def phi_q_to_ellipticity(phi: Tensor | float, q: Tensor | float) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`ellipticity_to_phi_q` (lenstronomy's ``phi_q2_ellipticity``)."""
    phi = phi if isinstance(phi, Tensor) else torch.as_tensor(phi, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=phi.dtype, device=phi.device)
    c = (1 - q) / (1 + q)
    return c * torch.cos(2 * phi), c * torch.sin(2 * phi)


def pixel_centres(n: int, pixel_scale: float, *, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> Tensor:
    """1-D pixel-centre coordinates (arcsec) of lenstronomy's centred grid."""
    return (torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2) * pixel_scale


def pixel_grid(n: int, pixel_scale: float, supersample: int = 1, *,
               dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` arcsec of the (sub)pixel centres, each ``(n*s, n*s)``, ``x`` along columns.

    Sub-pixels are the regular ``s x s`` subgrid of each pixel (lenstronomy's supersampling).
    """
    c = pixel_centres(n * supersample, pixel_scale / supersample, dtype=dtype, device=device)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


def pixel_corners(n: int, pixel_scale: float, *, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(x, y)`` arcsec of the ``(n+1, n+1)`` pixel corners of the centred grid."""
    c = (torch.arange(n + 1, dtype=dtype, device=device) - n / 2) * pixel_scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y
