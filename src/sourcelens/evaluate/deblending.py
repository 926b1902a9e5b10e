"""Evaluation of the deblenders of study 003 on the test blends: shapes, magnitudes and shear bias.

Per band set (``lsst``, ``lsst_euclid``) and method, on the same test scenes:

==================  ==========================================================================================
``vae``             the VAE's reconstruction of the isolated galaxy (the isolated test sample's noisy galaxy in)
``deblender``       the deblender's central galaxy from the noisy blend (blended test sample)
``sep``             the classical baseline on the same blends: sep detects on the noise-weighted sum of the bands
                    (Σ_b x_b/σ_b² / √Σ_b σ_b⁻², unit noise), deblends with its multi-threshold segmentation and
                    keeps, in every band, the central segment grown by ``dilate`` pixels into the background
                    (``segment``, default: an isophotal aperture, so the stamp's noise does not swamp the
                    photometry) or the whole blend with the neighbours' segments zeroed (``mask_neighbours``); a
                    scene where nothing is detected within
                    ``max_centre_distance`` pixels of the centre is a failure, counted
``blend``           the noisy blend itself (no deblending): what deblending has to beat
==================  ==========================================================================================

against the truth, the noiseless ``isolated`` central galaxy of the same scene, measured the same way:

- shapes in ``shape_band`` (r) with ``galsim.hsm.EstimateShear`` and the band's PSF (a Gaussian of the file's
  ``psf_fwhm_arcsec`` for the band, or the file's ``psf`` images where present): KSB (the study's; the shear
  estimate ``corrected_g1, g2``) and REGAUSS (GalSim's default; the distortion ``corrected_e1, e2``).
  Δe = e_method − e_truth per component; a failed HSM measurement is counted per method and estimator
  (``n_failed``), not silently dropped. Without a PSF in the file the adaptive-moment shapes are used (table
  column ``psf_corrected`` False).
- magnitudes in every band from the image's total flux (counts) and the band's ``zero_point``
  (m = zp − 2.5 log10 Σ counts); Δmag = m_method − m_truth (NaN where the flux is not positive).
- shear bias (m, c) per component from e_out = (1 + m) e_true + c with bootstrap errors
  (:func:`sourcelens.metrics.shear_bias`), and the medians of |Δe1|, |Δe2|, |Δmag| with bootstrap errors,
  by source kind, real galaxies first (:func:`sourcelens.metrics.by_kind`), beside the study's headline numbers.
- Δe1, Δe2, Δmag in bins of S/N, true magnitude and blendedness (median and scatter,
  :func:`sourcelens.metrics.binned_statistics`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import read_attrs, read_dataset
from ..metrics import binned_statistics, bootstrap_error, by_kind, shear_bias

log = logging.getLogger("sourcelens.evaluate")

METHODS = ("vae", "deblender", "sep", "blend")
METHOD_LABELS = {"vae": "VAE (isolated)", "deblender": "VAE deblender", "sep": "sep (segmentation)",
                 "blend": "no deblending"}
ESTIMATORS = ("ksb", "regauss")
BIN_VARIABLES = {"snr": "snr_bins", "mag_true": "mag_bins", "blendedness": "blendedness_bins"}
META_COLUMNS = ("blend_id", "source_id", "kind", "n_galaxies", "blendedness", "neighbour_distance_arcsec",
                "neighbour_mag_r")
#: The study's headline numbers (Arcelin et al. 2020): |Δe| and |Δmag| medians, and m = slope − 1 where given.
STUDY = {
    ("vae", "lsst"): {"study_m1": 0.93 - 1, "study_m2": 0.92 - 1, "study_note": "VAE slopes 0.93/0.92 (LSST)"},
    ("vae", "lsst_euclid"): {"study_m1": 1.007 - 1, "study_m2": 1.001 - 1,
                             "study_note": "VAE slopes 1.007/1.001 (LSST + Euclid)"},
    ("deblender", "lsst_euclid"): {"study_m1": 0.016, "study_m2": 0.016,
                                   "study_note": "m = 1.6 % on blends (LSST + Euclid)"},
}
STUDY_MEDIAN_ABS_DE, STUDY_MEDIAN_ABS_DMAG = 0.01, 0.05

__all__ = ["METHODS", "METHOD_LABELS", "ESTIMATORS", "STUDY", "DeblendingResult", "band_attribute",
           "psf_image", "measure_shapes", "magnitudes", "sep_central", "evaluate_band_set", "evaluate_deblending",
           "summary_table", "binned_residuals"]


@dataclass
class DeblendingResult:
    """``per_galaxy``: one row per band set, method and scene; ``table``: the summary (band set × method ×
    estimator × kind); ``binned``: residuals in bins; ``examples``: per band set, shape-band images of a few
    blends (``blend``, ``truth``, ``deblender``, ``sep``), their ``labels`` and ``pixel_scale``."""

    per_galaxy: pd.DataFrame
    table: pd.DataFrame
    binned: pd.DataFrame
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# what the blend files say


def band_attribute(attrs: Mapping[str, Any], name: str, bands: Sequence[str], required: bool = True
                   ) -> list[float] | None:
    """A per-band attribute of a blend file in band order: ``attrs[name]`` as a list (band order) or a mapping
    band → value, or ``attrs[f"{name}_{band}"]`` per band; also tried with an ``s`` (``zero_points``). None (or
    ValueError when ``required``) when absent."""
    for key in (name, name + "s"):
        if key in attrs:
            value = attrs[key]
            if isinstance(value, Mapping):
                return [float(value[b]) for b in bands]
            values = [float(v) for v in np.atleast_1d(value)]
            if len(values) == len(bands):
                return values
            if len(values) == 1:
                return values * len(bands)
    if all(f"{name}_{b}" in attrs for b in bands):
        return [float(attrs[f"{name}_{b}"]) for b in bands]
    if required:
        raise ValueError(f"blend file attributes hold no per-band '{name}' for bands {list(bands)} "
                         f"(have {sorted(attrs)})")
    return None


def psf_image(fwhm_arcsec: float, pixel_scale: float, size: int = 33, profile: str = "gaussian",
              moffat_beta: float | None = None, pixel_arcsec: float | None = None):
    """The effective PSF of a band on the stamps' grid (a galsim.Image of ``size``² pixels of ``pixel_scale``): the
    ``profile`` (gaussian, moffat with ``moffat_beta``, kolmogorov) of ``fwhm_arcsec`` convolved with a box pixel of
    ``pixel_arcsec`` (default the grid pixel: the blend files' effective pixel is the larger of the native and the
    grid pixel) and sampled at the grid's pixel centres, as the blend images are."""
    import galsim

    fwhm = float(fwhm_arcsec)
    if profile == "moffat":
        psf = galsim.Moffat(beta=float(moffat_beta or 3.5), fwhm=fwhm)
    elif profile == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=fwhm)
    elif profile == "gaussian":
        psf = galsim.Gaussian(fwhm=fwhm)
    else:
        raise ValueError(f"unknown PSF profile {profile!r} (gaussian, moffat, kolmogorov)")
    box = max(float(pixel_arcsec or pixel_scale), float(pixel_scale))
    return galsim.Convolve(psf, galsim.Pixel(box)).drawImage(nx=size, ny=size, scale=float(pixel_scale),
                                                              method="no_pixel")


def measure_shapes(images: np.ndarray, psf=None, pixel_scale: float = 1.0) -> pd.DataFrame:
    """Shapes of images (N, H, W): columns ``e1_ksb, e2_ksb`` (KSB shear estimate), ``e1_regauss, e2_regauss``
    (REGAUSS distortion), NaN where HSM fails (or the image is not finite). ``psf`` (a galsim.Image or an array):
    the PSF the shapes are corrected for; None: the adaptive-moment observed shape (uncorrected) in both."""
    import galsim

    images = np.asarray(images, dtype=np.float64)
    if psf is not None and not isinstance(psf, galsim.Image):
        psf = galsim.Image(np.ascontiguousarray(np.asarray(psf, dtype=np.float64)), scale=pixel_scale)
    out = np.full((len(images), 4), np.nan)
    for i, im in enumerate(images):
        if not np.all(np.isfinite(im)):
            continue
        gal = galsim.Image(np.ascontiguousarray(im), scale=pixel_scale)
        if psf is None:
            try:
                shape = galsim.hsm.FindAdaptiveMom(gal, strict=True).observed_shape
                out[i] = shape.e1, shape.e2, shape.e1, shape.e2
            except (galsim.hsm.GalSimHSMError, RuntimeError, ValueError):
                pass
            continue
        for j, est in enumerate(("KSB", "REGAUSS")):
            try:
                res = galsim.hsm.EstimateShear(gal, psf, shear_est=est, strict=False)
            except (galsim.hsm.GalSimHSMError, RuntimeError, ValueError):
                continue
            if res.error_message or res.correction_status != 0:
                continue
            e = (res.corrected_g1, res.corrected_g2) if est == "KSB" else (res.corrected_e1, res.corrected_e2)
            if np.all(np.isfinite(e)) and abs(e[0]) < 10 and abs(e[1]) < 10:
                out[i, 2 * j:2 * j + 2] = e
    return pd.DataFrame(out, columns=["e1_ksb", "e2_ksb", "e1_regauss", "e2_regauss"])


def magnitudes(images: np.ndarray, zero_points: Sequence[float], exposure_times: Sequence[float] | None = None
               ) -> np.ndarray:
    """AB magnitudes (N, bands) of images (N, bands, H, W) in electrons: zp − 2.5 log10(Σ electrons / t), with the
    blend files' zero point (AB magnitude of 1 e⁻/s) and exposure time t per band (default 1: zp of one count);
    NaN where the flux is not positive or the image not finite."""
    flux = np.asarray(images, dtype=np.float64).sum(axis=(-2, -1))
    t = np.ones(flux.shape[-1]) if exposure_times is None else np.asarray(exposure_times, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.asarray(zero_points, dtype=np.float64)[None] - 2.5 * np.log10(flux / t[None])
    mag[~(flux > 0)] = np.nan
    return mag


# --------------------------------------------------------------------------------------
# the classical baseline


def sep_central(blend: np.ndarray, sigma: Sequence[float], cfg: Mapping[str, Any] | None = None
                ) -> tuple[np.ndarray, bool]:
    """The central object of one noisy blend (bands, H, W) by sep (see the module docstring), and whether it was
    detected (else an all-NaN image). ``sigma``: the noise per band; ``cfg``: the ``deblend.evaluate.sep`` block."""
    import sep

    cfg = {"mode": "segment", "dilate": 2, "thresh": 1.5, "minarea": 5, "deblend_nthresh": 32, "deblend_cont": 0.005,
           "max_centre_distance": 4.0, **dict(cfg or {})}
    x = np.asarray(blend, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    s = np.where(np.isfinite(s) & (s > 0), s, np.nan)
    w = np.where(np.isfinite(s), 1.0 / s**2, 0.0)
    if not w.any():
        w = np.ones_like(w)
        s = np.ones_like(w)
    detection = np.ascontiguousarray(np.tensordot(w, x, axes=1) / math.sqrt(float(np.sum(w**2 * np.nan_to_num(s)**2))))
    failed = np.full_like(x, np.nan)
    try:
        objects, seg = sep.extract(detection, float(cfg["thresh"]), err=1.0, minarea=int(cfg["minarea"]),
                                   deblend_nthresh=int(cfg["deblend_nthresh"]),
                                   deblend_cont=float(cfg["deblend_cont"]), segmentation_map=True)
    except Exception as err:   # sep raises plain Exceptions (pixel stack, deblending overflow)
        log.warning("sep failed on a blend: %s", err)
        return failed, False
    if len(objects) == 0:
        return failed, False
    centre = (np.asarray(x.shape[-2:], dtype=float) - 1) / 2
    dist = np.hypot(objects["x"] - centre[1], objects["y"] - centre[0])
    k = int(np.argmin(dist))
    if dist[k] > float(cfg["max_centre_distance"]):
        return failed, False
    if cfg["mode"] == "segment":
        from scipy.ndimage import binary_dilation

        own = seg == k + 1
        grown = binary_dilation(own, iterations=int(cfg.get("dilate", 0))) if int(cfg.get("dilate", 0)) else own
        keep = own | (grown & (seg == 0))    # the segment grown into the background, never into a neighbour
    else:
        keep = (seg == 0) | (seg == k + 1)
    return (x * keep[None]).astype(np.float32), True


# --------------------------------------------------------------------------------------
# one band set


def _read_sample(path: str | Path, max_galaxies: int | None):
    index = None
    if max_galaxies is not None:
        from ..io import read_meta

        n = len(read_meta(path))
        index = slice(0, min(int(max_galaxies), n))
    arrays, meta = read_dataset(path, names=("blend", "isolated", "noise_sigma"), index=index)
    return ({k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, meta.reset_index(drop=True),
            read_attrs(path))


def _psf_for(path: str | Path, attrs: Mapping[str, Any], bands: Sequence[str], band: str, pixel_scale: float):
    from ..io import reading_h5

    k = list(bands).index(band)
    with reading_h5(path) as fh:
        psf = np.asarray(fh["psf"][()], dtype=np.float64) if "psf" in fh else None
    if psf is not None and psf.ndim == 3 and psf.shape[0] == len(bands):
        return psf[k]
    native = attrs.get("native_pixel_scale_arcsec")
    native = native.get(band) if isinstance(native, Mapping) else None
    described = attrs.get("psf")
    if isinstance(described, Mapping) and isinstance(described.get(band), Mapping):
        d = described[band]
        return psf_image(d["fwhm_arcsec"], pixel_scale, profile=str(d.get("profile", "gaussian")),
                         moffat_beta=d.get("beta"), pixel_arcsec=native)
    fwhm = band_attribute(attrs, "psf_fwhm_arcsec", bands, required=False)
    if fwhm is None:
        log.warning("%s: no 'psf' array nor 'psf' / 'psf_fwhm_arcsec' attribute: shapes are adaptive moments, not "
                    "corrected for the PSF", path)
        return None
    return psf_image(fwhm[k], pixel_scale, pixel_arcsec=native)


def _rows(band_set: str, method: str, sample: str, meta: pd.DataFrame, out: np.ndarray, truth: np.ndarray,
          truth_shapes: pd.DataFrame, truth_mags: np.ndarray, bands: Sequence[str], zp: Sequence[float],
          exposure: Sequence[float] | None, shape_band: str, psf, pixel_scale: float,
          detected: np.ndarray | None = None) -> pd.DataFrame:
    k = list(bands).index(shape_band)
    shapes = measure_shapes(out[:, k], psf, pixel_scale)
    mags = magnitudes(out, zp, exposure)
    df = meta[[c for c in META_COLUMNS if c in meta.columns]].reset_index(drop=True).copy()
    df.insert(0, "sample", sample)
    df.insert(0, "method", method)
    df.insert(0, "band_set", band_set)
    df["kind"] = meta["kind"].astype(str).to_numpy() if "kind" in meta else "all"
    df["snr"] = meta[f"snr_{shape_band}"].to_numpy(dtype=float) if f"snr_{shape_band}" in meta else np.nan
    df["mag_true"] = meta[f"mag_{shape_band}"].to_numpy(dtype=float) if f"mag_{shape_band}" in meta else np.nan
    if "blendedness" not in df:
        df["blendedness"] = np.nan
    df["detected"] = True if detected is None else np.asarray(detected, dtype=bool)
    for est in ESTIMATORS:
        for c in ("1", "2"):
            df[f"e{c}_true_{est}"] = truth_shapes[f"e{c}_{est}"].to_numpy()
            df[f"e{c}_{est}"] = shapes[f"e{c}_{est}"].to_numpy()
            df[f"de{c}_{est}"] = df[f"e{c}_{est}"] - df[f"e{c}_true_{est}"]
        df[f"failed_{est}"] = ~np.isfinite(shapes[f"e1_{est}"].to_numpy())
        df[f"truth_failed_{est}"] = ~np.isfinite(truth_shapes[f"e1_{est}"].to_numpy())
    for j, b in enumerate(bands):
        df[f"mag_{b}_truth"] = truth_mags[:, j]
        df[f"mag_{b}"] = mags[:, j]
        df[f"dmag_{b}"] = mags[:, j] - truth_mags[:, j]
    df["psf_corrected"] = psf is not None
    return df


def evaluate_band_set(band_set: str, isolated_path: str | Path, blended_path: str | Path, vae, deblender,
                      cfg: Mapping[str, Any] | None = None, n_examples: int = 4) -> tuple[pd.DataFrame, dict]:
    """Per-scene rows of every method on one band set (see the module docstring) and its examples. ``vae`` and
    ``deblender``: the trained models (:mod:`sourcelens.models.deblender`), or None to skip that method; ``cfg``:
    the ``deblend.evaluate`` block (defaults filled)."""
    from ..models.deblender import deblend_images, reconstruct_bands
    from ..train.deblend import deblend_settings

    cfg = deblend_settings({"evaluate": dict(cfg or {})})["evaluate"]
    shape_band = cfg["shape_band"]
    parts, examples = [], {}
    for sample, path in (("isolated", isolated_path), ("blended", blended_path)):
        arrays, meta, attrs = _read_sample(path, cfg["max_galaxies"])
        bands = [str(b) for b in attrs["bands"]]
        if shape_band not in bands:
            raise ValueError(f"{path}: the shape band {shape_band!r} is not among its bands {bands}")
        zp = band_attribute(attrs, "zero_point", bands)
        exposure = band_attribute(attrs, "exposure_time_s", bands, required=False)
        pixel_scale = float(attrs.get("pixel_scale_arcsec", 1.0))
        psf = _psf_for(path, attrs, bands, shape_band, pixel_scale)
        truth = arrays["isolated"]
        k = bands.index(shape_band)
        truth_shapes = measure_shapes(truth[:, k], psf, pixel_scale)
        truth_mags = magnitudes(truth, zp, exposure)
        common = dict(meta=meta, truth=truth, truth_shapes=truth_shapes, truth_mags=truth_mags, bands=bands, zp=zp,
                      exposure=exposure,
                      shape_band=shape_band, psf=psf, pixel_scale=pixel_scale)
        if sample == "isolated":
            if vae is not None:
                _check_bands(vae, bands, path)
                parts.append(_rows(band_set, "vae", sample, out=reconstruct_bands(vae, arrays["blend"]), **common))
            continue
        outputs: dict[str, np.ndarray] = {}
        if deblender is not None:
            _check_bands(deblender, bands, path)
            outputs["deblender"] = deblend_images(deblender, arrays["blend"])
        sep_out = [sep_central(b, s, cfg["sep"]) for b, s in zip(arrays["blend"], arrays["noise_sigma"])]
        outputs["sep"] = np.stack([o for o, _ in sep_out]) if sep_out else np.zeros_like(truth)
        detected = np.array([d for _, d in sep_out], dtype=bool)
        outputs["blend"] = arrays["blend"]
        for method, out in outputs.items():
            parts.append(_rows(band_set, method, sample, out=out, detected=detected if method == "sep" else None,
                               **common))
        order = np.argsort(np.nan_to_num(meta["blendedness"].to_numpy(dtype=float), nan=0.0)
                           if "blendedness" in meta else np.arange(len(meta)), kind="stable")
        chosen = order[np.unique(np.linspace(0, len(order) - 1, min(n_examples, len(order))).round().astype(int))]
        examples = {"blend": arrays["blend"][chosen, k], "truth": truth[chosen, k], "pixel_scale": pixel_scale,
                    "outputs": {m: outputs[m][chosen, k] for m in ("deblender", "sep") if m in outputs},
                    "labels": [_label(meta, i, shape_band) for i in chosen], "band": shape_band}
    per = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return per, examples


def _label(meta: pd.DataFrame, i: int, band: str) -> str:
    parts = [str(meta["blend_id"].iloc[i]) if "blend_id" in meta else f"#{i}"]
    if "n_galaxies" in meta:
        parts.append(f"{int(meta['n_galaxies'].iloc[i])} gal.")
    if f"snr_{band}" in meta:
        parts.append(f"S/N {float(meta[f'snr_{band}'].iloc[i]):.0f}")
    if "blendedness" in meta:
        parts.append(f"b {float(meta['blendedness'].iloc[i]):.2f}")
    return ", ".join(parts)


def _check_bands(model, bands: Sequence[str], path) -> None:
    trained = list(getattr(model, "extra", {}).get("normalisation", {}).get("bands", []))
    if trained and trained != list(bands):
        raise ValueError(f"{path} has bands {list(bands)}; the model was trained on {trained}")


# --------------------------------------------------------------------------------------
# summaries


def summary_table(per: pd.DataFrame, shape_band: str = "r", n_bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per band set, method, shape estimator and kind group (real galaxies first, then all): counts
    (``n``, ``n_failed`` HSM failures of the method, ``n_truth_failed``, ``n_undetected`` for sep), medians of
    |Δe1|, |Δe2|, |Δmag| in the shape band with bootstrap errors, the shear bias m, c per component with bootstrap
    errors, and the study's numbers."""
    rows = []
    for (band_set, method), sub in per.groupby(["band_set", "method"], sort=False):
        for est in ESTIMATORS:
            rng = np.random.default_rng([int(seed), len(rows)])

            def summary(g: pd.DataFrame, est: str = est, rng: np.random.Generator = rng) -> pd.DataFrame:
                row: dict[str, Any] = {"n": len(g), "n_failed": int(g[f"failed_{est}"].sum()),
                                       "n_truth_failed": int(g[f"truth_failed_{est}"].sum()),
                                       "n_undetected": int((~g["detected"].astype(bool)).sum())}
                for name, col in (("de1", f"de1_{est}"), ("de2", f"de2_{est}"), ("dmag", f"dmag_{shape_band}")):
                    v = g[col].to_numpy(dtype=float)
                    fin = v[np.isfinite(v)]
                    row[f"median_abs_{name}"] = float(np.median(np.abs(fin))) if fin.size else math.nan
                    row[f"median_abs_{name}_err"] = bootstrap_error(np.abs(fin), np.median, n_bootstrap, rng)
                    row[f"median_{name}"] = float(np.median(fin)) if fin.size else math.nan
                for c in ("1", "2"):
                    fit = shear_bias(g[f"e{c}_true_{est}"], g[f"e{c}_{est}"], n_bootstrap, rng)
                    row.update({f"m{c}": fit["m"], f"m{c}_err": fit["m_err"], f"c{c}": fit["c"],
                                f"c{c}_err": fit["c_err"]})
                return pd.DataFrame([row])

            table = by_kind(sub, summary)
            table.insert(0, "estimator", est)
            table.insert(0, "method", method)
            table.insert(0, "band_set", band_set)
            study = STUDY.get((method, band_set), {})
            table["study_median_abs_de"] = STUDY_MEDIAN_ABS_DE if method in ("vae", "deblender") else math.nan
            table["study_median_abs_dmag"] = STUDY_MEDIAN_ABS_DMAG if method in ("vae", "deblender") else math.nan
            table["study_m1"] = study.get("study_m1", math.nan)
            table["study_m2"] = study.get("study_m2", math.nan)
            table["study_note"] = study.get("study_note", "")
            table["psf_corrected"] = bool(sub["psf_corrected"].all())
            rows.append(table)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def binned_residuals(per: pd.DataFrame, edges: Mapping[str, Sequence[float]], shape_band: str = "r"
                     ) -> pd.DataFrame:
    """Δe1, Δe2 (each estimator) and Δmag (shape band) in bins of S/N, true magnitude and blendedness, per band
    set and method: median and scatter (:func:`sourcelens.metrics.binned_statistics`)."""
    parts = []
    quantities = {**{f"de{c}_{est}": f"de{c}_{est}" for est in ESTIMATORS for c in ("1", "2")},
                  f"dmag_{shape_band}": f"dmag_{shape_band}"}
    for (band_set, method), sub in per.groupby(["band_set", "method"], sort=False):
        for variable, bins in edges.items():
            if variable not in sub or not np.isfinite(sub[variable].to_numpy(dtype=float)).any():
                continue
            for name, col in quantities.items():
                stats = binned_statistics(sub[variable], sub[col], bins)
                stats.insert(0, "quantity", name)
                stats.insert(0, "variable", variable)
                stats.insert(0, "method", method)
                stats.insert(0, "band_set", band_set)
                parts.append(stats)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def evaluate_deblending(band_sets: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any] | None = None,
                        seed: int = 0) -> DeblendingResult:
    """Every method on every band set: ``band_sets`` maps a band set to its ``isolated`` and ``blended`` test
    files and its ``vae`` and ``deblender`` (models, or model files, or None); ``cfg`` the ``deblend.evaluate``
    block. Returns the per-scene rows, the summary table, the binned residuals and the examples."""
    from ..models.deblender import load_band_vae, load_deblender
    from ..train.deblend import deblend_settings

    cfg = deblend_settings({"evaluate": dict(cfg or {})})["evaluate"]
    parts, examples = [], {}
    for name, files in band_sets.items():
        vae, deb = files.get("vae"), files.get("deblender")
        vae = load_band_vae(vae) if isinstance(vae, (str, Path)) else vae
        deb = load_deblender(deb) if isinstance(deb, (str, Path)) else deb
        per, ex = evaluate_band_set(name, files["isolated"], files["blended"], vae, deb, cfg, cfg["n_examples"])
        log.info("%s: %d rows", name, len(per))
        parts.append(per)
        examples[name] = ex
    per = pd.concat(parts, ignore_index=True)
    edges = {v: cfg[key] for v, key in BIN_VARIABLES.items()}
    return DeblendingResult(per_galaxy=per, table=summary_table(per, cfg["shape_band"], cfg["n_bootstrap"], seed),
                            binned=binned_residuals(per, edges, cfg["shape_band"]), examples=examples)
