"""Each study's published numbers beside the ones this run computed, gathered from the run's own tables (one
place to read whether the studies were matched and beaten).

Published numbers (their write-ups): study 000's decoder fit of a 64×64 galaxy (~7 s, BFGS in JAX); study 001's
LensSR tables (:data:`sourcelens.evaluate.super_resolution.STUDY_001`, DeepLenseSim Model_I); study 002's CNN
test MSE per lens parameter (:data:`sourcelens.evaluate.cnn.STUDY_002_MSE`) and its U-Net's validation MSE,
SSIM and PSNR (:data:`STUDY_002_UNET`). Studies 003 and 004 published figures, no numbers.

Each row: ``study``, ``quantity``, ``published``, ``computed_real`` (on real COSMOS galaxies where the table has
them), ``computed_all`` (every source kind; for study 001 the Model_I set's Sérsic sources, as the study),
``better`` (which direction is better: ``lower``/``higher``), ``source`` (the table and the rows read) and ``note``
(how the protocols differ). A table the run did not make gives no rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..names import LENS_PARAMETERS
from .cnn import STUDY_002_MSE
from .super_resolution import STUDY_001, STUDY_001_LABELS

__all__ = ["STUDY_000_FIT_SECONDS", "STUDY_002_UNET", "published_vs_computed", "caption_table"]

#: Study 000: "fitting a 64x64 galaxy with BFGS took ~7 sec" (the VAE decoder as the galaxy model, JAX).
STUDY_000_FIT_SECONDS = 7.0
#: Study 002's U-Net on its own validation data: val_mse, SSIM (1 − its val_ssim_loss 0.0468), val PSNR [dB].
STUDY_002_UNET = {"mse": 0.0023, "ssim": 0.9532, "psnr": 30.6308}
REAL_KIND = "cosmos"


def _read(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def _value(table: pd.DataFrame, column: str, **where) -> float:
    rows = table
    for key, value in where.items():
        rows = rows[rows[key].astype(str) == str(value)]
    return float(rows[column].iloc[0]) if len(rows) else math.nan


def _study_000(path: Path) -> list[dict]:
    t = _read(path)
    return [{"study": "000", "quantity": "decoder fit of one galaxy [s]", "published": STUDY_000_FIT_SECONDS,
             "computed_real": _value(t, "seconds_per_galaxy_median", kind=REAL_KIND, method="decoder"),
             "computed_all": _value(t, "seconds_per_galaxy_median", kind="all", method="decoder"), "better": "lower",
             "source": f"{path.name}: method decoder, seconds_per_galaxy_median",
             "note": "published: one 64×64 galaxy, BFGS (JAX); here: L-BFGS on batches, per galaxy on one core, "
                     "the stamps' own size"}]


def _study_002_cnn(path: Path) -> list[dict]:
    t = _read(path).set_index("quantity")
    rows = []
    for name in LENS_PARAMETERS:
        real = math.nan
        if f"R² ({REAL_KIND})" in t.index and "prior std" in t.index:   # MSE = (1 − R²) × prior variance
            real = (1.0 - float(t.loc[f"R² ({REAL_KIND})", name])) * float(t.loc["prior std", name]) ** 2
        rows.append({"study": "002", "quantity": f"CNN test MSE of {name}", "published": STUDY_002_MSE[name],
                     "computed_real": real, "computed_all": float(t.loc["MSE (sourcelens)", name]), "better": "lower",
                     "source": f"{path.name}: rows MSE (sourcelens), R² ({REAL_KIND}) and prior std",
                     "note": "the same parameters and units; MSE depends on each study's lens priors (prior std "
                             "in the table)"})
    return rows


def _study_002_unet(path: Path) -> list[dict]:
    t = _read(path)
    return [{"study": "002", "quantity": f"U-Net source {metric.upper()}", "published": value,
             "computed_real": _value(t, "mean", kind=REAL_KIND, method="U-Net", metric=metric),
             "computed_all": _value(t, "mean", kind="all", method="U-Net", metric=metric),
             "better": "lower" if metric == "mse" else "higher",
             "source": f"{path.name}: method U-Net, metric {metric}, mean",
             "note": "published: validation set of its own simulations; here: held-out test pairs, sources split "
                     "by galaxy, peak-normalised as the study"}
            for metric, value in STUDY_002_UNET.items()]


def _study_001(path: Path) -> list[dict]:
    t = _read(path)
    ours = t[t["origin"] == "sourcelens"] if "origin" in t else t
    rows = []
    for lens, noise, method, *published in STUDY_001:
        for metric, (value, _std) in zip(("mse", "ssim", "psnr"), published):
            rows.append({
                "study": "001", "quantity": f"LensSR {method}, {lens}, {STUDY_001_LABELS[noise]}: {metric.upper()}",
                "published": value,
                "computed_real": _value(ours, f"{metric}_mean", set="real", lens=lens, noise=noise, method=method,
                                        kind=REAL_KIND),
                "computed_all": _value(ours, f"{metric}_mean", set="model_i", lens=lens, noise=noise, method=method,
                                       kind="all"),
                "better": "lower" if metric == "mse" else "higher",
                "source": f"{path.name}: set model_i (all) and real ({REAL_KIND}), lens {lens}, noise {noise}, "
                          f"method {method}, {metric}_mean",
                "note": "published: each image min-max normalised, a noisy high-resolution truth; here: the "
                        "noiseless truth, one peak normalisation (NaN: this noise variant or set not run)"})
    return rows


_READERS = {"fit_galaxies": _study_000, "super_resolution": _study_001, "cnn_lens_params": _study_002_cnn,
            "delensing": _study_002_unet}


def published_vs_computed(tables: Mapping[str, str | Path]) -> pd.DataFrame:
    """The rows (module docstring) from the run's tables, given by name: ``fit_galaxies``, ``super_resolution``,
    ``cnn_lens_params``, ``delensing`` (each optional; unknown names are refused)."""
    unknown = set(tables) - set(_READERS)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; known: {', '.join(_READERS)}")
    rows = []
    for name, reader in _READERS.items():
        if name in tables:
            rows += reader(Path(tables[name]))
    out = pd.DataFrame(rows, columns=["study", "quantity", "published", "computed_real", "computed_all", "better",
                                      "source", "note"])
    return out.sort_values("study", kind="stable").reset_index(drop=True)


def _number(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4g}"


def caption_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`published_vs_computed` (e.g. those of one of the run's tables) as the small text table a
    report caption shows: quantity, published, this run on real galaxies and on all kinds (4 significant digits,
    – where not computed), which direction is better. Rows this run did not compute are left out; none computed
    gives one row saying so."""
    mine = rows[rows[["computed_real", "computed_all"]].notna().any(axis=1)]
    columns = ["quantity", "published", "this run, real galaxies", "this run, all kinds", "better"]
    if mine.empty:
        return pd.DataFrame([["not computed by this run's config", "", "", "", ""]], columns=columns)
    return pd.DataFrame({"quantity": mine["quantity"].to_numpy(),
                         "published": [_number(v) for v in mine["published"]],
                         "this run, real galaxies": [_number(v) for v in mine["computed_real"]],
                         "this run, all kinds": [_number(v) for v in mine["computed_all"]],
                         "better": mine["better"].to_numpy()}, columns=columns)
