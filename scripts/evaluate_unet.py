"""Rule evaluate_unet: delensing of the test pairs by every method on the same pairs (logic in
sourcelens.evaluate.delensing): identity, exact-overlap backward mapping with the true and with the
CNN-predicted lens, the U-Net, and the noiseless backward mapping as a reference; per-pair metrics, the summary
by kind and method, and figures."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.evaluate.delensing import evaluate_delensing
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_cnn, load_unet
from sourcelens.selection import select_examples

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.evaluate
record = provenance(snakemake.config, rule="evaluate_unet", input=list(map(str, snakemake.input)))
result = evaluate_delensing(snakemake.input.test, load_cnn(snakemake.input.cnn), load_unet(snakemake.input.unet),
                            n_pairs=cfg["delensing_pairs"],
                            rng=rng_for(int(snakemake.params.seed), "evaluate_unet", "ceiling"),
                            ceiling_draws=int(cfg["ceiling_draws"]))
write_table(result.per_pair, snakemake.output.metrics, record)
write_table(result.summary, snakemake.output.table, record)
log.info("%d test pairs; summary:\n%s", len(result.rows),
         result.summary[result.summary.metric.isin(["mse", "ssim", "psnr"])].to_string())

meta = result.per_pair[result.per_pair.method == "U-Net"].reset_index(drop=True)
meta["augmentation"] = "original"
examples = select_examples(meta, int(cfg["n_examples"]))
labels = [f"{meta.source_id[i]}\nθE {meta.theta_E[i]:.2f}\", S/N {meta.snr[i]:.0f}" for i in examples]
fig = plots.unet_examples(result.lensed[examples], result.truth[examples], result.estimates["U-Net"][examples],
                          result.pixel_scale, result.grid_scale, row_labels=labels)
save_figure(fig, snakemake.output.fig_unet, provenance=record)
few = examples[: min(4, len(examples))]
n_pairs = len(result.rows)
shown = result.per_pair.assign(pair=result.per_pair.groupby("method").cumcount())   # position within its method
shown = pd.concat([shown[(shown.method == m) & (shown.pair == i)] for m in result.estimates for i in few])
fig = plots.delensing_examples(result.lensed[few], result.truth[few], {k: v[few] for k, v in result.estimates.items()},
                               result.pixel_scale, result.grid_scale, row_labels=labels[: len(few)], metrics=shown)
save_figure(fig, snakemake.output.fig_methods, provenance=record)
save_figure(plots.delensing_vs_snr(result.per_pair, "ssim"), snakemake.output.fig_snr, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
