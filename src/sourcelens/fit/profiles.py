"""Analytic source models fitted through any imaging problem: the elliptical Sérsic and Sérsic + shapelets,
the baselines of the decoder fits, unlensed (stamps as they are) and lensed (through a fixed lens, with the
simulation's PSF and supersampling) by the same code (:class:`sourcelens.fit.common.ImagingProblem`).

**Sérsic** (lenstronomy's ``SERSIC_ELLIPSE``, :func:`sourcelens.lensing.sersic`): 7 free parameters — amplitude,
``R_sersic``, ``n_sersic`` (0.3–6), ``e1``, ``e2`` (|e| < 0.6), ``center_x``, ``center_y``. The amplitude is
linear and profiled out (its χ²-optimal non-negative value at every step); the six others are fitted in
bounded coordinates (log R, logistic n, tanh e) by a per-galaxy L-BFGS (:func:`sourcelens.fit.lbfgs.minimize_lbfgs`)
whitened with each galaxy's own Gauss–Newton matrix at its start, from the second moments of a start image
(the data for stamps, the pixelated reconstruction for lensed images), twice — n = 1 and n = 4 — keeping the
lower χ².

**Sérsic + shapelets**: the Sérsic of the fit (shape fixed) and every Cartesian shapelet up to order ``n_max``
centred on it are imaged through the problem and their amplitudes solved jointly by weighted linear least
squares. The shapelet scale β is the best (lowest χ²) of ``beta_factors`` × R_sersic / 1.18 (the σ of a
Gaussian of that half-light radius), each clipped to what the evaluation grid resolves (finest scale
β/√(n_max + 1) ≥ 0.6 pixel, largest β√(n_max + 1) ≤ 0.8 of the half-grid). Free parameters:
(n_max + 1)(n_max + 2)/2 shapelet amplitudes + the Sérsic's 7 + β.
"""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..lensing import sersic
from ..metrics import chi2 as chi2_of
from .common import FitResult, ImagingProblem, best_amplitude, image_moments
from .lbfgs import gauss_newton_metric, inverse_sqrt, minimize_lbfgs

__all__ = ["SERSIC_N_PARAMS", "hermite_functions", "shapelet_basis", "shapelet_n_params", "shapelet_betas",
           "fit_sersic", "fit_sersic_shapelets"]

SERSIC_N_PARAMS = 7          # amp, R_sersic, n_sersic, e1, e2, center_x, center_y
N_SERSIC_RANGE = (0.3, 6.0)
E_MAX = 0.6
_RAW = ("log_R", "n_raw", "e1_raw", "e2_raw", "center_x", "center_y")


def shapelet_n_params(n_max: int) -> int:
    """Number of shapelet coefficients up to order ``n_max``."""
    return (int(n_max) + 1) * (int(n_max) + 2) // 2


def _physical(raw: Tensor) -> dict[str, Tensor]:
    """Sérsic shape parameters (unit amplitude) from the bounded coordinates (b, 6)."""
    lo, hi = N_SERSIC_RANGE
    return {"amp": torch.ones_like(raw[:, 0]), "R_sersic": raw[:, 0].exp(),
            "n_sersic": lo + (hi - lo) * torch.sigmoid(raw[:, 1]),
            "e1": E_MAX * torch.tanh(raw[:, 2]), "e2": E_MAX * torch.tanh(raw[:, 3]),
            "center_x": raw[:, 4], "center_y": raw[:, 5]}


def _sersic_sb(x: Tensor, y: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    return sersic(x, y, p["amp"], p["R_sersic"], p["n_sersic"], p["e1"], p["e2"], p["center_x"], p["center_y"])


def _start(problem: ImagingProblem, start_images: np.ndarray, n_init: float) -> Tensor:
    """Bounded coordinates (B, 6) of the moment-matched start with Sérsic index ``n_init``."""
    pix, m = problem.grid_pixel_scale.numpy(), problem.grid[0].shape[-1]
    mo = image_moments(start_images, pix)
    lo, hi = N_SERSIC_RANGE
    r0 = np.clip(1.2 * mo["size"], 0.5 * pix, m * pix)
    cols = [np.log(r0), np.full(len(r0), math.log((n_init - lo) / (hi - n_init))),
            np.arctanh(np.clip(mo["e1"], -0.5, 0.5) / E_MAX), np.arctanh(np.clip(mo["e2"], -0.5, 0.5) / E_MAX),
            mo["cx"], mo["cy"]]
    return torch.as_tensor(np.stack(cols, 1), dtype=problem.data.dtype)


def fit_sersic(problem: ImagingProblem, start_images: np.ndarray | None = None, *, max_iter: int = 200,
               tolerance_change: float = 5e-3, patience: int = 2, n_starts: Sequence[float] = (1.0, 4.0),
               chunk_rows: int = 256) -> FitResult:
    """Elliptical Sérsic fits of every image of ``problem`` (see the module docstring). ``start_images``
    (B, m, m) on the evaluation grid give the starting moments (default: the data, for unlensed stamps).
    ``info["params"]``: the 7 parameters per galaxy (units of the problem)."""
    t0 = time.perf_counter()
    b = len(problem)
    starts = problem.data.numpy() if start_images is None else np.asarray(start_images, dtype=float)
    x0 = torch.cat([_start(problem, starts, n) for n in n_starts])        # (S·B, 6): start s of galaxy i at s·B + i
    rows = torch.arange(len(x0)) % b
    w = 1.0 / problem.sigma

    def residuals(x: Tensor, index: Tensor) -> Tensor:
        """Whitened residuals (b, n²) with the amplitude profiled out."""
        g = rows[index]
        unit = problem.image(_sersic_sb(*problem.rays_of(g), _physical(x)))
        wm, wd = unit * w[g], problem.data[g] * w[g]
        amp = best_amplitude(wm, wd, non_negative=True)
        return (wd - amp[:, None, None] * wm).flatten(1)

    with torch.no_grad():
        transform = inverse_sqrt(gauss_newton_metric(residuals, x0, torch.arange(len(x0)), chunk=chunk_rows,
                                                     per_point=True))

    def objective(u: Tensor, index: Tensor) -> Tensor:
        r = residuals(x0[index] + torch.einsum("bij,bj->bi", transform[index], u), index)
        return 0.5 * (r * r).sum(1)

    res = minimize_lbfgs(objective, torch.zeros_like(x0), max_iter=max_iter, tolerance_grad=1e-5,
                         tolerance_change=tolerance_change, patience=patience, unit_first_step=True,
                         chunk_rows=chunk_rows)
    best = res.loss.reshape(len(n_starts), b).argmin(0)                    # the better start per galaxy
    pick = best * b + torch.arange(b)
    with torch.no_grad():
        x = x0[pick] + torch.einsum("bij,bj->bi", transform[pick], res.x[pick])
        p = _physical(x)
        unit = problem.image(_sersic_sb(*problem.rays_of(torch.arange(b)), p))
        p["amp"] = best_amplitude(unit, problem.data, problem.sigma, non_negative=True)
        model = p["amp"][:, None, None] * unit
        ex, ey = problem.grid
        source = _sersic_sb(ex, ey, p) * problem.grid_pixel_scale[:, None, None] ** 2
    seconds = np.full(b, (time.perf_counter() - t0) / b)
    return FitResult("sersic", model.numpy(), source.numpy(), np.asarray(chi2_of(problem.data, model, problem.sigma)),
                     SERSIC_N_PARAMS, seconds,
                     {"params": {k: v.numpy() for k, v in p.items()}, "n_iter": res.n_iter[pick.numpy()],
                      "status": res.status[pick.numpy()], "start_n": np.asarray(n_starts)[best.numpy()]})


# --------------------------------------------------------------------------------------------
# shapelets
# --------------------------------------------------------------------------------------------
def hermite_functions(x: Tensor, n_max: int) -> Tensor:
    """Hermite functions φ_0..φ_{n_max} at ``x``: (n_max + 1, *x.shape), φ_n = (2ⁿ n! √π)^(-1/2) H_n(x) e^(-x²/2)
    (orthonormal on the line), by the stable three-term recurrence."""
    out = [math.pi**-0.25 * torch.exp(-0.5 * x**2)]
    if n_max >= 1:
        out.append(math.sqrt(2.0) * x * out[0])
    for n in range(1, n_max):
        out.append(math.sqrt(2.0 / (n + 1)) * x * out[n] - math.sqrt(n / (n + 1)) * out[n - 1])
    return torch.stack(out[: n_max + 1])


def shapelet_basis(x: Tensor, y: Tensor, n_max: int, beta: float, center_x: float = 0.0,
                   center_y: float = 0.0) -> Tensor:
    """Cartesian shapelets B_{n1 n2} = φ_n1(x/β) φ_n2(y/β) / β at ``x, y`` for n1 + n2 ≤ n_max, ordered by
    n = n1 + n2 then n2 (lenstronomy's ``SHAPELETS`` order): ((n_max+1)(n_max+2)/2, *x.shape).

    Orthonormal on the sky (∫ B² dx dy = 1). lenstronomy's ``SHAPELETS`` has the same functions without the
    1/β (its amplitudes are these coefficients divided by β); the span, and so every fit, is the same."""
    hx = hermite_functions((x - center_x) / beta, n_max)
    hy = hermite_functions((y - center_y) / beta, n_max)
    cols = [hx[n - k] * hy[k] for n in range(n_max + 1) for k in range(n + 1)]
    return torch.stack(cols) / beta


def shapelet_betas(r_sersic: float, n_max: int, pixel_scale: float, grid_size: int,
                   factors: Sequence[float] = (0.5, 1.0, 2.0)) -> list[float]:
    """Candidate shapelet scales: ``factors`` × R_sersic / 1.18, clipped to what a grid of ``grid_size`` pixels
    of ``pixel_scale`` resolves (see the module docstring); distinct values, ascending."""
    root = math.sqrt(int(n_max) + 1.0)
    lo, hi = 0.6 * root * pixel_scale, 0.8 * (grid_size * pixel_scale / 2.0) / root
    if lo > hi:
        return [math.sqrt(lo * hi)]
    return sorted({float(np.clip(f * r_sersic / 1.18, lo, hi)) for f in factors})


def fit_sersic_shapelets(problem: ImagingProblem, sersic_fit: FitResult, n_max: int,
                         beta_factors: Sequence[float] = (0.5, 1.0, 2.0)) -> FitResult:
    """Sérsic + shapelets up to ``n_max`` (module docstring) on the Sérsic fits ``sersic_fit`` of the same
    problem. ``seconds`` include the Sérsic fit's."""
    m = problem.grid[0].shape[-1]
    b = len(problem)
    k = shapelet_n_params(n_max)
    dtype = problem.data.dtype
    models, sources = np.empty(tuple(problem.data.shape)), np.empty((b, m, m))
    chi2, secs, betas = np.empty(b), np.empty(b), np.empty(b)
    for i in range(b):
        t0 = time.perf_counter()
        p = {key: torch.as_tensor(np.atleast_1d(v[i]), dtype=dtype) for key, v in sersic_fit.info["params"].items()}
        p["amp"] = torch.ones(1, dtype=dtype)
        cx, cy = float(p["center_x"]), float(p["center_y"])
        ex, ey = problem.grid_of(i)
        pix = float(problem.grid_pixel_scale[i])
        bx, by = problem.rays_of(torch.tensor([i]))
        bx, by = bx.reshape(bx.shape[-2:]), by.reshape(by.shape[-2:])
        sersic_image = problem.image(_sersic_sb(bx[None], by[None], p))
        w = 1.0 / problem.sigma[i]
        best = None
        for beta in shapelet_betas(float(p["R_sersic"]), n_max, pix, m, beta_factors):
            cols = torch.cat([sersic_image, problem.image(shapelet_basis(bx, by, n_max, beta, cx, cy))])
            a = (cols * w).reshape(k + 1, -1).T
            coef = torch.linalg.lstsq(a, (problem.data[i] * w).reshape(-1, 1), driver="gelsd").solution[:, 0]
            model = (coef[:, None, None] * cols).sum(0)
            c2 = float(chi2_of(problem.data[i], model, problem.sigma[i]))
            if best is None or c2 < best[0]:
                best = (c2, beta, coef, model)
        chi2[i], betas[i], coef, model = best
        basis = torch.cat([_sersic_sb(ex[None], ey[None], p), shapelet_basis(ex, ey, n_max, betas[i], cx, cy)])
        sources[i] = ((coef[:, None, None] * basis).sum(0) * pix**2).numpy()
        models[i] = model.numpy()
        secs[i] = time.perf_counter() - t0
    return FitResult(f"sersic+shapelets{int(n_max)}", models, sources, chi2, k + SERSIC_N_PARAMS + 1,
                     secs + sersic_fit.seconds, {"beta": betas, "n_max": int(n_max)})
