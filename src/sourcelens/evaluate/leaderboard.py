"""The leaderboard: every way the project has to recover a source from a lensed image, on ONE common test set.

The set is the first ``n_galaxies`` originals (one lensing per galaxy, the kinds taken in turn, real galaxies
first) of the U-Net's test pairs: galaxies never trained on, lensed by lenstronomy with the PSF, supersampling and
noise of ``simulate.pairs`` (:mod:`sourcelens.simulate`). The truth is the pairs' ``source``: the unlensed galaxy
integrated over the source grid (``num_pix``² pixels of ``source_grid_pixel_scale_arcsec`` centred on the optical
axis), where every method's source is compared.

Methods (:data:`METHODS`; those needing a model that is not given are left out):

``identity``                      the lensed image sampled on the source grid: the floor
``backward (true lens)``          exact fractional-overlap backward mapping (:func:`~sourcelens.evaluate.delensing.backward_source`)
``backward (CNN lens)``           the same through the lens the CNN predicts
``U-Net``                         the network (mean over the 8 rotations and reflections of each image)
``decoder (true lens)``           the VAE decoder fitted through the lens (:func:`sourcelens.fit.lensed.fit_decoder_lensed`)
``decoder (CNN lens)``            the same through the CNN's lens
``Sérsic``, ``Sérsic + shapelets n_max``, ``pixelated``   the study-000 baselines through the true lens
                                  (:func:`sourcelens.fit.lensed.fit_lensed_all`)
``LensSR no source (true lens)``, ``PISR (true lens)``   the sources of the super-resolution methods that yield
                                  one (studies 001, 004; :func:`sr_source`), trained on a super-resolution set and
                                  applied here through the true lens
``LensSR no source (CNN lens)``, ``PISR (CNN lens)``     the same through the CNN's lens

Metrics per galaxy, the same for all: ``mse`` and ``ssim`` of the source against the truth after ONE fixed
normalisation (:func:`sourcelens.fit.lensed.source_metrics`: the estimate scaled to the true source's flux on the
grid, both in units of the true source's peak), ``psnr`` = 10 log10(1 / mse); ``chi2_nu``, χ² / ν of the
re-lensed model against the data (the fits' own models, ν = pixels − free parameters; the other methods' sources
lensed through their lens — the true lens for identity and the U-Net, which claim none — with the PSF, at the
best-fitting amplitude, ν = pixels − 1); ``seconds`` per galaxy (CNN methods include the CNN's time; the fits,
the pixelated start's).

Summary (:func:`leaderboard_table`): per source kind (real galaxies first, then all) and method, the means and a
paired bootstrap interval on each method's difference from the best method of that metric (the galaxies resampled
together for every method).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..fit.lensed import fit_decoder_lensed, fit_lensed_all, source_metrics
from ..fit.scenes import DTYPE, LensedScenes, lens_kwargs_torch, torch_simulator
from ..io import read_attrs, read_dataset, read_meta
from ..lensing import BilinearLensingOperator
from ..metrics import by_kind
from ..names import LENS_PARAMETERS, SR_SOURCE_METHODS
from ..selection import first_originals
from .delensing import backward_source, identity_source

log = logging.getLogger(__name__)

__all__ = ["METHODS", "SCORES", "SR_SOURCE_LABELS", "pairs_scenes", "relensed_chi2", "sr_source",
           "evaluate_leaderboard", "paired_bootstrap", "leaderboard_table"]

METHODS = ("identity", "backward (true lens)", "backward (CNN lens)", "U-Net", "decoder (true lens)",
           "decoder (CNN lens)", "Sérsic", "Sérsic + shapelets", "pixelated", "LensSR no source (true lens)",
           "LensSR no source (CNN lens)", "PISR (true lens)", "PISR (CNN lens)")
#: the leaderboard's name of each super-resolution method that yields a source
#: (:data:`sourcelens.names.SR_SOURCE_METHODS`), followed by " (true lens)" or " (CNN lens)"
SR_SOURCE_LABELS = dict(zip(SR_SOURCE_METHODS, ("LensSR no source", "PISR")))
# the summarised metrics and whether larger is better
SCORES = {"ssim": True, "mse": False, "psnr": True, "chi2_nu": False}
_FIT_NAMES = {"decoder": "decoder (true lens)", "sersic": "Sérsic", "pixelated": "pixelated"}


def pairs_scenes(pairs_path: str | Path, n_galaxies: int | None, pairs_cfg: Mapping[str, Any]) -> LensedScenes:
    """The first ``n_galaxies`` originals of a pairs file (:func:`sourcelens.selection.first_originals`, flux-linear
    sources only, each galaxy's first lensing only) as :class:`~sourcelens.fit.scenes.LensedScenes` whose "stamps" are the stored true sources on the
    source grid (at the optical axis, flux per pixel): the fits' evaluation grid is then that grid.
    ``pairs_cfg`` (``simulate.pairs``) gives the PSF and supersampling the file was rendered with."""
    from ..simulate import pairs_renderer

    attrs = read_attrs(pairs_path)
    for key, attr in (("num_pix", "num_pix"), ("pixel_scale_arcsec", "pixel_scale_arcsec")):
        if attr in attrs and not math.isclose(float(attrs[attr]), float(pairs_cfg[key])):
            raise ValueError(f"{pairs_path}: {attr} {attrs[attr]} differs from config key simulate/pairs/{key} "
                             f"{pairs_cfg[key]}: the file was rendered with another config")
    meta = read_meta(pairs_path)
    once = meta.drop_duplicates("source_id") if "source_id" in meta else meta    # one lensing per galaxy
    rows = np.sort(once.index.to_numpy()[first_originals(once.reset_index(drop=True), n_galaxies, linear_only=True)])
    if len(rows) == 0:
        raise ValueError(f"{pairs_path}: no original pairs to evaluate")
    arrays, sel = read_dataset(pairs_path, index=rows)
    lens_model = str(attrs["lens_model"])
    grid_scale = float(attrs["source_grid_pixel_scale_arcsec"])
    source = arrays["source"].astype(float)
    bad = [str(sel["source_id"].iloc[i]) for i in range(len(rows))
           if not (np.isfinite(arrays["lensed"][i]).all() and np.isfinite(source[i]).all())]
    if bad:
        raise ValueError(f"{pairs_path}: non-finite images or sources for source ids {bad}")
    psf = pairs_renderer(lens_model, pairs_cfg).psf
    kernel = None if psf.psf_type == "NONE" else np.asarray(psf.kernel_point_source, dtype=float)
    n = len(rows)
    return LensedScenes(
        data=arrays["lensed"].astype(float), noiseless=arrays["lensed_noiseless"].astype(float),
        sigma=arrays["noise_sigma"].astype(float), stamps=source, source_flux=source.sum(axis=(1, 2)),
        source_xy=np.zeros((n, 2)), lens=pd.DataFrame(np.asarray(arrays["lens_params"], float), columns=LENS_PARAMETERS),
        lens_model=lens_model, num_pix=int(attrs.get("num_pix", pairs_cfg["num_pix"])),
        pixel_scale=float(attrs["pixel_scale_arcsec"]), source_pixel_scale=np.full(n, grid_scale),
        supersampling=int(pairs_cfg.get("supersampling", 1)), psf_kernel=kernel,
        source_ids=sel["source_id"].astype(str).tolist(),
        kinds=sel["kind"].astype(str).tolist() if "kind" in sel else ["unknown"] * n,
    )


def relensed_chi2(scenes: LensedScenes, sources: np.ndarray) -> np.ndarray:
    """χ² / ν of ``sources`` (B, m, m) on the scenes' source grid lensed through each scene's lens (``scenes.lens``)
    with its PSF, at the amplitude that best fits the data (≥ 0; ν = pixels − 1): how well a source that carries
    no flux scale explains the image."""
    sim = torch_simulator(scenes)
    m = scenes.stamps.shape[-1]
    out = np.empty(len(scenes))
    for i in range(len(scenes)):
        models, kw = lens_kwargs_torch(scenes, i)
        op = BilinearLensingOperator(sim, models, kw, (m, m), float(scenes.source_pixel_scale[i]))
        with torch.no_grad():
            image = op.apply(torch.as_tensor(np.nan_to_num(sources[i]), dtype=DTYPE)).numpy()
        w = 1.0 / scenes.sigma[i] ** 2
        denom = float((w * image * image).sum())
        amplitude = max(0.0, float((w * image * scenes.data[i]).sum()) / denom) if denom > 0 else 0.0
        out[i] = float((w * (scenes.data[i] - amplitude * image) ** 2).sum()) / (scenes.data[i].size - 1)
    return out


def _sr_label(method: str) -> str:
    """The leaderboard's name of a super-resolution method; ValueError for one that yields no source."""
    if method not in SR_SOURCE_LABELS:
        raise ValueError(f"super-resolution method {method!r} yields no source; those that do: "
                         f"{', '.join(SR_SOURCE_METHODS)}")
    return SR_SOURCE_LABELS[method]


def sr_source(scenes: LensedScenes, method: str, model: torch.nn.Module, psf: Mapping[str, Any] | None,
              supersampling: int = 1) -> np.ndarray:
    """The source of a super-resolution ``method`` (``lenssr_no_source``, ``pisr``; ``model`` trained on an SR
    set) for every scene, through the scenes' lens (``scenes.lens``, shear included), sampled on the scenes'
    source grid (B, m, m; flux per grid pixel up to a scale).

    The super-resolution grids are the scenes' own: the image's pixels, ``factor``× finer (the model's), with
    the pairs' ``psf`` (config, as ``simulate.pairs.psf``) and their ``supersampling`` (rendered on
    ``supersampling`` sub-pixels per side: the low-res image is the block sum of the fine one where that is a
    multiple of the factor). PISR refines its source on each image given the noise map
    (:func:`sourcelens.models.pisr.refine_sources`). The source, on the fine grid over the whole field, is
    sampled bilinearly at the centres of the source grid's pixels."""
    from ..lensing.superres import SRGeometry, SRLensCache
    from ..models.sr import run_super_resolution

    _sr_label(method)
    factor, supersampling = int(model.hparams["factor"]), int(supersampling)
    geometry = SRGeometry.from_attrs({
        "low_res_num_pix": scenes.num_pix, "low_res_pixel_scale_arcsec": scenes.pixel_scale, "factor": factor,
        "psf": psf, "supersampling": max(1, supersampling // factor), "low_res_supersampling": supersampling})
    lenses = SRLensCache(geometry).for_rows(scenes.lens_model, scenes.lens.to_numpy(), with_shear=True)
    _, fine = run_super_resolution(method, model, scenes.data.astype(np.float32), lenses,
                                   noise_sigma=scenes.sigma.astype(np.float32))
    m = scenes.stamps.shape[-1]
    # bilinear sampling of the centred fine source at the centres of the source grid (as the identity does)
    return identity_source(fine, geometry.high_res_pixel_scale, m, float(scenes.source_pixel_scale[0]))


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def evaluate_leaderboard(scenes: LensedScenes, vae=None, cnn=None, unet=None, *,
                         fit_options: Mapping[str, Any] | None = None,
                         methods: Sequence[str] | None = None,
                         sr_models: Mapping[str, torch.nn.Module] | None = None,
                         pairs_cfg: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every method of :data:`METHODS` (restricted to ``methods``; those needing a model not given left out) on
    ``scenes`` (:func:`pairs_scenes`). ``fit_options``: keyword arguments of
    :func:`~sourcelens.fit.lensed.fit_lensed_all` (regularisation, max_iter, shapelet_n_max, ...).
    ``sr_models``: super-resolution models by method (keys of :data:`SR_SOURCE_LABELS`), applied by
    :func:`sr_source` through the true lens and (given ``cnn``) the CNN's, with the PSF and supersampling of
    ``pairs_cfg`` (``simulate.pairs``, which they need).
    Returns the per-galaxy metrics (``galaxy``, ``source_id``, ``kind``, ``method``, ``lens``, ``mse``, ``ssim``,
    ``psnr``, ``chi2_nu``, ``chi2_nu_true_source`` (the true source re-lensed the same way: the floor the source
    grid allows), ``seconds``) and the sources by method (B, m, m, flux per grid pixel up to a scale)."""
    from ..models.cnn import predict_lens_params
    from ..models.unet import delens

    wanted = set(methods or METHODS)
    unknown = wanted - set(METHODS)
    if unknown:
        raise ValueError(f"unknown leaderboard methods {sorted(unknown)}; allowed: {', '.join(METHODS)}")
    opts = dict(fit_options or {})
    b, m = len(scenes), scenes.stamps.shape[-1]
    grid_scale = float(scenes.source_pixel_scale[0])
    truth = scenes.stamps
    sources: dict[str, np.ndarray] = {}
    chi2_nu: dict[str, np.ndarray] = {}
    seconds: dict[str, np.ndarray] = {}
    lens_of: dict[str, str] = {}

    def add(name, source, secs, chi2, lens):
        sources[name], seconds[name], chi2_nu[name], lens_of[name] = source, np.broadcast_to(secs, (b,)), chi2, lens

    if "identity" in wanted:
        src, t = _timed(identity_source, scenes.data, scenes.pixel_scale, m, grid_scale)
        add("identity", src, t / b, relensed_chi2(scenes, src), "none")
    if "backward (true lens)" in wanted:
        src, t = _timed(backward_source, scenes.data, scenes.lens_model, scenes.lens.to_numpy(), scenes.pixel_scale,
                        m, grid_scale)
        add("backward (true lens)", src, t / b, relensed_chi2(scenes, src), "true")
    cnn_scenes, cnn_seconds = None, 0.0
    sr_cnn = {f"{SR_SOURCE_LABELS[m]} (CNN lens)" for m in (sr_models or {}) if m in SR_SOURCE_LABELS}
    if cnn is not None and wanted & ({"backward (CNN lens)", "decoder (CNN lens)"} | sr_cnn):
        (predicted, _), t = _timed(predict_lens_params, cnn, scenes.data)
        cnn_seconds = t / b
        cnn_scenes = dataclasses.replace(scenes, lens=pd.DataFrame(np.asarray(predicted, float), columns=LENS_PARAMETERS))
        if "backward (CNN lens)" in wanted:
            src, t = _timed(backward_source, scenes.data, scenes.lens_model, predicted, scenes.pixel_scale, m,
                            grid_scale)
            add("backward (CNN lens)", src, cnn_seconds + t / b, relensed_chi2(cnn_scenes, src), "CNN")
    if unet is not None and "U-Net" in wanted:
        src, t = _timed(delens, unet, scenes.data)
        src = np.asarray(src, dtype=float)
        if src.shape[-1] != m:
            raise ValueError(f"the U-Net's source grid has {src.shape[-1]} pixels, the test pairs' {m}: it was "
                             "trained on other pairs")
        add("U-Net", src, t / b, relensed_chi2(scenes, src), "none")
    fit_methods = set()
    if vae is not None and "decoder (true lens)" in wanted:
        fit_methods.add("decoder")
    fit_methods |= {name for name, label in (("sersic", "Sérsic"), ("pixelated", "pixelated"),
                                             ("shapelets", "Sérsic + shapelets")) if label in wanted}
    if fit_methods:
        fits, _ = fit_lensed_all(scenes, vae, methods=sorted(fit_methods), **opts)
        n_pix = scenes.data[0].size
        for name, res in fits.items():
            label = _FIT_NAMES.get(name) or name.replace("sersic+shapelets", "Sérsic + shapelets n_max ")
            add(label, res.source, res.seconds, res.chi2 / (n_pix - res.n_params), "true")
    if vae is not None and cnn_scenes is not None and "decoder (CNN lens)" in wanted:
        fits, _ = fit_lensed_all(cnn_scenes, vae, methods=["decoder"], **opts)
        res = fits["decoder"]
        add("decoder (CNN lens)", res.source, res.seconds + cnn_seconds, res.chi2 / (scenes.data[0].size - res.n_params),
            "CNN")

    for method, model in (sr_models or {}).items():
        name = _sr_label(method)
        for lens, lens_scenes, extra_seconds in (("true", scenes, 0.0), ("CNN", cnn_scenes, cnn_seconds)):
            label = f"{name} ({lens} lens)"
            if lens_scenes is None or label not in wanted:
                continue
            if pairs_cfg is None:
                raise ValueError("the super-resolution sources need the pairs' config (simulate.pairs: PSF, "
                                 "supersampling)")
            src, t = _timed(sr_source, lens_scenes, method, model, pairs_cfg.get("psf"),
                            int(pairs_cfg.get("supersampling", 1)))
            add(label, src, extra_seconds + t / b, relensed_chi2(lens_scenes, src), lens)

    floor = relensed_chi2(scenes, truth)
    order = [name for method in METHODS for name in sources if name == method or name.startswith(method + " n_max")]
    rows = []
    for name in order:
        for i in range(b):
            mse, ssim = source_metrics(truth[i], sources[name][i])
            rows.append({"galaxy": i, "source_id": scenes.source_ids[i], "kind": scenes.kinds[i], "method": name,
                         "lens": lens_of[name], "mse": mse, "ssim": ssim,
                         "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else math.nan,
                         "chi2_nu": float(chi2_nu[name][i]), "chi2_nu_true_source": float(floor[i]),
                         "seconds": float(seconds[name][i])})
    return pd.DataFrame(rows), {name: sources[name] for name in order}


def paired_bootstrap(per_galaxy: pd.DataFrame, metric: str, larger_is_better: bool, rng: np.random.Generator,
                     n_resamples: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """Each method's mean ``metric`` and its difference from the best method's (by mean; ``best``), with a
    ``level`` percentile interval from ``n_resamples`` resamplings of the galaxies, the same galaxies for every
    method (paired). Galaxies where a compared method's value is not finite are left out of the comparison; a
    method with no finite value anywhere (a failed method) is reported with its mean only.
    Columns: ``method``, ``{metric}_mean``, ``{metric}_diff``, ``{metric}_diff_low``, ``{metric}_diff_high``,
    ``{metric}_best`` (the best method's name)."""
    order = list(dict.fromkeys(per_galaxy["method"]))
    wide = per_galaxy.pivot(index="galaxy", columns="method", values=metric)[order]
    wide = wide.replace([np.inf, -np.inf], np.nan)
    scored = [m for m in order if wide[m].notna().any()]       # a method that failed everywhere is not compared
    finite = wide[scored].dropna()
    out = pd.DataFrame({"method": order, f"{metric}_mean": wide.mean().reindex(order).to_numpy(),
                        f"{metric}_diff": np.nan, f"{metric}_diff_low": np.nan, f"{metric}_diff_high": np.nan,
                        f"{metric}_best": ""})
    if not len(finite):
        return out
    means = finite.mean()
    best = str(means.idxmax() if larger_is_better else means.idxmin())
    values = finite.to_numpy(dtype=float)
    diff = values - values[:, [scored.index(best)]]
    idx = rng.integers(0, len(finite), size=(int(n_resamples), len(finite)))
    boot = diff[idx].mean(axis=1)                               # (resamples, methods)
    alpha = (1.0 - float(level)) / 2
    rows = out["method"].isin(scored).to_numpy()
    out.loc[rows, f"{metric}_diff"] = diff.mean(axis=0)
    out.loc[rows, f"{metric}_diff_low"] = np.quantile(boot, alpha, axis=0)
    out.loc[rows, f"{metric}_diff_high"] = np.quantile(boot, 1 - alpha, axis=0)
    out[f"{metric}_best"] = best
    return out


def leaderboard_table(per_galaxy: pd.DataFrame, rng: np.random.Generator, n_resamples: int = 1000,
                      level: float = 0.95) -> pd.DataFrame:
    """Per source kind (real galaxies first, then all) and method: galaxies, the lens used, the mean of every
    metric of :data:`SCORES` with its paired bootstrap difference from the best method
    (:func:`paired_bootstrap`), the mean χ²/ν of the true source re-lensed (the floor), median seconds per galaxy,
    and the rank by mean SSIM."""
    def per_kind(rows: pd.DataFrame) -> pd.DataFrame:
        order = list(dict.fromkeys(rows["method"]))
        g = rows.groupby("method", sort=False)
        out = pd.DataFrame({"method": order, "lens": g["lens"].first().reindex(order).to_numpy(),
                            "n_galaxies": g.size().reindex(order).to_numpy()})
        for metric, larger in SCORES.items():
            out = out.merge(paired_bootstrap(rows, metric, larger, rng, n_resamples, level), on="method")
        out["chi2_nu_true_source_mean"] = g["chi2_nu_true_source"].mean().reindex(order).to_numpy()
        out["seconds_median"] = g["seconds"].median().reindex(order).to_numpy()
        out["rank_ssim"] = out["ssim_mean"].rank(ascending=False, method="min").astype("Int64")
        return out.sort_values("rank_ssim", kind="stable").reset_index(drop=True)

    return by_kind(per_galaxy, per_kind)
