"""Rule source_diversity: size, Sérsic index and shape distributions per kind against the real galaxies', and how
near each test galaxy is to a training stamp."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens import plots
from sourcelens.diversity import NEAR_COPY_CORRELATION, diversity_table, measure_splits
from sourcelens.io import provenance, save_figure, write_table

record = provenance(snakemake.config, rule="source_diversity", input=list(map(str, snakemake.input)))
measured = measure_splits({"train": snakemake.input.train, "test": snakemake.input.test},
                          max_per_kind=snakemake.params.max_per_kind)
table = diversity_table(measured)
log.info("diversity per kind and split:\n%s", table.to_string())
write_table(measured, snakemake.output.per_galaxy, record)
write_table(table, snakemake.output.table, record)
save_figure(plots.source_diversity(measured, near_copy=NEAR_COPY_CORRELATION), snakemake.output.figure,
            provenance=record)
