"""Lensed source fits (study 000): decoder vs Sérsic, Sérsic + shapelets and a regularised pixelated
source, with the lens fixed at its true parameters. Logic in sourcelens.fit.lensed."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import time

import numpy as np
import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.fit import lensed
from sourcelens.selection import first_originals
from sourcelens.io import provenance, read_dataset, save_figure, write_table
from sourcelens.models.vae import load_vae

torch.set_num_threads(max(1, int(snakemake.threads)))
fit_cfg = dict(snakemake.params.fit)
lcfg = dict(fit_cfg.get("lensed", {}))
pairs_cfg = dict(snakemake.params.pairs)
seed = int(snakemake.params.seed)

arrays, meta = read_dataset(snakemake.input.test, names=("images",))
rows = first_originals(meta, int(lcfg.get("n_galaxies", 16)))
if len(rows) == 0:
    raise ValueError(f"{snakemake.input.test}: no original (un-augmented) test stamps to fit")
vae = load_vae(snakemake.input.model)
log.info("%d test galaxies (%s ...), model %s (latent %d)", len(rows), list(meta["source_id"].iloc[rows[:3]]),
         snakemake.input.model, vae.latent_dim)

t0 = time.perf_counter()
scenes = lensed.simulate_lensed(arrays["images"][rows], pairs_cfg, rng_for(seed, "fit_lensed"), lens_model="SIE",
                                source_ids=meta["source_id"].iloc[rows].astype(str).tolist())
log.info("simulated %d SIE + shear lenses with lenstronomy in %.1f s", len(scenes), time.perf_counter() - t0)
fits, metrics = lensed.fit_lensed_all(
    scenes, vae, regularisation=float(lcfg.get("regularisation", 1.0)), max_iter=int(fit_cfg.get("max_iter", 200)),
    init=str(fit_cfg.get("init", "encoder")), shapelet_n_max=[int(n) for n in fit_cfg.get("shapelet_n_max", [8, 20])],
)
table = lensed.summary_table(metrics)
log.info("summary:\n%s", table.to_string())

prov = provenance(snakemake.config, rule="fit_lensed", input=[str(p) for p in snakemake.input])
write_table(metrics, snakemake.output.metrics)
write_table(table, snakemake.output.table)

# the figure: the galaxy with the median decoder chi2/nu (or the first)
dec = metrics[metrics["method"] == "decoder"] if "decoder" in fits else metrics[metrics["method"] == next(iter(fits))]
order = dec.sort_values("chi2_nu", kind="stable")["galaxy"].to_numpy()
i = int(order[len(order) // 2])
truth = lensed.true_source_on_grid(scenes)
row = metrics[metrics["galaxy"] == i].set_index("method")
scores = {name: f"χ²/ν={row.loc[name, 'chi2_nu']:.2f}, SSIM={row.loc[name, 'source_ssim']:.2f}" for name in fits}
fig = plots.fit_comparison_lensed(
    scenes.data[i], scenes.sigma[i], {k: f.model[i] for k, f in fits.items()}, {k: f.source[i] for k, f in fits.items()},
    truth[i], scenes.pixel_scale, scenes.source_pixel_scale, scores=scores,
    suptitle=f"lensed source fits, lens fixed (SIE + shear): {scenes.source_ids[i]}",
)
save_figure(fig, snakemake.output.figure, provenance=prov)
log.info("wrote %s, %s, %s", snakemake.output.metrics, snakemake.output.table, snakemake.output.figure)
