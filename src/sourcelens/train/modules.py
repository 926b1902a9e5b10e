"""What the LightningModules of the project share: Adam with the learning rate halved on a validation plateau,
the per-epoch logging of the training loss and learning rate, and the steps of an image-to-image network."""

from __future__ import annotations

import lightning as L
import torch

from ..augment import random_dihedral_batch

LR_FACTOR = 0.5

__all__ = ["LR_FACTOR", "AdamPlateauModule", "ImageToImageModule"]


class AdamPlateauModule(L.LightningModule):
    """Adam (``learning_rate``) with ``ReduceLROnPlateau`` on ``val_loss`` (factor :data:`LR_FACTOR`,
    ``lr_patience`` epochs); :meth:`log_train` logs ``train_loss`` and ``lr`` per epoch."""

    def __init__(self, learning_rate: float = 1e-3, lr_patience: int = 3, weight_decay: float = 0.0):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.lr_patience = int(lr_patience)
        self.weight_decay = float(weight_decay)

    def log_train(self, loss: torch.Tensor, n: int) -> None:
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=n)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=LR_FACTOR,
                                                           patience=self.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}


class ImageToImageModule(AdamPlateauModule):
    """Steps of a network trained on (input image, target image) batches: subclasses define
    ``compute_loss(x, target)`` returning ``loss`` and other metrics, and set ``augment``: training batches are
    then random dihedral copies (input and target turned alike); validation logs ``val_loss`` and ``val_{name}``
    of every other metric."""

    augment: bool = True

    def training_step(self, batch, batch_idx):
        x, target = batch
        if self.augment:
            x, target, _ = random_dihedral_batch(x, targets=target)
        out = self.compute_loss(x, target)
        self.log_train(out["loss"], x.shape[0])
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        x, target = batch
        out = self.compute_loss(x, target)
        n = x.shape[0]
        self.log("val_loss", out["loss"], on_epoch=True, prog_bar=True, batch_size=n)
        for name, value in out.items():
            if name != "loss":
                self.log(f"val_{name}", value, on_epoch=True, batch_size=n)
