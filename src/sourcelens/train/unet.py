"""Training the U-Net delenser (study 002), run by the staged training.

Input: the noisy lensed image (normalised, :func:`~sourcelens.models.common.normalise_lensed`); target: the
pair's ``source`` on the source grid, peak-normalised (the study's images on [0, 1]). Losses (per stage):

``mse_ssim``  MSE + (1 − SSIM), the study's loss, SSIM with data range 1 in the project's one convention
              (:func:`sourcelens.metrics.ssim_torch`: Gaussian window σ = 1.5, validated against scikit-image;
              the study's ``tf.image.ssim`` uses the same window), so the loss and every table agree
``mse``       MSE alone

Every training batch is a random dihedral copy of each pair, image and source turned together (both grids are
centred on the optical axis). Logged per epoch: ``train_loss``, ``val_loss``, ``val_mse``, ``val_ssim``, ``lr``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ..config import validate_config
from ..io import read_attrs, write_table
from ..metrics import ssim_torch
from ..models.unet import UNet, save_unet
from .cnn import load_lensed_pairs
from .determinism import derived_seed
from .modules import ImageToImageModule
from .staged import train_stages

log = logging.getLogger("sourcelens.train")

UNET_LOSSES = ("mse_ssim", "mse")
METRIC_COLUMNS = ("stage", "loss", "epoch", "train_loss", "val_loss", "val_mse", "val_ssim", "lr")

__all__ = ["UNET_LOSSES", "METRIC_COLUMNS", "UNetModule", "unet_settings", "train_unet"]


class UNetModule(ImageToImageModule):
    """A :class:`~sourcelens.models.unet.UNet` with the loss of one stage (:data:`UNET_LOSSES`). Batches are
    (normalised lensed images, peak-normalised sources), both (B, 1, S, S)."""

    def __init__(self, model: UNet, loss: str = "mse_ssim", learning_rate: float = 1e-3, lr_patience: int = 3,
                 weight_decay: float = 0.0, augment: bool = True, lr_schedule: str = "plateau",
                 epochs: int | None = None):
        super().__init__(learning_rate, lr_patience, weight_decay, lr_schedule, epochs)
        if loss not in UNET_LOSSES:
            raise ValueError(f"unknown U-Net loss {loss!r}; expected one of {UNET_LOSSES}")
        self.model, self.loss_kind, self.augment = model, loss, bool(augment)

    def compute_loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = self.model(x)
        mse = F.mse_loss(pred, target)
        ssim = ssim_torch(pred, target, 1.0).mean()
        loss = mse + (1.0 - ssim) if self.loss_kind == "mse_ssim" else mse
        return {"loss": loss, "mse": mse, "ssim": ssim}


def unet_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``unet`` config section validated against the schema with defaults filled."""
    return validate_config({"unet": dict(cfg or {})})["unet"]


def train_unet(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
               model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
               seed: int, provenance: Mapping[str, Any] | None = None) -> UNet:
    """Train the U-Net on the pairs of ``train_path`` (validating on ``val_path``) following ``cfg`` (the ``unet``
    config section) and save it to ``model_path`` with the source grid it outputs (from the pairs file) and one
    metrics row per epoch and stage in ``metrics_path``."""
    started = time.perf_counter()
    cfg = unet_settings(cfg)
    checkpoint_dir = Path(cfg["checkpoint_dir"] if checkpoint_dir is None else checkpoint_dir)
    x, y = load_lensed_pairs(train_path, target="source")
    xv, yv = load_lensed_pairs(val_path, target="source")
    attrs = read_attrs(train_path)
    grid = {"num_pix": int(y.shape[-1]), "pixel_scale_arcsec": attrs.get("source_grid_pixel_scale_arcsec"),
            "image_pixel_scale_arcsec": attrs.get("pixel_scale_arcsec")}
    if y.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"{train_path}: the U-Net maps an image to a source grid of the same size; got lensed "
                         f"{tuple(x.shape[-2:])} and source {tuple(y.shape[-2:])}")
    log.info("train %s: %d pairs; val %s: %d pairs; source grid %s", train_path, len(x), val_path, len(xv), grid)

    L.seed_everything(derived_seed(seed, "unet"), workers=True, verbose=False)
    model = UNet(image_size=int(x.shape[-1]), widths=cfg["widths"])
    n_weights = sum(p.numel() for p in model.parameters())

    def make_module(stage: Mapping[str, Any]) -> UNetModule:
        return UNetModule(model, loss=stage["loss"], learning_rate=cfg["learning_rate"],
                          lr_patience=cfg["lr_patience"], weight_decay=cfg["weight_decay"], augment=cfg["augment"],
                          lr_schedule=cfg["lr_schedule"], epochs=stage["epochs"])

    result = train_stages(make_module, TensorDataset(x, y), TensorDataset(xv, yv), cfg, checkpoint_dir, seed,
                          metrics=METRIC_COLUMNS[3:], labels=("loss",))
    model = model.cpu().eval()
    write_table(pd.DataFrame(result.rows, columns=list(METRIC_COLUMNS)), metrics_path, provenance)
    summary = {"image_size": int(x.shape[-1]), "n_train": len(x), "n_val": len(xv), "n_weights": n_weights,
               "widths": list(cfg["widths"]), "seed": int(seed), "accelerator": result.accelerator,
               "stages": result.stages, "best_checkpoint": result.best_checkpoint, "source_grid": grid,
               "seconds": round(time.perf_counter() - started, 2)}
    save_unet(model, model_path, provenance=provenance, extra={"training": summary, "source_grid": grid})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary, "source_grid": grid}
    log.info("saved %s (%.0f s)", model_path, summary["seconds"])
    return model
