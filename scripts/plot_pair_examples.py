"""Figure of test-set lensing examples: source, noiseless lensed image, noisy lensed image."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens import plots
from sourcelens.io import provenance, read_attrs, read_dataset, read_meta, save_figure
from sourcelens.selection import evenly_spaced_rows

path = snakemake.input[0]
lens = snakemake.wildcards.lens
attrs = read_attrs(path)
if "pixel_scale_arcsec" not in attrs:
    raise ValueError(f"{path}: no pixel_scale_arcsec attribute (every pairs file has one); rerun the rule that makes it")
pixel_scale = float(attrs["pixel_scale_arcsec"])
source_scale = float(attrs.get("source_grid_pixel_scale_arcsec", pixel_scale))
n_total = len(read_meta(path))
# evenly spaced through the file: deterministic, and spans the shards
index = evenly_spaced_rows(n_total, int(snakemake.params.n_examples))
arrays, meta = read_dataset(
    path, names=("source", "lensed_noiseless", "lensed", "noise_sigma", "lens_params"), index=index
)
log.info("%s: %d pairs, plotting rows %s, pixel scale %g arcsec", path, n_total, index.tolist(), pixel_scale)

fig = plots.pair_examples(
    arrays["source"], arrays["lensed_noiseless"], arrays["lensed"], pixel_scale,
    lens_params=arrays["lens_params"], noise_sigma=arrays["noise_sigma"], row_labels=plots.example_labels(meta),
    suptitle=f"{lens} + external shear: test-set examples ({pixel_scale:g}\" pixels; source {source_scale:.3g}\")",
    source_pixel_scale=source_scale,
)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_pair_examples", input=list(map(str, snakemake.input))),
)
log.info("wrote %s", snakemake.output[0])
