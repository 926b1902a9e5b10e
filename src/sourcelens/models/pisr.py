"""Physics-informed unsupervised super-resolution (PISR, study 004).

A network ``f`` maps the backward-lensed low-resolution image ``s = i∘β`` (exact overlaps onto the input source
grid, :meth:`sourcelens.lensing.SRLens.to_source`) to a high-resolution source ``ŝ = f(s)`` on the datasets'
``source_high_res`` grid; the model of the data is ``F = D(P ∗ (ŝ∘θ))`` (:meth:`SRLens.forward`) and the loss

    L = χ²/pixel(F, i; σ, w) + λ_TV · TV(ŝ)

with the noise map σ, pixel weights ``w`` (ones, × the convergence mask and/or × the magnification map) and the
χ² normalised by Σw so that it is ≈ 1 per pixel at the noise level (:func:`sourcelens.lensing.chi2_per_pixel`).
The lens is known (the dataset's). The high-resolution truth is never used. The super-resolved image is
``P ∗ (ŝ∘θ)``, on the truth's convention (PSF-convolved, noiseless).

``ŝ∘θ`` (``interpolation``, :class:`~sourcelens.lensing.SRLens`): ``"overlap"``, the exact overlap of a
piecewise-constant source (study 004's operator), or ``"bilinear"``, the source interpolated at the pixels'
sub-samples as the datasets were rendered. With the true source, ``overlap`` reproduces the noiseless
high-resolution truth to 40 dB on Model_I (point-sampled) and 52 dB on the real-galaxy set; ``bilinear`` to 58 and
57 dB: the overlap's blocky lensed cells, not the network, cap PISR on noiseless data.

Inference given the images' noise (:func:`pisr_super_resolve` with ``noise_sigma``): ``f``'s source is the start
of a per-image refinement on the same loss, stopped once the image explains its data to the noise
(:func:`refine_sources`) — the network amortises the fit, the data finish it.

``f`` (``network``): ``"sisr"`` — :class:`~.sisr.SISR` (×factor, bicubic skip by default) — or ``"unet"`` —
:class:`SourceUNet`, bicubic upsampling of ``s`` then a :class:`~.unet.UNet` residual. Units: normalised
surface brightness (:mod:`sourcelens.lensing.superres`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..lensing.superres import INTERPOLATIONS, SRLens, chi2_per_pixel, total_variation
from .common import lensed_image_scale, load_payload, save_payload, state_from
from .sisr import SISR, upsample_bicubic
from .unet import UNet

__all__ = ["NETWORKS", "REFINE", "SourceUNet", "PISR", "source_network", "pisr_forward", "pisr_loss",
           "refine_sources", "pisr_super_resolve", "save_pisr", "load_pisr"]

FORMAT = "sourcelens-pisr-1"
NETWORKS = ("sisr", "unet")
#: Default source refinement at inference (:func:`refine_sources`; the training config's ``pisr.refine``).
REFINE = {"steps": 100, "learning_rate": 1e-3, "tv_weight": 0.0, "sigma_floor": 1e-3}


class SourceUNet(nn.Module):
    """Bicubic ×``factor`` upsampling plus a :class:`UNet` residual (zero-initialised output, so it starts as
    bicubic); the upsampled image is zero-padded to a multiple of 2^(len(widths) − 1) and cropped back."""

    def __init__(self, factor: int = 2, widths: Sequence[int] = (16, 32)):
        super().__init__()
        self.factor, self.multiple = int(factor), 2 ** (len(widths) - 1)
        self.hparams = {"factor": self.factor, "widths": [int(w) for w in widths]}
        self.unet = UNet(image_size=self.multiple, widths=widths)
        nn.init.zeros_(self.unet.out.weight)
        nn.init.zeros_(self.unet.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = upsample_bicubic(x, self.factor)
        h, w = up.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        out = self.unet(F.pad(up, (0, pw, 0, ph)))[..., :h, :w]
        return up + out


def source_network(network: str, factor: int, sisr: Mapping[str, Any] | None = None,
                   unet: Mapping[str, Any] | None = None) -> nn.Module:
    """``f`` of PISR: an :class:`SISR` (keywords ``sisr``) or a :class:`SourceUNet` (keywords ``unet``)."""
    if network == "sisr":
        return SISR(factor=factor, **dict(sisr or {}))
    if network == "unet":
        return SourceUNet(factor=factor, **dict(unet or {}))
    raise ValueError(f"unknown PISR network {network!r}; expected one of {NETWORKS}")


class PISR(nn.Module):
    """The PISR network ``f`` (module docstring): (B, 1, n, n) backward-lensed sources to (B, 1, fn, fn)
    high-resolution sources, normalised units."""

    def __init__(self, factor: int = 2, network: str = "sisr", sisr: Mapping[str, Any] | None = None,
                 unet: Mapping[str, Any] | None = None, interpolation: str = "bilinear",
                 refine: Mapping[str, Any] | None = None):
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown PISR interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")
        self.f = source_network(network, factor, sisr, unet)
        self.interpolation = interpolation
        #: the source refinement of inference given the noise (:func:`refine_sources`): ``steps`` (0: none),
        #: ``learning_rate``, ``tv_weight``, ``sigma_floor`` (normalised units, as in training)
        self.refine = {**REFINE, **dict(refine or {})}
        self.hparams = {"factor": int(factor), "network": network, "sisr": dict(sisr or {}),
                        "unet": dict(unet or {}), "interpolation": interpolation, "refine": dict(self.refine)}

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.f(source)


def pisr_forward(model: nn.Module, lenses: Sequence[SRLens], low_res: torch.Tensor,
                 source: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """PISR on a batch of normalised low-resolution images (B, n, n), one :class:`SRLens` per image:
    ``source_low_res`` (``i∘β``; given as ``source`` when precomputed), ``source`` ``ŝ`` (B, fn, fn),
    ``high_res`` ``P ∗ (ŝ∘θ)`` (B, fn, fn) and ``model`` ``D(…)/f²`` (B, n, n), through the lens by the
    model's ``interpolation`` (:class:`SRLens`)."""
    if source is None:
        with torch.no_grad():
            source = torch.stack([lens.to_source(img) for lens, img in zip(lenses, low_res)])
    s_hat = model(source[:, None].to(low_res.dtype))[:, 0]
    interpolation = getattr(model, "interpolation", "bilinear")
    pairs = [lens(s.to(lens.dtype), interpolation) for lens, s in zip(lenses, s_hat)]
    high_res = torch.stack([p[0] for p in pairs]).to(s_hat.dtype)
    lr_model = torch.stack([p[1] for p in pairs]).to(s_hat.dtype)
    return {"source_low_res": source, "source": s_hat, "high_res": high_res, "model": lr_model}


def pisr_loss(out: Mapping[str, torch.Tensor], low_res: torch.Tensor, sigma: torch.Tensor,
              weight: torch.Tensor | None = None, tv_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """``loss`` = mean over the batch of χ²/pixel(model, data; σ, w) + ``tv_weight`` · TV(ŝ), with its parts
    ``chi2`` and ``tv`` (normalised units, module docstring)."""
    chi2 = chi2_per_pixel(low_res, out["model"], sigma, weight).mean()
    tv = total_variation(out["source"]).mean()
    return {"loss": chi2 + tv_weight * tv, "chi2": chi2, "tv": tv}


def refine_sources(source: torch.Tensor, lenses: Sequence[SRLens], low_res: torch.Tensor, sigma: torch.Tensor, *,
                   steps: int, learning_rate: float = 1e-3, tv_weight: float = 0.0, interpolation: str = "bilinear"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources (B, fn, fn) refined from ``f``'s output by Adam on the PISR loss of each image (χ²/pixel against
    the normalised data ``low_res`` with noise ``sigma`` + ``tv_weight`` · TV), image by image stopped once its
    χ²/pixel reaches 1 (the discrepancy principle: the source then explains its data to the noise, and going on
    would fit the noise) or after ``steps``. The network gives the start; the refinement recovers what a small
    network trained on a few images cannot, above all on noiseless data, where the data fix much more than the
    network learnt. Returns the sources and each image's last χ²/pixel."""
    src = source.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([src], lr=learning_rate)
    active = torch.ones(len(src), dtype=torch.bool)
    chi2 = torch.full((len(src),), float("inf"))
    for _ in range(int(steps)):
        opt.zero_grad()
        models = torch.stack([lens(s.to(lens.dtype), interpolation)[1] for lens, s in zip(lenses, src)]).to(src.dtype)
        per_image = chi2_per_pixel(low_res, models, sigma)
        chi2 = per_image.detach()
        active &= chi2 > 1
        if not active.any():
            break
        loss = ((per_image + tv_weight * total_variation(src)) * active).sum()
        loss.backward()
        kept = src.detach()[~active].clone()
        opt.step()
        with torch.no_grad():
            src[~active] = kept
    return src.detach(), chi2


def pisr_super_resolve(model: nn.Module, lenses: Sequence[SRLens], low_res: np.ndarray, batch_size: int = 16,
                       noise_sigma: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Super-resolved images (N, fn, fn), flux per high-resolution pixel, and sources (N, fn, fn), flux per
    high-resolution source cell, of low-resolution images (N, n, n), flux per pixel, seen through ``lenses``
    (one per image). Given the images' ``noise_sigma`` (per pixel or one number, their units; 0: noiseless), the
    sources are refined on their data (:func:`refine_sources`, the model's ``refine`` settings)."""
    low_res = np.asarray(low_res, dtype=np.float32)
    if low_res.ndim != 3 or len(lenses) != len(low_res):
        raise ValueError(f"need (N, n, n) images and one lens each, got {low_res.shape} and {len(lenses)} lenses")
    f = int(model.hparams["factor"])
    scale = lensed_image_scale(low_res)
    model = model.cpu().eval()
    refine = model.refine
    if noise_sigma is not None:
        sigma_all = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float32), low_res.shape) / scale[:, None, None]
        sigma_all = np.sqrt(sigma_all**2 + float(refine["sigma_floor"]) ** 2)
    images, sources = [], []
    for i in range(0, len(low_res), batch_size):
        x = torch.as_tensor(low_res[i:i + batch_size] / scale[i:i + batch_size, None, None])
        batch = lenses[i:i + batch_size]
        with torch.no_grad():
            out = pisr_forward(model, batch, x)
        src = out["source"]
        if noise_sigma is not None and int(refine["steps"]) > 0:
            src, _ = refine_sources(src, batch, x, torch.as_tensor(sigma_all[i:i + batch_size]),
                                    steps=int(refine["steps"]), learning_rate=float(refine["learning_rate"]),
                                    tv_weight=float(refine["tv_weight"]),
                                    interpolation=model.interpolation)
            with torch.no_grad():
                high_res = torch.stack([lens.image(s.to(lens.dtype), model.interpolation)
                                        for lens, s in zip(batch, src)]).to(src.dtype)
        else:
            high_res = out["high_res"]
        images.append(high_res.numpy())
        sources.append(src.numpy())
    k = (scale / f**2)[:, None, None]
    shape = (0, f * low_res.shape[1], f * low_res.shape[2])
    return ((np.concatenate(images) if images else np.zeros(shape, np.float32)) * k,
            (np.concatenate(sources) if sources else np.zeros(shape, np.float32)) * k)


def save_pisr(model: PISR, path: str | Path, provenance: Mapping[str, Any] | None = None,
              extra: Mapping[str, Any] | None = None) -> Path:
    """Save the PISR network (weights, architecture, ``extra``: the geometry and loss it was trained with)."""
    return save_payload(path, FORMAT, model, provenance=dict(provenance or {}), extra=dict(extra or {}))


def load_pisr(path: str | Path, map_location: str | torch.device = "cpu") -> PISR:
    """A PISR network saved by :func:`save_pisr`, in eval mode; errors name the file."""
    payload = load_payload(path, FORMAT, "PISR super-resolution", map_location)
    # files saved before the choice of interpolation lensed by exact overlaps
    return state_from(PISR(**{"interpolation": "overlap", "refine": {"steps": 0}, **payload["hparams"]}), payload)
