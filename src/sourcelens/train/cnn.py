"""Training the lens-parameter CNN (study 002), run by the staged training.

Losses (per stage, ``cnn.stages``), in standardised units t = (p − mean_train) / std_train:

``mse``   mean over parameters of (μ − t)²: trains the means (a warm-up: the variances are left alone)
``nll``   Gaussian negative log-likelihood ½[log σ² + (μ − t)² / σ²]: means and variances together

Every training batch is a random dihedral copy of each pair (the image turned or flipped with its lens
parameters transformed accordingly, :func:`sourcelens.augment.random_dihedral_batch`): 8 times the data, exactly.
After training, the uncertainties are calibrated on the validation set: each parameter's σ is scaled so that
68.27 % of the validation errors |p − μ| lie within σ (``sigma_scale``, saved in the model): the ±σ interval
covers 68 % there by construction, and, unlike scaling the mean of ((p − μ)/σ)² to 1, a few outliers (a lens
whose arcs are cut or faint) do not widen every interval (that gave 0.70–0.77 test coverage). A recipe without
an ``nll`` stage has no variance head: its σ is then the 68.27th percentile of that parameter's validation
errors (homoscedastic).
Logged per epoch: ``train_loss``, ``val_loss``, ``val_mse`` (mean squared error of the standardised means) and
``lr``. This module never imports snakemake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from ..augment import random_dihedral_batch
from ..config import validate_config
from ..io import read_dataset, write_table
from ..models.cnn import LensCNN, save_cnn
from ..models.common import normalise_lensed
from ..names import LENS_PARAMETERS
from .determinism import derived_seed
from .modules import AdamPlateauModule
from .staged import train_stages

ONE_SIGMA_FRACTION = 0.682689492  # P(|z| < 1) for a normal z

log = logging.getLogger("sourcelens.train")

CNN_LOSSES = ("mse", "nll")
METRIC_COLUMNS = ("stage", "loss", "epoch", "train_loss", "val_loss", "val_mse", "lr")
MIN_STD = 1e-6     # a parameter the training set holds fixed (SIE's gamma) is standardised with std 1

__all__ = ["CNN_LOSSES", "METRIC_COLUMNS", "CNNModule", "cnn_settings", "load_lensed_pairs", "calibrate",
           "train_cnn"]


class CNNModule(AdamPlateauModule):
    """A :class:`~sourcelens.models.cnn.LensCNN` with the loss of one stage (:data:`CNN_LOSSES`).
    Batches are (normalised images (B, 1, S, S), lens parameters (B, 8) in physical units)."""

    def __init__(self, model: LensCNN, loss: str = "nll", learning_rate: float = 1e-3, lr_patience: int = 3,
                 weight_decay: float = 0.0, augment: bool = True, lr_schedule: str = "plateau",
                 epochs: int | None = None):
        super().__init__(learning_rate, lr_patience, weight_decay, lr_schedule, epochs)
        if loss not in CNN_LOSSES:
            raise ValueError(f"unknown CNN loss {loss!r}; expected one of {CNN_LOSSES}")
        self.model, self.loss_kind, self.augment = model, loss, bool(augment)

    def compute_loss(self, x: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_var = self.model(x)
        target = self.model.standardise(params)
        sq = (mean - target) ** 2
        loss = sq.mean() if self.loss_kind == "mse" else 0.5 * (log_var + sq * torch.exp(-log_var)).mean()
        return {"loss": loss, "mse": sq.mean()}

    def training_step(self, batch, batch_idx):
        x, params = batch
        if self.augment:
            x, _, params = random_dihedral_batch(x, lens_params=params)
        out = self.compute_loss(x, params)
        self.log_train(out["loss"], x.shape[0])
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        x, params = batch
        out = self.compute_loss(x, params)
        self.log("val_loss", out["loss"], on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        self.log("val_mse", out["mse"], on_epoch=True, batch_size=x.shape[0])


def cnn_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``cnn`` config section validated against the schema with defaults filled."""
    return validate_config({"cnn": dict(cfg or {})})["cnn"]


def load_lensed_pairs(path: str | Path, target: str = "lens_params") -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised noisy lensed images (N, 1, S, S) of a pairs file and a target: ``lens_params`` (N, 8), or
    ``source`` (N, 1, S, S) peak-normalised (the U-Net's). Errors name the file."""
    arrays, _ = read_dataset(path, names=("lensed", target))
    lensed = np.asarray(arrays["lensed"], dtype=np.float32)
    if lensed.ndim != 3 or len(lensed) == 0:
        raise ValueError(f"{path}: 'lensed' must be a non-empty (N, S, S) stack, got {lensed.shape}")
    y = np.asarray(arrays[target], dtype=np.float32)
    for name, a in (("lensed", lensed), (target, y)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: '{name}' holds non-finite values")
    x, _ = normalise_lensed(lensed)
    if target == "source":
        peak = np.abs(y).max(axis=(1, 2), keepdims=True)
        y = (y / np.maximum(peak, 1e-30))[:, None]
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


def calibrate(model: LensCNN, x: torch.Tensor, params: torch.Tensor, heteroscedastic: bool,
              batch_size: int = 256) -> torch.Tensor:
    """Set ``model.sigma_scale`` from validation data (see the module docstring) and return it."""
    model.eval()
    with torch.no_grad():
        dev = next(model.parameters()).device
        outs = [model(x[i:i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]
        mean = torch.cat([o[0] for o in outs]).cpu()
        log_var = torch.cat([o[1] for o in outs]).cpu()
        error = (mean - model.standardise(params.to(mean.device))).abs()
        if heteroscedastic:
            error = error * torch.exp(-0.5 * log_var)
        else:
            head = model.head[-1]
            head.weight[model.n_params:] = 0.0      # no variance head: log σ² = 0, σ = the scale
            head.bias[model.n_params:] = 0.0
        scale = torch.quantile(error.double(), ONE_SIGMA_FRACTION, dim=0).float()
        model.sigma_scale.copy_(scale.clamp_min(1e-6).to(model.sigma_scale.device))
    return model.sigma_scale.detach().cpu().clone()


def train_cnn(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
              model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
              seed: int, provenance: Mapping[str, Any] | None = None) -> LensCNN:
    """Train the lens-parameter CNN on the pairs of ``train_path`` (validating on ``val_path``) following ``cfg``
    (the ``cnn`` config section), calibrate its uncertainties on the validation pairs, and save it to
    ``model_path`` (:func:`~sourcelens.models.cnn.save_cnn`) with one metrics row per epoch and stage in
    ``metrics_path``. Reruns resume from ``checkpoint_dir`` (default ``cfg["checkpoint_dir"]``)."""
    started = time.perf_counter()
    cfg = cnn_settings(cfg)
    checkpoint_dir = Path(cfg["checkpoint_dir"] if checkpoint_dir is None else checkpoint_dir)
    x, y = load_lensed_pairs(train_path)
    xv, yv = load_lensed_pairs(val_path)
    size = int(x.shape[-1])
    log.info("train %s: %d pairs %dx%d; val %s: %d pairs", train_path, len(x), size, size, val_path, len(xv))

    L.seed_everything(derived_seed(seed, "cnn"), workers=True, verbose=False)
    model = LensCNN(image_size=size, arch=cfg["arch"], widths=cfg["widths"], dense=cfg["dense"],
                     blocks=cfg["blocks"])
    std = y.std(0)
    fixed = [name for name, s in zip(LENS_PARAMETERS, std.tolist()) if s < MIN_STD]
    with torch.no_grad():
        model.target_mean.copy_(y.mean(0))
        model.target_std.copy_(torch.where(std < MIN_STD, torch.ones_like(std), std))
    if fixed:
        log.info("parameters fixed in the training set (standardised with std 1): %s", fixed)
    n_weights = sum(p.numel() for p in model.parameters())
    log.info("CNN %s, widths %s, %d blocks a stage, %d parameters", cfg["arch"], cfg["widths"], cfg["blocks"],
             n_weights)

    def make_module(stage: Mapping[str, Any]) -> CNNModule:
        return CNNModule(model, loss=stage["loss"], learning_rate=cfg["learning_rate"], lr_patience=cfg["lr_patience"],
                         weight_decay=cfg["weight_decay"], augment=cfg["augment"],
                         lr_schedule=cfg["lr_schedule"], epochs=stage["epochs"])

    result = train_stages(make_module, TensorDataset(x, y), TensorDataset(xv, yv), cfg, checkpoint_dir, seed,
                          metrics=METRIC_COLUMNS[3:], labels=("loss",))
    model = model.cpu().eval()
    heteroscedastic = cfg["stages"][-1]["loss"] == "nll"
    scale = calibrate(model, xv, yv, heteroscedastic)
    log.info("calibration on %d validation pairs: sigma scale %s", len(xv),
             dict(zip(LENS_PARAMETERS, np.round(scale.numpy(), 3).tolist())))
    write_table(pd.DataFrame(result.rows, columns=list(METRIC_COLUMNS)), metrics_path, provenance)
    summary = {
        "image_size": size, "n_train": len(x), "n_val": len(xv), "n_weights": n_weights, "arch": cfg["arch"],
        "widths": list(cfg["widths"]), "seed": int(seed), "accelerator": result.accelerator,
        "stages": result.stages, "best_checkpoint": result.best_checkpoint, "heteroscedastic": heteroscedastic,
        "fixed_parameters": fixed, "sigma_scale": scale.tolist(),
        "prior_std": std.tolist(), "seconds": round(time.perf_counter() - started, 2),
    }
    save_cnn(model, model_path, provenance=provenance, extra={"training": summary})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary}
    log.info("saved %s (%.0f s)", model_path, summary["seconds"])
    return model
