"""GalSim RealGalaxyCatalog directories: reading, the studies' catalogue cuts, the filter table.

Works with the full COSMOS samples that ``galsim_download_cosmos -s 23.5|25.2`` fetches and
with any smaller catalogue in the same format. COSMOS data: Koekemoer et al. 2007;
Mandelbaum et al. 2012.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from astropy.io import fits

log = logging.getLogger(__name__)

COSMOS_PIXEL_SCALE_ARCSEC = 0.03
FILTER_COLUMNS = ["stage", "source_kind", "cut", "description", "n_in", "n_kept", "n_removed"]


class CatalogueError(ValueError):
    """A catalogue path, file or selection problem; the message names the culprit."""


@dataclass
class FilterLog:
    """Bookkeeping of successive cuts: each cut records how many objects went in and stayed."""

    stage: str
    source_kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, df: pd.DataFrame, keep: np.ndarray, cut: str, description: str) -> pd.DataFrame:
        keep = np.asarray(keep, dtype=bool)
        n_in, n_kept = len(df), int(keep.sum())
        self.rows.append({
            "stage": self.stage, "source_kind": self.source_kind, "cut": cut,
            "description": description, "n_in": n_in, "n_kept": n_kept, "n_removed": n_in - n_kept,
        })
        log.info("%s/%s cut %s: %d -> %d", self.stage, self.source_kind, cut, n_in, n_kept)
        if n_in > 0 and n_kept == 0:
            raise CatalogueError(
                f"the selection is empty: cut '{cut}' ({description}) removed all {n_in} remaining "
                f"{self.source_kind} galaxies; loosen it in the config"
            )
        return df.loc[keep].reset_index(drop=True)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=FILTER_COLUMNS)


def find_catalogue_file(directory: str | Path, file_name: str | None = None) -> Path:
    """The main catalogue file of a RealGalaxyCatalog directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogueError(
            f"COSMOS catalogue directory not found: '{directory}' (config key sources/cosmos/dir); "
            "download one with `galsim_download_cosmos -s 25.2 -d DIR` or point to an existing one"
        )
    if file_name:
        path = directory / file_name
        if not path.is_file():
            raise CatalogueError(f"catalogue file not found: '{path}' (config key sources/cosmos/file_name)")
        return path
    candidates = sorted(
        p for p in directory.glob("real_galaxy_catalog_*.fits")
        if not p.stem.endswith(("_fits", "_selection"))
    )
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise CatalogueError(
            f"expected exactly one real_galaxy_catalog_*.fits in '{directory}', found {found}; "
            "set sources/cosmos/file_name"
        )
    return candidates[0]


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.stem + suffix + ".fits")


def _read_fits_table(path: Path) -> pd.DataFrame:
    with fits.open(path) as hdul:
        data = hdul[1].data
        cols = {}
        for name in data.columns.names:
            col = np.asarray(data[name])
            if col.ndim == 1:
                cols[name] = col.astype(col.dtype.newbyteorder("=")) if col.dtype.kind in "fiu" else col
            else:
                cols[name] = list(col)
    return pd.DataFrame(cols)


def read_cosmos_catalogue(directory: str | Path, file_name: str | None = None) -> pd.DataFrame:
    """Read a RealGalaxyCatalog with its ``_fits`` and ``_selection`` companions, if present.

    Columns: ``index`` (row in the catalogue, as GalSim's ``getGal(index)``), ``ident``, ``mag``
    (F814W), ``zphot``, ``size_arcsec`` (half-light radius if fitted, else the SExtractor flux
    radius), ``pixel_scale_arcsec``, ``noise_variance``, ``gal_filename``, ``psf_filename``.
    """
    path = find_catalogue_file(directory, file_name)
    main = _read_fits_table(path)
    missing = {"IDENT", "MAG", "GAL_FILENAME", "PIXEL_SCALE"} - set(main.columns)
    if missing:
        raise CatalogueError(f"'{path}' is not a RealGalaxyCatalog: columns {sorted(missing)} are missing")
    df = pd.DataFrame({
        "index": np.arange(len(main)),
        "ident": main["IDENT"].astype(np.int64),
        "mag": main["MAG"].astype(float),
        "pixel_scale_arcsec": main["PIXEL_SCALE"].astype(float),
        "noise_variance": main.get("NOISE_VARIANCE", pd.Series(np.nan, index=main.index)).astype(float),
        "gal_filename": main["GAL_FILENAME"].astype(str).str.strip(),
        "psf_filename": main.get("PSF_FILENAME", pd.Series("", index=main.index)).astype(str).str.strip(),
    })
    df["zphot"] = np.nan
    df["size_arcsec"] = np.nan
    fits_path = _companion(path, "_fits")
    if fits_path.is_file():
        extra = _read_fits_table(fits_path)
        if len(extra) != len(df):
            raise CatalogueError(f"'{fits_path}' has {len(extra)} rows but '{path}' has {len(df)}")
        zcol = next((c for c in ("zphot", "ZPHOT") if c in extra.columns), None)
        if zcol:
            df["zphot"] = extra[zcol].astype(float).to_numpy()
        if "hlr" in extra.columns:
            hlr = np.array([np.atleast_1d(v)[0] for v in extra["hlr"]], dtype=float)
            df["size_arcsec"] = np.where(hlr > 0, hlr, np.nan)
        if "flux_radius" in extra.columns:
            fr = extra["flux_radius"].astype(float).to_numpy() * df["pixel_scale_arcsec"].to_numpy()
            df["size_arcsec"] = np.where(np.isfinite(df["size_arcsec"]), df["size_arcsec"], fr)
    df.attrs["catalogue_file"] = str(path)
    df.attrs["has_fits"] = fits_path.is_file()
    df.attrs["has_selection"] = _companion(path, "_selection").is_file()
    return df


def galsim_exclusion_index(directory: str | Path, catalogue_file: str | Path, level: str) -> np.ndarray | None:
    """Indices kept by GalSim's COSMOSCatalog at ``level``; None if it cannot apply (no selection files)."""
    import galsim

    if level == "none":
        return None
    catalogue_file = Path(catalogue_file)
    if not (_companion(catalogue_file, "_selection").is_file() and _companion(catalogue_file, "_fits").is_file()):
        return None
    cat = galsim.COSMOSCatalog(catalogue_file.name, dir=str(directory), exclusion_level=level, use_real=False)
    return np.asarray(cat.orig_index, dtype=int)


def _interval(low: float | None, high: float | None) -> str:
    return f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"


def _range_keep(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    keep = np.ones(len(values), dtype=bool)
    if low is not None:
        keep &= values >= low
    if high is not None:
        keep &= values <= high
    return keep


def select_cosmos(
    directory: str | Path,
    file_name: str | None,
    exclusion_level: str,
    cuts: Mapping[str, Any],
    max_galaxies: int | None = None,
    rng: np.random.Generator | None = None,
    source_kind: str = "cosmos",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply GalSim's exclusion level and the catalogue cuts; return (selection, filter table), the table's
    rows labelled with ``source_kind``."""
    cat = read_cosmos_catalogue(directory, file_name)
    flog = FilterLog("catalogue", source_kind)
    flog.rows.append({"stage": "catalogue", "source_kind": source_kind, "cut": "input",
                      "description": f"galaxies in {Path(cat.attrs['catalogue_file']).name}",
                      "n_in": len(cat), "n_kept": len(cat), "n_removed": 0})
    kept_index = galsim_exclusion_index(directory, cat.attrs["catalogue_file"], exclusion_level)
    if kept_index is None:
        why = ("not requested" if exclusion_level == "none"
               else f"'{exclusion_level}' requested but the catalogue has no _selection file: not applied")
        cat = flog.apply(cat, np.ones(len(cat), bool), "galsim_exclusion", f"GalSim exclusion level: {why}")
    else:
        cat = flog.apply(cat, np.isin(cat["index"], kept_index), "galsim_exclusion",
                         f"GalSim COSMOSCatalog exclusion_level='{exclusion_level}'")
    if cuts.get("mag_min") is not None or cuts.get("mag_max") is not None:
        cat = flog.apply(cat, _range_keep(cat["mag"].to_numpy(), cuts.get("mag_min"), cuts.get("mag_max")),
                         "magnitude", f"F814W magnitude in {_interval(cuts.get('mag_min'), cuts.get('mag_max'))}")
    if cuts.get("zphot_min") is not None or cuts.get("zphot_max") is not None:
        z = cat["zphot"].to_numpy()
        if np.all(np.isnan(z)):
            raise CatalogueError("a photometric-redshift cut is configured but the catalogue has no zphot "
                                 "column (no _fits companion file)")
        cat = flog.apply(cat, _range_keep(z, cuts.get("zphot_min"), cuts.get("zphot_max")),
                         "redshift", f"photometric redshift in {_interval(cuts.get('zphot_min'), cuts.get('zphot_max'))}")
    if cuts.get("min_size_arcsec") is not None:
        size = cat["size_arcsec"].to_numpy()
        keep = np.where(np.isfinite(size), size >= cuts["min_size_arcsec"], True)
        cat = flog.apply(cat, keep, "point_like", f"half-light radius >= {cuts['min_size_arcsec']} arcsec")
    if max_galaxies is not None and len(cat) > max_galaxies:
        rng = rng or np.random.default_rng(0)
        pick = np.zeros(len(cat), dtype=bool)
        pick[rng.choice(len(cat), size=max_galaxies, replace=False)] = True
        cat = flog.apply(cat, pick, "max_galaxies", f"random subset of {max_galaxies}")
    return cat, flog.table()


def check_image_files(directory: str | Path, selection: pd.DataFrame) -> None:
    """Raise naming the first galaxy image file referenced by the selection that is missing."""
    directory = Path(directory)
    for name in sorted(set(selection["gal_filename"])):
        if not (directory / name).is_file():
            n = int((selection["gal_filename"] == name).sum())
            raise CatalogueError(
                f"galaxy image file '{directory / name}' referenced by {n} catalogue entries is missing; "
                "re-download the sample, or use its parametric fits (source kind cosmos_fit)"
            )


#: Source kinds read from RealGalaxyCatalog directories (their config blocks: ``sources.<kind>``).
CATALOGUE_KINDS = ("cosmos", "cosmos_fit")


def select_sources(sources: Mapping[str, Any], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The catalogue selections of every configured catalogue kind (``sources`` = the config section), one
    table with a ``kind`` column, and their filter table. Random subsets (``max_galaxies``) draw from seeds
    derived from ``seed``."""
    from .config import rng_for
    from .samples import catalogue_dir

    selections, tables = [], []
    for kind in CATALOGUE_KINDS:
        if kind not in sources["kinds"]:
            continue
        block = sources[kind]
        rng = rng_for(seed, "catalogue") if kind == "cosmos" else rng_for(seed, "catalogue", kind)
        sel, table = select_cosmos(catalogue_dir(block), block["file_name"], block["exclusion_level"],
                                   block["cuts"], block["max_galaxies"], rng, source_kind=kind)
        log.info("selected %d %s galaxies from %s", len(sel), kind, catalogue_dir(block))
        selections.append(sel.assign(kind=kind))
        tables.append(table)
    if not selections:
        return pd.DataFrame(columns=["index", "ident", "kind"]), pd.DataFrame(columns=FILTER_COLUMNS)
    return pd.concat(selections, ignore_index=True), pd.concat(tables, ignore_index=True)
