"""Rule train_cnn: train the lens-parameter CNN (study 002) on the training pairs of ``cnn.lens_model``,
validate and calibrate its uncertainties on the validation pairs; writes the model, the per-epoch metrics and
the learning curve. Reruns resume from the checkpoints in ``cnn.checkpoint_dir``."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr  # Lightning's progress bar writes to stdout: send it to the job log too

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train.cnn import train_cnn

logging.getLogger("lightning").handlers.clear()
torch.set_num_threads(max(1, int(snakemake.threads)))
record = provenance(snakemake.config, rule="train_cnn", input=list(map(str, snakemake.input)))
model = train_cnn(snakemake.input.train, snakemake.input.val, snakemake.params.cnn,
                  model_path=snakemake.output.model, metrics_path=snakemake.output.metrics,
                  checkpoint_dir=snakemake.params.checkpoint_dir, seed=int(snakemake.params.seed), provenance=record)
summary = model.extra["training"]
fig = plots.learning_curve(pd.read_csv(snakemake.output.metrics),
                           title=f"Lens-parameter CNN ({summary['arch']}, {summary['n_train']} pairs "
                                 f"{summary['image_size']}², ×8 dihedral)")
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s", snakemake.output.curve)
