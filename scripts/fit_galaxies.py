"""Rule fit_galaxies: test galaxies fitted with the VAE decoder and with the Sérsic and Sérsic + shapelets
baselines (logic in sourcelens.fit.galaxies): per-galaxy metrics, the per-kind, per-method table (real galaxies
first) and a figure (data, model, residual per method) of up to 4 galaxies."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np
import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.fit.galaxies import fit_test_galaxies
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_vae

torch.set_num_threads(max(1, int(snakemake.threads)))
record = provenance(snakemake.config, rule="fit_galaxies", input=list(map(str, snakemake.input)))
evaluate = snakemake.params.evaluate
res = fit_test_galaxies(snakemake.input.test, load_vae(snakemake.input.model), snakemake.params.fit,
                        rng_for(int(snakemake.params.seed), "fit_galaxies"), bright_snr=float(evaluate["bright_snr"]),
                        ceiling_draws=int(evaluate["ceiling_draws"]), progress=True)
write_table(res.per_galaxy, snakemake.output.metrics, record)
write_table(res.summary, snakemake.output.table, record)
log.info("\n%s", res.summary.to_string())

show = np.arange(min(4, len(res.data)))
per = res.per_galaxy
fig = plots.fit_comparison(
    res.data[show], {m: f.model[show] for m, f in res.fits.items()}, labels=list(res.meta.source_id[show]),
    chi2_nu={m: per[per.method == m].chi2_nu.to_numpy()[show] for m in res.fits}, noise_sigma=res.sigma[show],
)
save_figure(fig, snakemake.output.figure, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
