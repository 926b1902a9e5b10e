"""lenstronomy baselines of the decoder fits: elliptical Sérsic, and Sérsic + shapelets.

Coordinates are in pixels (lenstronomy's angular unit set to one pixel, x = column, y = row,
(0, 0) at the stamp centre); no PSF is applied (the stamps already are observed images, and the
decoder fits apply none either).

**Sérsic** (``SERSIC_ELLIPSE``): 7 free parameters — amplitude, R_sersic, n_sersic, e1, e2,
center_x, center_y. The amplitude is linear and solved at every step by lenstronomy's
``ImageLinearFit.image_linear_solve`` (weighted least squares with the noise σ); the six non-linear
parameters are found by ``scipy.optimize.least_squares`` (trust-region reflective, bounded,
finite-difference Jacobian) on the noise-weighted residuals, started from the image's weighted
moments (centroid, size, ellipticity) with two starts, n = 1 and n = 4, keeping the lower χ².
This is one to two orders of magnitude faster than lenstronomy's ``FittingSequence`` PSO +
simplex on a 64×64 stamp and, started from the moments, as robust for single-component galaxies.

**Sérsic + shapelets** (``SERSIC_ELLIPSE`` + ``SHAPELETS``): the Sérsic non-linear parameters are
fixed at the Sérsic fit; the shapelet scale β (:func:`shapelet_beta`: R_sersic/1.18, clipped to
what the n_max basis can resolve on the stamp) and the centre come from it too; the Sérsic amplitude and all (n_max+1)(n_max+2)/2 shapelet coefficients
are solved jointly by ``image_linear_solve``. Free parameters: (n_max+1)(n_max+2)/2 + 7.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SERSIC_N_PARAMS = 7  # amp, R_sersic, n_sersic, e1, e2, center_x, center_y


def shapelet_n_params(n_max: int) -> int:
    """Number of shapelet coefficients up to order ``n_max``."""
    return (int(n_max) + 1) * (int(n_max) + 2) // 2


@dataclass
class SersicFit:
    """Result of one baseline fit of one image."""

    method: str
    model: np.ndarray
    chi2: float
    n_params: int
    seconds: float
    kwargs: dict = field(default_factory=dict)  # lenstronomy kwargs of the light profile(s), pixel units
    n_pixels: int = 0
    success: bool = True

    @property
    def chi2_nu(self) -> float:
        return self.chi2 / (self.n_pixels - self.n_params)


def _image_fit(image: np.ndarray, sigma, profiles: list[str]):
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_linear_solve import ImageLinearFit
    from lenstronomy.LightModel.light_model import LightModel

    ny, nx = image.shape
    noise = np.broadcast_to(np.asarray(sigma, dtype=float), image.shape).astype(float)
    data = ImageData(image_data=np.asarray(image, dtype=float), noise_map=np.array(noise),
                     ra_at_xy_0=-(nx - 1) / 2.0, dec_at_xy_0=-(ny - 1) / 2.0,
                     transform_pix2angle=np.eye(2))
    return ImageLinearFit(data_class=data, psf_class=PSF(psf_type="NONE"),
                          source_model_class=LightModel(profiles),
                          kwargs_numerics={"supersampling_factor": 1})


def _moments(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid (x, y, pixels from the centre), size (pixels) and (e1, e2) from positive-pixel moments."""
    ny, nx = image.shape
    w = np.clip(image, 0, None)
    w = np.where(w > 0.05 * w.max(), w, 0.0) if w.max() > 0 else np.ones_like(image)
    y, x = np.mgrid[:ny, :nx]
    x = x - (nx - 1) / 2.0
    y = y - (ny - 1) / 2.0
    tot = w.sum()
    cx, cy = (w * x).sum() / tot, (w * y).sum() / tot
    qxx = (w * (x - cx) ** 2).sum() / tot
    qyy = (w * (y - cy) ** 2).sum() / tot
    qxy = (w * (x - cx) * (y - cy)).sum() / tot
    tr = qxx + qyy
    e1, e2 = (qxx - qyy) / tr, 2 * qxy / tr
    e = np.hypot(e1, e2)
    # moments-to-lenstronomy ellipticity ((1-q)/(1+q)): roughly halve the distortion, and cap it
    scale = min(0.5, 0.6 / max(e, 1e-9)) if e > 0 else 0.0
    return float(cx), float(cy), float(np.sqrt(max(tr, 1e-6) / 2.0)), float(e1 * scale), float(e2 * scale)


def fit_sersic(image: np.ndarray, sigma, *, n_starts: tuple[float, ...] = (1.0, 4.0), max_nfev: int = 200) -> SersicFit:
    """Elliptical Sérsic fit of one image (see the module docstring); σ a scalar or a map."""
    from scipy.optimize import least_squares

    t0 = time.perf_counter()
    image = np.asarray(image, dtype=float)
    ny, nx = image.shape
    fitter = _image_fit(image, sigma, ["SERSIC_ELLIPSE"])
    inv = 1.0 / np.broadcast_to(np.asarray(sigma, dtype=float), image.shape)

    def kwargs_of(p):
        return [{"R_sersic": float(np.exp(p[0])), "n_sersic": float(p[1]), "e1": float(p[2]), "e2": float(p[3]),
                 "center_x": float(p[4]), "center_y": float(p[5])}]

    def residuals(p):
        model = fitter.image_linear_solve(kwargs_source=kwargs_of(p))[0]
        return ((image - model) * inv).ravel()

    cx, cy, size, e1, e2 = _moments(image)
    half = min(nx, ny) / 2.0
    lo = [np.log(0.3), 0.3, -0.8, -0.8, -half / 2, -half / 2]
    hi = [np.log(2.0 * half), 8.0, 0.8, 0.8, half / 2, half / 2]
    best = None
    for n0 in n_starts:
        p0 = np.clip([np.log(max(size, 0.5)), n0, e1, e2, cx, cy], np.array(lo) + 1e-6, np.array(hi) - 1e-6)
        try:
            res = least_squares(residuals, p0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=max_nfev,
                                diff_step=1e-4)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        raise RuntimeError("Sérsic fit failed from every start")
    kw = kwargs_of(best.x)
    model, _, _, param = fitter.image_linear_solve(kwargs_source=kw)
    kw[0]["amp"] = float(param[0])
    chi2 = float(np.sum(((image - model) * inv) ** 2))
    return SersicFit("sersic", np.asarray(model), chi2, SERSIC_N_PARAMS, time.perf_counter() - t0, kw[0],
                     image.size, bool(best.success))


def shapelet_beta(r_sersic: float, n_max: int, size: int) -> float:
    """Shapelet scale β from the Sérsic half-light radius: R/1.18 (a Gaussian's σ for that
    half-light radius), clipped so that the finest scale β/√(n_max+1) stays ≥ 0.6 pixel and the
    largest, β√(n_max+1), within 0.8 of the half-stamp (else the basis is degenerate on the grid)."""
    root = np.sqrt(int(n_max) + 1.0)
    lo, hi = 0.6 * root, 0.8 * (size / 2.0) / root
    if lo > hi:
        return float(np.sqrt(lo * hi))
    return float(np.clip(r_sersic / 1.18, lo, hi))


def fit_sersic_shapelets(image: np.ndarray, sigma, n_max: int, sersic: SersicFit | None = None) -> SersicFit:
    """Sérsic + shapelets of order ``n_max``; the Sérsic fit is done first unless given.

    ``seconds`` counts the shapelet step only (add ``sersic.seconds`` for the total).
    """
    image = np.asarray(image, dtype=float)
    if sersic is None:
        sersic = fit_sersic(image, sigma)
    t0 = time.perf_counter()
    s = {k: v for k, v in sersic.kwargs.items() if k != "amp"}
    beta = shapelet_beta(s["R_sersic"], n_max, min(image.shape))
    fitter = _image_fit(image, sigma, ["SERSIC_ELLIPSE", "SHAPELETS"])
    for _ in range(4):  # a singular linear system (lenstronomy then returns zeros): shrink beta
        kw = [dict(s), {"n_max": int(n_max), "beta": beta, "center_x": s["center_x"], "center_y": s["center_y"]}]
        model, _, _, param = fitter.image_linear_solve(kwargs_source=kw)
        if np.any(np.asarray(param) != 0) and np.all(np.isfinite(model)):
            break
        beta *= 0.8
    inv = 1.0 / np.broadcast_to(np.asarray(sigma, dtype=float), image.shape)
    chi2 = float(np.sum(((image - model) * inv) ** 2))
    out = {"sersic": s | {"amp": float(param[0])}, "n_max": int(n_max), "beta": beta,
           "center_x": s["center_x"], "center_y": s["center_y"], "n_coefficients": int(len(param) - 1)}
    return SersicFit(f"sersic+shapelets{int(n_max)}", np.asarray(model), chi2,
                     SERSIC_N_PARAMS + shapelet_n_params(n_max), time.perf_counter() - t0, out, image.size,
                     bool(np.all(np.isfinite(model))))


def fit_sersic_batch(images: np.ndarray, sigma, shapelet_n_max=(8, 20)) -> dict[str, list[SersicFit]]:
    """Sérsic and Sérsic + shapelets fits of a stack (N, H, W); σ scalar, (N,) or (N, H, W).

    Returns {method: [fit per image]}; shapelet fits' ``seconds`` include their Sérsic fit.
    """
    images = np.asarray(images, dtype=float)
    sig = np.asarray(sigma, dtype=float)
    sig = np.broadcast_to(sig, (len(images),)) if sig.ndim <= 1 else sig
    out: dict[str, list[SersicFit]] = {"sersic": []}
    for n_max in shapelet_n_max:
        out[f"sersic+shapelets{int(n_max)}"] = []
    for i, image in enumerate(images):
        s = fit_sersic(image, sig[i])
        out["sersic"].append(s)
        for n_max in shapelet_n_max:
            f = fit_sersic_shapelets(image, sig[i], n_max, sersic=s)
            f.seconds += s.seconds
            out[f"sersic+shapelets{int(n_max)}"].append(f)
    return out


def add_noise_to_level(images: np.ndarray, own_sigma, target_sigma: float, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Bring each stamp's Gaussian noise up to ``target_sigma``.

    A stamp with its own noise σ_s < target gets N(0, √(target² − σ_s²)) added; one already
    noisier is left as it is. Returns (noisy images, total σ per image = max(target, σ_s)).
    """
    images = np.asarray(images, dtype=np.float64)
    own = np.broadcast_to(np.nan_to_num(np.asarray(own_sigma, dtype=float)), (len(images),))
    add = np.sqrt(np.clip(float(target_sigma) ** 2 - own**2, 0.0, None))
    noisy = images + rng.standard_normal(images.shape) * add[:, None, None]
    return noisy, np.maximum(float(target_sigma), own)


__all__ = ["SERSIC_N_PARAMS", "add_noise_to_level", "shapelet_beta", "SersicFit", "fit_sersic", "fit_sersic_batch", "fit_sersic_shapelets",
           "shapelet_n_params"]
