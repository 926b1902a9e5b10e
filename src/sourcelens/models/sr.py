"""Super-resolution inference by any method (studies 001 and 004), one code path for the CLI
(``sourcelens super-resolve``) and the evaluation (:mod:`sourcelens.evaluate.super_resolution`).

Methods (:data:`sourcelens.names.SR_METHODS`): ``bicubic`` (no model), ``supervised`` and ``lenssr_with_source``
(an :class:`~.sisr.SISR`), ``lenssr_no_source`` (:class:`~.lenssr.LensSRNoSource`), ``pisr`` (:class:`~.pisr.PISR`).
How each uses a lens: :data:`sourcelens.names.SR_LENS_USE`. Images in and out in flux per pixel (the output per
high-resolution pixel), as the datasets store them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..names import SR_LENS_USE, SR_METHODS

__all__ = ["SR_METHODS", "SR_LENS_USE", "load_sr_model", "run_super_resolution"]



def load_sr_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """A super-resolution model file (SISR, LensSR without source, PISR: whichever format it holds) and its
    method (an SISR file records whether it is ``supervised`` or ``lenssr_with_source``); errors name the
    file."""
    from .lenssr import load_lenssr
    from .pisr import load_pisr
    from .sisr import load_sisr

    path = Path(path)
    found = None
    model = None
    for loader in (load_sisr, load_lenssr, load_pisr):
        try:
            model = loader(path, map_location)
            break
        except ValueError as err:
            match = re.search(r"\(format (.*?), expected", str(err))
            if match is None:       # damaged, or the weights do not fit: not a question of format
                raise
            found = match.group(1)
    if model is None:
        raise ValueError(f"'{path}' is not a sourcelens super-resolution model file (SISR, LensSR or PISR; format "
                         f"{found})")
    kind = type(model).__name__
    if kind == "PISR":
        return model, "pisr"
    if kind == "LensSRNoSource":
        return model, "lenssr_no_source"
    method = (getattr(model, "extra", None) or {}).get("method", "supervised")
    return model, method if method in ("supervised", "lenssr_with_source") else "supervised"


def run_super_resolution(method: str, model: nn.Module | None, low_res: np.ndarray, lenses: Sequence | None = None,
                         *, factor: int = 2, batch_size: int = 16, device: torch.device | None = None,
                         noise_sigma: np.ndarray | float | None = None, data_consistency: bool = False
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Super-resolved images (N, fn, fn), flux per high-resolution pixel, of low-resolution images (N, n, n),
    flux per pixel, by ``method`` (``model``: its network; None for ``bicubic``, which upsamples by ``factor``),
    and the sources (N, fn, fn), flux per high-resolution source cell, of the methods that yield one (PISR;
    LensSR without source given ``lenses``), else None. ``lenses``: one :class:`~sourcelens.lensing.SRLens` per
    image, needed by PISR, used by LensSR without source for its source, ignored by the others.

    ``noise_sigma``: the low-res images' noise per pixel (same units, or one number; 0 for noiseless data), used
    by the methods that can: PISR refines its sources on the data (:func:`~.pisr.refine_sources`). With
    ``data_consistency`` the images are then moved onto their data to that noise level
    (:func:`sourcelens.lensing.data_consistency`): only right where each low-res pixel is the sum of its
    ``factor × factor`` high-res pixels."""
    from .sisr import bicubic_super_resolve, super_resolve

    if method not in SR_METHODS:
        raise ValueError(f"unknown super-resolution method {method!r}; expected one of {SR_METHODS}")
    if data_consistency and noise_sigma is None:
        raise ValueError("data consistency needs the images' noise_sigma (0 for noiseless images)")
    if method == "bicubic":
        f = int(model.hparams["factor"]) if model is not None else int(factor)
        images, sources = bicubic_super_resolve(low_res, f), None
    elif model is None:
        raise ValueError(f"the {method} method needs its trained model")
    elif method == "pisr":
        from .pisr import pisr_super_resolve

        if lenses is None:
            raise ValueError("PISR needs the lens of every image")
        images, sources = pisr_super_resolve(model, lenses, low_res, batch_size=batch_size, noise_sigma=noise_sigma)
    elif method == "lenssr_no_source":
        from .lenssr import lenssr_super_resolve

        images, sources = lenssr_super_resolve(model, low_res, lenses, batch_size=batch_size)
    else:
        images, sources = super_resolve(model, low_res, batch_size=batch_size,
                                        device=device or torch.device("cpu")), None
    if data_consistency:
        from ..lensing.superres import data_consistency as consistent

        images = consistent(images, low_res, noise_sigma, images.shape[-1] // np.asarray(low_res).shape[-1])[0]
    return images, sources
