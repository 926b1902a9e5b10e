"""What every network of the project shares: its file format (weights, architecture, provenance in one file,
written atomically), the normalisation of lensed images fed to it, and batched inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["save_payload", "load_payload", "state_from", "lensed_image_scale", "normalise_lensed", "model_inputs",
           "run_batches", "best_device"]


def save_payload(path: str | Path, fmt: str, model: torch.nn.Module, **fields: Any) -> Path:
    """Save ``model``'s weights, its ``hparams`` and ``fields`` (provenance, extra, …) under the format tag
    ``fmt``, atomically."""
    from ..io import atomic_path

    path = Path(path)
    payload = {"format": fmt, "hparams": dict(model.hparams), "state_dict": model.state_dict(), **fields}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_payload(path: str | Path, fmt: str, what: str, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a model file of format ``fmt``; ValueError naming the file when it is missing, damaged
    or another kind of file (``what``: the model's name, for the message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"'{path}' could not be read as a model file ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"'{path}' is not a sourcelens {what} model file (format {found!r}, expected {fmt!r})")
    return payload


def lensed_image_scale(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The brightness of each lensed image (…, H, W): the maximum of its 3×3 running median (the arcs' peak,
    blind to single hot or noisy pixels), floored at a tiny positive value."""
    x = torch.as_tensor(images, dtype=torch.float32)
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    patches = F.unfold(F.pad(x.reshape(-1, 1, h, w), (1, 1, 1, 1), mode="replicate"), 3)   # (B, 9, H·W)
    scale = patches.median(dim=1).values.amax(1).clamp_min(1e-12).reshape(lead)
    return scale if isinstance(images, torch.Tensor) else scale.numpy()


def normalise_lensed(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lensed images (N, H, W) divided by their :func:`lensed_image_scale` (so arcs peak near 1 whatever the
    flux units), and the scales (N,)."""
    images = np.asarray(images, dtype=np.float32)
    scale = lensed_image_scale(images)
    return images / scale[:, None, None], scale


def model_inputs(images: np.ndarray, size: int) -> np.ndarray:
    """Lensed images (N, ``size``, ``size``) normalised (:func:`normalise_lensed`) for a network of that input
    size; ValueError naming the expected and the given shape."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise ValueError(f"images must be (N, {size}, {size}) for this model, got {images.shape}")
    return normalise_lensed(images)[0]


def best_device(accelerator: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_batches(fn: Callable[[torch.Tensor], Any], inputs: np.ndarray, batch_size: int = 256,
                device: torch.device | None = None) -> list[Any]:
    """``fn`` of consecutive batches of ``inputs`` (as float32 tensors on ``device``), without gradients."""
    inputs = np.asarray(inputs, dtype=np.float32)
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            out.append(fn(torch.as_tensor(inputs[start:start + batch_size], device=device)))
    return out


def state_from(model: torch.nn.Module, payload: Mapping[str, Any]) -> torch.nn.Module:
    """Load ``payload['state_dict']`` into ``model`` and attach its provenance and extra records."""
    model.load_state_dict(payload["state_dict"])
    model.provenance = dict(payload.get("provenance") or {})
    model.extra = dict(payload.get("extra") or {})
    return model.eval()
