"""Rule train_unet: train the U-Net delenser (study 002) on the training pairs of ``unet.lens_model``
(noisy lensed image → peak-normalised source on the source grid); writes the model, the per-epoch metrics and
the learning curve. Reruns resume from the checkpoints in ``unet.checkpoint_dir``."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train.unet import train_unet

logging.getLogger("lightning").handlers.clear()
torch.set_num_threads(max(1, int(snakemake.threads)))
record = provenance(snakemake.config, rule="train_unet", input=list(map(str, snakemake.input)))
model = train_unet(snakemake.input.train, snakemake.input.val, snakemake.params.unet,
                   model_path=snakemake.output.model, metrics_path=snakemake.output.metrics,
                   checkpoint_dir=snakemake.params.checkpoint_dir, seed=int(snakemake.params.seed), provenance=record)
summary = model.extra["training"]
fig = plots.learning_curve(pd.read_csv(snakemake.output.metrics),
                           title=f"U-Net delensing ({summary['n_train']} pairs {summary['image_size']}², "
                                 f"MSE + (1 − SSIM))")
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s", snakemake.output.curve)
