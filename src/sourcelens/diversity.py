"""How real and how diverse the source galaxies are: the size, profile and shape distributions of each kind
against the real galaxies', and how close each test galaxy is to a training one.

A galaxy model trained on galaxies that all look alike, or judged on test galaxies that nearly repeat training
ones, reports a score the real sky will not give. Per original stamp (:func:`measure_sources`):

``hlr_arcsec``      half-light radius on the sky (measured on the stamp, :func:`sourcelens.stamps.half_light_radius`)
``sersic_n``        Sérsic index of an elliptical Sérsic fit to the stamp with its noise
                    (:func:`sourcelens.fit.profiles.fit_sersic`)
``ellipticity``     |e| of the HSM adaptive moments (distortion convention), on the truth where known
``nn_correlation``  (test stamps) the largest Pearson correlation with any training stamp, augmented copies
                    included (what the model saw); the truth where known, so noise does not hide a near-copy

:func:`diversity_table` summarises them per kind and split, real galaxies first, with the Kolmogorov–Smirnov
distance of each kind's distributions from the real galaxies'.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import hsm_ellipticity
from .names import SOURCE_KINDS

log = logging.getLogger(__name__)

__all__ = ["DIVERSITY_QUANTITIES", "NEAR_COPY_CORRELATION", "measure_sources", "measure_splits",
           "nearest_neighbour_correlation",
           "diversity_table"]

#: The per-galaxy quantities compared between kinds.
DIVERSITY_QUANTITIES = ("hlr_arcsec", "sersic_n", "ellipticity")
#: A test galaxy correlating above this with a training stamp is a near-copy of it.
NEAR_COPY_CORRELATION = 0.99
REAL_KIND = "cosmos"


def _best_images(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The noiseless truth where known (finite), else the observed image, per stamp."""
    images = np.asarray(arrays["images"], dtype=np.float64)
    truth = arrays.get("images_noiseless")
    if truth is None:
        return images
    truth = np.asarray(truth, dtype=np.float64)
    known = np.isfinite(truth).all(axis=(1, 2))
    return np.where(known[:, None, None], truth, images)


def measure_sources(arrays: dict[str, np.ndarray], meta: pd.DataFrame, *, max_iter: int = 100) -> pd.DataFrame:
    """Size, Sérsic index and ellipticity of each stamp (``arrays``: ``images`` and, optionally,
    ``images_noiseless``; ``meta`` with ``source_id``, ``kind``, ``noise_sigma``, ``hlr_arcsec``). Stamps not
    linear in flux (``flux_linear`` False) get no Sérsic index."""
    from .fit.common import ImagingProblem
    from .fit.profiles import fit_sersic

    images = np.asarray(arrays["images"], dtype=np.float64)
    shapes = _best_images(arrays)
    out = pd.DataFrame({"source_id": meta["source_id"].astype(str).to_numpy(),
                        "kind": meta["kind"].astype(str).to_numpy(),
                        "hlr_arcsec": meta["hlr_arcsec"].to_numpy(dtype=float)})
    e = np.array([np.hypot(*hsm_ellipticity(s, f"{sid}")) for s, sid in zip(shapes, out["source_id"])])
    out["ellipticity"] = e
    out["sersic_n"] = np.nan
    linear = meta["flux_linear"].to_numpy(dtype=bool) if "flux_linear" in meta else np.ones(len(meta), bool)
    if linear.any():
        peak = np.abs(images[linear]).max(axis=(1, 2))
        sigma = np.nan_to_num(meta["noise_sigma"].to_numpy(dtype=float)[linear]) if "noise_sigma" in meta else 0.0
        sigma = np.maximum(sigma, 1e-3 * peak)                  # noiseless stamps: a floor of 1e-3 of the peak
        fit = fit_sersic(ImagingProblem.unlensed(images[linear], sigma), max_iter=max_iter)
        out.loc[linear, "sersic_n"] = fit.info["params"]["n_sersic"]
    return out


def nearest_neighbour_correlation(test_images: np.ndarray, train_images: np.ndarray, chunk: int = 4096
                                  ) -> np.ndarray:
    """For each test image (N, H, W), the largest Pearson correlation with any training image (M, H, W)."""

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        x = x - x.mean(1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)

    t = unit(test_images)
    best = np.full(len(t), -1.0)
    for start in range(0, len(train_images), chunk):
        best = np.maximum(best, (t @ unit(train_images[start:start + chunk]).T).max(1))
    return best


def diversity_table(measured: pd.DataFrame, quantiles: tuple[float, float, float] = (0.16, 0.5, 0.84)
                    ) -> pd.DataFrame:
    """Per kind (real galaxies first) and split (column ``split``): the count, the 16th/50th/84th percentiles of
    each of :data:`DIVERSITY_QUANTITIES`, their KS distance from the real galaxies' (all splits; NaN without real
    galaxies) and, where ``nn_correlation`` is measured, its median and the fraction of near-copies."""
    kinds = [k for k in SOURCE_KINDS if (measured["kind"] == k).any()]
    kinds += sorted(set(measured["kind"]) - set(kinds))
    real = measured[measured["kind"] == REAL_KIND]
    rows = []
    for kind in kinds:
        of_kind = measured[measured["kind"] == kind]
        for split in [s for s in ("train", "val", "test") if (of_kind["split"] == s).any()]:
            part = of_kind[of_kind["split"] == split]
            row = {"kind": kind, "split": split, "n": len(part)}
            for q in DIVERSITY_QUANTITIES:
                values = part[q].dropna().to_numpy(dtype=float)
                for name, p in zip(("p16", "median", "p84"), quantiles):
                    row[f"{q}_{name}"] = float(np.quantile(values, p)) if len(values) else np.nan
            for q in DIVERSITY_QUANTITIES:
                ours = of_kind[q].dropna()
                ref = real[q].dropna()
                row[f"ks_vs_real_{q}"] = (float(stats.ks_2samp(ours, ref).statistic)
                                          if len(ours) and len(ref) and kind != REAL_KIND else np.nan)
            nn = part["nn_correlation"].dropna() if "nn_correlation" in part else pd.Series(dtype=float)
            row["nn_correlation_median"] = float(nn.median()) if len(nn) else np.nan
            row["near_copy_fraction"] = float((nn > NEAR_COPY_CORRELATION).mean()) if len(nn) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def measure_splits(paths: dict[str, str], *, max_per_kind: int | None = None, max_iter: int = 100,
                   chunk: int = 4096) -> pd.DataFrame:
    """:func:`measure_sources` of the original stamps of each split's file (``{"train": path, "test": path}``), at
    most ``max_per_kind`` of each kind per split (evenly spaced in source-id order), with column ``split``, and the
    test galaxies' :func:`nearest_neighbour_correlation` with every training stamp (augmented copies included,
    read ``chunk`` rows at a time: a paper-scale training file need not fit in memory)."""
    from .io import read_dataset, read_meta
    from .selection import evenly_spaced_rows, original_rows

    parts, test_best = [], None
    for split, path in paths.items():
        meta = read_meta(path)
        rows = original_rows(meta)
        rows = rows[np.argsort(meta["source_id"].astype(str).to_numpy()[rows], kind="stable")]
        if max_per_kind is not None:
            kinds = meta["kind"].astype(str).to_numpy()[rows]
            rows = np.sort(np.concatenate([rows[kinds == k][evenly_spaced_rows(int((kinds == k).sum()), max_per_kind)]
                                           for k in pd.unique(kinds)]))
        arrays, sel = read_dataset(path, index=rows)
        measured = measure_sources(arrays, sel.reset_index(drop=True), max_iter=max_iter)
        measured["split"] = split
        log.info("%s: %d originals measured", split, len(measured))
        if split == "test" and "train" in paths:
            test_best = _best_images(arrays)
        parts.append(measured)
    out = pd.concat(parts, ignore_index=True)
    out["nn_correlation"] = np.nan
    if test_best is not None:
        n_train = len(read_meta(paths["train"]))
        best = np.full(len(test_best), -1.0)
        for start in range(0, n_train, chunk):
            train_arrays, _ = read_dataset(paths["train"], index=slice(start, min(start + chunk, n_train)))
            best = np.maximum(best, nearest_neighbour_correlation(test_best, _best_images(train_arrays)))
        out.loc[out["split"] == "test", "nn_correlation"] = best
    return out
