"""The VAE galaxy model (study 000) on the test split: per-stamp reconstruction metrics, their
summary, decoder samples from the prior and latent interpolations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import batch_metrics, by_kind, summarise
from ..models.vae import VAE, decode_latents, reconstruct

__all__ = ["vae_test_metrics", "vae_summary", "prior_samples", "latent_interpolation"]


def vae_test_metrics(vae: VAE, images: np.ndarray, meta: pd.DataFrame, truths: np.ndarray | None = None, *,
                     rng: np.random.Generator | None = None, ceiling_draws: int = 8
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per-stamp reconstruction metrics of the VAE (encoder mean → decoder) on every stamp.

    Returns (table, reconstructions, latent means). The table has ``source_id``, ``kind``, ``augmentation``,
    ``original`` (bool), ``snr`` and the :data:`sourcelens.metrics.METRIC_COLUMNS`: against the stamp (χ² with
    its own ``noise_sigma`` and n_params = 0 — a reconstruction fits nothing —, so χ²/ν is the χ² per pixel; NaN
    for noiseless stamps and for stamps not linear in flux), the SSIM noise ceiling (with ``rng``), and against
    the noiseless truth (``truths``, NaN where unknown).
    """
    recs, mus = reconstruct(vae, images)
    n = len(meta)

    def column(name, default, dtype=None):
        return meta[name].to_numpy(dtype=dtype) if name in meta.columns else np.full(n, default)

    sigma = column("noise_sigma", np.nan, float)
    sigma = np.where(column("flux_linear", True, bool), sigma, np.nan)
    ids = meta["source_id"].astype(str).to_numpy() if "source_id" in meta.columns else np.arange(n).astype(str)
    aug = meta["augmentation"].astype(str).to_numpy() if "augmentation" in meta.columns else np.full(n, "original")
    kinds = meta["kind"].astype(str).to_numpy() if "kind" in meta.columns else np.full(n, "")
    table = batch_metrics(images, recs, sigma=sigma, truth=truths, labels=[f"{i} ({a})" for i, a in zip(ids, aug)],
                          ceiling_rng=rng, ceiling_draws=ceiling_draws)
    front = pd.DataFrame({"source_id": ids, "kind": kinds, "augmentation": aug, "original": aug == "original",
                          "snr": column("snr", np.nan, float)})
    return pd.concat([front, table], axis=1), recs, mus


def vae_summary(table: pd.DataFrame, bright_snr: float | None = None) -> pd.DataFrame:
    """Summary of :func:`vae_test_metrics` per source kind (real galaxies first, their bright ones apart, then
    all) for two subsets: ``originals`` (one stamp per galaxy, the headline numbers) and ``all stamps``
    (augmented copies included); one row per (subset, kind, metric)."""
    parts = [by_kind(rows, summarise, bright_snr).assign(subset=subset)
             for subset, rows in (("originals", table[table["original"]]), ("all stamps", table))]
    out = pd.concat(parts, ignore_index=True)
    return out[["subset", *[c for c in out.columns if c != "subset"]]]


def prior_samples(vae: VAE, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` galaxies (n, H, W) decoded from latents drawn from the prior N(0, I) with ``rng``."""
    z = rng.standard_normal((int(n), vae.latent_dim)).astype(np.float32)
    return decode_latents(vae, z)


def latent_interpolation(vae: VAE, z_start: np.ndarray, z_end: np.ndarray, n_steps: int) -> np.ndarray:
    """Decoded images (n_steps, H, W) along the straight line z(t) = (1 − t) z_start + t z_end, t ∈ [0, 1]."""
    t = np.linspace(0.0, 1.0, int(n_steps))[:, None]
    path = (1 - t) * np.asarray(z_start, dtype=float)[None] + t * np.asarray(z_end, dtype=float)[None]
    return decode_latents(vae, path.astype(np.float32))
