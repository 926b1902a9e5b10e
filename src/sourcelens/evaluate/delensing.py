"""Delensing on test pairs (study 002): the U-Net against the physics route, every method on the same pairs and
the same source grid, with the study's conventions (images on [0, 1]: each source divided by its peak; SSIM with
data range 1 in the project's one convention; PSNR = 10 log10(1 / MSE)).

Methods (:data:`METHODS`):

``identity``                  the lensed image taken as the source (interpolated onto the source grid): the floor
``backward (true lens)``      the noisy image mapped to the source grid by exact fractional pixel overlaps
                              (:class:`sourcelens.lensing.OverlapOperator`) with the true lens: the physics
                              route when the lens is known (the PSF is not undone)
``backward (CNN lens)``       the same with the lens the CNN predicts: physics + learned, no truth needed
``U-Net``                     the network (:func:`sourcelens.models.unet.delens`)
``backward (true lens, noiseless)``  the reference: what exact backward mapping gives without noise

Real-galaxy sources carry their own noise in the truth: for them the table adds the SSIM noise ceiling (what a
perfect noiseless reconstruction would score against that noisy truth, the noise measured on the truth's outer
ring) and SSIM / ceiling.
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
from ..metrics import by_kind, ssim, ssim_noise_ceiling, stamp_noise_correlation, summarise
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


def _ring_sigma(image: np.ndarray, taper_fraction: float = 0.0) -> float:
    """Robust noise σ of a noisy truth (a real stamp resampled onto the source grid): the MAD of the stamp's
    footprint (its non-zero pixels' bounding box; the grid may be larger than the stamp) beyond 0.3 of its side
    from the centre and inside the untapered part (``taper_fraction`` of the side at each edge)."""
    nonzero = np.flatnonzero(np.any(image != 0, axis=0)), np.flatnonzero(np.any(image != 0, axis=1))
    if not (nonzero[0].size and nonzero[1].size):
        return 0.0
    (c0, c1), (r0, r1) = (nonzero[0][[0, -1]]), (nonzero[1][[0, -1]])
    box = image[r0:r1 + 1, c0:c1 + 1]
    side = min(box.shape)
    y, x = np.mgrid[:box.shape[0], :box.shape[1]]
    dy, dx = y - (box.shape[0] - 1) / 2, x - (box.shape[1] - 1) / 2
    inner = (0.5 - float(taper_fraction)) * side
    ring = box[(np.hypot(dy, dx) > 0.3 * side) & (np.abs(dx) < inner) & (np.abs(dy) < inner)]
    if ring.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(ring - np.median(ring))))


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
        sigma = _ring_sigma(truth, taper_fraction)
        if sigma > 0:
            rho = stamp_noise_correlation(truth, estimate, sigma)
            out["ssim_ceiling"] = ssim_noise_ceiling(estimate, sigma, rng, ceiling_draws, rho, data_range=1.0)
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
