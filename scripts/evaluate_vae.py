"""Rule evaluate_vae: the trained VAE on the test split (logic in sourcelens.evaluate.vae).

Per-stamp metrics (every test stamp, augmented copies flagged) → ``metrics``; the summary table → ``table``
per source kind (real galaxies first, their bright ones apart) for two subsets: ``originals`` (one
un-augmented stamp per test galaxy: the headline numbers) and ``all stamps``. Against the data: χ² per pixel
with each stamp's noise, SSIM and its noise ceiling; against the noiseless truth where the galaxy was drawn.
Figures: input / reconstruction / residual of fixed examples (originals sorted by source id, evenly spaced),
decoder samples from the prior N(0, I) and a latent interpolation between the first and last example.
"""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np
import torch

from sourcelens import metrics, plots
from sourcelens.config import rng_for
from sourcelens.evaluate.vae import latent_interpolation, prior_samples, vae_summary, vae_test_metrics
from sourcelens.io import provenance, read_dataset, save_figure, write_table
from sourcelens.models import load_vae
from sourcelens.selection import original_rows, select_examples

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.evaluate
seed = int(snakemake.params.seed)
record = provenance(snakemake.config, rule="evaluate_vae", input=list(map(str, snakemake.input)))

vae = load_vae(snakemake.input.model)
arrays, meta = read_dataset(snakemake.input.test)
images = arrays["images"].astype(np.float32)
truths = arrays.get("images_noiseless")
log.info("%d test stamps (%d originals) %s, VAE %s", len(images), len(original_rows(meta)),
         meta["kind"].value_counts().to_dict(), vae.hparams)

table, recs, mus = vae_test_metrics(vae, images, meta, truths, rng=rng_for(seed, "evaluate_vae", "ceiling"),
                                    ceiling_draws=int(cfg["ceiling_draws"]))
write_table(table, snakemake.output.metrics, record)
summary = vae_summary(table, float(cfg["bright_snr"]))
write_table(summary, snakemake.output.table, record)
originals = summary[summary.subset == "originals"]
for kind in originals["kind"].unique():
    log.info("originals, %s: %s", kind, metrics.describe(originals[originals.kind == kind],
                                                         {"chi2_nu", "ssim", "ssim_fraction", "ssim_truth"}))

examples = select_examples(meta, int(cfg["n_examples"]))
labels = [f"{meta.source_id[i]}\nSSIM {table.ssim[i]:.3f}" for i in examples]
fig = plots.vae_reconstructions(images[examples], recs[examples], labels)
save_figure(fig, snakemake.output.reconstructions, provenance=record)

samples = prior_samples(vae, int(cfg["n_prior_samples"]), rng_for(seed, "evaluate_vae"))
save_figure(plots.image_gallery(samples), snakemake.output.samples, provenance=record)

a, b = (examples[0], examples[-1]) if len(examples) > 1 else (0, len(images) - 1)
path = latent_interpolation(vae, mus[a], mus[b], int(cfg["n_interpolation_steps"]))
fig = plots.latent_interpolation(path, endpoints=images[[a, b]],
                                 labels=(str(meta.source_id[a]), str(meta.source_id[b])))
save_figure(fig, snakemake.output.interpolation, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
