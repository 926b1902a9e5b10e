"""Rule leaderboard: every source-recovery method on one common set of lensed test galaxies, the same metrics and
normalisation for all, paired bootstrap intervals on the differences from the best (logic in
sourcelens.evaluate.leaderboard)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np
import pandas as pd
import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.evaluate import leaderboard as lb
from sourcelens.fit.lensed import fit_options, flux_normalised
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_cnn, load_unet, load_vae
from sourcelens.models.sr import load_sr_model
from sourcelens.selection import select_examples

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.leaderboard
record = provenance(snakemake.config, rule="leaderboard", input=list(map(str, snakemake.input)))
scenes = lb.pairs_scenes(snakemake.input.test, cfg["n_galaxies"], snakemake.params.pairs)
log.info("%d test galaxies of %s (%s), %s lens", len(scenes), snakemake.input.test,
         pd.Series(scenes.kinds).value_counts().to_dict(), scenes.lens_model)
sr_models = {method: load_sr_model(path)[0] for method, path in snakemake.params.sr_models.items()}
per_galaxy, sources = lb.evaluate_leaderboard(
    scenes, load_vae(snakemake.input.vae), load_cnn(snakemake.input.cnn), load_unet(snakemake.input.unet),
    fit_options=fit_options(snakemake.params.fit), sr_models=sr_models, pairs_cfg=snakemake.params.pairs)
table = lb.leaderboard_table(per_galaxy, rng_for(int(snakemake.params.seed), "leaderboard", "bootstrap"),
                             int(cfg["bootstrap_resamples"]), float(cfg["interval"]))
write_table(per_galaxy, snakemake.output.metrics, record)
write_table(table, snakemake.output.table, record)
log.info("leaderboard:\n%s", table[["kind", "method", "n_galaxies", "ssim_mean", "ssim_diff_low", "ssim_diff_high",
                                    "psnr_mean", "mse_mean", "chi2_nu_mean", "seconds_median"]].to_string())
save_figure(plots.leaderboard_figure(table), snakemake.output.figure, provenance=record)

# a few galaxies (real ones first) through every method, in the leaderboard's normalisation
meta = pd.DataFrame({"source_id": scenes.source_ids, "kind": scenes.kinds, "augmentation": "original"})
shown = select_examples(meta, int(cfg["n_examples"]))
truth = scenes.stamps[shown] / scenes.stamps[shown].max(axis=(1, 2), keepdims=True)
estimates = {}
for method, stack in sources.items():
    pairs = [flux_normalised(scenes.stamps[i], stack[i]) for i in shown]
    estimates[method] = np.stack([p[1] if p is not None else np.zeros_like(truth[0]) for p in pairs])
metrics = pd.concat([per_galaxy[(per_galaxy.method == m) & (per_galaxy.galaxy == i)] for m in sources for i in shown])
labels = [f"{meta.source_id[i]} ({meta.kind[i]})" for i in shown]
fig = plots.delensing_examples(scenes.data[shown], truth, estimates, scenes.pixel_scale,
                               float(scenes.source_pixel_scale[0]), row_labels=labels, metrics=metrics,
                               suptitle="Leaderboard examples: the source of every method, scaled to the true "
                                        "source's flux (units of its peak)")
save_figure(fig, snakemake.output.examples, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
