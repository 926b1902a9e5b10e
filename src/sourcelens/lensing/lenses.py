"""Lens models (SIS, SIE, EPL, external shear and their sums) in lenstronomy's parameters.

A lens is described as in lenstronomy: a list of model names and a list of keyword dicts,
e.g. ``(["SIE", "SHEAR"], [dict(theta_E=1.0, e1=0.1, e2=0.0, center_x=0, center_y=0),
dict(gamma1=0.03, gamma2=-0.01)])``. Every value may be a float or a tensor of shape ``(B,)``
(a batch of lenses); grids are ``(..., H, W)`` and outputs broadcast to ``(B, H, W)``.

The deflections are caustics' functional formulas (``caustics.lenses.func``: Keeton 2002 for
the SIE, Tessore & Metcalf 2015 for the EPL) called with natively broadcast tensors, which is
differentiable and batched without caustics' module/parameter machinery; this module only
converts parameters (see :mod:`sourcelens.lensing.conventions`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .conventions import as_param, ellipticity_to_phi_q

__all__ = ["LENS_MODELS", "deflection", "ray_shoot", "EPL_MAX_ITER", "CORE_ARCSEC"]

LENS_MODELS = ("SIS", "SIE", "EPL", "SHEAR")
EPL_MAX_ITER = 1000
"""Most terms of the EPL angular series; the series ratio is ``(1-q)/(1+q)`` and the number
of terms is chosen per call so that the last one is below the dtype's epsilon (17 terms in
float64 at q = 0.8, 120 at q = 0.25)."""
CORE_ARCSEC = 1e-12
"""Core radius (arcsec) for SIS/SIE so that a ray exactly on the centre stays finite."""


def _func():
    from caustics.lenses import func  # deferred: importing caustics takes seconds

    return func


def _epl_terms(q: Tensor) -> int:
    ratio = float(((1 - q) / (1 + q)).detach().abs().max())
    if ratio <= 0:
        return 1
    eps = torch.finfo(q.dtype).eps / 10
    return int(min(EPL_MAX_ITER, max(4, math.ceil(math.log(eps) / math.log(ratio)) + 1)))


def _centre(kw: Mapping[str, Any], like: Tensor) -> tuple[Tensor, Tensor]:
    return as_param(kw.get("center_x", 0.0), like), as_param(kw.get("center_y", 0.0), like)


def _one(model: str, kw: Mapping[str, Any], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    f = _func()
    if model == "SIS":
        x0, y0 = _centre(kw, x)
        return f.reduced_deflection_angle_sis(x0, y0, as_param(kw["theta_E"], x), x, y, s=CORE_ARCSEC)
    if model in ("SIE", "EPL"):
        x0, y0 = _centre(kw, x)
        phi, q = ellipticity_to_phi_q(as_param(kw["e1"], x), as_param(kw["e2"], x))
        rein = as_param(kw["theta_E"], x)
        if model == "SIE":
            return f.reduced_deflection_angle_sie(x0, y0, q, phi, rein, x, y, s=CORE_ARCSEC)
        t = as_param(kw["gamma"], x) - 1
        return f.reduced_deflection_angle_epl(x0, y0, q, phi, rein, t, x, y, _epl_terms(q), 1)
    if model == "SHEAR":
        x0 = as_param(kw.get("ra_0", 0.0), x)
        y0 = as_param(kw.get("dec_0", 0.0), x)
        return f.reduced_deflection_angle_external_shear(
            x0, y0, as_param(kw["gamma1"], x), as_param(kw["gamma2"], x), x, y)
    raise ValueError(f"unknown lens model {model!r}; known: {LENS_MODELS}")


def deflection(x: Tensor, y: Tensor, lens_models: Sequence[str],
               kwargs_lens: Sequence[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
    """Deflection ``(alpha_x, alpha_y)`` in arcsec at image-plane positions ``x, y`` (arcsec).

    Equals lenstronomy's ``LensModel(lens_models).alpha(x, y, kwargs_lens)`` (single plane).
    """
    if len(lens_models) != len(kwargs_lens):
        raise ValueError("lens_models and kwargs_lens differ in length")
    ax = ay = None
    for model, kw in zip(lens_models, kwargs_lens):
        dx, dy = _one(model, kw, x, y)
        ax = dx if ax is None else ax + dx
        ay = dy if ay is None else ay + dy
    if ax is None:
        return torch.zeros_like(x), torch.zeros_like(y)
    return ax, ay


def ray_shoot(x: Tensor, y: Tensor, lens_models: Sequence[str],
              kwargs_lens: Sequence[Mapping[str, Any]]) -> tuple[Tensor, Tensor]:
    """Source-plane positions ``beta = theta - alpha(theta)`` (arcsec)."""
    ax, ay = deflection(x, y, lens_models, kwargs_lens)
    return x - ax, y - ay
