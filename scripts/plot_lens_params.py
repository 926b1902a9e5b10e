"""Figure of the lens-parameter distributions of the train, val and test pairs."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import pandas as pd

from sourcelens import plots
from sourcelens.io import provenance, read_dataset, read_meta, save_figure

SPLITS = ("train", "val", "test")  # the order of the rule's inputs
lens = snakemake.wildcards.lens
tables = []
for i, path in enumerate(snakemake.input):
    match = re.search(r"_(train|val|test)\.h5$", str(path))
    split = match.group(1) if match else SPLITS[i]
    meta = read_meta(path)
    missing = [p for p in plots.LENS_PARAM_NAMES if p not in meta.columns]
    if missing:  # fall back on the lens_params array
        arrays, _ = read_dataset(path, names=("lens_params",))
        params = pd.DataFrame(arrays["lens_params"], columns=plots.LENS_PARAM_NAMES)
    else:
        params = meta[list(plots.LENS_PARAM_NAMES)].copy()
    params["split"] = split
    tables.append(params)
    log.info("%s: split %s, %d pairs", path, split, len(params))

fig = plots.lens_parameter_histograms(
    pd.concat(tables, ignore_index=True), by="split",
    order=[t["split"].iloc[0] for t in tables if len(t)],
    suptitle=f"Lens-parameter distributions: {lens} + external shear",
)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_lens_params", input=list(map(str, snakemake.input))),
)
log.info("wrote %s", snakemake.output[0])
