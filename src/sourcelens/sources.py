"""Raw galaxy images of each source kind, before preprocessing.

- ``cosmos``: real HST/ACS F814W galaxies (or GalSim's parametric fits of them) from a
  RealGalaxyCatalog directory;
- ``parametric``: GalSim Sérsic and bulge+disk galaxies, optionally with RandomKnots;
- ``xdf``: galaxies detected in the Hubble eXtreme Deep Field picture that scikit-image ships.
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
    """A galaxy image at its native pixel scale with what is known about it."""

    image: np.ndarray
    pixel_scale_arcsec: float
    source_id: str
    kind: str
    magnitude: float = float("nan")
    redshift: float = float("nan")
    noise_sigma: float | None = None  # None: estimate from the outskirts


def cosmos_galaxies(
    selection: pd.DataFrame, directory: str | Path, file_name: str | None, galaxy_type: str = "real",
    psf_fwhm_arcsec: float = 0.08,
) -> Iterator[RawGalaxy]:
    """COSMOS galaxies of a catalogue selection (see :func:`sourcelens.catalog.select_cosmos`).

    ``real``: the HST stamps as observed (PSF-convolved, with noise); ``parametric``: GalSim's
    fitted Sérsic/bulge+disk models drawn noiseless at the COSMOS pixel scale with an
    HST-like Gaussian PSF of ``psf_fwhm_arcsec``.
    """
    import galsim

    from .catalog import check_image_files, find_catalogue_file

    directory = Path(directory)
    cat_file = find_catalogue_file(directory, file_name)
    if galaxy_type == "real":
        check_image_files(directory, selection)
        rgc = galsim.RealGalaxyCatalog(cat_file.name, dir=str(directory))
        for row in selection.itertuples():
            img = rgc.getGalImage(int(row.index))
            yield RawGalaxy(np.array(img.array, dtype=np.float64), float(img.scale), f"cosmos-{row.ident}",
                            "cosmos", float(row.mag), float(row.zphot),
                            float(np.sqrt(row.noise_variance)) if np.isfinite(row.noise_variance) else None)
    elif galaxy_type == "parametric":
        cc = galsim.COSMOSCatalog(cat_file.name, dir=str(directory), exclusion_level="none", use_real=False)
        psf = galsim.Gaussian(fwhm=psf_fwhm_arcsec)
        scale = 0.03
        for row in selection.itertuples():
            gal = cc.makeGalaxy(int(row.index), gal_type="parametric", noise_pad_size=0)
            obj = galsim.Convolve(gal, psf)
            n = int(np.clip(2 * np.ceil(6 * max(float(row.size_arcsec) if np.isfinite(row.size_arcsec) else 0.5, 0.1) / scale), 48, 384))
            img = obj.drawImage(nx=n, ny=n, scale=scale)
            yield RawGalaxy(np.array(img.array, dtype=np.float64), scale, f"cosmos-{row.ident}", "cosmos",
                            float(row.mag), float(row.zphot), 0.0)
    else:
        raise ValueError(f"unknown galaxy_type '{galaxy_type}' (allowed: real, parametric)")


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
    psf = galsim.Gaussian(fwhm=0.08)
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
        npix = int(np.clip(2 * np.ceil(5 * hlr[i] / scale), 64, 384))
        img = obj.drawImage(nx=npix, ny=npix, scale=scale)
        arr = np.array(img.array, dtype=np.float64)
        sigma = 0.0
        if cfg["noise_sigma"] > 0:
            sigma = cfg["noise_sigma"] * arr.max()
            arr += np.random.default_rng(int(noise_seeds[i])).normal(0.0, sigma, size=arr.shape)
        kind_detail = "bulge+disk" + ("+knots" if has_knots[i] else "") if is_bd[i] else f"sersic"
        log.debug("parametric %d: %s mag=%.2f hlr=%.2f", i, kind_detail, mags[i], hlr[i])
        yield RawGalaxy(arr, scale, f"parametric-{i:05d}", "parametric", float(mags[i]), float("nan"), sigma)


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
                        noise_sigma=float(sigma))
