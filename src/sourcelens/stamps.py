"""Galaxy stamps: measuring, centring, rotating, rescaling and normalising to N×N.

One preprocessing path serves every source kind (real COSMOS stamps, GalSim parametric
galaxies, Hubble eXtreme Deep Field cut-outs): the galaxy is found as the connected
segment nearest the centre, measured (centroid, second-moment angle, radius at which the
peak-normalised azimuthal profile falls below a threshold, as in study 000), and resampled
once with a single affine map (centre, optional rotation, zoom) by a cubic spline, with the
pixel-area factor applied so that flux is conserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.4826


class StampError(ValueError):
    """A stamp cannot be used (NaN or empty image); the message names the source."""


@dataclass
class Measurement:
    """Shape measurement of the central galaxy of an image (input pixels unless stated)."""

    centre_yx: tuple[float, float]
    angle_rad: float
    radius_pix: float
    hlr_pix: float
    flux: float
    snr: float
    masked_fraction: float


def estimate_noise_sigma(image: np.ndarray, border: int | None = None) -> float:
    """Background noise sigma from the stamp outskirts: 1.4826 × MAD of the border pixels."""
    n = min(image.shape)
    border = border or max(2, n // 8)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:border, :] = mask[-border:, :] = True
    mask[:, :border] = mask[:, -border:] = True
    values = image[mask]
    values = values[np.isfinite(values) & (values != 0)]
    if values.size < 8:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def background_level(image: np.ndarray, border: int | None = None) -> float:
    """Median of the border pixels (zeros, i.e. masked, excluded)."""
    n = min(image.shape)
    border = border or max(2, n // 8)
    edge = np.concatenate([image[:border].ravel(), image[-border:].ravel(),
                           image[:, :border].ravel(), image[:, -border:].ravel()])
    edge = edge[np.isfinite(edge) & (edge != 0)]
    return float(np.median(edge)) if edge.size else 0.0


def check_finite(image: np.ndarray, source_id: str) -> None:
    """Raise StampError if the image has NaN/inf or is all zero."""
    if not np.all(np.isfinite(image)):
        n_bad = int((~np.isfinite(image)).sum())
        raise StampError(f"stamp of source '{source_id}' has {n_bad} NaN/inf pixels")
    if not np.any(image):
        raise StampError(f"stamp of source '{source_id}' is all zero")


def central_segment(image: np.ndarray, noise_sigma: float, nsigma: float = 2.0) -> np.ndarray:
    """Boolean mask of the connected segment (above noise) that holds the galaxy nearest the centre."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    peak = float(smooth.max())
    threshold = max(nsigma * noise_sigma * 0.5, 0.02 * peak) if noise_sigma > 0 else 0.02 * peak
    labels, n = ndimage.label(smooth > threshold)
    if n == 0:
        return np.ones(image.shape, dtype=bool)
    cy, cx = (np.asarray(image.shape) - 1) / 2.0
    idx = np.arange(1, n + 1)
    fluxes = ndimage.sum(np.clip(smooth, 0, None), labels, idx)
    coms = np.array(ndimage.center_of_mass(np.clip(smooth, 0, None), labels, idx)).reshape(-1, 2)
    dist = np.hypot(coms[:, 0] - cy, coms[:, 1] - cx)
    # prefer the brightest segment among those near the centre (within a quarter of the stamp)
    near = dist <= 0.25 * min(image.shape) + 2
    choice = idx[near][np.argmax(fluxes[near])] if near.any() else idx[np.argmin(dist)]
    return labels == choice


def azimuthal_profile(image: np.ndarray, centre_yx: tuple[float, float], r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``image`` in 1-pixel annuli around ``centre_yx``: (radii, profile)."""
    yy, xx = np.indices(image.shape)
    r = np.hypot(yy - centre_yx[0], xx - centre_yx[1])
    bins = np.floor(r).astype(int)
    nbins = int(np.ceil(r_max)) + 1
    valid = bins < nbins
    sums = np.bincount(bins[valid], weights=image[valid], minlength=nbins)
    counts = np.bincount(bins[valid], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.arange(nbins) + 0.5, prof


def half_light_radius(image: np.ndarray, centre_yx: tuple[float, float] | None = None,
                      mask: np.ndarray | None = None) -> float:
    """Half-light radius (pixels) from the growth curve of the positive pixels (within ``mask``) about
    ``centre_yx`` (default: their flux-weighted centroid); 0 for an image with no positive flux."""
    img = np.clip(np.asarray(image, dtype=float), 0.0, None)
    if mask is not None:
        img = np.where(mask, img, 0.0)
    total = img.sum()
    if not total > 0:
        return 0.0
    yy, xx = np.indices(img.shape)
    cy, cx = centre_yx if centre_yx is not None else ((img * yy).sum() / total, (img * xx).sum() / total)
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(img.ravel()[order])
    return float(r[order][np.searchsorted(cum, 0.5 * total)])


def measure(image: np.ndarray, noise_sigma: float, fill_threshold: float = 0.05) -> Measurement:
    """Centroid, major-axis angle, threshold radius, half-light radius, flux and S/N of the central galaxy."""
    seg = central_segment(image, noise_sigma)
    weights = np.where(seg, np.clip(image, 0, None), 0.0)
    total = weights.sum()
    if total <= 0:
        weights, total = np.clip(image, 0, None), np.clip(image, 0, None).sum()
    yy, xx = np.indices(image.shape)
    cy, cx = (weights * yy).sum() / total, (weights * xx).sum() / total
    qyy = (weights * (yy - cy) ** 2).sum() / total
    qxx = (weights * (xx - cx) ** 2).sum() / total
    qxy = (weights * (yy - cy) * (xx - cx)).sum() / total
    angle = 0.5 * np.arctan2(2 * qxy, qxx - qyy)  # major axis angle from +x, counter-clockwise in array (y down)
    r_max = np.hypot(*image.shape) / 2
    radii, prof = azimuthal_profile(np.where(seg, image, 0.0), (cy, cx), r_max)
    peak = np.nanmax(prof[:3]) if np.isfinite(prof[:3]).any() else np.nanmax(prof)
    level = fill_threshold * peak
    prof0 = np.nan_to_num(prof, nan=0.0)
    below = np.where(prof0 < level)[0]
    if not below.size:
        radius = float(r_max)
    elif below[0] == 0:
        radius = float(radii[0])
    else:  # linear interpolation of the crossing between the last bin above and the first below
        k = below[0]
        frac = (prof0[k - 1] - level) / max(prof0[k - 1] - prof0[k], 1e-30)
        radius = float(radii[k - 1] + frac * (radii[k] - radii[k - 1]))
    hlr = half_light_radius(image, (cy, cx), seg)
    aperture = np.hypot(yy - cy, xx - cx) <= max(radius, 1.0)
    flux_ap = float(image[aperture].sum())
    snr = flux_ap / (noise_sigma * np.sqrt(aperture.sum())) if noise_sigma > 0 else np.inf
    masked = float((image == 0).mean())
    return Measurement((float(cy), float(cx)), float(angle), radius, hlr, float(image[seg].sum()), float(snr), masked)


def resample(
    image: np.ndarray, size: int, centre_yx: tuple[float, float], zoom: float, angle_rad: float = 0.0
) -> tuple[np.ndarray, float]:
    """Resample ``image`` onto a size×size grid centred on ``centre_yx``.

    ``zoom`` is input pixels per output pixel; the grid is rotated by ``angle_rad`` so that a
    feature at that angle ends up horizontal. Flux is conserved (values × zoom²). Returns the
    stamp and the fraction of output pixels that fell outside the input.
    """
    c_out = (size - 1) / 2.0
    v, u = np.indices((size, size), dtype=float)
    du, dv = (u - c_out) * zoom, (v - c_out) * zoom
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    x_in = centre_yx[1] + cos * du - sin * dv
    y_in = centre_yx[0] + sin * du + cos * dv
    out = ndimage.map_coordinates(image, [y_in, x_in], order=3, mode="constant", cval=0.0, prefilter=True)
    outside = (x_in < -0.5) | (x_in > image.shape[1] - 0.5) | (y_in < -0.5) | (y_in > image.shape[0] - 0.5)
    return out * zoom**2, float(outside.mean())


def edge_taper(size: int, width: int) -> np.ndarray:
    """A separable cosine (Tukey) window that falls from 1 to 0 over the outer ``width`` pixels.

    Tapering the stamp edges keeps a lensed source from showing the square outline of its stamp.
    """
    w = np.ones(size)
    if width > 0:
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(width) + 0.5) / width))
        w[:width] = ramp
        w[-width:] = ramp[::-1]
    return np.outer(w, w)


def normalise(image: np.ndarray, mode: str, noise_sigma: float = 0.0, asinh_tanh_scale: float = 10.0) -> tuple[np.ndarray, float]:
    """Normalise a stamp; returns (normalised, scale) with ``scale`` the divisor used (1 if nonlinear).

    ``peak``: divide by the maximum (values ≤ 1); ``asinh_tanh``: tanh(arcsinh(x/σ)/k), study 003's
    multi-band stretch (σ the noise sigma, or the 1 % of the peak for noiseless stamps); ``none``.
    """
    if mode == "peak":
        peak = float(image.max())
        if peak <= 0:
            raise StampError("cannot peak-normalise a stamp with no positive pixel")
        return image / peak, peak
    if mode == "asinh_tanh":
        sigma = noise_sigma if noise_sigma > 0 else 0.01 * float(np.abs(image).max())
        return np.tanh(np.arcsinh(image / sigma) / asinh_tanh_scale), 1.0
    if mode == "none":
        return image.copy(), 1.0
    raise ValueError(f"unknown normalisation '{mode}' (allowed: peak, asinh_tanh, none)")


def zoom_factor(radius_pix: float, cfg: Mapping[str, Any]) -> float:
    """Input pixels per stamp pixel: ``fill`` maps the galaxy radius to ``fill_radius_fraction`` of the half-stamp,
    ``shrink`` does so only for galaxies larger than that (never zooming in), ``none`` keeps the native scale."""
    target = radius_pix / (cfg["fill_radius_fraction"] * int(cfg["size"]) / 2.0)
    mode = cfg["rescale"]
    if mode == "fill":
        return target
    if mode == "shrink":
        return max(1.0, target)
    if mode == "none":
        return 1.0
    raise ValueError(f"unknown stamps/rescale {mode!r} (allowed: shrink, fill, none)")


def preprocess(
    image: np.ndarray,
    pixel_scale_arcsec: float,
    cfg: Mapping[str, Any],
    source_id: str,
    noise_sigma: float | None = None,
    truth: np.ndarray | None = None,
    masked_fraction: float | None = None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Centre, optionally rotate, rescale (``cfg['rescale']``) and normalise one galaxy image to ``cfg['size']``².

    Returns (stamp or None if rejected, info). ``info`` holds the measurements (arcsec), the output pixel scale,
    the per-pixel noise sigma of the stamp in its normalised units — measured on the stamp itself: the scatter of
    stamp − truth where the truth is known, else the robust scatter of its border (resampling correlates and
    rescales noise, so an input sigma does not carry over) —, ``reject`` (a cut name) if rejected, and with
    ``truth`` (the noiseless image) ``truth_stamp``: it resampled and normalised exactly as the image (same
    centre, zoom, angle and scale). ``masked_fraction``: of the observed image where ``image`` was redrawn.
    """
    image = np.asarray(image, dtype=np.float64)
    check_finite(image, source_id)
    masked_fraction = float((image == 0).mean()) if masked_fraction is None else float(masked_fraction)
    image = image - background_level(image)
    sigma_in = estimate_noise_sigma(image) if noise_sigma is None else float(noise_sigma)
    m = measure(image, sigma_in, cfg["fill_threshold"])
    size = int(cfg["size"])
    angle = m.angle_rad if cfg["rotate_major_axis"] else 0.0
    info: dict[str, Any] = {
        "masked_fraction": masked_fraction, "snr": m.snr,
        "size_arcsec": m.radius_pix * pixel_scale_arcsec, "hlr_arcsec": m.hlr_pix * pixel_scale_arcsec,
        "angle_deg": np.degrees(angle),
    }
    zoom = zoom_factor(m.radius_pix, cfg)
    info["zoom"] = zoom
    if zoom > cfg["max_zoom_out"]:
        info["reject"] = "too_large"
        return None, info
    stamp, outside = resample(image, size, m.centre_yx, zoom, angle)
    info["outside_fraction"] = outside
    t = None if truth is None else resample(np.asarray(truth, dtype=np.float64), size, m.centre_yx, zoom, angle)[0]
    sigma_out = float(np.std(stamp - t)) if t is not None else (estimate_noise_sigma(stamp) if sigma_in > 0 else 0.0)
    if cfg["normalisation"] == "asinh_tanh" and not sigma_out > 0:
        sigma_out = 0.01 * float(np.abs(stamp).max())   # noiseless: the arcsinh knee at 1 % of the peak
    stamp, scale = normalise(stamp, cfg["normalisation"], sigma_out, cfg["asinh_tanh_scale"])
    if t is not None:
        if cfg["normalisation"] == "asinh_tanh":
            info["truth_stamp"] = normalise(t, "asinh_tanh", sigma_out, cfg["asinh_tanh_scale"])[0].astype(np.float32)
        else:
            info["truth_stamp"] = (t / scale).astype(np.float32)
    info.update({
        "pixel_scale_arcsec": pixel_scale_arcsec * zoom,
        "noise_sigma": sigma_out / scale if cfg["normalisation"] != "asinh_tanh" else float("nan"),
        "flux_scale": scale,
    })
    return stamp.astype(np.float32), info


STAMP_META_COLUMNS = [
    "source_id", "kind", "magnitude", "redshift", "pixel_scale_arcsec", "noise_sigma",
    "size_arcsec", "hlr_arcsec", "snr", "zoom", "angle_deg", "flux_scale", "flux_linear", "galaxy_id",
]


def make_stamps(raws, cfg: Mapping[str, Any], progress: bool = True):
    """Preprocess raw galaxies (an iterable of :class:`sourcelens.sources.RawGalaxy`) into stamps.

    Applies the image-level cuts (masked area, signal-to-noise, too large to fit) and returns (images
    (N, size, size) float32, noiseless truths (N, size, size) float32, NaN where a galaxy has none, meta
    DataFrame, filter-table DataFrame). A NaN or all-zero image raises :class:`StampError` naming its source.
    """
    import pandas as pd
    from tqdm import tqdm

    from .catalog import FilterLog

    by_kind: dict[str, list[tuple[np.ndarray | None, dict[str, Any], Any]]] = {}
    for raw in tqdm(raws, desc="stamps", unit="galaxy", disable=not progress, mininterval=2.0):
        stamp, info = preprocess(raw.image, raw.pixel_scale_arcsec, cfg, raw.source_id, raw.noise_sigma,
                                 getattr(raw, "truth", None), getattr(raw, "masked_fraction", None))
        info["flux_linear"] = bool(getattr(raw, "flux_linear", True))
        info["galaxy_id"] = getattr(raw, "galaxy_id", None) or raw.source_id
        by_kind.setdefault(raw.kind, []).append((stamp, info, raw))
    images, truths, rows, tables = [], [], [], []
    for kind, items in by_kind.items():
        flog = FilterLog("stamps", kind)
        df = pd.DataFrame({"i": np.arange(len(items))})
        flog.rows.append({"stage": "stamps", "source_kind": kind, "cut": "input",
                          "description": f"{kind} galaxies drawn", "n_in": len(df), "n_kept": len(df),
                          "n_removed": 0})
        info = [it[1] for it in items]
        if cfg.get("max_masked_fraction") is not None:
            frac = np.array([max(info[i]["masked_fraction"], info[i].get("outside_fraction", 0.0))
                             for i in df["i"]])
            df = flog.apply(df, frac <= cfg["max_masked_fraction"], "masked",
                            f"fraction of masked (exactly zero) or off-image pixels <= {cfg['max_masked_fraction']}")
        if cfg.get("min_snr") is not None:
            snr = np.array([info[i]["snr"] for i in df["i"]])
            df = flog.apply(df, snr >= cfg["min_snr"], "low_snr", f"aperture S/N >= {cfg['min_snr']}")
        fits = np.array([items[i][0] is not None for i in df["i"]])
        df = flog.apply(df, fits, "too_large",
                        f"galaxy fits the stamp with a zoom-out <= {cfg['max_zoom_out']}")
        tables.append(flog.table())
        for i in df["i"]:
            stamp, inf, raw = items[i]
            images.append(stamp)
            truths.append(inf.get("truth_stamp", np.full_like(stamp, np.nan)))
            rows.append({"source_id": raw.source_id, "kind": raw.kind, "magnitude": raw.magnitude,
                         "redshift": raw.redshift, **{k: inf[k] for k in STAMP_META_COLUMNS[4:]}})
    if not images:
        raise StampError("no galaxy stamps left after the cuts; loosen sources/* or stamps/* cuts")
    meta = pd.DataFrame(rows, columns=STAMP_META_COLUMNS)
    if meta["source_id"].duplicated().any():
        dup = meta.loc[meta["source_id"].duplicated(), "source_id"].iloc[0]
        raise StampError(f"duplicate source id '{dup}'")
    return (np.stack(images).astype(np.float32), np.stack(truths).astype(np.float32), meta,
            pd.concat(tables, ignore_index=True))


def stamps_attrs(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Root and per-array attributes of a stamps dataset made with the ``stamps`` config ``cfg``."""
    units = "normalised flux per pixel" if cfg["normalisation"] != "none" else "input flux per pixel"
    attrs = {"size": int(cfg["size"]), "normalisation": cfg["normalisation"], "rescale": cfg["rescale"],
             "description": "preprocessed galaxy stamps (centred, rescaled, normalised)"}
    array_attrs = {
        "images": {"units": units, "shape": "(N, size, size)",
                   "description": "the galaxies as observed (real ones) or drawn with noise"},
        "images_noiseless": {"units": units, "shape": "(N, size, size)",
                             "description": "the noiseless truth of drawn galaxies, processed exactly as `images` "
                                            "(NaN for real galaxies, whose truth is unknown)"},
    }
    return attrs, array_attrs
