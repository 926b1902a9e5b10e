"""Rule lensing_demo: lensed images per lens model, magnification map with critical curves and
caustics, and naive scatter versus exact-overlap backward mapping."""

from sourcelens.config import rng_for
from sourcelens.io import provenance, save_figure
from sourcelens.lensing.demo import demo_figures
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
figures = demo_figures(rng_for(int(snakemake.params.seed), "lensing_demo"))
record = provenance(snakemake.config, rule="lensing_demo")
for name, fig in figures.items():
    save_figure(fig, snakemake.output[name], provenance=record)
    log.info("wrote %s (%s)", snakemake.output[name], name)
