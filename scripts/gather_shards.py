"""Snakemake script: gather the shard files of one dataset into a single HDF5 file.

Root attributes come from the first shard; every shard's own provenance (its seed keys differ)
is kept under ``shard_provenance`` by ``concatenate_datasets``.
"""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens.io import concatenate_datasets

shards = [str(p) for p in snakemake.input]
log.info("gathering %d shards into %s", len(shards), snakemake.output[0])
concatenate_datasets(shards, snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
