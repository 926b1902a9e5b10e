"""Differentiable, batched forward lensing: source light, ray shooting, PSF and binning.

Light models follow lenstronomy's names and parameters:

* ``"SERSIC_ELLIPSE"``: ``amp`` (surface brightness at ``R_sersic``, flux/arcsec^2),
  ``R_sersic`` (arcsec, product-average radius), ``n_sersic``, ``e1``, ``e2``, ``center_x``,
  ``center_y``; ``b_n = 1.9992 n - 0.3271`` and a 1e-4 arcsec core, as lenstronomy.
  ``"SERSIC"`` is the round profile (no ``e1``, ``e2``).
* ``"PIXELATED"``: ``image`` (``(m, m)`` or ``(B, m, m)``, **flux per source pixel**),
  ``pixel_scale`` (arcsec), optional ``center_x``, ``center_y``; the image sits on its own
  centred grid and is interpolated bilinearly (zero outside, as lenstronomy's ``INTERPOL``
  with ``image = flux / pixel_scale**2``) or bicubically (``interpolation="bicubic"``).

Pipeline of :class:`LensingSimulator` (lenstronomy's ``ImageModel`` with
``supersampling_convolution=False``): surface brightness at the ``s x s`` sub-pixel centres,
averaged and multiplied by the pixel area (flux per pixel), PSF convolution, then optional
flux-conserving downsampling ``D`` to a coarser grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .conventions import as_param, pixel_grid
from .lenses import ray_shoot

__all__ = [
    "LIGHT_MODELS", "sersic", "pixelated", "surface_brightness", "bin_pixels", "downsample",
    "convolve_fft", "convolve_direct", "convolve",
    "LensingSimulator", "compiled_image",
]

LIGHT_MODELS = ("SERSIC", "SERSIC_ELLIPSE", "PIXELATED")
SERSIC_CORE_ARCSEC = 1e-4


def sersic(x: Tensor, y: Tensor, amp: Any, R_sersic: Any, n_sersic: Any, e1: Any = 0.0,
           e2: Any = 0.0, center_x: Any = 0.0, center_y: Any = 0.0) -> Tensor:
    """Elliptical Sérsic surface brightness (flux/arcsec^2), lenstronomy's ``SERSIC_ELLIPSE``."""
    p = lambda v: as_param(v, x)  # noqa: E731
    e1, e2 = p(e1), p(e2)
    dx, dy = x - p(center_x), y - p(center_y)
    norm = torch.sqrt(torch.clamp(torch.abs(1 - e1**2 - e2**2), min=1e-6))
    xe = ((1 - e1) * dx - e2 * dy) / norm
    ye = (-e2 * dx + (1 + e1) * dy) / norm
    r = torch.sqrt(xe**2 + ye**2).clamp(min=SERSIC_CORE_ARCSEC)
    n = p(n_sersic)
    bn = torch.clamp(1.9992 * n - 0.3271, min=1e-5)
    return p(amp) * torch.exp(-bn * ((r / p(R_sersic).clamp(min=SERSIC_CORE_ARCSEC)) ** (1 / n) - 1))


def pixelated(x: Tensor, y: Tensor, image: Tensor, pixel_scale: float, center_x: Any = 0.0,
              center_y: Any = 0.0, interpolation: str = "bilinear") -> Tensor:
    """Surface brightness (flux/arcsec^2) of a pixelated source (flux per pixel) at ``x, y``.

    ``image`` is ``(m_y, m_x)`` or ``(B, m_y, m_x)`` on a centred grid of ``pixel_scale``;
    ``x, y`` are ``(H, W)`` or ``(B, H, W)``. Returns ``(H, W)`` or ``(B, H, W)``.
    """
    my, mx = image.shape[-2:]
    u = (x - as_param(center_x, x)) / (pixel_scale * max(mx - 1, 1) / 2)
    v = (y - as_param(center_y, y)) / (pixel_scale * max(my - 1, 1) / 2)
    grid = torch.stack(torch.broadcast_tensors(u, v), dim=-1)
    unbatched = image.ndim == 2 and grid.ndim == 3
    img = image.reshape((-1, 1) + image.shape[-2:])
    grid = grid.reshape((-1,) + grid.shape[-3:])
    b = max(img.shape[0], grid.shape[0])
    img, grid = img.expand(b, *img.shape[1:]), grid.expand(b, *grid.shape[1:])
    out = F.grid_sample(img, grid.to(img.dtype), mode=interpolation, padding_mode="zeros",
                        align_corners=True)[:, 0]
    out = out / pixel_scale**2
    return out[0] if unbatched else out


def surface_brightness(x: Tensor, y: Tensor, light_models: Sequence[str],
                       kwargs_light: Sequence[Mapping[str, Any]],
                       interpolation: str = "bilinear") -> Tensor:
    """Summed surface brightness (flux/arcsec^2) of light components at ``x, y`` (arcsec)."""
    total = None
    for model, kw in zip(light_models, kwargs_light, strict=True):
        if model in ("SERSIC", "SERSIC_ELLIPSE"):
            kw = dict(kw)
            if model == "SERSIC":
                kw.pop("e1", None), kw.pop("e2", None)
            sb = sersic(x, y, **kw)
        elif model == "PIXELATED":
            sb = pixelated(x, y, kw["image"], kw["pixel_scale"], kw.get("center_x", 0.0),
                           kw.get("center_y", 0.0), interpolation)
        else:
            raise ValueError(f"unknown light model {model!r}; known: {LIGHT_MODELS}")
        total = sb if total is None else total + sb
    if total is None:
        raise ValueError("no light model given")
    return total


def bin_pixels(image: Tensor, factor: int) -> Tensor:
    """Sum ``factor x factor`` blocks of the last two axes."""
    if factor == 1:
        return image
    *lead, h, w = image.shape
    if h % factor or w % factor:
        raise ValueError(f"image {h}x{w} is not divisible by {factor}")
    pooled = F.avg_pool2d(image.reshape(-1, 1, h, w), factor) * factor**2
    return pooled.reshape(*lead, h // factor, w // factor)


def downsample(image: Tensor, factor: int) -> Tensor:
    """The operator ``D``: flux per pixel on a grid ``factor`` times coarser (block sums)."""
    return bin_pixels(image, factor)


def convolve_fft(image: Tensor, kernel: Tensor) -> Tensor:
    """'same'-size convolution with zero padding via real FFTs.

    Odd kernel ``(k, k)`` or one per image ``(B, k, k)`` (broadcast against the image batch).
    """
    kernel = kernel.to(dtype=image.dtype, device=image.device)
    h, w = image.shape[-2:]
    kh, kw = kernel.shape[-2:]
    sh, sw = h + kh - 1, w + kw - 1
    f = torch.fft.rfft2(image, s=(sh, sw)) * torch.fft.rfft2(kernel, s=(sh, sw))
    full = torch.fft.irfft2(f, s=(sh, sw))
    return full[..., kh // 2:kh // 2 + h, kw // 2:kw // 2 + w]


def convolve_direct(image: Tensor, kernel: Tensor) -> Tensor:
    """'same'-size direct convolution with zero padding (``conv2d`` with the flipped kernel)."""
    kernel = kernel.to(dtype=image.dtype, device=image.device)
    if kernel.ndim != 2:
        raise ValueError("convolve_direct takes one (k, k) kernel; use convolve_fft per batch")
    lead, (h, w) = image.shape[:-2], image.shape[-2:]
    kh, kw = kernel.shape
    out = F.conv2d(image.reshape(-1, 1, h, w), kernel.flip(-1, -2)[None, None],
                   padding=(kh // 2, kw // 2))
    return out.reshape(*lead, h, w)


def convolve(image: Tensor, kernel: Tensor | None, method: str = "fft") -> Tensor:
    """Convolve with a PSF kernel (``None``: identity); ``method`` is ``"fft"`` or ``"direct"``."""
    if kernel is None:
        return image
    if method == "fft":
        return convolve_fft(image, kernel)
    if method == "direct":
        return convolve_direct(image, kernel)
    raise ValueError(f"unknown convolution method {method!r}")


def _batch_size(*kwarg_lists: Sequence[Mapping[str, Any]]) -> int:
    """Leading batch size of batched parameters (``(B,)``) or images (``(B, m, m)``), else 0."""
    for kws in kwarg_lists:
        for kw in kws:
            for key, v in kw.items():
                if isinstance(v, Tensor) and v.ndim == (3 if key == "image" else 1):
                    return v.shape[0]
    return 0


def _slice(kwarg_list: Sequence[Mapping[str, Any]], i: int, j: int, b: int) -> list[dict[str, Any]]:
    out = []
    for kw in kwarg_list:
        d = {}
        for key, v in kw.items():
            batched = isinstance(v, Tensor) and v.ndim == (3 if key == "image" else 1) and v.shape[0] == b
            d[key] = v[i:j] if batched else v
        out.append(d)
    return out


@dataclass
class LensingSimulator:
    """Images (flux per pixel) of lensed sources on an ``n_pix x n_pix`` grid.

    ``psf`` is a ``(k, k)`` kernel (odd ``k``, used as given: normalise it yourself) applied at
    the pixel level with ``psf_method`` ``"fft"`` or ``"direct"``; ``downsample`` sums
    ``factor x factor`` blocks after the PSF, giving an ``n_pix // downsample`` image.
    Batches are evaluated ``batch_chunk`` images at a time (the working set then stays in
    the CPU cache; ``None``: all at once).
    """

    n_pix: int
    pixel_scale: float
    supersample: int = 1
    psf: Tensor | None = None
    psf_method: str = "fft"
    downsample: int = 1
    interpolation: str = "bilinear"
    batch_chunk: int | None = 16
    dtype: torch.dtype = torch.float64
    device: torch.device | str | None = None

    def grid(self) -> tuple[Tensor, Tensor]:
        """Sub-pixel centres ``(x, y)`` (arcsec), ``(n*s, n*s)`` each."""
        return pixel_grid(self.n_pix, self.pixel_scale, self.supersample,
                          dtype=self.dtype, device=self.device)

    def source_positions(self, lens_models: Sequence[str],
                         kwargs_lens: Sequence[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
        """Sub-pixel rays traced to the source plane (arcsec), ``(B, n*s, n*s)`` or unbatched."""
        x, y = self.grid()
        return ray_shoot(x, y, lens_models, kwargs_lens)

    def pixel_flux(self, sb: Tensor) -> Tensor:
        """Supersampled surface brightness to flux per (full-resolution) pixel."""
        s = self.supersample
        return bin_pixels(sb, s) * (self.pixel_scale / s) ** 2

    def finish(self, flux: Tensor) -> Tensor:
        """PSF convolution then downsampling of a flux-per-pixel image."""
        out = convolve(flux, self.psf, self.psf_method)
        return downsample(out, self.downsample)

    def image(self, lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
              light_models: Sequence[str], kwargs_light: Sequence[Mapping[str, Any]]) -> Tensor:
        """The lensed image, ``(B, n, n)`` for batched parameters/sources, else ``(n, n)``."""
        b = _batch_size(kwargs_lens, kwargs_light)
        if self.batch_chunk and b > self.batch_chunk:
            return torch.cat([
                self.image(lens_models, _slice(kwargs_lens, i, i + self.batch_chunk, b),
                           light_models, _slice(kwargs_light, i, i + self.batch_chunk, b))
                for i in range(0, b, self.batch_chunk)])
        bx, by = self.source_positions(lens_models, kwargs_lens)
        sb = surface_brightness(bx, by, light_models, kwargs_light, self.interpolation)
        return self.finish(self.pixel_flux(sb))

    def unlensed(self, light_models: Sequence[str],
                 kwargs_light: Sequence[Mapping[str, Any]]) -> Tensor:
        """The source seen without a lens, on the same grid and with the same PSF."""
        return self.image([], [], light_models, kwargs_light)


def compiled_image(simulator: LensingSimulator, lens_models: Sequence[str],
                   light_models: Sequence[str], **compile_kwargs: Any):
    """``simulator.image`` for fixed model lists, with each batch chunk run by a
    :func:`torch.compile` d function.

    Returns ``f(kwargs_lens, kwargs_light) -> image``. The first call per chunk shape
    compiles (10-40 s on CPU); afterwards the elementwise lens and light formulas run as
    fused kernels.
    """
    chunk = simulator.batch_chunk
    sim = replace(simulator, batch_chunk=None)

    def one(kwargs_lens: Sequence[Mapping[str, Any]],
            kwargs_light: Sequence[Mapping[str, Any]]) -> Tensor:
        return sim.image(lens_models, kwargs_lens, light_models, kwargs_light)

    compiled = torch.compile(one, **compile_kwargs)

    def image(kwargs_lens: Sequence[Mapping[str, Any]],
              kwargs_light: Sequence[Mapping[str, Any]]) -> Tensor:
        b = _batch_size(kwargs_lens, kwargs_light)
        if not chunk or b <= chunk:
            return compiled(kwargs_lens, kwargs_light)
        return torch.cat([compiled(_slice(kwargs_lens, i, i + chunk, b), _slice(kwargs_light, i, i + chunk, b))
                          for i in range(0, b, chunk)])

    return image
