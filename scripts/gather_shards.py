"""Snakemake script: gather the shard files of one dataset into a single HDF5 file."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: E402

from sourcelens.logs import log_to_file  # noqa: E402

log = log_to_file(snakemake.log[0])

from sourcelens.io import concatenate_datasets, read_attrs  # noqa: E402

shards = [str(p) for p in snakemake.input]
log.info("gathering %d shards into %s", len(shards), snakemake.output[0])
# Keep every shard's own provenance (seeds differ per shard) next to the first shard's.
shard_provenance = [read_attrs(p).get("provenance") for p in shards]
concatenate_datasets(shards, snakemake.output[0], attrs={"shard_provenance": shard_provenance})
log.info("wrote %s", snakemake.output[0])
