"""Evaluation of the lens-parameter CNN (study 002) on test pairs: per-parameter errors in the study's units
and order, R² against the prior's variance, and the calibration of the uncertainties.

``R²`` = 1 − MSE / prior variance (the training set's variance of the parameter: an MSE means nothing without the
prior's width; predicting the prior mean scores 0). ``coverage_68`` and ``coverage_95``: the fractions of test
pairs whose true value lies within the predicted ±1σ and ±1.96σ (0.683 and 0.95 when calibrated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..io import read_dataset
from ..names import LENS_PARAMETERS, SOURCE_KINDS

__all__ = ["STUDY_002_MSE", "optimal_snr", "cnn_predictions", "cnn_summary", "calibration_curve"]

#: The study's test MSE per lens parameter (its table, same units and order).
STUDY_002_MSE: dict[str, float] = {
    "theta_E": 0.0699, "gamma": 0.116535, "e1": 0.029133, "e2": 0.02902, "center_x": 0.106336,
    "center_y": 0.110213, "gamma1": 0.064819, "gamma2": 0.056223,
}


def optimal_snr(noiseless: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Matched-filter signal-to-noise of each image (N,): sqrt(Σ (noiseless / σ)²) over its pixels."""
    noiseless, sigma = np.asarray(noiseless, dtype=float), np.asarray(sigma, dtype=float)
    return np.sqrt(np.sum((noiseless / sigma) ** 2, axis=(-2, -1)))


def cnn_predictions(model, pairs_path: str | Path, batch_size: int = 256) -> pd.DataFrame:
    """One row per test pair: ``source_id``, ``kind``, ``snr`` (:func:`optimal_snr`), and per parameter
    ``true_<p>``, ``pred_<p>``, ``sigma_<p>`` (1σ, calibrated) and ``z_<p>`` = (pred − true) / σ."""
    from ..models.cnn import predict_lens_params

    arrays, meta = read_dataset(pairs_path, names=("lensed", "lensed_noiseless", "noise_sigma", "lens_params"))
    mean, sigma = predict_lens_params(model, arrays["lensed"], batch_size)
    true = np.asarray(arrays["lens_params"], dtype=float)
    out = pd.DataFrame({"source_id": meta["source_id"].astype(str).to_numpy(),
                        "kind": meta["kind"].astype(str).to_numpy() if "kind" in meta else "unknown",
                        "snr": optimal_snr(arrays["lensed_noiseless"], arrays["noise_sigma"])})
    for j, name in enumerate(LENS_PARAMETERS):
        out[f"true_{name}"] = true[:, j]
        out[f"pred_{name}"] = mean[:, j]
        out[f"sigma_{name}"] = sigma[:, j]
        out[f"z_{name}"] = (mean[:, j] - true[:, j]) / sigma[:, j]
    return out


def _kinds(pred: pd.DataFrame) -> list[str]:
    present = list(pd.unique(pred["kind"].astype(str)))
    return [k for k in SOURCE_KINDS if k in present] + sorted(set(present) - set(SOURCE_KINDS))


def cnn_summary(pred: pd.DataFrame, prior_std: Sequence[float], fixed: Sequence[str] = ()) -> pd.DataFrame:
    """The table of the CNN: one row per quantity, one column per lens parameter (the study's order).

    Rows: ``MSE (sourcelens)``, ``MSE (study 002)``, ``R²`` (then ``R² (<kind>)`` for each source kind, real
    galaxies first), ``68% coverage``, ``95% coverage``, ``median σ``, ``prior std``. Parameters the training set
    held fixed (``fixed``) get NaN R² and coverage: there is nothing to predict."""
    prior_var = np.asarray(prior_std, dtype=float) ** 2
    rows: dict[str, dict[str, float]] = {k: {} for k in ("MSE (sourcelens)", "MSE (study 002)", "R²")}
    kinds = _kinds(pred)
    for kind in kinds:
        rows[f"R² ({kind})"] = {}
    for key in ("68% coverage", "95% coverage", "median σ", "prior std"):
        rows[key] = {}
    for j, name in enumerate(LENS_PARAMETERS):
        err2 = (pred[f"pred_{name}"] - pred[f"true_{name}"]) ** 2
        is_fixed = name in fixed
        z = pred[f"z_{name}"].abs()
        rows["MSE (sourcelens)"][name] = float(err2.mean())
        rows["MSE (study 002)"][name] = STUDY_002_MSE[name]
        rows["R²"][name] = np.nan if is_fixed else float(1 - err2.mean() / prior_var[j])
        for kind in kinds:
            sel = pred["kind"].astype(str) == kind
            rows[f"R² ({kind})"][name] = np.nan if is_fixed else float(1 - err2[sel].mean() / prior_var[j])
        rows["68% coverage"][name] = np.nan if is_fixed else float((z <= 1.0).mean())
        rows["95% coverage"][name] = np.nan if is_fixed else float((z <= 1.959964).mean())
        rows["median σ"][name] = float(pred[f"sigma_{name}"].median())
        rows["prior std"][name] = float(np.sqrt(prior_var[j]))
    table = pd.DataFrame.from_dict(rows, orient="index")[list(LENS_PARAMETERS)]
    table.index.name = "quantity"
    return table.reset_index()


def calibration_curve(pred: pd.DataFrame, levels: Sequence[float] | None = None) -> pd.DataFrame:
    """Observed fraction of true values inside the central predicted interval of each probability ``level``
    (Gaussian: |z| ≤ Φ⁻¹((1 + level) / 2)), per parameter: columns ``level`` and one per parameter."""
    levels = np.linspace(0.05, 0.95, 19) if levels is None else np.asarray(levels, dtype=float)
    half = stats.norm.ppf((1 + levels) / 2)
    out: dict[str, Any] = {"level": levels}
    for name in LENS_PARAMETERS:
        z = pred[f"z_{name}"].abs().to_numpy()
        out[name] = [(z <= h).mean() for h in half]
    return pd.DataFrame(out)
