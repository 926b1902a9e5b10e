"""Rule catalogue: apply GalSim's exclusion level and the study cuts to a COSMOS catalogue."""

import pandas as pd

from sourcelens.catalog import FILTER_COLUMNS, select_cosmos
from sourcelens.config import rng_for
from sourcelens.io import write_table
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sources = snakemake.params.sources
if "cosmos" in sources["kinds"]:
    cosmos = sources["cosmos"]
    selection, table = select_cosmos(
        cosmos["dir"], cosmos["file_name"], cosmos["exclusion_level"], cosmos["cuts"],
        cosmos["max_galaxies"], rng_for(snakemake.params.seed, "catalogue"),
    )
    log.info("selected %d COSMOS galaxies from %s", len(selection), cosmos["dir"])
else:
    selection, table = pd.DataFrame(columns=["index", "ident"]), pd.DataFrame(columns=FILTER_COLUMNS)
    log.info("no cosmos source kind configured: empty selection")
write_table(table, snakemake.output.table)
write_table(selection, snakemake.output.catalogue)
