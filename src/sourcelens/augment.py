"""Augmentation of galaxy stamps: the 8 dihedral copies and arbitrary-angle rotations; and of lensed images
with their lens parameters (:func:`dihedral_image`, :func:`dihedral_lens_params`).

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
    arrays: Mapping[str, np.ndarray] | np.ndarray, meta: pd.DataFrame, cfg: Mapping[str, Any], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray] | np.ndarray, pd.DataFrame]:
    """Augmented stamps and metadata (parent columns repeated, plus ``augmentation`` and ``parent_index``).

    ``arrays``: image stacks (N, S, S) by name (e.g. ``images`` and ``images_noiseless``), every one transformed
    the same way (the same rotation angles); a single stack gives a single stack back. Random draws (angles,
    the copies kept under ``max_copies``) do not depend on how many arrays there are.
    """
    single = isinstance(arrays, np.ndarray)
    stacks = {"images": arrays} if single else dict(arrays)
    first = next(iter(stacks.values()))
    out: dict[str, list[np.ndarray]] = {k: [] for k in stacks}
    out_rows = []
    for i in range(len(first)):
        names = ["original"] + [n for n, _ in dihedral_copies(first[i], cfg["rot90"], cfg["flips"])[1:]]
        copies = {k: [c for _, c in dihedral_copies(v[i], cfg["rot90"], cfg["flips"])] for k, v in stacks.items()}
        for _ in range(int(cfg["n_random_rotations"])):
            angle = float(rng.uniform(0.0, 360.0))
            names.append(f"rot{angle:.2f}")
            for k, v in stacks.items():
                copies[k].append(rotate_flux_conserving(v[i], angle))
        keep = list(range(len(names)))
        if cfg.get("max_copies") is not None and len(names) > cfg["max_copies"]:
            keep = [0] + sorted(rng.choice(np.arange(1, len(names)), size=cfg["max_copies"] - 1,
                                           replace=False).tolist())
        for j in keep:
            for k in stacks:
                out[k].append(np.ascontiguousarray(copies[k][j], dtype=np.float32))
            out_rows.append((i, names[j]))
    idx = np.array([r[0] for r in out_rows], dtype=np.int64)
    out_meta = meta.iloc[idx].reset_index(drop=True)
    out_meta["augmentation"] = [r[1] for r in out_rows]
    out_meta["parent_index"] = idx
    result = {k: np.stack(v) if v else np.zeros((0, *first.shape[1:]), np.float32) for k, v in out.items()}
    return (result["images"] if single else result), out_meta


# --------------------------------------------------------------------------------------------
# Lensed images with their lens parameters
# --------------------------------------------------------------------------------------------
def dihedral_image(images, k: int, flip: bool):
    """A dihedral copy of images (…, H, W), numpy or torch: left-right flip (x → −x) if ``flip``, then ``k``
    quarter turns of ``np.rot90`` ((x, y) → (y, −x) each, with x = column and y = row)."""
    if hasattr(images, "flip"):                      # torch
        out = images.flip(-1) if flip else images
        return out.rot90(int(k) % 4, dims=(-2, -1))
    out = images[..., ::-1] if flip else images
    return np.rot90(out, int(k) % 4, axes=(-2, -1))


def dihedral_lens_params(params, k: int, flip: bool):
    """The lens parameters (…, 8; :data:`~sourcelens.names.LENS_PARAMETERS` order) of the image
    :func:`dihedral_image` ``(image, k, flip)`` makes: θE and γ are scalars; the lens centre turns as a vector;
    the ellipticity (e1, e2) and the external shear (γ1, γ2) as spin-2 quantities (angles from the x-axis):
    a flip conjugates them (e2, γ2 → −e2, −γ2), a quarter turn negates them."""
    from .names import LENS_PARAMETERS

    i = {name: LENS_PARAMETERS.index(name) for name in LENS_PARAMETERS}
    copy = (lambda a: a.clone()) if hasattr(params, "clone") else (lambda a: np.array(a, dtype=float, copy=True))
    out = copy(params)
    if flip:
        for name in ("center_x", "e2", "gamma2"):
            out[..., i[name]] = -out[..., i[name]]
    for _ in range(int(k) % 4):
        cx = copy(out[..., i["center_x"]])
        out[..., i["center_x"]] = out[..., i["center_y"]]
        out[..., i["center_y"]] = -cx
        for name in ("e1", "e2", "gamma1", "gamma2"):
            out[..., i[name]] = -out[..., i[name]]
    return out


#: The 8 (quarter turns, flip) pairs of the dihedral group.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def random_dihedral_batch(images, *, targets=None, lens_params=None, generator=None):
    """A random dihedral copy of each item of a torch batch (images (B, …, H, W)), drawn from torch's
    generator (seeded per batch by the staged training): the same transform for its ``targets`` image (e.g.
    the source on a grid centred on the optical axis, which turns with the image) and its ``lens_params``
    (:func:`dihedral_lens_params`). Returns (images, targets, lens_params), None where not given."""
    import torch

    draw = torch.randint(0, len(DIHEDRAL), (images.shape[0],), generator=generator).to(images.device)
    images = images.clone()
    targets = None if targets is None else targets.clone()
    lens_params = None if lens_params is None else lens_params.clone()
    for j, (k, flip) in enumerate(DIHEDRAL):
        rows = draw == j
        if j == 0 or not bool(rows.any()):
            continue
        images[rows] = dihedral_image(images[rows], k, flip)
        if targets is not None:
            targets[rows] = dihedral_image(targets[rows], k, flip)
        if lens_params is not None:
            lens_params[rows] = dihedral_lens_params(lens_params[rows], k, flip)
    return images, targets, lens_params
