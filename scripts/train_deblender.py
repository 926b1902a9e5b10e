"""Rule train_deblender: train the latent-space deblender of study 003 for one band set on the blended files:
its encoder starts from the band set's VAE encoder, the VAE's decoder is frozen (noisy blend → the central
galaxy); writes the model, the per-epoch metrics and the learning curve. Reruns resume from the checkpoints in
``deblend.checkpoint_dir`` (a retrained VAE restarts it)."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train.deblend import train_deblender

logging.getLogger("lightning").handlers.clear()
torch.set_num_threads(max(1, int(snakemake.threads)))
bands = snakemake.wildcards.bands
record = provenance(snakemake.config, rule="train_deblender", bands=bands, input=list(map(str, snakemake.input)))
model = train_deblender(snakemake.input.train, snakemake.input.val, snakemake.input.vae, snakemake.params.deblend,
                        model_path=snakemake.output.model, metrics_path=snakemake.output.metrics,
                        checkpoint_dir=snakemake.params.checkpoint_dir, seed=int(snakemake.params.seed),
                        provenance=record, band_set=bands)
summary = model.extra["training"]
fig = plots.learning_curve(pd.read_csv(snakemake.output.metrics),
                           title=f"{bands} deblender ({summary['n_train']} blends, encoder from the VAE, "
                                 f"decoder frozen)")
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s (%.1f s of training)", snakemake.output.curve, summary["seconds"])
