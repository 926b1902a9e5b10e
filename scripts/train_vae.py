"""Rule train_vae: train the galaxy VAE (study 000) on the training stamps, validate on the validation
stamps; writes the model, the per-epoch metrics and the learning curve. Reruns resume from the checkpoints
in ``vae.checkpoint_dir`` (after a kill, the same model as an uninterrupted run)."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr  # Lightning's progress bar writes to stdout: send it to the job log too

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train import train_vae

logging.getLogger("lightning").handlers.clear()  # its messages reach the job log through the root logger
torch.set_num_threads(max(1, int(snakemake.threads)))
record = provenance(snakemake.config, rule="train_vae", input=list(map(str, snakemake.input)))
model = train_vae(
    snakemake.input.train, snakemake.input.val, snakemake.params.vae,
    model_path=snakemake.output.model, metrics_path=snakemake.output.metrics,
    checkpoint_dir=snakemake.params.checkpoint_dir, seed=int(snakemake.params.seed), provenance=record,
)
summary = model.extra["training"]
fig = plots.learning_curve(
    pd.read_csv(snakemake.output.metrics),
    title=f"VAE learning curve ({summary['n_train']} stamps {summary['image_size']}², "
          f"latent {summary['latent_dim']}, β = {summary['beta']:g})",
)
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s (final val_loss %.5g, val MSE per pixel %.3g)", snakemake.output.curve,
         summary["final_val_loss"], summary["final_val_mse"])
