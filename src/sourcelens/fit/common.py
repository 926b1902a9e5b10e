"""What every source fit shares: the result record, the χ²-optimal linear amplitude, and the image
moments that start the analytic fits. The χ² itself is :func:`sourcelens.metrics.chi2`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FitResult", "ImagingProblem", "as_tensor", "best_amplitude", "image_moments"]


@dataclass
class FitResult:
    """One method's fits of a batch of images.

    ``model`` (B, H, W): the model images (after lensing, PSF and binning where the fit had them);
    ``source`` (B, m, m): the fitted source on the evaluation grid, flux per pixel; ``chi2`` (B,);
    ``n_params``: free parameters per galaxy; ``seconds`` (B,): wall time per galaxy (a batched fit's time
    shared equally); ``info``: method-specific values (parameters, iterations, ...).
    """

    method: str
    model: np.ndarray
    source: np.ndarray
    chi2: np.ndarray
    n_params: int
    seconds: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def best_amplitude(model: Tensor, data: Tensor, sigma: Tensor | None = None, *, non_negative: bool = False
                   ) -> Tensor:
    """The χ²-optimal amplitude A of ``model`` for ``data`` per image, Σ m d / σ² / Σ m² / σ² over the last two
    axes (``sigma`` None: already whitened); ``non_negative`` clamps it just above 0 (for log-amplitudes)."""
    if sigma is not None:
        w = 1.0 / sigma
        model, data = model * w, data * w
    amp = (model * data).sum((-2, -1)) / (model * model).sum((-2, -1)).clamp_min(1e-300)
    return amp.clamp_min(1e-12) if non_negative else amp


def image_moments(images: np.ndarray, pixel_scale: float | np.ndarray = 1.0) -> dict[str, np.ndarray]:
    """Centroid ``cx, cy``, size (√((Ixx + Iyy) / 2)) and ellipticity ``e1, e2`` of images (B, m, m) from the
    second moments of their part above 5 % of the peak, in units of ``pixel_scale`` (one, or one per image) on a
    grid centred on 0 (x along columns). The ellipticity is lenstronomy's, (1 − q)/(1 + q) in modulus, converted from the
    moments' distortion χ = (1 − q²)/(1 + q²) by ε = χ / (1 + √(1 − χ²)); clipped to ±0.5. A blank image
    gives the centre, a 5-pixel size and zero ellipticity."""
    images = np.asarray(images, dtype=float)
    m = images.shape[-1]
    scales = np.broadcast_to(np.asarray(pixel_scale, dtype=float), (len(images),))
    c = np.arange(m) - (m - 1) / 2
    out = {k: np.zeros(len(images)) for k in ("cx", "cy", "size", "e1", "e2")}
    for i, img in enumerate(images):
        yy, xx = np.meshgrid(c * scales[i], c * scales[i], indexing="ij")
        w = np.clip(img - 0.05 * np.nanmax(img), 0, None)
        tot = w.sum()
        if not np.isfinite(tot) or tot <= 0:
            out["size"][i] = 5 * scales[i]
            continue
        cx, cy = (w * xx).sum() / tot, (w * yy).sum() / tot
        ixx = (w * (xx - cx) ** 2).sum() / tot
        iyy = (w * (yy - cy) ** 2).sum() / tot
        ixy = (w * (xx - cx) * (yy - cy)).sum() / tot
        chi1, chi2 = (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy)
        norm = 1 + np.sqrt(max(1 - chi1**2 - chi2**2, 0.0))
        out["cx"][i], out["cy"][i] = cx, cy
        out["size"][i] = np.sqrt((ixx + iyy) / 2)
        out["e1"][i], out["e2"][i] = np.clip(chi1 / norm, -0.5, 0.5), np.clip(chi2 / norm, -0.5, 0.5)
    return out


def as_tensor(values, dtype: torch.dtype = torch.float64) -> Tensor:
    """A float tensor of ``values`` (numpy or tensor), on the CPU unless it already is a tensor elsewhere."""
    return values.to(dtype) if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values), dtype=dtype)


@dataclass
class ImagingProblem:
    """Images to fit and how a source is seen in them, for every source model alike.

    ``simulator``: the image grid, supersampling, PSF and binning (:class:`sourcelens.lensing.LensingSimulator`);
    ``rays``: the source-plane positions (x, y) of its sub-pixels, one set per image (B, n·s, n·s) or one shared
    (n·s, n·s) (no lens); ``data``, ``sigma`` (B, n, n); ``grid`` (x, y), (B, m, m) or shared (m, m), and
    ``grid_pixel_scale`` (B,): where each source is evaluated and compared (the true source's stamp grid). Units:
    arcsec for lensed scenes, pixels for stamps fitted as they are (:meth:`unlensed`).
    """

    simulator: Any
    rays: tuple[Tensor, Tensor]
    data: Tensor
    sigma: Tensor
    grid: tuple[Tensor, Tensor]
    grid_pixel_scale: Tensor

    def __len__(self) -> int:
        return len(self.data)

    def rays_of(self, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The rays of the images ``index`` (all for None; shared rays are the same for every image)."""
        bx, by = self.rays
        return (bx, by) if index is None or bx.ndim == 2 else (bx[index], by[index])

    def grid_of(self, index: int) -> tuple[Tensor, Tensor]:
        """The evaluation grid (m, m) of image ``index``."""
        ex, ey = self.grid
        return (ex, ey) if ex.ndim == 2 else (ex[index], ey[index])

    def image(self, surface_brightness: Tensor) -> Tensor:
        """Model images (…, n, n), flux per pixel, of the surface brightness (…, n·s, n·s) at the rays."""
        sim = self.simulator
        return sim.finish(sim.pixel_flux(surface_brightness))

    @classmethod
    def unlensed(cls, data, sigma) -> "ImagingProblem":
        """Stamps fitted as they are: no lens, no PSF, one sample per pixel, coordinates in pixels from the
        stamp centre (x along columns); ``sigma`` a scalar, one per image or maps."""
        from ..lensing import LensingSimulator

        data = as_tensor(data)
        if data.ndim == 2:
            data = data[None]
        sigma = as_tensor(sigma)
        sigma = (sigma.reshape(-1, 1, 1) if sigma.ndim <= 1 else sigma).expand_as(data).clone()
        sim = LensingSimulator(n_pix=data.shape[-1], pixel_scale=1.0, supersample=1, psf=None, dtype=data.dtype)
        grid = sim.grid()
        return cls(sim, grid, data, sigma, grid, torch.ones(len(data), dtype=data.dtype))
