"""Snakemake script: simulate one shard of lensed/unlensed pairs (study 002) with lenstronomy."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

from sourcelens.config import rng_for
from sourcelens.io import provenance, read_dataset, write_dataset
from sourcelens.simulate import lensing_sources, pairs_array_attrs, pairs_attrs, simulate_pairs

wc = snakemake.wildcards
params = snakemake.params
cfg = params.pairs
rng = rng_for(params.seed, "simulate_pairs", wc.lens, wc.split, wc.shard)

arrays, meta = read_dataset(snakemake.input[0])
images, meta = lensing_sources(arrays, meta, params.source_kinds, params.min_observed_snr)
log.info("read %d stamps of %s from %s", len(meta), list(params.source_kinds), snakemake.input[0])
log.info("simulating %d %s pairs for split %s, shard %s", params.n, wc.lens, wc.split, wc.shard)
out, table = simulate_pairs(images, meta, params.n, wc.lens, cfg, rng)

attrs = pairs_attrs(cfg, wc.lens)
attrs.update(
    split=wc.split,
    provenance=provenance(snakemake.config, rule="simulate_pairs", lens=wc.lens, split=wc.split, shard=int(wc.shard)),
)
write_dataset(snakemake.output[0], out, table, kind="pairs", attrs=attrs, array_attrs=pairs_array_attrs(),
              compression=None)  # a temporary shard: the gather compresses
log.info("wrote %s (%d pairs)", snakemake.output[0], len(table))
