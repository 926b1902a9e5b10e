"""Posterior uncertainties of decoder fits (study 000): how much to trust a source reconstructed with the
VAE decoder, unlensed or through a lens.

Parameters of one galaxy q = (z, log flux, Δx, Δy, log s), the same model and objective as
:mod:`sourcelens.fit.decoder` (−log posterior = ½χ² + w·½|z|², flat priors on log flux, Δ and log s),
with the flux as a parameter here (the fit profiles it out; its uncertainty belongs in the posterior).

- :func:`laplace_posterior`: the Laplace approximation at the fitted optimum, q ~ N(q̂, H⁻¹) with H the
  Gauss–Newton matrix JᵀJ of the whitened residuals and the prior (the Fisher information, PSD by
  construction; the exact Hessian differs by terms in the residuals, which vanish for a model that fits).
  Cost: 2P + 1 model evaluations for H and one per sample — about a fit's.
- :func:`nuts_posterior`: No-U-Turn Hamiltonian Monte Carlo (Pyro's NUTS, one chain per galaxy) on the
  exact −log posterior, in coordinates whitened by the Laplace covariance (so the sampler starts isotropic
  and its step size adapts quickly); the check of the Laplace approximation where it matters (skewed or
  curved posteriors: faint galaxies, lensed arcs). Tens of seconds a galaxy on a CPU core.

Both summarise the posterior by samples pushed through the model: per-pixel mean, standard deviation and
equal-tailed intervals of the source (on the decoder's grid, or mapped by ``source_map``, e.g. onto a lensed
scene's source grid) and of the model image (through ``forward``: the lens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.vae import frozen
from .decoder import _unit_source
from .lbfgs import gauss_newton_metric

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Nominal levels of the equal-tailed intervals kept by default (1σ and 2σ of a Gaussian, rounded).
LEVELS = (0.68, 0.95)
METHODS = ("laplace", "nuts")


@dataclass
class DecoderPosterior:
    """Per-pixel posterior summaries of decoder fits (numpy, galaxy first).

    ``source_*``: the source (decoder grid, or the grid of ``source_map``); ``model_*``: the model image
    (through ``forward``); ``*_interval[level]``: (lower, upper) maps of the equal-tailed interval of that
    nominal level; ``parameter_std`` (B, P): marginal standard deviations of q = (z, log flux, dx, dy, log s)
    (dx, dy in decoder pixels); ``seconds`` per galaxy; ``diagnostics``: the sampler's per-galaxy numbers
    (NUTS: divergences, mean acceptance, step size)."""

    method: str
    source_mean: np.ndarray
    source_std: np.ndarray
    model_mean: np.ndarray
    model_std: np.ndarray
    source_interval: dict[float, tuple[np.ndarray, np.ndarray]]
    model_interval: dict[float, tuple[np.ndarray, np.ndarray]]
    parameter_std: np.ndarray
    n_samples: int
    seconds: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(self.source_interval)

    def coverage(self, truth: np.ndarray, mask: np.ndarray | None = None, *, of: str = "source",
                 truth_sigma: np.ndarray | None = None) -> dict[float, np.ndarray]:
        """Per galaxy, the fraction of true pixels (``truth`` shaped like the source or model maps) inside
        each level's interval, over the pixels where ``mask`` is true (all if None). A calibrated posterior
        covers each level's fraction of them. ``truth_sigma`` (per galaxy, or maps): Gaussian noise of a
        truth that carries its own (a real galaxy's HST stamp): each interval is widened in quadrature by
        that noise's interval of the same level, so the test is of the posterior predictive of the stamp."""
        from scipy.stats import norm

        intervals = self.source_interval if of == "source" else self.model_interval
        truth = np.asarray(truth, dtype=float)
        m = np.ones(truth.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), truth.shape)
        noise = None
        if truth_sigma is not None:
            noise = np.asarray(truth_sigma, dtype=float)
            noise = noise[:, None, None] if noise.ndim == 1 else noise
        out = {}
        for level, (lo, hi) in intervals.items():
            if noise is not None:
                centre, half = (lo + hi) / 2, (hi - lo) / 2
                half = np.sqrt(half**2 + (norm.ppf((1 + level) / 2) * noise) ** 2)
                lo, hi = centre - half, centre + half
            inside = (truth >= lo) & (truth <= hi) & m
            out[level] = inside.sum((1, 2)) / np.maximum(m.sum((1, 2)), 1)
        return out


def parameters(z: np.ndarray, flux: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q = (z, log flux, dx, dy, log s) (B, latent_dim + 4) from a decoder fit's results (flux > 0)."""
    flux = np.asarray(flux, dtype=float)
    if np.any(~np.isfinite(flux)) or np.any(flux <= 0):
        bad = np.flatnonzero(~(flux > 0))
        raise ValueError(f"decoder fits with non-positive flux (galaxies {bad.tolist()[:10]}): no posterior in "
                         "log flux; refit them")
    return np.concatenate([np.asarray(z, float), np.log(flux)[:, None], np.asarray(offset, float),
                           np.log(np.asarray(scale, float))[:, None]], axis=1)


class _Model:
    """The decoder-fit model of a batch, as functions of q: sources, model images and whitened residuals."""

    def __init__(self, decode: torch.nn.Module, latent_dim: int, data: torch.Tensor, sigma: torch.Tensor,
                 forward: Forward | None, prior_weight: float, interpolation: str):
        self.decode, self.latent_dim, self.forward = decode, latent_dim, forward
        self.w = 1.0 / sigma
        self.dw = data * self.w
        self.prior_weight, self.interpolation = float(prior_weight), interpolation

    def source(self, q: torch.Tensor) -> torch.Tensor:
        """Rendered sources (n, H, W) of parameters q (n, P)."""
        L = self.latent_dim
        geometry = torch.cat([q[:, :L], q[:, L + 1:]], dim=1)
        return torch.exp(q[:, L])[:, None, None] * _unit_source(self.decode, geometry, L, self.interpolation)

    def image(self, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return source if self.forward is None else self.forward(source, index)

    def residuals(self, q: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Whitened residuals and prior terms (n, N_pix + latent_dim): ½|r|² is the −log posterior."""
        model = self.image(self.source(q), index)
        r = self.dw[index] - self.w[index] * model
        return torch.cat([r.flatten(1), self.prior_weight ** 0.5 * q[:, :self.latent_dim]], dim=1)


def _covariance_root(metric: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """A (…, P, P) with A Aᵀ = metric⁻¹ (symmetric; eigenvalues floored at ``floor`` × the largest: a direction
    the data and prior do not constrain gets a large but finite variance)."""
    lam, vec = torch.linalg.eigh(metric.double())
    lam = lam.clamp_min(floor * lam.amax(-1, keepdim=True).clamp_min(1e-300))
    return (vec * lam.rsqrt()[..., None, :]) @ vec.transpose(-1, -2)


def _batch_model(vae, data: np.ndarray, sig: np.ndarray, q: np.ndarray, forward: Forward | None,
                 prior_weight: float, interpolation: str, dtype: torch.dtype) -> tuple[_Model, torch.Tensor]:
    """The batch's model (the VAE's fused decoder, on the VAE's device) and the optima q as a tensor."""
    dev = next(vae.parameters()).device
    model = _Model(vae.fused_decoder().to(dev), int(vae.latent_dim), torch.as_tensor(data, dtype=dtype, device=dev),
                   torch.as_tensor(sig, dtype=dtype, device=dev), forward, prior_weight, interpolation)
    return model, torch.as_tensor(q, dtype=dtype, device=dev)


def _laplace_root(model: _Model, q: torch.Tensor, i: int, step: float, chunk: int) -> torch.Tensor:
    """A with A Aᵀ the Laplace covariance of galaxy i at its optimum q[i] (Gauss–Newton metric, double)."""
    index = torch.tensor([i], device=q.device)
    return _covariance_root(gauss_newton_metric(model.residuals, q[i:i + 1], index, step=step, chunk=chunk,
                                                per_point=True)[0])


def _summarise(sources: torch.Tensor, images: torch.Tensor, levels: Sequence[float]) -> dict:
    """Mean, std and equal-tailed intervals over the sample axis (0) of one galaxy's samples."""
    out = {"source_mean": sources.mean(0), "source_std": sources.std(0), "model_mean": images.mean(0),
           "model_std": images.std(0)}
    qs = torch.tensor([p for lv in levels for p in ((1 - lv) / 2, (1 + lv) / 2)], dtype=sources.dtype)
    sq = torch.quantile(sources.flatten(1), qs, dim=0).reshape(len(qs), *sources.shape[1:])
    iq = torch.quantile(images.flatten(1), qs, dim=0).reshape(len(qs), *images.shape[1:])
    for k, lv in enumerate(levels):
        out[("source", lv)] = (sq[2 * k], sq[2 * k + 1])
        out[("model", lv)] = (iq[2 * k], iq[2 * k + 1])
    return out


def _collect(method: str, summaries: list[dict], parameter_std: np.ndarray, n_samples: int, seconds: np.ndarray,
             levels: Sequence[float], diagnostics: dict | None = None) -> DecoderPosterior:
    def stack(key):
        return np.stack([s[key].cpu().double().numpy() for s in summaries])

    def pairs(kind):
        return {lv: (np.stack([s[(kind, lv)][0].cpu().double().numpy() for s in summaries]),
                     np.stack([s[(kind, lv)][1].cpu().double().numpy() for s in summaries])) for lv in levels}

    return DecoderPosterior(method, stack("source_mean"), stack("source_std"), stack("model_mean"),
                            stack("model_std"), pairs("source"), pairs("model"), parameter_std, n_samples, seconds,
                            diagnostics or {})


def _check(data: np.ndarray, sigma, q: np.ndarray, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    from .decoder import _as_sigma

    sig = np.array(_as_sigma(sigma, len(data), data.shape[1:]))   # a writable copy for torch
    if len(q) != len(data):
        raise ValueError(f"{len(q)} fitted parameter sets for {len(data)} images")
    if not np.isfinite(data).all():
        raise ValueError("data contain NaN or infinite pixels")
    if not all(0 < lv < 1 for lv in levels):
        raise ValueError(f"interval levels must lie in (0, 1), got {list(levels)}")
    return data, sig


def laplace_posterior(vae, data: np.ndarray, sigma, q: np.ndarray, *, forward: Forward | None = None,
                      source_map: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      prior_weight: float = 1.0, n_samples: int = 200, levels: Sequence[float] = LEVELS,
                      seed: int = 0, interpolation: str = "bicubic", dtype: torch.dtype = torch.float32,
                      step: float = 1e-2, chunk: int = 128, progress: bool = False) -> DecoderPosterior:
    """Laplace posterior of decoder fits at their optimum ``q`` (B, P) (:func:`parameters` of a fit) of
    ``data`` (B, H', W') with noise ``sigma`` (scalar, per image or maps); ``forward(source, index)`` as in
    :func:`sourcelens.fit.decoder.fit_decoder` (None: unlensed); ``source_map(source, index)`` maps rendered
    sources to the grid reported (None: the decoder's). ``n_samples`` draws per galaxy from ``seed``
    (galaxy i uses the generator seeded (seed, i): results do not depend on the batch)."""
    data, sig = _check(data, sigma, q, levels)
    n_samples = int(n_samples)
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    latent_dim = int(vae.latent_dim)
    dev = next(vae.parameters()).device
    summaries, pstd, seconds = [], [], []
    with frozen(vae), torch.no_grad():
        model, qt = _batch_model(vae, data, sig, q, forward, prior_weight, interpolation, dtype)
        for i in tqdm(range(len(data)), desc="Laplace posteriors", unit="galaxy", disable=not progress, leave=False):
            t0 = time.perf_counter()
            index = torch.tensor([i], device=dev)
            root = _laplace_root(model, qt, i, step, chunk)           # (P, P), double
            pstd.append(torch.sqrt((root @ root.T).diagonal()).cpu().numpy())
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0]))
            eps = torch.randn(n_samples, root.shape[0], generator=gen, dtype=torch.float64)
            draws = (qt[i].double() + eps @ root.T).to(dtype)
            summaries.append(_summarise_draws(model, draws, i, source_map, chunk, levels))
            seconds.append(time.perf_counter() - t0)
    return _collect("laplace", summaries, np.stack(pstd), n_samples, np.asarray(seconds), levels)


def _summarise_draws(model: _Model, draws: torch.Tensor, i: int, source_map, chunk: int,
                     levels: Sequence[float]) -> dict:
    """Sources and model images of one galaxy's parameter draws (S, P), summarised."""
    sources, images = [], []
    with torch.no_grad():
        for start in range(0, len(draws), chunk):
            d = draws[start:start + chunk]
            index = torch.full((len(d),), i, dtype=torch.long, device=d.device)
            s = model.source(d)
            images.append(model.image(s, index))
            sources.append(s if source_map is None else source_map(s, index))
    return _summarise(torch.cat(sources).double(), torch.cat(images).double(), levels)


def nuts_posterior(vae, data: np.ndarray, sigma, q: np.ndarray, *, forward: Forward | None = None,
                   source_map: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   prior_weight: float = 1.0, n_samples: int = 200, warmup: int = 200, max_tree_depth: int = 6,
                   levels: Sequence[float] = LEVELS, seed: int = 0, interpolation: str = "bicubic",
                   dtype: torch.dtype = torch.float64, step: float = 1e-2, chunk: int = 128,
                   progress: bool = False) -> DecoderPosterior:
    """NUTS posterior (Pyro) of decoder fits, one chain per galaxy started at the optimum ``q`` and run in
    coordinates whitened by the Laplace covariance; arguments as :func:`laplace_posterior`, plus ``warmup``
    (step-size adaptation; discarded) and ``max_tree_depth``. Galaxy i's chain is seeded by (seed, i).
    ``diagnostics``: ``divergences``, ``accept_prob`` (mean), ``step_size`` per galaxy."""
    import pyro
    from pyro.infer.mcmc import MCMC, NUTS

    data, sig = _check(data, sigma, q, levels)
    latent_dim = int(vae.latent_dim)
    dev = next(vae.parameters()).device
    summaries, pstd, seconds = [], [], []
    diag: dict[str, list] = {"divergences": [], "accept_prob": [], "step_size": []}
    with frozen(vae):
        model, qt = _batch_model(vae, data, sig, q, forward, prior_weight, interpolation, dtype)
        for i in tqdm(range(len(data)), desc="NUTS posteriors", unit="galaxy", disable=not progress, leave=False):
            t0 = time.perf_counter()
            index = torch.tensor([i], device=dev)
            with torch.no_grad():
                root = _laplace_root(model, qt, i, step, chunk).to(dtype)
            q0 = qt[i]

            def potential(params: dict) -> torch.Tensor:
                qq = (q0 + root @ params["u"])[None]
                r = model.residuals(qq, index)
                return 0.5 * (r * r).sum()

            pyro.set_rng_seed(int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0]))
            kernel = NUTS(potential_fn=potential, adapt_step_size=True, adapt_mass_matrix=True,
                          full_mass=False, max_tree_depth=int(max_tree_depth), jit_compile=False)
            mcmc = MCMC(kernel, num_samples=int(n_samples), warmup_steps=int(warmup),
                        initial_params={"u": torch.zeros(len(q0), dtype=dtype, device=dev)}, disable_progbar=True)
            mcmc.run()
            u = mcmc.get_samples()["u"].to(dtype)
            draws = q0 + u @ root.T
            pstd.append(draws.std(0).double().cpu().numpy())
            extra = mcmc.diagnostics()
            diag["divergences"].append(len(extra.get("divergences", {}).get("chain 0", [])))
            diag["accept_prob"].append(float(extra.get("acceptance rate", {}).get("chain 0", np.nan)))
            diag["step_size"].append(float(kernel.step_size))
            summaries.append(_summarise_draws(model, draws, i, source_map, chunk, levels))
            seconds.append(time.perf_counter() - t0)
    return _collect("nuts", summaries, np.stack(pstd), int(n_samples), np.asarray(seconds), levels,
                    {k: np.asarray(v) for k, v in diag.items()})


def decoder_posterior(method: str, *args, **kwargs) -> DecoderPosterior:
    """:func:`laplace_posterior` or :func:`nuts_posterior` by name (``method``: one of :data:`METHODS`)."""
    if method == "laplace":
        kwargs = {k: v for k, v in kwargs.items() if k not in ("warmup", "max_tree_depth")}
        return laplace_posterior(*args, **kwargs)
    if method == "nuts":
        return nuts_posterior(*args, **kwargs)
    raise ValueError(f"posterior method must be one of {', '.join(METHODS)}, not {method!r}")


__all__ = ["DecoderPosterior", "LEVELS", "METHODS", "decoder_posterior", "laplace_posterior", "nuts_posterior",
           "parameters"]
