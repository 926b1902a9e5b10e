"""Fitting galaxy images with the VAE decoder as the galaxy model (study 000), many at once.

Model of one galaxy with parameters θ = (z, flux, Δx, Δy, s)::

    source(x) = flux · D(z)( (x − Δ) / s )      (zoom by s about the stamp centre, then shift by Δ)
    model     = forward(source)                  (identity for unlensed fits; a lensing operator …)

``D(z)`` is the decoded image (softplus, peak ≈ 1 for the peak-normalised stamps the VAE was
trained on). Shift and zoom are a separable resampling (bicubic by default, so the χ² has continuous
derivatives in Δ and s; zero outside the stamp; the identity reproduces the decoded pixels
exactly), offsets Δ are in pixels (x = column, y = row), ``s`` is fitted as log s.

Objective, minimised per galaxy (negative log posterior up to a constant)::

    L(θ) = ½ χ²(θ) + w · ½ |z|²,     χ² = Σ_pixels ((data − model) / σ)²

The second term is −log N(z; 0, I) (the VAE prior), with weight ``prior_weight`` w = 1 by
default: a weak prior (|z|² ≈ latent_dim ≈ 64 against χ² ≈ N_pix = 4096) that keeps z in the
region the decoder was trained on; w = 0 gives the maximum-likelihood fit. flux, Δ and s have
flat priors. The flux is linear, so it is profiled out: for every (z, Δ, s) it is the χ²-optimal
amplitude, and the optimiser sees only z, Δ and s (one degenerate direction less: the decoder
can change its own brightness with z).

Optimisation: a per-galaxy L-BFGS (:mod:`sourcelens.fit.lbfgs`): every galaxy has its own
curvature memory, line search and stopping test, while the decoder is evaluated once per round
for all galaxies still running (in cache-sized chunks on a CPU); converged galaxies drop out of the
batch. L-BFGS works in
whitened coordinates u, θ = θ₀ + M u with M = H^(−½) per galaxy (in these coordinates a unit
steepest-descent step is about a Newton step, so the first step is 1): the raw problem has a
condition number ~10⁵–10⁶ (latents the data barely constrain next to pixel offsets), which L-BFGS
alone needs hundreds of iterations to learn. H = (flux/σ)² Ḡ + w·I_z: Ḡ is the model's mean
Gauss–Newton matrix JᵀJ (by finite differences) of unit-flux, unit-σ fits at its reference
latents (``vae.reference_latents``, encoder means of training stamps kept with the model;
:func:`reference_metric`, computed once and saved with the model), scaled by each galaxy's
signal-to-noise at the start. So a galaxy follows the same path alone and in any batch (up to
floating-point reduction order); an exact metric of the galaxy's own start would step too far,
into worse local minima. For a model without
reference latents, or through a ``forward`` operator (a lens per galaxy), H is the mean JᵀJ of the
residuals at the start of up to ``precondition_galaxies`` galaxies of the batch: a galaxy fitted
alone and in a batch then follows different paths. Stopping tolerances are in units of L (½χ²):
by default a galaxy stops when two consecutive iterations each lower L by less than 5·10⁻³ (one
short step is not enough: in the long curved valleys of poorly fitting galaxies progress resumes).
The decoder's own weights are frozen (no weight gradients, no graph kept between evaluations).

Start (``init``): ``"encoder"`` (z = encoder mean of the data — near the optimum, so few
iterations are needed) or ``"prior"`` (z = 0, the prior mean); Δ = 0, s = 1 unless given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..selection import evenly_spaced_rows
from ..models.vae import frozen
from .common import best_amplitude
from .lbfgs import BatchedLBFGSResult, gauss_newton_metric, inverse_sqrt, minimize_lbfgs

N_SHAPE_PARAMS = 4  # flux, dx, dy, log_scale
SHAPE_NAMES = ("flux", "dx", "dy", "scale")


def n_free_params(latent_dim: int) -> int:
    """Free parameters of a decoder fit: the latents plus flux, Δx, Δy and scale."""
    return int(latent_dim) + N_SHAPE_PARAMS


def _keys_cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic-convolution kernel (a = −0.75: torch's bicubic ``grid_sample`` and OpenCV)."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def _tap_polynomials(kernel) -> np.ndarray:
    """(4, 4) matrix C: the weights of the taps at −1, 0, 1, 2 for a fractional position t ∈ [0, 1)
    are [1, t, t², t³] · C (each weight is a cubic in t on that interval; fitted exactly at 4 points)."""
    t = np.array([0.0, 0.25, 0.5, 0.75])
    powers = t[:, None] ** np.arange(4)
    weights = np.stack([kernel(t - tap) for tap in (-1, 0, 1, 2)], 1)
    return np.linalg.solve(powers, weights)


_TAP_POLYNOMIALS = {
    "bicubic": _tap_polynomials(_keys_cubic),
    "bilinear": _tap_polynomials(lambda x: np.clip(1.0 - np.abs(x), 0.0, None)),
}


def interpolation_matrix(coords: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resampling along one axis as a matrix: (…, n) source coordinates (pixels, 0 = first pixel
    centre) → (…, n, size), row i holding the interpolation weights of output sample i. Zero outside
    the ``size`` pixels; "bicubic" (Keys, a = −0.75) or "bilinear". Differentiable in ``coords``."""
    if interpolation not in _TAP_POLYNOMIALS:
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', not {interpolation!r}")
    poly = torch.as_tensor(_TAP_POLYNOMIALS[interpolation], dtype=coords.dtype, device=coords.device)
    base = torch.floor(coords.detach())
    t = coords - base
    t2 = t * t
    weights = torch.stack([torch.ones_like(t), t, t2, t2 * t], -1) @ poly          # (…, n, 4)
    taps = base.long()[..., None] + torch.arange(-1, 3, device=coords.device)
    inside = (taps >= 0) & (taps < size)
    out = torch.zeros(*coords.shape, size, dtype=coords.dtype, device=coords.device)
    return out.scatter_add(-1, taps.clamp(0, size - 1), torch.where(inside, weights, 0.0))


def shift_zoom(images: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
               interpolation: str = "bicubic") -> torch.Tensor:
    """Images (B, H, W) enlarged ``scale`` (B,) times about the stamp centre, then moved by
    ``offset`` (B, 2) pixels (Δx = columns, Δy = rows); zero outside the stamp.

    ``interpolation``: "bicubic" (Keys cubic convolution, continuous first derivatives, so a χ² is
    smooth in Δ and s — what a gradient-based fit needs) or "bilinear" (kinks at whole-pixel
    shifts, including the identity). Both reproduce the pixels exactly at Δ = 0, s = 1 and equal
    ``grid_sample`` (align_corners=False, zero padding) with the same affine map. The map is
    separable, so it is applied as two per-galaxy matrices, rows · image · columnsᵀ (a few times
    faster than ``grid_sample`` and its backward pass on CPUs).
    """
    _, h, w = images.shape
    kw = dict(dtype=images.dtype, device=images.device)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ux = (torch.arange(w, **kw)[None, :] - cx - offset[:, 0, None]) / scale[:, None] + cx   # (B, W)
    uy = (torch.arange(h, **kw)[None, :] - cy - offset[:, 1, None]) / scale[:, None] + cy   # (B, H)
    if h == w:  # both axes in one call (fewer operations: this is on the fits' hot path)
        rows, cols = interpolation_matrix(torch.stack([uy, ux], 1), w, interpolation).unbind(1)
    else:
        rows, cols = interpolation_matrix(uy, h, interpolation), interpolation_matrix(ux, w, interpolation)
    return rows @ images @ cols.transpose(1, 2)


def render(decoded: torch.Tensor, flux: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
           interpolation: str = "bicubic") -> torch.Tensor:
    """Shift, zoom and scale decoded images: (B, 1, H, W) → (B, H, W) = ``flux`` (B,) ×
    :func:`shift_zoom` of the images (``offset`` (B, 2) pixels, ``scale`` (B,) > 0)."""
    return flux[:, None, None] * shift_zoom(decoded[:, 0], offset, scale, interpolation)


def _unit_source(decode: torch.nn.Module, p: torch.Tensor, latent_dim: int, interpolation: str) -> torch.Tensor:
    """Rendered sources (b, H, W) of flux 1 for parameters p = (z, dx, dy, log s) (b, latent_dim + 3),
    in the dtype of ``p`` whatever the decoder's."""
    decoded = decode(p[:, :latent_dim].to(next(decode.buffers()).dtype)).to(p.dtype)[:, 0]
    return shift_zoom(decoded, p[:, latent_dim:latent_dim + 2], torch.exp(p[:, latent_dim + 2]), interpolation)


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
    seconds: np.ndarray      # (B,) wall time of the galaxy's batch / its size, plus a share of the set-up
    n_iter: np.ndarray       # (B,) L-BFGS iterations of the galaxy
    n_eval: np.ndarray       # (B,) objective evaluations of the galaxy
    status: np.ndarray       # (B,) why the galaxy's L-BFGS stopped (see sourcelens.fit.lbfgs.STATUS)
    init: str = "encoder"
    preconditioner: str = "none"   # "reference" (the model's), "batch" (the batch's mean) or "none"
    history: list[BatchedLBFGSResult] = field(default_factory=list)  # optimiser result of each batch

    @property
    def chi2_nu(self) -> np.ndarray:
        return self.chi2 / (self.n_pixels - self.n_params)

    def table(self) -> pd.DataFrame:
        """One row per galaxy: χ², χ²/ν, flux, dx, dy, scale, seconds, iterations."""
        return pd.DataFrame({
            "chi2": self.chi2, "chi2_nu": self.chi2_nu, "n_params": self.n_params, "flux": self.flux,
            "dx": self.offset[:, 0], "dy": self.offset[:, 1], "scale": self.scale, "prior": self.prior,
            "seconds": self.seconds, "n_iter": self.n_iter, "n_eval": self.n_eval, "status": self.status,
        })


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
    chunk_size: int | None = None,
    history_size: int = 20,
    tolerance_change: float = 5e-3,
    tolerance_grad: float = 1e-5,
    patience: int = 2,
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    z0: np.ndarray | None = None,
    offset0: np.ndarray | None = None,
    scale0: np.ndarray | None = None,
    encoder_input: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    interpolation: str = "bicubic",
    precondition: bool = True,
    precondition_galaxies: int = 16,
    progress: bool = False,
) -> DecoderFit:
    """Fit images ``data`` (B, H', W') with the decoder of ``vae``; see the module docstring.

    ``sigma``: noise sigma, a scalar, one per image (B,) or per-pixel maps. ``init``: "encoder" or
    "prior" (ignored when ``z0`` (B, latent_dim) is given); ``offset0`` (B, 2) pixels and ``scale0``
    (B,) start the geometry (default 0 and 1; e.g. to continue an earlier fit). ``forward(source, index)``: optional
    differentiable map from rendered sources (b, H, W) of the galaxies ``index`` (b,) (row numbers
    into ``data``; a subset while some galaxies have converged) to model images shaped like
    ``data[index]`` (e.g. a lensing operator with one lens per galaxy); with it the encoder sees
    ``encoder_input``, default the prior start. Galaxies are fitted ``batch_size`` at a time (a
    memory bound: each galaxy has its own L-BFGS of at most ``max_iter`` iterations), the model
    evaluated for at most ``chunk_size`` of them at a time (default: 128 on a CPU, where the
    decoder's feature maps then stay in cache, about 12 % faster than 256 at once; the whole batch
    on a GPU; results do not depend on it beyond float rounding); the
    tolerances are in units of ½χ², the change test must hold ``patience`` iterations in a row (see
    :func:`sourcelens.fit.lbfgs.minimize_lbfgs`).
    ``precondition``: whiten the parameters (see the module docstring; ``fit.preconditioner`` says
    which metric was used). ``progress`` shows a bar of converged galaxies.
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
    dec_dtype = next(vae.parameters()).dtype
    if chunk_size is None:
        chunk_size = 128 if dev.type == "cpu" else None
    elif int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive number of galaxies or None, not {chunk_size!r}")
    results: dict[str, list] = {k: [] for k in ("params", "model", "source", "chi2", "prior", "sec", "iter", "eval",
                                                "status")}
    history: list[BatchedLBFGSResult] = []
    bar = tqdm(total=n, desc="decoder fits", unit="galaxy", disable=not progress, leave=False)
    with frozen(vae):
        decode = vae.fused_decoder().to(dev)
        reference = getattr(vae, "reference_latents", None)
        unit_metric, preconditioner = None, "batch" if precondition else "none"
        t_setup = time.perf_counter()
        if precondition and forward is None and reference is not None and len(reference):
            unit_metric = reference_metric(vae, interpolation, decode=decode, dtype=dtype, device=dev,
                                           chunk_size=chunk_size).to(device=dev, dtype=dtype)
            preconditioner = "reference"
        t_setup = time.perf_counter() - t_setup   # shared by all galaxies (zero once cached)
        for start in range(0, n, max(1, int(batch_size))):
            stop = min(n, start + int(batch_size))
            b = stop - start
            t0 = time.perf_counter()
            d = torch.as_tensor(data[start:stop], dtype=dtype, device=dev)
            w = torch.as_tensor(1.0 / sig[start:stop], dtype=dtype, device=dev)
            dw = d * w   # whitened data: residuals are dw − flux · w · model
            with torch.no_grad():
                if z0 is not None:
                    z_init = torch.as_tensor(np.asarray(z0)[start:stop], dtype=dtype, device=dev)
                elif init == "encoder" and (forward is None or encoder_input is not None):
                    x = d if encoder_input is None else torch.as_tensor(
                        np.asarray(encoder_input)[start:stop], dtype=dtype, device=dev)
                    z_init = vae.encode(x[:, None].to(dec_dtype))[0].to(dtype)
                else:
                    z_init = torch.zeros(b, latent_dim, dtype=dtype, device=dev)
            x0 = torch.cat([z_init, torch.zeros(b, 3, dtype=dtype, device=dev)], dim=1)
            if offset0 is not None:
                x0[:, latent_dim:latent_dim + 2] = torch.as_tensor(np.asarray(offset0)[start:stop], dtype=dtype)
            if scale0 is not None:
                x0[:, latent_dim + 2] = torch.as_tensor(np.log(np.asarray(scale0)[start:stop]), dtype=dtype)

            def unit_model(p: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                """Model images and rendered sources of flux 1 for parameters p = (z, dx, dy, log s)."""
                source = _unit_source(decode, p, latent_dim, interpolation)
                return (source if forward is None else forward(source, index + start)), source

            def profiled(p: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
                """(whitened residuals, flux, unit model, unit source): the flux is the χ²-optimal
                amplitude of the unit model."""
                m, source = unit_model(p, index)
                wm, dwi = w[index] * m, dw[index]
                flux = best_amplitude(wm, dwi)
                return dwi - flux[:, None, None] * wm, flux, m, source

            def residuals(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
                return torch.cat([profiled(p, index)[0].flatten(1), prior_weight**0.5 * p[:, :latent_dim]], dim=1)

            with torch.no_grad():
                if unit_metric is not None:   # the model's metric, scaled by each galaxy's (flux / σ)²
                    _, flux0, m0, _ = profiled(x0, torch.arange(b, device=dev))
                    snr2 = flux0**2 * ((w * m0) ** 2).sum((1, 2)) / (m0 * m0).sum((1, 2)).clamp_min(1e-30)
                    prior_diag = torch.zeros(x0.shape[1], dtype=dtype, device=dev)
                    prior_diag[:latent_dim] = prior_weight
                    transform = inverse_sqrt(snr2[:, None, None] * unit_metric + torch.diag(prior_diag))
                elif precondition:            # the batch's mean metric
                    pick = torch.as_tensor(evenly_spaced_rows(b, precondition_galaxies), device=dev)
                    metric = gauss_newton_metric(residuals, x0[pick], pick, chunk=chunk_size or 512)
                    transform = inverse_sqrt(metric).expand(b, -1, -1)
                else:
                    transform = torch.eye(x0.shape[1], dtype=dtype, device=dev).expand(b, -1, -1)

            def objective(u: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
                p = x0[index] + torch.einsum("bij,bj->bi", transform[index], u)
                resid = profiled(p, index)[0]
                return 0.5 * (resid * resid).sum((1, 2)) + (0.5 * prior_weight) * (p[:, :latent_dim] ** 2).sum(1)

            done = [0]

            def report(_rounds: int, active: int) -> None:
                bar.update(b - active - done[0])
                done[0] = b - active

            res = minimize_lbfgs(objective, torch.zeros_like(x0), max_iter=max_iter, history_size=history_size,
                                 tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, callback=report,
                                 unit_first_step=precondition, chunk_rows=chunk_size, patience=patience)
            with torch.no_grad():
                params = x0 + torch.einsum("bij,bj->bi", transform, res.x)
                resid, flux, model, source = profiled(params, torch.arange(b, device=dev))
                model, source = flux[:, None, None] * model, flux[:, None, None] * source
                chi2 = (resid ** 2).sum((1, 2))
                prior = 0.5 * (params[:, :latent_dim] ** 2).sum(1)
            sec = time.perf_counter() - t0
            history.append(res)
            results["params"].append(torch.cat([params[:, :latent_dim], flux[:, None], params[:, latent_dim:]], 1)
                                     .cpu().double().numpy())
            results["model"].append(model.cpu().numpy())
            results["source"].append(source.cpu().numpy())
            results["chi2"].append(chi2.cpu().double().numpy())
            results["prior"].append(prior.cpu().double().numpy())
            results["sec"].append(np.full(b, sec / b + t_setup / n))
            results["iter"].append(res.n_iter)
            results["eval"].append(res.n_eval)
            results["status"].append(res.status)
    bar.close()
    p = np.concatenate(results["params"])
    return DecoderFit(
        z=p[:, :latent_dim], flux=p[:, latent_dim], offset=p[:, latent_dim + 1:latent_dim + 3],
        scale=np.exp(p[:, latent_dim + 3]), model=np.concatenate(results["model"]),
        source=np.concatenate(results["source"]), chi2=np.concatenate(results["chi2"]),
        prior=np.concatenate(results["prior"]), n_params=n_free_params(latent_dim), n_pixels=n_pix,
        seconds=np.concatenate(results["sec"]), n_iter=np.concatenate(results["iter"]),
        n_eval=np.concatenate(results["eval"]), status=np.concatenate(results["status"]),
        init=init if z0 is None else "given", preconditioner=preconditioner, history=history,
    )


def reference_metric(vae, interpolation: str = "bicubic", *, decode: torch.nn.Module | None = None,
                     dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                     chunk_size: int | None = None) -> torch.Tensor | None:
    """The decoder's metric used to precondition :func:`fit_decoder`: the mean Gauss–Newton matrix
    (P, P) of unit-flux, unit-σ fits at the images of ``vae.reference_latents`` (flux profiled out, no
    prior term); None for a model without reference latents.

    Computed once (central differences, 2P decoder evaluations per reference latent) and kept in
    ``vae.reference_metrics`` under (interpolation, fingerprint of the decoder weights), so that
    :func:`sourcelens.models.save_vae` stores it with the model and later fits start at once; entries
    of other weights are dropped. Returned as float64 on the CPU.
    """
    reference = getattr(vae, "reference_latents", None)
    if reference is None or not len(reference):
        return None
    dev = torch.device(device) if device is not None else next(vae.parameters()).device
    if decode is None:
        with frozen(vae):
            decode = vae.fused_decoder().to(dev)
    buffers = [t.detach() for t in decode.buffers()] + [reference.detach()]
    fingerprint = tuple(float(v) for t in buffers for v in (t.double().sum(), t.double().square().sum()))
    cache = getattr(vae, "reference_metrics", None)
    if cache is None:
        cache = vae.reference_metrics = {}
    key = (interpolation, fingerprint)
    if key in cache:
        return cache[key]
    latent_dim = reference.shape[1]
    z_ref = reference.to(device=dev, dtype=dtype)
    x_ref = torch.cat([z_ref, torch.zeros(len(z_ref), N_SHAPE_PARAMS - 1, dtype=dtype, device=dev)], 1)
    with torch.no_grad():
        images = _unit_source(decode, x_ref, latent_dim, interpolation)

        def residuals(p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            m, d = _unit_source(decode, p, latent_dim, interpolation), images[index]
            return (d - best_amplitude(m, d)[:, None, None] * m).flatten(1)

        if chunk_size is None:
            chunk_size = 128 if dev.type == "cpu" else 512
        metric = gauss_newton_metric(residuals, x_ref, torch.arange(len(z_ref), device=dev), chunk=chunk_size)
    for stale in [k for k in cache if k[-1] != fingerprint]:   # entries of earlier weights
        del cache[stale]
    cache[key] = metric.double().cpu()
    return cache[key]


__all__ = ["DecoderFit", "N_SHAPE_PARAMS", "fit_decoder", "interpolation_matrix", "n_free_params",
           "reference_metric", "render", "shift_zoom"]
