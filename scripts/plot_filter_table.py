"""Figure of the source selection: galaxies kept/removed by each cut, and the filter table."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import pandas as pd

from sourcelens import plots
from sourcelens.io import provenance, save_figure

table = pd.read_csv(snakemake.input[0])
log.info("filter table %s: %d cuts", snakemake.input[0], len(table))
fig = plots.filter_table_figure(table)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_filter_table", input=list(map(str, snakemake.input))),
)
log.info("wrote %s", snakemake.output[0])
