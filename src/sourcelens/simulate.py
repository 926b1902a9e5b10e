"""Lensing simulations with lenstronomy: lensed/unlensed pairs (study 002) and
super-resolution pairs (study 001, after DeepLenseSim Model_I).

Conventions
-----------
* Angles and positions in arcsec; images in electrons per second per pixel (e-/s/pix, i.e.
  lenstronomy's flux per pixel); magnitudes with ``magnitude_zero_point`` = magnitude of 1 e-/s.
* Image grids are centred on the optical axis (0, 0). Array ``img[row, col]`` is at
  ``x = (col - (N-1)/2) * pixel_scale``, ``y = (row - (N-1)/2) * pixel_scale``: x grows with the
  column and y with the row (no east-left flip), so a source stamp keeps its orientation when
  drawn unlensed on the image grid (``origin='lower'`` shows north up).
* Source stamps are treated as surface-brightness maps (lenstronomy ``INTERPOL``, bilinear) with
  ``scale`` arcsec per stamp pixel, centred on the source position; the amplitude is set so that
  the stamp's total flux equals the drawn magnitude's.
* All random numbers come from the numpy Generator passed in (never numpy's or lenstronomy's
  global state), so a given seed gives byte-identical outputs.

This module never imports snakemake; the workflow scripts are thin wrappers around it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from lenstronomy.Data.pixel_grid import PixelGrid
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import kernel_util

from .names import LENS_PARAMETERS
from .priors import sample_prior
from .stamps import edge_taper, half_light_radius

log = logging.getLogger(__name__)

__all__ = [
    "LENS_MODELS",
    "SR_LENS_MODELS",
    "SR_SOURCE_PARAMETERS",
    "lens_kwargs",
    "draw_lens_parameters",
    "make_pixel_grid",
    "make_psf",
    "draw_pair_scenes",
    "pairs_renderer",
    "render_pairs",
    "render_source_grid",
    "source_grid_scale",
    "edge_peak_fraction",
    "lensing_sources",
    "source_pixel_scales",
    "taper_sources",
    "magnitude_to_counts",
    "add_noise",
    "exposure_time",
    "einstein_radius_point_mass",
    "resolve_theta_E",
    "sr_set_config",
    "SR_NOISE_VARIANTS",
    "LensedImageRenderer",
    "check_stamps",
    "simulate_pairs",
    "simulate_sr",
    "pairs_attrs",
    "pairs_array_attrs",
    "sr_attrs",
    "sr_array_attrs",
]

#: Main-deflector models and the lens parameters each one draws (the others are fixed).
LENS_MODELS: dict[str, tuple[str, ...]] = {
    "SIS": ("theta_E", "center_x", "center_y", "gamma1", "gamma2"),
    "SIE": ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2"),
    "EPL": LENS_PARAMETERS,
}
#: Values of the parameters a model does not draw.
_FIXED_LENS_VALUES = {"gamma": 2.0, "e1": 0.0, "e2": 0.0, "gamma1": 0.0, "gamma2": 0.0}
SR_LENS_MODELS: tuple[str, ...] = ("SIS", "SIE")
#: Noise variants of the super-resolution low-resolution images (:func:`simulate_sr`).
SR_NOISE_VARIANTS: tuple[str, ...] = ("noiseless", "poisson", "noisy")
#: Source parameters drawn for the super-resolution datasets (in this order).
SR_SOURCE_PARAMETERS: tuple[str, ...] = (
    "source_R_sersic", "source_n_sersic", "source_e1", "source_e2", "source_x", "source_y", "source_magnitude",
)
UNITS = "e-/s per pixel"
COORDINATES = (
    "grid centred on (0, 0) arcsec; img[row, col] at x=(col-(N-1)/2)*pixel_scale, "
    "y=(row-(N-1)/2)*pixel_scale (x grows with column, y with row; no east-left flip)"
)


# --------------------------------------------------------------------------------------------
# Lens models and parameters
# --------------------------------------------------------------------------------------------
def _check_lens_model(lens_model: str, allowed: Sequence[str] = tuple(LENS_MODELS)) -> str:
    if lens_model not in allowed:
        raise ValueError(f"unknown lens model {lens_model!r}; allowed: {', '.join(allowed)}")
    return lens_model


def lens_kwargs(
    lens_model: str, params: Mapping[str, float], with_shear: bool = True
) -> tuple[list[str], list[dict[str, float]]]:
    """lenstronomy ``(lens_model_list, kwargs_lens)`` for a main deflector plus external shear.

    ``params`` holds the LENS_PARAMETERS (arcsec for theta_E and centres). SIS uses theta_E and
    the centre; SIE adds e1, e2; EPL adds gamma. 'SHEAR' (gamma1, gamma2, ra_0 = dec_0 = 0) is
    appended unless ``with_shear`` is False.
    """
    _check_lens_model(lens_model)
    p = {k: float(v) for k, v in params.items()}
    main = {"theta_E": p["theta_E"], "center_x": p["center_x"], "center_y": p["center_y"]}
    if lens_model in ("SIE", "EPL"):
        main["e1"] = p["e1"]
        main["e2"] = p["e2"]
    if lens_model == "EPL":
        main["gamma"] = p["gamma"]
    models, kwargs = [lens_model], [main]
    if with_shear:
        models.append("SHEAR")
        kwargs.append({"gamma1": p["gamma1"], "gamma2": p["gamma2"], "ra_0": 0.0, "dec_0": 0.0})
    return models, kwargs


def draw_lens_parameters(
    lens_model: str, priors: Mapping[str, Any], rng: np.random.Generator, n: int
) -> pd.DataFrame:
    """Draw ``n`` sets of the 8 LENS_PARAMETERS (columns, in that order) from ``priors``.

    Only the parameters the model uses are drawn (in LENS_PARAMETERS order); the others get
    gamma = 2, e1 = e2 = 0 (SIS), and gamma = 2 (SIE). A prior missing from ``priors`` for a
    drawn parameter is an error, except gamma1/gamma2 which default to 0 (no shear).
    """
    _check_lens_model(lens_model)
    drawn = LENS_MODELS[lens_model]
    cols: dict[str, np.ndarray] = {}
    for name in LENS_PARAMETERS:
        if name in drawn:
            if name in priors:
                spec = priors[name]
            elif name in ("gamma1", "gamma2"):
                spec = 0.0
            else:
                raise ValueError(f"prior for lens parameter '{name}' is missing (needed by {lens_model})")
            cols[name] = sample_prior(spec, rng, n, name=name)
        else:
            cols[name] = np.full(n, _FIXED_LENS_VALUES[name])
    return pd.DataFrame(cols, columns=list(LENS_PARAMETERS))


# --------------------------------------------------------------------------------------------
# Grid, PSF, noise
# --------------------------------------------------------------------------------------------
def make_pixel_grid(num_pix: int, pixel_scale: float) -> PixelGrid:
    """A ``num_pix``² lenstronomy PixelGrid of ``pixel_scale`` arcsec centred on (0, 0), x along columns."""
    s = float(pixel_scale)
    origin = -(num_pix - 1) / 2.0 * s
    return PixelGrid(
        nx=int(num_pix), ny=int(num_pix), transform_pix2angle=np.array([[s, 0.0], [0.0, s]]),
        ra_at_xy_0=origin, dec_at_xy_0=origin,
    )


def _moffat_kernel(fwhm: float, beta: float, pixel_scale: float, oversample: int = 7) -> np.ndarray:
    """Pixel-integrated Moffat kernel (odd size, unit sum) at ``pixel_scale`` arcsec per pixel."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    # Radius enclosing all but 1e-4 of the flux: 1 - (1 + r²/alpha²)^(1-beta) = 1 - 1e-4.
    r_max = alpha * np.sqrt(1e-4 ** (1.0 / (1.0 - beta)) - 1.0)
    half = int(np.clip(np.ceil(r_max / pixel_scale), 2, 60))
    n = 2 * half + 1
    sub = (np.arange(n * oversample) + 0.5) / oversample - n / 2.0  # sub-pixel centres, pixels
    xx, yy = np.meshgrid(sub * pixel_scale, sub * pixel_scale)
    prof = (1.0 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    kernel = prof.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
    return kernel / kernel.sum()


def _load_kernel(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"psf kernel_file not found: {path}")
    if path.suffix == ".npy":
        kernel = np.load(path)
    else:
        from astropy.io import fits

        kernel = fits.getdata(path, ext=0)
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"psf kernel_file {path}: need a square kernel of odd size, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)) or kernel.sum() <= 0:
        raise ValueError(f"psf kernel_file {path}: kernel has non-finite values or a non-positive sum")
    return kernel / kernel.sum()


def make_psf(psf_cfg: Mapping[str, Any], pixel_scale: float, kernel_subgrid: int = 1) -> PSF:
    """A lenstronomy PSF for an image of ``pixel_scale`` arcsec per pixel.

    ``psf_cfg`` is the schema's ``definitions/psf``: GAUSSIAN (``fwhm_arcsec``), MOFFAT
    (``fwhm_arcsec``, ``moffat_beta``; a pixel-integrated kernel built here), PIXEL (kernel from
    ``kernel_file``, FITS or .npy, sampled at ``pixel_scale * kernel_subgrid``; for
    ``kernel_subgrid`` > 1 it is resampled finer with lenstronomy's ``subgrid_kernel``) or NONE.
    """
    kind = str(psf_cfg.get("type", "GAUSSIAN")).upper()
    fwhm = float(psf_cfg.get("fwhm_arcsec", 0.1))
    if kind == "NONE":
        return PSF(psf_type="NONE")
    if kind == "GAUSSIAN":
        return PSF(psf_type="GAUSSIAN", fwhm=fwhm, pixel_size=float(pixel_scale), truncation=5)
    if kind == "MOFFAT":
        kernel = _moffat_kernel(fwhm, float(psf_cfg.get("moffat_beta", 3.0)), float(pixel_scale))
        return PSF(psf_type="PIXEL", kernel_point_source=kernel)
    if kind == "PIXEL":
        if not psf_cfg.get("kernel_file"):
            raise ValueError("psf type PIXEL needs 'kernel_file'")
        kernel = _load_kernel(psf_cfg["kernel_file"])
        if kernel_subgrid > 1:
            kernel = kernel_util.subgrid_kernel(kernel, int(kernel_subgrid), odd=True)
            kernel = kernel / kernel.sum()
        return PSF(psf_type="PIXEL", kernel_point_source=kernel)
    raise ValueError(f"unknown psf type {kind!r}; allowed: GAUSSIAN, MOFFAT, PIXEL, NONE")


def magnitude_to_counts(magnitude: float | np.ndarray, zero_point: float) -> float | np.ndarray:
    """Total flux in e-/s of a source of ``magnitude`` (zero point: magnitude of 1 e-/s)."""
    return 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=float) - float(zero_point)))


def exposure_time(noise_cfg: Mapping[str, Any], rng: np.random.Generator, size: int | None = None
                  ) -> float | np.ndarray:
    """The exposure time(s) in s of ``noise_cfg['exposure_time_s']``: a number, or a prior (e.g. Model_I's
    ``{log10_uniform: [3, 3.5]}``) drawn with ``rng`` (one draw per value; none for a fixed number)."""
    spec = noise_cfg.get("exposure_time_s", 1000.0)
    values = sample_prior(spec, rng, 1 if size is None else int(size), name="noise/exposure_time_s")
    if np.any(values <= 0):
        raise ValueError(f"noise/exposure_time_s must be positive, got {spec!r}")
    return float(values[0]) if size is None else values


def add_noise(
    noiseless: np.ndarray, noise_cfg: Mapping[str, Any], rng: np.random.Generator,
    exposure_time_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy image and per-pixel sigma map (both e-/s per pixel, float64).

    ``noise_cfg['model']``:

    * ``additive`` (default): Poisson noise of the counts ``noiseless * t`` (negative model pixels
      count as zero; if ``poisson``) plus Gaussian ``background_rms``; sigma = sqrt(background_rms² +
      max(noiseless, 0) / t).
    * ``deeplensesim``: DeepLenseSim Model_I's ``simple_sim`` (noisy images): lenstronomy's Gaussian
      approximation of the shot noise (sigma sqrt(|m| / t)) and the Gaussian background are added to the
      model m, the counts t·(...) are clipped at zero and drawn from a Poisson distribution, and the image is
      counts / t. The source's shot noise enters twice and empty sky is non-negative (a clipped Gaussian,
      mean ≈ 0.4 background_rms, then Poisson); sigma (approximate, ignoring the clip) = sqrt(background_rms² +
      2 max(m, 0) / t). With ``poisson`` false, only the Gaussian background is added.

    ``t``: ``exposure_time_s`` if given, else ``noise_cfg['exposure_time_s']`` (a number, or a prior drawn
    here once: :func:`exposure_time`). Uses only ``rng``; always the same number of draws for one config.
    """
    t = float(exposure_time_s) if exposure_time_s is not None else exposure_time(noise_cfg, rng)
    bg = float(noise_cfg.get("background_rms", 0.01))
    model = noise_cfg.get("model", "additive")
    poisson = bool(noise_cfg.get("poisson", True))
    img = np.asarray(noiseless, dtype=float)
    positive = np.clip(img, 0.0, None)
    if model == "deeplensesim":
        total = img.copy()
        var = np.full(img.shape, bg**2)
        if poisson:
            total += np.sqrt(np.abs(img) / t) * rng.normal(0.0, 1.0, img.shape)
            var += 2.0 * positive / t
        total += bg * rng.normal(0.0, 1.0, img.shape)
        noisy = rng.poisson(np.clip(total * t, 0.0, None)) / t if poisson else total
        return noisy, np.sqrt(var)
    if model != "additive":
        raise ValueError(f"unknown noise model {model!r}; allowed: additive, deeplensesim")
    noisy = img.copy()
    var = np.full(img.shape, bg**2)
    if poisson:
        counts = positive * t
        noisy += (rng.poisson(counts) - counts) / t
        var += positive / t
    noisy += rng.normal(0.0, 1.0, img.shape) * bg
    return noisy, np.sqrt(var)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
class LensedImageRenderer:
    """lenstronomy ImageModel objects built once (grid, PSF, lens-model list, source model) and
    reused for many samples with different kwargs.

    ``render(kwargs_lens, kwargs_source)`` gives the PSF-convolved lensed image and the unlensed
    source on the same grid (no PSF), in e-/s per pixel.
    """

    def __init__(
        self,
        num_pix: int,
        pixel_scale: float,
        lens_model_list: Sequence[str],
        source_model: str,
        psf: PSF,
        supersampling: int = 1,
        supersampling_convolution: bool = False,
    ) -> None:
        self.psf = psf
        self.grid = make_pixel_grid(num_pix, pixel_scale)
        self.lens_model = LensModel(lens_model_list=list(lens_model_list))
        self.source_model = LightModel(light_model_list=[source_model])
        self.kwargs_numerics = {"supersampling_factor": int(supersampling),
                                "supersampling_convolution": bool(supersampling_convolution) and int(supersampling) > 1}
        self.image_model = ImageModel(
            data_class=self.grid, psf_class=psf, lens_model_class=self.lens_model,
            source_model_class=self.source_model, kwargs_numerics=self.kwargs_numerics,
        )
        self._interpol = source_model == "INTERPOL"

    def render(
        self, kwargs_lens: list[dict], kwargs_source: list[dict], psf: bool = True, unlensed: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(lensed image, unlensed source or None); ``psf=False`` skips the convolution of the lensed image."""
        lensed = self.render_traced(self.trace_rays(kwargs_lens), kwargs_source, psf=psf)
        source = None
        if unlensed:
            source = self.image_model.source_surface_brightness(kwargs_source, de_lensed=True, unconvolved=True)
        return lensed, source

    def trace_rays(self, kwargs_lens: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Source-plane positions (arcsec) of the image's evaluation points (supersampled) through the lens: the
        costly part of a render, traced once to lens several sources (a stamp, then its gridded truth) alike."""
        x, y = self.image_model.ImageNumerics.coordinates_evaluate
        return self.lens_model.ray_shooting(x, y, kwargs_lens)

    def render_traced(self, rays: tuple[np.ndarray, np.ndarray], kwargs_source: list[dict],
                      psf: bool = True) -> np.ndarray:
        """The lensed image of ``kwargs_source`` at rays from :meth:`trace_rays`: what lenstronomy's
        ``ImageModel.image`` computes for a lensed source (no lens light, extinction or primary beam here),
        pixel-integrated over the supersampling and convolved with the PSF unless ``psf=False``."""
        if self._interpol:
            # INTERPOL caches its interpolator of the last image: clear it for a new stamp.
            self.source_model.delete_interpol_caches()
        brightness = self.source_model.surface_brightness(rays[0], rays[1], kwargs_source)
        return self.image_model.ImageNumerics.re_size_convolve(brightness, unconvolved=not psf)


def check_stamps(images: np.ndarray, meta: pd.DataFrame) -> None:
    """ValueError naming the source_id of any stamp that is not finite or is all zero."""
    if images.ndim != 3:
        raise ValueError(f"stamps must be an (M, S, S) array, got shape {images.shape}")
    if len(meta) != len(images):
        raise ValueError(f"{len(images)} stamps but {len(meta)} metadata rows")
    finite = np.isfinite(images).all(axis=(1, 2))
    nonzero = (images != 0).any(axis=(1, 2))
    positive = np.where(finite, images.sum(axis=(1, 2), dtype=float), 0.0) > 0
    for i in np.flatnonzero(~(finite & nonzero & positive)):
        sid = meta["source_id"].iloc[i] if "source_id" in meta else i
        why = "NaN/inf values" if not finite[i] else ("all zero" if not nonzero[i] else "non-positive total flux")
        raise ValueError(f"source stamp {i} (source_id {sid!r}) is unusable: {why}")


def _interpol_kwargs(stamp: np.ndarray, scale: float, flux: float, x: float, y: float) -> dict[str, Any]:
    """INTERPOL kwargs so that ``stamp`` (surface brightness, any units) has total flux ``flux``."""
    amp = flux / (float(np.sum(stamp, dtype=float)) * scale**2)
    return {"image": stamp, "amp": amp, "center_x": float(x), "center_y": float(y), "phi_G": 0.0, "scale": float(scale)}


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, mininterval=2.0, ascii=True)


# --------------------------------------------------------------------------------------------
# Study 002: lensed / unlensed pairs
# --------------------------------------------------------------------------------------------
def draw_pair_scenes(n: int, lens_model: str, cfg: Mapping[str, Any], rng: np.random.Generator
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Lens parameters, source x and y offsets (arcsec) and magnitudes of ``n`` scenes (``cfg`` =
    ``simulate.pairs``), drawn in this order from ``rng``."""
    params = draw_lens_parameters(lens_model, cfg["priors"], rng, n)
    src_x = sample_prior(cfg["source_offset_arcsec"], rng, n, name="source_offset_arcsec")
    src_y = sample_prior(cfg["source_offset_arcsec"], rng, n, name="source_offset_arcsec")
    mag_lo, mag_hi = (float(v) for v in cfg["source_magnitude"])
    if mag_lo > mag_hi:
        raise ValueError(f"source_magnitude range [{mag_lo:g}, {mag_hi:g}] is reversed")
    return params, src_x, src_y, rng.uniform(mag_lo, mag_hi, n)


def pairs_renderer(lens_model: str, cfg: Mapping[str, Any]) -> LensedImageRenderer:
    """The lenstronomy renderer of ``simulate.pairs``: grid, PSF, supersampling, ``lens_model`` + shear, INTERPOL."""
    pix = float(cfg["pixel_scale_arcsec"])
    lens_list, _ = lens_kwargs(lens_model, dict.fromkeys(LENS_PARAMETERS, 0.0))
    return LensedImageRenderer(int(cfg["num_pix"]), pix, lens_list, "INTERPOL", make_psf(cfg.get("psf", {}), pix),
                               int(cfg.get("supersampling", 1)))


def lensing_sources(arrays: Mapping[str, np.ndarray], meta: pd.DataFrame, kinds: Sequence[str],
                    min_observed_snr: float | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The stamps that the simulations lens: the rows of ``kinds`` (``simulate.source_kinds``), each as its
    noiseless truth (``images_noiseless``) where the galaxy was drawn, else as observed (``images``). Observed
    stamps (no noiseless truth) are kept only where their aperture S/N (meta ``snr``) is at least
    ``min_observed_snr`` (``simulate.min_observed_source_snr``; None keeps all): their own noise is lensed with
    them. Returns (images, their metadata with a fresh index); ValueError naming the kinds if none is left."""
    keep = meta["kind"].astype(str).isin(list(kinds)).to_numpy() if "kind" in meta else np.ones(len(meta), bool)
    if "flux_linear" in meta:
        keep = keep & meta["flux_linear"].to_numpy(dtype=bool)
    truth = arrays.get("images_noiseless")
    known = (np.isfinite(np.asarray(truth)).all(axis=(1, 2)) if truth is not None
             else np.zeros(len(meta), bool))
    if min_observed_snr is not None and "snr" in meta:
        snr = meta["snr"].to_numpy(dtype=float)
        keep = keep & (known | (snr >= float(min_observed_snr)))
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        present = sorted(set(meta["kind"].astype(str))) if "kind" in meta else []
        cut = "" if min_observed_snr is None else f" with observed stamps of S/N >= {min_observed_snr} " \
            "(simulate/min_observed_source_snr)"
        raise ValueError(f"no stamps of the lensed source kinds {list(kinds)} (simulate/source_kinds){cut}; the "
                         f"stamps hold {present}")
    images = np.asarray(arrays["images"])[rows]
    if truth is not None:
        images = np.where(known[rows][:, None, None], np.asarray(truth)[rows], images)
    return images, meta.iloc[rows].reset_index(drop=True)


def source_half_light_radii(meta: pd.DataFrame, rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Half-light radius on the sky (arcsec) of the stamps ``rows`` as lensed at ``scales`` arcsec per pixel: the
    stamp's ``hlr_arcsec`` at its own pixel scale, rescaled where the config fixes another; NaN if unknown."""
    if "hlr_arcsec" not in meta or "pixel_scale_arcsec" not in meta:
        return np.full(len(rows), np.nan)
    hlr = meta["hlr_arcsec"].to_numpy(dtype=float)[rows]
    own = meta["pixel_scale_arcsec"].to_numpy(dtype=float)[rows]
    return hlr * np.asarray(scales, dtype=float) / own


def source_pixel_scales(meta: pd.DataFrame, rows: np.ndarray, cfg: Mapping[str, Any]) -> np.ndarray:
    """Arcsec per source-stamp pixel of the stamps ``rows``: ``cfg["source_pixel_scale_arcsec"]`` if set, else
    each stamp's own ``pixel_scale_arcsec`` (its size on the sky kept)."""
    fixed = cfg.get("source_pixel_scale_arcsec")
    if fixed is not None:
        return np.full(len(rows), float(fixed))
    if "pixel_scale_arcsec" not in meta:
        raise ValueError("the stamps have no pixel_scale_arcsec column: set source_pixel_scale_arcsec in the config")
    scales = meta["pixel_scale_arcsec"].to_numpy(dtype=float)[rows]
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError("stamps without a positive pixel_scale_arcsec: set source_pixel_scale_arcsec in the config")
    return scales


def taper_sources(stamps: np.ndarray, fraction: float) -> np.ndarray:
    """Source stamps (…, S, S) with a cosine edge taper of ``fraction`` of their side (float64), so that a lensed
    source and its noise do not show the square outline of the stamp."""
    stamps = np.asarray(stamps, dtype=float)
    width = int(round(float(fraction) * stamps.shape[-1]))
    return stamps * edge_taper(stamps.shape[-1], width) if width else stamps


def source_grid_scale(cfg: Mapping[str, Any]) -> float:
    """Arcsec per pixel of the stored unlensed ``source`` (``source_grid_pixel_scale_arcsec``; null: a third of the
    image pixel): the source-plane grid of ``num_pix``² pixels centred on the optical axis."""
    value = cfg.get("source_grid_pixel_scale_arcsec")
    return float(value) if value is not None else float(cfg["pixel_scale_arcsec"]) / 3.0


def render_source_grid(kwargs_source: Sequence[Mapping[str, Any]], num_pix: int, pixel_scale: float,
                       supersampling: int = 1, light_model: LightModel | None = None) -> np.ndarray:
    """The unlensed source (lenstronomy ``INTERPOL`` kwargs) integrated over the pixels of a ``num_pix``² grid of
    ``pixel_scale`` arcsec centred on (0, 0) (``supersampling``² samples a pixel): flux per pixel, no PSF. The same
    surface-brightness function the lensing evaluated, on an explicit grid: the exact truth of a delensing."""
    model = light_model or LightModel(light_model_list=["INTERPOL"])
    sub = int(supersampling)
    offsets = ((np.arange(num_pix * sub) + 0.5) / sub - num_pix / 2.0) * pixel_scale
    xx, yy = np.meshgrid(offsets, offsets)
    sb = model.surface_brightness(xx.ravel(), yy.ravel(), list(kwargs_source)).reshape(num_pix * sub, num_pix * sub)
    return sb.reshape(num_pix, sub, num_pix, sub).mean(axis=(1, 3)) * pixel_scale**2


def render_pairs(stamps: np.ndarray, lens_model: str, params: pd.DataFrame, fluxes: np.ndarray,
                 src_x: np.ndarray, src_y: np.ndarray, scales: np.ndarray, cfg: Mapping[str, Any],
                 rng: np.random.Generator, *, renderer: LensedImageRenderer | None = None, unlensed: bool = True,
                 dtype=np.float32, progress: bool = True) -> dict[str, np.ndarray]:
    """Lens stamp i (surface brightness, ``scales[i]`` arcsec per pixel) with lens ``params`` row i, total flux
    ``fluxes[i]`` (e-/s) at (``src_x[i]``, ``src_y[i]``) arcsec, and add noise (one ``add_noise`` draw per scene,
    in order). Returns ``lensed_noiseless``, ``lensed``, ``noise_sigma`` (n, num_pix, num_pix), e-/s per pixel,
    and with ``unlensed`` the ``source`` on the source grid (:func:`render_source_grid`, :func:`source_grid_scale`)
    and ``source_relens_error`` (n,): max |lensing of that grid − lensed_noiseless| / peak, how exactly the stored
    source reproduces the lensed image."""
    renderer = renderer or pairs_renderer(lens_model, cfg)
    n, num_pix = len(params), int(cfg["num_pix"])
    noise_cfg = cfg.get("noise", {})
    names = ("lensed", "lensed_noiseless") + (("source",) if unlensed else ()) + ("noise_sigma",)
    out = {k: np.empty((n, num_pix, num_pix), dtype=dtype) for k in names}
    if unlensed:
        out["source_relens_error"] = np.empty(n, dtype=np.float64)
        grid_scale, sub = source_grid_scale(cfg), int(cfg.get("supersampling", 1))
        light = LightModel(light_model_list=["INTERPOL"])
    records = params.to_dict("records")
    with _progress(n, f"lensing {lens_model}", progress) as bar:
        for i in range(n):
            _, kw_lens = lens_kwargs(lens_model, records[i])
            kw_src = [_interpol_kwargs(np.asarray(stamps[i], dtype=float), float(scales[i]), fluxes[i],
                                       src_x[i], src_y[i])]
            rays = renderer.trace_rays(kw_lens)
            lensed = renderer.render_traced(rays, kw_src)
            noisy, sigma = add_noise(lensed, noise_cfg, rng)
            out["lensed_noiseless"][i], out["lensed"][i], out["noise_sigma"][i] = lensed, noisy, sigma
            if unlensed:
                light.delete_interpol_caches()
                source = render_source_grid(kw_src, num_pix, grid_scale, sub, light)
                out["source"][i] = source
                kw_grid = [{"image": source, "amp": 1.0 / grid_scale**2, "center_x": 0.0, "center_y": 0.0,
                            "phi_G": 0.0, "scale": grid_scale}]
                relensed = renderer.render_traced(rays, kw_grid)
                out["source_relens_error"][i] = float(np.max(np.abs(relensed - lensed)) / max(lensed.max(), 1e-300))
            bar.update()
    return out


def edge_peak_fraction(images: np.ndarray) -> np.ndarray:
    """Brightest pixel of each image's outer ring (the border pixels) over its peak (N,): above ~1 % the lensed
    light is cut by the field's edge."""
    images = np.asarray(images, dtype=float)
    ring = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1)
    return ring.max(axis=1) / np.maximum(images.max(axis=(1, 2)), 1e-300)


def simulate_pairs(
    images: np.ndarray,
    meta: pd.DataFrame,
    n: int,
    lens_model: str,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Simulate ``n`` lensed/unlensed pairs from galaxy stamps (``cfg`` = ``simulate.pairs``).

    ``images``: (M, S, S) peak-normalised stamps; ``meta``: their table (``source_id``, ``kind``).
    Stamps are drawn uniformly with replacement. Random draws, in order: stamp indices, lens
    parameters (LENS_PARAMETERS order), source x, source y, magnitudes, then per sample the noise.

    Returns arrays (float32, object index first; images e-/s per pixel)
    ``lensed`` (noisy), ``lensed_noiseless``, ``noise_sigma`` (num_pix², e-/s per pixel), ``source`` (unlensed,
    no PSF, on the source grid: num_pix² pixels of :func:`source_grid_scale`, centred on the optical axis; flux per
    source pixel) and ``lens_params`` (n, 8; LENS_PARAMETERS order), and the table
    (``source_id``, ``kind``, ``stamp_index``, ``lens_model``, the 8 parameters, ``source_x``,
    ``source_y`` (arcsec), ``source_magnitude``, ``source_pixel_scale_arcsec``, ``source_hlr_arcsec``, and the
    checks of each sample: ``source_grid_flux_fraction`` (the source's flux inside the source grid),
    ``source_relens_error`` (:func:`render_pairs`) and ``edge_peak_fraction`` (:func:`edge_peak_fraction`)).
    """
    _check_lens_model(lens_model)
    images = np.asarray(images)
    check_stamps(images, meta)
    n = int(n)
    if n > 0 and len(images) == 0:
        raise ValueError("no source stamps to simulate pairs from")

    idx = rng.integers(0, len(images), size=n) if n > 0 else np.zeros(0, dtype=int)
    params, src_x, src_y, mags = draw_pair_scenes(n, lens_model, cfg, rng)
    fluxes = magnitude_to_counts(mags, cfg["magnitude_zero_point"])
    scales = source_pixel_scales(meta, idx, cfg)
    sources = taper_sources(images[idx], cfg.get("source_taper_fraction", 0.0))
    out = render_pairs(sources, lens_model, params, fluxes, src_x, src_y, scales, cfg, rng, progress=progress)
    out["lens_params"] = params[list(LENS_PARAMETERS)].to_numpy(dtype=np.float32)
    relens_error = out.pop("source_relens_error")

    table = pd.DataFrame({
        "source_id": meta["source_id"].to_numpy()[idx].astype(str) if n else np.array([], dtype=object),
        "kind": (meta["kind"].to_numpy()[idx].astype(str) if "kind" in meta else np.full(n, "unknown"))
        if n else np.array([], dtype=object),
        "stamp_index": idx.astype(np.int64),
        "lens_model": np.full(n, lens_model, dtype=object),
    })
    for name in LENS_PARAMETERS:
        table[name] = params[name].to_numpy(dtype=float)
    table["source_x"] = src_x
    table["source_y"] = src_y
    table["source_magnitude"] = mags
    table["source_pixel_scale_arcsec"] = scales
    table["source_hlr_arcsec"] = source_half_light_radii(meta, idx, scales)
    table["source_grid_flux_fraction"] = out["source"].sum(axis=(1, 2), dtype=float) / fluxes if n else np.zeros(0)
    table["source_relens_error"] = relens_error
    table["edge_peak_fraction"] = edge_peak_fraction(out["lensed_noiseless"]) if n else np.zeros(0)
    table["source_id"] = table["source_id"].astype(object)
    table["kind"] = table["kind"].astype(object)
    return out, table


def _psf_description(psf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(psf_cfg.get("type", "GAUSSIAN")).upper()
    desc: dict[str, Any] = {"type": kind}
    if kind in ("GAUSSIAN", "MOFFAT"):
        desc["fwhm_arcsec"] = float(psf_cfg.get("fwhm_arcsec", 0.1))
    if kind == "MOFFAT":
        desc["moffat_beta"] = float(psf_cfg.get("moffat_beta", 3.0))
    if kind == "PIXEL":
        desc["kernel_file"] = str(psf_cfg.get("kernel_file"))
    return desc


def pairs_attrs(cfg: Mapping[str, Any], lens_model: str) -> dict[str, Any]:
    """Root attributes of a pairs dataset (``cfg`` = ``simulate.pairs``)."""
    return {
        "description": f"Lensed/unlensed source pairs (study 002), lenstronomy {lens_model} + external shear",
        "simulator": "lenstronomy",
        "lens_model": lens_model,
        "lens_model_list": lens_kwargs(lens_model, dict.fromkeys(LENS_PARAMETERS, 0.0))[0],
        "lens_parameters": list(LENS_PARAMETERS),
        "num_pix": int(cfg["num_pix"]),
        "pixel_scale_arcsec": float(cfg["pixel_scale_arcsec"]),
        "source_pixel_scale_arcsec": ("per stamp (meta column source_pixel_scale_arcsec: the stamp's own scale)"
                                      if cfg.get("source_pixel_scale_arcsec") is None
                                      else float(cfg["source_pixel_scale_arcsec"])),
        "source_taper_fraction": float(cfg.get("source_taper_fraction", 0.0)),
        "source_profile": "INTERPOL (bilinear) of the edge-tapered galaxy stamp, total flux from source_magnitude",
        "supersampling": int(cfg.get("supersampling", 1)),
        "psf": _psf_description(cfg.get("psf", {})),
        "noise": dict(cfg.get("noise", {})),
        "magnitude_zero_point": float(cfg["magnitude_zero_point"]),
        "units": UNITS,
        "coordinates": COORDINATES,
        "source_grid_pixel_scale_arcsec": source_grid_scale(cfg),
        "source_grid_num_pix": int(cfg["num_pix"]),
        "truth_convention": "source: the unlensed source (the lensed stamp's surface brightness) integrated over the "
                            "source grid (num_pix² pixels of source_grid_pixel_scale_arcsec centred on the optical "
                            "axis), no PSF, no noise; lensed_noiseless: lensed and PSF-convolved; lensed: plus noise",
    }


def pairs_array_attrs() -> dict[str, dict[str, str]]:
    """Per-array ``units``/``description`` attributes of a pairs dataset."""
    return {
        "lensed": {"units": UNITS, "description": "lensed source, PSF-convolved, with noise"},
        "lensed_noiseless": {"units": UNITS, "description": "lensed source, PSF-convolved, no noise"},
        "source": {"units": "e-/s per source-grid pixel",
                   "description": "unlensed source on the source grid (root attrs source_grid_*), no PSF, no noise"},
        "noise_sigma": {"units": UNITS, "description": "per-pixel noise sigma of `lensed`"},
        "lens_params": {"units": "arcsec (theta_E, center_x, center_y); dimensionless otherwise",
                        "description": "columns: " + ", ".join(LENS_PARAMETERS)},
    }


# --------------------------------------------------------------------------------------------
# Study 001: super-resolution pairs
# --------------------------------------------------------------------------------------------
def einstein_radius_point_mass(
    mass_msun: float, z_lens: float, z_source: float, H0: float = 70.0, Om0: float = 0.3,
    distances: str = "luminosity",
) -> float:
    """Einstein radius (arcsec) of a point mass ``mass_msun`` at ``z_lens`` lensing a source at ``z_source``
    in flat ΛCDM (astropy ``FlatLambdaCDM(H0, Om0)``, no radiation): θE = sqrt(4 G M / c² · D_LS / (D_L D_S)).

    ``distances``: ``luminosity`` is DeepLenseSim's ``DeepLens.mass_to_radius`` (Model_I, study 001): D_L and
    D_S luminosity distances and D_LS = D_S − D_L (1e12 M☉, z 0.5 → 1, H0 70, Ωm 0.3: 1.28149″);
    ``angular_diameter`` is the textbook relation (angular-diameter distances, D_LS = D_A(z_lens, z_source):
    1.66452″ for the same halo).
    """
    from astropy import constants as const
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    if not z_source > z_lens >= 0:
        raise ValueError(f"point-mass Einstein radius: need 0 <= z_lens < z_source, got {z_lens}, {z_source}")
    cosmo = FlatLambdaCDM(H0=float(H0), Om0=float(Om0))
    if distances == "luminosity":
        d_l, d_s = cosmo.luminosity_distance(z_lens), cosmo.luminosity_distance(z_source)
        d_ls = d_s - d_l
    elif distances == "angular_diameter":
        d_l, d_s = cosmo.angular_diameter_distance(z_lens), cosmo.angular_diameter_distance(z_source)
        d_ls = cosmo.angular_diameter_distance(z_lens, z_source)
    else:
        raise ValueError(f"unknown distances {distances!r}; allowed: luminosity, angular_diameter")
    theta = np.sqrt(4 * const.G * float(mass_msun) * const.M_sun / const.c**2 * d_ls / (d_l * d_s))
    return float((theta.decompose() * u.rad).to(u.arcsec).value)


def resolve_theta_E(spec: Any) -> Any:
    """A theta_E prior with ``{point_mass: {mass_msun, z_lens, z_source, H0, Om0, distances}}`` replaced by its
    fixed Einstein radius (:func:`einstein_radius_point_mass`); any other prior unchanged."""
    if isinstance(spec, Mapping) and "point_mass" in spec:
        return einstein_radius_point_mass(**spec["point_mass"])
    return spec


def _sr_brightness(priors: Mapping[str, Any]) -> str:
    bright = [k for k in ("source_magnitude", "source_amplitude") if priors.get(k) is not None]
    if len(bright) != 1:
        raise ValueError(f"sr priors: exactly one of source_magnitude and source_amplitude must be set, got {bright}")
    return bright[0]


def simulate_sr(
    n: int,
    lens_model: str,
    noise_variant: str,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    images: np.ndarray | None = None,
    meta: pd.DataFrame | None = None,
    id_prefix: str = "sersic",
    hr_psf: bool = True,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Simulate ``n`` super-resolution pairs of one set (``cfg``: :func:`sourcelens.config.sr_set_config`).

    Same lens (SIS or SIE, no shear) and source on a low-resolution grid (``low_res_num_pix`` at
    ``low_res_pixel_scale_arcsec``) and a ``factor``× finer high-resolution grid of the same field.
    Each grid is rendered by lenstronomy with a PSF of the same FWHM in arcsec (none for Model_I); the
    high-res image with ``supersampling``, the low-res one with ``low_res_supersampling`` (null: ``factor ×
    supersampling``, the same sub-pixels as the high-res image, and the PSF convolved on them, so that the
    high-res image binned is the low-res one; Model_I: 1, pixel centres as DeepLenseSim). The high-res truth is noiseless and, with
    ``hr_psf`` (default), PSF-convolved (the task is super-resolution, not deconvolution).

    ``noise_variant``: ``noiseless``; ``poisson`` (Poisson noise of the source counts only: what DeepLenseSim
    makes without ``noise``, the study's "no noise" images); ``noisy`` (``cfg['noise']``,
    :func:`add_noise`). Noise touches the low-res image only; the exposure time of each sample (a number or
    a prior, ``noise.exposure_time_s``) is recorded for every variant.

    The theta_E prior may be a point mass (:func:`resolve_theta_E`). Source ``cfg['source']``: 'sersic'
    (SERSIC_ELLIPSE from the source_* priors, brightness from ``source_magnitude`` or from
    ``source_amplitude``, lenstronomy's ``amp``: the surface brightness at R_sersic in e-/s per arcsec²,
    as Model_I's amp 20; ids ``f"{id_prefix}-{i:06d}"``) or 'stamps' (INTERPOL of ``images`` drawn with
    replacement, scaled so the stamp's half-light radius equals the drawn ``source_R_sersic``, total flux from
    ``source_magnitude``; ids from ``meta``). Random draws, in order: stamp indices (stamps only), the source
    parameters (SR_SOURCE_PARAMETERS order, the brightness last), the lens parameters, the exposure times,
    then per sample the noise (noisy and poisson only), so the variants of one seed share their scenes.

    Returns arrays (float32; e-/s per pixel) ``low_res``, ``low_res_noiseless``, ``high_res``,
    ``noise_sigma`` (low-res grid; zeros for 'noiseless'), ``source_high_res`` (unlensed, no PSF)
    and ``lens_params`` (n, 8; gamma = 2, shear 0), and the table (``source_id``, ``kind``, ``stamp_index``,
    ``lens_model``, the 8 lens parameters, the source parameters, ``source_amplitude`` (Sérsic ``amp``; NaN for
    stamps), ``exposure_time_s``, ``source_pixel_scale_arcsec`` (stamps), and ``edge_peak_fraction`` /
    ``edge_peak_fraction_low_res``: the brightest border pixel of the noiseless high-/low-res image over its
    peak, :func:`edge_peak_fraction`, above ~1 % the field cuts the lensed source).
    """
    _check_lens_model(lens_model, SR_LENS_MODELS)
    if noise_variant not in SR_NOISE_VARIANTS:
        raise ValueError(f"unknown noise variant {noise_variant!r}; allowed: {', '.join(SR_NOISE_VARIANTS)}")
    source_kind = cfg.get("source", "sersic")
    if source_kind not in ("sersic", "stamps"):
        raise ValueError(f"unknown sr source {source_kind!r}; allowed: sersic, stamps")
    n = int(n)
    factor = int(cfg["factor"])
    lr_pix, lr_scale = int(cfg["low_res_num_pix"]), float(cfg["low_res_pixel_scale_arcsec"])
    hr_pix, hr_scale = lr_pix * factor, lr_scale / factor
    ss = int(cfg.get("supersampling", 1))
    lr_ss = int(cfg.get("low_res_supersampling") or factor * ss)
    priors = dict(cfg["priors"])
    brightness = _sr_brightness(priors)
    if source_kind == "stamps" and brightness != "source_magnitude":
        raise ValueError("sr source 'stamps' needs priors.source_magnitude (source_amplitude is a Sérsic amp)")

    if source_kind == "stamps":
        if images is None or meta is None:
            raise ValueError("sr source 'stamps' needs the stamp images and their metadata")
        images = np.asarray(images)
        check_stamps(images, meta)
        if n > 0 and len(images) == 0:
            raise ValueError("no source stamps to simulate from")
        idx = rng.integers(0, len(images), size=n) if n > 0 else np.zeros(0, dtype=int)
    else:
        idx = np.full(n, -1, dtype=np.int64)
    src = {name: sample_prior(priors[name], rng, n, name=name) for name in SR_SOURCE_PARAMETERS[:-1]}
    src[brightness] = sample_prior(priors[brightness], rng, n, name=brightness)
    lens_priors = {k: priors[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y") if k in priors}
    lens_priors["theta_E"] = resolve_theta_E(lens_priors.get("theta_E", 1.0))
    lens_priors.update(gamma=2.0, gamma1=0.0, gamma2=0.0)
    params = draw_lens_parameters(lens_model, lens_priors, rng, n)
    noise_cfg = dict(cfg.get("noise", {}))
    exposures = exposure_time(noise_cfg, rng, n)

    psf_cfg = cfg.get("psf", {})
    lens_list = [lens_model]
    light = "INTERPOL" if source_kind == "stamps" else "SERSIC_ELLIPSE"
    # the low-res PSF convolution on the sub-pixels (an image PSF of ~1 low-res pixel is undersampled there)
    lr = LensedImageRenderer(lr_pix, lr_scale, lens_list, light, make_psf(psf_cfg, lr_scale), lr_ss,
                             supersampling_convolution=True)
    hr = LensedImageRenderer(hr_pix, hr_scale, lens_list, light, make_psf(psf_cfg, hr_scale, factor), ss)
    shot_only = {"model": "additive", "poisson": True, "background_rms": 0.0}

    out = {
        "low_res": np.empty((n, lr_pix, lr_pix), np.float32),
        "low_res_noiseless": np.empty((n, lr_pix, lr_pix), np.float32),
        "high_res": np.empty((n, hr_pix, hr_pix), np.float32),
        "noise_sigma": np.zeros((n, lr_pix, lr_pix), np.float32),
        "source_high_res": np.empty((n, hr_pix, hr_pix), np.float32),
    }
    stamp_scale = np.full(n, np.nan)
    amplitude = np.full(n, np.nan)
    flux = np.full(n, np.nan)
    records = params.to_dict("records")
    desc = f"simulate_sr {cfg.get('set', '')} {lens_model} {noise_variant}".replace("  ", " ")
    with _progress(n, desc, progress) as bar:
        for i in range(n):
            _, kw_lens = lens_kwargs(lens_model, records[i], with_shear=False)
            if source_kind == "stamps":
                flux[i] = magnitude_to_counts(src["source_magnitude"][i], cfg["magnitude_zero_point"])
                stamp = taper_sources(images[idx[i]], cfg.get("source_taper_fraction", 0.0))
                stamp_scale[i] = src["source_R_sersic"][i] / max(half_light_radius(stamp), 0.5)
                kw_src = [_interpol_kwargs(stamp, stamp_scale[i], flux[i], src["source_x"][i], src["source_y"][i])]
            else:
                kw = {"amp": 1.0, "R_sersic": src["source_R_sersic"][i], "n_sersic": src["source_n_sersic"][i],
                      "e1": src["source_e1"][i], "e2": src["source_e2"][i],
                      "center_x": src["source_x"][i], "center_y": src["source_y"][i]}
                unit_flux = hr.source_model.total_flux([kw])[0]
                if brightness == "source_amplitude":
                    amplitude[i] = src["source_amplitude"][i]
                    flux[i] = amplitude[i] * unit_flux
                else:
                    flux[i] = magnitude_to_counts(src["source_magnitude"][i], cfg["magnitude_zero_point"])
                    amplitude[i] = flux[i] / unit_flux
                kw["amp"] = amplitude[i]
                kw_src = [kw]
            lo, _ = lr.render(kw_lens, kw_src, unlensed=False)
            hi, source_hr = hr.render(kw_lens, kw_src, psf=hr_psf)
            out["low_res_noiseless"][i] = lo
            out["high_res"][i] = hi
            out["source_high_res"][i] = source_hr
            if noise_variant == "noiseless":
                out["low_res"][i] = lo
            else:
                noisy, sigma = add_noise(lo, noise_cfg if noise_variant == "noisy" else shot_only, rng,
                                         exposure_time_s=exposures[i])
                out["low_res"][i] = noisy
                out["noise_sigma"][i] = sigma
            bar.update()
    out["lens_params"] = params[list(LENS_PARAMETERS)].to_numpy(dtype=np.float32)

    if source_kind == "stamps":
        ids = meta["source_id"].to_numpy()[idx].astype(str) if n else np.array([], dtype=str)
        kinds = meta["kind"].to_numpy()[idx].astype(str) if ("kind" in meta and n) else np.full(n, "unknown")
    else:
        ids = np.array([f"{id_prefix}-{i:06d}" for i in range(n)], dtype=object)
        kinds = np.full(n, "sersic", dtype=object)
    table = pd.DataFrame({
        "source_id": np.asarray(ids, dtype=object),
        "kind": np.asarray(kinds, dtype=object),
        "stamp_index": idx.astype(np.int64),
        "lens_model": np.full(n, lens_model, dtype=object),
    })
    for name in LENS_PARAMETERS:
        table[name] = params[name].to_numpy(dtype=float)
    for name in SR_SOURCE_PARAMETERS[:-1]:
        table[name] = src[name]
    # the total magnitude of every source (drawn, or from the Sérsic amplitude) and the amplitude used
    table["source_magnitude"] = float(cfg["magnitude_zero_point"]) - 2.5 * np.log10(flux) if n else np.zeros(0)
    table["source_amplitude"] = amplitude
    if source_kind == "stamps":
        # For stamps, source_R_sersic is the stamp's half-light radius on the sky; the Sérsic
        # shape parameters were drawn (keeping the random stream aligned) but not used.
        for name in ("source_n_sersic", "source_e1", "source_e2"):
            table[name] = np.nan
    table["source_pixel_scale_arcsec"] = stamp_scale
    table["exposure_time_s"] = np.asarray(exposures, dtype=float)
    table["edge_peak_fraction"] = edge_peak_fraction(out["high_res"]) if n else np.zeros(0)
    table["edge_peak_fraction_low_res"] = edge_peak_fraction(out["low_res_noiseless"]) if n else np.zeros(0)
    return out, table


#: What each preset is, for the datasets' descriptions and the docs.
SR_PRESET_DESCRIPTIONS: dict[str, str] = {
    "model_i": "DeepLenseSim Model_I exactly as study 001 (LensSR) simulated it: 75x75 at 0.05\" -> 150x150 at "
               "0.025\", theta_E of a 1e12 Msun point mass (z 0.5 -> 1, flat LCDM H0 70, Om 0.3; DeepLenseSim's "
               "luminosity-distance relation), SIE e1 0.1, e2 0; Sersic source amp 20, R 0.25\", n 1, e1 -0.1, "
               "e2 0.1, centre U(-0.35, 0.35)\"; no PSF; exposure 10^U(3, 3.5) s, background rms 0.01, Poisson",
    "broad": "broad priors for generalisation (theta_E, lens ellipticity and centre, Sersic shape, size, "
             "brightness and position all drawn; Gaussian PSF; fixed exposure)",
}


def sr_attrs(cfg: Mapping[str, Any], lens_model: str, noise_variant: str, hr_psf: bool = True) -> dict[str, Any]:
    """Root attributes of a super-resolution dataset (``cfg``: :func:`sourcelens.config.sr_set_config`)."""
    factor = int(cfg["factor"])
    lr_pix, lr_scale = int(cfg["low_res_num_pix"]), float(cfg["low_res_pixel_scale_arcsec"])
    ss = int(cfg.get("supersampling", 1))
    name, preset = cfg.get("set", ""), cfg.get("preset", "")
    source = cfg.get("source", "sersic")
    what = SR_PRESET_DESCRIPTIONS.get(preset, f"preset {preset}")
    if source == "stamps":
        what = f"{what}; sources: the project's galaxy stamps (kinds in the table), not Sérsic profiles"
    priors = dict(cfg.get("priors", {}))
    theta_spec = priors.get("theta_E")
    priors["theta_E"] = resolve_theta_E(theta_spec)
    noise = {"noiseless": {}, "poisson": {"model": "additive", "poisson": True, "background_rms": 0.0,
                                          "exposure_time_s": cfg.get("noise", {}).get("exposure_time_s")},
             "noisy": dict(cfg.get("noise", {}))}.get(noise_variant, {})
    return {
        "description": f"Super-resolution pairs (study 001), set '{name}' ({what}), lenstronomy {lens_model}, "
                       f"{noise_variant} low-resolution images",
        "sr_set": name,
        "preset": preset,
        "simulator": "lenstronomy",
        "lens_model": lens_model,
        "lens_model_list": [lens_model],
        "lens_parameters": list(LENS_PARAMETERS),
        "noise_variant": noise_variant,
        "source": source,
        "priors": priors,
        "theta_E_from": theta_spec if isinstance(theta_spec, Mapping) else "prior",
        "factor": factor,
        "low_res_num_pix": lr_pix,
        "low_res_pixel_scale_arcsec": lr_scale,
        "high_res_num_pix": lr_pix * factor,
        "high_res_pixel_scale_arcsec": lr_scale / factor,
        "field_of_view_arcsec": lr_pix * lr_scale,
        "supersampling": ss,
        "low_res_supersampling": int(cfg.get("low_res_supersampling") or ss * factor),
        "psf": _psf_description(cfg.get("psf", {})),
        "noise": noise,
        "magnitude_zero_point": float(cfg["magnitude_zero_point"]),
        "units": UNITS,
        "coordinates": COORDINATES,
        "high_res_psf_convolved": bool(hr_psf),
        "truth_convention": (
            "high_res: noiseless, convolved with the same PSF (same FWHM in arcsec) as low_res, so the "
            "task is super-resolution, not deconvolution" if hr_psf else
            "high_res: noiseless and not PSF-convolved (super-resolution plus deconvolution)"
        ) + "; source_high_res: unlensed source on the high-res grid, no PSF",
    }


def sr_array_attrs(hr_psf: bool = True) -> dict[str, dict[str, str]]:
    """Per-array ``units``/``description`` attributes of a super-resolution dataset."""
    return {
        "low_res": {"units": UNITS, "description": "low-resolution lensed image, PSF-convolved (with noise for the "
                    "'noisy' and 'poisson' variants)"},
        "low_res_noiseless": {"units": UNITS, "description": "low-resolution lensed image, PSF-convolved, no noise"},
        "high_res": {"units": UNITS, "description": "high-resolution lensed image, no noise"
                     + (", PSF-convolved" if hr_psf else ", no PSF")},
        "noise_sigma": {"units": UNITS, "description": "per-pixel noise sigma of low_res (zeros when noiseless)"},
        "source_high_res": {"units": UNITS, "description": "unlensed source on the high-res grid, no PSF"},
        "lens_params": {"units": "arcsec (theta_E, center_x, center_y); dimensionless otherwise",
                        "description": "columns: " + ", ".join(LENS_PARAMETERS)},
    }

