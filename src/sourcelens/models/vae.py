"""Variational autoencoder of galaxy images (study 000): a 64×64 galaxy in 64 latents.

Encoder: 4×4 stride-2 convolutions (64→128→256→512 channels in the study) with batch norm and
LeakyReLU(0.2), then linear maps to the latent mean and log-variance. Decoder: a linear map back
to the smallest feature map and mirrored 4×4 stride-2 transposed convolutions, with a softplus
output (non-negative surface brightness). The decoder alone is a differentiable galaxy model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))


class VAE(nn.Module):
    """Convolutional VAE for ``in_channels``×``image_size``×``image_size`` galaxy stamps.

    ``encode(x) -> (mu, logvar)``, ``decode(z) -> image``, ``forward(x) -> (reconstruction, mu, logvar)``
    (the reconstruction decodes a reparameterised sample in training mode and the mean in eval mode).
    ``reference_latents`` (K, latent_dim) or None: encoder means of a fixed sample of the training stamps
    (set by :func:`sourcelens.train.train_vae`, saved with the model): where the decoder is used, so
    that decoder fits can be preconditioned without looking at the batch being fitted;
    ``reference_metrics``: the decoder's metric there (:func:`sourcelens.fit.decoder.reference_metric`).
    """

    def __init__(self, image_size: int = 64, latent_dim: int = 64,
                 widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 1):
        super().__init__()
        n_down = len(widths)
        if image_size % (2**n_down) != 0:
            raise ValueError(f"image_size {image_size} must be divisible by 2**{n_down} (one halving per width)")
        self.hparams = {"image_size": int(image_size), "latent_dim": int(latent_dim),
                        "widths": [int(w) for w in widths], "in_channels": int(in_channels)}
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self._bottom = image_size // 2**n_down
        chans = [in_channels, *widths]
        self.encoder = nn.Sequential(*[_down(chans[i], chans[i + 1]) for i in range(n_down)])
        flat = widths[-1] * self._bottom**2
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        rev = list(widths[::-1])
        self.decoder = nn.Sequential(*[_up(rev[i], rev[i + 1]) for i in range(n_down - 1)])
        self.to_image = nn.ConvTranspose2d(rev[-1], in_channels, 4, stride=2, padding=1)
        self.reference_latents: torch.Tensor | None = None
        self.reference_metrics: dict = {}   # filled by sourcelens.fit.decoder.reference_metric

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance of images ``x`` (B, C, H, W)."""
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h).clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), non-negative, from latents ``z`` (B, latent_dim)."""
        h = self.from_latent(z).view(-1, self.hparams["widths"][-1], self._bottom, self._bottom)
        return F.softplus(self.to_image(self.decoder(F.leaky_relu(h, 0.2))))

    def fused_decoder(self) -> "FusedDecoder":
        """A frozen copy of the decoder for repeated evaluation (fits): see :class:`FusedDecoder`."""
        return FusedDecoder(self)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, 1)) per object, summed over latents."""
        return -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)


def _phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weight (C_in, C_out, 4, 4) of a stride-2, padding-1 transposed convolution → the weight
    (4·C_out, C_in, 3, 3) of a padding-1 convolution on the same input whose channel 4c + 2a + b is
    the output phase (row parity a, column parity b) of channel c, ready for ``pixel_shuffle(·, 2)``.
    Output pixel 2m + a takes input m − 1 + a and m + a through the kernel taps (3, 1) for a = 0 and
    (2, 0) for a = 1; the other 3×3 taps are zero."""
    c_in, c_out = weight.shape[:2]
    taps = ((3, 1), (2, 0))
    out = weight.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for a in (0, 1):
        for b in (0, 1):
            for i, ti in enumerate(taps[a]):
                for j, tj in enumerate(taps[b]):
                    out[:, a, b, :, a + i, b + j] = weight[:, :, ti, tj].T
    return out.reshape(4 * c_out, c_in, 3, 3).contiguous()


class FusedDecoder(nn.Module):
    """The decoder of a :class:`VAE` in eval mode, rearranged for fast repeated evaluation.

    The same function as ``vae.eval().decode`` (to float rounding) with: batch norm folded into the
    transposed convolutions (scale and bias), channels-last feature maps, and the last transposed
    convolution (few output channels, which the generic kernel computes slowly) written as a 3×3
    convolution giving its four output phases on the input grid, interleaved by ``pixel_shuffle``.
    Weights are buffers copied from ``vae`` at construction: no weight gradients, and later training
    of ``vae`` does not reach them. On a CPU a decoder forward and backward pass costs about half
    that of ``vae.decode`` (``benchmarks/fitting.py``).
    """

    def __init__(self, vae: VAE):
        super().__init__()
        self.latent_dim, self.image_size = vae.latent_dim, vae.image_size
        self._bottom, self._width = vae._bottom, vae.hparams["widths"][-1]
        with torch.no_grad():
            self.register_buffer("latent_weight", vae.from_latent.weight.detach().clone())
            self.register_buffer("latent_bias", vae.from_latent.bias.detach().clone())
            self._n_up = len(vae.decoder)
            for i, (conv, bn, _) in enumerate(vae.decoder):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                self.register_buffer(f"up{i}_weight", (conv.weight * scale[None, :, None, None]).contiguous())
                self.register_buffer(f"up{i}_bias", (bn.bias - bn.running_mean * scale).contiguous())
            self.register_buffer("out_weight", _phase_weight(vae.to_image.weight.detach()))
            self.register_buffer("out_bias", vae.to_image.bias.detach().repeat_interleave(4).clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), non-negative, from latents ``z`` (B, latent_dim)."""
        h = F.linear(z, self.latent_weight, self.latent_bias).view(-1, self._width, self._bottom, self._bottom)
        h = F.leaky_relu(h, 0.2).contiguous(memory_format=torch.channels_last)
        for i in range(self._n_up):
            h = F.conv_transpose2d(h, getattr(self, f"up{i}_weight"), getattr(self, f"up{i}_bias"),
                                   stride=2, padding=1)
            h = F.leaky_relu(h, 0.2)
        return F.softplus(F.pixel_shuffle(F.conv2d(h, self.out_weight, self.out_bias, padding=1), 2))

    decode = forward


def save_vae(model: VAE, path: str | Path, provenance: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> Path:
    """Save weights, architecture, reference latents and provenance to one file (written atomically)."""
    from ..io import atomic_path

    path = Path(path)
    reference = getattr(model, "reference_latents", None)
    payload = {"format": "sourcelens-vae-1", "hparams": model.hparams, "state_dict": model.state_dict(),
               "provenance": dict(provenance or {}), "extra": dict(extra or {}),
               "reference_latents": None if reference is None else reference.detach().cpu().clone(),
               "reference_metrics": dict(getattr(model, "reference_metrics", {}))}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_vae(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """Load a VAE saved by :func:`save_vae`, in eval mode; raises naming the file if it is not one."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != "sourcelens-vae-1":
        raise ValueError(f"'{path}' is not a sourcelens VAE model file (saved by sourcelens.models.save_vae)")
    model = VAE(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    reference = payload.get("reference_latents")   # absent from files written before it existed
    model.reference_latents = None if reference is None else torch.as_tensor(reference, dtype=torch.float32)
    model.reference_metrics = dict(payload.get("reference_metrics") or {})
    model.provenance = payload.get("provenance", {})
    model.extra = payload.get("extra", {})
    return model.eval()


class frozen:
    """Context: ``module`` in eval mode with no weight gradients; restores both on exit."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        self.training = self.module.training
        self.flags = [p.requires_grad for p in self.module.parameters()]
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc) -> None:
        for p, flag in zip(self.module.parameters(), self.flags):
            p.requires_grad_(flag)
        self.module.train(self.training)


def encode_images(vae: VAE, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent means and log-variances (N, latent_dim) of images (N, H, W), in batches, no gradients."""
    images = np.asarray(images, dtype=np.float32)
    mus, logvars = [], []
    with frozen(vae), torch.no_grad():
        dev = next(vae.parameters()).device
        for start in range(0, len(images), batch_size):
            mu, logvar = vae.encode(torch.as_tensor(images[start:start + batch_size][:, None], device=dev))
            mus.append(mu.cpu().numpy())
            logvars.append(logvar.cpu().numpy())
    if not mus:
        empty = np.zeros((0, vae.latent_dim), np.float32)
        return empty, empty.copy()
    return np.concatenate(mus), np.concatenate(logvars)


def decode_latents(vae: VAE, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Decoded images (N, H, W) of latents (N, latent_dim), in batches, no gradients."""
    z = np.asarray(z, dtype=np.float32)
    out = []
    with frozen(vae), torch.no_grad():
        dev = next(vae.parameters()).device
        for start in range(0, len(z), batch_size):
            out.append(vae.decode(torch.as_tensor(z[start:start + batch_size], device=dev))[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, vae.image_size, vae.image_size), np.float32)


def reconstruct(vae: VAE, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The VAE's reconstructions (N, H, W) of images (decoder of the encoder mean) and the latent means."""
    mu, _ = encode_images(vae, images, batch_size)
    return decode_latents(vae, mu, batch_size), mu
