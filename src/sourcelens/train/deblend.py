"""Training the multi-band β-VAE and the latent-space deblender (study 003), run by the staged training.

Both read the blend files of one band set (``results/data/blends_{bands}_{sample}_{split}.h5``): input the
noisy ``blend`` (for the ``isolated`` sample, the central galaxy alone with its noise), target the noiseless
``isolated`` central galaxy, both in the study's normalisation tanh(arcsinh(x / (I_b / 2.5))) with the file's
``normalisation_scale`` I_b per band (:func:`sourcelens.blends.normalise`). Loss of one batch::

    loss = mean over objects [ reconstruction(x̂, target) ]  +  β · mean over objects [ KL(q(z|x) || N(0, 1)) ]

the reconstruction summed over the bands × pixels (``bce``: the binary cross-entropy of the sigmoid output less the
target's own entropy, the study's loss; ``mse``: Σ (x̂ − t)²; ``mae``: Σ |x̂ − t|), as for the galaxy VAE of study 000 (:mod:`sourcelens.train.vae`), so that β keeps its β-VAE meaning (the study: β = 1e-2).

- :func:`train_band_vae`: the :class:`~sourcelens.models.deblender.BandVAE` on the isolated sample (noisy →
  noiseless: the VAE learns to denoise as it encodes).
- :func:`train_deblender`: the :class:`~sourcelens.models.deblender.Deblender`, encoder initialised from the
  trained VAE's, decoder frozen, on the blended sample (noisy blend → the central galaxy alone). β defaults to 0
  (the study's deblender loss had no KL term).

A stage with ``input: noiseless`` feeds the network the noiseless target instead of the noisy scene (a plain
autoencoder stage: the decoder learns the galaxies' shapes before the encoder has to find them in the noise).
Every training batch is a random dihedral copy of each scene, input and target turned alike. Logged per epoch:
``train_loss``, ``val_loss``, ``val_recon``, ``val_kl``, ``val_mse`` (per pixel), ``lr``. Checkpoints, exact resume
and skipped finished stages are those of :func:`sourcelens.train.staged.train_stages`; the deblender's training
fingerprint includes a hash of the VAE file it starts from, so a retrained VAE retrains the deblender.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ..config import validate_config
from ..io import read_attrs, read_dataset, write_table
from ..models.deblender import (BandVAE, Deblender, load_band_vae, normalise_stack, save_band_vae,
                                save_deblender)
from .determinism import derived_seed
from .modules import ImageToImageModule
from .staged import resolve_accelerator, train_stages
from .vae import reconstruction_loss

log = logging.getLogger("sourcelens.train")

DEBLEND_LOSSES = ("bce", "mse", "mae")
STAGE_INPUTS = ("noisy", "noiseless")   # what a stage feeds the network: the noisy scene or the noiseless target
METRIC_COLUMNS = ("stage", "loss", "input", "epoch", "train_loss", "val_loss", "val_recon", "val_kl", "val_mse", "lr")
LABELS = ("loss", "input")   # the stage keys that name the stage folders and label the metric rows
ARCHITECTURE_KEYS = ("widths", "latent_dim", "hidden_dim", "kernel")

__all__ = ["DEBLEND_LOSSES", "STAGE_INPUTS", "METRIC_COLUMNS", "LatentModule", "deblend_settings", "band_scales",
           "load_blend_pairs", "bce_loss", "init_sigmoid_bias", "train_band_vae", "train_deblender"]


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(``logits``) against ``target`` in [0, 1] per object (B,), summed over bands
    and pixels, less the target's own entropy (so 0 for a perfect output; the gradient is unchanged): the study's
    loss (its images in [0, 1]), whose gradient p − t does not vanish where the sigmoid saturates (with MSE the
    networks sit for epochs on the mean image)."""
    t = target.clamp(0.0, 1.0)
    own = F.binary_cross_entropy(t, t, reduction="none")       # the target's entropy (0 where t is 0 or 1)
    return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") - own).flatten(1).sum(1)


class LatentModule(ImageToImageModule):
    """A :class:`BandVAE` or :class:`Deblender` with loss reconstruction (``loss``: bce, mse or mae, summed over
    bands and pixels) + β·KL. Batches are (normalised noisy inputs, normalised noiseless targets), both
    (B, bands, S, S). Adam (:class:`~.modules.AdamPlateauModule`) updates only what trains: the deblender's
    frozen decoder has no gradients."""

    def __init__(self, model: BandVAE | Deblender, loss: str = "mse", beta: float = 1e-2,
                 learning_rate: float = 1e-3, lr_patience: int = 3, augment: bool = True, input: str = "noisy",
                 lr_schedule: str = "plateau", epochs: int | None = None):
        super().__init__(learning_rate, lr_patience, lr_schedule=lr_schedule, epochs=epochs)
        if loss not in DEBLEND_LOSSES:
            raise ValueError(f"unknown reconstruction loss {loss!r}; expected one of {DEBLEND_LOSSES}")
        if input not in STAGE_INPUTS:
            raise ValueError(f"unknown stage input {input!r}; expected one of {STAGE_INPUTS}")
        self.model, self.loss_kind, self.beta, self.augment = model, loss, float(beta), bool(augment)
        self.input = input

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def compute_loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.input == "noiseless":
            x = target
        logits, mu, logvar = self.model.forward_logits(x)
        logits, target = logits.float(), target.float()
        recon = torch.sigmoid(logits)
        if self.loss_kind == "bce":
            rec = bce_loss(logits, target).mean()
        else:
            rec = reconstruction_loss(recon, target, self.loss_kind).mean()
        kl = self.model.kl_divergence(mu.float(), logvar.float()).mean()
        return {"loss": rec + self.beta * kl, "recon": rec, "kl": kl,
                "mse": F.mse_loss(recon.float(), target.float())}



def deblend_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``deblend`` config section validated against the schema with defaults filled."""
    return validate_config({"deblend": dict(cfg or {})})["deblend"]


def band_scales(path: str | Path) -> dict[str, Any]:
    """``{"bands": [...], "scales": [...]}``: the bands and normalisation scales I_b of a blend file (root
    attributes ``bands`` and ``normalisation_scale``: a list in band order, or a mapping band → I_b)."""
    attrs = read_attrs(path)
    if "bands" not in attrs or "normalisation_scale" not in attrs:
        raise ValueError(f"{path}: a blend file needs the root attributes 'bands' and 'normalisation_scale' "
                         f"(it has {sorted(attrs)}); remake it with rule simulate_blends")
    bands = [str(b) for b in attrs["bands"]]
    scales = attrs["normalisation_scale"]
    if isinstance(scales, Mapping):
        scales = [scales[b] for b in bands]
    scales = [float(s) for s in np.atleast_1d(scales)]
    if len(scales) != len(bands):
        raise ValueError(f"{path}: {len(scales)} normalisation scales for {len(bands)} bands {bands}")
    return {"bands": bands, "scales": scales}


def load_blend_pairs(path: str | Path, normalisation: Mapping[str, Any] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (noisy ``blend``, noiseless ``isolated``) tensors (N, bands, S, S) of a blend file, with
    ``normalisation`` (default: the file's own scales)."""
    normalisation = normalisation or band_scales(path)
    arrays, _ = read_dataset(path, names=("blend", "isolated"))
    x, y = (np.asarray(arrays[k], dtype=np.float32) for k in ("blend", "isolated"))
    if x.ndim != 4 or x.shape != y.shape or x.shape[1] != len(normalisation["scales"]):
        raise ValueError(f"{path}: 'blend' and 'isolated' must be (N, {len(normalisation['scales'])} bands, S, S) "
                         f"alike, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{path} holds no scenes")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{path}: 'blend' or 'isolated' holds non-finite values")
    scales = normalisation["scales"]
    return torch.from_numpy(normalise_stack(x, scales)), torch.from_numpy(normalise_stack(y, scales))


def _file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def _train(kind: str, model: BandVAE | Deblender, train: tuple, val: tuple, settings: Mapping[str, Any],
           beta: float, checkpoint_dir: Path, seed: int, fingerprint_extra: Mapping[str, Any]):
    def make_module(stage: Mapping[str, Any]) -> LatentModule:
        return LatentModule(model, loss=stage["loss"], beta=beta, learning_rate=settings["learning_rate"],
                            lr_patience=settings["lr_patience"], augment=settings["augment"],
                            input=stage.get("input", "noisy"), lr_schedule=settings["lr_schedule"],
                            epochs=stage["epochs"])

    return train_stages(make_module, TensorDataset(*train), TensorDataset(*val), {**settings, **fingerprint_extra},
                        checkpoint_dir, seed, metrics=METRIC_COLUMNS[len(LABELS) + 2:], labels=LABELS)


def _finish(kind: str, model, result, started: float, train_x: torch.Tensor, val_x: torch.Tensor,
            settings: Mapping[str, Any], seed: int, metrics_path, provenance) -> dict[str, Any]:
    write_table(pd.DataFrame(result.rows, columns=list(METRIC_COLUMNS)), metrics_path, provenance)
    last = result.stages[-1]
    return {"model": kind, "bands": model.hparams["bands"], "image_size": model.hparams["image_size"],
            "n_train": len(train_x), "n_val": len(val_x),
            "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "n_parameters": sum(p.numel() for p in model.parameters()), "hparams": dict(model.hparams),
            "batch_size": settings["batch_size"], "learning_rate": settings["learning_rate"], "seed": int(seed),
            "accelerator": result.accelerator, "stages": result.stages, "best_checkpoint": result.best_checkpoint,
            "final_val_loss": last["best_val_loss"], "seconds": round(time.perf_counter() - started, 2)}


def train_band_vae(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
                   model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
                   seed: int, provenance: Mapping[str, Any] | None = None, band_set: str = "") -> BandVAE:
    """Train the multi-band VAE on the isolated scenes of ``train_path`` (validating on ``val_path``) following
    ``cfg`` (the ``deblend`` config section: its ``vae`` block); save it with the bands and normalisation scales
    of the file to ``model_path`` and one metrics row per epoch and stage to ``metrics_path``. Reruns resume from
    ``checkpoint_dir`` (default ``{deblend.checkpoint_dir}/vae_{band_set}``)."""
    started = time.perf_counter()
    full = deblend_settings(cfg)
    settings = full["vae"]
    checkpoint_dir = Path(checkpoint_dir or Path(full["checkpoint_dir"]) / f"vae_{band_set or 'bands'}")
    norm = band_scales(train_path)
    x, y = load_blend_pairs(train_path, norm)
    xv, yv = load_blend_pairs(val_path, norm)
    log.info("VAE %s: train %s (%d scenes %s), val %s (%d); bands %s", band_set, train_path, len(x),
             tuple(x.shape[1:]), val_path, len(xv), norm["bands"])
    L.seed_everything(derived_seed(seed, "deblend_vae", band_set), workers=True, verbose=False)
    model = BandVAE(bands=int(x.shape[1]), image_size=int(x.shape[-1]),
                    **{k: settings[k] for k in ARCHITECTURE_KEYS})
    init_sigmoid_bias(model, float(y.mean()))
    log.info("BandVAE %s, %d parameters; accelerator %s", model.hparams, sum(p.numel() for p in model.parameters()),
             resolve_accelerator(settings["accelerator"]))
    result = _train("vae", model, (x, y), (xv, yv), settings, settings["beta"], checkpoint_dir, seed,
                    {"band_set": band_set, "normalisation": norm})
    model = model.cpu().eval()
    summary = _finish("vae", model, result, started, x, xv, settings, seed, metrics_path, provenance)
    summary.update(beta=settings["beta"], band_set=band_set)
    save_band_vae(model, model_path, norm, provenance, extra={"training": summary})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary, "normalisation": norm}
    log.info("saved %s (%.1f s)", model_path, summary["seconds"])
    return model


def train_deblender(train_path: str | Path, val_path: str | Path, vae_path: str | Path,
                    cfg: Mapping[str, Any] | None, model_path: str | Path, metrics_path: str | Path,
                    checkpoint_dir: str | Path | None = None, *, seed: int,
                    provenance: Mapping[str, Any] | None = None, band_set: str = "") -> Deblender:
    """Train the deblender on the blended scenes of ``train_path`` (validating on ``val_path``): its encoder starts
    from the VAE of ``vae_path``, its decoder is that VAE's, frozen; ``cfg`` is the ``deblend`` section (its
    ``deblender`` block). Saves the model (with the VAE's bands and scales) and the per-epoch metrics."""
    started = time.perf_counter()
    full = deblend_settings(cfg)
    settings = full["deblender"]
    checkpoint_dir = Path(checkpoint_dir or Path(full["checkpoint_dir"]) / f"deblender_{band_set or 'bands'}")
    vae = load_band_vae(vae_path)
    norm = dict(vae.extra["normalisation"])
    file_norm = band_scales(train_path)
    if file_norm["bands"] != norm["bands"]:
        raise ValueError(f"{train_path} has bands {file_norm['bands']}, the VAE {vae_path} was trained on "
                         f"{norm['bands']}")
    x, y = load_blend_pairs(train_path, norm)
    xv, yv = load_blend_pairs(val_path, norm)
    log.info("deblender %s: train %s (%d blends), val %s (%d); from VAE %s", band_set, train_path, len(x),
             val_path, len(xv), vae_path)
    L.seed_everything(derived_seed(seed, "deblender", band_set), workers=True, verbose=False)
    model = Deblender.from_vae(vae)
    with warnings.catch_warnings():   # the frozen decoder is in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        result = _train("deblender", model, (x, y), (xv, yv), settings, settings["beta"], checkpoint_dir, seed,
                        {"band_set": band_set, "normalisation": norm, "vae": _file_hash(vae_path)})
    model = model.cpu().eval()
    model.freeze_decoder()
    summary = _finish("deblender", model, result, started, x, xv, settings, seed, metrics_path, provenance)
    summary.update(beta=settings["beta"], band_set=band_set, vae=str(vae_path))
    save_deblender(model, model_path, norm, provenance, extra={"training": summary})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary, "normalisation": norm}
    log.info("saved %s (%.1f s)", model_path, summary["seconds"])
    return model


def init_sigmoid_bias(model: BandVAE, mean_pixel: float, floor: float = 0.05) -> None:
    """Start the sigmoid output near the mean normalised pixel of the targets (the logit of it, floored at
    ``floor``) rather than at 0.5: the stamps are mostly empty sky, and the first epochs would otherwise only learn
    the background; the floor keeps the sigmoid's slope (p (1 − p)) large enough for the galaxies to be learnt
    (started at the mean pixel itself, ≈ 0.005, the VAE sits for epochs on the mean image)."""
    m = min(max(float(mean_pixel), floor), 0.5)
    with torch.no_grad():
        model.decoder.to_image.bias.fill_(float(np.log(m / (1 - m))))
