"""Input/output: the HDF5 layout of every dataset, atomic writes and provenance records.

HDF5 layout shared by all sourcelens datasets (``sourcelens info FILE`` prints it)::

    /                 attrs: kind, layout_version, provenance (JSON: config, versions, git commit),
                             description, plus kind-specific scalars (pixel_scale_arcsec, ...)
    /<array>          float32 arrays with the object index first, e.g. (N, H, W);
                      chunked one block of objects at a time, gzip; attrs: units, description
    /meta/<column>    one 1-D dataset per metadata column (N rows; strings are UTF-8)

Writes go to a temporary name in the same folder (``.{name}.XXXXXXXX.part``, removed by the next
write of that output if a killed run left it) and are renamed only when complete, so a failed run
never leaves a file that looks finished; outputs get the permissions of a plain ``open()`` under the
user's umask. Reads open files through :func:`open_h5`, which turns an empty, non-HDF5, truncated,
damaged or incomplete file into a :class:`DatasetError` naming the file and how to remake it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import secrets
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import pandas as pd

log = logging.getLogger("sourcelens.io")

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
    """A provenance record: config, package versions, git commit, the references of the data used
    (``data_citations``: the COSMOS papers and shipped samples' origins, :func:`sourcelens.samples.data_citations`)
    and any extra keys."""
    from .samples import data_citations

    record = {
        "config": config if config is not None else {},
        "versions": package_versions(),
        "git_commit": git_commit(),
        "data_citations": data_citations(dict(config) if config is not None else None),
    }
    record.update(extra)
    return record


PART_SUFFIX = ".part"
_PART_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"   # tempfile.mkstemp's, so older parts match too
_PART_TOKEN_LEN = 8


def _part_pattern(name: str) -> re.Pattern[str]:
    """Names of the temporary files of output ``name``: ``.{name}.XXXXXXXX.part`` (and of no other output)."""
    return re.compile(rf"\.{re.escape(name)}\.[{_PART_TOKEN_CHARS}]{{{_PART_TOKEN_LEN}}}{re.escape(PART_SUFFIX)}")


def remove_stale_parts(path: str | Path) -> list[Path]:
    """Delete the temporary files an earlier, killed write of ``path`` left beside it; return them.

    Only the parts of this output name are touched. Two processes writing the same output at the
    same time are not supported (the later one would delete the other's part).
    """
    path = Path(path)
    pattern = _part_pattern(path.name)
    removed = []
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write of %s", entry, path)
            removed.append(entry)
    return removed


def _create_part(path: Path) -> Path:
    """Create an empty temporary file beside ``path``, readable as a plain ``open()`` would make it.

    Created with mode 0o666 (the kernel applies the umask and any default ACL), unlike
    ``tempfile.mkstemp``'s 0o600, which would leave every output private to its owner.
    """
    for _ in range(100):
        token = "".join(secrets.choice(_PART_TOKEN_CHARS) for _ in range(_PART_TOKEN_LEN))
        part = path.with_name(f".{path.name}.{token}{PART_SUFFIX}")
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return part
    raise FileExistsError(f"no free temporary name for {path} after 100 tries")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    Parts left by an earlier, killed write of the same output are removed first; the output gets
    the permissions of a plain ``open()`` under the user's umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    tmp_path = _create_part(path)
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
            _write_layout(fh, kind, attrs, meta)
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                _create_array(fh, name, arr.shape, arr.dtype, chunk_rows, compression,
                              (array_attrs or {}).get(name, {}))[...] = arr
    return path


def _write_layout(fh: h5py.File, kind: str, attrs: Mapping[str, Any] | None, meta: pd.DataFrame) -> None:
    """Root attributes (kind, layout version, ``attrs`` with dicts and lists as JSON) and the ``/meta`` group."""
    fh.attrs["kind"] = kind
    fh.attrs["layout_version"] = LAYOUT_VERSION
    for key, value in (attrs or {}).items():
        fh.attrs[key] = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
    grp = fh.create_group("meta", track_order=True)
    for col in meta.columns:
        grp.create_dataset(col, data=_meta_column(meta[col]))


def _create_array(fh: h5py.File, name: str, shape: tuple[int, ...], dtype, chunk_rows: int,
                  compression: str | None, attrs: Mapping[str, Any]) -> h5py.Dataset:
    """An array dataset of the layout: chunked ``chunk_rows`` objects at a time, compressed, with ``attrs``."""
    n = shape[0]
    chunks = (max(1, min(chunk_rows, n)),) + tuple(shape[1:]) if n > 0 else None
    ds = fh.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks,
                           compression=compression if n > 0 else None, shuffle=bool(compression) and n > 0)
    for key, value in attrs.items():
        ds.attrs[key] = value
    return ds


class DatasetError(ValueError):
    """A sourcelens HDF5 file that cannot be used as it is; the message names the file, says what is
    wrong (not HDF5, truncated, damaged, an array or the ``meta`` group missing) and how to remake it."""


def dataset_error(path: str | Path, problem: str) -> DatasetError:
    """A :class:`DatasetError` for ``path``: the problem, then how to remake the file with Snakemake."""
    return DatasetError(
        f"{path} {problem}. To remake it, delete it and rerun the rule that makes it "
        f"(snakemake --forcerun {path}), or, if a run was interrupted, rerun with snakemake --rerun-incomplete")


def _open_problem(path: Path, err: OSError) -> str:
    """Why h5py could not open an existing file: empty, not HDF5, truncated or otherwise damaged."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes): a write or copy of it was cut short"
    if not h5py.is_hdf5(path):
        return f"is not an HDF5 file ({size} bytes without the HDF5 signature)"
    if "truncated" in str(err):
        expected = re.search(r"stored_eof = (\d+)", str(err))
        of = f" of the {expected.group(1)}" if expected else ""
        return f"is truncated ({size}{of} bytes): a write or copy of it was cut short"
    return f"is a damaged HDF5 file ({err})"


def _check_contents(fh: h5py.File, path: Path, arrays: tuple[str, ...], meta: bool) -> None:
    """Raise a :class:`DatasetError` if ``fh`` lacks one of ``arrays`` or (with ``meta``) the ``meta`` group."""
    missing = [name for name in arrays if not isinstance(fh.get(name), h5py.Dataset)]
    if missing:
        have = sorted(k for k, v in fh.items() if isinstance(v, h5py.Dataset))
        raise dataset_error(path, f"has no array(s) {missing} (it has {have})")
    if meta and not isinstance(fh.get("meta"), h5py.Group):
        raise dataset_error(path, "has no 'meta' group (the metadata table): it is not a complete sourcelens file")


def open_h5(path: str | Path, *, arrays: tuple[str, ...] = (), meta: bool = False) -> h5py.File:
    """Open a sourcelens HDF5 file read-only, checking it holds ``arrays`` (and the ``meta`` group).

    The one place files are opened for reading, so that a corrupt input is always named: raises
    :class:`DatasetError` for a file that is empty, not HDF5, truncated, damaged or incomplete.
    System errors (no such file, no permission, a lock) pass through unchanged.
    """
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        if err.errno is not None or not path.is_file():
            raise
        raise dataset_error(path, _open_problem(path, err)) from err
    try:
        _check_contents(fh, path, tuple(arrays), meta)
    except BaseException:
        fh.close()
        raise
    return fh


@contextlib.contextmanager
def reading_h5(path: str | Path, *, arrays: tuple[str, ...] = (), meta: bool = False) -> Iterator[h5py.File]:
    """:func:`open_h5` as a context: closes the file, and names it if reading a damaged chunk fails."""
    fh = open_h5(path, arrays=arrays, meta=meta)
    try:
        yield fh
    except OSError as err:
        if err.errno is not None:
            raise
        raise dataset_error(path, f"is a damaged HDF5 file ({err})") from err
    finally:
        fh.close()


def read_meta(path: str | Path) -> pd.DataFrame:
    """The metadata table of a sourcelens HDF5 file."""
    with reading_h5(path, meta=True) as fh:
        return read_meta_group(fh)


def read_meta_group(fh: h5py.File) -> pd.DataFrame:
    """The metadata table of an open file (its ``meta`` group), strings decoded."""
    cols = {}
    for name, ds in fh["meta"].items():
        data = ds[()]
        if ds.dtype.kind in ("O", "S"):
            data = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data], dtype=object)
        cols[name] = data
    return pd.DataFrame(cols)


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as plain Python: JSON-encoded values (provenance, ...) decoded, numpy scalars unwrapped."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes, with JSON-encoded values (provenance, ...) decoded."""
    with reading_h5(path) as fh:
        return decode_attrs(fh.attrs)


def read_array_attrs(path: str | Path) -> dict[str, dict[str, Any]]:
    """The attributes (units, description, ...) of every array of a dataset, by array name."""
    with reading_h5(path) as fh:
        return {name: decode_attrs(fh[name].attrs) for name in _array_names(fh)}


def _array_names(fh: h5py.File) -> tuple[str, ...]:
    """The top-level arrays of a file (its datasets other than the ``meta`` group)."""
    return tuple(k for k, v in fh.items() if k != "meta" and isinstance(v, h5py.Dataset))


def read_dataset(
    path: str | Path, names: tuple[str, ...] | None = None, index: np.ndarray | slice | None = None
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Read arrays (all, or ``names``) and the metadata table, optionally a subset of rows."""
    with reading_h5(path, arrays=tuple(names or ()), meta=True) as fh:
        keys = names or _array_names(fh)
        sel = slice(None) if index is None else index
        if isinstance(sel, np.ndarray):
            order = np.argsort(sel)
            sorted_idx = sel[order]
            inverse = np.argsort(order)
            arrays = {k: fh[k][sorted_idx][inverse] for k in keys}
        else:
            arrays = {k: fh[k][sel] for k in keys}
        meta = read_meta_group(fh)
    meta = meta.iloc[sel].reset_index(drop=True) if index is not None else meta
    return arrays, meta


def write_table(df: pd.DataFrame, path: str | Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a CSV table atomically; with ``provenance``, also its record beside it (``<name>.provenance.json``:
    CSV has no place for it)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if provenance is not None:
        write_json(provenance, provenance_path(path))
    return path


def provenance_path(path: str | Path) -> Path:
    """The provenance record beside a table: ``results/tables/x.csv`` -> ``results/tables/x.provenance.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".provenance.json")


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


def concatenate_datasets(paths: list[str | Path], out: str | Path, attrs: Mapping[str, Any] | None = None,
                         *, chunk_rows: int = 64, compression: str | None = "gzip") -> Path:
    """Gather shard files (same kind and arrays) into one file, in the order given, one shard in memory at a
    time (gathering 100k pairs needs the memory of one shard, not of the dataset).

    Root attributes come from the first shard (its provenance included), updated by ``attrs``;
    the shard files' own provenance is kept as a list under ``shard_provenance``.
    """
    if not paths:
        raise ValueError("no shard files to gather")
    first_attrs = read_attrs(paths[0])
    kind = first_attrs.pop("kind", None)
    if kind is None:
        raise dataset_error(paths[0], "has no 'kind' attribute: it is not a sourcelens dataset")
    first_attrs.pop("layout_version", None)
    metas, shard_provenance = [], []
    shapes: dict[str, tuple[tuple[int, ...], Any, dict[str, Any]]] = {}
    for path in paths:                      # first pass: metadata, shapes and kinds only
        with reading_h5(path, meta=True) as fh:
            shard_attrs = decode_attrs(fh.attrs)
            if shard_attrs.get("kind") != kind:
                raise ValueError(f"shard {path} is of kind {shard_attrs.get('kind')!r}, expected {kind!r}")
            shard_provenance.append(shard_attrs.get("provenance"))
            for name in _array_names(fh):
                shape, dtype, a = shapes.setdefault(name, (fh[name].shape, fh[name].dtype, dict(fh[name].attrs)))
                if fh[name].shape[1:] != shape[1:] or fh[name].dtype != dtype:
                    raise ValueError(f"shard {path}: array '{name}' is {fh[name].shape} {fh[name].dtype}, the "
                                     f"first shard's {shape} {dtype}")
            metas.append(read_meta_group(fh))
    meta = pd.concat(metas, ignore_index=True)
    out_attrs = dict(first_attrs)
    out_attrs["n_shards"] = len(paths)
    out_attrs["shard_provenance"] = shard_provenance
    out_attrs.update(attrs or {})
    out = Path(out)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", track_order=True) as fh:
            _write_layout(fh, kind, out_attrs, meta)
            datasets = {name: _create_array(fh, name, (len(meta), *shape[1:]), dtype, chunk_rows, compression, a)
                        for name, (shape, dtype, a) in shapes.items()}
            start = 0
            for path, shard_meta in zip(paths, metas):
                with reading_h5(path, arrays=tuple(datasets)) as shard:
                    for name, ds in datasets.items():
                        ds[start:start + len(shard_meta)] = shard[name][()]
                start += len(shard_meta)
    return out
