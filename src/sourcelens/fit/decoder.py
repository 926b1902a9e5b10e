"""Fitting galaxy images with the VAE decoder as the galaxy model (study 000), many at once.

Model of one galaxy with parameters θ = (z, flux, Δx, Δy, s)::

    source(x) = flux · D(z)( (x − Δ) / s )      (zoom by s about the stamp centre, then shift by Δ)
    model     = forward(source)                  (identity for unlensed fits; a lensing operator …)

``D(z)`` is the decoded image (softplus, peak ≈ 1 for the peak-normalised stamps the VAE was
trained on). Shift and zoom are one affine ``grid_sample`` (bilinear, zero outside the stamp;
the identity transform reproduces the decoded pixels exactly), offsets Δ are in pixels (x =
column, y = row), ``s`` is fitted as log s, and flux multiplies the surface brightness.

Objective, minimised per galaxy (negative log posterior up to a constant)::

    L(θ) = ½ χ²(θ) + w · ½ |z|²,     χ² = Σ_pixels ((data − model) / σ)²

The second term is −log N(z; 0, I) (the VAE prior), with weight ``prior_weight`` w = 1 by
default: a weak prior (|z|² ≈ latent_dim ≈ 64 against χ² ≈ N_pix = 4096) that keeps z in the
region the decoder was trained on; w = 0 gives the maximum-likelihood fit. flux, Δ and s have
flat priors. Internally the loss is divided by N_pix (scale-free tolerances; it does not
change the minimum).

Optimisation: one ``torch.optim.LBFGS`` (strong-Wolfe line search) over a (B, latent_dim + 4)
parameter tensor holding all B galaxies. The total loss is the sum of the per-galaxy losses, so
each galaxy's gradient depends on its own parameters only; the curvature memory and the step
length are shared, which is why batched fits agree with single fits to within the convergence
tolerance rather than bit for bit. The decoder's own weights are frozen (no weight gradients,
no graph kept between evaluations).

Start (``init``): ``"encoder"`` (z = encoder mean of the data — near the optimum, so few
iterations are needed) or ``"prior"`` (z = 0, the prior mean); flux starts at the
least-squares amplitude of the starting model, Δ = 0, s = 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

N_SHAPE_PARAMS = 4  # flux, dx, dy, log_scale
SHAPE_NAMES = ("flux", "dx", "dy", "scale")


def n_free_params(latent_dim: int) -> int:
    """Free parameters of a decoder fit: the latents plus flux, Δx, Δy and scale."""
    return int(latent_dim) + N_SHAPE_PARAMS


def render(decoded: torch.Tensor, flux: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Shift, zoom and scale decoded images: (B, 1, H, W) → (B, H, W).

    ``flux`` (B,), ``offset`` (B, 2) pixels as (Δx = columns, Δy = rows), ``scale`` (B,) > 0: the
    galaxy is enlarged ``scale`` times about the stamp centre, then moved by the offset.
    """
    b, _, h, w = decoded.shape
    inv = 1.0 / scale
    zero = torch.zeros_like(inv)
    theta = torch.stack([
        torch.stack([inv, zero, -2.0 * offset[:, 0] / w * inv], dim=-1),
        torch.stack([zero, inv, -2.0 * offset[:, 1] / h * inv], dim=-1),
    ], dim=1)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(decoded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return flux[:, None, None] * out[:, 0]


@dataclass
class DecoderFit:
    """Per-galaxy results of :func:`fit_decoder` (numpy arrays, galaxy index first)."""

    z: np.ndarray            # (B, latent_dim)
    flux: np.ndarray         # (B,)
    offset: np.ndarray       # (B, 2) pixels (dx, dy)
    scale: np.ndarray        # (B,)
    model: np.ndarray        # (B, H', W') model of the data (after ``forward``)
    source: np.ndarray       # (B, H, W) rendered source (before ``forward``)
    chi2: np.ndarray         # (B,)
    prior: np.ndarray        # (B,) ½|z|²
    n_params: int
    n_pixels: int
    seconds: np.ndarray      # (B,) wall time of the galaxy's batch divided by the batch size
    n_iter: np.ndarray       # (B,) L-BFGS iterations of the galaxy's batch
    n_eval: np.ndarray       # (B,) objective evaluations of the galaxy's batch
    init: str = "encoder"
    history: list = field(default_factory=list)  # summed loss after each step() of each batch (diagnostics)

    @property
    def chi2_nu(self) -> np.ndarray:
        return self.chi2 / (self.n_pixels - self.n_params)

    def table(self) -> pd.DataFrame:
        """One row per galaxy: χ², χ²/ν, flux, dx, dy, scale, seconds, iterations."""
        return pd.DataFrame({
            "chi2": self.chi2, "chi2_nu": self.chi2_nu, "n_params": self.n_params, "flux": self.flux,
            "dx": self.offset[:, 0], "dy": self.offset[:, 1], "scale": self.scale, "prior": self.prior,
            "seconds": self.seconds, "n_iter": self.n_iter, "n_eval": self.n_eval,
        })


class _Frozen:
    """Context: a module in eval mode with no weight gradients; restores both on exit."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self):
        self.training = self.module.training
        self.flags = [p.requires_grad for p in self.module.parameters()]
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc):
        for p, flag in zip(self.module.parameters(), self.flags):
            p.requires_grad_(flag)
        self.module.train(self.training)


def _as_sigma(sigma, n: int, shape: tuple[int, ...]) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(n, float(s))
    if s.ndim == 1:
        if s.shape[0] != n:
            raise ValueError(f"sigma has {s.shape[0]} values for {n} images")
        s = s[:, None, None] * np.ones((1, *shape))
    s = np.broadcast_to(s, (n, *shape))
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("sigma must be finite and positive")
    return s


def fit_decoder(
    vae,
    data: np.ndarray,
    sigma: float | Sequence[float] | np.ndarray,
    *,
    init: str = "encoder",
    max_iter: int = 200,
    prior_weight: float = 1.0,
    batch_size: int = 256,
    history_size: int = 20,
    tolerance_change: float = 1e-9,
    tolerance_grad: float = 1e-7,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    z0: np.ndarray | None = None,
    encoder_input: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> DecoderFit:
    """Fit images ``data`` (B, H', W') with the decoder of ``vae``; see the module docstring.

    ``sigma``: noise sigma, a scalar, one per image (B,) or per-pixel maps. ``init``: "encoder" or
    "prior" (ignored when ``z0`` (B, latent_dim) is given). ``forward``: optional differentiable map
    from rendered sources (B, H, W) to model images shaped like ``data`` (e.g. a lensing operator;
    with it the encoder sees ``encoder_input``, default the prior start). Galaxies are fitted
    ``batch_size`` at a time, each batch by one L-BFGS run of at most ``max_iter`` iterations;
    ``tolerance_change`` and ``tolerance_grad`` apply to the per-pixel, per-galaxy mean loss.
    """
    if init not in ("encoder", "prior"):
        raise ValueError(f"init must be 'encoder' or 'prior', not {init!r}")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    n, shape = len(data), data.shape[1:]
    sig = _as_sigma(sigma, n, shape)
    latent_dim = int(vae.latent_dim)
    dev = torch.device(device) if device is not None else next(vae.parameters()).device
    n_pix = int(np.prod(shape))
    results: dict[str, list] = {k: [] for k in ("params", "model", "source", "chi2", "prior", "sec", "iter", "eval")}
    history = []
    with _Frozen(vae):
        for start in range(0, n, max(1, int(batch_size))):
            stop = min(n, start + int(batch_size))
            b = stop - start
            t0 = time.perf_counter()
            d = torch.as_tensor(data[start:stop], dtype=dtype, device=dev)
            w = torch.as_tensor(1.0 / sig[start:stop], dtype=dtype, device=dev)
            with torch.no_grad():
                if z0 is not None:
                    z_init = torch.as_tensor(np.asarray(z0)[start:stop], dtype=dtype, device=dev)
                elif init == "encoder" and (forward is None or encoder_input is not None):
                    x = d if encoder_input is None else torch.as_tensor(
                        np.asarray(encoder_input)[start:stop], dtype=dtype, device=dev)
                    z_init = vae.encode(x[:, None].to(next(vae.parameters()).dtype))[0].to(dtype)
                else:
                    z_init = torch.zeros(b, latent_dim, dtype=dtype, device=dev)
                src = vae.decode(z_init)[:, 0]
                m0 = src if forward is None else forward(src)
                ww = w * w
                flux0 = (ww * d * m0).sum((1, 2)) / (ww * m0 * m0).sum((1, 2)).clamp_min(1e-30)
                flux0 = torch.where(torch.isfinite(flux0) & (flux0 > 0), flux0, torch.ones_like(flux0))
            params = torch.cat([z_init, flux0[:, None], torch.zeros(b, 3, dtype=dtype, device=dev)], dim=1)
            params.requires_grad_(True)
            opt = torch.optim.LBFGS(
                [params], lr=1.0, max_iter=int(max_iter), history_size=int(history_size),
                tolerance_change=float(tolerance_change) * b, tolerance_grad=float(tolerance_grad),
                line_search_fn="strong_wolfe",
            )

            def model_of(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                z = p[:, :latent_dim]
                source = render(vae.decode(z.to(next(vae.parameters()).dtype)).to(dtype),
                                p[:, latent_dim], p[:, latent_dim + 1:latent_dim + 3], torch.exp(p[:, latent_dim + 3]))
                return (source if forward is None else forward(source)), source

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                model, _ = model_of(params)
                chi2 = (((d - model) * w) ** 2).sum((1, 2))
                prior = 0.5 * (params[:, :latent_dim] ** 2).sum(1)
                loss = (0.5 * chi2 + prior_weight * prior).sum() / n_pix
                loss.backward()
                return loss

            loss = opt.step(closure)
            history.append(float(loss.detach()) if torch.is_tensor(loss) else float(loss))
            with torch.no_grad():
                model, source = model_of(params)
                chi2 = (((d - model) * w) ** 2).sum((1, 2))
                prior = 0.5 * (params[:, :latent_dim] ** 2).sum(1)
            state = opt.state[params]
            sec = time.perf_counter() - t0
            results["params"].append(params.detach().cpu().double().numpy())
            results["model"].append(model.cpu().numpy())
            results["source"].append(source.cpu().numpy())
            results["chi2"].append(chi2.cpu().double().numpy())
            results["prior"].append(prior.cpu().double().numpy())
            results["sec"].append(np.full(b, sec / b))
            results["iter"].append(np.full(b, int(state.get("n_iter", 0))))
            results["eval"].append(np.full(b, int(state.get("func_evals", 0))))
    p = np.concatenate(results["params"])
    return DecoderFit(
        z=p[:, :latent_dim], flux=p[:, latent_dim], offset=p[:, latent_dim + 1:latent_dim + 3],
        scale=np.exp(p[:, latent_dim + 3]), model=np.concatenate(results["model"]),
        source=np.concatenate(results["source"]), chi2=np.concatenate(results["chi2"]),
        prior=np.concatenate(results["prior"]), n_params=n_free_params(latent_dim), n_pixels=n_pix,
        seconds=np.concatenate(results["sec"]), n_iter=np.concatenate(results["iter"]),
        n_eval=np.concatenate(results["eval"]), init=init if z0 is None else "given", history=history,
    )


def reconstruct(vae, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Encoder-mean reconstructions of images (N, H, W): (reconstructions (N, H, W), latent means (N, L))."""
    images = np.asarray(images, dtype=np.float32)
    recs, mus = [], []
    with _Frozen(vae), torch.no_grad():
        dev = next(vae.parameters()).device
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size][:, None], device=dev)
            mu, _ = vae.encode(x)
            recs.append(vae.decode(mu)[:, 0].cpu().numpy())
            mus.append(mu.cpu().numpy())
    if not recs:
        return np.zeros((0, *images.shape[1:]), np.float32), np.zeros((0, vae.latent_dim), np.float32)
    return np.concatenate(recs), np.concatenate(mus)


def decode(vae, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Decoded images (N, H, W) of latents (N, L)."""
    z = np.asarray(z, dtype=np.float32)
    out = []
    with _Frozen(vae), torch.no_grad():
        dev = next(vae.parameters()).device
        for start in range(0, len(z), batch_size):
            out.append(vae.decode(torch.as_tensor(z[start:start + batch_size], device=dev))[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, vae.image_size, vae.image_size), np.float32)


__all__ = ["DecoderFit", "N_SHAPE_PARAMS", "decode", "fit_decoder", "n_free_params", "reconstruct", "render"]
