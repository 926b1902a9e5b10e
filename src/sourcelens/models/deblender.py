"""Multi-band β-VAE and latent-space deblender (study 003, Arcelin et al. 2020).

Both networks see a stack of ``bands`` images (B, bands, 64, 64) in the study's normalisation
tanh(arcsinh(x / (I_b / 2.5))) (:func:`sourcelens.blends.normalise`, one scale I_b per band, kept in the model
file), and give the noiseless central galaxy in the same normalisation.

:class:`BandVAE` (after the study's ``tools_for_VAE/model.py``):

- encoder: per width w, a 3×3 convolution + PReLU then a 3×3 stride-2 convolution + PReLU (the image is halved
  once per width), a dense layer of ``hidden_dim`` + PReLU, and linear maps to the latent mean and log-variance;
- decoder: a dense layer of ``hidden_dim`` + PReLU, a dense layer to the smallest feature map + PReLU, then per
  width (reversed) a 3×3 stride-2 transposed convolution + PReLU and a 3×3 convolution + PReLU, and a 3×3
  convolution to the bands with a sigmoid (the normalised noiseless images lie in [0, 1)).

:class:`Deblender`: an encoder of the same architecture (initialised from a trained VAE's encoder,
:meth:`Deblender.from_vae`) in front of the VAE's decoder, frozen (no gradients, never trained): a noisy blend in,
the latent code of the central galaxy, and its image through the decoder out. Deblending happens in latent space.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .common import best_device, load_payload, run_batches, save_payload, state_from

__all__ = ["BandEncoder", "BandDecoder", "BandVAE", "Deblender", "save_band_vae", "load_band_vae",
           "save_deblender", "load_deblender", "normalisation_of", "normalise_stack", "denormalise_stack",
           "reconstruct_bands", "deblend_images", "OUTPUT_CEILING", "INITIAL_LOGVAR"]

VAE_FORMAT = "sourcelens-band-vae-1"
DEBLENDER_FORMAT = "sourcelens-deblender-1"
OUTPUT_CEILING = 1.0 - 1e-4   # normalised outputs are clipped below 1 before denormalising (arctanh(1) = ∞)
INITIAL_LOGVAR = -8.0         # the encoder's initial log-variance: σ ≈ 0.02, the code's mean is what the decoder sees


def _conv_block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    pad = kernel // 2
    return [nn.Conv2d(c_in, c_out, kernel, padding=pad), nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, kernel, stride=2, padding=pad), nn.PReLU(c_out)]


def _deconv_block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    pad = kernel // 2
    return [nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=pad, output_padding=1), nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, kernel, padding=pad), nn.PReLU(c_out)]


class BandEncoder(nn.Module):
    """Images (B, bands, S, S) → latent mean and log-variance (B, latent_dim)."""

    def __init__(self, bands: int, image_size: int, widths: Sequence[int], latent_dim: int, hidden_dim: int,
                 kernel: int = 3):
        super().__init__()
        chans = [int(bands), *map(int, widths)]
        self.features = nn.Sequential(*[m for i in range(len(widths)) for m in _conv_block(chans[i], chans[i + 1],
                                                                                            kernel)])
        bottom = image_size // 2 ** len(widths)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * bottom**2, hidden_dim), nn.PReLU())
        self.to_mu = nn.Linear(hidden_dim, latent_dim)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(self.features(x))
        return self.to_mu(h), self.to_logvar(h).clamp(-20.0, 10.0)


class BandDecoder(nn.Module):
    """Latents (B, latent_dim) → normalised images (B, bands, S, S) in (0, 1)."""

    def __init__(self, bands: int, image_size: int, widths: Sequence[int], latent_dim: int, hidden_dim: int,
                 kernel: int = 3):
        super().__init__()
        self._width, self._bottom = int(widths[-1]), image_size // 2 ** len(widths)
        self.hidden = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.PReLU(),
                                    nn.Linear(hidden_dim, self._width * self._bottom**2), nn.PReLU())
        rev = [int(w) for w in widths[::-1]]
        chans = [rev[0], *rev]
        self.features = nn.Sequential(*[m for i in range(len(rev)) for m in _deconv_block(chans[i], chans[i + 1],
                                                                                          kernel)])
        self.to_image = nn.Conv2d(rev[-1], bands, kernel, padding=kernel // 2)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The output before the sigmoid (for a numerically safe binary cross-entropy)."""
        h = self.hidden(z).view(-1, self._width, self._bottom, self._bottom)
        return self.to_image(self.features(h))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


def _check_size(image_size: int, widths: Sequence[int]) -> None:
    if len(widths) < 1 or image_size % 2 ** len(widths):
        raise ValueError(f"image_size {image_size} must be divisible by 2**{len(widths)} (one halving per width)")


class BandVAE(nn.Module):
    """β-VAE of ``bands``-band galaxy stamps (see the module docstring). ``forward(x) -> (reconstruction, mu,
    logvar)``: the decoder of a reparameterised sample in training mode, of the mean in eval mode."""

    def __init__(self, bands: int = 6, image_size: int = 64, widths: Sequence[int] = (32, 64, 128, 256),
                 latent_dim: int = 32, hidden_dim: int = 256, kernel: int = 3):
        super().__init__()
        _check_size(image_size, widths)
        self.hparams = {"bands": int(bands), "image_size": int(image_size), "widths": [int(w) for w in widths],
                        "latent_dim": int(latent_dim), "hidden_dim": int(hidden_dim), "kernel": int(kernel)}
        self.latent_dim, self.image_size, self.bands = int(latent_dim), int(image_size), int(bands)
        self.encoder = BandEncoder(bands, image_size, widths, latent_dim, hidden_dim, kernel)
        self.decoder = BandDecoder(bands, image_size, widths, latent_dim, hidden_dim, kernel)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for the PReLU stack (its initial slope 0.25), zero biases, and a narrow initial
        posterior (log-variance :data:`INITIAL_LOGVAR`). Why: with PyTorch's default initialisation the signal of
        the latent code shrinks by ~3× per layer through the ~12 layers of the decoder, and the reparameterisation
        noise (σ = 1 at the start) swamps the code's mean: the output is the mean galaxy whatever the input, and
        the networks learn flux and size but never shapes (output ellipticities uncorrelated with the truth after
        tens of epochs, even on clean inputs); with this initialisation they follow the truth within a few
        epochs."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.encoder.to_logvar.weight.mul_(0.01)
            self.encoder.to_logvar.bias.fill_(INITIAL_LOGVAR)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    @staticmethod
    def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, 1)) per object, summed over latents."""
        return -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1)

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output logits, mu, logvar): :meth:`forward` before the output sigmoid."""
        mu, logvar = self.encoder(x)
        z = self.reparameterise(mu, logvar) if self.training else mu
        return self.decoder.logits(z), mu, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, mu, logvar = self.forward_logits(x)
        return torch.sigmoid(logits), mu, logvar


class Deblender(BandVAE):
    """A trainable :class:`BandEncoder` in front of a frozen :class:`BandDecoder` (a trained VAE's): noisy blend
    in, central galaxy out; ``forward`` as :meth:`BandVAE.forward`. The decoder's parameters never require
    gradients and it stays in eval mode whatever ``train()`` is called with."""

    def __init__(self, bands: int = 6, image_size: int = 64, widths: Sequence[int] = (32, 64, 128, 256),
                 latent_dim: int = 32, hidden_dim: int = 256, kernel: int = 3):
        super().__init__(bands, image_size, widths, latent_dim, hidden_dim, kernel)
        self.freeze_decoder()

    @classmethod
    def from_vae(cls, vae: BandVAE) -> "Deblender":
        """A deblender whose encoder starts as a copy of ``vae``'s encoder and whose decoder is a frozen copy
        of ``vae``'s decoder (later changes of ``vae`` do not reach it)."""
        model = cls(**vae.hparams)
        model.encoder.load_state_dict(copy.deepcopy(vae.encoder.state_dict()))
        model.decoder.load_state_dict(copy.deepcopy(vae.decoder.state_dict()))
        model.freeze_decoder()
        return model

    def freeze_decoder(self) -> None:
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        self.decoder.eval()

    def train(self, mode: bool = True) -> "Deblender":
        super().train(mode)
        self.decoder.eval()
        return self


# --------------------------------------------------------------------------------------
# the normalisation (sourcelens.blends) and files


def normalisation_of(model: nn.Module) -> dict[str, Any]:
    """``{"bands": [...], "scales": [...]}`` the model was trained with (from its file)."""
    norm = dict(getattr(model, "extra", {}).get("normalisation") or {})
    if not norm.get("scales"):
        raise ValueError("this model carries no normalisation scales (it was not saved by save_band_vae/"
                         "save_deblender with a normalisation)")
    return norm


def normalise_stack(images: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Images (N, bands, H, W) in counts → the study's normalisation (:func:`sourcelens.blends.normalise`)."""
    from ..blends import normalise

    return np.asarray(normalise(np.asarray(images, dtype=np.float32), np.asarray(scales, dtype=np.float32)),
                      dtype=np.float32)


def denormalise_stack(images: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Normalised images (N, bands, H, W) → counts (:func:`sourcelens.blends.denormalise`), clipped below
    :data:`OUTPUT_CEILING` first (the inverse diverges at 1)."""
    from ..blends import denormalise

    x = np.clip(np.asarray(images, dtype=np.float32), -OUTPUT_CEILING, OUTPUT_CEILING)
    return np.asarray(denormalise(x, np.asarray(scales, dtype=np.float32)), dtype=np.float32)


def _save(model: nn.Module, path: str | Path, fmt: str, normalisation: Mapping[str, Any] | None,
          provenance: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> Path:
    extra = dict(extra or {})
    if normalisation is not None:
        extra["normalisation"] = {"bands": [str(b) for b in normalisation["bands"]],
                                  "scales": [float(s) for s in normalisation["scales"]]}
    return save_payload(path, fmt, model, provenance=dict(provenance or {}), extra=extra)


def save_band_vae(model: BandVAE, path: str | Path, normalisation: Mapping[str, Any] | None = None,
                  provenance: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a :class:`BandVAE` (weights, architecture, the bands and normalisation scales I_b it was trained
    with, provenance, ``extra``) atomically to one file."""
    return _save(model, path, VAE_FORMAT, normalisation, provenance, extra)


def load_band_vae(path: str | Path, map_location: str | torch.device = "cpu") -> BandVAE:
    """A :class:`BandVAE` saved by :func:`save_band_vae`, in eval mode (``.extra["normalisation"]``)."""
    payload = load_payload(path, VAE_FORMAT, "multi-band VAE", map_location)
    return state_from(BandVAE(**payload["hparams"]), payload)


def save_deblender(model: Deblender, path: str | Path, normalisation: Mapping[str, Any] | None = None,
                   provenance: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a :class:`Deblender` (encoder and frozen decoder, architecture, bands and scales) atomically."""
    return _save(model, path, DEBLENDER_FORMAT, normalisation, provenance, extra)


def load_deblender(path: str | Path, map_location: str | torch.device = "cpu") -> Deblender:
    """A :class:`Deblender` saved by :func:`save_deblender`, in eval mode, its decoder frozen."""
    payload = load_payload(path, DEBLENDER_FORMAT, "deblender", map_location)
    model = state_from(Deblender(**payload["hparams"]), payload)
    model.freeze_decoder()
    return model


def _check_input(model: nn.Module, images: np.ndarray) -> np.ndarray:
    shape = (model.hparams["bands"], model.hparams["image_size"], model.hparams["image_size"])
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != shape:
        raise ValueError(f"images must be (N, {shape[0]}, {shape[1]}, {shape[2]}) for this model (bands in its "
                         f"order {getattr(model, 'extra', {}).get('normalisation', {}).get('bands', '')}), got "
                         f"{x.shape}")
    return x


def _apply(model: nn.Module, normalised: np.ndarray, batch_size: int, device: torch.device | None) -> np.ndarray:
    shape = (model.hparams["bands"], model.hparams["image_size"], model.hparams["image_size"])
    x = _check_input(model, normalised)
    device = device or best_device()
    model = model.to(device).eval()
    parts = run_batches(lambda b: model(b)[0].float().cpu().numpy(), x, batch_size, device)
    return np.concatenate(parts) if parts else np.zeros((0, *shape), np.float32)


def reconstruct_bands(model: nn.Module, images: np.ndarray, batch_size: int = 128,
                      device: torch.device | None = None, normalised: bool = False) -> np.ndarray:
    """The model's output (N, bands, S, S) for images (N, bands, S, S) in counts (or already ``normalised``):
    the decoder of the encoder mean, back in counts (or normalised)."""
    scales = normalisation_of(model)["scales"]
    images = _check_input(model, images)
    x = images if normalised else normalise_stack(images, scales)
    out = _apply(model, x, batch_size, device)
    return out if normalised else denormalise_stack(out, scales)


def deblend_images(model: Deblender, blends: np.ndarray, batch_size: int = 128,
                   device: torch.device | None = None) -> np.ndarray:
    """The central galaxy (N, bands, S, S) in counts of noisy blends (N, bands, S, S) in counts."""
    return reconstruct_bands(model, blends, batch_size, device)
