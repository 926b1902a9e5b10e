"""A regularised pixelated source behind a known lens: the classical linear inversion, a baseline for every
method that recovers a source (decoder fits, U-Net delensing, super-resolution).

The source s (flux per pixel on a grid) solves the normal equations ``(Lᵀ N⁻¹ L + λ' RᵀR) s = Lᵀ N⁻¹ d`` with
the sparse lensing operator L (:class:`sourcelens.lensing.BilinearLensingOperator`, PSF and binning included),
by Jacobi-preconditioned conjugate gradients; R takes first (``"gradient"``) or second (``"curvature"``)
differences; ``λ' = λ · median(diag Lᵀ N⁻¹ L)`` over the source pixels that rays reach, so λ (the config's
``fit.lensed.regularisation``) is dimensionless: 1 weights the regulariser like one typical pixel of data.
No positivity constraint.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..lensing import BilinearLensingOperator, LensingSimulator, convolve_fft
from ..metrics import chi2 as chi2_of
from .common import FitResult
from .scenes import DTYPE, LensedScenes, lens_kwargs_torch, torch_simulator

__all__ = ["regulariser_rtr", "normal_operator", "solve_pixelated", "fit_pixelated"]


def regulariser_rtr(s: Tensor, kind: str = "gradient") -> Tensor:
    """``RᵀR s`` for a source ``s`` (..., m, m): first (gradient) or second (curvature) differences
    along both axes, no differences across the border."""
    out = torch.zeros_like(s)
    if kind == "gradient":
        for dim in (-1, -2):
            n = s.shape[dim]
            d = s.narrow(dim, 1, n - 1) - s.narrow(dim, 0, n - 1)
            out.narrow(dim, 1, n - 1).add_(d)
            out.narrow(dim, 0, n - 1).sub_(d)
    elif kind == "curvature":
        for dim in (-1, -2):
            n = s.shape[dim]
            d = s.narrow(dim, 2, n - 2) - 2 * s.narrow(dim, 1, n - 2) + s.narrow(dim, 0, n - 2)
            out.narrow(dim, 2, n - 2).add_(d)
            out.narrow(dim, 1, n - 2).sub_(2 * d)
            out.narrow(dim, 0, n - 2).add_(d)
    else:
        raise ValueError(f"unknown regulariser {kind!r}; allowed: gradient, curvature")
    return out


def _finish_adjoint(sim: LensingSimulator, image: Tensor) -> Tensor:
    """Adjoint of ``sim.finish`` (downsampling, then PSF): replicate blocks, correlate with the PSF."""
    f = sim.downsample
    if f > 1:
        image = image.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    if sim.psf is not None:
        image = convolve_fft(image, sim.psf.flip(-1, -2))
    return image


def _data_diagonal(op: BilinearLensingOperator, inv_var: Tensor) -> Tensor:
    """diag(Mᵀ W M) of the lensing matrix before the PSF (a Jacobi preconditioner), (m, m)."""
    mat = op.matrix
    sq = torch.sparse_csr_tensor(mat.crow_indices(), mat.col_indices(), mat.values() ** 2, mat.shape,
                                 check_invariants=False)
    w = inv_var
    f = op.simulator.downsample
    if f > 1:
        w = w.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    diag = w.reshape(1, -1).to(sq.dtype) @ sq
    return diag.reshape(op.source_shape)


def normal_operator(op: BilinearLensingOperator, sigma: Tensor, lam: float, kind: str = "gradient"):
    """``s -> (Lᵀ N⁻¹ L + lam RᵀR) s`` with ``L = op.apply`` (lensing, PSF, downsampling)."""
    inv_var = 1.0 / sigma**2

    def apply(s: Tensor) -> Tensor:
        r = op.apply(s) * inv_var
        out = op.adjoint(_finish_adjoint(op.simulator, r))
        if lam:
            out = out + lam * regulariser_rtr(s, kind)
        return out

    return apply


def solve_pixelated(op: BilinearLensingOperator, data: Tensor, sigma: Tensor, regularisation: float,
                    kind: str = "gradient", tol: float = 1e-6, max_iter: int = 2000
                    ) -> tuple[Tensor, dict[str, Any]]:
    """Regularised pixelated source (m, m) solving ``(Lᵀ N⁻¹ L + λ' RᵀR) s = Lᵀ N⁻¹ d`` by Jacobi-
    preconditioned conjugate gradients; ``λ' = regularisation · median(diag Lᵀ N⁻¹ L)`` over the
    covered pixels (see the module doc). Returns the source and info (``lambda_eff``, ``iterations``,
    ``residual``, ``covered``: source pixels reached by the rays)."""
    data, sigma = data.to(DTYPE), sigma.to(DTYPE)
    inv_var = 1.0 / sigma**2
    diag = _data_diagonal(op, inv_var)
    covered = diag > 0
    scale = float(diag[covered].median()) if covered.any() else 1.0
    covered = diag > 0.05 * scale
    lam = float(regularisation) * scale
    A = normal_operator(op, sigma, lam, kind)
    b = op.adjoint(_finish_adjoint(op.simulator, data * inv_var))
    precond = diag + lam * (4.0 if kind == "gradient" else 12.0)
    precond = torch.where(precond > 0, precond, torch.ones_like(precond) * scale)
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / precond
    p = z.clone()
    rz = (r * z).sum()
    b_norm = float(b.norm()) or 1.0
    it = 0
    for it in range(1, int(max_iter) + 1):
        ap = A(p)
        alpha = rz / (p * ap).sum()
        x = x + alpha * p
        r = r - alpha * ap
        if float(r.norm()) <= tol * b_norm:
            break
        z = r / precond
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, {"lambda_eff": lam, "iterations": it, "residual": float(r.norm()) / b_norm,
               "covered": covered.numpy()}


def fit_pixelated(scenes: LensedScenes, regularisation: float = 1.0, kind: str = "gradient", tol: float = 1e-6,
                  max_iter: int = 2000) -> FitResult:
    """Regularised pixelated source of every scene on its evaluation grid, the lens at its true parameters."""
    sim = torch_simulator(scenes)
    m = scenes.stamps.shape[-1]
    b = len(scenes)
    models, sources, chi2 = np.empty_like(scenes.data), np.empty((b, m, m)), np.empty(b)
    secs, iters, covered = np.empty(b), [], np.empty((b, m, m), dtype=bool)
    for i in range(b):
        t0 = time.perf_counter()
        lens_models, kw = lens_kwargs_torch(scenes, i)
        op = BilinearLensingOperator(sim, lens_models, kw, (m, m), float(scenes.source_pixel_scale[i]))
        d = torch.as_tensor(scenes.data[i], dtype=DTYPE)
        sg = torch.as_tensor(scenes.sigma[i], dtype=DTYPE)
        s, info = solve_pixelated(op, d, sg, regularisation, kind, tol, max_iter)
        with torch.no_grad():
            model = op.apply(s)
        secs[i] = time.perf_counter() - t0
        models[i], sources[i] = model.numpy(), s.numpy()
        chi2[i] = float(chi2_of(d, model, sg))
        iters.append(info["iterations"])
        covered[i] = info["covered"]
    return FitResult("pixelated", models, sources, chi2, 0, secs,
                     {"iterations": iters, "covered": covered, "regularisation": regularisation, "kind": kind})
