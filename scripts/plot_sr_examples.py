"""Figure of test-set super-resolution examples: low-res input, high-res target, high-res source."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens import plots
from sourcelens.selection import evenly_spaced_rows
from sourcelens.io import provenance, read_attrs, read_dataset, read_meta, save_figure

path = snakemake.input[0]
sr_set, lens, noise = snakemake.wildcards.set, snakemake.wildcards.lens, snakemake.wildcards.noise
n_total = len(read_meta(path))
index = evenly_spaced_rows(n_total, int(snakemake.params.n_examples))
arrays, meta = read_dataset(
    path, names=("low_res", "high_res", "source_high_res", "noise_sigma", "lens_params"), index=index
)
attrs = read_attrs(path)
lo = attrs.get("low_res_pixel_scale_arcsec")
hi = attrs.get("high_res_pixel_scale_arcsec")
if lo is None and hi is None:
    log.warning("%s has no pixel-scale attributes; axes will be in low-res pixels", path)
log.info("%s: %d examples, plotting rows %s (pixel scales %s, %s)", path, n_total, index.tolist(), lo, hi)

noise_sigma = arrays.get("noise_sigma") if noise != "noiseless" else None
fig = plots.sr_examples(
    arrays["low_res"], arrays["high_res"], arrays.get("source_high_res"),
    low_res_pixel_scale=lo, high_res_pixel_scale=hi, noise_sigma=noise_sigma,
    lens_params=arrays.get("lens_params"),
    suptitle=f"Super-resolution test set '{sr_set}' ({attrs.get('preset', '?')} preset): {lens}, {noise} input",
)
save_figure(
    fig, snakemake.output[0],
    provenance=provenance(snakemake.config, rule="plot_sr_examples", input=list(map(str, snakemake.input))),
)
log.info("wrote %s", snakemake.output[0])
