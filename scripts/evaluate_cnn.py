"""Rule evaluate_cnn: the lens-parameter CNN on the test pairs (logic in sourcelens.evaluate.cnn): per-pair
predictions with calibrated 1σ, the table (MSE in the study's units and order beside the study's, R² against the
prior's variance, per kind, 68 % / 95 % coverage), the calibration curve and three figures."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import torch

from sourcelens import plots
from sourcelens.evaluate.cnn import calibration_curve, cnn_predictions, cnn_summary
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_cnn

torch.set_num_threads(max(1, int(snakemake.threads)))
record = provenance(snakemake.config, rule="evaluate_cnn", input=list(map(str, snakemake.input)))
model = load_cnn(snakemake.input.model)
training = model.extra.get("training", {})
pred = cnn_predictions(model, snakemake.input.test)
fixed = training.get("fixed_parameters", [])
table = cnn_summary(pred, training["prior_std"], fixed)
curve = calibration_curve(pred)
write_table(pred, snakemake.output.predictions, record)
write_table(table, snakemake.output.table, record)
write_table(curve, snakemake.output.calibration, record)
log.info("%d test pairs; table:\n%s", len(pred), table.to_string())
save_figure(plots.cnn_predictions(pred, fixed=fixed), snakemake.output.fig_predictions, provenance=record)
save_figure(plots.cnn_residuals(pred), snakemake.output.fig_residuals, provenance=record)
save_figure(plots.cnn_calibration(curve), snakemake.output.fig_calibration, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
