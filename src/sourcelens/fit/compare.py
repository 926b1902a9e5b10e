"""Comparing galaxy-fit methods: per-galaxy metrics of every method's model and a per-method summary per source
kind, real galaxies first."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .. import metrics
from .common import FitResult


def fit_metrics(data: np.ndarray, sigma: np.ndarray, meta: pd.DataFrame, fits: Mapping[str, FitResult],
                truth: np.ndarray | None = None, rng: np.random.Generator | None = None,
                ceiling_draws: int = 8) -> pd.DataFrame:
    """One row per galaxy and method: :func:`sourcelens.metrics.image_metrics` of the model against the fitted
    ``data`` (χ²/ν with ν = pixels − free parameters, SSIM and its noise ceiling with ``rng``) and against the
    noiseless ``truth`` where known (NaN rows otherwise), plus the seconds it took."""
    rows = []
    kinds = meta["kind"].astype(str).to_numpy() if "kind" in meta else np.full(len(meta), "unknown")
    snr = meta["snr"].to_numpy(dtype=float) if "snr" in meta else np.full(len(meta), np.nan)
    for method, res in fits.items():
        for i in range(len(data)):
            m = metrics.image_metrics(data[i], res.model[i], sigma=sigma[i], n_params=res.n_params,
                                      truth=None if truth is None else truth[i],
                                      label=f"{meta.source_id[i]} {method}", ceiling_rng=rng,
                                      ceiling_draws=ceiling_draws)
            rows.append({"source_id": meta.source_id[i], "kind": kinds[i], "snr": snr[i], "method": method,
                         "n_params": res.n_params, "noise_sigma": sigma[i], **m, "seconds": res.seconds[i]})
    return pd.DataFrame(rows)


def _per_method(per_galaxy: pd.DataFrame) -> pd.DataFrame:
    return per_galaxy.groupby("method", sort=False).agg(
        n_galaxies=("source_id", "size"), n_params=("n_params", "median"),
        chi2_nu_median=("chi2_nu", "median"), chi2_nu_mean=("chi2_nu", "mean"),
        mse_median=("mse", "median"), ssim_median=("ssim", "median"), ssim_mean=("ssim", "mean"),
        ssim_fraction_median=("ssim_fraction", "median"),
        mse_truth_median=("mse_truth", "median"), ssim_truth_median=("ssim_truth", "median"),
        ellipticity_error_median=("ellipticity_error", "median"),
        ellipticity_error_truth_median=("ellipticity_error_truth", "median"),
        seconds_per_galaxy_mean=("seconds", "mean"), seconds_per_galaxy_median=("seconds", "median"),
    ).reset_index()


def fit_summary(per_galaxy: pd.DataFrame, bright_snr: float | None = None) -> pd.DataFrame:
    """Per source kind (real galaxies first, bright ones apart, then all) and method: galaxies, free parameters,
    χ²/ν, MSE and SSIM against the data (and the SSIM as a fraction of its noise ceiling), MSE and SSIM against
    the noiseless truth where known, ellipticity errors, seconds per galaxy."""
    return metrics.by_kind(per_galaxy, _per_method, bright_snr)
