"""The ``sourcelens`` command line: tools for users' own files.

    sourcelens info FILE [--rows N]      summary of any sourcelens output (HDF5, CSV, FITS, JSON)
    sourcelens check-config FILE...      validate config files against the schema
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _describe_hdf5(path: Path, rows: int) -> str:
    import h5py

    from .io import read_attrs, read_meta

    lines = [f"{path}  (HDF5)"]
    attrs = read_attrs(path)
    prov = attrs.pop("provenance", None)
    for key, value in attrs.items():
        lines.append(f"  attr {key}: {value}")
    with h5py.File(path, "r") as fh:
        lines.append("  arrays:")
        for name, ds in fh.items():
            if name == "meta":
                continue
            extra = ", ".join(f"{k}={v}" for k, v in ds.attrs.items())
            lines.append(f"    /{name:<20} {str(ds.shape):<20} {ds.dtype}  chunks={ds.chunks} {extra}")
            if ds.size and ds.dtype.kind == "f":
                sample = ds[: min(len(ds), 64)]
                lines.append(f"    {'':<21} min={sample.min():.4g} max={sample.max():.4g} mean={sample.mean():.4g}"
                             f"  (first {min(len(ds), 64)} rows)")
    if "meta" in h5py.File(path, "r"):
        meta = read_meta(path)
        lines.append(f"  meta: {len(meta)} rows × {len(meta.columns)} columns")
        if len(meta):
            lines.append("    " + meta.head(rows).to_string(max_colwidth=24).replace("\n", "\n    "))
            for col in ("kind", "split", "lens_model", "augmentation"):
                if col in meta:
                    counts = meta[col].value_counts().to_dict()
                    lines.append(f"    {col} counts: {counts}")
            if "source_id" in meta:
                lines.append(f"    distinct source_id: {meta['source_id'].nunique()}")
    if prov:
        versions = prov.get("versions", {})
        lines.append(f"  provenance: git {prov.get('git_commit')}, rule {prov.get('rule', '?')}, "
                     + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def _describe(path: Path, rows: int) -> str:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _describe_hdf5(path, rows)
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        return f"{path}  (table, {len(df)} rows × {len(df.columns)} columns)\n" + df.head(rows).to_string()
    if suffix in (".fits", ".fit", ".fz"):
        from astropy.io import fits

        with fits.open(path) as hdul:
            out = [f"{path}  (FITS)"]
            for i, hdu in enumerate(hdul):
                shape = getattr(hdu, "shape", None) or (hdu.data.shape if hdu.data is not None else None)
                out.append(f"  HDU {i} {hdu.name} {type(hdu).__name__} shape={shape}")
            return "\n".join(out)
    if suffix == ".json":
        return f"{path}  (JSON)\n" + json.dumps(json.loads(path.read_text()), indent=2)[:4000]
    raise ValueError(f"don't know how to describe '{path}' (HDF5, CSV/TSV, FITS or JSON)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sourcelens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summarise a sourcelens output file")
    p_info.add_argument("files", nargs="+", type=Path)
    p_info.add_argument("--rows", type=int, default=5, help="metadata rows to show")
    p_check = sub.add_parser("check-config", help="validate config files (merged in order) against the schema")
    p_check.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "info":
        status = 0
        for path in args.files:
            if not path.exists():
                print(f"sourcelens info: no such file: {path}", file=sys.stderr)
                status = 1
                continue
            try:
                print(_describe(path, args.rows))
            except (OSError, ValueError) as err:
                print(f"sourcelens info: {path}: {err}", file=sys.stderr)
                status = 1
        return status
    if args.command == "check-config":
        from .config import ConfigError, load_config

        try:
            load_config(*args.files)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 1
        print("config OK: " + ", ".join(map(str, args.files)))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
