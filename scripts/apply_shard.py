"""Rule apply_shard: one shard (rows [start, stop)) of a catalogue through a trained model (logic in
sourcelens.apply)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import torch

from sourcelens.apply import run_shard
from sourcelens.io import provenance

torch.set_num_threads(max(1, int(snakemake.threads)))
start, stop = snakemake.params.rows
log.info("%s of rows %d-%d of %s with %s", snakemake.params.task, start, stop - 1, snakemake.input.catalogue,
         snakemake.input.model)
seconds = run_shard(snakemake.params.task, snakemake.input.model, snakemake.input.catalogue, start, stop,
                    snakemake.output[0], options=snakemake.params.options,
                    attrs={"provenance": provenance(snakemake.config, rule="apply_shard",
                                                    input=list(map(str, snakemake.input)))})
log.info("%d stamps in %.1f s (%.1f stamps/s) -> %s", stop - start, seconds, (stop - start) / seconds,
         snakemake.output[0])
