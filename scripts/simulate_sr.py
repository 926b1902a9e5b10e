"""Snakemake script: simulate one shard of super-resolution pairs (study 001) of one set with lenstronomy.

``params.sr`` is the set's full config (its preset with the set's overrides: ``sourcelens.config.sr_set_config``).
The random stream is seeded by (seed, set, split, shard) only, not by lens model or noise variant:
the noise variants of a set share their scenes, and its SIS and SIE datasets their sources
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
rng = rng_for(params.seed, "simulate_sr", wc.set, wc.split, wc.shard)

images = meta = None
if cfg["source"] == "stamps":
    arrays, meta = read_dataset(snakemake.input.stamps)
    images, meta = lensing_sources(arrays, meta, params.source_kinds, params.min_observed_snr)
    log.info("read %d stamps of %s from %s", len(meta), list(params.source_kinds), snakemake.input.stamps)
log.info("simulating %d %s %s super-resolution pairs of set %s (preset %s, %s sources) for split %s, shard %s",
         params.n, wc.lens, wc.noise, wc.set, cfg["preset"], cfg["source"], wc.split, wc.shard)
out, table = simulate_sr(
    params.n, wc.lens, wc.noise, cfg, rng, images=images, meta=meta,
    id_prefix=f"{wc.set}-{wc.split}-{int(wc.shard)}",
)
cut = (table["edge_peak_fraction"] > 0.01).mean() if len(table) else 0.0
log.info("lensed light on the field's border above 1 %% of the peak in %.1f %% of the pairs", 100 * cut)

attrs = sr_attrs(cfg, wc.lens, wc.noise)
attrs.update(
    split=wc.split,
    provenance=provenance(snakemake.config, rule="simulate_sr", set=wc.set, lens=wc.lens, noise=wc.noise,
                          split=wc.split, shard=int(wc.shard)),
)
write_dataset(snakemake.output[0], out, table, kind="sr", attrs=attrs, array_attrs=sr_array_attrs(),
              compression=None)  # a temporary shard: the gather compresses
log.info("wrote %s (%d pairs)", snakemake.output[0], len(table))
