"""Rule super_resolution_table: the summary of every set's per-image super-resolution metrics by lens model,
noise variant, source kind (real galaxies first) and method, with study 001's table beside ours, and the PISR
ablation table when configured (logic in sourcelens.evaluate.super_resolution)."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import pandas as pd

from sourcelens.evaluate.super_resolution import pisr_ablation_summary, super_resolution_summary
from sourcelens.io import provenance, write_table

record = provenance(snakemake.config, rule="super_resolution_table", input=list(map(str, snakemake.input)))
per_image = pd.concat([pd.read_csv(path, keep_default_na=True) for path in snakemake.input], ignore_index=True)
table = super_resolution_summary(per_image)
write_table(table, snakemake.output.table, record)
log.info("summary:\n%s", table[table["kind"] == "all"][["set", "lens", "noise", "method", "origin", "n",
                                                       "ssim_mean", "psnr_mean", "mse_mean"]].to_string())
if "ablation" in snakemake.output.keys():
    ablation = pisr_ablation_summary(per_image)
    write_table(ablation, snakemake.output.ablation, record)
    log.info("PISR ablation:\n%s", ablation[ablation["kind"] == "all"][["set", "lens", "noise", "loss",
                                                                       "ssim_mean", "psnr_mean"]].to_string())
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
