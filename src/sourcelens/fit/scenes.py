"""Lensed test scenes for source fits: galaxies lensed once with lenstronomy exactly as the pairs datasets are
(:mod:`sourcelens.simulate`'s draws and renderer), and their torch counterpart for fitting.

The stamp (edge-tapered as in the pairs) is an ``INTERPOL`` source of its own pixel scale (or
``source_pixel_scale_arcsec`` where the config fixes one) at a random offset, with the total flux of a random
magnitude, behind a lens (``lens_model`` + external shear) drawn from the ``simulate.pairs`` priors, imaged with
its PSF, supersampling and noise. Sources are compared on each galaxy's **evaluation grid**: its stamp's size and
pixel scale, centred on the optical axis (0, 0), where the true source is the stamp resampled (bilinearly) at its
true offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..lensing import LensingSimulator, pixel_grid, pixelated
from ..simulate import (
    check_stamps, draw_pair_scenes, lens_kwargs, magnitude_to_counts, pairs_renderer, render_pairs, source_pixel_scales,
    taper_sources,
)
from .common import ImagingProblem

__all__ = ["LensedScenes", "simulate_lensed", "torch_simulator", "lens_kwargs_torch", "evaluation_grid",
           "true_source_on_grid", "imaging_problem"]

DTYPE = torch.float64


@dataclass
class LensedScenes:
    """A batch of lensed galaxies and everything needed to fit and score them.

    Arrays are float64 numpy: ``data``, ``noiseless``, ``sigma`` (B, n, n) e-/s per pixel;
    ``stamps`` (B, m, m) the source stamps as lensed (tapered); ``source_flux`` (B,) total source flux;
    ``source_xy`` (B, 2) arcsec; ``source_pixel_scale`` (B,) arcsec per stamp pixel; ``lens`` the lens-parameter
    table (LENS_PARAMETERS columns).
    """

    data: np.ndarray
    noiseless: np.ndarray
    sigma: np.ndarray
    stamps: np.ndarray
    source_flux: np.ndarray
    source_xy: np.ndarray
    lens: pd.DataFrame
    lens_model: str
    num_pix: int
    pixel_scale: float
    source_pixel_scale: np.ndarray
    supersampling: int
    psf_kernel: np.ndarray | None
    source_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)

    def true_source_image(self) -> np.ndarray:
        """Flux per stamp pixel of the true source (B, m, m): the stamp scaled to its total flux."""
        s = self.stamps
        return s * (self.source_flux / s.sum(axis=(1, 2)))[:, None, None]


def simulate_lensed(stamps: np.ndarray, cfg: Mapping[str, Any], rng: np.random.Generator, lens_model: str = "SIE",
                    source_ids: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                    pixel_scales: Sequence[float] | None = None) -> LensedScenes:
    """Lens each stamp once with lenstronomy (``cfg`` = the ``simulate.pairs`` config), as
    :func:`sourcelens.simulate.simulate_pairs` does but for the given stamps in order; ``pixel_scales`` (arcsec
    per stamp pixel, e.g. the stamps' ``pixel_scale_arcsec``) are used unless the config fixes the source pixel
    scale. Random draws, in order: lens parameters, source x, source y, magnitudes
    (:func:`~sourcelens.simulate.draw_pair_scenes`), then per galaxy the noise."""
    stamps = np.asarray(stamps, dtype=float)
    ids = list(map(str, source_ids)) if source_ids is not None else [str(i) for i in range(len(stamps))]
    meta = pd.DataFrame({"source_id": ids})
    if pixel_scales is not None:
        meta["pixel_scale_arcsec"] = np.asarray(pixel_scales, dtype=float)
    check_stamps(stamps, meta)
    scales = source_pixel_scales(meta, np.arange(len(stamps)), cfg)
    stamps = taper_sources(stamps, cfg.get("source_taper_fraction", 0.0))
    params, src_x, src_y, mags = draw_pair_scenes(len(stamps), lens_model, cfg, rng)
    fluxes = np.asarray(magnitude_to_counts(mags, cfg["magnitude_zero_point"]), dtype=float)
    renderer = pairs_renderer(lens_model, cfg)
    out = render_pairs(stamps, lens_model, params, fluxes, src_x, src_y, scales, cfg, rng, renderer=renderer,
                       unlensed=False, dtype=np.float64, progress=False)
    psf = renderer.psf
    kernel = None if psf.psf_type == "NONE" else np.asarray(psf.kernel_point_source, dtype=float)
    return LensedScenes(
        data=out["lensed"], noiseless=out["lensed_noiseless"], sigma=out["noise_sigma"], stamps=stamps,
        source_flux=fluxes, source_xy=np.stack([src_x, src_y], axis=1), lens=params, lens_model=lens_model,
        num_pix=int(cfg["num_pix"]), pixel_scale=float(cfg["pixel_scale_arcsec"]), source_pixel_scale=scales,
        supersampling=int(cfg.get("supersampling", 1)), psf_kernel=kernel, source_ids=ids,
        kinds=list(map(str, kinds)) if kinds is not None else ["unknown"] * len(ids),
    )


def torch_simulator(scenes: LensedScenes, batch_chunk: int | None = None) -> LensingSimulator:
    """The torch forward model matching the lenstronomy simulation of ``scenes`` (float64)."""
    psf = None if scenes.psf_kernel is None else torch.as_tensor(scenes.psf_kernel, dtype=DTYPE)
    return LensingSimulator(n_pix=scenes.num_pix, pixel_scale=scenes.pixel_scale,
                            supersample=scenes.supersampling, psf=psf, batch_chunk=batch_chunk, dtype=DTYPE)


def lens_kwargs_torch(scenes: LensedScenes, index: int | Sequence[int] | None = None
                      ) -> tuple[list[str], list[dict[str, Any]]]:
    """(lens model list, kwargs) of ``scenes``: floats for one ``index``, (B,) tensors otherwise."""
    rows = scenes.lens if index is None else scenes.lens.iloc[np.atleast_1d(index)]
    if isinstance(index, (int, np.integer)):
        return lens_kwargs(scenes.lens_model, rows.iloc[0].to_dict())
    cols = {k: torch.tensor(rows[k].to_numpy(dtype=float), dtype=DTYPE) for k in rows.columns}
    models, kwargs = lens_kwargs(scenes.lens_model, dict.fromkeys(rows.columns, 0.0))
    out = []
    for kw in kwargs:
        out.append({k: (cols[k] if k in cols else torch.full((len(rows),), float(v), dtype=DTYPE))
                    for k, v in kw.items()})
    return models, out


def evaluation_grid(scenes: LensedScenes) -> tuple[Tensor, Tensor]:
    """(x, y) arcsec (B, m, m) of each galaxy's evaluation source grid: its stamp's size and pixel scale,
    centred on (0, 0)."""
    x, y = pixel_grid(scenes.stamps.shape[-1], 1.0, dtype=DTYPE)
    scale = torch.as_tensor(scenes.source_pixel_scale, dtype=DTYPE)[:, None, None]
    return x * scale, y * scale


def true_source_on_grid(scenes: LensedScenes) -> np.ndarray:
    """The true source, flux per pixel of the evaluation grid (B, m, m)."""
    ex, ey = evaluation_grid(scenes)
    img = torch.as_tensor(scenes.true_source_image(), dtype=DTYPE)
    xy = torch.as_tensor(scenes.source_xy, dtype=DTYPE)
    scale = torch.as_tensor(scenes.source_pixel_scale, dtype=DTYPE)[:, None, None]
    return (pixelated(ex, ey, img, scale, xy[:, 0], xy[:, 1]) * scale**2).numpy()


def imaging_problem(scenes: LensedScenes) -> ImagingProblem:
    """The scenes as a fitting problem: the torch simulator, the rays through each scene's true lens, the data
    and noise, and the evaluation grid."""
    sim = torch_simulator(scenes)
    lens_models, kw = lens_kwargs_torch(scenes)
    with torch.no_grad():
        rays = sim.source_positions(lens_models, kw)
    return ImagingProblem(sim, rays, torch.as_tensor(scenes.data, dtype=DTYPE),
                          torch.as_tensor(scenes.sigma, dtype=DTYPE), evaluation_grid(scenes),
                          torch.as_tensor(scenes.source_pixel_scale, dtype=DTYPE))
