"""Training the galaxy VAE (study 000) with Lightning: losses, the staged recipe, checkpoints and resume.

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

The recipe ``stages`` (e.g. MAE pretraining, then MSE) runs stage after stage, each a ``Trainer.fit`` of at
most ``epochs`` epochs with a fresh Adam optimiser, ``ReduceLROnPlateau`` (factor 0.5, ``lr_patience``) and
``EarlyStopping`` on ``val_loss`` (``early_stopping_patience``); a stage starts from the best weights of the
previous one. Checkpoints: ``checkpoint_dir/stage{i}_{loss}/{best,last}.ckpt``. ``checkpoint_dir/progress.json``
records the finished stages and a fingerprint of the data and settings; a rerun skips finished stages and
resumes an unfinished one from its ``last.ckpt`` (the per-epoch metrics travel inside the checkpoints), and
starts afresh when the fingerprint differs. This module never imports snakemake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.environments import LightningEnvironment
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .config import rng_for, validate_config
from .io import read_dataset, write_json, write_table
from .metrics import ssim_torch
from .selection import evenly_spaced_rows
from .fit.decoder import reference_metric
from .models.vae import VAE, save_vae

log = logging.getLogger("sourcelens.train")

RECON_LOSSES = ("mse", "mae", "chi2", "ssim_mae")
SIGMA_FLOOR = 1e-3
LR_FACTOR = 0.5
METRIC_COLUMNS = ("stage", "loss", "epoch", "train_loss", "val_loss", "val_recon", "val_kl", "val_mse", "lr")
PROGRESS_FILE = "progress.json"
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


class VAEModule(L.LightningModule):
    """A :class:`~sourcelens.models.vae.VAE` with loss reconstruction + β·KL, Adam and ReduceLROnPlateau.

    Batches are ``(images (B, 1, S, S), noise_sigma (B,))``. Logged per epoch: ``train_loss``, ``val_loss``,
    ``val_recon``, ``val_kl``, ``val_mse`` and ``lr``.
    """

    def __init__(self, model: VAE, loss: str = "mse", beta: float = 1e-2, learning_rate: float = 1e-3,
                 lr_patience: int = 3, sigma_floor: float = SIGMA_FLOOR):
        super().__init__()
        if loss not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {loss!r}; expected one of {RECON_LOSSES}")
        self.model = model
        self.loss_kind = loss
        self.beta = float(beta)
        self.learning_rate = float(learning_rate)
        self.lr_patience = int(lr_patience)
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
        n = x.shape[0]
        self.log("train_loss", out["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=n)
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

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.learning_rate)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=LR_FACTOR,
                                                           patience=self.lr_patience)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}


class MetricsHistory(Callback):
    """Collects one row of epoch metrics per epoch; the rows are saved in (and restored from) checkpoints."""

    def __init__(self, stage: int, loss: str):
        self.stage, self.loss = int(stage), loss
        self.rows: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return f"MetricsHistory[stage={self.stage}]"

    def on_train_epoch_end(self, trainer, pl_module):  # runs before ModelCheckpoint saves at epoch end
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"stage": self.stage, "loss": self.loss, "epoch": int(trainer.current_epoch)}
        for key in METRIC_COLUMNS[3:]:
            value = metrics.get(key)
            row[key] = float(value) if value is not None else math.nan
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        log.info("stage %d (%s) epoch %d: train_loss %.5g  val_loss %.5g  (recon %.5g, kl %.4g, mse %.3g)  lr %.3g",
                 self.stage, self.loss, row["epoch"], row["train_loss"], row["val_loss"], row["val_recon"],
                 row["val_kl"], row["val_mse"], row["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


# --------------------------------------------------------------------------------------
# data


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


def _loader(images: torch.Tensor, sigma: torch.Tensor, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    return DataLoader(TensorDataset(images, sigma), batch_size=batch_size, shuffle=shuffle,
                      num_workers=num_workers, persistent_workers=num_workers > 0)


# --------------------------------------------------------------------------------------
# the recipe


def vae_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``vae`` config section validated against the schema with defaults filled."""
    return validate_config({"vae": dict(cfg or {})})["vae"]


def _fingerprint(cfg: Mapping[str, Any], seed: int, *tensors: torch.Tensor) -> str:
    """Hash of what determines the training: settings (not the device), seed and the data."""
    keep = {k: v for k, v in cfg.items() if k not in ("accelerator", "num_workers")}
    h = hashlib.sha256(json.dumps({"vae": keep, "seed": int(seed)}, sort_keys=True, default=str).encode())
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:20]


def _read_progress(checkpoint_dir: Path, fingerprint: str) -> dict[str, Any]:
    path = checkpoint_dir / PROGRESS_FILE
    if path.is_file():
        try:
            progress = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            progress = {}
        if progress.get("fingerprint") == fingerprint:
            return progress
        log.warning("%s: checkpoints of other settings or data; starting afresh", checkpoint_dir)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return {"fingerprint": fingerprint, "finished": {}}


def _stage_seed(seed: int, *keys: Any) -> int:
    return int(rng_for(int(seed), "train_vae", *keys).integers(0, 2**31 - 1))


def _resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def init_output_bias(model: VAE, mean_pixel: float, floor: float = 1e-3) -> None:
    """Start the decoder at the mean pixel value of the data: set the output bias to softplus⁻¹(mean).

    With the default zero-ish bias the softplus output starts near log 2 ≈ 0.69 everywhere, far above the
    mostly empty peak-normalised stamps, and the first epochs would only learn the background level.
    """
    m = max(float(mean_pixel), floor)
    with torch.no_grad():
        model.to_image.bias.fill_(math.log(math.expm1(m)))


def _load_weights(module: VAEModule, ckpt: str | Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)


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
              model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path, seed: int,
              provenance: Mapping[str, Any] | None = None) -> VAE:
    """Train a VAE on the stamps of ``train_path``, validating on ``val_path``, following ``cfg`` (the
    ``vae`` config section; missing keys take the schema defaults).

    Writes the best model of the last stage to ``model_path`` (:func:`~sourcelens.models.vae.save_vae`, with
    ``provenance`` and the training summary in ``extra["training"]``) and one row per epoch and stage to
    ``metrics_path`` (CSV, columns :data:`METRIC_COLUMNS`). Reruns resume from ``checkpoint_dir``.
    Returns the trained model in eval mode.
    """
    started = time.perf_counter()
    cfg = vae_settings(cfg)
    checkpoint_dir = Path(checkpoint_dir)
    train_x, train_s = load_stamps(train_path)
    val_x, val_s = load_stamps(val_path)
    size = int(train_x.shape[-1])
    if tuple(val_x.shape[1:]) != tuple(train_x.shape[1:]):
        raise ValueError(f"train stamps {tuple(train_x.shape[1:])} and val stamps {tuple(val_x.shape[1:])} differ")
    log.info("train %s: %d stamps %dx%d; val %s: %d stamps", train_path, len(train_x), size, size,
             val_path, len(val_x))

    progress = _read_progress(checkpoint_dir, _fingerprint(cfg, seed, train_x, train_s, val_x, val_s))
    accelerator = _resolve_accelerator(cfg["accelerator"])
    L.seed_everything(_stage_seed(seed), workers=True, verbose=False)
    model = VAE(image_size=size, latent_dim=cfg["latent_dim"], widths=cfg["widths"])
    init_output_bias(model, float(train_x.mean()))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("VAE: latent_dim %d, widths %s, %d parameters; accelerator %s",
             cfg["latent_dim"], cfg["widths"], n_params, accelerator)

    rows: list[dict[str, Any]] = []
    summary_stages: list[dict[str, Any]] = []
    best_ckpt: str | None = None
    # Lightning's deterministic=True switches torch to deterministic algorithms process-wide: restore the
    # caller's setting afterwards, and skip the NaN-filling of fresh tensors (a debugging aid costing ~20 %)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        for index, stage in enumerate(cfg["stages"], start=1):
            name = f"stage{index}_{stage['loss']}"
            stage_dir = checkpoint_dir / name
            module = VAEModule(model, loss=stage["loss"], beta=cfg["beta"], learning_rate=cfg["learning_rate"],
                               lr_patience=cfg["lr_patience"])
            done = progress["finished"].get(name)
            if done is not None and Path(done["best_model_path"]).is_file():
                log.info("%s already finished (%d epochs, best val_loss %.5g): skipped", name,
                         done["epochs_run"], done["best_val_loss"])
                _load_weights(module, done["best_model_path"])
                rows.extend(done["rows"])
                summary_stages.append({k: v for k, v in done.items() if k != "rows"} | {"skipped": True})
                best_ckpt = done["best_model_path"]
                continue
            last = stage_dir / "last.ckpt"
            resume = last if last.is_file() else None
            if resume is None and stage_dir.exists():
                shutil.rmtree(stage_dir)
            if resume is not None:
                log.info("%s: resuming from %s", name, resume)
            L.seed_everything(_stage_seed(seed, index), workers=True, verbose=False)
            history = MetricsHistory(index, stage["loss"])
            checkpoint = ModelCheckpoint(dirpath=stage_dir, filename="best", monitor="val_loss", mode="min",
                                         save_top_k=1, save_last=True, save_on_train_epoch_end=True,
                                         enable_version_counter=False)
            stopping = EarlyStopping(monitor="val_loss", mode="min", patience=cfg["early_stopping_patience"])
            n_batches = math.ceil(len(train_x) / cfg["batch_size"])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
                warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
                trainer = L.Trainer(
                    max_epochs=int(stage["epochs"]), accelerator=accelerator, devices=1,
                    deterministic=True if accelerator == "cpu" else "warn",
                    callbacks=[history, stopping, checkpoint, TQDMProgressBar(refresh_rate=max(1, n_batches // 4))],
                    logger=CSVLogger(save_dir=stage_dir, name="csv", flush_logs_every_n_steps=1),
                    plugins=[LightningEnvironment()],  # one process, one device: no SLURM/MPI auto-detection
                    default_root_dir=stage_dir, num_sanity_val_steps=0, log_every_n_steps=1,
                    enable_model_summary=index == 1 and resume is None,
                )
                trainer.fit(module,
                            train_dataloaders=_loader(train_x, train_s, cfg["batch_size"], True, cfg["num_workers"]),
                            val_dataloaders=_loader(val_x, val_s, cfg["batch_size"], False, cfg["num_workers"]),
                            ckpt_path=str(resume) if resume is not None else None)
            best_ckpt = checkpoint.best_model_path or str(last)
            if checkpoint.best_model_path:
                _load_weights(module, checkpoint.best_model_path)
            best_score = checkpoint.best_model_score
            record = {
                "stage": index, "loss": stage["loss"], "max_epochs": int(stage["epochs"]),
                "epochs_run": len(history.rows),
                "best_val_loss": float(best_score) if best_score is not None else math.nan,
                "best_epoch": int(min(history.rows, key=lambda r: r["val_loss"])["epoch"]) if history.rows else -1,
                "stopped_early": bool(stopping.stopped_epoch > 0),
                "resumed": resume is not None, "best_model_path": best_ckpt, "rows": history.rows,
            }
            progress["finished"][name] = record
            write_json(progress, checkpoint_dir / PROGRESS_FILE)
            rows.extend(history.rows)
            summary_stages.append({k: v for k, v in record.items() if k != "rows"} | {"skipped": False})
            log.info("%s finished: %d epochs, best val_loss %.5g at epoch %d%s", name, record["epochs_run"],
                     record["best_val_loss"], record["best_epoch"], " (early stop)" if record["stopped_early"] else "")
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling

    model = model.cpu().eval()
    model.reference_latents = reference_latents(model, train_x)
    reference_metric(model)   # the decoder fits' preconditioner, saved with the model
    metrics = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    write_table(metrics, metrics_path)
    last_stage = summary_stages[-1]
    summary = {
        "image_size": size, "n_train": len(train_x), "n_val": len(val_x), "n_parameters": n_params,
        "latent_dim": cfg["latent_dim"], "widths": list(cfg["widths"]), "beta": cfg["beta"],
        "batch_size": cfg["batch_size"], "learning_rate": cfg["learning_rate"], "seed": int(seed),
        "accelerator": accelerator, "stages": summary_stages, "best_checkpoint": best_ckpt,
        "final_val_loss": last_stage["best_val_loss"], "final_loss": last_stage["loss"],
        "final_val_mse": _mse_at_best(rows, last_stage),
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_vae(model, model_path, provenance=provenance, extra={"training": summary})
    model.provenance, model.extra = dict(provenance or {}), {"training": summary}
    log.info("wrote %s and %s (%.1f s)", model_path, metrics_path, summary["seconds"])
    return model


__all__ = ["RECON_LOSSES", "REFERENCE_GALAXIES", "SIGMA_FLOOR", "METRIC_COLUMNS", "VAEModule", "MetricsHistory",
           "reconstruction_loss", "init_output_bias", "load_stamps",
           "reference_latents", "vae_settings", "train_vae"]
