"""Comparing galaxy-fit methods: per-galaxy metrics of every method's model and a per-method summary."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .. import metrics
from .common import FitResult


def fit_metrics(truth: np.ndarray, data: np.ndarray, sigma: np.ndarray, meta: pd.DataFrame,
                fits: Mapping[str, FitResult]) -> pd.DataFrame:
    """One row per galaxy and method: MSE, SSIM, … of the model against the noiseless ``truth`` and χ²/ν
    against the noisy ``data`` (ν = pixels − free parameters), plus the seconds it took."""
    rows = []
    kinds = meta["kind"].astype(str).to_numpy() if "kind" in meta else np.full(len(meta), "unknown")
    for method, res in fits.items():
        for i in range(len(data)):
            m = metrics.image_metrics(truth[i], res.model[i], sigma=sigma[i], n_params=res.n_params, data=data[i],
                                      label=f"{meta.source_id[i]} {method}")
            rows.append({"source_id": meta.source_id[i], "kind": kinds[i], "method": method,
                         "n_params": res.n_params, "noise_sigma": sigma[i], **m, "seconds": res.seconds[i]})
    return pd.DataFrame(rows)


def fit_summary(per_galaxy: pd.DataFrame) -> pd.DataFrame:
    """Per method: galaxies, free parameters, χ²/ν, MSE, SSIM (median and mean), ellipticity error, seconds."""
    return per_galaxy.groupby("method", sort=False).agg(
        n_galaxies=("source_id", "size"), n_params=("n_params", "median"),
        chi2_nu_median=("chi2_nu", "median"), chi2_nu_mean=("chi2_nu", "mean"),
        mse_median=("mse", "median"), mse_mean=("mse", "mean"),
        ssim_median=("ssim", "median"), ssim_mean=("ssim", "mean"),
        ellipticity_error_median=("ellipticity_error", "median"),
        seconds_per_galaxy_mean=("seconds", "mean"), seconds_per_galaxy_median=("seconds", "median"),
    ).reset_index()
