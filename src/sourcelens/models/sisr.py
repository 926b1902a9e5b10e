"""Single-image super-resolution (SISR) after study 001: a low-resolution image in, the ``factor``× finer image
out.

Architecture (the study's ``SISR``): a 3×3 convolution to ``width`` channels and ReLU; ``depth`` residual blocks
[3×3 convolution, ReLU, 5×5 convolution, ReLU, + input]; a 9×9 convolution plus the global skip from the first
features; per ×2 (or one ×``factor`` when it is not a power of 2) a 3×3 convolution to ``width·r²`` channels,
PixelShuffle(r) and ReLU; a 3×3 convolution to one channel. Departures, each switchable: ``batch_norm`` (the
study normalised after every convolution; off by default: SR networks do better without (EDSR), and it makes a
physics-trained model behave differently in training and evaluation); the study's final sigmoid is dropped
(its images were min-max normalised to [0, 1]; ours are in flux units with noise below zero).

``skip``: ``"bicubic"`` (default) adds the network's output to the bicubic upsampling of its input and starts
from a zero last layer, so the untrained network *is* bicubic upsampling and learns only the correction
(denoising, sharper arcs): bicubic already reproduces the noiseless truth of smooth sources to ~55 dB, and a
method must not fall below it on noiseless data. ``"none"`` is the study's network, which must learn the
upsampling itself: its bicubic-pretraining stage (``train.sr``, loss ``bicubic``) teaches it.

Units: input and output in normalised surface-brightness units (:mod:`sourcelens.lensing.superres`): the
low-resolution image (flux per pixel) divided by its :func:`~.common.lensed_image_scale` ``c``; an output
value ``v`` is ``v·c/f²`` flux per high-resolution pixel (:func:`super_resolve` does the conversions).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .common import best_device, lensed_image_scale, load_payload, run_batches, save_payload, state_from

__all__ = ["SISR", "SKIPS", "upsample_bicubic", "bicubic_super_resolve", "super_resolve", "save_sisr",
           "load_sisr"]

FORMAT = "sourcelens-sisr-1"
SKIPS = ("bicubic", "none")


def upsample_bicubic(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling (…, H, W) → (…, fH, fW) of intensive values (surface brightness, normalised units):
    torch's Keys kernel (a = −0.75) with pixel centres aligned as the centred grids of one field are."""
    lead, (h, w) = images.shape[:-2], images.shape[-2:]
    out = F.interpolate(images.reshape(-1, 1, h, w), scale_factor=factor, mode="bicubic", align_corners=False)
    return out.reshape(*lead, h * factor, w * factor)


def bicubic_super_resolve(low_res: np.ndarray, factor: int) -> np.ndarray:
    """The bicubic baseline: low-resolution images (N, n, n), flux per pixel, to (N, fn, fn) flux per
    high-resolution pixel (the values upsampled, divided by f²)."""
    x = torch.as_tensor(np.asarray(low_res, dtype=np.float32))
    return (upsample_bicubic(x, factor) / factor**2).numpy()


def _conv(c_in: int, c_out: int, k: int, batch_norm: bool) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2)] + ([nn.BatchNorm2d(c_out)] if batch_norm else [])


class _Residual(nn.Module):
    def __init__(self, width: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(*_conv(width, width, 3, batch_norm), nn.ReLU(),
                                  *_conv(width, width, 5, batch_norm), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _shuffle_steps(factor: int) -> list[int]:
    """Upscaling steps: ×2 repeatedly for a power of 2, else one ×factor."""
    if factor < 2:
        raise ValueError(f"the super-resolution factor must be at least 2, got {factor}")
    n = int(round(math.log2(factor)))
    return [2] * n if 2**n == factor else [factor]


class SISR(nn.Module):
    """SISR network (module docstring) from (B, 1, n, n) to (B, 1, fn, fn), normalised units."""

    def __init__(self, factor: int = 2, width: int = 32, depth: int = 4, skip: str = "bicubic",
                 batch_norm: bool = False):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"unknown SISR skip {skip!r}; expected one of {SKIPS}")
        if width < 1 or depth < 0:
            raise ValueError(f"SISR width must be ≥ 1 and depth ≥ 0, got {width}, {depth}")
        self.hparams = {"factor": int(factor), "width": int(width), "depth": int(depth), "skip": skip,
                        "batch_norm": bool(batch_norm)}
        self.factor, self.skip = int(factor), skip
        self.head = nn.Sequential(*_conv(1, width, 3, batch_norm), nn.ReLU())
        self.blocks = nn.Sequential(*(_Residual(width, batch_norm) for _ in range(depth)))
        self.merge = nn.Conv2d(width, width, 9, padding=4)
        self.upscale = nn.Sequential(*(m for r in _shuffle_steps(self.factor)
                                       for m in (nn.Conv2d(width, width * r * r, 3, padding=1), nn.PixelShuffle(r),
                                                 nn.ReLU())))
        self.tail = nn.Conv2d(width, 1, 3, padding=1)
        if skip == "bicubic":
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        out = self.tail(self.upscale(self.merge(self.blocks(features)) + features))
        return out + upsample_bicubic(x, self.factor) if self.skip == "bicubic" else out


def super_resolve(model: nn.Module, low_res: np.ndarray, batch_size: int = 64,
                  device: torch.device | None = None) -> np.ndarray:
    """High-resolution images (N, fn, fn), flux per high-resolution pixel, of low-resolution images (N, n, n),
    flux per pixel, by a network mapping normalised (B, 1, n, n) to (B, 1, fn, fn) (:class:`SISR`)."""
    low_res = np.asarray(low_res, dtype=np.float32)
    if low_res.ndim != 3:
        raise ValueError(f"low-resolution images must be (N, n, n), got {low_res.shape}")
    f = int(model.hparams["factor"])
    device = device or best_device()
    model = model.to(device).eval()
    scale = lensed_image_scale(low_res)
    parts = run_batches(lambda b: model(b[:, None])[:, 0].cpu().numpy(), low_res / scale[:, None, None],
                        batch_size, device)
    out = np.concatenate(parts) if parts else np.zeros((0, f * low_res.shape[1], f * low_res.shape[2]), np.float32)
    return out * (scale / f**2)[:, None, None]


def save_sisr(model: SISR, path: str | Path, provenance: Mapping[str, Any] | None = None,
              extra: Mapping[str, Any] | None = None) -> Path:
    """Save the SISR network (weights, architecture, ``extra`` records) atomically."""
    return save_payload(path, FORMAT, model, provenance=dict(provenance or {}), extra=dict(extra or {}))


def load_sisr(path: str | Path, map_location: str | torch.device = "cpu") -> SISR:
    """An SISR network saved by :func:`save_sisr`, in eval mode; errors name the file."""
    payload = load_payload(path, FORMAT, "SISR super-resolution", map_location)
    return state_from(SISR(**payload["hparams"]), payload)
