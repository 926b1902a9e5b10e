"""Rule fit_lensed: lensed test galaxies fitted with the decoder, Sérsic, Sérsic + shapelets and a regularised
pixelated source, the lens fixed at its true parameters (logic in sourcelens.fit.lensed)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.fit import lensed
from sourcelens.fit.scenes import true_source_on_grid
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_vae

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.fit
lcfg = cfg["lensed"]
scenes = lensed.lensed_test_scenes(snakemake.input.test, lcfg["n_galaxies"], snakemake.params.pairs,
                                   lcfg["lens_model"], rng_for(int(snakemake.params.seed), "fit_lensed"),
                                   snakemake.params.source_kinds)
vae = load_vae(snakemake.input.model)
log.info("%d test galaxies (%s ...) lensed by %s + shear; model %s (latent %d)", len(scenes), scenes.source_ids[:3],
         lcfg["lens_model"], snakemake.input.model, vae.latent_dim)
fits, metrics = lensed.fit_lensed_all(scenes, vae, **lensed.fit_options(cfg))
table = lensed.summary_table(metrics)
log.info("summary:\n%s", table.to_string())
record = provenance(snakemake.config, rule="fit_lensed", input=list(map(str, snakemake.input)))
write_table(metrics, snakemake.output.metrics, record)
write_table(table, snakemake.output.table, record)

i = lensed.median_galaxy(metrics, "decoder")
row = metrics[metrics["galaxy"] == i].set_index("method")
scores = {name: f"χ²/ν={row.loc[name, 'chi2_nu']:.2f}, SSIM={row.loc[name, 'source_ssim']:.2f}" for name in fits}
fig = plots.fit_comparison_lensed(
    scenes.data[i], scenes.sigma[i], {k: f.model[i] for k, f in fits.items()}, {k: f.source[i] for k, f in fits.items()},
    true_source_on_grid(scenes)[i], scenes.pixel_scale, float(scenes.source_pixel_scale[i]), scores=scores,
    suptitle=f"lensed source fits, lens fixed ({scenes.lens_model} + shear): {scenes.source_ids[i]}",
)
save_figure(fig, snakemake.output.figure, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
