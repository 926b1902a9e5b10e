"""Rule stamps: draw every configured source kind and preprocess it into N×N stamps."""

import itertools

import pandas as pd

from sourcelens.config import rng_for
from sourcelens.io import provenance, write_dataset, write_json, write_table
from sourcelens.logs import log_to_file
from sourcelens.sources import cosmos_galaxies, parametric_galaxies, xdf_galaxies
from sourcelens.stamps import make_stamps

log = log_to_file(snakemake.log[0])
sources, stamp_cfg = snakemake.params.sources, snakemake.params.stamps
generators = []
if "cosmos" in sources["kinds"]:
    selection = pd.read_csv(snakemake.input.catalogue)
    cosmos = sources["cosmos"]
    generators.append(cosmos_galaxies(selection, cosmos["dir"], cosmos["file_name"], cosmos["galaxy_type"]))
if "parametric" in sources["kinds"]:
    generators.append(parametric_galaxies(sources["parametric"], rng_for(snakemake.params.seed, "stamps", "parametric")))
if "xdf" in sources["kinds"]:
    generators.append(xdf_galaxies(sources["xdf"]))

images, meta, stamp_table = make_stamps(itertools.chain(*generators), stamp_cfg)
catalogue_table = pd.read_csv(snakemake.input.table)
table = pd.concat([catalogue_table, stamp_table], ignore_index=True) if len(catalogue_table) else stamp_table
log.info("%d stamps: %s", len(meta), meta["kind"].value_counts().to_dict())

record = provenance(snakemake.config, rule="stamps")
write_dataset(
    snakemake.output.stamps, {"images": images}, meta, kind="stamps",
    attrs={"provenance": record, "size": stamp_cfg["size"], "normalisation": stamp_cfg["normalisation"],
           "description": "preprocessed galaxy stamps (centred, rescaled, normalised)"},
    array_attrs={"images": {"units": "normalised flux per pixel" if stamp_cfg["normalisation"] != "none"
                            else "input flux per pixel", "shape": "(N, size, size)"}},
)
write_table(table, snakemake.output.table)
write_json(record, snakemake.output.provenance)
