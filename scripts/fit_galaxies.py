"""Rule fit_galaxies: test galaxies fitted with the VAE decoder and with the lenstronomy baselines.

Galaxies: the first ``fit.n_galaxies`` originals of the test split by source id. Noise: each stamp
is brought up to ``fit.noise_sigma`` (rng_for(seed, "fit_galaxies")); the χ² uses the total σ.
Methods: decoder (batched L-BFGS, ``fit.init``, ``fit.max_iter``), Sérsic, Sérsic + shapelets
(``fit.shapelet_n_max``). Metrics compare each model with the noiseless stamp (MSE, SSIM, …) and
with the noisy data (χ²/ν, ν = N_pix − free parameters). Outputs: per-galaxy-per-method metrics,
the per-method table (free parameters, χ²/ν, MSE, SSIM median and mean, seconds per galaxy mean
and median) and a figure (data, model, residual per method) of up to 4 galaxies.
"""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np
import torch

from sourcelens import plots
from sourcelens.selection import first_originals
from sourcelens.config import rng_for
from sourcelens.fit import add_noise_to_level, fit_decoder, fit_sersic_batch
from sourcelens.fit.compare import fit_metrics, fit_summary
from sourcelens.io import provenance, read_dataset, read_meta, save_figure, write_table
from sourcelens.models import load_vae

torch.set_num_threads(max(1, int(snakemake.threads)))
cfg = snakemake.params.fit
record = provenance(snakemake.config, rule="fit_galaxies", input=list(map(str, snakemake.input)))

meta_all = read_meta(snakemake.input.test)
orig = first_originals(meta_all, int(cfg["n_galaxies"]))
arrays, meta = read_dataset(snakemake.input.test, names=("images",), index=np.sort(orig))
order = np.argsort(meta.source_id.astype(str).to_numpy(), kind="stable")
truth, meta = arrays["images"][order].astype(np.float64), meta.iloc[order].reset_index(drop=True)
rng = rng_for(int(snakemake.params.seed), "fit_galaxies")
data, sigma = add_noise_to_level(truth, meta["noise_sigma"].to_numpy(dtype=float), float(cfg["noise_sigma"]), rng)
log.info("fitting %d galaxies (requested %d); sigma %.3g..%.3g", len(data), cfg["n_galaxies"], sigma.min(), sigma.max())

vae = load_vae(snakemake.input.model)
dec = fit_decoder(vae, data, sigma, init=cfg["init"], max_iter=int(cfg["max_iter"]),
                  tolerance_change=float(cfg["tolerance_change"]), patience=int(cfg["patience"]),
                  interpolation=cfg["interpolation"], progress=True)
stops = dict(zip(*np.unique(dec.status, return_counts=True)))
log.info("decoder: %.3f s per galaxy, iterations median %d max %d, stopped by %s, median chi2/nu %.3f",
         dec.seconds.mean(), np.median(dec.n_iter), dec.n_iter.max(), stops, np.median(dec.chi2_nu))
models = {"decoder": (dec.model, dec.n_params * np.ones(len(data), int), dec.seconds)}
base = fit_sersic_batch(data, sigma, shapelet_n_max=tuple(int(n) for n in cfg["shapelet_n_max"]))
for method, fits in base.items():
    models[method] = (np.stack([f.model for f in fits]), np.array([f.n_params for f in fits]),
                      np.array([f.seconds for f in fits]))
    log.info("%s: %.3f s per galaxy, median chi2/nu %.3f", method, np.mean(models[method][2]),
             np.median([f.chi2_nu for f in fits]))

per = fit_metrics(truth, data, sigma, meta, models)
write_table(per, snakemake.output.metrics)
table = fit_summary(per)
write_table(table, snakemake.output.table)
log.info("\n%s", table.to_string())

show = np.arange(min(4, len(data)))
fig = plots.fit_comparison(
    data[show], {m: v[0][show] for m, v in models.items()}, labels=list(meta.source_id[show]),
    chi2_nu={m: per[per.method == m].chi2_nu.to_numpy()[show] for m in models}, noise_sigma=sigma[show],
)
save_figure(fig, snakemake.output.figure, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
