"""Rule split: train/validation/test by source id (no copy of a test galaxy reaches training)."""

from sourcelens.config import rng_for
from sourcelens.io import provenance, read_array_attrs, read_attrs, read_dataset, write_dataset
from sourcelens.logs import log_to_file
from sourcelens.names import SPLITS
from sourcelens.split import assign_splits, check_no_leakage

log = log_to_file(snakemake.log[0])
arrays, meta = read_dataset(snakemake.input[0])
attrs = read_attrs(snakemake.input[0])
attrs.pop("kind"), attrs.pop("layout_version")
# by galaxy on the sky (a real stamp and its fitted profile share one), so no copy of a test galaxy reaches training;
# each kind split on its own, so the few real galaxies are in every split in proportion
groups = meta["galaxy_id"] if "galaxy_id" in meta else meta["source_id"]
meta["split"] = assign_splits(groups, snakemake.params.fractions, rng_for(snakemake.params.seed, "split"),
                              strata=meta["kind"] if "kind" in meta else None)
metas = {s: meta[meta["split"] == s] for s in SPLITS}
for column in ("source_id", "galaxy_id"):
    if column in meta:
        check_no_leakage(metas, column)
for split, out in zip(SPLITS, snakemake.output):
    rows = metas[split].index.to_numpy()
    log.info("%s: %d stamps of %d sources", split, len(rows), metas[split]["source_id"].nunique())
    attrs["provenance"] = provenance(snakemake.config, rule="split", split=split)
    attrs["split"] = split
    write_dataset(out, {name: a[rows] for name, a in arrays.items()}, metas[split].reset_index(drop=True),
                  kind="stamps", attrs=attrs, array_attrs=read_array_attrs(snakemake.input[0]))
