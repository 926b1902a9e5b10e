"""Snakemake script: gather the shard files of one dataset into a single HDF5 file.

Root attributes come from the first shard; every shard's own provenance (its seed keys differ)
is kept under ``shard_provenance`` by ``concatenate_datasets``.
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: E402

from sourcelens.logs import log_to_file  # noqa: E402

log = log_to_file(snakemake.log[0])

from sourcelens.io import concatenate_datasets  # noqa: E402

shards = [str(p) for p in snakemake.input]
log.info("gathering %d shards into %s", len(shards), snakemake.output[0])
concatenate_datasets(shards, snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
