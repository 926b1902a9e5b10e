"""Rule split: train/validation/test by source id (no copy of a test galaxy reaches training)."""

from sourcelens.config import rng_for
from sourcelens.io import provenance, read_attrs, read_dataset, write_dataset
from sourcelens.logs import log_to_file
from sourcelens.names import SPLITS
from sourcelens.split import assign_splits, check_no_leakage

log = log_to_file(snakemake.log[0])
arrays, meta = read_dataset(snakemake.input[0])
attrs = read_attrs(snakemake.input[0])
attrs.pop("kind"), attrs.pop("layout_version")
meta["split"] = assign_splits(meta["source_id"], snakemake.params.fractions, rng_for(snakemake.params.seed, "split"))
metas = {s: meta[meta["split"] == s] for s in SPLITS}
check_no_leakage(metas)
for split, out in zip(SPLITS, snakemake.output):
    rows = metas[split].index.to_numpy()
    log.info("%s: %d stamps of %d sources", split, len(rows), metas[split]["source_id"].nunique())
    attrs["provenance"] = provenance(snakemake.config, rule="split", split=split)
    attrs["split"] = split
    write_dataset(out, {"images": arrays["images"][rows]}, metas[split].reset_index(drop=True),
                  kind="stamps", attrs=attrs, array_attrs={"images": {"units": "as in stamps.h5"}})
