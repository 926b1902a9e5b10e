"""Snakemake script: simulate one shard of super-resolution pairs (study 001) with lenstronomy.

The random stream is seeded by (seed, split, shard) only, not by lens model or noise variant:
the noiseless and noisy datasets share their scenes, and the SIS and SIE datasets their sources
(the source parameters are drawn before the lens), so matching source ids mean the same source.
"""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens.config import rng_for
from sourcelens.io import provenance, read_dataset, write_dataset
from sourcelens.simulate import lensing_sources, simulate_sr, sr_array_attrs, sr_attrs

wc = snakemake.wildcards
params = snakemake.params
cfg = params.sr
rng = rng_for(params.seed, "simulate_sr", wc.split, wc.shard)

images = meta = None
if cfg["source"] == "stamps":
    arrays, meta = read_dataset(snakemake.input[0])
    images, meta = lensing_sources(arrays, meta, params.source_kinds)
    log.info("read %d stamps of %s from %s", len(meta), list(params.source_kinds), snakemake.input[0])
log.info("simulating %d %s %s super-resolution pairs (%s sources) for split %s, shard %s",
         params.n, wc.lens, wc.noise, cfg["source"], wc.split, wc.shard)
out, table = simulate_sr(
    params.n, wc.lens, wc.noise, cfg, rng, images=images, meta=meta,
    id_prefix=f"sersic-{wc.split}-{int(wc.shard)}",
)

attrs = sr_attrs(cfg, wc.lens, wc.noise)
attrs.update(
    split=wc.split,
    provenance=provenance(snakemake.config, rule="simulate_sr", lens=wc.lens, noise=wc.noise,
                          split=wc.split, shard=int(wc.shard)),
)
write_dataset(snakemake.output[0], out, table, kind="sr", attrs=attrs, array_attrs=sr_array_attrs())
log.info("wrote %s (%d pairs)", snakemake.output[0], len(table))
