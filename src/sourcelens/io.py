"""Input/output: the HDF5 layout of every dataset, atomic writes and provenance records.

HDF5 layout shared by all sourcelens datasets (``sourcelens info FILE`` prints it)::

    /                 attrs: kind, layout_version, provenance (JSON: config, versions, git commit),
                             description, plus kind-specific scalars (pixel_scale_arcsec, ...)
    /<array>          float32 arrays with the object index first, e.g. (N, H, W);
                      chunked one block of objects at a time, gzip; attrs: units, description
    /meta/<column>    one 1-D dataset per metadata column (N rows; strings are UTF-8)

Writes go to a temporary name in the same folder and are renamed only when complete, so a
failed run never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import pandas as pd

LAYOUT_VERSION = 1
TRACKED_PACKAGES = (
    "sourcelens", "numpy", "scipy", "pandas", "h5py", "astropy", "galsim", "lenstronomy",
    "scikit-image", "torch", "lightning", "caustics", "caskade", "snakemake", "matplotlib",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape the outputs (missing ones are omitted)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the sourcelens checkout (``-dirty`` if modified), or 'unknown'."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(config: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record: config, package versions, git commit and any extra keys."""
    record = {
        "config": config if config is not None else {},
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
    record.update(extra)
    return record


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _meta_column(values: pd.Series) -> np.ndarray:
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        return np.asarray(values.astype(str).to_numpy(), dtype=h5py.string_dtype("utf-8"))
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=bool)
    return values.to_numpy()


def write_dataset(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    *,
    kind: str,
    attrs: Mapping[str, Any] | None = None,
    array_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    chunk_rows: int = 64,
    compression: str | None = "gzip",
) -> Path:
    """Write arrays (object index first) and a metadata table atomically to HDF5."""
    n = len(meta)
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ValueError(f"array '{name}' has {arr.shape[0]} rows but the metadata table has {n}")
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as fh:
            fh.attrs["kind"] = kind
            fh.attrs["layout_version"] = LAYOUT_VERSION
            for key, value in (attrs or {}).items():
                fh.attrs[key] = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                chunks = (max(1, min(chunk_rows, n)),) + arr.shape[1:] if n > 0 else None
                ds = fh.create_dataset(
                    name, data=arr, chunks=chunks,
                    compression=compression if n > 0 else None,
                    shuffle=bool(compression) and n > 0,
                )
                for key, value in (array_attrs or {}).get(name, {}).items():
                    ds.attrs[key] = value
            grp = fh.create_group("meta", track_order=True)
            for col in meta.columns:
                grp.create_dataset(col, data=_meta_column(meta[col]))
    return path


def read_meta(path: str | Path) -> pd.DataFrame:
    """The metadata table of a sourcelens HDF5 file."""
    with h5py.File(path, "r") as fh:
        return _read_meta_group(fh)


def _read_meta_group(fh: h5py.File) -> pd.DataFrame:
    cols = {}
    for name, ds in fh["meta"].items():
        data = ds[()]
        if ds.dtype.kind in ("O", "S"):
            data = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data], dtype=object)
        cols[name] = data
    return pd.DataFrame(cols)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes, with JSON-encoded values (provenance, ...) decoded."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as fh:
        for key, value in fh.attrs.items():
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
    return out


def read_dataset(
    path: str | Path, names: tuple[str, ...] | None = None, index: np.ndarray | slice | None = None
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Read arrays (all, or ``names``) and the metadata table, optionally a subset of rows."""
    with h5py.File(path, "r") as fh:
        keys = names or tuple(k for k in fh.keys() if k != "meta")
        sel = slice(None) if index is None else index
        if isinstance(sel, np.ndarray):
            order = np.argsort(sel)
            sorted_idx = sel[order]
            inverse = np.argsort(order)
            arrays = {k: fh[k][sorted_idx][inverse] for k in keys}
        else:
            arrays = {k: fh[k][sel] for k in keys}
        meta = _read_meta_group(fh)
    meta = meta.iloc[sel].reset_index(drop=True) if index is not None else meta
    return arrays, meta


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV table atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (used for provenance sidecars of tables and figures)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, default=str)
    return path


def save_figure(fig, path: str | Path, dpi: int = 120, provenance: Mapping[str, Any] | None = None) -> Path:
    """Save a matplotlib figure atomically (format from the suffix).

    A provenance record, if given, is embedded as JSON in the PNG/PDF metadata (``Description``
    for PNG, ``Subject`` for PDF): ``PIL.Image.open(path).info["Description"]`` reads it back.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    metadata: dict[str, Any] = {}
    if fmt in ("png", "pdf"):
        metadata["Creator" if fmt == "pdf" else "Software"] = (
            f"sourcelens {package_versions(('sourcelens',)).get('sourcelens', '')}")
        if provenance is not None:
            metadata["Subject" if fmt == "pdf" else "Description"] = json.dumps(provenance, default=str)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt, metadata=metadata or None)
    return path


def concatenate_datasets(paths: list[str | Path], out: str | Path, attrs: Mapping[str, Any] | None = None) -> Path:
    """Gather shard files (same kind and arrays) into one file, in the order given.

    Root attributes come from the first shard (its provenance included), updated by ``attrs``;
    the shard files' own provenance is kept as a list under ``shard_provenance``.
    """
    if not paths:
        raise ValueError("no shard files to gather")
    arrays: dict[str, list[np.ndarray]] = {}
    array_attrs: dict[str, dict[str, Any]] = {}
    metas = []
    shard_provenance = []
    first_attrs = read_attrs(paths[0])
    kind = first_attrs.pop("kind")
    first_attrs.pop("layout_version", None)
    for path in paths:
        shard_attrs = read_attrs(path)
        if shard_attrs.get("kind") != kind:
            raise ValueError(f"shard {path} is of kind {shard_attrs.get('kind')!r}, expected {kind!r}")
        shard_provenance.append(shard_attrs.get("provenance"))
        with h5py.File(path, "r") as fh:
            for name in fh.keys():
                if name == "meta":
                    continue
                arrays.setdefault(name, []).append(fh[name][()])
                array_attrs.setdefault(name, dict(fh[name].attrs))
        metas.append(read_meta(path))
    merged = {k: np.concatenate(v, axis=0) for k, v in arrays.items()}
    meta = pd.concat(metas, ignore_index=True)
    out_attrs = dict(first_attrs)
    out_attrs["n_shards"] = len(paths)
    out_attrs["shard_provenance"] = shard_provenance
    out_attrs.update(attrs or {})
    return write_dataset(out, merged, meta, kind=kind, attrs=out_attrs, array_attrs=array_attrs)
