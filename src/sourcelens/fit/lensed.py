"""Lensed source fits (study 000): the VAE decoder as the source model of a lensed galaxy, against an
elliptical Sérsic, Sérsic + shapelets and a regularised pixelated source, with the lens held at its true
parameters.

Test galaxies are lensed with lenstronomy (:func:`sourcelens.fit.scenes.simulate_lensed`: the lens, PSF,
supersampling and noise of ``simulate.pairs``) and fitted through the torch lensing operator with the same
grid, supersampling and PSF kernel (:func:`sourcelens.fit.scenes.imaging_problem`) by:

``pixelated``
    the regularised linear inversion (:mod:`sourcelens.fit.pixelated`); it runs first, since it starts the
    others (its seconds are added to theirs).
``decoder``
    :func:`sourcelens.fit.decoder.fit_decoder` — the same fitter, parametrisation (latents, profiled flux,
    offset and zoom of the decoded stamp), stopping rule and prior as the unlensed fits — seeing the source
    through the lens: the decoded stamp spans the evaluation grid and is sampled at each scene's rays. Start
    (``init="encoder"``): the encoder's mean of the pixelated reconstruction re-centred on its centroid, the
    offset at that centroid; ``init="prior"``: z = 0.
``sersic``, ``sersic+shapelets{n}``
    :mod:`sourcelens.fit.profiles` through the same operator, started from the moments of the pixelated
    reconstruction.

Metrics per galaxy and method: ``chi2_nu`` = χ² / ν over the image, ν = pixels − free parameters (for
``pixelated`` ν = pixels: its regularised parameters are not counted); ``source_mse`` and ``source_ssim`` on
the evaluation grid after scaling the reconstruction to the true source's total flux, in units of the true
source's peak (SSIM in the project's convention, :func:`sourcelens.metrics.ssim`); ``seconds``: wall time per
galaxy (batched fits: batch time / B).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..io import read_dataset, read_meta
from ..lensing import pixel_grid, pixelated
from ..selection import first_originals
from ..simulate import lensing_sources
from .common import FitResult, ImagingProblem, image_moments
from .decoder import fit_decoder
from .pixelated import fit_pixelated
from .profiles import fit_sersic, fit_sersic_shapelets
from .scenes import DTYPE, LensedScenes, imaging_problem, simulate_lensed, true_source_on_grid

log = logging.getLogger(__name__)

__all__ = ["METHODS", "lensed_test_scenes", "decoder_lensing", "fit_decoder_lensed", "flux_normalised", "source_metrics",
           "fit_lensed_all", "fit_options", "summary_table", "median_galaxy"]

METHODS = ("decoder", "sersic", "shapelets", "pixelated")


def lensed_test_scenes(test_path: str | Path, n_galaxies: int, pairs_cfg: Mapping[str, Any], lens_model: str,
                       rng: np.random.Generator, source_kinds: Sequence[str] | None = None) -> LensedScenes:
    """The first ``n_galaxies`` original (un-augmented) stamps of ``source_kinds`` (default: all kinds) of a
    stamps file by source id, as the simulations lens them (:func:`sourcelens.simulate.lensing_sources`: the
    noiseless truth where known), lensed once (:func:`sourcelens.fit.scenes.simulate_lensed` with ``rng``)."""
    meta = read_meta(test_path)
    if source_kinds is not None and "kind" in meta:
        meta = meta[meta["kind"].astype(str).isin(list(source_kinds))]
    rows = meta.index.to_numpy()[first_originals(meta.reset_index(drop=True), n_galaxies, linear_only=True)]
    if len(rows) == 0:
        raise ValueError(f"{test_path}: no original (un-augmented) stamps of {source_kinds or 'any kind'} to fit")
    arrays, sel = read_dataset(test_path, index=np.sort(rows))
    images, sel = lensing_sources(arrays, sel, sel["kind"].unique() if "kind" in sel else ())
    kinds = sel["kind"].astype(str).tolist() if "kind" in sel else None
    scales = sel["pixel_scale_arcsec"].to_numpy(dtype=float) if "pixel_scale_arcsec" in sel else None
    return simulate_lensed(images, pairs_cfg, rng, lens_model=lens_model,
                           source_ids=sel["source_id"].astype(str).tolist(), kinds=kinds, pixel_scales=scales)


def _decoder_stamps(images: np.ndarray, pixel_scale: np.ndarray, decoder_scale: np.ndarray, size: int,
                    centre: np.ndarray) -> np.ndarray:
    """``images`` (B, m, m) of ``pixel_scale`` (B,) resampled onto the decoder's stamp grids (``size`` pixels of
    ``decoder_scale`` (B,)) centred on ``centre`` (B, 2) arcsec, peak-normalised and clipped at 0: what the
    encoder was trained on."""
    px, py = pixel_grid(size, 1.0, dtype=DTYPE)
    d = torch.as_tensor(decoder_scale, dtype=DTYPE)[:, None, None]
    c = torch.as_tensor(centre, dtype=DTYPE)
    stamp = pixelated(px * d + c[:, 0, None, None], py * d + c[:, 1, None, None],
                      torch.as_tensor(images, dtype=DTYPE), torch.as_tensor(pixel_scale, dtype=DTYPE)[:, None, None])
    peak = stamp.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    return (stamp / peak).clamp(min=0).numpy()


def decoder_lensing(problem: ImagingProblem, image_size: int) -> tuple[Callable, Callable, np.ndarray]:
    """How a decoded stamp (``image_size`` pixels spanning each scene's evaluation grid) is seen in the scenes of
    ``problem``: ``forward(source, index)``, the images of rendered sources (flux per decoder pixel) through
    the lenses of galaxies ``index``; ``on_grid(source, index)``, the sources as flux per pixel of the
    evaluation grid (where the true source is compared); and the decoder's pixel scale (B,) arcsec."""
    pix, m = problem.grid_pixel_scale.numpy(), problem.grid[0].shape[-1]
    decoder_scale = pix * m / image_size
    dscale = torch.as_tensor(decoder_scale, dtype=DTYPE)[:, None, None]

    def forward(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return problem.image(pixelated(*problem.rays_of(index), source.to(DTYPE), dscale[index]))

    def on_grid(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ex, ey = problem.grid
        if ex.ndim == 3:
            ex, ey = ex[index], ey[index]
        return pixelated(ex, ey, source.to(DTYPE), dscale[index]) * problem.grid_pixel_scale[index, None, None] ** 2

    return forward, on_grid, decoder_scale


def fit_decoder_lensed(vae: torch.nn.Module, problem: ImagingProblem, start_source: np.ndarray | None = None, *,
                       init: str = "encoder", max_iter: int = 200, prior_weight: float = 1.0,
                       tolerance_change: float = 5e-3, patience: int = 2, interpolation: str = "bicubic",
                       z0: np.ndarray | None = None, centre0: np.ndarray | None = None) -> FitResult:
    """Decoder fits of the lensed images of ``problem`` (see the module docstring).

    The decoded stamp (``vae.image_size`` pixels) spans the evaluation grid. Start: ``z0`` / ``centre0``
    (arcsec) if given; otherwise the centroid of ``start_source`` (B, m, m, on the evaluation grid; e.g. the
    pixelated reconstruction) and, with ``init="encoder"``, the encoder's mean of it; ``init="prior"``: z = 0.
    ``info``: ``z``, ``flux``, ``center`` (B, 2) arcsec, ``scale``, ``n_iter``, ``status``, ``preconditioner``.
    """
    b = len(problem)
    pix = problem.grid_pixel_scale.numpy()
    forward, on_grid, decoder_scale = decoder_lensing(problem, vae.image_size)
    if centre0 is None:
        mo = image_moments(start_source, pix) if start_source is not None else None
        centre0 = np.stack([mo["cx"], mo["cy"]], 1) if mo is not None else np.zeros((b, 2))
    centre0 = np.asarray(centre0, dtype=float)
    encoder_input = None
    if z0 is None and init == "encoder" and start_source is not None:
        encoder_input = _decoder_stamps(start_source, pix, decoder_scale, vae.image_size, centre0)

    fit = fit_decoder(vae, problem.data.numpy(), problem.sigma.numpy(), init=init, max_iter=max_iter,
                      prior_weight=prior_weight, tolerance_change=tolerance_change, patience=patience,
                      forward=forward, z0=z0, offset0=centre0 / decoder_scale[:, None], encoder_input=encoder_input,
                      dtype=DTYPE, interpolation=interpolation)
    with torch.no_grad():
        source = on_grid(torch.as_tensor(fit.source, dtype=DTYPE), torch.arange(b))
    return FitResult("decoder", fit.model, source.numpy(), fit.chi2, fit.n_params, fit.seconds,
                     {"z": fit.z, "flux": fit.flux, "center": fit.offset * decoder_scale[:, None], "scale": fit.scale,
                      "n_iter": fit.n_iter, "status": fit.status, "preconditioner": fit.preconditioner})


def flux_normalised(true: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The project's one source normalisation: (truth, reconstruction) with the reconstruction scaled to the true
    source's total flux, both in units of the true source's peak (so the truth peaks at 1). None where the
    reconstruction has non-positive total flux or non-finite values (it cannot be scaled)."""
    true = np.asarray(true, dtype=float)
    recon = np.asarray(recon, dtype=float)
    t_sum, r_sum = true.sum(), recon.sum()
    if not np.isfinite(recon).all() or r_sum <= 0 or t_sum <= 0:
        return None
    peak = true.max()
    return true / peak, recon * (t_sum / r_sum) / peak


def source_metrics(true: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """(MSE, SSIM) of a reconstructed source against the true one (same grid), after :func:`flux_normalised`;
    NaN where the reconstruction cannot be normalised."""
    pair = flux_normalised(true, recon)
    if pair is None:
        return float("nan"), float("nan")
    return metrics.mse(*pair), metrics.ssim(*pair)


def fit_lensed_all(scenes: LensedScenes, vae: torch.nn.Module, *, regularisation: float = 1.0,
                   max_iter: int = 200, init: str = "encoder", shapelet_n_max: Sequence[int] = (8, 20),
                   prior_weight: float = 1.0, regulariser: str = "gradient", tolerance_change: float = 5e-3,
                   patience: int = 2, interpolation: str = "bicubic", methods: Sequence[str] | None = None
                   ) -> tuple[dict[str, FitResult], pd.DataFrame]:
    """Fit every scene with every method (lens fixed at the truth); returns the fits by method name and the
    per-galaxy, per-method metrics table (``galaxy``, ``source_id``, ``kind``, ``method``, ``chi2``, ``nu``,
    ``chi2_nu``, ``source_mse``, ``source_ssim``, ``seconds``). ``methods`` restricts them (:data:`METHODS`;
    ``shapelets`` means every order of ``shapelet_n_max``)."""
    wanted = set(methods or METHODS)
    unknown = wanted - set(METHODS)
    if unknown:
        raise ValueError(f"unknown fit methods {sorted(unknown)}; allowed: {', '.join(METHODS)}")
    problem = imaging_problem(scenes)
    log.info("pixelated fits of %d lensed galaxies (regularisation %g, %s)", len(scenes), regularisation, regulariser)
    pix = fit_pixelated(scenes, regularisation, regulariser)
    lbfgs = {"max_iter": max_iter, "tolerance_change": tolerance_change, "patience": patience}
    fits: dict[str, FitResult] = {}
    if "decoder" in wanted:
        log.info("decoder fits (init %s, max_iter %d)", init, max_iter)
        fits["decoder"] = fit_decoder_lensed(vae, problem, pix.source, init=init, prior_weight=prior_weight,
                                             interpolation=interpolation, **lbfgs)
    if wanted & {"sersic", "shapelets"}:
        log.info("Sérsic fits")
        ser = fit_sersic(problem, pix.source, **lbfgs)
        if "sersic" in wanted:
            fits["sersic"] = ser
        if "shapelets" in wanted:
            for n_max in shapelet_n_max:
                log.info("Sérsic + shapelets n_max=%d", n_max)
                res = fit_sersic_shapelets(problem, ser, int(n_max))
                fits[res.method] = res
    for res in fits.values():   # every other fit starts from the pixelated reconstruction: its time counts
        res.seconds = res.seconds + pix.seconds
    if "pixelated" in wanted:
        fits["pixelated"] = pix
    truth = true_source_on_grid(scenes)
    n_pix = scenes.data[0].size
    rows = []
    for name, res in fits.items():
        for i in range(len(scenes)):
            mse, ssim = source_metrics(truth[i], res.source[i])
            nu = n_pix - res.n_params
            rows.append({"galaxy": i, "source_id": scenes.source_ids[i], "kind": scenes.kinds[i], "method": name,
                         "chi2": float(res.chi2[i]), "nu": nu, "chi2_nu": float(res.chi2[i]) / nu,
                         "source_mse": mse, "source_ssim": ssim, "seconds": float(res.seconds[i])})
    return fits, pd.DataFrame(rows)


def fit_options(fit_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`fit_lensed_all` from the config's ``fit`` section (L-BFGS settings,
    shapelet orders, the decoder's start and interpolation, the ``fit.lensed`` regularisation)."""
    return {"regularisation": fit_cfg["lensed"]["regularisation"], "max_iter": fit_cfg["max_iter"],
            "init": fit_cfg["init"], "shapelet_n_max": fit_cfg["shapelet_n_max"],
            "tolerance_change": fit_cfg["tolerance_change"], "patience": fit_cfg["patience"],
            "interpolation": fit_cfg["interpolation"]}


def summary_table(metrics_table: pd.DataFrame) -> pd.DataFrame:
    """Per source kind (real galaxies first, then all) and method (in order of appearance): galaxies and the mean
    and median of each metric."""
    cols = ["chi2_nu", "source_mse", "source_ssim", "seconds"]

    def per_method(rows: pd.DataFrame) -> pd.DataFrame:
        order = list(dict.fromkeys(rows["method"]))
        g = rows.groupby("method", sort=False)[cols]
        out = pd.concat({"mean": g.mean(), "median": g.median()}, axis=1)
        out.columns = [f"{c}_{stat}" for stat, c in out.columns]
        out = out[[f"{c}_{s}" for c in cols for s in ("mean", "median")]]
        out.insert(0, "n_galaxies", g.size())
        return out.loc[order].reset_index()

    return metrics.by_kind(metrics_table, per_method)


def median_galaxy(metrics_table: pd.DataFrame, method: str = "decoder") -> int:
    """The galaxy with the median χ²/ν of ``method`` (the first method present if it is not): the example a
    figure shows."""
    present = list(dict.fromkeys(metrics_table["method"]))
    rows = metrics_table[metrics_table["method"] == (method if method in present else present[0])]
    order = rows.sort_values("chi2_nu", kind="stable")["galaxy"].to_numpy()
    return int(order[len(order) // 2])
