"""Rule catalogue: GalSim's exclusion level and the study cuts applied to every configured COSMOS catalogue
(real galaxies and fitted profiles); the selection has a ``kind`` column."""

from sourcelens.catalog import select_sources
from sourcelens.io import provenance, write_table
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
selection, table = select_sources(snakemake.params.sources, int(snakemake.params.seed))
log.info("catalogue selection: %s", selection["kind"].value_counts().to_dict() if len(selection) else "none")
record = provenance(snakemake.config, rule="catalogue")
write_table(table, snakemake.output.table, record)
write_table(selection, snakemake.output.catalogue, record)
