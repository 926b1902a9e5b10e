"""Unlensed galaxy fits (study 000): test galaxies, brought to a common noise level, fitted with the VAE
decoder (:func:`sourcelens.fit.decoder.fit_decoder`) and with the Sérsic and Sérsic + shapelets baselines
(:mod:`sourcelens.fit.profiles`), all in the stamp's pixels with no PSF (the stamps already are observed
images, and the decoder was trained on them as they are)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..io import read_dataset, read_meta
from ..selection import first_originals
from .common import FitResult, ImagingProblem
from .compare import fit_metrics, fit_summary
from .decoder import fit_decoder
from .profiles import fit_sersic, fit_sersic_shapelets

log = logging.getLogger(__name__)

__all__ = ["GalaxyFits", "add_noise_to_level", "fit_test_galaxies", "noisy_test_galaxies"]


def add_noise_to_level(images: np.ndarray, own_sigma, target_sigma: float, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Bring each stamp's Gaussian noise up to ``target_sigma``.

    A stamp with its own noise σ_s < target gets N(0, √(target² − σ_s²)) added; one already noisier is left
    as it is. Returns (noisy images, total σ per image = max(target, σ_s)).
    """
    images = np.asarray(images, dtype=np.float64)
    own = np.broadcast_to(np.nan_to_num(np.asarray(own_sigma, dtype=float)), (len(images),))
    add = np.sqrt(np.clip(float(target_sigma) ** 2 - own**2, 0.0, None))
    noisy = images + rng.standard_normal(images.shape) * add[:, None, None]
    return noisy, np.maximum(float(target_sigma), own)


@dataclass
class GalaxyFits:
    """The galaxies fitted (``data``: the stamps with their noise brought to the common level, ``sigma`` per galaxy,
    ``truth``: the noiseless stamps where known, NaN otherwise, ``meta``), every method's fits, the per-galaxy
    metrics and the per-kind, per-method summary."""

    truth: np.ndarray
    data: np.ndarray
    sigma: np.ndarray
    meta: pd.DataFrame
    fits: dict[str, FitResult]
    per_galaxy: pd.DataFrame
    summary: pd.DataFrame


def noisy_test_galaxies(test_path: str | Path, n_galaxies: int, noise_sigma: float, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, pd.DataFrame, np.ndarray]:
    """The first ``n_galaxies`` originals (linear in flux) of a stamps file by source id, every kind in turn, their
    noise brought up to ``noise_sigma`` with ``rng``: (data, sigma per galaxy, noiseless truth or None (NaN where
    unknown: real galaxies), meta (``noise_sigma``: the stamps' own noise), the stamps before the added noise)."""
    rows = first_originals(read_meta(test_path), int(n_galaxies), linear_only=True)
    if len(rows) == 0:
        raise ValueError(f"{test_path}: no original (un-augmented) stamps to fit")
    arrays, meta = read_dataset(test_path, index=rows)
    stamps = arrays["images"].astype(np.float64)
    truth = arrays["images_noiseless"].astype(np.float64) if "images_noiseless" in arrays else None
    data, sigma = add_noise_to_level(stamps, meta["noise_sigma"].to_numpy(dtype=float) if "noise_sigma" in meta
                                     else np.zeros(len(meta)), float(noise_sigma), rng)
    return data, sigma, truth, meta, stamps


def fit_test_galaxies(test_path: str | Path, vae, cfg: Mapping[str, Any], rng: np.random.Generator, *,
                      bright_snr: float | None = None, ceiling_draws: int = 8, progress: bool = False) -> GalaxyFits:
    """Fit the first ``cfg["n_galaxies"]`` originals (linear in flux) of a stamps file by source id (``cfg``: the
    ``fit`` config section) after bringing their noise up to ``cfg["noise_sigma"]`` with ``rng``; the summary
    has each kind's galaxies at S/N ≥ ``bright_snr`` apart."""
    data, sigma, truth, meta, _ = noisy_test_galaxies(test_path, int(cfg["n_galaxies"]), float(cfg["noise_sigma"]), rng)
    log.info("fitting %d galaxies (requested %d); sigma %.3g..%.3g", len(data), cfg["n_galaxies"],
             sigma.min(), sigma.max())
    lbfgs = {"max_iter": int(cfg["max_iter"]), "tolerance_change": float(cfg["tolerance_change"]),
             "patience": int(cfg["patience"])}
    dec = fit_decoder(vae, data, sigma, init=cfg["init"], interpolation=cfg["interpolation"], progress=progress,
                      **lbfgs)
    stops = dict(zip(*np.unique(dec.status, return_counts=True)))
    log.info("decoder: %.3f s per galaxy, iterations median %d max %d, stopped by %s, median chi2/nu %.3f",
             dec.seconds.mean(), np.median(dec.n_iter), dec.n_iter.max(), stops, np.median(dec.chi2_nu))
    fits = {"decoder": FitResult("decoder", dec.model, dec.source, dec.chi2, dec.n_params, dec.seconds,
                                 {"z": dec.z, "n_iter": dec.n_iter, "status": dec.status})}
    problem = ImagingProblem.unlensed(data, sigma)
    fits["sersic"] = fit_sersic(problem, **lbfgs)
    for n_max in cfg["shapelet_n_max"]:
        res = fit_sersic_shapelets(problem, fits["sersic"], int(n_max))
        fits[res.method] = res
    for method, res in fits.items():
        nu = data[0].size - res.n_params
        log.info("%s: %.3f s per galaxy, median chi2/nu %.3f", method, res.seconds.mean(), np.median(res.chi2 / nu))
    per = fit_metrics(data, sigma, meta, fits, truth, rng, ceiling_draws)
    return GalaxyFits(truth if truth is not None else np.full_like(data, np.nan), data, sigma, meta, fits, per,
                      fit_summary(per, bright_snr))
