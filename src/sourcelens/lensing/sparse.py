"""A precomputed sparse lensing operator for a fixed lens (bilinear source interpolation).

For repeated fits of a pixelated source behind a fixed lens, the rays are traced once and
the map from source pixels to image pixels is stored as a sparse matrix (as herculens'
lensing operator): row = image pixel, column = source pixel, value = bilinear weight times
``(image sub-pixel area) / (source pixel area)``, summed over the sub-pixels of each image
pixel. ``apply`` equals :meth:`LensingSimulator.image` with a ``"PIXELATED"`` source (same
zero-padded bilinear interpolation), PSF and downsampling included.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .forward import LensingSimulator

__all__ = ["BilinearLensingOperator", "bilinear_weights"]


def bilinear_weights(bx: Tensor, by: Tensor, source_shape: tuple[int, int], pixel_scale: float,
                     center_x: float = 0.0, center_y: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Ray index, source-pixel index and bilinear weight of the (up to 4) pixels around each ray.

    ``bx, by`` are any-shape source-plane positions (arcsec); the source is ``(m_y, m_x)`` on
    a centred grid; neighbours outside the source contribute nothing (zero padding).
    """
    my, mx = source_shape
    u = ((bx - center_x) / pixel_scale + (mx - 1) / 2).reshape(-1)
    v = ((by - center_y) / pixel_scale + (my - 1) / 2).reshape(-1)
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.long(), v0.long()
    ray = torch.arange(u.numel(), device=u.device)
    rows, cols, vals = [], [], []
    for du, dv, w in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                      (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        iu, iv = u0 + du, v0 + dv
        ok = (iu >= 0) & (iu < mx) & (iv >= 0) & (iv < my) & (w != 0)
        rows.append(ray[ok])
        cols.append((iv * mx + iu)[ok])
        vals.append(w[ok])
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


class BilinearLensingOperator:
    """Fixed-lens sparse map from a pixelated source (flux per pixel) to the lensed image.

    ``matrix`` is a sparse CSR ``(n_pix**2, m_y * m_x)`` tensor (before PSF/downsampling).
    """

    def __init__(self, simulator: LensingSimulator, lens_models: Sequence[str],
                 kwargs_lens: Sequence[Mapping[str, Any]], source_shape: tuple[int, int],
                 source_pixel_scale: float, center_x: float = 0.0, center_y: float = 0.0):
        self.simulator = simulator
        self.source_shape = tuple(source_shape)
        bx, by = simulator.source_positions(lens_models, kwargs_lens)
        if bx.ndim != 2:
            raise ValueError("BilinearLensingOperator takes one lens (unbatched parameters)")
        with torch.no_grad():
            ray, col, w = bilinear_weights(bx.detach(), by.detach(), self.source_shape,
                                           source_pixel_scale, center_x, center_y)
        n, s = simulator.n_pix, simulator.supersample
        side = n * s
        row = (ray // side // s) * n + (ray % side) // s
        w = w * (simulator.pixel_scale / s) ** 2 / source_pixel_scale**2
        coo = torch.sparse_coo_tensor(torch.stack([row, col]), w,
                                      (n * n, self.source_shape[0] * self.source_shape[1]),
                                      check_invariants=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            self.matrix = coo.coalesce().to_sparse_csr()

    def lens(self, source: Tensor) -> Tensor:
        """Lensed flux per pixel before PSF: ``(n, n)`` or ``(B, n, n)`` for ``(B, m_y, m_x)``."""
        lead = source.shape[:-2]
        flat = source.reshape(-1, source.shape[-2] * source.shape[-1]).T.to(self.matrix.dtype)
        out = (self.matrix @ flat).T
        n = self.simulator.n_pix
        return out.reshape(*lead, n, n)

    def apply(self, source: Tensor) -> Tensor:
        """Lensed image with the simulator's PSF and downsampling."""
        return self.simulator.finish(self.lens(source))

    __call__ = apply

    def adjoint(self, image: Tensor) -> Tensor:
        """Transpose of :meth:`lens`: an ``(n, n)`` (or batched) image to source pixels."""
        lead = image.shape[:-2]
        flat = image.reshape(-1, image.shape[-2] * image.shape[-1]).to(self.matrix.dtype)
        out = (flat @ self.matrix)
        return out.reshape(*lead, *self.source_shape)
