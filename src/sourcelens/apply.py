"""Trained models applied to large stamp catalogues, one shard (a contiguous range of rows) at a time: the unit
of work that Snakemake scatters across cores or SLURM jobs and gathers (rules ``apply_shard`` and
``apply_gather``), so that N = 10⁶ stamps run on a cluster with no code change.

Catalogues are an HDF5 file with an ``images`` array (N, S, S) (a sourcelens stamps file, or any file with that
dataset; its ``meta`` table's ``source_id`` is carried over where present) or a FITS cube N×S×S (first image HDU);
multi-band blends for ``deblend`` are (N, B, S, S): an HDF5 ``images`` array or a sourcelens blends file (its
``blend`` array and ``blend_id``), or a FITS cube N×B×S×S, the B bands in the deblender's order. A shard reads
only its own rows. Tasks:

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
``deblend``
    the central galaxy of multi-band blends (:func:`sourcelens.models.deblender.deblend_images`, study 003), in
    the blends' units, and its flux in each band (``flux_<band>``, the sum of its pixels).

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

TASKS = ("encode", "fit", "fit_posterior", "delens", "deblend")
#: The model each task applies (the workflow's model file names; deblenders are per band set).
MODEL_OF_TASK = {"encode": "vae", "fit": "vae", "fit_posterior": "vae", "delens": "unet", "deblend": "deblender"}
#: HDF5 datasets read as the catalogue's images, in order of preference (``blend``: a sourcelens blends file).
IMAGE_DATASETS = ("images", "blend")
#: Identifier columns of a sourcelens file's meta table carried into the shard outputs.
ID_COLUMNS = ("source_id", "blend_id")
FITS_SUFFIXES = (".fits", ".fit", ".fts")


def _is_fits(path: Path) -> bool:
    return path.suffix.lower() in FITS_SUFFIXES


def _image_dataset(fh, path: Path) -> str:
    """The name of the HDF5 file's image array (:data:`IMAGE_DATASETS`); an error naming the file when none."""
    name = next((n for n in IMAGE_DATASETS if n in fh), None)
    if name is None:
        raise ValueError(f"catalogue '{path}' has no {' or '.join(repr(n) for n in IMAGE_DATASETS)} dataset "
                         f"(it has {sorted(fh)})")
    return name


def count_stamps(path: str | Path) -> int:
    """Stamps (or blends) in a catalogue (the first axis of the HDF5 image array or of the FITS cube; 1 for a
    2-D FITS image), read from the header alone. Errors name the file."""
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
            if naxis not in (2, 3, 4):
                raise ValueError(f"catalogue '{path}': expected a 2-D stamp, an N×S×S cube or an N×B×S×S cube of "
                                 f"blends, got {naxis} axes")
            return 1 if naxis == 2 else int(hdu.header[f"NAXIS{naxis}"])
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return int(fh[_image_dataset(fh, path)].shape[0])
    except OSError as err:
        raise ValueError(f"catalogue '{path}' is neither FITS (by its suffix) nor readable HDF5: {err}") from err


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the shards of ``n`` stamps, ``shard_size`` each (the last takes the rest)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def read_stamps(path: str | Path, start: int, stop: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows [start, stop) of a catalogue as float64 (n, S, S), or (n, B, S, S) for multi-band blends, and a table
    with ``row`` (and ``source_id`` or ``blend_id`` where the catalogue has them). NaN or infinite pixels are
    refused, naming the rows."""
    path = Path(path)
    ids: dict[str, list[str]] = {}
    if _is_fits(path):
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            hdu = next(h for h in hdul if getattr(h, "is_image", False) and h.header.get("NAXIS", 0) >= 2)
            data = hdu.data[None] if hdu.header["NAXIS"] == 2 else hdu.section[start:stop]
            images = np.array(data, dtype=np.float64)
    else:
        import h5py

        with h5py.File(path, "r") as fh:
            images = np.asarray(fh[_image_dataset(fh, path)][start:stop], dtype=np.float64)
            meta = fh["meta"] if "meta" in fh and hasattr(fh["meta"], "keys") else {}
            for column in ID_COLUMNS:
                if column in meta:
                    ids[column] = [v.decode() if isinstance(v, bytes) else str(v) for v in meta[column][start:stop]]
    if images.ndim not in (3, 4) or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"catalogue '{path}': stamps must be square, N×S×S (or N×B×S×S blends), got {images.shape}")
    bad = ~np.isfinite(images).all(axis=tuple(range(1, images.ndim)))
    if bad.any():
        rows = (start + np.flatnonzero(bad)).tolist()
        raise ValueError(f"catalogue '{path}': NaN or infinite pixels in rows {rows[:10]}{' ...' if len(rows) > 10 else ''}")
    table = pd.DataFrame({"row": np.arange(start, start + len(images)), **ids})
    return images, table


def apply_to_stamps(task: str, model, images: np.ndarray, *, sigma: float | None = None, max_iter: int = 200,
                    n_samples: int = 100, seed: int = 0, chunk_size: int | None = None) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Apply ``task`` (:data:`TASKS`) with a loaded ``model`` to stamps (n, S, S): (arrays, per-stamp scalars)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    expected = 4 if task == "deblend" else 3
    if images.ndim != expected:
        raise ValueError(f"task {task!r} takes {'multi-band blends (N, B, S, S)' if expected == 4 else 'stamps (N, S, S)'}, "
                         f"got an array of shape {images.shape}")
    if task == "deblend":
        from .models.deblender import deblend_images, normalisation_of

        bands = [str(b) for b in normalisation_of(model).get("bands") or range(int(model.hparams["bands"]))]
        if images.shape[1:] != (len(bands), model.hparams["image_size"], model.hparams["image_size"]):
            raise ValueError(f"the deblender takes blends of {len(bands)} bands ({' '.join(bands)}, in that order) "
                             f"of {model.hparams['image_size']}² pixels, got {images.shape[1:]}")
        central = deblend_images(model, images)
        flux = central.sum(axis=(2, 3), dtype=np.float64)
        return {"central": central.astype(np.float32)}, pd.DataFrame({f"flux_{b}": flux[:, i] for i, b in enumerate(bands)})
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
    """The model of ``task`` from its file (VAE, U-Net or deblender)."""
    if MODEL_OF_TASK.get(task) == "deblender":
        from .models.deblender import load_deblender

        return load_deblender(path)
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
