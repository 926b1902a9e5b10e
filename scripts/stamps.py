"""Rule stamps: draw every configured source kind and preprocess it into N×N stamps (with the noiseless truth
where the galaxy was drawn)."""

import pandas as pd

from sourcelens.io import provenance, write_dataset, write_json, write_table
from sourcelens.logs import log_to_file
from sourcelens.sources import draw_sources
from sourcelens.stamps import make_stamps, stamps_attrs

log = log_to_file(snakemake.log[0])
sources, stamp_cfg = snakemake.params.sources, snakemake.params.stamps
selection = pd.read_csv(snakemake.input.catalogue)
raws = draw_sources(sources, selection, int(snakemake.params.seed), int(stamp_cfg["size"]))
images, truths, meta, stamp_table = make_stamps(raws, stamp_cfg)
catalogue_table = pd.read_csv(snakemake.input.table)
table = pd.concat([catalogue_table, stamp_table], ignore_index=True) if len(catalogue_table) else stamp_table
log.info("%d stamps: %s", len(meta), meta["kind"].value_counts().to_dict())

record = provenance(snakemake.config, rule="stamps")
attrs, array_attrs = stamps_attrs(stamp_cfg)
write_dataset(snakemake.output.stamps, {"images": images, "images_noiseless": truths}, meta, kind="stamps",
              attrs={"provenance": record, **attrs}, array_attrs=array_attrs)
write_table(table, snakemake.output.table)
write_json(record, snakemake.output.provenance)    # = provenance_path(table): a declared output
