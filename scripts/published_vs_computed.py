"""Rule published_vs_computed: each study's published numbers beside the ones this run computed, read from the
run's tables (logic in sourcelens.evaluate.studies)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens.evaluate.studies import caption_table, published_vs_computed
from sourcelens.io import provenance, write_table

record = provenance(snakemake.config, rule="published_vs_computed", input=list(map(str, snakemake.input)))
table = published_vs_computed(dict(snakemake.input.items()))
write_table(table, snakemake.output.table, record)
log.info("\n%s", table[["study", "quantity", "published", "computed_real", "computed_all"]].to_string())
log.info("wrote %s", snakemake.output.table)
# each study table's own rows, for its report caption (workflow/report/*.rst include them as a csv-table)
for name, path in snakemake.input.items():
    write_table(caption_table(published_vs_computed({name: path})), getattr(snakemake.output, f"caption_{name}"))
