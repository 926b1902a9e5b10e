"""Training the galaxy VAE (study 000): its losses, LightningModule and recipe, run by the staged training.

Loss of one batch (what ``train_loss`` and ``val_loss`` report)::

    loss = mean over objects [ reconstruction(x̂, x) ]  +  β · mean over objects [ KL(q(z|x) || N(0, 1)) ]

Both terms are per object and averaged over the batch; the reconstruction term is **summed over
pixels** (like the KL, which is summed over latents), so the balance between the two does not depend on
the batch size and β has the meaning of a β-VAE weight: for a peak-normalised 64×64 stamp a summed MSE is
of order 0.1–10 and the KL of a 64-latent code of order 10–100, so β = 1e-2 lets the reconstruction lead
while keeping the latent distribution close to N(0, 1). Reconstruction losses (per object, sums over the
C×H×W pixels):

``mse``       Σ (x̂ − x)²
``mae``       Σ |x̂ − x|
``chi2``      Σ ((x̂ − x) / σ)² with σ = max(noise_sigma, ``sigma_floor``) per stamp (meta column
              ``noise_sigma``, same units as the image). Noiseless stamps (σ = 0, parametric galaxies) take the
              floor, 1e-3 of the peak by default, so they weigh (σ_noisy / 1e-3)² more than noisy ones; the KL is
              then negligible unless β is raised accordingly (β = 2 would make the loss a proper −2·ELBO).
``ssim_mae``  N_pix · (1 − SSIM(x̂, x)) + Σ |x̂ − x|, SSIM in the project's one convention
              (:mod:`sourcelens.metrics`: Gaussian window σ = 1.5, Wang et al. 2004) with data range 1 (the
              stamps are peak-normalised). Scaling 1 − SSIM by the number of pixels puts it on the scale of
              the summed MAE.

Validation decodes the latent mean (the model is in eval mode); ``val_recon`` and ``val_kl`` are the two
terms of ``val_loss`` and ``val_mse`` the per-pixel mean squared error, comparable across stages.

The recipe ``stages`` (e.g. MAE pretraining, then MSE) runs stage after stage with
:func:`sourcelens.train.staged.train_stages`, each stage a ``Trainer.fit`` of at most ``epochs`` epochs of a
:class:`VAEModule` with a fresh Adam optimiser, ``ReduceLROnPlateau`` (factor 0.5, ``lr_patience``) and
``EarlyStopping`` on ``val_loss`` (``early_stopping_patience``); a stage starts from the best weights of the
previous one. Checkpoints: ``checkpoint_dir/stage{i}_{loss}/{best,last}.ckpt`` with
``checkpoint_dir/progress.json``; a rerun skips finished stages and resumes an unfinished one, exactly (see
:mod:`sourcelens.train.staged`). This module never imports snakemake.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ..config import validate_config
from ..fit.decoder import reference_metric
from ..io import read_dataset, write_table
from ..metrics import ssim_torch
from ..models.vae import VAE, save_vae
from ..selection import evenly_spaced_rows
from .determinism import derived_seed
from .modules import LR_FACTOR, AdamPlateauModule
from .staged import resolve_accelerator, train_stages

log = logging.getLogger("sourcelens.train")

RECON_LOSSES = ("mse", "mae", "chi2", "ssim_mae")
SIGMA_FLOOR = 1e-3
METRIC_COLUMNS = ("stage", "loss", "epoch", "train_loss", "val_loss", "val_recon", "val_kl", "val_mse", "lr")
REFERENCE_GALAXIES = 32   # training stamps whose latents are kept with the model (decoder-fit preconditioning)

# --------------------------------------------------------------------------------------
# losses


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str,
                        sigma: torch.Tensor | None = None, sigma_floor: float = SIGMA_FLOOR) -> torch.Tensor:
    """Reconstruction loss per object (B,), summed over pixels (see the module docstring).

    ``sigma`` (B,) is the noise level of each stamp, used by ``chi2`` only (floored at ``sigma_floor``).
    """
    diff = (recon - target).flatten(1)
    if kind == "mse":
        return diff.pow(2).sum(1)
    if kind == "mae":
        return diff.abs().sum(1)
    if kind == "chi2":
        if sigma is None:
            sigma = torch.zeros(diff.shape[0], dtype=diff.dtype, device=diff.device)
        s = sigma.to(diff.dtype).reshape(-1, 1).clamp_min(sigma_floor)
        return (diff / s).pow(2).sum(1)
    if kind == "ssim_mae":
        return diff.shape[1] * (1.0 - ssim_torch(recon, target)) + diff.abs().sum(1)
    raise ValueError(f"unknown reconstruction loss {kind!r}; expected one of {RECON_LOSSES}")


# --------------------------------------------------------------------------------------
# Lightning module


class VAEModule(AdamPlateauModule):
    """A :class:`~sourcelens.models.vae.VAE` with loss reconstruction + β·KL, Adam and ReduceLROnPlateau.

    Batches are ``(images (B, 1, S, S), noise_sigma (B,))``. Logged per epoch: ``train_loss``, ``val_loss``,
    ``val_recon``, ``val_kl``, ``val_mse`` and ``lr``.
    """

    def __init__(self, model: VAE, loss: str = "mse", beta: float = 1e-2, learning_rate: float = 1e-3,
                 lr_patience: int = 3, sigma_floor: float = SIGMA_FLOOR):
        super().__init__(learning_rate, lr_patience)
        if loss not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {loss!r}; expected one of {RECON_LOSSES}")
        self.model = model
        self.loss_kind = loss
        self.beta = float(beta)
        self.sigma_floor = float(sigma_floor)

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def compute_loss(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of a batch: ``loss``, ``recon``, ``kl`` (batch means) and the reconstruction."""
        recon, mu, logvar = self.model(x)
        rec = reconstruction_loss(recon, x, self.loss_kind, sigma, self.sigma_floor).mean()
        kl = VAE.kl_divergence(mu, logvar).mean()
        return {"loss": rec + self.beta * kl, "recon": rec, "kl": kl, "reconstruction": recon}

    def training_step(self, batch, batch_idx):
        x, sigma = batch
        out = self.compute_loss(x, sigma)
        self.log_train(out["loss"], x.shape[0])
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        x, sigma = batch
        out = self.compute_loss(x, sigma)
        n = x.shape[0]
        mse = F.mse_loss(out["reconstruction"], x)
        self.log("val_loss", out["loss"], on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val_recon", out["recon"], on_epoch=True, batch_size=n)
        self.log("val_kl", out["kl"], on_epoch=True, batch_size=n)
        self.log("val_mse", mse, on_epoch=True, batch_size=n)


# --------------------------------------------------------------------------------------
# data and the recipe


def load_stamps(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, S, S) and per-stamp noise sigma (N,) of a stamps file, in memory.

    ``noise_sigma`` is 0 where the file has no such column (chi2 then uses the floor).
    """
    arrays, meta = read_dataset(path, names=("images",))
    images = np.asarray(arrays["images"], dtype=np.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{path}: 'images' must be (N, S, S) square stamps, got {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{path} holds no stamps")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{path}: 'images' holds non-finite values")
    sigma = (meta["noise_sigma"].to_numpy(dtype=np.float32) if "noise_sigma" in meta.columns
             else np.zeros(len(images), np.float32))
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(np.nan_to_num(sigma, nan=0.0))


def vae_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``vae`` config section validated against the schema with defaults filled."""
    return validate_config({"vae": dict(cfg or {})})["vae"]


def init_output_bias(model: VAE, mean_pixel: float, floor: float = 1e-3) -> None:
    """Start the decoder at the mean pixel value of the data: set the output bias to softplus⁻¹(mean).

    With the default zero-ish bias the softplus output starts near log 2 ≈ 0.69 everywhere, far above the
    mostly empty peak-normalised stamps, and the first epochs would only learn the background level.
    """
    m = max(float(mean_pixel), floor)
    with torch.no_grad():
        model.to_image.bias.fill_(math.log(math.expm1(m)))


def _mse_at_best(rows: Sequence[Mapping[str, Any]], stage: Mapping[str, Any]) -> float:
    for row in rows:
        if row["stage"] == stage["stage"] and row["epoch"] == stage["best_epoch"]:
            return float(row["val_mse"])
    return math.nan


def reference_latents(model: VAE, stamps: torch.Tensor, n: int = REFERENCE_GALAXIES) -> torch.Tensor:
    """Encoder means (n, latent_dim) of ``n`` evenly spaced stamps (N, 1, S, S): where the decoder is used,
    kept with the model for preconditioning decoder fits (:func:`sourcelens.fit.decoder.fit_decoder`)."""
    rows = torch.as_tensor(evenly_spaced_rows(len(stamps), n))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        mu = model.encode(stamps[rows].to(next(model.parameters()).device))[0]
    model.train(was_training)
    return mu.detach().cpu().float()


def train_vae(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
              model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
              seed: int, provenance: Mapping[str, Any] | None = None) -> VAE:
    """Train a VAE on the stamps of ``train_path``, validating on ``val_path``, following ``cfg`` (the
    ``vae`` config section; missing keys take the schema defaults).

    Writes the best model of the last stage to ``model_path`` (:func:`~sourcelens.models.vae.save_vae`, with
    ``provenance`` and the training summary in ``extra["training"]``) and one row per epoch and stage to
    ``metrics_path`` (CSV, columns :data:`METRIC_COLUMNS`). Reruns resume from ``checkpoint_dir`` (default:
    ``cfg["checkpoint_dir"]``). Returns the trained model in eval mode.
    """
    started = time.perf_counter()
    cfg = vae_settings(cfg)
    checkpoint_dir = Path(cfg["checkpoint_dir"] if checkpoint_dir is None else checkpoint_dir)
    train_x, train_s = load_stamps(train_path)
    val_x, val_s = load_stamps(val_path)
    size = int(train_x.shape[-1])
    if tuple(val_x.shape[1:]) != tuple(train_x.shape[1:]):
        raise ValueError(f"train stamps {tuple(train_x.shape[1:])} and val stamps {tuple(val_x.shape[1:])} differ")
    log.info("train %s: %d stamps %dx%d; val %s: %d stamps", train_path, len(train_x), size, size,
             val_path, len(val_x))

    L.seed_everything(derived_seed(seed, "vae"), workers=True, verbose=False)
    model = VAE(image_size=size, latent_dim=cfg["latent_dim"], widths=cfg["widths"])
    init_output_bias(model, float(train_x.mean()))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("VAE: latent_dim %d, widths %s, %d parameters; accelerator %s",
             cfg["latent_dim"], cfg["widths"], n_params, resolve_accelerator(cfg["accelerator"]))

    def make_module(stage: Mapping[str, Any]) -> VAEModule:
        return VAEModule(model, loss=stage["loss"], beta=cfg["beta"], learning_rate=cfg["learning_rate"],
                         lr_patience=cfg["lr_patience"])

    result = train_stages(make_module, TensorDataset(train_x, train_s), TensorDataset(val_x, val_s), cfg,
                          checkpoint_dir, seed, metrics=METRIC_COLUMNS[3:], labels=("loss",))

    model = model.cpu().eval()
    model.reference_latents = reference_latents(model, train_x)
    reference_metric(model)   # the decoder fits' preconditioner, saved with the model
    metrics = pd.DataFrame(result.rows, columns=list(METRIC_COLUMNS))
    write_table(metrics, metrics_path, provenance)
    last_stage = result.stages[-1]
    summary = {
        "image_size": size, "n_train": len(train_x), "n_val": len(val_x), "n_parameters": n_params,
        "latent_dim": cfg["latent_dim"], "widths": list(cfg["widths"]), "beta": cfg["beta"],
        "batch_size": cfg["batch_size"], "learning_rate": cfg["learning_rate"], "seed": int(seed),
        "accelerator": result.accelerator, "stages": result.stages, "best_checkpoint": result.best_checkpoint,
        "final_val_loss": last_stage["best_val_loss"], "final_loss": last_stage["loss"],
        "final_val_mse": _mse_at_best(result.rows, last_stage),
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_vae(model, model_path, provenance=provenance, extra={"training": summary})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary}
    log.info("wrote %s and %s (%.1f s)", model_path, metrics_path, summary["seconds"])
    return model


__all__ = ["LR_FACTOR", "METRIC_COLUMNS", "RECON_LOSSES", "REFERENCE_GALAXIES", "SIGMA_FLOOR", "VAEModule",
           "init_output_bias", "load_stamps", "reconstruction_loss", "reference_latents", "train_vae",
           "vae_settings"]
