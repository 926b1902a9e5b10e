"""LensSR (study 001): super-resolution trained with the lens equation instead of high-resolution images; the
lens parameters come from the dataset, as in the study.

**No source** (:class:`LensSRNoSource`): two :class:`~.sisr.SISR` modules — the image network upscales the
low-resolution image to ``Î``, the source network upscales the backward-lensed image ``i∘β`` (exact overlaps,
:meth:`sourcelens.lensing.SRLens.to_source`) to a high-resolution source ``Ŝ`` — tied by the lens equation,
``Î = P ∗ (Ŝ∘θ)``, with the intensity constraint that ``Î`` averaged back to the coarse grid is the data
(:func:`lenssr_no_source_loss`). The study sampled the image at the traced source positions (SIS only,
``grid_sample``) and constrained only the mean intensities; here the tie is the exact overlap operator of any
lens and the intensity constraint is per pixel, both χ²-normalised (:mod:`sourcelens.lensing.superres`). The
source is a by-product (on the datasets' ``source_high_res`` grid).

**With source** (:func:`sersic_relensed`): an elliptical Sérsic is fitted to each low-resolution image through
its lens and the PSF (the project's fit, :func:`sourcelens.fit.profiles.fit_sersic`), re-lensed onto the
high-resolution grid with the PSF, and one SISR is trained against these re-lensed images (``train.sr``).

Units: normalised surface brightness (:mod:`sourcelens.lensing.superres`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..lensing.superres import SRGeometry, SRLens, block_mean, chi2_per_pixel, fine_sigma, psf_kernel
from .common import lensed_image_scale, load_payload, save_payload, state_from
from .sisr import SISR

__all__ = ["LensSRNoSource", "lenssr_no_source_loss", "lenssr_super_resolve", "batched_lens_kwargs",
           "sersic_relensed", "save_lenssr", "load_lenssr"]

FORMAT = "sourcelens-lenssr-1"


class LensSRNoSource(nn.Module):
    """The two SISR modules of LensSR without source: ``image_net`` (low-resolution image → ``Î``) and
    ``source_net`` (``i∘β`` → ``Ŝ``), each an :class:`SISR` with the keywords ``sisr``."""

    def __init__(self, factor: int = 2, sisr: Mapping[str, Any] | None = None):
        super().__init__()
        self.hparams = {"factor": int(factor), "sisr": dict(sisr or {})}
        self.image_net = SISR(factor=factor, **dict(sisr or {}))
        self.source_net = SISR(factor=factor, **dict(sisr or {}))

    def forward(self, low_res: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Î, Ŝ)`` (B, 1, fn, fn) of images and backward-lensed sources (B, 1, n, n)."""
        return self.image_net(low_res), self.source_net(source)


def lenssr_no_source_loss(image: torch.Tensor, source: torch.Tensor, lenses: Sequence[SRLens],
                          low_res: torch.Tensor, sigma: torch.Tensor, lens_weight: float = 1.0,
                          interpolation: str = "overlap") -> dict[str, torch.Tensor]:
    """``loss`` = intensity + ``lens_weight`` · lens, batch means, with ``Î``, ``Ŝ`` (B, fn, fn), images and σ
    (B, n, n): ``intensity`` the χ²/pixel of ``D(Î)/f²`` against the data, ``lens`` the χ²/pixel of ``Î``
    against ``P ∗ (Ŝ∘θ)`` on the fine grid (σ of a fine pixel, :func:`fine_sigma`), ``Ŝ`` lensed by
    ``interpolation`` (:class:`~sourcelens.lensing.SRLens`)."""
    f = lenses[0].geometry.factor
    relensed = torch.stack([lens.image(s.to(lens.dtype), interpolation) for lens, s in zip(lenses, source)])
    intensity = chi2_per_pixel(low_res, block_mean(image, f), sigma).mean()
    tie = chi2_per_pixel(image, relensed.to(image.dtype), fine_sigma(sigma, f)).mean()
    return {"loss": intensity + lens_weight * tie, "intensity": intensity, "lens": tie}


def lenssr_super_resolve(model: LensSRNoSource, low_res: np.ndarray, lenses: Sequence[SRLens] | None = None,
                         batch_size: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """LensSR without source on low-resolution images (N, n, n), flux per pixel: the image network's
    super-resolved images ``Î`` (N, fn, fn), flux per high-resolution pixel, and, with ``lenses`` (one
    :class:`SRLens` per image), the source network's sources ``Ŝ`` of ``i∘β`` (N, fn, fn), flux per
    high-resolution source cell (as :func:`~.pisr.pisr_super_resolve`); None without lenses (the image network
    needs no lens)."""
    low_res = np.asarray(low_res, dtype=np.float32)
    if low_res.ndim != 3 or (lenses is not None and len(lenses) != len(low_res)):
        raise ValueError(f"need (N, n, n) images and one lens each, got {low_res.shape} and "
                         f"{'no' if lenses is None else len(lenses)} lenses")
    f = int(model.hparams["factor"])
    scale = lensed_image_scale(low_res)
    model = model.cpu().eval()
    images, sources = [], []
    with torch.no_grad():
        for i in range(0, len(low_res), batch_size):
            x = torch.as_tensor(low_res[i:i + batch_size] / scale[i:i + batch_size, None, None])
            images.append(model.image_net(x[:, None])[:, 0].numpy())
            if lenses is not None:
                src = torch.stack([lens.to_source(img) for lens, img in zip(lenses[i:i + batch_size], x)])
                sources.append(model.source_net(src[:, None].to(x.dtype))[:, 0].numpy())
    k = (scale / f**2)[:, None, None]
    shape = (0, f * low_res.shape[1], f * low_res.shape[2])
    image = (np.concatenate(images) if images else np.zeros(shape, np.float32)) * k
    if lenses is None:
        return image, None
    return image, (np.concatenate(sources) if sources else np.zeros(shape, np.float32)) * k


def batched_lens_kwargs(lens_model: str, lens_params: np.ndarray, dtype: torch.dtype = torch.float64
                        ) -> tuple[list[str], list[dict[str, torch.Tensor]]]:
    """lenstronomy-style lens lists for a batch: each keyword a (N,) tensor, from ``lens_params`` (N, 8)
    (LENS_PARAMETERS columns, no shear)."""
    from ..names import LENS_PARAMETERS
    from ..simulate import lens_kwargs

    rows = [lens_kwargs(lens_model, dict(zip(LENS_PARAMETERS, r)), with_shear=False)
            for r in np.asarray(lens_params, dtype=float)]
    if not rows:
        raise ValueError("no lens parameters")
    models = rows[0][0]
    kwargs = [{k: torch.tensor([r[1][j][k] for r in rows], dtype=dtype) for k in rows[0][1][j]}
              for j in range(len(models))]
    return models, kwargs


def sersic_relensed(geometry: SRGeometry, psf: Mapping[str, Any] | None, lens_model: str, lens_params: np.ndarray,
                    low_res: np.ndarray, sigma: np.ndarray, sources_low_res: np.ndarray, *, supersample: int = 2,
                    sigma_floor: float = 1e-3, max_iter: int = 100) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """LensSR with-source targets: an elliptical Sérsic fitted to each low-resolution image (N, n, n), flux per
    pixel, with noise σ (N, n, n) (floored at ``sigma_floor`` × the image peak), through its lens (``lens_params``
    (N, 8)), the PSF (``psf``: the dataset's description, at the low-resolution scale) and ``factor ·
    supersample`` sub-pixels, as the SR datasets are simulated; started from the moments of
    ``sources_low_res`` (``i∘β``, (N, n, n)). Returns the fitted Sérsics re-lensed on the high-resolution grid
    with the PSF (N, fn, fn), flux per high-resolution pixel, and the fitted parameters (arcsec; ``amp`` in
    flux/arcsec²)."""
    from ..fit.common import ImagingProblem
    from ..fit.profiles import fit_sersic
    from ..lensing import LensingSimulator, pixel_grid, sersic
    from .sisr import upsample_bicubic

    g, dtype = geometry, torch.float64
    low_res = np.asarray(low_res, dtype=float)
    peak = np.abs(low_res).max(axis=(1, 2), keepdims=True)
    sigma = np.sqrt(np.asarray(sigma, dtype=float) ** 2 + (sigma_floor * peak) ** 2)
    models, kwargs = batched_lens_kwargs(lens_model, lens_params, dtype)
    lr_sim = LensingSimulator(g.low_res_num_pix, g.low_res_pixel_scale, supersample=g.factor * supersample,
                              psf=psf_kernel(psf, g.low_res_pixel_scale), dtype=dtype)
    grid = pixel_grid(g.high_res_num_pix, g.high_res_pixel_scale, dtype=dtype)
    problem = ImagingProblem(lr_sim, lr_sim.source_positions(models, kwargs), torch.as_tensor(low_res),
                             torch.as_tensor(sigma), grid, torch.full((len(low_res),), g.high_res_pixel_scale,
                                                                      dtype=dtype))
    start = upsample_bicubic(torch.as_tensor(np.asarray(sources_low_res, dtype=float)), g.factor).numpy()
    fit = fit_sersic(problem, start, max_iter=max_iter)
    params = {k: torch.as_tensor(v, dtype=dtype) for k, v in fit.info["params"].items()}
    hr_sim = LensingSimulator(g.high_res_num_pix, g.high_res_pixel_scale, supersample=supersample,
                              psf=None if g.psf is None else g.psf.to(dtype), dtype=dtype)
    with torch.no_grad():
        bx, by = hr_sim.source_positions(models, kwargs)
        image = hr_sim.finish(hr_sim.pixel_flux(sersic(bx, by, **params)))
    return image.numpy().astype(np.float32), fit.info["params"]


def save_lenssr(model: nn.Module, path: str | Path, provenance: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> Path:
    """Save a LensSR model (:class:`LensSRNoSource`; the with-source variant is a plain SISR, saved by
    :func:`~.sisr.save_sisr`) atomically."""
    return save_payload(path, FORMAT, model, provenance=dict(provenance or {}), extra=dict(extra or {}))


def load_lenssr(path: str | Path, map_location: str | torch.device = "cpu") -> LensSRNoSource:
    """A :class:`LensSRNoSource` saved by :func:`save_lenssr`, in eval mode; errors name the file."""
    payload = load_payload(path, FORMAT, "LensSR (no source)", map_location)
    return state_from(LensSRNoSource(**payload["hparams"]), payload)
