"""Multi-band blends of galaxies for deblending (study 003, Arcelin et al. 2021), drawn with GalSim.

Why GalSim directly and not the Blending ToolKit (``blending-toolkit``, LSST DESC): its 1.0.9 pins numpy < 2.4
and astropy < 7, while this environment has numpy 2.4 and astropy 8, and it ships no galaxy catalogue (it would
need a CatSim-style table with Euclid magnitudes built from our galaxies anyway). What it would give — isolated
noiseless images beside each blend, a custom sampling function (centre + ring), survey constants from
surveycodex — is done here in a few hundred lines, with the project's seeds, shards and HDF5 layout.

Scene (one sample)
------------------
* A central galaxy plus, for the ``blended`` sample, ``n_neighbours`` (uniform integer in the configured range,
  default 0–3, as the study's 1–4 galaxies) neighbours at a distance uniform in area on the annulus
  ``neighbour_radius_arcsec`` (default 0.325–1.5″, the study's) from the central one, at a uniform angle. With
  ``central_brightest`` (the study's choice) the brightest galaxy (r band) is put at the centre. The central galaxy
  sits at the stamp centre, shifted by up to ± ``central_offset_arcsec`` per axis (default 0). The ``isolated``
  sample is the central galaxy alone.
* Galaxies (``blends.galaxies``): parametric bulge (de Vaucouleurs) + exponential disk, some disks with
  ``galsim.RandomKnots`` star-forming clumps, r magnitudes from number counts dN/dm ∝ 10^(slope m), log-uniform
  half-light radii, Gaussian intrinsic shapes (|g| < 0.8); or, with ``cosmos_fraction`` > 0 and the split's stamps
  given, real HST COSMOS galaxies (stamps of kind ``cosmos`` as ``galsim.InterpolatedImage`` at their own pixel
  scale, scaled to the drawn r magnitude; their HST PSF (≈ 0.1″) is kept, and so is their HST noise, which
  becomes part of the "noiseless" target: negligible behind the LSST PSF, but in the Euclid bands the faint
  shipped sample's smoothed noise reaches 10–20 % of the peak — use a bright downloaded sample for real galaxies).
* Colours (the SED model): each component has an AB colour m_b − m_r per band from :data:`SED_COLOURS` — an old
  bulge, a star-forming disk and young blue knots, rough template colours of galaxies at z ≈ 0.5–1
  (illustrative, not fitted to a survey) — plus one Gaussian offset per galaxy and band (``colour_scatter``, none
  in r), so that colour gradients exist (bulge redder than disk, knots bluest) and galaxies differ in colour. A
  real galaxy is one component with the colours of a bulge + disk mix of a drawn bulge-to-total ratio. A galaxy's
  magnitude in a band is that of the sum of its components' fluxes (the ``mag_*`` columns: exact, not measured).

Drawing and resampling
----------------------
Every band is drawn on ONE common grid of ``stamp_size`` pixels (64) of ``grid_pixel_scale_arcsec`` (default
0.2″ for ``lsst``, LSST's pixel; 0.1″ for ``lsst_euclid``, Euclid VIS's pixel). A band observed with native pixels
p is the profile convolved with its PSF and with a box pixel of p; resampling that image to the grid is done
exactly by sampling the pixel-convolved profile at the grid's pixel centres (no interpolation kernel): the
effective pixel response is a box of max(p, grid scale) — for a grid coarser than the native pixels, rebinning.
The convolution is done in Fourier space: each galaxy component's k-space image (GalSim ``drawKImage`` of the
unit-flux sheared profile) is shifted by a phase, weighted by its flux in each band, multiplied by the band's PSF ⊗
pixel transform and inverse-FFT'd on a grid twice the stamp's size (no wrap-around), then cut to the stamp. Flux is
conserved exactly (the k = 0 value); the image is band-limited at the grid's Nyquist frequency.

Study 003's own code drew each band at its native pixel scale on 64 × 64 pixels (fields of 6.4″ VIS, 12.8″ LSST,
19.2″ NISP) rather than on one grid; the common grid here follows the issue and keeps every band aligned pixel by
pixel.

Noise and units
---------------
Images are in electrons per grid pixel for the band's full exposure, sky-subtracted. Noise is Poisson noise of
the sky (``sky_brightness`` over the grid pixel's area) plus, with ``source_poisson`` (default), of the
galaxies' own electrons, drawn on the common grid: ``blend = Poisson(scene + sky) − sky``. Its per-area variance
equals the band's at its native pixels (the same S/N in any aperture larger than a native pixel) but it is white
on the grid, not correlated as a resampled native image's would be. ``noise_sigma`` (N, B) is the background
σ = √sky per grid pixel.

S/N of a galaxy in a band: the optimal (matched-filter) S/N of its noiseless image I on the stamp with the sky
level s per pixel, √(Σ I² / (I + s)) (as the study's ``utils.SNR`` and BTK's). Blendedness of a galaxy (r band, as
BTK's): 1 − ⟨S_c, S_c⟩ / ⟨S_all, S_c⟩ with S_c its noiseless image and S_all the noiseless scene (0 when alone).

Normalisation (the study's): ``tanh(arcsinh(x / (I_b / β)))`` with β = 2.5 and I_b per band
(:func:`normalise`; exact inverse :func:`denormalise`). I_b is the ``normalisation.peak_quantile`` quantile of the
galaxies' peak pixel values in band b over a fixed calibration set of ``normalisation.n_calibration`` isolated
noiseless parametric galaxies drawn with a seed derived from (config seed, band set) only. The study took the
maximum over its training sample (quantile 1); a lower quantile (default 0.75) lifts a typical galaxy's core from
~0.05 towards 0.9, where the sigmoid outputs and their cross-entropy gradients are not vanishingly small and small
networks learn shapes in minutes, at the price of squeezing the brightest cores against 1. A fixed calibration set
gives every shard, sample and split of a band set the same I_b (file attribute ``normalisation_scale``).

All random numbers come from the numpy Generator passed in (GalSim's knots from seeds drawn from it), so one seed
gives byte-identical outputs. This module never imports snakemake.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .surveys import Band, band_set, electrons_to_magnitude

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLES",
    "SED_COLOURS",
    "CATALOGUE_COLUMNS",
    "NORMALISATION_BETA",
    "bands_for",
    "normalise",
    "denormalise",
    "BlendRenderer",
    "simulate_blends",
    "normalisation_scales",
    "blends_attrs",
    "blends_array_attrs",
    "catalogue_columns",
    "snr",
    "blendedness",
]

#: The two samples of every band set and split: the central galaxy alone, and blends.
SAMPLES: tuple[str, ...] = ("isolated", "blended")
NORMALISATION_BETA = 2.5
UNITS = "electrons per pixel (full exposure, sky-subtracted)"
COORDINATES = ("stamp centred on (0, 0) arcsec; img[row, col] at x=(col-(N-1)/2)*pixel_scale, "
               "y=(row-(N-1)/2)*pixel_scale (x grows with column, y with row); the central galaxy at "
               "(central_dx_arcsec, central_dy_arcsec)")

#: AB colour m_b − m_r of each galaxy component per band (the SED model; illustrative template colours of an old
#: bulge, a star-forming disk and young star-forming knots at z ≈ 0.5–1; negative = brighter than in r).
SED_COLOURS: dict[str, dict[str, float]] = {
    "bulge": {"u": 2.6, "g": 1.2, "r": 0.0, "i": -0.7, "z": -1.1, "y": -1.35,
              "IE": -0.45, "YE": -1.6, "JE": -1.95, "HE": -2.25},
    "disk": {"u": 0.9, "g": 0.4, "r": 0.0, "i": -0.3, "z": -0.45, "y": -0.55,
             "IE": -0.2, "YE": -0.7, "JE": -0.9, "HE": -1.1},
    "knots": {"u": 0.2, "g": 0.05, "r": 0.0, "i": -0.1, "z": -0.15, "y": -0.2,
              "IE": -0.05, "YE": -0.3, "JE": -0.4, "HE": -0.5},
}
#: Columns of the ``catalogue`` array before the magnitudes (one ``mag_<band>`` per band follows).
CATALOGUE_COLUMNS: tuple[str, ...] = ("dx_arcsec", "dy_arcsec", "hlr_arcsec", "snr_r", "blendedness_r")


def catalogue_columns(bands: Sequence[str]) -> list[str]:
    """The columns of the ``catalogue`` array's last axis for ``bands``."""
    return list(CATALOGUE_COLUMNS) + [f"mag_{b}" for b in bands]


# --------------------------------------------------------------------------------------------
# Normalisation (study 003)
# --------------------------------------------------------------------------------------------
def _band_scales(scales, ndim: int) -> np.ndarray:
    s = np.asarray(scales, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"normalisation scales must be one value per band, got shape {s.shape}")
    if np.any(~(s > 0)):
        raise ValueError(f"normalisation scales must be positive, got {s}")
    if ndim < 3:
        raise ValueError("images must have a band axis before (height, width): (..., B, H, W)")
    return s.reshape((-1, 1, 1))


def normalise(images: np.ndarray, scales, beta: float = NORMALISATION_BETA) -> np.ndarray:
    """The study's normalisation ``tanh(arcsinh(x / (I_b / beta)))`` of images (..., B, H, W), band by band.

    tanh(arcsinh(z)) = z / √(1 + z²), computed so (no overflow); the result lies in (−1, 1), sign kept.
    """
    x = np.asarray(images)
    z = x.astype(np.float64) / (_band_scales(scales, x.ndim) / float(beta))
    out = z / np.sqrt(1.0 + z * z)
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)


def denormalise(normalised: np.ndarray, scales, beta: float = NORMALISATION_BETA) -> np.ndarray:
    """The exact inverse of :func:`normalise`: ``(I_b / beta) · sinh(arctanh(y))`` = (I_b/β) · y / √(1 − y²).

    Values at or beyond ±1 (a network's output may reach them) are clipped to the largest float below 1 first.
    """
    y = np.asarray(normalised)
    yy = y.astype(np.float64)
    lim = np.nextafter(1.0, 0.0)
    yy = np.clip(yy, -lim, lim)
    out = yy / np.sqrt(1.0 - yy * yy) * (_band_scales(scales, y.ndim) / float(beta))
    return out.astype(y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def bands_for(cfg: Mapping[str, Any], name: str) -> list[Band]:
    """The bands of band set ``name`` with the config's overrides (``cfg`` = the ``blends`` block)."""
    return band_set(name, cfg.get("survey_overrides") or {}, cfg.get("psf_profile") or {},
                    float(cfg.get("moffat_beta", 2.5)))


def grid_scale(cfg: Mapping[str, Any], name: str) -> float:
    """The common grid's pixel scale of band set ``name`` (arcsec)."""
    scales = cfg.get("grid_pixel_scale_arcsec") or {}
    if name not in scales:
        raise ValueError(f"config key 'blends/grid_pixel_scale_arcsec' has no pixel scale for band set {name!r}")
    return float(scales[name])


class BlendRenderer:
    """Draws galaxies in every band of a band set on one common grid (see the module docstring).

    Works on the half plane of Fourier space of a padded grid (``pad`` × the stamp, real images: ``irfft2``).
    ``kimage(component, dx, dy)``: a unit-flux component's Fourier image placed at (dx, dy) arcsec;
    ``render(G)``: band images (B, N, N) from k-space band images G (B, Np, Np/2 + 1) (the sum of the components'
    kimages weighted by their electrons per band).

    Components (tuples, :func:`_draw_galaxy`): ``("devaucouleurs" | "exponential", hlr, shear matrix)`` — the
    profiles' exact transforms (the exponential's in closed form, de Vaucouleurs' from a table of GalSim's), sheared
    by k → S k; ``("knots", positions (n, 2) arcsec)`` — equal point sources (Σ exp(−i k·x) / n, as a matrix
    sum); ``("galsim", profile)`` — any GalSim profile (its ``drawKImage``; real galaxies).
    """

    def __init__(self, bands: Sequence[Band], pixel_scale_arcsec: float, size: int = 64, pad: int = 2) -> None:
        import galsim

        self.bands = list(bands)
        self.scale = float(pixel_scale_arcsec)
        self.size = int(size)
        self.npad = int(pad) * self.size
        if self.size % 2 or self.npad % 2:
            raise ValueError(f"blends/stamp_size must be even, got {self.size}")
        self.dk = 2.0 * np.pi / (self.npad * self.scale)
        self.ky = np.fft.fftfreq(self.npad, d=1.0 / self.npad) * self.dk          # rows, FFT order
        self.kx = np.arange(self.npad // 2 + 1) * self.dk                          # half plane, kx >= 0
        self.KX, self.KY = np.meshgrid(self.kx, self.ky)
        # the PSF, convolved with the box pixel of max(native, grid) (see the module docstring), per band
        self.transfer = np.stack([
            self._half_plane(galsim.Convolve(b.psf(), galsim.Pixel(max(b.pixel_scale_arcsec, self.scale)))
                             .drawKImage(nx=self.npad, ny=self.npad, scale=self.dk).array) for b in self.bands
        ])
        lo = self.npad // 2 - self.size // 2
        self._crop = slice(lo, lo + self.size)
        # the grid convention puts (0, 0) between the two central pixels: shift by half a pixel
        self._half = -0.5 * self.scale

    def _half_plane(self, full: np.ndarray) -> np.ndarray:
        """GalSim's centred full-plane k-image (Np, Np) as the half plane (Np, Np/2 + 1) in FFT row order (the
        Nyquist column kx = +Np/2 taken from kx = −Np/2, its periodic image)."""
        h = self.npad // 2
        half = np.concatenate([full[:, h:], full[:, :1]], axis=1)
        return np.fft.ifftshift(half, axes=0)

    def _phase(self, x0: float, y0: float) -> np.ndarray:
        return np.exp(-1j * self.ky * y0)[:, None] * np.exp(-1j * self.kx * x0)[None, :]

    def unit_kimage(self, component) -> np.ndarray:
        """A unit-flux component's Fourier image (Np, Np/2 + 1), centred on (0, 0)."""
        kind = component[0]
        if kind in ("exponential", "devaucouleurs"):
            _, hlr, shear = component
            kx = shear[0, 0] * self.KX + shear[1, 0] * self.KY
            ky = shear[0, 1] * self.KX + shear[1, 1] * self.KY
            q = np.sqrt(kx * kx + ky * ky) * hlr
            if kind == "exponential":
                r0 = 1.0 / _EXP_HLR_OVER_R0
                return (1.0 + (q * r0) ** 2) ** -1.5 + 0j
            table_q, table_f = _devaucouleurs_table()
            return np.interp(q, table_q, table_f, right=0.0) + 0j
        if kind == "knots":
            pos = component[1]
            a = np.exp(-1j * self.ky[:, None] * pos[None, :, 1])          # (Np, n)
            b = np.exp(-1j * pos[:, 0, None] * self.kx[None, :])          # (n, Np/2 + 1)
            # a plain sum over knots, not a matrix product: BLAS threads would fight the other jobs for the cores
            return np.einsum("ij,jk->ik", a, b, optimize=False) / len(pos)
        if kind == "galsim":
            return self._half_plane(component[1].drawKImage(nx=self.npad, ny=self.npad, scale=self.dk).array)
        raise ValueError(f"unknown galaxy component {kind!r}")

    def kimage(self, component, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """The Fourier image of a unit-flux ``component`` placed at (dx, dy) arcsec on the stamp."""
        return self.unit_kimage(component) * self._phase(dx + self._half, dy + self._half)

    def render(self, kbands: np.ndarray, band_index: int | None = None) -> np.ndarray:
        """Band images (B, N, N) (or one band's (N, N)) in electrons per grid pixel from k-space images."""
        transfer = self.transfer if band_index is None else self.transfer[band_index]
        img = np.fft.irfft2(kbands * transfer, s=(self.npad, self.npad))
        img = np.fft.fftshift(img, axes=(-2, -1))
        return img[..., self._crop, self._crop]


#: Half-light radius over scale radius of the exponential profile.
_EXP_HLR_OVER_R0 = 1.6783469900166605
_DEV_TABLE: tuple[np.ndarray, np.ndarray] | None = None


def _devaucouleurs_table() -> tuple[np.ndarray, np.ndarray]:
    """GalSim's Fourier transform of the unit-flux de Vaucouleurs profile of half-light radius 1, tabulated on
    k·hlr in [0, 2000] (log-spaced; beyond, 0), built once per process."""
    global _DEV_TABLE
    if _DEV_TABLE is None:
        import galsim

        prof = galsim.DeVaucouleurs(half_light_radius=1.0)
        q = np.concatenate([[0.0], np.geomspace(1e-3, 2e3, 3000)])
        f = np.array([prof.kValue(galsim.PositionD(float(v), 0.0)).real for v in q])
        _DEV_TABLE = (q, f)
    return _DEV_TABLE


def snr(image: np.ndarray, sky: np.ndarray | float, source_poisson: bool = True) -> np.ndarray:
    """Optimal S/N √(Σ I² / (I + sky)) of noiseless images (..., H, W) with ``sky`` electrons per pixel (per band:
    broadcast over (..., 1, 1)); without ``source_poisson`` the variance is the sky alone."""
    img = np.asarray(image, dtype=np.float64)
    var = np.asarray(sky, dtype=np.float64) + (np.clip(img, 0.0, None) if source_poisson else 0.0)
    return np.sqrt(np.sum(img * img / var, axis=(-2, -1)))


def blendedness(own: np.ndarray, scene: np.ndarray) -> float:
    """1 − ⟨S_c, S_c⟩ / ⟨S_all, S_c⟩ (BTK's blendedness) of a galaxy's noiseless image in its noiseless scene."""
    num = float(np.sum(own * own))
    den = float(np.sum(scene * own))
    return 1.0 - num / den if den > 0 else float("nan")


def _power_law_magnitudes(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes from dN/dm ∝ 10^(slope m) on [lo, hi] (inverse CDF)."""
    u = rng.uniform(size=n)
    if slope == 0:
        return lo + u * (hi - lo)
    a = slope * np.log(10.0)
    return np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a


def _colours(components: Sequence[str], bands: Sequence[str], weights: Sequence[float] | None = None) -> np.ndarray:
    """Colour rows (C, B) m_b − m_r of ``components``, or with ``weights`` one mixed row (1, B)."""
    rows = np.array([[SED_COLOURS[c][b] for b in bands] for c in components], dtype=np.float64)
    if weights is None:
        return rows
    flux = np.asarray(weights, dtype=np.float64)[:, None] * 10.0 ** (-0.4 * rows)
    return -2.5 * np.log10(flux.sum(axis=0, keepdims=True))


class _Galaxy:
    """One drawn galaxy: its parameters and unit-flux components (profile, r-band flux fraction, colours)."""

    __slots__ = ("kind", "source_id", "stamp_index", "mag_r", "hlr", "g1", "g2", "bulge_to_total", "knots",
                 "components", "delta", "dx", "dy")


def _draw_galaxy(rng: np.random.Generator, gcfg: Mapping[str, Any], bands: Sequence[str],
                 stamps: np.ndarray | None, stamp_meta: pd.DataFrame | None, source_id: str) -> _Galaxy:
    """Draw one galaxy's parameters (always the same random draws, whatever its kind) and build its components."""
    gal = _Galaxy()
    lo, hi = gcfg["mag_r"]
    gal.mag_r = float(_power_law_magnitudes(rng, 1, lo, hi, float(gcfg["mag_slope"]))[0])
    h_lo, h_hi = gcfg["hlr_arcsec"]
    gal.hlr = float(np.exp(rng.uniform(np.log(h_lo), np.log(h_hi))))
    has_bulge = rng.uniform() < float(gcfg["bulge_probability"])
    bt = float(rng.uniform(*gcfg["bulge_to_total"]))
    gal.bulge_to_total = bt if has_bulge else 0.0
    gal.knots = bool(rng.uniform() < float(gcfg["knots_probability"]))
    g = rng.normal(0.0, float(gcfg["ellipticity_sigma"]), size=2)
    gnorm = float(np.hypot(*g))
    if gnorm > 0.8:
        g *= 0.8 / gnorm
    gal.g1, gal.g2 = float(g[0]), float(g[1])
    knot_seed = int(rng.integers(1, 2**31 - 1))
    gal.delta = rng.normal(0.0, float(gcfg["colour_scatter"]), size=len(bands))
    gal.delta[[i for i, b in enumerate(bands) if b == "r"]] = 0.0
    use_stamp = stamps is not None and len(stamps) > 0 and rng.uniform() < float(gcfg["cosmos_fraction"])
    stamp_index = int(rng.integers(0, len(stamps))) if stamps is not None and len(stamps) else -1
    angle = float(rng.uniform(0.0, 360.0))

    if use_stamp:
        import galsim

        gal.kind, gal.stamp_index = "cosmos", stamp_index
        gal.source_id = str(stamp_meta["source_id"].iloc[stamp_index])
        scale = float(stamp_meta["pixel_scale_arcsec"].iloc[stamp_index])
        img = galsim.Image(np.ascontiguousarray(stamps[stamp_index], dtype=np.float64), scale=scale)
        prof = galsim.InterpolatedImage(img, calculate_stepk=False, calculate_maxk=False).withFlux(1.0)
        prof = prof.rotate(angle * galsim.degrees)
        w = [gal.bulge_to_total, 1.0 - gal.bulge_to_total]
        gal.components = [(("galsim", prof), 1.0, _colours(("bulge", "disk"), bands, w)[0])]
        gal.hlr = gal.g1 = gal.g2 = float("nan")
        gal.knots = False
        return gal

    gal.kind, gal.stamp_index, gal.source_id = "parametric", -1, source_id
    shear = _shear_matrix(gal.g1, gal.g2)
    colours = dict(zip(("bulge", "disk", "knots"), _colours(("bulge", "disk", "knots"), bands)))
    comps = []
    disk_flux = 1.0 - gal.bulge_to_total
    if gal.bulge_to_total > 0:
        comps.append((("devaucouleurs", float(gcfg["bulge_size_ratio"]) * gal.hlr, shear), gal.bulge_to_total,
                      colours["bulge"]))
    if gal.knots:
        f = float(gcfg["knots_flux_fraction"])
        # knot positions follow the disk's exponential profile (as galsim.RandomKnots'), sheared with it
        kr = np.random.default_rng(knot_seed)
        n_knots = int(gcfg["n_knots"])
        r = kr.gamma(2.0, gal.hlr / _EXP_HLR_OVER_R0, size=n_knots)
        phi = kr.uniform(0.0, 2.0 * np.pi, size=n_knots)
        pos = np.einsum("ij,jn->ni", shear, np.stack([r * np.cos(phi), r * np.sin(phi)]), optimize=False)
        comps.append((("knots", pos), disk_flux * f, colours["knots"]))
        disk_flux *= 1.0 - f
    if disk_flux > 0:
        comps.append((("exponential", gal.hlr, shear), disk_flux, colours["disk"]))
    gal.components = comps
    return gal


def _shear_matrix(g1: float, g2: float) -> np.ndarray:
    """GalSim's shear matrix S of reduced shear (g1, g2) (area-preserving): a sheared profile is I(S⁻¹ x)."""
    return np.array([[1.0 + g1, g2], [g2, 1.0 - g1]]) / np.sqrt(1.0 - g1 * g1 - g2 * g2)


def _component_electrons(gal: _Galaxy, bands: Sequence[Band]) -> np.ndarray:
    """Electrons (C, B) of each component of ``gal`` in each band (its r-band fraction, colours and offsets)."""
    zp = np.array([b.zero_point for b in bands])
    t = np.array([b.exposure_time_s for b in bands])
    out = []
    for _, fraction, colour in gal.components:
        mag = gal.mag_r + colour + gal.delta
        out.append(fraction * 10.0 ** (-0.4 * (mag - zp)) * t)
    return np.array(out)


def _draw_scene(rng: np.random.Generator, cfg: Mapping[str, Any], sample: str, bands: Sequence[Band],
                stamps, stamp_meta, blend_id: str) -> list[_Galaxy]:
    """The galaxies of one sample, central first, with their positions (arcsec)."""
    names = [b.name for b in bands]
    lo, hi = cfg["n_neighbours"]
    n_neigh = int(rng.integers(int(lo), int(hi) + 1)) if sample == "blended" else 0
    gals = [_draw_galaxy(rng, cfg["galaxies"], names, stamps, stamp_meta, f"{blend_id}-g{k}")
            for k in range(1 + n_neigh)]
    if cfg.get("central_brightest", True) and len(gals) > 1:
        i = int(np.argmin([g.mag_r for g in gals]))
        gals.insert(0, gals.pop(i))
        for k, g in enumerate(gals):           # ids follow the position in the scene
            if g.kind == "parametric":
                g.source_id = f"{blend_id}-g{k}"
    off = float(cfg.get("central_offset_arcsec", 0.0))
    cx, cy = (rng.uniform(-off, off, size=2) if off > 0 else (0.0, 0.0))
    gals[0].dx, gals[0].dy = float(cx), float(cy)
    r_lo, r_hi = cfg["neighbour_radius_arcsec"]
    for g in gals[1:]:
        r = float(np.sqrt(rng.uniform(r_lo**2, r_hi**2)))
        theta = float(rng.uniform(0.0, 2.0 * np.pi))
        g.dx, g.dy = float(cx + r * np.cos(theta)), float(cy + r * np.sin(theta))
    return gals


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, mininterval=2.0, ascii=True)


def _check_cfg(cfg: Mapping[str, Any], sample: str) -> None:
    if sample not in SAMPLES:
        raise ValueError(f"unknown blend sample {sample!r}; allowed: {', '.join(SAMPLES)}")
    lo, hi = cfg["n_neighbours"]
    if not 0 <= lo <= hi:
        raise ValueError(f"config key 'blends/n_neighbours': need 0 <= min <= max, got {[lo, hi]}")
    r_lo, r_hi = cfg["neighbour_radius_arcsec"]
    if not 0 <= r_lo <= r_hi:
        raise ValueError(f"config key 'blends/neighbour_radius_arcsec': need 0 <= min <= max, got {[r_lo, r_hi]}")


def normalisation_scales(cfg: Mapping[str, Any], band_set_name: str, seed: int,
                         renderer: BlendRenderer | None = None) -> np.ndarray:
    """I_b per band: the ``normalisation.peak_quantile`` quantile (1: the largest) of the peak pixels of
    ``normalisation.n_calibration`` isolated noiseless parametric galaxies drawn with a seed derived from
    (``seed``, band set) only (the same in every shard, sample and split)."""
    from .config import rng_for

    bands = bands_for(cfg, band_set_name)
    renderer = renderer or BlendRenderer(bands, grid_scale(cfg, band_set_name), int(cfg["stamp_size"]))
    rng = rng_for(seed, "blends_normalisation", band_set_name)
    n = int(cfg["normalisation"]["n_calibration"])
    quantile = float(cfg["normalisation"]["peak_quantile"])
    peaks = np.zeros((n, len(bands)))
    cal_cfg = dict(cfg)
    cal_cfg["galaxies"] = dict(cfg["galaxies"], cosmos_fraction=0.0)
    for i in range(n):
        (gal,) = _draw_scene(rng, cal_cfg, "isolated", bands, None, None, f"calibration-{i}")
        img = renderer.render(_galaxy_kbands(renderer, gal, bands))
        peaks[i] = img.max(axis=(-2, -1))
    scales = np.quantile(peaks, quantile, axis=0)
    if np.any(~(scales > 0)):
        raise ValueError(f"normalisation: a band of {band_set_name} has no positive pixel in the calibration set "
                         f"(at the peak quantile {quantile})")
    return scales


def _galaxy_kbands(renderer: BlendRenderer, gal: _Galaxy, bands: Sequence[Band]) -> np.ndarray:
    """k-space band images (B, Np, Np) of one galaxy at its position: Σ_c electrons_cb · kimage_c."""
    electrons = _component_electrons(gal, bands)
    out = None
    for (profile, _, _), e in zip(gal.components, electrons):
        k = renderer.kimage(profile, gal.dx, gal.dy)
        term = e[:, None, None] * k[None]
        out = term if out is None else out + term
    return out


def simulate_blends(
    n: int,
    sample: str,
    band_set_name: str,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    scales: np.ndarray | None = None,
    stamps: np.ndarray | None = None,
    stamp_meta: pd.DataFrame | None = None,
    id_prefix: str = "blend",
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Simulate ``n`` samples (``isolated`` or ``blended``) of band set ``band_set_name`` (``cfg`` = ``blends``).

    Returns the arrays (float32, electrons per grid pixel) ``blend`` (N, B, S, S: the noisy, sky-subtracted scene;
    for ``isolated`` the central galaxy alone plus noise), ``isolated`` (N, B, S, S: the noiseless central galaxy),
    ``noise_sigma`` (N, B: background σ per pixel), ``catalogue`` (N, 1 + max neighbours, K: every galaxy, central
    first, columns :func:`catalogue_columns`, NaN rows where a blend has fewer galaxies), and the table (one row per
    sample; see :func:`blends_array_attrs` and the module docstring). ``stamps``/``stamp_meta``: the split's real
    galaxy stamps (kind ``cosmos`` rows), used when ``galaxies.cosmos_fraction`` > 0. ``scales``: I_b (only
    recorded by the caller; unused here).
    """
    _check_cfg(cfg, sample)
    bands = bands_for(cfg, band_set_name)
    names = [b.name for b in bands]
    size = int(cfg["stamp_size"])
    scale = grid_scale(cfg, band_set_name)
    renderer = BlendRenderer(bands, scale, size)
    sky = np.array([b.sky_per_pixel(scale) for b in bands])
    source_poisson = bool(cfg.get("source_poisson", True))
    r_idx = names.index("r")
    n = int(n)
    max_gal = 1 + int(cfg["n_neighbours"][1])
    columns = catalogue_columns(names)
    out = {
        "blend": np.empty((n, len(bands), size, size), np.float32),
        "isolated": np.empty((n, len(bands), size, size), np.float32),
        "noise_sigma": np.tile(np.sqrt(sky).astype(np.float32), (n, 1)),
        "catalogue": np.full((n, max_gal, len(columns)), np.nan, np.float32),
    }
    rows = []
    with _progress(n, f"simulate_blends {band_set_name} {sample}", progress) as bar:
        for i in range(n):
            blend_id = f"{id_prefix}-{i:06d}"
            gals = _draw_scene(rng, cfg, sample, bands, stamps, stamp_meta, blend_id)
            kb = [_galaxy_kbands(renderer, g, bands) for g in gals]
            central = renderer.render(kb[0])
            scene = central if len(kb) == 1 else central + renderer.render(sum(kb[1:]))
            counts = scene + sky[:, None, None]
            if source_poisson:
                noisy = rng.poisson(np.clip(counts, 0.0, None)) - sky[:, None, None]
            else:
                noisy = scene + rng.poisson(np.broadcast_to(sky[:, None, None], scene.shape)) - sky[:, None, None]
            out["blend"][i] = noisy
            out["isolated"][i] = central
            # per galaxy: r-band image (S/N, blendedness) and magnitudes in every band
            mags = [electrons_to_magnitude(_component_electrons(g, bands).sum(axis=0), [b.zero_point for b in bands],
                                           [b.exposure_time_s for b in bands]) for g in gals]
            for k, g in enumerate(gals):
                own_r = central[r_idx] if k == 0 else renderer.render(kb[k][r_idx], r_idx)
                out["catalogue"][i, k] = [g.dx, g.dy, g.hlr, snr(own_r, sky[r_idx], source_poisson),
                                          blendedness(own_r, scene[r_idx]) if len(gals) > 1 else 0.0, *mags[k]]
            dist = [float(np.hypot(g.dx - gals[0].dx, g.dy - gals[0].dy)) for g in gals[1:]]
            nearest = int(np.argmin(dist)) + 1 if dist else None
            c = gals[0]
            row = {"blend_id": blend_id, "source_id": c.source_id, "kind": c.kind, "n_galaxies": len(gals),
                   "stamp_index": c.stamp_index, "central_dx_arcsec": c.dx, "central_dy_arcsec": c.dy,
                   "hlr_arcsec": c.hlr, "bulge_to_total": c.bulge_to_total, "knots": c.knots,
                   "g1": c.g1, "g2": c.g2}
            row.update({f"mag_{b}": float(m) for b, m in zip(names, mags[0])})
            row.update({f"snr_{b}": float(s) for b, s in zip(names, snr(central, sky[:, None, None],
                                                                          source_poisson))})
            row["blendedness"] = float(out["catalogue"][i, 0, CATALOGUE_COLUMNS.index("blendedness_r")])
            row["neighbour_distance_arcsec"] = dist[nearest - 1] if nearest else float("nan")
            row["neighbour_mag_r"] = float(mags[nearest][r_idx]) if nearest else float("nan")
            rows.append(row)
            bar.update()
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=_table_columns(names))
    if not rows:
        table = table.astype({"blend_id": object, "source_id": object, "kind": object})
    return out, table


def _table_columns(names: Sequence[str]) -> list[str]:
    return (["blend_id", "source_id", "kind", "n_galaxies", "stamp_index", "central_dx_arcsec", "central_dy_arcsec",
             "hlr_arcsec", "bulge_to_total", "knots", "g1", "g2"] + [f"mag_{b}" for b in names]
            + [f"snr_{b}" for b in names] + ["blendedness", "neighbour_distance_arcsec", "neighbour_mag_r"])


def blends_attrs(cfg: Mapping[str, Any], band_set_name: str, sample: str, scales: np.ndarray) -> dict[str, Any]:
    """Root attributes of a blends dataset (``cfg`` = ``blends``; ``scales`` = I_b per band)."""
    bands = bands_for(cfg, band_set_name)
    scale = grid_scale(cfg, band_set_name)
    names = [b.name for b in bands]
    return {
        "description": (f"Study 003 {sample} sample, band set {band_set_name} ({', '.join(names)}): "
                        + ("noisy blends of a central galaxy and its neighbours" if sample == "blended"
                           else "the central galaxy alone with noise")
                        + ", and the noiseless central galaxy; GalSim, one common grid for all bands"),
        "simulator": "galsim (k-space drawing on a common grid; sourcelens.blends)",
        "band_set": band_set_name,
        "sample": sample,
        "bands": names,
        "stamp_size": int(cfg["stamp_size"]),
        "pixel_scale_arcsec": scale,
        "native_pixel_scale_arcsec": {b.name: b.pixel_scale_arcsec for b in bands},
        "zero_point": {b.name: b.zero_point for b in bands},
        "psf": {b.name: {"profile": b.psf_profile, "fwhm_arcsec": b.psf_fwhm_arcsec,
                         **({"beta": b.moffat_beta} if b.psf_profile == "moffat" else {})} for b in bands},
        "sky_brightness": {b.name: b.sky_brightness for b in bands},
        "sky_level": {b.name: b.sky_per_pixel(scale) for b in bands},
        "exposure_time_s": {b.name: b.exposure_time_s for b in bands},
        "survey_constants": {b.name: b.describe() for b in bands},
        "survey_constants_source": "surveycodex (LSST DESC survey tables), overridden per band by "
                                   "blends.survey_overrides (each band's 'overridden' keys)",
        "normalisation_scale": [float(s) for s in scales],
        "normalisation_beta": NORMALISATION_BETA,
        "normalisation": "tanh(arcsinh(x / (normalisation_scale[b] / normalisation_beta))) per band "
                         "(sourcelens.blends.normalise; inverse: denormalise)",
        "source_poisson": bool(cfg.get("source_poisson", True)),
        "n_neighbours": list(cfg["n_neighbours"]) if sample == "blended" else [0, 0],
        "neighbour_radius_arcsec": list(cfg["neighbour_radius_arcsec"]),
        "central_brightest": bool(cfg.get("central_brightest", True)),
        "galaxies": dict(cfg["galaxies"]),
        "sed_colours": {c: {b: SED_COLOURS[c][b] for b in names} for c in SED_COLOURS},
        "units": UNITS,
        "coordinates": COORDINATES,
        "snr_definition": "sqrt(sum(I^2 / (I + sky))) of the noiseless galaxy I on the stamp, sky per pixel",
        "blendedness_definition": "1 - <S_c, S_c> / <S_all, S_c> in r (noiseless; 0 for a galaxy alone)",
    }


def blends_array_attrs(bands: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per-array ``units``/``description`` attributes of a blends dataset."""
    import json

    return {
        "blend": {"units": UNITS, "description": "noisy scene (N, B, S, S), bands in attrs['bands'] order: the "
                  "central galaxy and its neighbours (blended sample) or alone (isolated sample)"},
        "isolated": {"units": UNITS, "description": "the noiseless central galaxy alone (N, B, S, S): the target"},
        "noise_sigma": {"units": UNITS, "description": "background noise sigma per pixel (N, B): sqrt(sky level)"},
        "catalogue": {"units": "arcsec (dx, dy, hlr), AB mag (mag_*), dimensionless otherwise",
                      "description": "every galaxy of each sample (N, galaxies, columns), the central one first; "
                                     "rows of NaN where a sample has fewer galaxies; dx, dy from the stamp centre",
                      "columns": json.dumps(catalogue_columns(bands))},
    }

