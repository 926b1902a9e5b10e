"""Rule train_sr: train one super-resolution method (studies 001 and 004; or a PISR ablation variant) on the
training pairs of one set, lens model and noise variant, validated on its validation pairs (logic in
sourcelens.train.sr); writes the model, the per-epoch metrics and the learning curve. Reruns resume from the
checkpoints in ``super_resolution.checkpoint_dir``."""

import sys

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
sys.stdout = sys.stderr  # Lightning's progress bar writes to stdout: send it to the job log too

import logging

import pandas as pd
import torch

from sourcelens import plots
from sourcelens.io import provenance, save_figure
from sourcelens.train.sr import train_sr

logging.getLogger("lightning").handlers.clear()
torch.set_num_threads(max(1, int(snakemake.threads)))
wc = snakemake.wildcards
record = provenance(snakemake.config, rule="train_sr", input=list(map(str, snakemake.input)))
model = train_sr(snakemake.params.method, snakemake.input.train, snakemake.input.val, snakemake.params.settings,
                 snakemake.output.model, snakemake.output.metrics, snakemake.params.checkpoint_dir,
                 seed=int(snakemake.params.seed), provenance=record)
summary = model.extra["training"]
fig = plots.learning_curve(pd.read_csv(snakemake.output.metrics),
                           title=f"{wc.method} on {wc.set} {wc.lens} {wc.noise} ({summary['n_train']} pairs)")
save_figure(fig, snakemake.output.curve, provenance=record)
log.info("wrote %s", snakemake.output.curve)
