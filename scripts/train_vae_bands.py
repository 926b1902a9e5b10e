"""Rule train_vae_bands: train the multi-band β-VAE of study 003 for one band set on the isolated blend files
(noisy galaxy → noiseless galaxy, the study's normalisation); writes the model (with its bands and normalisation
scales), the per-epoch metrics and the learning curve. Reruns resume from the checkpoints in
``deblend.checkpoint_dir``."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr  # Lightning's progress bar writes to stdout: send it to the job log too

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train.deblend import train_band_vae

logging.getLogger("lightning").handlers.clear()
torch.set_num_threads(max(1, int(snakemake.threads)))
bands = snakemake.wildcards.bands
record = provenance(snakemake.config, rule="train_vae_bands", bands=bands, input=list(map(str, snakemake.input)))
model = train_band_vae(snakemake.input.train, snakemake.input.val, snakemake.params.deblend,
                       model_path=snakemake.output.model, metrics_path=snakemake.output.metrics,
                       checkpoint_dir=snakemake.params.checkpoint_dir, seed=int(snakemake.params.seed),
                       provenance=record, band_set=bands)
summary = model.extra["training"]
fig = plots.learning_curve(pd.read_csv(snakemake.output.metrics),
                           title=f"{bands} β-VAE ({summary['n_train']} isolated galaxies, {summary['bands']} bands, "
                                 f"latent {summary['hparams']['latent_dim']}, β = {summary['beta']:g})")
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s (%.1f s of training)", snakemake.output.curve, summary["seconds"])
