"""Super-resolution of lensed images on the test sets (studies 001 and 004): every method on the same test images,
against the NOISELESS high-resolution truth, on one fixed normalisation for all methods.

Normalisation (:func:`sr_metrics`): each image pair — a method's super-resolved image and the truth — is divided
by the peak of the noiseless high-resolution truth, so the truth spans [0, 1] (up to its own minimum ≥ 0) and
every method is measured on the same scale; no per-image min-max of the estimate (study 001 min-max normalised
each image on its own, and its "truth" carried its own noise). MSE on that scale, SSIM with data range 1
(:func:`sourcelens.metrics.ssim`, the project's one convention), PSNR = 10 log10(1 / MSE) dB. Methods that yield
a source (``lenssr_no_source``, ``pisr`` and the PISR ablation variants) are also compared with the true source
``source_high_res`` (flux per high-resolution source cell, no PSF) on the same rule (divided by the true source's
peak): ``source_mse``, ``source_ssim``.

Tables: per image (:func:`evaluate_super_resolution`: ``set``, ``lens``, ``noise``, ``index`` (row of the test
file), ``source_id``, ``kind``, ``snr`` (matched-filter S/N of the low-res image; NaN for noiseless images),
``method`` and :data:`SR_METRICS`); the summary (:func:`super_resolution_summary`): per set, lens model, noise
variant, source kind (real galaxies first, then ``all``; :func:`sourcelens.metrics.by_kind`) and method, the
mean, std and median of each metric, with study 001's own table (:data:`STUDY_001`, its mean ± std over 5000
Model_I test images) printed beside ours; the PISR ablation (:func:`pisr_ablation_summary`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import read_attrs, read_dataset
from ..metrics import by_kind, ssim, summarise
from ..names import PISR_ABLATION, SR_METHODS, SR_SOURCE_METHODS

log = logging.getLogger(__name__)

__all__ = ["SR_METRICS", "SOURCE_METHODS", "STUDY_001", "STUDY_001_LABELS", "SREvaluation", "sr_metrics",
           "image_snr", "evaluate_super_resolution", "super_resolution_summary", "pisr_ablation_summary",
           "study_001_rows", "method_order"]

SR_METRICS = ("mse", "ssim", "psnr", "source_mse", "source_ssim")
#: Methods (of :data:`sourcelens.names.SR_METHODS`) that yield a source beside the image.
SOURCE_METHODS = SR_SOURCE_METHODS
SUMMARY_STATS = ("mean", "std", "median")

#: Study 001's tables (LensSR on DeepLenseSim Model_I, 5000 test images; mean ± std): lens, its noise row
#: ("no noise": Poisson noise of the source counts, our ``poisson`` variant; "with noise": ``noisy``), variant,
#: (MSE, its std), (SSIM, std), (PSNR dB, std). Its own conventions: each image min-max normalised on its own,
#: a high-resolution "truth" with its own noise.
STUDY_001: tuple[tuple[str, str, str, tuple[float, float], tuple[float, float], tuple[float, float]], ...] = (
    ("SIS", "poisson", "lenssr_with_source", (0.00841, 0.0154), (0.692, 0.202), (25.118, 5.131)),
    ("SIS", "poisson", "lenssr_no_source", (0.0062, 0.0022), (0.640, 0.0561), (22.271, 1.239)),
    ("SIS", "noisy", "lenssr_with_source", (0.00802, 0.0146), (0.697, 0.195), (25.095, 5.010)),
    ("SIS", "noisy", "lenssr_no_source", (0.00399, 0.000892), (0.655, 0.0685), (24.0820, 0.816)),
    ("SIE", "poisson", "lenssr_with_source", (0.00447, 0.00138), (0.614, 0.0535), (23.661, 1.160)),
    ("SIE", "poisson", "lenssr_no_source", (0.00413, 0.000813), (0.639, 0.0606), (23.918, 1.239)),
    ("SIE", "noisy", "lenssr_with_source", (0.00950, 0.0119), (0.668, 0.159), (21.920, 3.222)),
    ("SIE", "noisy", "lenssr_no_source", (0.00413, 0.000813), (0.639, 0.0606), (23.918, 0.816)),
)
STUDY_001_LABELS = {"poisson": "no noise", "noisy": "with noise"}
STUDY_001_N = 5000
NOISE_ORDER = ("noiseless", "poisson", "noisy")
LENS_ORDER = ("SIS", "SIE")


def sr_metrics(truth: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """MSE, SSIM (data range 1) and PSNR of one ``estimate`` against the noiseless ``truth``, both divided by
    the truth's peak (module docstring)."""
    truth, estimate = np.asarray(truth, dtype=float), np.asarray(estimate, dtype=float)
    if truth.shape != estimate.shape:
        raise ValueError(f"truth and estimate differ in shape: {truth.shape} vs {estimate.shape}")
    peak = float(np.max(truth))
    if not peak > 0:
        raise ValueError("the truth has no positive pixel: no peak to normalise by")
    t, e = truth / peak, estimate / peak
    err = float(np.mean((e - t) ** 2))
    return {"mse": err, "ssim": ssim(t, e, data_range=1.0),
            "psnr": 10 * math.log10(1.0 / err) if err > 0 else math.inf}


def image_snr(noiseless: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Matched-filter S/N of each low-res image (N,): sqrt(Σ (noiseless / σ)²) over its pixels with σ > 0 (as the
    delensing tables); NaN for a noiseless image (σ = 0 everywhere)."""
    noiseless, sigma = np.asarray(noiseless, dtype=float), np.asarray(sigma, dtype=float)
    ratio = np.divide(noiseless, sigma, out=np.zeros_like(noiseless), where=sigma > 0)
    snr = np.sqrt(np.sum(ratio**2, axis=(-2, -1)))
    return np.where(np.any(sigma > 0, axis=(-2, -1)), snr, np.nan)


def method_order(methods: Sequence[str]) -> list[str]:
    """Methods in table order: :data:`sourcelens.names.SR_METHODS`, then the PISR ablation variants in their
    order, then others as they come."""
    known = list(SR_METHODS) + list(PISR_ABLATION)
    present = list(dict.fromkeys(methods))
    return [m for m in known if m in present] + [m for m in present if m not in known]


@dataclass
class SREvaluation:
    """Per-image metrics of every method (``per_image``) and, for the example figure, per (lens, noise) the
    examples' rows of the test file (``rows``), their low-res images, truth and each method's images (flux per
    pixel), the pixel scale and labels."""

    per_image: pd.DataFrame
    examples: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _lens_rows(attrs: Mapping[str, Any], lens_params: np.ndarray) -> list:
    """One :class:`~sourcelens.lensing.SRLens` per row of ``lens_params``, each distinct lens built once."""
    from ..lensing.superres import SRGeometry, SRLensCache

    return SRLensCache(SRGeometry.from_attrs(attrs)).for_rows(str(attrs["lens_model"]), lens_params)


def evaluate_super_resolution(tests: Mapping[tuple[str, str], str | Path],
                              models: Mapping[str, Mapping[tuple[str, str], str | Path | None]], *,
                              set_name: str = "", n_examples: int = 1, batch_size: int = 16,
                              chunk_size: int = 256, data_consistency: Sequence[str] = ()) -> SREvaluation:
    """Every method of ``models`` ({method: {(lens, noise): model file}}; ``bicubic`` needs none, and a PISR
    ablation variant is a PISR file) on the test file of each (lens, noise) of ``tests``, the same images for
    every method (:func:`sourcelens.models.sr.run_super_resolution`, the CLI's inference); per image
    :func:`sr_metrics` against the noiseless ``high_res`` and, for methods yielding a source, against
    ``source_high_res``. Images go through in chunks of ``chunk_size`` (the lens operators of a chunk are built
    once per distinct lens and dropped after it, so memory stays bounded on large test sets). Keeps
    ``n_examples`` images per (lens, noise) for figures (:func:`sourcelens.selection.select_examples`: real
    galaxies first). The images of the methods in ``data_consistency`` are moved onto their data to its noise
    level (:func:`sourcelens.lensing.data_consistency`) on sets whose low-res image is the block sum of the
    high-res one (:attr:`sourcelens.lensing.SRGeometry.low_res_is_binned`); on others (Model_I samples pixel
    centres) they are left as they are; column ``consistent`` says which rows were. Every method gets the test
    images' noise maps (PISR refines its sources on the data with them), except the PISR ablation variants:
    they measure what each loss term teaches the network, so they are scored as trained, without refinement
    (which fits every variant's source to the same data and would hide the differences)."""
    from ..lensing.superres import SRGeometry
    from ..models.sr import load_sr_model, run_super_resolution
    from ..selection import select_examples

    records, examples = [], {}
    for (lens, noise), path in tests.items():
        attrs = read_attrs(path)
        arrays, meta = read_dataset(path, names=("low_res", "low_res_noiseless", "noise_sigma", "high_res",
                                                  "source_high_res", "lens_params"))
        low_res, truth, source = arrays["low_res"], arrays["high_res"], arrays["source_high_res"]
        n = len(low_res)
        kinds = meta["kind"].astype(str).to_numpy() if "kind" in meta else np.full(n, "unknown")
        ids = meta["source_id"].astype(str).to_numpy()
        snr = image_snr(arrays["low_res_noiseless"], arrays["noise_sigma"])
        binned = SRGeometry.from_attrs(attrs).low_res_is_binned
        shown = select_examples(meta.assign(kind=kinds), n_examples)
        loaded = {}
        for method, files in models.items():
            if method == "bicubic":
                loaded[method] = (None, "bicubic")
                continue
            if files.get((lens, noise)) is None:
                raise ValueError(f"no {method} model for {lens} {noise} (set {set_name})")
            loaded[method] = load_sr_model(files[(lens, noise)])
        needs_lens = any(kind in SOURCE_METHODS for _, kind in loaded.values())
        rows = {method: [] for method in loaded}
        kept = {method: {} for method in loaded}
        for start in range(0, n, int(chunk_size)):
            part = np.arange(start, min(n, start + int(chunk_size)))
            lenses = _lens_rows(attrs, arrays["lens_params"][part]) if needs_lens else None
            for method, (model, kind) in loaded.items():
                consistent = binned and method in data_consistency
                ablation = method in PISR_ABLATION         # the network as trained: no refinement
                images, sources = run_super_resolution(kind, model, low_res[part],
                                                       lenses if kind in SOURCE_METHODS else None,
                                                       factor=int(attrs["factor"]), batch_size=batch_size,
                                                       noise_sigma=None if ablation else arrays["noise_sigma"][part],
                                                       data_consistency=consistent and not ablation)
                for k, i in enumerate(part):
                    record = {"set": set_name, "lens": lens, "noise": noise, "index": int(i), "source_id": ids[i],
                              "kind": kinds[i], "snr": float(snr[i]), "method": method, "consistent": consistent}
                    record.update(sr_metrics(truth[i], images[k]))
                    if sources is not None:
                        src = sr_metrics(source[i], sources[k])
                        record.update(source_mse=src["mse"], source_ssim=src["ssim"])
                    else:
                        record.update(source_mse=math.nan, source_ssim=math.nan)
                    rows[method].append(record)
                    if i in shown:
                        kept[method][int(i)] = images[k]
        for method, method_rows in rows.items():
            records.extend(method_rows)
            log.info("%s %s %s %s: median SSIM %.3f", set_name, lens, noise, method,
                     float(np.median([r["ssim"] for r in method_rows])) if method_rows else math.nan)
        examples[(lens, noise)] = {
            "rows": shown, "low_res": low_res[shown], "truth": truth[shown],
            "estimates": {m: np.stack([kept[m][int(i)] for i in shown]) if len(shown) else np.zeros((0,) +
                          truth.shape[1:]) for m in loaded},
            "pixel_scale": float(attrs["low_res_pixel_scale_arcsec"]), "factor": int(attrs["factor"]),
            "labels": [f"{lens} {noise}: {ids[i]}" + ("" if np.isnan(snr[i]) else f", S/N {snr[i]:.0f}")
                       for i in shown],
        }
    per_image = pd.DataFrame(records, columns=["set", "lens", "noise", "index", "source_id", "kind", "snr", "method",
                                               "consistent", *SR_METRICS])
    return SREvaluation(per_image, examples)


def _wide(per_image: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Per set, lens, noise, kind (real first, then all) and method (in ``methods`` order): n and the mean, std,
    median of each metric (columns ``<metric>_<stat>``)."""
    order = {m: i for i, m in enumerate(methods)}
    metrics = [m for m in SR_METRICS if m in per_image and per_image[m].notna().any()]

    def per_method(rows: pd.DataFrame) -> pd.DataFrame:
        return summarise(rows, metrics, by="method")

    parts = []
    sets = list(dict.fromkeys(per_image["set"]))
    for (set_name, lens, noise), rows in per_image[per_image["method"].isin(methods)].groupby(
            ["set", "lens", "noise"], sort=False):
        long = by_kind(rows, per_method)
        wide = long.pivot_table(index=["kind", "method"], columns="metric", values=list(SUMMARY_STATS),
                                sort=False, dropna=False)
        wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
        counts = long[long["metric"] == metrics[0]].set_index(["kind", "method"])["n"]
        wide = wide.reset_index()
        wide["n"] = [int(counts.loc[(k, m)]) for k, m in zip(wide["kind"], wide["method"])]
        if "consistent" in rows:
            wide["consistent"] = wide["method"].map(rows.groupby("method")["consistent"].any())
        kinds = list(dict.fromkeys(long["kind"]))
        wide = wide.sort_values(["kind", "method"], key=lambda s: s.map({k: i for i, k in enumerate(kinds)})
                                if s.name == "kind" else s.map(order), kind="stable")
        parts.append(wide.assign(set=set_name, lens=lens, noise=noise))
    columns = ["set", "lens", "noise", "kind", "method", "n", "consistent",
               *[f"{m}_{s}" for m in SR_METRICS for s in SUMMARY_STATS]]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    for c in columns:
        if c not in out:
            out[c] = math.nan
    out = out[columns]
    return _sort_blocks(out, sets)


def _sort_blocks(table: pd.DataFrame, sets: Sequence[str]) -> pd.DataFrame:
    """Blocks in set order (``sets``, then others), lens (SIS, SIE), noise order (noiseless, poisson, noisy), origin
    (ours, then the study's); rows within a block keep their order."""
    set_rank = {s: i for i, s in enumerate(sets)}
    keys = pd.DataFrame({
        "s": table["set"].map(lambda s: set_rank.get(s, len(set_rank))),
        "l": table["lens"].map(lambda v: LENS_ORDER.index(v) if v in LENS_ORDER else len(LENS_ORDER)),
        "n": table["noise"].map(lambda n: NOISE_ORDER.index(n) if n in NOISE_ORDER else len(NOISE_ORDER)),
        "o": (table["origin"] != "sourcelens").astype(int) if "origin" in table else 0,
        "r": np.arange(len(table)),
    })
    return table.iloc[keys.sort_values(["s", "l", "n", "o", "r"]).index].reset_index(drop=True)


def study_001_rows() -> pd.DataFrame:
    """Study 001's table (:data:`STUDY_001`) as summary rows of set ``model_i`` (its data), kind ``sersic``,
    origin ``study 001`` (its "no noise" rows under noise ``poisson``, :data:`STUDY_001_LABELS`)."""
    set_name, rows = "model_i", []
    for lens, noise, method, mse, ssim_, psnr in STUDY_001:
        row = {"set": set_name, "lens": lens, "noise": noise, "kind": "sersic", "method": method, "n": STUDY_001_N,
               "origin": "study 001"}
        for name, (mean, std) in (("mse", mse), ("ssim", ssim_), ("psnr", psnr)):
            row.update({f"{name}_mean": mean, f"{name}_std": std, f"{name}_median": math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def super_resolution_summary(per_image: pd.DataFrame, *, study: bool = True) -> pd.DataFrame:
    """The summary table (module docstring) of the methods of :data:`sourcelens.names.SR_METHODS` in
    ``per_image`` (ablation variants left out), column ``origin`` ``sourcelens``; with ``study`` study 001's rows
    beside ours (after our rows of the same lens and noise row)."""
    methods = [m for m in method_order(per_image["method"]) if m in SR_METHODS]
    table = _wide(per_image, methods).assign(origin="sourcelens")
    if study:
        sets = list(dict.fromkeys(per_image["set"]))
        table = _sort_blocks(pd.concat([table, study_001_rows()], ignore_index=True), sets)
    columns = ["set", "lens", "noise", "kind", "method", "origin", "n", "consistent",
               *[f"{m}_{s}" for m in SR_METRICS for s in SUMMARY_STATS]]
    return table[columns]


def pisr_ablation_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """The PISR ablation: per set, lens, noise and kind, each variant of
    :data:`sourcelens.names.PISR_ABLATION` (its loss terms in column ``loss``: χ² alone, + TV, + convergence
    mask, + magnification weighting) with the summary's statistics."""
    variants = [m for m in PISR_ABLATION if m in set(per_image["method"])]
    table = _wide(per_image, variants)
    table.insert(table.columns.get_loc("method") + 1, "loss", table["method"].map(
        {k: label for k, (label, _) in PISR_ABLATION.items()}))
    return table
