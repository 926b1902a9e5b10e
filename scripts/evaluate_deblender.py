"""Rule evaluate_deblender: every deblending method of study 003 on the test blends of every band set (logic in
sourcelens.evaluate.deblending): the VAE's reconstruction of the isolated galaxy, the deblender, the sep baseline
and the undeblended blend against the truth; r-band KSB and REGAUSS shapes, magnitudes in every band, shear bias
(m, c) with bootstrap errors; the per-galaxy rows, the binned residuals, the summary table and figures."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import torch

from sourcelens.evaluate.deblending import evaluate_deblending
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.plots.deblending import deblending_examples, deblending_residuals, shear_bias_figure

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.evaluate
record = provenance(snakemake.config, rule="evaluate_deblender", input=list(map(str, snakemake.input)))
files = {bands: {part: snakemake.input[f"{part}_{bands}"] for part in ("isolated", "blended", "vae", "deblender")}
         for bands in snakemake.params.band_sets}
result = evaluate_deblending(files, cfg, seed=int(snakemake.params.seed))
write_table(result.per_galaxy, snakemake.output.metrics, record)
write_table(result.binned, snakemake.output.binned, record)
write_table(result.table, snakemake.output.table, record)
headline = result.table[(result.table.kind == "all") & (result.table.estimator == "ksb")]
log.info("summary (KSB, all kinds):\n%s", headline[["band_set", "method", "n", "n_failed", "median_abs_de1",
                                                     "median_abs_de2", "median_abs_dmag", "m1", "m1_err", "m2",
                                                     "m2_err"]].to_string())
band = cfg["shape_band"]
save_figure(deblending_residuals(result.per_galaxy, "snr", shape_band=band), snakemake.output.fig_snr,
            provenance=record)
save_figure(deblending_residuals(result.per_galaxy, "mag_true", shape_band=band), snakemake.output.fig_mag,
            provenance=record)
save_figure(shear_bias_figure(result.per_galaxy, result.table), snakemake.output.fig_bias, provenance=record)
save_figure(deblending_examples(result.examples), snakemake.output.fig_examples, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
