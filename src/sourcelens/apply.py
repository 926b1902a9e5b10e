"""Trained models applied to large stamp catalogues, one shard (a contiguous range of rows) at a time: the unit
of work that Snakemake scatters across cores or SLURM jobs and gathers (rules ``apply_shard`` and
``apply_gather``), so that N = 10⁶ stamps run on a cluster with no code change.

Catalogues are an HDF5 file with an ``images`` array (N, S, S) (a sourcelens stamps file, or any file with that
dataset; its ``meta`` table's ``source_id`` is carried over where present) or a FITS cube N×S×S (first image HDU);
a shard reads only its own rows. Tasks:

``encode``
    VAE latent means and log-variances of the peak-normalised stamps, and the peaks.
``fit``
    decoder fits (:func:`sourcelens.fit.decoder.fit_decoder`, noise ``sigma`` in the stamps' units): latents,
    flux, offset, scale, χ², χ²/ν.
``fit_posterior``
    the fits plus their Laplace posterior (:func:`sourcelens.fit.posterior.laplace_posterior`): the per-pixel
    standard deviation of the source, and of the flux.
``delens``
    the U-Net's source of lensed images (:func:`sourcelens.models.unet.delens`, peak-normalised).

Every shard's output is a sourcelens dataset (kind ``apply_<task>``) whose meta table holds ``row`` (the
catalogue's row number) and the per-stamp scalars; :func:`sourcelens.io.concatenate_datasets` gathers them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["TASKS", "MODEL_OF_TASK", "count_stamps", "read_stamps", "apply_to_stamps", "run_shard", "shard_ranges"]

TASKS = ("encode", "fit", "fit_posterior", "delens")
#: The model each task applies (the workflow's model file names).
MODEL_OF_TASK = {"encode": "vae", "fit": "vae", "fit_posterior": "vae", "delens": "unet"}
FITS_SUFFIXES = (".fits", ".fit", ".fts")


def _is_fits(path: Path) -> bool:
    return path.suffix.lower() in FITS_SUFFIXES


def count_stamps(path: str | Path) -> int:
    """Stamps in a catalogue (HDF5 ``images`` rows, or the FITS cube's first axis; 1 for a 2-D FITS image),
    read from the header alone. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalogue '{path}' does not exist")
    if _is_fits(path):
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            hdu = next((h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 2), None)
            if hdu is None:
                raise ValueError(f"catalogue '{path}' has no image HDU")
            naxis = int(hdu.header["NAXIS"])
            if naxis not in (2, 3):
                raise ValueError(f"catalogue '{path}': expected a 2-D stamp or an N×S×S cube, got {naxis} axes")
            return 1 if naxis == 2 else int(hdu.header["NAXIS3"])
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            if "images" not in fh:
                raise ValueError(f"catalogue '{path}' has no 'images' dataset (it has {sorted(fh)})")
            return int(fh["images"].shape[0])
    except OSError as err:
        raise ValueError(f"catalogue '{path}' is neither FITS (by its suffix) nor readable HDF5: {err}") from err


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the shards of ``n`` stamps, ``shard_size`` each (the last takes the rest)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def read_stamps(path: str | Path, start: int, stop: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows [start, stop) of a catalogue as float64 (n, S, S) and a table with ``row`` (and ``source_id`` where the
    catalogue has one). NaN or infinite pixels are refused, naming the rows."""
    path = Path(path)
    ids = None
    if _is_fits(path):
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            hdu = next(h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 2)
            data = hdu.section[start:stop] if hdu.header["NAXIS"] == 3 else hdu.data[None]
            images = np.array(data, dtype=np.float64)
    else:
        import h5py

        with h5py.File(path, "r") as fh:
            images = np.asarray(fh["images"][start:stop], dtype=np.float64)
            if "meta" in fh and "source_id" in fh["meta"]:
                ids = [v.decode() if isinstance(v, bytes) else str(v) for v in fh["meta"]["source_id"][start:stop]]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"catalogue '{path}': stamps must be square N×S×S, got {images.shape}")
    bad = ~np.isfinite(images).all(axis=(1, 2))
    if bad.any():
        rows = (start + np.flatnonzero(bad)).tolist()
        raise ValueError(f"catalogue '{path}': NaN or infinite pixels in rows {rows[:10]}{' ...' if len(rows) > 10 else ''}")
    table = pd.DataFrame({"row": np.arange(start, start + len(images))})
    if ids is not None:
        table["source_id"] = ids
    return images, table


def apply_to_stamps(task: str, model, images: np.ndarray, *, sigma: float | None = None, max_iter: int = 200,
                    n_samples: int = 100, seed: int = 0, chunk_size: int | None = None) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Apply ``task`` (:data:`TASKS`) with a loaded ``model`` to stamps (n, S, S): (arrays, per-stamp scalars)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if task == "delens":
        from .models.unet import delens

        return {"source": delens(model, images).astype(np.float32)}, pd.DataFrame(index=range(len(images)))
    peaks = images.max(axis=(1, 2))
    if (peaks <= 0).any():
        raise ValueError(f"stamps {np.flatnonzero(peaks <= 0).tolist()[:10]} (shard rows) have no positive pixel")
    if task == "encode":
        from .models import encode_images

        mu, logvar = encode_images(model, images / peaks[:, None, None])
        return {"z": mu.astype(np.float32), "logvar": logvar.astype(np.float32)}, pd.DataFrame({"peak": peaks})
    if sigma is None or not sigma > 0:
        raise ValueError(f"task {task!r} needs a positive noise sigma, got {sigma!r}")
    from .fit.decoder import fit_decoder

    fit = fit_decoder(model, images, float(sigma), max_iter=max_iter, encoder_input=images / peaks[:, None, None],
                      chunk_size=chunk_size)
    table = pd.DataFrame({"flux": fit.flux, "dx": fit.offset[:, 0], "dy": fit.offset[:, 1], "scale": fit.scale,
                          "chi2": fit.chi2, "chi2_nu": fit.chi2_nu, "n_iter": fit.n_iter})
    arrays = {"z": fit.z.astype(np.float32)}
    if task == "fit_posterior":
        from .fit.posterior import laplace_posterior, parameters

        post = laplace_posterior(model, images, float(sigma), parameters(fit.z, fit.flux, fit.offset, fit.scale),
                                 n_samples=n_samples, seed=seed)
        arrays["source_std"] = post.source_std.astype(np.float32)
        arrays["z_std"] = post.parameter_std[:, :model.latent_dim].astype(np.float32)
        table["flux_std"] = fit.flux * post.parameter_std[:, model.latent_dim]
    return arrays, table


def load_model(task: str, path: str | Path):
    """The model of ``task`` from its file (VAE or U-Net)."""
    if MODEL_OF_TASK.get(task) == "unet":
        from .models import load_unet

        return load_unet(path)
    from .models import load_vae

    return load_vae(path)


def run_shard(task: str, model_path: str | Path, catalogue: str | Path, start: int, stop: int, out: str | Path,
              *, options: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None) -> float:
    """Apply ``task`` to rows [start, stop) of ``catalogue`` and write the shard dataset ``out`` (atomically);
    ``options``: ``sigma``, ``max_iter``, ``n_samples``, ``seed`` (the posterior draws: each shard's own seed is
    (seed, start), so a rerun or any sharding of the same rows draws the same). Returns the seconds spent."""
    from .io import write_dataset

    t0 = time.perf_counter()
    opts = dict(options or {})
    images, table = read_stamps(catalogue, int(start), int(stop))
    model = load_model(task, model_path)
    if "seed" in opts:
        opts["seed"] = int(np.random.SeedSequence([int(opts["seed"]), int(start)]).generate_state(1)[0])
    arrays, scalars = apply_to_stamps(task, model, images, **opts)
    meta = pd.concat([table.reset_index(drop=True), scalars.reset_index(drop=True)], axis=1)
    seconds = time.perf_counter() - t0
    write_dataset(out, arrays, meta, kind=f"apply_{task}",
                  attrs={**(attrs or {}), "task": task, "catalogue": str(catalogue), "rows": [int(start), int(stop)],
                         "seconds": seconds})
    return seconds
