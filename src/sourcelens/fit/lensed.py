"""Lensed source fits (study 000, issue 4 §4): the VAE decoder as the source model of a lensed
galaxy, against an elliptical Sérsic, Sérsic + shapelets and a regularised pixelated source.

Set-up. Test galaxies are lensed with **lenstronomy** (SIE + external shear, the PSF and the noise
of ``simulate.pairs``; the stamp is an ``INTERPOL`` source of ``source_pixel_scale_arcsec`` per
stamp pixel at a random offset, total flux from a random magnitude), exactly as
:func:`sourcelens.simulate.simulate_pairs`. The lens is then held at its true parameters and the
source is fitted through the **torch** lensing operator (:class:`sourcelens.lensing.LensingSimulator`
with the same grid, supersampling and PSF kernel) by four methods:

``decoder``
    latents ``z`` + amplitude + centre offset of the decoded stamp (a ``PIXELATED`` source of the
    stamp's pixel scale); batched L-BFGS on ½χ² + ``prior_weight`` · ½|z|² (a weak N(0, 1) prior).
    Start (``init="encoder"``): the encoder's mean of the pixelated reconstruction (re-centred on
    its centroid); ``init="prior"``: z = 0.
``sersic``
    elliptical Sérsic (lenstronomy's ``SERSIC_ELLIPSE``), 7 parameters, batched L-BFGS on χ².
``shapelets_n{N}``
    Sérsic + shapelets: the fitted Sérsic profile plus every Cartesian shapelet up to order ``N``
    (lenstronomy's ``SHAPELETS`` convention, own Hermite basis) centred on the Sérsic centre, each
    lensed through the operator and solved by weighted linear least squares; the shapelet scale
    ``beta`` is the best (lowest χ²) of ``beta_factors`` × the Sérsic radius.
``pixelated``
    a pixelated source on the evaluation grid (below), solved from the normal equations
    ``(Lᵀ N⁻¹ L + λ' RᵀR) s = Lᵀ N⁻¹ d`` with the sparse lensing operator
    (:class:`sourcelens.lensing.BilinearLensingOperator`, PSF included) by preconditioned
    conjugate gradients; ``R`` takes first (``"gradient"``) or second (``"curvature"``) differences;
    ``λ' = λ · median(diag Lᵀ N⁻¹ L)`` over the source pixels that rays reach, so ``λ`` (the config's
    ``fit.lensed.regularisation``) is dimensionless: 1 weights the regulariser like one typical pixel
    of data. No positivity constraint.

Metrics (per galaxy and method). ``chi2_nu`` = χ² / ν over the image, ν = pixels − free parameters
(for ``pixelated`` ν = pixels: its regularised parameters are not counted). Sources are compared on
the **evaluation grid**: the stamp's size and pixel scale, centred on the optical axis (0, 0), where
the true source is the stamp resampled (bilinearly) at its true offset. Both the true and the
reconstructed source are first scaled to the same total flux on that grid, in units where the
true source's peak is 1: ``source_mse`` is the mean squared difference, ``source_ssim`` the SSIM
(scikit-image, ``data_range=1``). ``seconds``: wall time per galaxy (batched fits: batch time / B,
the pixelated fit's start included in the decoder's when the decoder is initialised from it).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..lensing import BilinearLensingOperator, LensingSimulator, convolve_fft, pixel_grid, pixelated, sersic
from ..simulate import (
    LensedImageRenderer, _interpol_kwargs, add_noise, check_stamps, draw_lens_parameters, lens_kwargs,
    magnitude_to_counts, make_psf,
)
from ..priors import sample_prior
from .lbfgs import minimize_lbfgs

log = logging.getLogger(__name__)

__all__ = [
    "LensedScenes", "simulate_lensed", "torch_simulator", "lens_kwargs_torch",
    "fit_decoder_lensed", "fit_decoder_rays", "fit_sersic_lensed", "fit_shapelets_lensed", "fit_pixelated",
    "normal_operator", "solve_pixelated", "regulariser_rtr", "hermite_functions", "shapelet_basis",
    "source_metrics", "fit_lensed_all", "summary_table", "FitResult",
]

DTYPE = torch.float64


# --------------------------------------------------------------------------------------------
# Simulation (lenstronomy) and its torch counterpart
# --------------------------------------------------------------------------------------------
@dataclass
class LensedScenes:
    """A batch of lensed galaxies and everything needed to fit and score them.

    Arrays are float64 numpy: ``data``, ``noiseless``, ``sigma`` (B, n, n) e-/s per pixel;
    ``stamps`` (B, m, m) the source stamps as given; ``source_flux`` (B,) total source flux;
    ``source_xy`` (B, 2) arcsec; ``lens`` the lens-parameter table (LENS_PARAMETERS columns).
    """

    data: np.ndarray
    noiseless: np.ndarray
    sigma: np.ndarray
    stamps: np.ndarray
    source_flux: np.ndarray
    source_xy: np.ndarray
    lens: pd.DataFrame
    lens_model: str
    num_pix: int
    pixel_scale: float
    source_pixel_scale: float
    supersampling: int
    psf_kernel: np.ndarray | None
    source_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)

    def true_source_image(self) -> np.ndarray:
        """Flux per stamp pixel of the true source (B, m, m): the stamp scaled to its total flux."""
        s = self.stamps
        return s * (self.source_flux / s.sum(axis=(1, 2)))[:, None, None]


def simulate_lensed(
    stamps: np.ndarray,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    lens_model: str = "SIE",
    source_ids: Sequence[str] | None = None,
) -> LensedScenes:
    """Lens each stamp once with lenstronomy (``cfg`` = the ``simulate.pairs`` config).

    Random draws, in order: lens parameters (from ``cfg['priors']``), source x, source y,
    magnitudes, then per galaxy the noise (:func:`sourcelens.simulate.add_noise`).
    """
    stamps = np.asarray(stamps, dtype=float)
    ids = list(map(str, source_ids)) if source_ids is not None else [str(i) for i in range(len(stamps))]
    check_stamps(stamps, pd.DataFrame({"source_id": ids}))
    n = len(stamps)
    num_pix, pix = int(cfg["num_pix"]), float(cfg["pixel_scale_arcsec"])
    scale = float(cfg["source_pixel_scale_arcsec"])
    ss = int(cfg.get("supersampling", 1))
    params = draw_lens_parameters(lens_model, cfg["priors"], rng, n)
    src_x = sample_prior(cfg["source_offset_arcsec"], rng, n, name="source_offset_arcsec")
    src_y = sample_prior(cfg["source_offset_arcsec"], rng, n, name="source_offset_arcsec")
    mag_lo, mag_hi = (float(v) for v in cfg["source_magnitude"])
    mags = rng.uniform(mag_lo, mag_hi, n)
    fluxes = np.asarray(magnitude_to_counts(mags, cfg["magnitude_zero_point"]), dtype=float)
    psf = make_psf(cfg.get("psf", {}), pix)
    lens_list, _ = lens_kwargs(lens_model, dict.fromkeys(params.columns, 0.0))
    renderer = LensedImageRenderer(num_pix, pix, lens_list, "INTERPOL", psf, ss)
    data = np.empty((n, num_pix, num_pix))
    noiseless, sigma = np.empty_like(data), np.empty_like(data)
    for i, rec in enumerate(params.to_dict("records")):
        _, kw_lens = lens_kwargs(lens_model, rec)
        kw_src = [_interpol_kwargs(stamps[i], scale, fluxes[i], src_x[i], src_y[i])]
        lensed, _ = renderer.render(kw_lens, kw_src, unlensed=False)
        noisy, sig = add_noise(lensed, cfg.get("noise", {}), rng)
        noiseless[i], data[i], sigma[i] = lensed, noisy, sig
    kernel = None
    if psf.psf_type != "NONE":
        kernel = np.asarray(psf.kernel_point_source, dtype=float)
    return LensedScenes(
        data=data, noiseless=noiseless, sigma=sigma, stamps=stamps, source_flux=fluxes,
        source_xy=np.stack([src_x, src_y], axis=1), lens=params, lens_model=lens_model,
        num_pix=num_pix, pixel_scale=pix, source_pixel_scale=scale, supersampling=ss,
        psf_kernel=kernel, source_ids=ids,
    )


def torch_simulator(scenes: LensedScenes, batch_chunk: int | None = None) -> LensingSimulator:
    """The torch forward model matching the lenstronomy simulation of ``scenes`` (float64)."""
    psf = None if scenes.psf_kernel is None else torch.as_tensor(scenes.psf_kernel, dtype=DTYPE)
    return LensingSimulator(n_pix=scenes.num_pix, pixel_scale=scenes.pixel_scale,
                            supersample=scenes.supersampling, psf=psf, batch_chunk=batch_chunk, dtype=DTYPE)


def lens_kwargs_torch(scenes: LensedScenes, index: int | Sequence[int] | None = None
                      ) -> tuple[list[str], list[dict[str, Any]]]:
    """(lens model list, kwargs) of ``scenes``: floats for one ``index``, (B,) tensors otherwise."""
    rows = scenes.lens if index is None else scenes.lens.iloc[np.atleast_1d(index)]
    if isinstance(index, (int, np.integer)):
        return lens_kwargs(scenes.lens_model, rows.iloc[0].to_dict())
    cols = {k: torch.tensor(rows[k].to_numpy(dtype=float), dtype=DTYPE) for k in rows.columns}
    models, kwargs = lens_kwargs(scenes.lens_model, dict.fromkeys(rows.columns, 0.0))
    out = []
    for kw in kwargs:
        out.append({k: (cols[k] if k in cols else torch.full((len(rows),), float(v), dtype=DTYPE))
                    for k, v in kw.items()})
    return models, out


def evaluation_grid(scenes: LensedScenes) -> tuple[Tensor, Tensor]:
    """(x, y) arcsec of the evaluation source grid: the stamp's size and pixel scale, centred on (0, 0)."""
    return pixel_grid(scenes.stamps.shape[-1], scenes.source_pixel_scale, dtype=DTYPE)


def true_source_on_grid(scenes: LensedScenes) -> np.ndarray:
    """The true source, flux per pixel of the evaluation grid (B, m, m)."""
    ex, ey = evaluation_grid(scenes)
    img = torch.as_tensor(scenes.true_source_image(), dtype=DTYPE)
    xy = torch.as_tensor(scenes.source_xy, dtype=DTYPE)
    sb = pixelated(ex.expand(len(scenes), -1, -1), ey.expand(len(scenes), -1, -1), img,
                   scenes.source_pixel_scale, xy[:, 0], xy[:, 1])
    return (sb * scenes.source_pixel_scale**2).numpy()


# --------------------------------------------------------------------------------------------
# Fit results and metrics
# --------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """One method's fits of a batch: model images (B, n, n), sources on the evaluation grid
    (B, m, m, flux per pixel), χ² (B,), free parameters, seconds per galaxy (B,), extra info."""

    method: str
    model: np.ndarray
    source: np.ndarray
    chi2: np.ndarray
    n_params: int
    seconds: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _chi2(data: Tensor, model: Tensor, sigma: Tensor) -> Tensor:
    return (((data - model) / sigma) ** 2).sum(dim=(-2, -1))


def source_metrics(true: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """(MSE, SSIM) of a reconstructed source against the true one (same grid).

    Both are scaled to the true source's total flux, in units of the true source's peak (so
    the truth peaks at 1; SSIM with ``data_range=1``). A reconstruction with non-positive total
    flux or non-finite values gives NaN.
    """
    from skimage.metrics import structural_similarity

    true = np.asarray(true, dtype=float)
    recon = np.asarray(recon, dtype=float)
    t_sum, r_sum = true.sum(), recon.sum()
    if not np.isfinite(recon).all() or r_sum <= 0 or t_sum <= 0:
        return float("nan"), float("nan")
    peak = true.max()
    t = true / peak
    r = recon * (t_sum / r_sum) / peak
    mse = float(np.mean((r - t) ** 2))
    ssim = float(structural_similarity(t, r, data_range=1.0))
    return mse, ssim


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def _forward(sim: LensingSimulator, sb: Tensor) -> Tensor:
    """Image (flux per pixel, PSF, downsampling) from surface brightness at the simulator's rays."""
    return sim.finish(sim.pixel_flux(sb))


def _rays_of(rays: tuple[Tensor, Tensor], index: Tensor | None) -> tuple[Tensor, Tensor]:
    """The ray positions of the galaxies ``index`` (all for None or rays shared by all galaxies)."""
    bx, by = rays
    return (bx, by) if index is None or bx.ndim == 2 else (bx[index], by[index])


def _profile_amplitude(model: Tensor, data: Tensor, sigma: Tensor) -> Tensor:
    """Best non-negative linear amplitude of ``model`` for ``data`` (per image)."""
    w = 1.0 / sigma**2
    num = (model * data * w).sum(dim=(-2, -1))
    den = (model * model * w).sum(dim=(-2, -1)).clamp(min=1e-300)
    return (num / den).clamp(min=1e-12)


def _moments(images: np.ndarray, pixel_scale: float) -> dict[str, np.ndarray]:
    """Centroid, size and ellipticity (lenstronomy e1, e2) of the positive part above 5% of the peak."""
    m = images.shape[-1]
    c = (np.arange(m) - (m - 1) / 2) * pixel_scale
    yy, xx = np.meshgrid(c, c, indexing="ij")
    out = {k: np.zeros(len(images)) for k in ("cx", "cy", "size", "e1", "e2")}
    for i, img in enumerate(images):
        w = np.clip(img - 0.05 * np.nanmax(img), 0, None)
        tot = w.sum()
        if not np.isfinite(tot) or tot <= 0:
            out["size"][i] = 5 * pixel_scale
            continue
        cx, cy = (w * xx).sum() / tot, (w * yy).sum() / tot
        ixx = (w * (xx - cx) ** 2).sum() / tot
        iyy = (w * (yy - cy) ** 2).sum() / tot
        ixy = (w * (xx - cx) * (yy - cy)).sum() / tot
        chi1, chi2 = (ixx - iyy) / (ixx + iyy), 2 * ixy / (ixx + iyy)
        norm = 1 + np.sqrt(max(1 - chi1**2 - chi2**2, 0.0))
        out["cx"][i], out["cy"][i] = cx, cy
        out["size"][i] = np.sqrt((ixx + iyy) / 2)
        out["e1"][i], out["e2"][i] = np.clip(chi1 / norm, -0.5, 0.5), np.clip(chi2 / norm, -0.5, 0.5)
    return out


def _lbfgs(params: dict[str, Tensor], loss_rows: Callable[[dict[str, Tensor], Tensor], Tensor],
           max_iter: int, tolerance_change: float = 1e-3) -> np.ndarray:
    """Per-galaxy L-BFGS (:func:`sourcelens.fit.lbfgs.minimize_lbfgs`) over named (B,) or (B, k)
    tensors, updated in place; ``loss_rows(params_of_rows, index) -> (b,)`` is the loss (½χ² units)
    of the galaxies ``index``. Returns the evaluations per galaxy."""
    names = list(params)
    widths = [params[k][0].numel() for k in names]
    x0 = torch.cat([params[k].detach().reshape(len(params[k]), -1) for k in names], dim=1)

    def split(x: Tensor) -> dict[str, Tensor]:
        parts = torch.split(x, widths, dim=1)
        return {k: v.reshape((len(x),) + params[k].shape[1:]) for k, v in zip(names, parts)}

    res = minimize_lbfgs(lambda x, index: loss_rows(split(x), index), x0, max_iter=max_iter,
                         tolerance_grad=1e-9, tolerance_change=tolerance_change)
    with torch.no_grad():
        for k, v in split(res.x).items():
            params[k].copy_(v)
    return res.n_eval


# --------------------------------------------------------------------------------------------
# (d) regularised pixelated source: sparse normal equations, conjugate gradients
# --------------------------------------------------------------------------------------------
def regulariser_rtr(s: Tensor, kind: str = "gradient") -> Tensor:
    """``RᵀR s`` for a source ``s`` (..., m, m): first (gradient) or second (curvature) differences
    along both axes, no differences across the border."""
    out = torch.zeros_like(s)
    if kind == "gradient":
        for dim in (-1, -2):
            n = s.shape[dim]
            d = s.narrow(dim, 1, n - 1) - s.narrow(dim, 0, n - 1)
            out.narrow(dim, 1, n - 1).add_(d)
            out.narrow(dim, 0, n - 1).sub_(d)
    elif kind == "curvature":
        for dim in (-1, -2):
            n = s.shape[dim]
            d = s.narrow(dim, 2, n - 2) - 2 * s.narrow(dim, 1, n - 2) + s.narrow(dim, 0, n - 2)
            out.narrow(dim, 2, n - 2).add_(d)
            out.narrow(dim, 1, n - 2).sub_(2 * d)
            out.narrow(dim, 0, n - 2).add_(d)
    else:
        raise ValueError(f"unknown regulariser {kind!r}; allowed: gradient, curvature")
    return out


def _finish_adjoint(sim: LensingSimulator, image: Tensor) -> Tensor:
    """Adjoint of ``sim.finish`` (downsampling, then PSF): replicate blocks, correlate with the PSF."""
    f = sim.downsample
    if f > 1:
        image = image.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    if sim.psf is not None:
        image = convolve_fft(image, sim.psf.flip(-1, -2))
    return image


def _data_diagonal(op: BilinearLensingOperator, inv_var: Tensor) -> Tensor:
    """diag(Mᵀ W M) of the lensing matrix before the PSF (a Jacobi preconditioner), (m, m)."""
    mat = op.matrix
    sq = torch.sparse_csr_tensor(mat.crow_indices(), mat.col_indices(), mat.values() ** 2, mat.shape,
                                 check_invariants=False)
    w = inv_var
    f = op.simulator.downsample
    if f > 1:
        w = w.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    diag = w.reshape(1, -1).to(sq.dtype) @ sq
    return diag.reshape(op.source_shape)


def normal_operator(op: BilinearLensingOperator, sigma: Tensor, lam: float, kind: str = "gradient"):
    """``s -> (Lᵀ N⁻¹ L + lam RᵀR) s`` with ``L = op.apply`` (lensing, PSF, downsampling)."""
    inv_var = 1.0 / sigma**2

    def apply(s: Tensor) -> Tensor:
        r = op.apply(s) * inv_var
        out = op.adjoint(_finish_adjoint(op.simulator, r))
        if lam:
            out = out + lam * regulariser_rtr(s, kind)
        return out

    return apply


def solve_pixelated(op: BilinearLensingOperator, data: Tensor, sigma: Tensor, regularisation: float,
                    kind: str = "gradient", tol: float = 1e-6, max_iter: int = 2000
                    ) -> tuple[Tensor, dict[str, Any]]:
    """Regularised pixelated source (m, m) solving ``(Lᵀ N⁻¹ L + λ' RᵀR) s = Lᵀ N⁻¹ d`` by Jacobi-
    preconditioned conjugate gradients; ``λ' = regularisation · median(diag Lᵀ N⁻¹ L)`` over the
    covered pixels (see the module doc). Returns the source and info (``lambda_eff``, ``iterations``,
    ``residual``, ``covered``: source pixels reached by the rays)."""
    data, sigma = data.to(DTYPE), sigma.to(DTYPE)
    inv_var = 1.0 / sigma**2
    diag = _data_diagonal(op, inv_var)
    covered = diag > 0
    scale = float(diag[covered].median()) if covered.any() else 1.0
    covered = diag > 0.05 * scale
    lam = float(regularisation) * scale
    A = normal_operator(op, sigma, lam, kind)
    b = op.adjoint(_finish_adjoint(op.simulator, data * inv_var))
    precond = diag + lam * (4.0 if kind == "gradient" else 12.0)
    precond = torch.where(precond > 0, precond, torch.ones_like(precond) * scale)
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / precond
    p = z.clone()
    rz = (r * z).sum()
    b_norm = float(b.norm()) or 1.0
    it = 0
    for it in range(1, int(max_iter) + 1):
        ap = A(p)
        alpha = rz / (p * ap).sum()
        x = x + alpha * p
        r = r - alpha * ap
        if float(r.norm()) <= tol * b_norm:
            break
        z = r / precond
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, {"lambda_eff": lam, "iterations": it, "residual": float(r.norm()) / b_norm,
               "covered": covered.numpy()}


def fit_pixelated(scenes: LensedScenes, sim: LensingSimulator, regularisation: float = 1.0,
                  kind: str = "gradient", tol: float = 1e-6, max_iter: int = 2000) -> FitResult:
    """(d) Regularised pixelated source of every scene on the evaluation grid."""
    m = scenes.stamps.shape[-1]
    b = len(scenes)
    models, sources, chi2 = np.empty_like(scenes.data), np.empty((b, m, m)), np.empty(b)
    secs, iters, covered = np.empty(b), [], np.empty((b, m, m), dtype=bool)
    for i in range(b):
        t0 = time.perf_counter()
        lens_models, kw = lens_kwargs_torch(scenes, i)
        op = BilinearLensingOperator(sim, lens_models, kw, (m, m), scenes.source_pixel_scale)
        d = torch.as_tensor(scenes.data[i], dtype=DTYPE)
        sg = torch.as_tensor(scenes.sigma[i], dtype=DTYPE)
        s, info = solve_pixelated(op, d, sg, regularisation, kind, tol, max_iter)
        with torch.no_grad():
            model = op.apply(s)
        secs[i] = time.perf_counter() - t0
        models[i], sources[i] = model.numpy(), s.numpy()
        chi2[i] = float(_chi2(d, model, sg))
        iters.append(info["iterations"])
        covered[i] = info["covered"]
    return FitResult("pixelated", models, sources, chi2, 0, secs,
                     {"iterations": iters, "covered": covered, "regularisation": regularisation, "kind": kind})


# --------------------------------------------------------------------------------------------
# (b) elliptical Sérsic through the torch operator
# --------------------------------------------------------------------------------------------
_N_RANGE = (0.3, 6.0)
_E_MAX = 0.6


def _sersic_params(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    lo, hi = _N_RANGE
    return {"amp": raw["log_amp"].exp(), "R_sersic": raw["log_R"].exp(),
            "n_sersic": lo + (hi - lo) * torch.sigmoid(raw["n_raw"]),
            "e1": _E_MAX * torch.tanh(raw["e1_raw"]), "e2": _E_MAX * torch.tanh(raw["e2_raw"]),
            "center_x": raw["cx"], "center_y": raw["cy"]}


def _sersic_sb(x: Tensor, y: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    return sersic(x, y, p["amp"], p["R_sersic"], p["n_sersic"], p["e1"], p["e2"], p["center_x"], p["center_y"])


def fit_sersic_lensed(sim: LensingSimulator, rays: tuple[Tensor, Tensor], data: Tensor, sigma: Tensor,
                      start: Mapping[str, np.ndarray], eval_grid: tuple[Tensor, Tensor], eval_pixel_scale: float,
                      max_iter: int = 200, n_init: float = 1.0) -> FitResult:
    """(b) Batched elliptical Sérsic fits (7 parameters) of lensed images by L-BFGS on χ².

    ``start`` holds ``cx``, ``cy``, ``size`` (arcsec, second-moment radius), ``e1``, ``e2`` per image
    (e.g. :func:`_moments` of a pixelated reconstruction); the amplitude starts at its best linear value.
    """
    t0 = time.perf_counter()
    bx, by = rays
    b = len(data)
    lo, hi = _N_RANGE
    n0 = torch.full((b,), float(n_init), dtype=DTYPE)
    raw = {
        "log_amp": torch.zeros(b, dtype=DTYPE),
        "log_R": torch.as_tensor(np.log(np.clip(1.2 * start["size"], 0.02, 2.0)), dtype=DTYPE),
        "n_raw": torch.logit((n0 - lo) / (hi - lo)),
        "e1_raw": torch.atanh(torch.as_tensor(np.clip(start["e1"], -0.5, 0.5), dtype=DTYPE) / _E_MAX),
        "e2_raw": torch.atanh(torch.as_tensor(np.clip(start["e2"], -0.5, 0.5), dtype=DTYPE) / _E_MAX),
        "cx": torch.as_tensor(start["cx"], dtype=DTYPE).clone(),
        "cy": torch.as_tensor(start["cy"], dtype=DTYPE).clone(),
    }
    with torch.no_grad():
        model1 = _forward(sim, _sersic_sb(bx, by, _sersic_params(raw)))
        raw["log_amp"] = _profile_amplitude(model1, data, sigma).log()

    def loss(p: dict[str, Tensor], index: Tensor) -> Tensor:
        model = _forward(sim, _sersic_sb(*_rays_of(rays, index), _sersic_params(p)))
        return 0.5 * _chi2(data[index], model, sigma[index])

    evals = _lbfgs(raw, loss, max_iter)
    with torch.no_grad():
        p = _sersic_params(raw)
        model = _forward(sim, _sersic_sb(bx, by, p))
        chi2 = _chi2(data, model, sigma)
        ex, ey = eval_grid
        source = _sersic_sb(ex, ey, p) * eval_pixel_scale**2
    secs = (time.perf_counter() - t0) / b
    return FitResult("sersic", model.numpy(), source.numpy(), chi2.numpy(), 7, np.full(b, secs),
                     {"params": {k: v.detach().numpy() for k, v in p.items()}, "evaluations": evals})


# --------------------------------------------------------------------------------------------
# (c) Sérsic + shapelets, linear least squares through the operator
# --------------------------------------------------------------------------------------------
def hermite_functions(x: Tensor, n_max: int) -> Tensor:
    """Normalised Hermite functions ψ_0..ψ_{n_max} at ``x``: (n_max + 1, *x.shape)
    (ψ_n = (2ⁿ n! √π)^(-1/2) H_n(x) e^(-x²/2), by the stable three-term recurrence)."""
    out = [math.pi**-0.25 * torch.exp(-0.5 * x**2)]
    if n_max >= 1:
        out.append(math.sqrt(2.0) * x * out[0])
    for n in range(1, n_max):
        out.append(math.sqrt(2.0 / (n + 1)) * x * out[n] - math.sqrt(n / (n + 1)) * out[n - 1])
    return torch.stack(out[: n_max + 1])


def shapelet_basis(x: Tensor, y: Tensor, n_max: int, beta: float, center_x: float = 0.0,
                   center_y: float = 0.0) -> Tensor:
    """Cartesian shapelets (lenstronomy's ``SHAPELETS``: φ_n1(x/β) φ_n2(y/β) / β, n1 + n2 ≤ n_max,
    ordered by n = n1 + n2 then n2) at ``x, y``: ((n_max+1)(n_max+2)/2, *x.shape)."""
    hx = hermite_functions((x - center_x) / beta, n_max)
    hy = hermite_functions((y - center_y) / beta, n_max)
    cols = [hx[n - k] * hy[k] for n in range(n_max + 1) for k in range(n + 1)]
    return torch.stack(cols) / beta


def fit_shapelets_lensed(sim: LensingSimulator, rays: tuple[Tensor, Tensor], data: Tensor, sigma: Tensor,
                         sersic_params: Mapping[str, np.ndarray], n_max: int,
                         eval_grid: tuple[Tensor, Tensor], eval_pixel_scale: float,
                         beta_factors: Sequence[float] = (0.5, 1.0, 2.0)) -> FitResult:
    """(c) Sérsic + shapelets up to ``n_max``: the Sérsic profile (shape fixed at ``sersic_params``)
    and the shapelets centred on it are lensed through the operator and their amplitudes solved by
    weighted least squares, for each ``beta = factor × R_sersic``; the lowest χ² is kept."""
    bx, by = rays
    ex, ey = eval_grid
    b = len(data)
    models, sources, chi2 = np.empty(tuple(data.shape)), np.empty((b,) + tuple(ex.shape)), np.empty(b)
    secs, betas = np.empty(b), np.empty(b)
    k = (n_max + 1) * (n_max + 2) // 2
    for i in range(b):
        t0 = time.perf_counter()
        p = {key: torch.as_tensor(np.atleast_1d(v[i]), dtype=DTYPE) for key, v in sersic_params.items()}
        p["amp"] = torch.ones(1, dtype=DTYPE)
        cx, cy = float(p["center_x"]), float(p["center_y"])
        ser_img = _forward(sim, _sersic_sb(bx[i:i + 1], by[i:i + 1], p))[0]
        ser_src = _sersic_sb(ex[None], ey[None], p)[0]
        w = 1.0 / sigma[i]
        best = None
        for f in beta_factors:
            beta = max(float(f) * float(p["R_sersic"]), 0.5 * eval_pixel_scale)
            basis = shapelet_basis(bx[i], by[i], n_max, beta, cx, cy)
            cols = torch.cat([ser_img[None], _forward(sim, basis)])
            a = (cols * w).reshape(k + 1, -1).T
            coef = torch.linalg.lstsq(a, (data[i] * w).reshape(-1, 1), driver="gelsd").solution[:, 0]
            model = (coef[:, None, None] * cols).sum(0)
            c2 = float(_chi2(data[i], model, sigma[i]))
            if best is None or c2 < best[0]:
                best = (c2, beta, coef, model)
        c2, beta, coef, model = best
        src_basis = torch.cat([ser_src[None], shapelet_basis(ex, ey, n_max, beta, cx, cy)])
        sources[i] = ((coef[:, None, None] * src_basis).sum(0) * eval_pixel_scale**2).numpy()
        models[i], chi2[i], betas[i] = model.numpy(), c2, beta
        secs[i] = time.perf_counter() - t0
    # free parameters: the k + 1 amplitudes, the Sérsic's 6 shape parameters and beta
    return FitResult(f"shapelets_n{n_max}", models, sources, chi2, k + 1 + 6 + 1, secs,
                     {"beta": betas, "n_max": n_max})


# --------------------------------------------------------------------------------------------
# (a) the VAE decoder as the source model
# --------------------------------------------------------------------------------------------
def _double_decoder(vae: torch.nn.Module) -> torch.nn.Module:
    """The frozen float64 decoder of ``vae`` (its fused form: same function, faster)."""
    return vae.fused_decoder().to(DTYPE).eval()


def _encode_start(vae: torch.nn.Module, recon: np.ndarray, recon_scale: float, decoder_scale: float,
                  centre: np.ndarray) -> Tensor:
    """Encoder means of reconstructions ``recon`` (B, m, m) resampled onto the decoder's stamp grid
    centred on ``centre`` (B, 2) and peak-normalised."""
    size = vae.image_size
    px, py = pixel_grid(size, decoder_scale, dtype=DTYPE)
    img = torch.as_tensor(recon, dtype=DTYPE)
    c = torch.as_tensor(centre, dtype=DTYPE)
    stamp = pixelated(px[None] + c[:, 0, None, None], py[None] + c[:, 1, None, None], img, recon_scale)
    peak = stamp.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    stamp = (stamp / peak).clamp(min=0)
    with torch.no_grad():
        mu, _ = vae.encode(stamp[:, None].to(next(vae.parameters()).dtype))
    return mu.to(DTYPE)


def fit_decoder_rays(vae: torch.nn.Module, forward, rays: tuple[Tensor, Tensor], data: Tensor, sigma: Tensor,
                decoder_scale: float, z0: Tensor, centre0: Tensor, max_iter: int = 200,
                prior_weight: float = 1.0, fit_centre: bool = True) -> dict[str, Tensor]:
    """Batched decoder fits: source = ``amp · decode(z)`` (flux per decoder pixel of ``decoder_scale``
    arcsec) centred at a free offset, seen through ``forward(sb) -> image`` at ``rays``; L-BFGS on
    Σ ½χ² + ``prior_weight`` · ½|z|² (the negative log posterior, as :mod:`sourcelens.fit.decoder`). Returns ``z``, ``amp``, ``center`` (B, 2), ``model``, ``chi2``,
    ``decoded`` (B, s, s), ``evaluations``."""
    dec = _double_decoder(vae)
    bx, by = rays
    b = len(data)
    z = z0.detach().to(DTYPE).clone()
    cx, cy = centre0[:, 0].detach().to(DTYPE).clone(), centre0[:, 1].detach().to(DTYPE).clone()

    def source_sb(z, amp, cx, cy, index=None):
        img = dec.decode(z)[:, 0] * amp[:, None, None]
        return pixelated(*_rays_of(rays, index), img, decoder_scale, cx, cy)

    with torch.no_grad():
        m1 = forward(source_sb(z, torch.ones(b, dtype=DTYPE), cx, cy))
        log_amp = _profile_amplitude(m1, data, sigma).log()
    params = {"z": z, "log_amp": log_amp} | ({"cx": cx, "cy": cy} if fit_centre else {})

    def loss(p: dict[str, Tensor], index: Tensor) -> Tensor:
        model = forward(source_sb(p["z"], p["log_amp"].exp(), p.get("cx", cx[index]), p.get("cy", cy[index]), index))
        return 0.5 * _chi2(data[index], model, sigma[index]) + 0.5 * prior_weight * (p["z"] ** 2).sum(1)

    evals = _lbfgs(params, loss, max_iter)
    with torch.no_grad():
        amp = log_amp.exp()
        model = forward(source_sb(z, amp, cx, cy))
        return {"z": z.detach(), "amp": amp, "center": torch.stack([cx, cy], 1).detach(), "model": model,
                "chi2": _chi2(data, model, sigma), "decoded": dec.decode(z)[:, 0] * amp[:, None, None],
                "evaluations": evals}


def fit_decoder_lensed(vae: torch.nn.Module, sim: LensingSimulator, rays: tuple[Tensor, Tensor],
                       data: Tensor, sigma: Tensor, source_pixel_scale: float, stamp_size: int,
                       eval_grid: tuple[Tensor, Tensor], start_source: np.ndarray | None = None,
                       max_iter: int = 200, init: str = "encoder", prior_weight: float = 1.0,
                       z0: Tensor | None = None, centre0: np.ndarray | None = None) -> FitResult:
    """(a) Decoder fits of lensed images (latents + amplitude + centre offset), batched.

    The decoded stamp has ``vae.image_size`` pixels spanning the source stamp (``stamp_size`` pixels
    of ``source_pixel_scale``). Start: ``z0``/``centre0`` if given; otherwise, with ``start_source``
    (e.g. the pixelated reconstruction on the evaluation grid), its centroid and (``init="encoder"``)
    the encoder's mean of it; ``init="prior"`` starts from z = 0.
    """
    t0 = time.perf_counter()
    b = len(data)
    decoder_scale = source_pixel_scale * stamp_size / vae.image_size
    if centre0 is None:
        centre0 = (np.stack([(mo := _moments(start_source, source_pixel_scale))["cx"], mo["cy"]], 1)
                   if start_source is not None else np.zeros((b, 2)))
    if z0 is None:
        if init == "encoder" and start_source is not None:
            z0 = _encode_start(vae, start_source, source_pixel_scale, decoder_scale, centre0)
        elif init in ("encoder", "prior"):
            z0 = torch.zeros(b, vae.latent_dim, dtype=DTYPE)
        else:
            raise ValueError(f"unknown init {init!r}; allowed: encoder, prior")
    res = fit_decoder_rays(vae, lambda sb: _forward(sim, sb), rays, data, sigma, decoder_scale, z0,
                      torch.as_tensor(centre0, dtype=DTYPE), max_iter, prior_weight)
    ex, ey = eval_grid
    c = res["center"]
    with torch.no_grad():
        sb = pixelated(ex.expand(b, -1, -1), ey.expand(b, -1, -1), res["decoded"], decoder_scale,
                       c[:, 0], c[:, 1])
        source = sb * source_pixel_scale**2
    secs = (time.perf_counter() - t0) / b
    return FitResult("decoder", res["model"].numpy(), source.numpy(), res["chi2"].numpy(),
                     vae.latent_dim + 3, np.full(b, secs),
                     {"z": res["z"].numpy(), "amp": res["amp"].numpy(), "center": c.numpy(),
                      "evaluations": res["evaluations"]})


# --------------------------------------------------------------------------------------------
# All methods, metrics and the summary table
# --------------------------------------------------------------------------------------------
def fit_lensed_all(scenes: LensedScenes, vae: torch.nn.Module, *, regularisation: float = 1.0,
                   max_iter: int = 200, init: str = "encoder", shapelet_n_max: Sequence[int] = (8, 20),
                   prior_weight: float = 1.0, regulariser: str = "gradient",
                   methods: Sequence[str] | None = None) -> tuple[dict[str, FitResult], pd.DataFrame]:
    """Fit every scene with every method (lens fixed at the truth); returns the fits by method name and
    the per-galaxy, per-method metrics table (``galaxy``, ``source_id``, ``method``, ``chi2``, ``nu``,
    ``chi2_nu``, ``source_mse``, ``source_ssim``, ``seconds``).

    ``methods`` restricts the methods (``decoder``, ``sersic``, ``shapelets``, ``pixelated``); the
    pixelated fit always runs first since it starts the others."""
    wanted = set(methods or ("decoder", "sersic", "shapelets", "pixelated"))
    unknown = wanted - {"decoder", "sersic", "shapelets", "pixelated"}
    if unknown:
        raise ValueError(f"unknown fit methods {sorted(unknown)}")
    sim = torch_simulator(scenes)
    lens_models, kw = lens_kwargs_torch(scenes)
    with torch.no_grad():
        rays = sim.source_positions(lens_models, kw)
    data = torch.as_tensor(scenes.data, dtype=DTYPE)
    sigma = torch.as_tensor(scenes.sigma, dtype=DTYPE)
    grid = evaluation_grid(scenes)
    m, scale = scenes.stamps.shape[-1], scenes.source_pixel_scale
    fits: dict[str, FitResult] = {}
    log.info("pixelated fits of %d lensed galaxies (regularisation %g, %s)", len(scenes), regularisation, regulariser)
    pix = fit_pixelated(scenes, sim, regularisation, regulariser)
    start = _moments(pix.source, scale)
    if "decoder" in wanted:
        log.info("decoder fits (init %s, max_iter %d)", init, max_iter)
        fits["decoder"] = fit_decoder_lensed(vae, sim, rays, data, sigma, scale, m, grid, pix.source,
                                             max_iter, init, prior_weight)
    if wanted & {"sersic", "shapelets"}:
        log.info("Sérsic fits")
        ser = fit_sersic_lensed(sim, rays, data, sigma, start, grid, scale, max_iter)
        if "sersic" in wanted:
            fits["sersic"] = ser
        if "shapelets" in wanted:
            for n_max in shapelet_n_max:
                log.info("Sérsic + shapelets n_max=%d", n_max)
                res = fit_shapelets_lensed(sim, rays, data, sigma, ser.info["params"], int(n_max), grid, scale)
                res.seconds = res.seconds + ser.seconds
                fits[res.method] = res
    if "pixelated" in wanted:
        fits["pixelated"] = pix
    truth = true_source_on_grid(scenes)
    n_pix = scenes.data[0].size
    rows = []
    for name, res in fits.items():
        for i in range(len(scenes)):
            mse, ssim = source_metrics(truth[i], res.source[i])
            nu = n_pix - res.n_params
            rows.append({"galaxy": i, "source_id": scenes.source_ids[i], "method": name,
                         "chi2": float(res.chi2[i]), "nu": nu, "chi2_nu": float(res.chi2[i]) / nu,
                         "source_mse": mse, "source_ssim": ssim, "seconds": float(res.seconds[i])})
    return fits, pd.DataFrame(rows)


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method (in order of appearance): galaxies and the mean and median of each metric."""
    cols = ["chi2_nu", "source_mse", "source_ssim", "seconds"]
    order = list(dict.fromkeys(metrics["method"]))
    g = metrics.groupby("method", sort=False)[cols]
    out = pd.concat({"mean": g.mean(), "median": g.median()}, axis=1)
    out.columns = [f"{c}_{stat}" for stat, c in out.columns]
    out = out[[f"{c}_{s}" for c in cols for s in ("mean", "median")]]
    out.insert(0, "n_galaxies", g.size())
    return out.loc[order].reset_index()
