"""Training the super-resolution networks (studies 001 and 004) on the SR datasets, run by the staged training.

Methods (:data:`SR_METHODS`) and the losses of their stages (``stages: [{loss: ..., epochs: ...}]``):

``supervised``          :class:`~sourcelens.models.sisr.SISR` on (low-res, noiseless high-res) pairs — the upper
                        reference. ``bicubic``: learn bicubic upsampling of the input (the study's pretraining);
                        ``mse``: MSE against the high-resolution truth.
``lenssr_with_source``  the same SISR and losses, the target being the re-lensed Sérsic fitted to each
                        low-resolution image (:func:`sourcelens.models.lenssr.sersic_relensed`), never the truth.
``lenssr_no_source``    :class:`~sourcelens.models.lenssr.LensSRNoSource`. ``bicubic``: both networks learn
                        bicubic upsampling (of the image, of ``i∘β``); ``lens``: the lens equation and intensity
                        constraint (:func:`~sourcelens.models.lenssr.lenssr_no_source_loss`, ``lens_weight``,
                        ``Ŝ`` lensed by ``interpolation``).
``pisr``                :class:`~sourcelens.models.pisr.PISR`. ``bicubic``: ``f`` learns bicubic upsampling of
                        ``i∘β``; ``chi2``: χ²/pixel + ``tv_weight`` · TV(ŝ) (:func:`~sourcelens.models.pisr.pisr_loss`),
                        pixel weights by ``mask`` and ``magnification``; ŝ lensed by ``interpolation``. Unsupervised: the truth is never read.

Data (:func:`load_sr_set`): ``low_res`` and ``noise_sigma`` divided by each image's
:func:`~sourcelens.models.common.lensed_image_scale` ``c`` (σ floored in quadrature at ``sigma_floor``, so
noiseless sets have a finite χ²), high-resolution arrays as ``f²·flux/c`` (normalised surface-brightness units,
:mod:`sourcelens.lensing.superres`). The physics methods build one :class:`~sourcelens.lensing.SRLens` per
distinct lens of the training and validation sets once (:class:`~sourcelens.lensing.SRLensCache`) and
precompute ``i∘β`` and the χ² weights. The SISR methods train on a random dihedral copy of each pair per batch
(``augment``); the physics methods do not (their operators belong to the unturned lens).

Settings: the config's ``super_resolution.<method>`` blocks (their schema defaults are :data:`DEFAULTS`),
filled by :func:`sr_settings`. The PISR ablation (:data:`sourcelens.names.PISR_ABLATION`) trains PISR with its
loss terms added one by one; :func:`sourcelens.config.sr_method_config` gives the method and settings of a method
or ablation variant name.
Logged per epoch: ``train_loss``, ``val_loss`` (the stage's loss on the validation set — for the unsupervised
methods, without the truth), ``val_mse`` (normalised units, against the stage's target: the truth for
``supervised``, the Sérsic for ``lenssr_with_source``, the data for the physics methods) and ``lr``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from ..io import read_attrs, read_dataset, write_table
from ..lensing.superres import SRGeometry, SRLens, SRLensCache, block_mean
from ..models.common import lensed_image_scale
from ..models.lenssr import LensSRNoSource, lenssr_no_source_loss, save_lenssr, sersic_relensed
from ..models.pisr import PISR, pisr_forward, pisr_loss, save_pisr
from ..models.sisr import SISR, save_sisr, upsample_bicubic
from .determinism import derived_seed
from .modules import AdamPlateauModule, ImageToImageModule
from .staged import resolve_accelerator, train_stages

log = logging.getLogger("sourcelens.train")

SR_METHODS = ("supervised", "lenssr_with_source", "lenssr_no_source", "pisr")
SR_LOSSES = {"supervised": ("bicubic", "mse"), "lenssr_with_source": ("bicubic", "mse"),
             "lenssr_no_source": ("bicubic", "lens"), "pisr": ("bicubic", "chi2")}
METRIC_COLUMNS = ("stage", "loss", "epoch", "train_loss", "val_loss", "val_mse", "lr")

_COMMON = {"sisr": {"width": 32, "depth": 4, "skip": "bicubic", "batch_norm": False}, "batch_size": 16,
           "learning_rate": 1e-3, "weight_decay": 0.0, "lr_patience": 3, "early_stopping_patience": 6,
           "sigma_floor": 1e-3, "accelerator": "auto", "devices": 1, "precision": "32-true", "num_workers": 0}
DEFAULTS: dict[str, dict[str, Any]] = {
    "supervised": {**_COMMON, "augment": True, "stages": [{"loss": "bicubic", "epochs": 3}, {"loss": "mse", "epochs": 20}]},
    "lenssr_with_source": {**_COMMON, "augment": True, "sersic_max_iter": 100, "supersampling": None,
                           "stages": [{"loss": "bicubic", "epochs": 3}, {"loss": "mse", "epochs": 20}]},
    "lenssr_no_source": {**_COMMON, "lens_weight": 1.0, "interpolation": "bilinear",
                         "stages": [{"loss": "bicubic", "epochs": 3}, {"loss": "lens", "epochs": 20}]},
    "pisr": {**_COMMON, "network": "sisr", "unet": {"widths": [16, 32]}, "interpolation": "bilinear",
             "refine": {"steps": 100, "learning_rate": 1e-3, "tv_weight": 0.0},
             "tv_weight": 0.01, "mask": False,
             "magnification": False, "max_magnification": 30.0,
             "stages": [{"loss": "bicubic", "epochs": 3}, {"loss": "chi2", "epochs": 20}]},
}
"""Default settings per method (``checkpoint_dir`` defaults to ``results/checkpoints/sr_{method}``)."""


__all__ = ["SR_METHODS", "SR_LOSSES", "METRIC_COLUMNS", "DEFAULTS", "SISRModule", "LensSRModule", "PISRModule",
           "sr_settings", "load_sr_set", "train_sisr", "train_lenssr", "train_pisr", "train_sr"]


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def sr_settings(method: str, cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings of ``method``: :data:`DEFAULTS` overridden by ``cfg``; unknown stage losses are refused."""
    if method not in SR_METHODS:
        raise ValueError(f"unknown super-resolution method {method!r}; expected one of {SR_METHODS}")
    out = _merge(DEFAULTS[method], dict(cfg or {}))
    out.setdefault("checkpoint_dir", f"results/checkpoints/sr_{method}")
    for stage in out["stages"]:
        if stage.get("loss") not in SR_LOSSES[method] or int(stage.get("epochs", 0)) < 1:
            raise ValueError(f"{method}: each stage needs a loss among {SR_LOSSES[method]} and epochs ≥ 1, "
                             f"got {dict(stage)}")
    return out


# ------------------------------------------------------------------------------------------ modules
def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


class SISRModule(ImageToImageModule):
    """An :class:`SISR` with the loss of one stage: ``bicubic`` (target: bicubic upsampling of the input) or
    ``mse`` (target: the batch's high-resolution image). Batches: (images (B, 1, n, n), targets
    (B, 1, fn, fn)), normalised units."""

    def __init__(self, model: SISR, loss: str = "mse", learning_rate: float = 1e-3, lr_patience: int = 3,
                 weight_decay: float = 0.0, augment: bool = True):
        super().__init__(learning_rate, lr_patience, weight_decay)
        if loss not in ("bicubic", "mse"):
            raise ValueError(f"unknown SISR loss {loss!r}; expected bicubic or mse")
        self.model, self.loss_kind, self.augment = model, loss, bool(augment)

    def compute_loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = self.model(x)
        goal = upsample_bicubic(x, self.model.factor) if self.loss_kind == "bicubic" else target
        loss = _mse(pred, goal)
        return {"loss": loss, "mse": _mse(pred, target) if self.loss_kind == "mse" else loss}


class _PhysicsModule(AdamPlateauModule):
    """What the physics modules share: the lenses of the data (``lenses[i]`` for row index ``i``) and the
    logging of a stage's losses."""

    def __init__(self, lenses: Sequence[SRLens], learning_rate: float, lr_patience: int, weight_decay: float):
        super().__init__(learning_rate, lr_patience, weight_decay)
        self.lenses = list(lenses)

    def lenses_of(self, index: torch.Tensor) -> list[SRLens]:
        return [self.lenses[int(i)] for i in index]

    def training_step(self, batch, batch_idx):
        out = self.compute_loss(batch)
        self.log_train(out["loss"], batch[0].shape[0])
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.compute_loss(batch)
        n = batch[0].shape[0]
        self.log("val_loss", out["loss"], on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val_mse", out["mse"], on_epoch=True, batch_size=n)


class LensSRModule(_PhysicsModule):
    """:class:`LensSRNoSource` with the loss of one stage (``bicubic`` or ``lens``). Batches: (images, σ,
    backward-lensed images ``i∘β``, all (B, n, n), row indices (B,))."""

    def __init__(self, model: LensSRNoSource, lenses: Sequence[SRLens], loss: str = "lens", lens_weight: float = 1.0,
                 learning_rate: float = 1e-3, lr_patience: int = 3, weight_decay: float = 0.0,
                 interpolation: str = "overlap"):
        super().__init__(lenses, learning_rate, lr_patience, weight_decay)
        if loss not in SR_LOSSES["lenssr_no_source"]:
            raise ValueError(f"unknown LensSR loss {loss!r}; expected one of {SR_LOSSES['lenssr_no_source']}")
        self.model, self.loss_kind, self.lens_weight = model, loss, float(lens_weight)
        self.interpolation = interpolation

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        x, sigma, src, index = batch
        image, source = self.model(x[:, None], src[:, None])
        f = self.model.hparams["factor"]
        mse = _mse(block_mean(image[:, 0], f), x)
        if self.loss_kind == "bicubic":
            loss = _mse(image[:, 0], upsample_bicubic(x, f)) + _mse(source[:, 0], upsample_bicubic(src, f))
            return {"loss": loss, "mse": mse}
        out = lenssr_no_source_loss(image[:, 0], source[:, 0], self.lenses_of(index), x, sigma, self.lens_weight,
                                    self.interpolation)
        return out | {"mse": mse}


class PISRModule(_PhysicsModule):
    """:class:`PISR` with the loss of one stage (``bicubic`` or ``chi2``). Batches: (images, σ, ``i∘β``, χ²
    weights, all (B, n, n), row indices (B,))."""

    def __init__(self, model: PISR, lenses: Sequence[SRLens], loss: str = "chi2", tv_weight: float = 0.0,
                 learning_rate: float = 1e-3, lr_patience: int = 3, weight_decay: float = 0.0):
        super().__init__(lenses, learning_rate, lr_patience, weight_decay)
        if loss not in SR_LOSSES["pisr"]:
            raise ValueError(f"unknown PISR loss {loss!r}; expected one of {SR_LOSSES['pisr']}")
        self.model, self.loss_kind, self.tv_weight = model, loss, float(tv_weight)

    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        x, sigma, src, weight, index = batch
        if self.loss_kind == "bicubic":
            f = self.model.hparams["factor"]
            loss = _mse(self.model(src[:, None])[:, 0], upsample_bicubic(src, f))
            return {"loss": loss, "mse": loss}
        out = pisr_forward(self.model, self.lenses_of(index), x, src)
        return pisr_loss(out, x, sigma, weight, self.tv_weight) | {"mse": _mse(out["model"], x)}


# ------------------------------------------------------------------------------------------- data
def load_sr_set(path: str | Path, sigma_floor: float = 1e-3, truth: bool = False) -> dict[str, Any]:
    """An SR dataset in normalised units (module docstring): ``low_res``, ``sigma`` (N, n, n), ``scale`` (N,),
    ``lens_params`` (N, 8), ``geometry`` (:class:`SRGeometry`), ``attrs``; with ``truth`` also ``high_res``
    (N, fn, fn). Errors name the file."""
    names = ("low_res", "noise_sigma", "lens_params") + (("high_res",) if truth else ())
    arrays, _ = read_dataset(path, names=names)
    attrs = read_attrs(path)
    try:
        geometry = SRGeometry.from_attrs(attrs)
    except KeyError as err:
        raise ValueError(f"{path}: {err.args[0]}") from err
    lr = np.asarray(arrays["low_res"], dtype=np.float32)
    n, f = geometry.low_res_num_pix, geometry.factor
    if lr.ndim != 3 or len(lr) == 0 or lr.shape[1:] != (n, n):
        raise ValueError(f"{path}: 'low_res' must be a non-empty (N, {n}, {n}) stack, got {lr.shape}")
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: '{name}' holds non-finite values")
    scale = lensed_image_scale(lr)
    sigma = np.asarray(arrays["noise_sigma"], dtype=np.float32) / scale[:, None, None]
    out = {"low_res": torch.from_numpy(lr / scale[:, None, None]),
           "sigma": torch.from_numpy(np.sqrt(sigma**2 + sigma_floor**2).astype(np.float32)),
           "scale": scale, "lens_params": np.asarray(arrays["lens_params"], dtype=float), "geometry": geometry,
           "attrs": attrs}
    if truth:
        hr = np.asarray(arrays["high_res"], dtype=np.float32)
        if hr.shape[1:] != (f * n, f * n):
            raise ValueError(f"{path}: 'high_res' must be (N, {f * n}, {f * n}), got {hr.shape}")
        out["high_res"] = torch.from_numpy(hr * (f**2 / scale)[:, None, None])
    return out


def _lens_model(data: Mapping[str, Any], path: str | Path) -> str:
    model = data["attrs"].get("lens_model")
    if model is None:
        raise ValueError(f"{path}: the dataset has no 'lens_model' attribute")
    return str(model)


def _physics_inputs(sets: Sequence[Mapping[str, Any]], paths: Sequence[str | Path], cfg: Mapping[str, Any],
                    device: torch.device) -> tuple[list[SRLens], list[dict[str, torch.Tensor]]]:
    """The lenses of every row of ``sets`` (one list, train rows first) and per set ``i∘β`` and the χ²
    weights, computed once."""
    geometry = sets[0]["geometry"]
    cache = SRLensCache(geometry, device=device)
    lenses, extras, start = [], [], 0
    t0 = time.perf_counter()
    for data, path in zip(sets, paths):
        if data["geometry"] != geometry:
            raise ValueError(f"{path}: grids {data['geometry']} differ from the training set's {geometry}")
        rows = cache.for_rows(_lens_model(data, path), data["lens_params"])
        with torch.no_grad():
            src = torch.stack([lens.to_source(x.to(device)).cpu() for lens, x in zip(rows, data["low_res"])])
            weight = torch.stack([lens.weight(cfg.get("mask", False), cfg.get("magnification", False),
                                              cfg.get("max_magnification", 30.0)).cpu() for lens in rows])
        extras.append({"source": src.float(), "weight": weight.float(),
                       "index": torch.arange(start, start + len(rows))})
        lenses.extend(rows)
        start += len(rows)
    log.info("%d lens operators for %d images built in %.1f s", len(cache), len(lenses), time.perf_counter() - t0)
    return lenses, extras


# ------------------------------------------------------------------------------------------ training
def _device(cfg: Mapping[str, Any]) -> torch.device:
    return torch.device("cuda" if resolve_accelerator(str(cfg.get("accelerator", "auto"))) == "gpu" else "cpu")


def _finish(method: str, model: nn.Module, result, cfg: Mapping[str, Any], data: Mapping[str, Any], n_val: int,
            model_path: str | Path, metrics_path: str | Path, provenance: Mapping[str, Any] | None, started: float,
            seed: int, save) -> nn.Module:
    """Write the metrics table, save the model with its training summary and grid, return it (CPU, eval)."""
    model = model.cpu().eval()
    write_table(pd.DataFrame(result.rows, columns=list(METRIC_COLUMNS)), metrics_path, provenance)
    g: SRGeometry = data["geometry"]
    grid = {"low_res_num_pix": g.low_res_num_pix, "low_res_pixel_scale_arcsec": g.low_res_pixel_scale,
            "factor": g.factor, "psf": data["attrs"].get("psf"), "lens_model": data["attrs"].get("lens_model"),
            "supersampling": g.supersampling, "low_res_supersampling": g.low_res_supersampling}
    summary = {"method": method, "n_train": len(data["low_res"]), "n_val": n_val,
               "n_weights": sum(p.numel() for p in model.parameters()), "seed": int(seed),
               "accelerator": result.accelerator, "stages": result.stages, "best_checkpoint": result.best_checkpoint,
               "settings": {k: v for k, v in cfg.items() if k not in ("accelerator", "num_workers", "checkpoint_dir")},
               "seconds": round(time.perf_counter() - started, 2)}
    extra = {"method": method, "training": summary, "grid": grid}
    save(model, model_path, provenance=provenance, extra=extra)
    model.provenance, model.extra = dict(provenance or {}), extra
    log.info("saved %s (%.0f s)", model_path, summary["seconds"])
    return model


def _sisr_of(cfg: Mapping[str, Any], factor: int) -> SISR:
    return SISR(factor=factor, **cfg["sisr"])


def train_sisr(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None, model_path: str | Path,
               metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *, seed: int,
               provenance: Mapping[str, Any] | None = None, method: str = "supervised") -> SISR:
    """Train an SISR (``method`` ``supervised``: against the truth; ``lenssr_with_source``: against the
    re-lensed Sérsic fits) through ``cfg``'s stages and save it (:func:`~sourcelens.models.sisr.save_sisr`)
    with one metrics row per epoch and stage in ``metrics_path``."""
    if method not in ("supervised", "lenssr_with_source"):
        raise ValueError(f"train_sisr trains 'supervised' or 'lenssr_with_source', not {method!r}")
    started = time.perf_counter()
    cfg = sr_settings(method, cfg)
    supervised = method == "supervised"
    data = load_sr_set(train_path, cfg["sigma_floor"], truth=supervised)
    val = load_sr_set(val_path, cfg["sigma_floor"], truth=supervised)
    f = data["geometry"].factor
    if supervised:
        targets = [data["high_res"], val["high_res"]]
    else:
        targets = [_sersic_targets(d, p, cfg) for d, p in ((data, train_path), (val, val_path))]
    L.seed_everything(derived_seed(seed, "sr", method), workers=True, verbose=False)
    model = _sisr_of(cfg, f)

    def make_module(stage: Mapping[str, Any]) -> SISRModule:
        return SISRModule(model, loss=stage["loss"], learning_rate=cfg["learning_rate"],
                          lr_patience=cfg["lr_patience"], weight_decay=cfg["weight_decay"], augment=cfg["augment"])

    result = train_stages(make_module, TensorDataset(data["low_res"][:, None], targets[0][:, None]),
                          TensorDataset(val["low_res"][:, None], targets[1][:, None]), cfg,
                          Path(checkpoint_dir or cfg["checkpoint_dir"]), seed, metrics=METRIC_COLUMNS[3:],
                          labels=("loss",))
    return _finish(method, model, result, cfg, data, len(val["low_res"]), model_path, metrics_path, provenance,
                   started, seed, save_sisr)


def _fit_supersampling(data: Mapping[str, Any], cfg: Mapping[str, Any]) -> int:
    """Sub-pixels per high-res pixel of the with-source Sérsic fits: the config's, else the dataset's, else 2."""
    if cfg.get("supersampling") is not None:
        return int(cfg["supersampling"])
    return int(data["attrs"].get("supersampling", 2))


def _sersic_targets(data: Mapping[str, Any], path: str | Path, cfg: Mapping[str, Any]) -> torch.Tensor:
    """The re-lensed Sérsic fits of a set, normalised units (N, fn, fn)."""
    t0 = time.perf_counter()
    g: SRGeometry = data["geometry"]
    scale = data["scale"][:, None, None]
    lr, sigma = data["low_res"].numpy() * scale, data["sigma"].numpy() * scale
    cache = SRLensCache(g)
    src = np.stack([lens.to_source(x).numpy() for lens, x in
                    zip(cache.for_rows(_lens_model(data, path), data["lens_params"]), data["low_res"])])
    image, _ = sersic_relensed(g, data["attrs"].get("psf"), _lens_model(data, path), data["lens_params"], lr,
                               sigma, src, supersample=_fit_supersampling(data, cfg),
                               max_iter=int(cfg["sersic_max_iter"]))
    log.info("%s: %d Sérsic fits re-lensed in %.1f s", path, len(lr), time.perf_counter() - t0)
    return torch.from_numpy((image * g.factor**2 / scale).astype(np.float32))


def train_lenssr(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
                 model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
                 seed: int, provenance: Mapping[str, Any] | None = None, variant: str = "no_source") -> nn.Module:
    """Train LensSR ``variant`` ``no_source`` (:class:`LensSRNoSource`, saved by
    :func:`~sourcelens.models.lenssr.save_lenssr`) or ``with_source`` (an SISR, :func:`train_sisr`)."""
    if variant == "with_source":
        return train_sisr(train_path, val_path, cfg, model_path, metrics_path, checkpoint_dir, seed=seed,
                          provenance=provenance, method="lenssr_with_source")
    if variant != "no_source":
        raise ValueError(f"unknown LensSR variant {variant!r}; expected no_source or with_source")
    started = time.perf_counter()
    cfg = sr_settings("lenssr_no_source", cfg)
    data, val = (load_sr_set(p, cfg["sigma_floor"]) for p in (train_path, val_path))
    lenses, (xt, xv) = _physics_inputs([data, val], [train_path, val_path], cfg, _device(cfg))
    L.seed_everything(derived_seed(seed, "sr", "lenssr_no_source"), workers=True, verbose=False)
    model = LensSRNoSource(factor=data["geometry"].factor, sisr=cfg["sisr"])

    def make_module(stage: Mapping[str, Any]) -> LensSRModule:
        return LensSRModule(model, lenses, loss=stage["loss"], lens_weight=cfg["lens_weight"],
                            learning_rate=cfg["learning_rate"], lr_patience=cfg["lr_patience"],
                            weight_decay=cfg["weight_decay"], interpolation=cfg["interpolation"])

    result = train_stages(make_module,
                          TensorDataset(data["low_res"], data["sigma"], xt["source"], xt["index"]),
                          TensorDataset(val["low_res"], val["sigma"], xv["source"], xv["index"]), cfg,
                          Path(checkpoint_dir or cfg["checkpoint_dir"]), seed, metrics=METRIC_COLUMNS[3:],
                          labels=("loss",))
    return _finish("lenssr_no_source", model, result, cfg, data, len(val["low_res"]), model_path, metrics_path,
                   provenance, started, seed, save_lenssr)


def train_pisr(train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None, model_path: str | Path,
               metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *, seed: int,
               provenance: Mapping[str, Any] | None = None) -> PISR:
    """Train PISR (unsupervised: the high-resolution truth is never read) through ``cfg``'s stages and save it
    (:func:`~sourcelens.models.pisr.save_pisr`)."""
    started = time.perf_counter()
    cfg = sr_settings("pisr", cfg)
    data, val = (load_sr_set(p, cfg["sigma_floor"]) for p in (train_path, val_path))
    lenses, (xt, xv) = _physics_inputs([data, val], [train_path, val_path], cfg, _device(cfg))
    L.seed_everything(derived_seed(seed, "sr", "pisr"), workers=True, verbose=False)
    model = PISR(factor=data["geometry"].factor, network=cfg["network"], sisr=cfg["sisr"], unet=cfg["unet"],
                 interpolation=cfg["interpolation"], refine={**cfg["refine"], "sigma_floor": cfg["sigma_floor"]})

    def make_module(stage: Mapping[str, Any]) -> PISRModule:
        return PISRModule(model, lenses, loss=stage["loss"], tv_weight=cfg["tv_weight"],
                          learning_rate=cfg["learning_rate"], lr_patience=cfg["lr_patience"],
                          weight_decay=cfg["weight_decay"])

    def dataset(d, x):
        return TensorDataset(d["low_res"], d["sigma"], x["source"], x["weight"], x["index"])

    result = train_stages(make_module, dataset(data, xt), dataset(val, xv), cfg,
                          Path(checkpoint_dir or cfg["checkpoint_dir"]), seed, metrics=METRIC_COLUMNS[3:],
                          labels=("loss",))
    return _finish("pisr", model, result, cfg, data, len(val["low_res"]), model_path, metrics_path, provenance,
                   started, seed, save_pisr)


def train_sr(method: str, train_path: str | Path, val_path: str | Path, cfg: Mapping[str, Any] | None,
             model_path: str | Path, metrics_path: str | Path, checkpoint_dir: str | Path | None = None, *,
             seed: int, provenance: Mapping[str, Any] | None = None) -> nn.Module:
    """Train one of :data:`SR_METHODS` (the entry point for a ``train_sr[method]`` rule)."""
    kw = {"seed": seed, "provenance": provenance}
    args = (train_path, val_path, cfg, model_path, metrics_path, checkpoint_dir)
    if method in ("supervised", "lenssr_with_source"):
        return train_sisr(*args, method=method, **kw)
    if method == "lenssr_no_source":
        return train_lenssr(*args, variant="no_source", **kw)
    if method == "pisr":
        return train_pisr(*args, **kw)
    raise ValueError(f"unknown super-resolution method {method!r}; expected one of {SR_METHODS}")
