"""Figure of example galaxy stamps, one row per source kind."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens import plots
from sourcelens.io import provenance, read_dataset, read_meta, save_figure
from sourcelens.selection import select_per_kind

path = snakemake.input[0]
n_per_kind = int(snakemake.params.n_per_kind)
meta = read_meta(path)
kinds = meta["kind"].astype(str).to_numpy()
counts = meta["kind"].astype(str).value_counts().to_dict()
log.info("%s: %d stamps, per kind %s", path, len(meta), counts)
index = select_per_kind(kinds, n_per_kind, seed=0)
arrays, sel = read_dataset(path, names=("images",), index=index)


def column(name):
    return sel[name].to_numpy(dtype=float) if name in sel.columns else None


fig = plots.stamps_by_kind(
    arrays["images"], sel["kind"].astype(str).to_numpy(), sel["source_id"].astype(str).to_numpy(), n_per_kind,
    pixel_scales=column("pixel_scale_arcsec"), magnitudes=column("magnitude"), redshifts=column("redshift"),
    kind_counts=counts,
)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_stamps", input=list(map(str, snakemake.input))),
)
log.info("wrote %s (%d stamps shown)", snakemake.output[0], len(index))
