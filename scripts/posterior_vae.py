"""Rule posterior_vae: posterior uncertainties of decoder fits (Laplace, and NUTS as its check) on galaxies drawn
from the decoder, test galaxies and lensed test galaxies, and the calibration of their per-pixel intervals
(logic in sourcelens.evaluate.posterior)."""
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np
import torch

from sourcelens import plots
from sourcelens.config import rng_for
from sourcelens.evaluate.posterior import calibrate_posteriors
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.models import load_vae

torch.set_num_threads(max(1, int(snakemake.threads)))
seed = int(snakemake.params.seed)
record = provenance(snakemake.config, rule="posterior_vae", input=list(map(str, snakemake.input)))
res = calibrate_posteriors(snakemake.input.test, load_vae(snakemake.input.model), snakemake.params.fit,
                           snakemake.params.posterior, rng_for(seed, "posterior_vae"),
                           pairs_cfg=snakemake.params.pairs, source_kinds=snakemake.params.source_kinds,
                           seed=int(rng_for(seed, "posterior_vae draws").integers(2**31)), progress=log.info)
write_table(res.per_galaxy, snakemake.output.metrics, record)
write_table(res.summary, snakemake.output.table, record)
log.info("\n%s", res.summary.to_string())

examples = []
for set_name, (data, truth, post, meta) in res.examples.items():
    kinds = meta["kind"].astype(str).to_numpy()[:len(post.source_mean)]
    i = int(np.flatnonzero(kinds == "cosmos")[0]) if (kinds == "cosmos").any() else 0   # a real galaxy first
    examples.append({"data": data[i], "model_mean": post.model_mean[i], "model_std": post.model_std[i],
                     "truth": truth[i], "source_mean": post.source_mean[i], "source_std": post.source_std[i],
                     "truth_sigma": float(meta["truth_sigma"].iloc[i]), "label": f"{set_name}: {meta['source_id'].iloc[i]}"})
save_figure(plots.posterior_maps(examples, suptitle="Decoder fits: posterior mean and std (Laplace)"),
            snakemake.output.maps, provenance=record)
save_figure(plots.posterior_calibration(res.summary), snakemake.output.calibration, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
