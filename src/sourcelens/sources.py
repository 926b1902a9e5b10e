"""Raw galaxy images of each source kind, before preprocessing.

- ``cosmos``: real HST/ACS F814W galaxies from a RealGalaxyCatalog directory, as observed;
- ``cosmos_fit``: GalSim's parametric fits of COSMOS galaxies, drawn with each galaxy's PSF and noise;
- ``parametric``: GalSim Sérsic and bulge+disk galaxies from priors, optionally with RandomKnots, with an
  HST-like PSF and noise;
- ``xdf``: galaxies detected in the Hubble eXtreme Deep Field picture that scikit-image ships: an 8-bit,
  display-stretched JPEG, so morphology only (``flux_linear`` False).

Drawn kinds keep their noiseless image (``truth``) for evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

log = logging.getLogger(__name__)

F814W_ZERO_POINT = 25.94  # AB magnitude of 1 e-/s for HST ACS/WFC F814W


@dataclass
class RawGalaxy:
    """A galaxy image at its native pixel scale with what is known about it.

    ``truth``: the noiseless image where it is known (drawn galaxies), else None; ``noise_sigma``: the per-pixel
    noise sigma of ``image`` (None: estimate it from the outskirts); ``flux_linear``: False for images that are not
    linear in flux (the display-stretched XDF picture), which never enter flux, χ² or photometry figures;
    ``galaxy_id``: the galaxy on the sky, shared by a real COSMOS stamp and its fitted profile, so that splits by
    galaxy keep them together.
    """

    image: np.ndarray
    pixel_scale_arcsec: float
    source_id: str
    kind: str
    magnitude: float = float("nan")
    redshift: float = float("nan")
    noise_sigma: float | None = None
    truth: np.ndarray | None = None
    flux_linear: bool = True
    galaxy_id: str | None = None   # the physical galaxy (a real stamp and its fit share it); default source_id
    masked_fraction: float | None = None   # of the observed image, where ``image`` was redrawn (None: measure it)


def _noise_sigma(noise_variance: float) -> float | None:
    return float(np.sqrt(noise_variance)) if np.isfinite(noise_variance) and noise_variance > 0 else None


def cosmos_galaxies(selection: pd.DataFrame, directory: str | Path, file_name: str | None = None,
                    rng: np.random.Generator | None = None, min_pixels: int = 0) -> Iterator[RawGalaxy]:
    """Real COSMOS galaxies of a catalogue selection (:func:`sourcelens.catalog.select_cosmos`): the HST stamps as
    observed (PSF-convolved, with their noise; sigma from the catalogue's noise variance).

    A stamp smaller than ``min_pixels`` is drawn larger with GalSim (the RealGalaxy reconvolved with its own
    HST PSF, which gives back the observed image) on a background of noise with the catalogue's correlation
    function (GalSim's noise padding; draws seeded from ``rng``), so that galaxies smaller than the output
    stamp keep their native pixel scale instead of being interpolated finer. The masked fraction is that of
    the observed stamp.
    """
    import galsim

    from .catalog import check_image_files, find_catalogue_file

    directory = Path(directory)
    cat_file = find_catalogue_file(directory, file_name)
    check_image_files(directory, selection)
    rgc = galsim.RealGalaxyCatalog(cat_file.name, dir=str(directory))
    rng = rng or np.random.default_rng(0)
    for row in selection.itertuples():
        img = rgc.getGalImage(int(row.index))
        observed = np.array(img.array, dtype=np.float64)
        image, scale = observed, float(img.scale)
        seed = int(rng.integers(1, 2**31 - 1))
        if max(observed.shape) < min_pixels:
            n = int(min_pixels)
            gal = galsim.RealGalaxy(rgc, index=int(row.index), noise_pad_size=n * scale, rng=galsim.BaseDeviate(seed))
            image = galsim.Convolve(gal, gal.original_psf).drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array
        yield RawGalaxy(np.array(image, dtype=np.float64), scale, f"cosmos-{row.ident}", "cosmos", float(row.mag),
                        float(row.zphot), _noise_sigma(row.noise_variance), galaxy_id=f"cosmos-{row.ident}",
                        masked_fraction=float((observed == 0).mean()))


def cosmos_fit_galaxies(selection: pd.DataFrame, directory: str | Path, file_name: str | None,
                        rng: np.random.Generator, noise: bool = True) -> Iterator[RawGalaxy]:
    """GalSim's parametric fits (Sérsic or bulge + disk) of the COSMOS galaxies of a selection, each convolved
    with its own HST PSF (the catalogue's PSF image), drawn at the catalogue pixel scale on a stamp of 16
    half-light radii, with (``noise``) Gaussian noise of the catalogue's noise variance drawn from ``rng``.
    ``truth`` is the noiseless drawing. Needs the catalogue's ``_fits`` file, not its galaxy images."""
    import galsim

    from .catalog import find_catalogue_file

    directory = Path(directory)
    cat_file = find_catalogue_file(directory, file_name)
    cc = galsim.COSMOSCatalog(cat_file.name, dir=str(directory), exclusion_level="none", use_real=False)
    rgc = galsim.RealGalaxyCatalog(cat_file.name, dir=str(directory))
    for row in selection.itertuples():
        scale = float(row.pixel_scale_arcsec)
        gal = cc.makeGalaxy(int(row.index), gal_type="parametric")
        obj = galsim.Convolve(gal, rgc.getPSF(int(row.index)))
        hlr = float(row.size_arcsec) if np.isfinite(row.size_arcsec) else 0.5
        n = int(np.clip(2 * np.ceil(8 * max(hlr, 0.1) / scale), 64, 512))
        truth = np.array(obj.drawImage(nx=n, ny=n, scale=scale).array, dtype=np.float64)
        sigma = _noise_sigma(row.noise_variance) if noise else None
        image = truth + rng.standard_normal(truth.shape) * sigma if sigma else truth.copy()
        yield RawGalaxy(image, scale, f"cosmosfit-{row.ident}", "cosmos_fit", float(row.mag), float(row.zphot),
                        sigma or 0.0, truth, galaxy_id=f"cosmos-{row.ident}")


def parametric_galaxies(cfg: Mapping[str, Any], rng: np.random.Generator) -> Iterator[RawGalaxy]:
    """GalSim parametric galaxies drawn from realistic distributions (HST-like resolution).

    Magnitudes follow the faint-galaxy number counts, dN/dm ∝ 10^(0.3 m); half-light radii are
    log-uniform; ellipticities Gaussian per component
    (|g| < 0.8); a fraction are bulge (de Vaucouleurs) + exponential disk, some disks carrying
    RandomKnots star-forming clumps.
    """
    import galsim

    n = int(cfg["n_galaxies"])
    scale = float(cfg["pixel_scale_arcsec"])
    psf = galsim.Gaussian(fwhm=float(cfg["psf_fwhm_arcsec"]))
    m_lo, m_hi = cfg["mag_range"]
    # inverse-CDF sampling of p(m) ∝ 10^(0.3 m) on [m_lo, m_hi]
    a = 0.3 * np.log(10)
    u = rng.uniform(size=n)
    mags = np.log(np.exp(a * m_lo) + u * (np.exp(a * m_hi) - np.exp(a * m_lo))) / a
    hlr = np.exp(rng.uniform(np.log(cfg["hlr_arcsec"][0]), np.log(cfg["hlr_arcsec"][1]), size=n))
    is_bd = rng.uniform(size=n) < cfg["bulge_disk_fraction"]
    has_knots = rng.uniform(size=n) < cfg["knots_fraction"]
    sersic_n = rng.uniform(cfg["sersic_n"][0], cfg["sersic_n"][1], size=n)
    bulge_frac = rng.uniform(0.1, 0.6, size=n)
    g = rng.normal(0.0, cfg["ellipticity_sigma"], size=(n, 2))
    gnorm = np.hypot(g[:, 0], g[:, 1])
    g *= np.where(gnorm > 0.8, 0.8 / np.maximum(gnorm, 1e-12), 1.0)[:, None]
    angles = rng.uniform(0, 180, size=n)
    knot_seeds = rng.integers(1, 2**31 - 1, size=n)
    noise_seeds = rng.integers(1, 2**31 - 1, size=n)
    for i in range(n):
        flux = 10 ** (-0.4 * (mags[i] - F814W_ZERO_POINT))
        if is_bd[i]:
            disk = galsim.Exponential(half_light_radius=hlr[i])
            if has_knots[i]:
                knots = galsim.RandomKnots(npoints=int(cfg["n_knots"]), half_light_radius=hlr[i],
                                           flux=1.0, rng=galsim.BaseDeviate(int(knot_seeds[i])))
                disk = 0.7 * disk + 0.3 * knots
            bulge = galsim.DeVaucouleurs(half_light_radius=0.4 * hlr[i])
            gal = bulge_frac[i] * bulge + (1 - bulge_frac[i]) * disk
        else:
            gal = galsim.Sersic(n=float(sersic_n[i]), half_light_radius=hlr[i])
        gal = gal.shear(g1=g[i, 0], g2=g[i, 1]).rotate(angles[i] * galsim.degrees).withFlux(flux)
        obj = galsim.Convolve(gal, psf)
        npix = int(np.clip(2 * np.ceil(8 * hlr[i] / scale), 64, 512))
        truth = np.array(obj.drawImage(nx=npix, ny=npix, scale=scale).array, dtype=np.float64)
        sigma = float(cfg["noise_sigma"])
        arr = truth + np.random.default_rng(int(noise_seeds[i])).normal(0.0, sigma, size=truth.shape) if sigma \
            else truth.copy()
        kind_detail = "bulge+disk" + ("+knots" if has_knots[i] else "") if is_bd[i] else "sersic"
        log.debug("parametric %d: %s mag=%.2f hlr=%.2f", i, kind_detail, mags[i], hlr[i])
        yield RawGalaxy(arr, scale, f"parametric-{i:05d}", "parametric", float(mags[i]), float("nan"), sigma, truth)


def xdf_picture() -> np.ndarray:
    """The Hubble eXtreme Deep Field picture shipped by scikit-image, as a float luminance image."""
    from skimage import data
    from skimage.color import rgb2gray

    return rgb2gray(data.hubble_deep_field()).astype(np.float64)


def xdf_galaxies(cfg: Mapping[str, Any]) -> Iterator[RawGalaxy]:
    """Isolated galaxies detected in the XDF picture, largest first, as square cut-outs.

    Detection: background-subtracted, lightly smoothed luminance above ``threshold_sigma`` × the
    MAD sigma; segments touching the picture edge or with a comparably bright neighbour inside
    the cut-out are skipped; other segments inside a cut-out are replaced by background noise.
    """
    from skimage.measure import label, regionprops

    from .stamps import MAD_TO_SIGMA

    pic = xdf_picture()
    bkg = np.median(pic)
    sigma = MAD_TO_SIGMA * np.median(np.abs(pic - bkg))
    img = pic - bkg
    smooth = ndimage.gaussian_filter(img, 1.5)
    labels = label(smooth > cfg["threshold_sigma"] * sigma)
    regions = sorted(
        (r for r in regionprops(labels, intensity_image=img) if r.area >= cfg["min_area_pix"]),
        key=lambda r: r.area, reverse=True,
    )
    h, w = img.shape
    n_out = 0
    for r in regions:
        if n_out >= cfg["max_galaxies"]:
            break
        cy, cx = r.centroid_weighted if hasattr(r, "centroid_weighted") else r.weighted_centroid
        half = int(np.ceil(max(2.5 * r.equivalent_diameter_area, 24)))
        y0, y1, x0, x1 = int(cy) - half, int(cy) + half + 1, int(cx) - half, int(cx) + half + 1
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            continue
        cut = img[y0:y1, x0:x1].copy()
        lab = labels[y0:y1, x0:x1]
        others = (lab != 0) & (lab != r.label)
        other_flux = cut[others].sum()
        if other_flux > 0.5 * r.image_intensity.sum():
            continue  # blended with a comparably bright neighbour
        fill = ndimage.binary_dilation(others, iterations=2) & (lab != r.label)
        cut[fill] = np.random.default_rng(int(r.label)).normal(0.0, sigma, size=int(fill.sum()))
        n_out += 1
        yield RawGalaxy(cut, float(cfg["pixel_scale_arcsec"]), f"xdf-{r.label:05d}", "xdf",
                        noise_sigma=float(sigma), flux_linear=False)


def draw_sources(sources: Mapping[str, Any], selection: pd.DataFrame, seed: int, stamp_size: int = 0
                 ) -> Iterator[RawGalaxy]:
    """Every configured kind's raw galaxies (``sources`` = the config section; ``selection`` = the catalogue
    selections of :func:`sourcelens.catalog.select_sources`), in the order cosmos, cosmos_fit, parametric, xdf;
    real stamps smaller than ``stamp_size`` + 32 pixels are noise-padded to that size (:func:`cosmos_galaxies`).
    Random draws come from seeds derived from ``seed``."""
    from .config import rng_for
    from .samples import catalogue_dir

    kinds = sources["kinds"]
    if "cosmos" in kinds:
        block = sources["cosmos"]
        yield from cosmos_galaxies(selection[selection["kind"] == "cosmos"], catalogue_dir(block), block["file_name"],
                                   rng_for(seed, "stamps", "cosmos"), int(stamp_size) + 32 if stamp_size else 0)
    if "cosmos_fit" in kinds:
        block = sources["cosmos_fit"]
        yield from cosmos_fit_galaxies(selection[selection["kind"] == "cosmos_fit"], catalogue_dir(block),
                                       block["file_name"], rng_for(seed, "stamps", "cosmos_fit"), block["noise"])
    if "parametric" in kinds:
        yield from parametric_galaxies(sources["parametric"], rng_for(seed, "stamps", "parametric"))
    if "xdf" in kinds:
        yield from xdf_galaxies(sources["xdf"])
