"""Figure of the lens-parameter distributions of the train, val and test pairs (inputs named by split)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import pandas as pd

from sourcelens import plots
from sourcelens.io import provenance, read_meta, save_figure
from sourcelens.names import LENS_PARAMETERS, SPLITS

lens = snakemake.wildcards.lens
tables = []
for split in SPLITS:
    path = snakemake.input[split]
    meta = read_meta(path)
    missing = [p for p in LENS_PARAMETERS if p not in meta.columns]
    if missing:
        raise ValueError(f"{path}: no lens-parameter columns {missing} in its metadata; rerun the rule that makes it")
    params = meta[list(LENS_PARAMETERS)].copy()
    params["split"] = split
    tables.append(params)
    log.info("%s: split %s, %d pairs", path, split, len(params))

fig = plots.lens_parameter_histograms(
    pd.concat(tables, ignore_index=True), by="split", order=list(SPLITS),
    suptitle=f"Lens-parameter distributions: {lens} + external shear",
)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_lens_params", input=list(map(str, snakemake.input))),
)
log.info("wrote %s", snakemake.output[0])
