"""Lens-parameter CNN (study 002): a lensed image in, the 8 lens parameters out, each with an uncertainty.

Two backbones (``arch``):

``study``   the study's network: three blocks of [3×3 convolution, 2×2 max-pool, batch norm, ReLU], then a
            dense ReLU layer and a linear output.
``resnet``  (default) a small ResNet: a 5×5 stride-2 stem, one stage of ``blocks`` basic residual blocks per width
            (stride 2 from the second stage on), an average pool to 4×4 (positions matter here), a dense ReLU layer and a linear output;
            two coordinate channels (x, y across the field, −1…1) are appended to the image, so that positions
            (the lens centre) need not be inferred from the zero padding.

Heteroscedastic head: the output is a mean and a log-variance per parameter, in units standardised with the
training set's mean and standard deviation (buffers ``target_mean``, ``target_std``, saved with the model);
``sigma_scale`` (per parameter, set by calibration on the validation set) multiplies the predicted standard
deviations. Inputs are lensed images divided by :func:`~sourcelens.models.common.lensed_image_scale`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..names import LENS_PARAMETERS
from .common import best_device, load_payload, model_inputs, run_batches, save_payload, state_from

__all__ = ["CNN_ARCHS", "LensCNN", "save_cnn", "load_cnn", "predict_lens_params"]

CNN_ARCHS = ("resnet", "study")
FORMAT = "sourcelens-lens-cnn-1"


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Identity() if c_in == c_out and stride == 1 else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.skip(x))


def stage_blocks(blocks: int | Sequence[int], n_stages: int) -> list[int]:
    """Residual blocks of each of ``n_stages`` stages: one number for all, or one per stage (each ≥ 1)."""
    per_stage = [int(blocks)] * n_stages if isinstance(blocks, (int, np.integer)) else [int(b) for b in blocks]
    if len(per_stage) != n_stages or min(per_stage) < 1:
        raise ValueError(f"blocks must be a number ≥ 1 or one such number per width ({n_stages}); got {blocks!r}")
    return per_stage


def _resnet(widths: Sequence[int], in_channels: int, blocks: int | Sequence[int] = 2, pool: int = 4
            ) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                               nn.ReLU()]
    c = widths[0]
    for i, (w, n) in enumerate(zip(widths, stage_blocks(blocks, len(widths)))):
        layers += [_Residual(c, w, 1 if i == 0 else 2)] + [_Residual(w, w, 1) for _ in range(n - 1)]
        c = w
    layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]      # a 4x4 map kept: positions matter here
    return nn.Sequential(*layers), pool * pool * c


def _study(widths: Sequence[int], in_channels: int, image_size: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c * (image_size // 2 ** len(widths)) ** 2


class LensCNN(nn.Module):
    """Lens-parameter regression with uncertainties (see the module docstring).

    ``forward(x)`` with x (B, 1, S, S) normalised images gives (mean, log_var), each (B, n_params), in
    standardised units; :meth:`physical` turns them into parameters and standard deviations in the
    parameters' units (arcsec for θE and the centre), calibration included.
    """

    def __init__(self, image_size: int = 64, arch: str = "resnet", widths: Sequence[int] = (32, 64, 128, 256),
                 dense: int = 256, n_params: int = len(LENS_PARAMETERS), blocks: int | Sequence[int] = 2):
        super().__init__()
        if arch not in CNN_ARCHS:
            raise ValueError(f"unknown CNN architecture {arch!r}; expected one of {CNN_ARCHS}")
        if arch == "study" and image_size % 2 ** len(widths):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{len(widths)} (one max-pool a block)")
        self.hparams = {"image_size": int(image_size), "arch": arch, "widths": [int(w) for w in widths],
                        "dense": int(dense), "n_params": int(n_params),
                        "blocks": stage_blocks(blocks, len(widths))}
        self.coords = arch == "resnet"
        backbone, flat = (_resnet(widths, 3, blocks) if self.coords else _study(widths, 1, image_size))
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(flat, dense), nn.ReLU(), nn.Linear(dense, 2 * n_params))
        self.n_params = int(n_params)
        self.register_buffer("target_mean", torch.zeros(n_params))
        self.register_buffer("target_std", torch.ones(n_params))
        self.register_buffer("sigma_scale", torch.ones(n_params))
        self.param_names = list(LENS_PARAMETERS)[:n_params]

    def _with_coords(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.cat([x, gx.expand(b, 1, h, w), gy.expand(b, 1, h, w)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.backbone(self._with_coords(x) if self.coords else x))
        mean, log_var = out[:, : self.n_params], out[:, self.n_params:]
        return mean, log_var.clamp(-12.0, 8.0)

    def standardise(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self.target_mean) / self.target_std

    def physical(self, mean: torch.Tensor, log_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameters, 1σ uncertainties) in the parameters' units from standardised network outputs."""
        sigma = torch.exp(0.5 * log_var) * self.sigma_scale * self.target_std
        return mean * self.target_std + self.target_mean, sigma


def save_cnn(model: LensCNN, path: str | Path, provenance: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> Path:
    """Save the CNN (weights, architecture, standardisation, calibration) with its provenance, atomically."""
    return save_payload(path, FORMAT, model, provenance=dict(provenance or {}), extra=dict(extra or {}),
                        param_names=list(model.param_names))


def load_cnn(path: str | Path, map_location: str | torch.device = "cpu") -> LensCNN:
    """A CNN saved by :func:`save_cnn`, in eval mode; errors name the file."""
    payload = load_payload(path, FORMAT, "lens-parameter CNN", map_location)
    return state_from(LensCNN(**payload["hparams"]), payload)


def predict_lens_params(model: LensCNN, images: np.ndarray, batch_size: int = 256,
                        device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lens parameters and their 1σ uncertainties (N, 8) of lensed images (N, S, S), any flux units."""
    size = model.hparams["image_size"]
    x = model_inputs(images, size)
    device = device or best_device()
    model = model.to(device).eval()

    def one(batch: torch.Tensor):
        mean, sigma = model.physical(*model(batch[:, None]))
        return mean.cpu().numpy(), sigma.cpu().numpy()

    parts = run_batches(one, x, batch_size, device)
    if not parts:
        empty = np.zeros((0, model.n_params), np.float32)
        return empty, empty.copy()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
