"""Delensing on test pairs (study 002): the U-Net against the physics route, every method on the same pairs and
the same source grid, with the study's conventions (images on [0, 1]: each source divided by its peak; SSIM with
data range 1 in the project's one convention; PSNR = 10 log10(1 / MSE)).

Methods (:data:`METHODS`):

``identity``                  the lensed image taken as the source (interpolated onto the source grid): the floor
``backward (true lens)``      the noisy image mapped to the source grid by exact fractional pixel overlaps
                              (:class:`sourcelens.lensing.OverlapOperator`) with the true lens: the physics
                              route when the lens is known (the PSF is not undone)
``backward (CNN lens)``       the same with the lens the CNN predicts: physics + learned, no truth needed
``U-Net``                     the network, averaged over the 8 rotations and reflections of each image
                              (:func:`sourcelens.models.unet.delens`)
``backward (true lens, noiseless)``  the reference: what exact backward mapping gives without noise

Real-galaxy sources carry their own noise in the truth: for them the table adds the SSIM noise ceiling (what a
perfect noiseless reconstruction would score against that noisy truth: the truth smoothed over its noise, plus
white noise of the σ measured in the stamp's footprint, against itself) and SSIM / ceiling. That noise was lensed
into the image with the galaxy, so a method can recover part of it and pass the ceiling (backward mapping does).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from ..io import read_attrs, read_dataset
from ..metrics import by_kind, ssim, ssim_noise_ceiling, summarise
from ..names import LENS_PARAMETERS
from ..selection import evenly_spaced_rows

log = logging.getLogger(__name__)

__all__ = ["METHODS", "DELENSING_METRICS", "DelensingResult", "peak_normalised", "identity_source",
           "backward_source", "delensing_metrics", "evaluate_delensing", "delensing_summary"]

METHODS = ("identity", "backward (true lens)", "backward (CNN lens)", "U-Net", "backward (true lens, noiseless)")
DELENSING_METRICS = ("mse", "ssim", "psnr", "ssim_ceiling", "ssim_fraction")
REAL_KINDS = ("cosmos",)


def peak_normalised(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W) divided by their peak: the study's [0, 1] convention."""
    images = np.asarray(images, dtype=float)
    return images / np.maximum(np.abs(images).max(axis=(-2, -1), keepdims=True), 1e-30)


def identity_source(lensed: np.ndarray, pixel_scale: float, grid_num_pix: int, grid_scale: float) -> np.ndarray:
    """The lensed images (N, n, n) at ``pixel_scale`` arcsec sampled (bilinear) at the centres of the source grid's
    pixels (``grid_num_pix``² of ``grid_scale`` arcsec, both grids centred on the optical axis)."""
    lensed = np.asarray(lensed, dtype=float)
    n = lensed.shape[-1]
    centres = (np.arange(grid_num_pix) - (grid_num_pix - 1) / 2) * grid_scale / pixel_scale + (n - 1) / 2
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([ndimage.map_coordinates(im, [rows, cols], order=1, mode="constant") for im in lensed])


def backward_source(images: np.ndarray, lens_model: str, params: np.ndarray, pixel_scale: float,
                    grid_num_pix: int, grid_scale: float) -> np.ndarray:
    """Images (N, n, n) mapped to the source grid by exact fractional overlaps through the lens of each row of
    ``params`` (N, 8; :data:`LENS_PARAMETERS` order), flux per source-grid pixel."""
    from ..lensing.backward import OverlapOperator, SourceGrid
    from ..simulate import lens_kwargs

    grid = SourceGrid((grid_num_pix, grid_num_pix), grid_scale)
    out = np.empty((len(images), grid_num_pix, grid_num_pix))
    for i, (image, row) in enumerate(zip(np.asarray(images, dtype=float), np.asarray(params, dtype=float))):
        models, kwargs = lens_kwargs(lens_model, dict(zip(LENS_PARAMETERS, row)))
        op = OverlapOperator(models, kwargs, image.shape[-1], pixel_scale, grid)
        out[i] = op.to_source(torch.as_tensor(image, dtype=torch.float64)).numpy()
    return out


def _footprint(image: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a resampled stamp's non-zero pixels (the source grid may be larger than the stamp)."""
    rows, cols = np.flatnonzero(np.any(image != 0, axis=1)), np.flatnonzero(np.any(image != 0, axis=0))
    if not (rows.size and cols.size):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _taper_1d(size: int, fraction: float) -> np.ndarray:
    width = int(round(float(fraction) * size))
    w = np.ones(size)
    if width > 0:
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(width) + 0.5) / width))
        w[:width], w[-width:] = ramp, ramp[::-1]
    return w


def truth_noise_map(image: np.ndarray, taper_fraction: float = 0.0) -> np.ndarray:
    """Per-pixel noise σ of a noisy truth (a real stamp resampled onto the source grid, its edges tapered by
    ``taper_fraction`` of its side): σ, the MAD of the stamp's footprint beyond 0.3 of its side from the centre
    and inside the untapered part, times the taper inside the footprint, 0 outside it (no noise there)."""
    out = np.zeros_like(image, dtype=float)
    box = _footprint(image)
    if box is None:
        return out
    stamp = image[box]
    h, w = stamp.shape
    side = min(h, w)
    y, x = np.mgrid[:h, :w]
    dy, dx = y - (h - 1) / 2, x - (w - 1) / 2
    inner = (0.5 - float(taper_fraction)) * side
    ring = stamp[(np.hypot(dy, dx) > 0.3 * side) & (np.abs(dx) < inner) & (np.abs(dy) < inner)]
    if ring.size < 16:
        return out
    sigma = 1.4826 * np.median(np.abs(ring - np.median(ring)))
    out[box] = sigma * np.outer(_taper_1d(h, taper_fraction), _taper_1d(w, taper_fraction))
    return out


def delensing_metrics(truth: np.ndarray, estimate: np.ndarray, *, noisy_truth: bool = False,
                      rng: np.random.Generator | None = None, ceiling_draws: int = 8,
                      taper_fraction: float = 0.0) -> dict[str, float]:
    """Study-convention metrics of one peak-normalised ``estimate`` against the peak-normalised ``truth``; with a
    ``noisy_truth`` (a real galaxy; its stamp edge-tapered by ``taper_fraction``) also its SSIM noise ceiling and
    SSIM / ceiling."""
    err = float(np.mean((estimate - truth) ** 2))
    out = {"mse": err, "ssim": ssim(truth, estimate, data_range=1.0),
           "psnr": 10 * math.log10(1.0 / err) if err > 0 else math.inf,
           "ssim_ceiling": math.nan, "ssim_fraction": math.nan}
    if noisy_truth and rng is not None:
        sigma = truth_noise_map(truth, taper_fraction)
        if sigma.max() > 0:
            # the same for every method: a noiseless stand-in for the galaxy (the truth smoothed over the noise,
            # σ = 1 pixel) against itself plus the truth's noise (white: the resampled stamp noise is
            # correlated and lowers SSIM further, so this ceiling is an upper bound)
            galaxy = ndimage.gaussian_filter(truth, 1.0)
            out["ssim_ceiling"] = ssim_noise_ceiling(galaxy, sigma, rng, ceiling_draws, None, data_range=1.0)
            out["ssim_fraction"] = out["ssim"] / out["ssim_ceiling"]
    return out


@dataclass
class DelensingResult:
    """Per-pair metrics of every method (``per_pair``: ``source_id``, ``kind``, ``snr``, ``theta_E``, ``method``
    and :data:`DELENSING_METRICS`), the summary by kind and method, and the images: ``truth`` and one stack per
    method (peak-normalised, on the source grid), for the pairs ``rows`` of the file."""

    per_pair: pd.DataFrame
    summary: pd.DataFrame
    truth: np.ndarray
    estimates: dict[str, np.ndarray]
    rows: np.ndarray
    lensed: np.ndarray
    grid_scale: float
    pixel_scale: float


def evaluate_delensing(pairs_path: str | Path, cnn=None, unet=None, *, n_pairs: int | None = None,
                       rng: np.random.Generator | None = None, ceiling_draws: int = 8) -> DelensingResult:
    """Every method of :data:`METHODS` (those needing a missing model left out) on ``n_pairs`` test pairs (evenly
    spaced through the file; all for None)."""
    from ..models.cnn import predict_lens_params
    from ..models.unet import delens

    from .cnn import optimal_snr

    attrs = read_attrs(pairs_path)
    lens_model, pixel_scale = str(attrs["lens_model"]), float(attrs["pixel_scale_arcsec"])
    grid_scale = float(attrs["source_grid_pixel_scale_arcsec"])
    taper = float(attrs.get("source_taper_fraction", 0.0))
    total = len(read_dataset(pairs_path, names=("lens_params",))[1])
    rows = np.arange(total) if n_pairs is None else evenly_spaced_rows(total, int(n_pairs))
    arrays, meta = read_dataset(pairs_path, index=rows)
    lensed, truth_raw = arrays["lensed"].astype(float), arrays["source"].astype(float)
    m = truth_raw.shape[-1]
    truth = peak_normalised(truth_raw)
    estimates = {
        "identity": peak_normalised(identity_source(lensed, pixel_scale, m, grid_scale)),
        "backward (true lens)": peak_normalised(backward_source(lensed, lens_model, arrays["lens_params"],
                                                                pixel_scale, m, grid_scale)),
    }
    if cnn is not None:
        predicted, _ = predict_lens_params(cnn, lensed)
        estimates["backward (CNN lens)"] = peak_normalised(backward_source(lensed, lens_model, predicted,
                                                                           pixel_scale, m, grid_scale))
    if unet is not None:
        estimates["U-Net"] = np.asarray(delens(unet, lensed), dtype=float)
    estimates["backward (true lens, noiseless)"] = peak_normalised(backward_source(
        arrays["lensed_noiseless"], lens_model, arrays["lens_params"], pixel_scale, m, grid_scale))

    kinds = meta["kind"].astype(str).to_numpy() if "kind" in meta else np.full(len(rows), "unknown")
    snr = optimal_snr(arrays["lensed_noiseless"], arrays["noise_sigma"])
    records = []
    for method, images in estimates.items():
        for i in range(len(rows)):
            record = {"source_id": str(meta["source_id"].iloc[i]), "kind": kinds[i], "snr": float(snr[i]),
                      "theta_E": float(meta["theta_E"].iloc[i]), "method": method}
            record.update(delensing_metrics(truth[i], images[i], noisy_truth=kinds[i] in REAL_KINDS, rng=rng,
                                            ceiling_draws=ceiling_draws, taper_fraction=taper))
            records.append(record)
    per_pair = pd.DataFrame(records)
    return DelensingResult(per_pair, delensing_summary(per_pair), truth, estimates, rows, lensed, grid_scale,
                           pixel_scale)


def delensing_summary(per_pair: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, std, 16th/84th percentiles of each metric per source kind (real galaxies first, then all)
    and method, in :data:`METHODS` order."""
    order = {m: i for i, m in enumerate(METHODS)}

    def per_method(rows: pd.DataFrame) -> pd.DataFrame:
        table = summarise(rows, [c for c in DELENSING_METRICS if rows[c].notna().any()], by="method")
        return table.sort_values("method", key=lambda s: s.map(order), kind="stable")

    return by_kind(per_pair, per_method).reset_index(drop=True)
