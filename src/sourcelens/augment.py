"""Augmentation of galaxy stamps: the 8 dihedral copies and arbitrary-angle rotations.

Every copy keeps its parent's ``source_id`` (so splits by source never leak) and records how
it was made in ``augmentation``. Rotations by arbitrary angles use a cubic spline and are
rescaled to the parent's exact total flux.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage


def rotate_flux_conserving(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate ``image`` about its centre by ``angle_deg`` by a cubic spline, rescaled to the input's total flux.

    Counter-clockwise as the array is printed (row 0 on top), i.e. clockwise on the sky in the project's
    convention (x = column, y = row, figures drawn with ``origin="lower"``): GalSim's ``rotate(-angle)``.
    """
    out = ndimage.rotate(image.astype(np.float64), angle_deg, reshape=False, order=3, mode="constant", cval=0.0)
    total_in, total_out = float(image.sum()), float(out.sum())
    if total_out != 0 and total_in != 0:
        out *= total_in / total_out
    return out.astype(image.dtype)


def dihedral_copies(image: np.ndarray, rot90: bool, flips: bool) -> list[tuple[str, np.ndarray]]:
    """The original plus its 90° rotations and/or left-right flips (up to the 8 dihedral copies)."""
    copies = [("original", image)]
    ks = (1, 2, 3) if rot90 else ()
    for k in ks:
        copies.append((f"rot{90 * k}", np.rot90(image, k)))
    if flips:
        flipped = np.fliplr(image)
        copies.append(("flip", flipped))
        for k in ks:
            copies.append((f"flip_rot{90 * k}", np.rot90(flipped, k)))
    return copies


def augment(
    images: np.ndarray, meta: pd.DataFrame, cfg: Mapping[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, pd.DataFrame]:
    """Augmented stamps and metadata (parent columns repeated, plus ``augmentation`` and ``parent_index``)."""
    out_images, out_rows = [], []
    for i in range(len(images)):
        copies = dihedral_copies(images[i], cfg["rot90"], cfg["flips"])
        for _ in range(int(cfg["n_random_rotations"])):
            angle = float(rng.uniform(0.0, 360.0))
            copies.append((f"rot{angle:.2f}", rotate_flux_conserving(images[i], angle)))
        if cfg.get("max_copies") is not None and len(copies) > cfg["max_copies"]:
            keep = [0] + sorted(rng.choice(np.arange(1, len(copies)), size=cfg["max_copies"] - 1, replace=False).tolist())
            copies = [copies[j] for j in keep]
        for name, arr in copies:
            out_images.append(np.ascontiguousarray(arr, dtype=np.float32))
            out_rows.append((i, name))
    idx = np.array([r[0] for r in out_rows], dtype=np.int64)
    out_meta = meta.iloc[idx].reset_index(drop=True)
    out_meta["augmentation"] = [r[1] for r in out_rows]
    out_meta["parent_index"] = idx
    return np.stack(out_images), out_meta
