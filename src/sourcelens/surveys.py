"""Survey constants of the blend simulations (study 003): LSST u g r i z y and Euclid VIS (IE) and NISP (YE, JE, HE).

Every constant comes from `surveycodex <https://github.com/LSSTDESC/surveycodex>`_ (the LSST DESC survey
tables, with a reference per value: ``surveycodex.helpers.print_survey("LSST", show_refs=True)``), never typed by
hand here; the config (``blends.survey_overrides``) may override any of them per band, and the studies' configs
do where study 003 (Arcelin et al. 2021, code: LSSTDESC/DeblenderVAE ``cosmos_params.py``) used other values
(its LSST PSF: a Kolmogorov of FWHM 0.65″ in every band; its Euclid PSFs: Moffat β = 2.5 of FWHM 0.18″ for VIS
and 0.22″ for NISP; its depths: 15 s × the 10-year LSST visit counts, Euclid 1800 s).

Conventions (as surveycodex's): ``zero_point`` is the AB magnitude of a source giving 1 electron per second;
``sky_brightness`` is in AB mag per arcsec²; ``exposure_time_s`` is the full (survey-lifetime) exposure.
So a source of magnitude m gives ``10**(-0.4 (m - zero_point)) * exposure_time_s`` electrons and the sky
``10**(-0.4 (sky_brightness - zero_point)) * exposure_time_s * pixel_area`` electrons per pixel
(:func:`magnitude_to_electrons`, :func:`sky_level`).

Band names are surveycodex's filter names: ``u g r i z y`` (LSST) and ``IE YE JE HE`` (Euclid's I_E, Y_E, J_E,
H_E; upper case, so that LSST ``y`` and Euclid ``YE`` never collide). Band sets (:data:`BAND_SETS`):
``lsst`` (6 bands) and ``lsst_euclid`` (the 6 LSST bands, then the 4 Euclid ones; the r band has index 2 in
both).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

__all__ = [
    "BAND_SETS",
    "BAND_INSTRUMENT",
    "PSF_PROFILES",
    "Band",
    "band",
    "band_set",
    "surveycodex_constants",
    "magnitude_to_electrons",
    "electrons_to_magnitude",
    "sky_level",
]

#: Bands of each band set, in the order of every array's band axis.
BAND_SETS: dict[str, tuple[str, ...]] = {
    "lsst": ("u", "g", "r", "i", "z", "y"),
    "lsst_euclid": ("u", "g", "r", "i", "z", "y", "IE", "YE", "JE", "HE"),
}
#: The surveycodex survey of each band.
BAND_INSTRUMENT: dict[str, str] = {
    **{b: "LSST" for b in "ugrizy"}, "IE": "Euclid_VIS", "YE": "Euclid_NISP", "JE": "Euclid_NISP",
    "HE": "Euclid_NISP",
}
PSF_PROFILES: tuple[str, ...] = ("gaussian", "moffat", "kolmogorov")
#: Keys a config may override per band (``blends.survey_overrides``).
OVERRIDABLE: tuple[str, ...] = ("pixel_scale_arcsec", "psf_fwhm_arcsec", "psf_profile", "moffat_beta",
                                "zero_point", "sky_brightness", "exposure_time_s")


@dataclasses.dataclass(frozen=True)
class Band:
    """One band's observing constants (see the module docstring for units and conventions)."""

    name: str
    survey: str
    pixel_scale_arcsec: float     # native pixel scale
    psf_fwhm_arcsec: float
    psf_profile: str              # gaussian | moffat | kolmogorov
    moffat_beta: float
    zero_point: float             # AB magnitude of 1 e-/s
    sky_brightness: float         # AB mag / arcsec²
    exposure_time_s: float        # full exposure
    overridden: tuple[str, ...] = ()   # the keys that differ from surveycodex

    def psf(self):
        """The PSF as a GalSim profile (unit flux)."""
        import galsim

        if self.psf_profile == "gaussian":
            return galsim.Gaussian(fwhm=self.psf_fwhm_arcsec)
        if self.psf_profile == "moffat":
            return galsim.Moffat(beta=self.moffat_beta, fwhm=self.psf_fwhm_arcsec)
        if self.psf_profile == "kolmogorov":
            return galsim.Kolmogorov(fwhm=self.psf_fwhm_arcsec)
        raise ValueError(f"band {self.name}: unknown PSF profile {self.psf_profile!r}; allowed: {PSF_PROFILES}")

    def electrons(self, magnitude):
        """Electrons collected in the full exposure from a source of AB ``magnitude``."""
        return magnitude_to_electrons(magnitude, self.zero_point, self.exposure_time_s)

    def sky_per_pixel(self, pixel_scale_arcsec: float | None = None) -> float:
        """Sky electrons per pixel of ``pixel_scale_arcsec`` (default: the native pixel) in the full exposure."""
        scale = self.pixel_scale_arcsec if pixel_scale_arcsec is None else float(pixel_scale_arcsec)
        return sky_level(self.sky_brightness, self.zero_point, self.exposure_time_s, scale)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record (file attributes)."""
        return dataclasses.asdict(self) | {"overridden": list(self.overridden)}


def magnitude_to_electrons(magnitude, zero_point, exposure_time_s):
    """Electrons from a source of AB ``magnitude`` (zero point: the magnitude of 1 e-/s) in ``exposure_time_s``
    (arrays broadcast)."""
    zp, t = np.asarray(zero_point, dtype=float), np.asarray(exposure_time_s, dtype=float)
    return 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=float) - zp)) * t


def electrons_to_magnitude(electrons, zero_point: float, exposure_time_s: float):
    """The AB magnitude of a source giving ``electrons`` in ``exposure_time_s`` (NaN for non-positive fluxes; arrays
    broadcast, e.g. one zero point and exposure per band)."""
    e = np.asarray(electrons, dtype=float)
    zp, t = np.asarray(zero_point, dtype=float), np.asarray(exposure_time_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(e > 0, zp - 2.5 * np.log10(e / t), np.nan)


def sky_level(sky_brightness: float, zero_point: float, exposure_time_s: float, pixel_scale_arcsec: float) -> float:
    """Sky electrons per pixel: the sky's surface brightness (AB mag/arcsec²) over one pixel and the exposure
    (surveycodex's ``mean_sky_level``, without its rounding to whole counts)."""
    return float(magnitude_to_electrons(sky_brightness, zero_point, exposure_time_s)) * float(pixel_scale_arcsec) ** 2


#: surveycodex's name of each of our band names (the same, but stated once).
_SURVEYCODEX_FILTER = {b: b for b in BAND_INSTRUMENT}


def surveycodex_constants(name: str) -> dict[str, float]:
    """The surveycodex values of band ``name``: native pixel scale, PSF FWHM, zero point, sky brightness and
    full exposure time (plain floats: arcsec, arcsec, mag, mag/arcsec², s)."""
    import astropy.units as u
    import surveycodex

    if name not in BAND_INSTRUMENT:
        raise ValueError(f"unknown band {name!r}; known: {', '.join(BAND_INSTRUMENT)}")
    survey = surveycodex.get_survey(BAND_INSTRUMENT[name])
    filt = survey.get_filter(_SURVEYCODEX_FILTER[name])
    return {
        "pixel_scale_arcsec": float(survey.pixel_scale.to_value(u.arcsec)),
        "psf_fwhm_arcsec": float(filt.psf_fwhm.to_value(u.arcsec)),
        "zero_point": float(filt.zeropoint.value),
        "sky_brightness": float(filt.sky_brightness.value),
        "exposure_time_s": float(filt.full_exposure_time.to_value(u.s)),
    }


def band(name: str, overrides: Mapping[str, Any] | None = None,
         psf_profile: Mapping[str, str] | None = None, moffat_beta: float = 2.5) -> Band:
    """Band ``name`` from surveycodex, with ``overrides`` (keys of :data:`OVERRIDABLE`; None values ignored).

    ``psf_profile``: the default profile per instrument (``{"lsst": ..., "euclid": ...}``; default Kolmogorov for
    LSST, an atmosphere-dominated PSF, and Moffat for Euclid), unless the band's overrides give one.
    """
    values: dict[str, Any] = surveycodex_constants(name)
    instrument = "lsst" if BAND_INSTRUMENT[name] == "LSST" else "euclid"
    profiles = {"lsst": "kolmogorov", "euclid": "moffat", **dict(psf_profile or {})}
    values.update(psf_profile=profiles[instrument], moffat_beta=float(moffat_beta))
    changed = []
    for key, value in dict(overrides or {}).items():
        if key not in OVERRIDABLE:
            raise ValueError(f"band {name}: unknown survey constant {key!r}; allowed: {', '.join(OVERRIDABLE)}")
        if value is None:
            continue
        if key != "psf_profile":
            value = float(value)
        if values[key] != value:
            changed.append(key)
        values[key] = value
    if values["psf_profile"] not in PSF_PROFILES:
        raise ValueError(f"band {name}: unknown PSF profile {values['psf_profile']!r}; allowed: {PSF_PROFILES}")
    for key in ("pixel_scale_arcsec", "psf_fwhm_arcsec", "exposure_time_s", "moffat_beta"):
        if not values[key] > 0:
            raise ValueError(f"band {name}: {key} must be positive, got {values[key]!r}")
    return Band(name=name, survey=BAND_INSTRUMENT[name], overridden=tuple(changed), **values)


def band_set(name: str, overrides: Mapping[str, Mapping[str, Any]] | None = None,
             psf_profile: Mapping[str, str] | None = None, moffat_beta: float = 2.5) -> list[Band]:
    """The bands of band set ``name`` (:data:`BAND_SETS`), each from :func:`band` with its ``overrides[band]``."""
    if name not in BAND_SETS:
        raise ValueError(f"unknown band set {name!r}; allowed: {', '.join(BAND_SETS)}")
    overrides = dict(overrides or {})
    unknown = [b for b in overrides if b not in BAND_INSTRUMENT]
    if unknown:
        raise ValueError(f"survey overrides for unknown band(s) {unknown}; known: {', '.join(BAND_INSTRUMENT)}")
    return [band(b, overrides.get(b), psf_profile, moffat_beta) for b in BAND_SETS[name]]
