"""Calibration of the decoder fits' posteriors (study 000): do the per-pixel intervals of
:mod:`sourcelens.fit.posterior` hold the true source as often as they claim?

Three sets, each fitted with the decoder (:func:`sourcelens.fit.decoder.fit_decoder`) and given a posterior:

``model``
    galaxies drawn from the decoder itself (z ~ N(0, I), random flux, offset and zoom) with the fits' noise:
    the model is exact, so a correct posterior is calibrated here, whatever the VAE's quality.
``stamps``
    test galaxies of every kind (real first) at the fits' noise level (:func:`noisy_test_galaxies`), against
    their noiseless stamps: the decoder cannot draw them exactly, so the intervals under-cover by as much as
    the model's own error exceeds the noise — the honest number for users.
``lensed``
    test galaxies lensed as in the lensed fits (:func:`sourcelens.fit.lensed.lensed_test_scenes`), the source
    fitted through the true lens; coverage of the source on its evaluation grid and of the lensed image.

A real galaxy's truth is its HST stamp, which carries its own noise (``noise_sigma`` of the stamp; for the lensed
set measured in the truth's background): its intervals are widened by that noise
(:meth:`~sourcelens.fit.posterior.DecoderPosterior.coverage`), testing the posterior predictive of the stamp.

Coverage is the fraction of true pixels inside each nominal level's equal-tailed interval, over the galaxy's
pixels (truth ≥ ``galaxy_threshold`` × its peak: where the source is) and over all pixels. ``z_rms``: the rms
over the galaxy's pixels of (truth − mean) / std (1 for a calibrated Gaussian posterior). For the ``model`` set,
``objective_excess``: the fit's ½χ² + ½|z|² minus the truth's; fits above :data:`GLOBAL_OPTIMUM_TOLERANCE` are in
a local minimum (the optimiser's failure, not the posterior's), and the summary gives the coverage with and
without them. ``parameter_std_ratio`` (NUTS rows): the median over parameters of NUTS's marginal standard
deviation over the Laplace one, per galaxy (1: the Laplace approximation holds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..fit.decoder import fit_decoder, render
from ..fit.galaxies import noisy_test_galaxies
from ..fit.posterior import DecoderPosterior, decoder_posterior, parameters

log = logging.getLogger(__name__)

__all__ = ["PosteriorCalibration", "SETS", "calibrate_posteriors", "coverage_rows", "coverage_summary",
           "model_galaxies"]

SETS = ("model", "stamps", "lensed")
#: A fit of a galaxy drawn from the decoder is at the global optimum when its −log posterior (½χ² + ½|z|²) is at
#: most this much above the truth's (the optimum lies below the truth by ~P/2 ≈ 34 on average; a local minimum
#: lies far above).
GLOBAL_OPTIMUM_TOLERANCE = 5.0
#: Source kinds lensed as observed (no noiseless truth): the real HST galaxies.
OBSERVED_KINDS = ("cosmos",)


@dataclass
class PosteriorCalibration:
    """Per-galaxy coverage rows, their summary (set, kind — real first —, method, level) and, per set, the
    fitted data, truth and posterior for figures (``examples[set] = (data, truth, posterior, meta)``)."""

    per_galaxy: pd.DataFrame
    summary: pd.DataFrame
    examples: dict[str, tuple[np.ndarray, np.ndarray, DecoderPosterior, pd.DataFrame]]


def background_sigma(images: np.ndarray, galaxy_threshold: float = 0.05) -> np.ndarray:
    """Robust noise sigma (1.4826 × MAD) of each image's pixels below ``galaxy_threshold`` × its peak."""
    out = np.empty(len(images))
    for i, im in enumerate(np.asarray(images, dtype=float)):
        bg = im[im < galaxy_threshold * im.max()]
        out[i] = 1.4826 * np.median(np.abs(bg - np.median(bg))) if bg.size else 0.0
    return out


def model_galaxies(vae, n: int, noise_sigma: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` galaxies drawn from the decoder (z ~ N(0, I), peak flux U(0.5, 1.5) in the stamps' peak-normalised
    units, offsets U(−1, 1) pixel, zoom exp N(0, 0.05)) with Gaussian noise ``noise_sigma``: (data, sigma, truth,
    true parameters q = (z, log flux, dx, dy, log s) as :func:`sourcelens.fit.posterior.parameters`)."""
    z = rng.standard_normal((n, vae.latent_dim))
    peak = rng.uniform(0.5, 1.5, n)
    offset = rng.uniform(-1.0, 1.0, (n, 2))
    scale = np.exp(rng.normal(0.0, 0.05, n))
    dtype = next(vae.parameters()).dtype
    with torch.no_grad():
        decoded = vae.decode(torch.as_tensor(z, dtype=dtype)).float()
        unit = render(decoded, torch.ones(n), torch.as_tensor(offset, dtype=torch.float32),
                      torch.as_tensor(scale, dtype=torch.float32)).double().numpy()
    flux = peak / unit.max(axis=(1, 2))
    truth = unit * flux[:, None, None]
    data = truth + rng.standard_normal(truth.shape) * noise_sigma
    return data, np.full(n, float(noise_sigma)), truth, parameters(z, flux, offset, scale)


def coverage_rows(post: DecoderPosterior, truth: np.ndarray, meta: pd.DataFrame, set_name: str,
                  galaxy_threshold: float = 0.05, image_truth: np.ndarray | None = None,
                  truth_sigma: np.ndarray | None = None) -> pd.DataFrame:
    """One row per galaxy and level: coverage over the galaxy's pixels and all pixels (and of the image, with
    ``image_truth``), ``z_rms``, ``seconds``; ``truth_sigma``: the truth's own noise per galaxy (real stamps)."""
    truth = np.asarray(truth, dtype=float)
    mask = truth >= galaxy_threshold * truth.max(axis=(1, 2), keepdims=True)
    cov_gal = post.coverage(truth, mask, truth_sigma=truth_sigma)
    cov_all = post.coverage(truth, truth_sigma=truth_sigma)
    cov_img = post.coverage(image_truth, of="model") if image_truth is not None else None
    spread = post.source_std**2 + (0.0 if truth_sigma is None else np.asarray(truth_sigma)[:, None, None] ** 2)
    # pixels the model cannot reach at all (zero spread: outside the decoded stamp) count as misses in the
    # coverage; z_rms is over the others
    ok = mask & (spread > 0)
    z2 = np.where(ok, (truth - post.source_mean) ** 2 / np.where(ok, spread, 1.0), 0.0)
    z_rms = np.sqrt(z2.sum((1, 2)) / np.maximum(ok.sum((1, 2)), 1))
    rows = []
    for i in range(len(truth)):
        for level in post.levels:
            row = {"set": set_name, "kind": str(meta["kind"].iloc[i]) if "kind" in meta else set_name,
                   "source_id": str(meta["source_id"].iloc[i]) if "source_id" in meta else str(i), "galaxy": i,
                   "method": post.method, "level": level, "coverage_galaxy": float(cov_gal[level][i]),
                   "coverage_all": float(cov_all[level][i]),
                   "coverage_image": float(cov_img[level][i]) if cov_img is not None else np.nan,
                   "z_rms": float(z_rms[i]), "seconds": float(post.seconds[i])}
            rows.append(row)
    return pd.DataFrame(rows)


def coverage_summary(per: pd.DataFrame) -> pd.DataFrame:
    """Mean coverage (galaxy pixels, all pixels, image) and median z_rms and seconds per set, kind (real galaxies
    first), method and level, with the nominal level beside."""
    from ..names import SOURCE_KINDS

    order = {k: i for i, k in enumerate(SOURCE_KINDS)}
    set_order = {s: i for i, s in enumerate(SETS)}
    columns = {"galaxies": ("galaxy", "nunique"), "coverage_galaxy": ("coverage_galaxy", "mean"),
               "coverage_galaxy_std": ("coverage_galaxy", "std"), "coverage_all": ("coverage_all", "mean"),
               "coverage_image": ("coverage_image", "mean"), "z_rms_median": ("z_rms", "median"),
               "parameter_std_ratio": ("parameter_std_ratio", "median"), "seconds_median": ("seconds", "median")}
    out = (per.groupby(["set", "kind", "method", "level"], sort=False)
           .agg(**{k: v for k, v in columns.items() if v[0] in per})
           .reset_index())
    if "objective_excess" in per:   # galaxies drawn from the decoder: fits as good as the truth (no local minimum)
        good = per[per["objective_excess"] <= GLOBAL_OPTIMUM_TOLERANCE]
        at_optimum = good.groupby(["set", "kind", "method", "level"], sort=False).agg(
            galaxies_at_optimum=("galaxy", "nunique"), coverage_galaxy_at_optimum=("coverage_galaxy", "mean"))
        out = out.merge(at_optimum.reset_index(), on=["set", "kind", "method", "level"], how="left")
        known = per.groupby(["set", "kind", "method", "level"], sort=False)["objective_excess"].apply(
            lambda v: v.notna().any()).reset_index(name="_known")
        out = out.merge(known, on=["set", "kind", "method", "level"], how="left")
        out.loc[out["_known"] & out["galaxies_at_optimum"].isna(), "galaxies_at_optimum"] = 0
        out = out.drop(columns="_known")
    out["nominal"] = out["level"]
    out["_s"] = out["set"].map(set_order).fillna(len(SETS))
    out["_k"] = out["kind"].map(order).fillna(len(order))
    out = out.sort_values(["_s", "_k", "method", "level"], kind="stable").drop(columns=["_s", "_k"])
    return out.reset_index(drop=True)


def _fit_and_posterior(vae, data, sigma, cfg: Mapping[str, Any], pcfg: Mapping[str, Any], method: str,
                       n_method: int, seed: int, post_kwargs: dict, q: np.ndarray | None = None
                       ) -> tuple[np.ndarray, DecoderPosterior, np.ndarray | None]:
    """(q, posterior, the fits' −log posterior ½χ² + ½|z|² or None when ``q`` was given)."""
    objective = None
    if q is None:
        fit = fit_decoder(vae, data, sigma, init=cfg["init"], max_iter=int(cfg["max_iter"]),
                          tolerance_change=float(cfg["tolerance_change"]), patience=int(cfg["patience"]),
                          interpolation=cfg["interpolation"])
        q = parameters(fit.z, fit.flux, fit.offset, fit.scale)
        objective = 0.5 * fit.chi2 + fit.prior
    n = min(len(data), int(n_method))
    post = decoder_posterior(method, vae, data[:n], np.asarray(sigma)[:n], q[:n], n_samples=int(pcfg["n_samples"]),
                             levels=tuple(pcfg["levels"]), seed=seed, interpolation=cfg["interpolation"],
                             warmup=int(pcfg["nuts"]["warmup"]), max_tree_depth=int(pcfg["nuts"]["max_tree_depth"]),
                             **post_kwargs)
    return q, post, objective


def calibrate_posteriors(test_path: str | Path, vae, fit_cfg: Mapping[str, Any], posterior_cfg: Mapping[str, Any],
                         rng: np.random.Generator, *, pairs_cfg: Mapping[str, Any] | None = None,
                         source_kinds: Sequence[str] | None = None, seed: int = 0,
                         progress: Callable[[str], None] | None = None) -> PosteriorCalibration:
    """Fit and give posteriors to every set of ``posterior_cfg["sets"]`` (sizes ``n_galaxies``), by every method
    of ``posterior_cfg["methods"]`` (NUTS on the first ``nuts.n_galaxies`` of each set, after the same fits);
    ``fit_cfg``: the ``fit`` config section (noise level, L-BFGS settings, lensed lens model); ``pairs_cfg``:
    ``simulate.pairs`` for the lensed set; ``seed`` seeds the posterior draws."""
    say = progress or log.info
    methods = list(posterior_cfg["methods"])
    n_of = {"laplace": 10**9, "nuts": int(posterior_cfg["nuts"]["n_galaxies"])}
    threshold = float(posterior_cfg["galaxy_threshold"])
    per, examples = [], {}
    noise = float(fit_cfg["noise_sigma"])
    sets = list(posterior_cfg["sets"])
    for set_name in sets:
        n = int(posterior_cfg["n_galaxies"][set_name])
        image_truth, post_kwargs, true_objective, excess, truth_sigma = None, {}, None, None, None
        if set_name == "model":
            data, sigma, truth, q_true = model_galaxies(vae, n, noise, rng)
            true_objective = 0.5 * (((data - truth) / sigma[:, None, None]) ** 2).sum((1, 2)) \
                + 0.5 * (q_true[:, :vae.latent_dim] ** 2).sum(1)
            meta = pd.DataFrame({"kind": ["decoder"] * n, "source_id": [f"draw{i}" for i in range(n)]})
        elif set_name == "stamps":
            data, sigma, truth, meta, stamps = noisy_test_galaxies(test_path, n, noise, rng)
            meta = meta.reset_index(drop=True)
            # real galaxies have no noiseless truth: their HST stamp is the truth, with its own noise
            unknown = np.isnan(truth).any(axis=(1, 2)) if truth is not None else np.ones(len(data), bool)
            own = meta["noise_sigma"].to_numpy(dtype=float) if "noise_sigma" in meta else np.zeros(len(data))
            truth = np.where(unknown[:, None, None], stamps, np.nan_to_num(truth) if truth is not None else stamps)
            truth_sigma = np.where(unknown, np.nan_to_num(own), 0.0)
        elif set_name == "lensed":
            if pairs_cfg is None:
                raise ValueError("the lensed posterior set needs simulate.pairs (pairs_cfg)")
            from ..fit.lensed import decoder_lensing, fit_decoder_lensed, lensed_test_scenes
            from ..fit.pixelated import fit_pixelated
            from ..fit.scenes import DTYPE, imaging_problem, true_source_on_grid

            scenes = lensed_test_scenes(test_path, n, pairs_cfg, fit_cfg["lensed"]["lens_model"], rng, source_kinds)
            problem = imaging_problem(scenes)
            pix = fit_pixelated(scenes, float(fit_cfg["lensed"]["regularisation"]))
            res = fit_decoder_lensed(vae, problem, pix.source, init=fit_cfg["init"], max_iter=int(fit_cfg["max_iter"]),
                                     tolerance_change=float(fit_cfg["tolerance_change"]),
                                     patience=int(fit_cfg["patience"]), interpolation=fit_cfg["interpolation"])
            forward, on_grid, decoder_scale = decoder_lensing(problem, vae.image_size)
            info = res.info
            q_lensed = parameters(info["z"], info["flux"], info["center"] / decoder_scale[:, None], info["scale"])
            data, sigma, truth, image_truth = scenes.data, scenes.sigma, true_source_on_grid(scenes), scenes.noiseless
            meta = pd.DataFrame({"kind": scenes.kinds or ["lensed"] * len(scenes), "source_id": scenes.source_ids})
            # real galaxies are lensed as observed: their source truth carries the stamp's noise, measured in
            # its background (robust sigma of the pixels below the galaxy threshold)
            observed = meta["kind"].isin(OBSERVED_KINDS).to_numpy()
            truth_sigma = np.where(observed, background_sigma(truth, threshold), 0.0)
            post_kwargs = {"forward": forward, "source_map": on_grid, "dtype": DTYPE}
        else:
            raise ValueError(f"unknown posterior set {set_name!r}; allowed: {', '.join(SETS)}")
        q = q_lensed if set_name == "lensed" else None
        laplace_std = None
        for method in methods:
            if method not in n_of:
                raise ValueError(f"unknown posterior method {method!r}; allowed: laplace, nuts")
            say(f"{set_name}: {method} posteriors of {min(len(data), n_of[method])} galaxies")
            q, post, objective = _fit_and_posterior(vae, data, sigma, fit_cfg, posterior_cfg, method, n_of[method],
                                                    seed, post_kwargs, q)
            if objective is not None and true_objective is not None:
                excess = objective - true_objective
            k = len(post.source_mean)
            rows = coverage_rows(post, truth[:k], meta.iloc[:k], set_name, threshold,
                                 None if image_truth is None else image_truth[:k],
                                 None if truth_sigma is None else truth_sigma[:k])
            rows["objective_excess"] = np.nan if excess is None else excess[rows["galaxy"].to_numpy()]
            if method == "laplace":
                laplace_std = post.parameter_std
            ratio = (np.median(post.parameter_std / laplace_std[:k], axis=1)
                     if method != "laplace" and laplace_std is not None else np.full(k, np.nan))
            rows["parameter_std_ratio"] = ratio[rows["galaxy"].to_numpy()]
            per.append(rows)
            if method == methods[0]:
                meta = meta.assign(truth_sigma=0.0 if truth_sigma is None else truth_sigma)
                examples[set_name] = (data, truth, post, meta)
    table = pd.concat(per, ignore_index=True)
    return PosteriorCalibration(table, coverage_summary(table), examples)
