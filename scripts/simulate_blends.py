"""Snakemake script: simulate one shard of multi-band blends (study 003) of one band set, sample and split.

``params.blends`` is the config's ``blends`` block. The random stream is seeded by (seed, band set, sample, split,
shard); the normalisation scales I_b by (seed, band set) only, so every file of a band set shares them. With
``blends.galaxies.cosmos_fraction`` > 0 the split's stamps (``input.stamps``) give the real galaxies (rows of kind
``cosmos``). Shards are written uncompressed (they are temporary); the gather rule compresses the dataset once.
"""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import numpy as np

from sourcelens.blends import blends_array_attrs, blends_attrs, normalisation_scales, simulate_blends
from sourcelens.config import rng_for
from sourcelens.io import provenance, read_dataset, write_dataset

wc = snakemake.wildcards
params = snakemake.params
cfg = params.blends
rng = rng_for(params.seed, "simulate_blends", wc.bands, wc.sample, wc.split, wc.shard)

stamps = stamp_meta = None
if float(cfg["galaxies"]["cosmos_fraction"]) > 0:
    arrays, meta = read_dataset(snakemake.input.stamps, names=("images",))
    keep = np.flatnonzero(meta["kind"].to_numpy() == "cosmos")
    stamps, stamp_meta = arrays["images"][keep], meta.iloc[keep].reset_index(drop=True)
    log.info("read %d real (cosmos) stamps of %s", len(keep), snakemake.input.stamps)
    if not len(keep):
        log.warning("no stamps of kind cosmos in %s: every galaxy is parametric", snakemake.input.stamps)

scales = normalisation_scales(cfg, wc.bands, params.seed)
log.info("normalisation scales I_b (%s): %s", wc.bands, np.array2string(scales, precision=1))
log.info("simulating %d %s samples of band set %s for split %s, shard %s", params.n, wc.sample, wc.bands,
         wc.split, wc.shard)
out, table = simulate_blends(params.n, wc.sample, wc.bands, cfg, rng, scales=scales, stamps=stamps,
                             stamp_meta=stamp_meta, id_prefix=f"{wc.bands}-{wc.sample}-{wc.split}-{int(wc.shard)}")
if len(table):
    log.info("central galaxies: median r %.2f, median S/N(r) %.1f; median blendedness %.3f; kinds %s",
             table["mag_r"].median(), table["snr_r"].median(), table["blendedness"].median(),
             table["kind"].value_counts().to_dict())

attrs = blends_attrs(cfg, wc.bands, wc.sample, scales)
attrs.update(
    split=wc.split,
    provenance=provenance(snakemake.config, rule="simulate_blends", bands=wc.bands, sample=wc.sample,
                          split=wc.split, shard=int(wc.shard)),
)
write_dataset(snakemake.output[0], out, table, kind="blends", attrs=attrs,
              array_attrs=blends_array_attrs(attrs["bands"]), compression=None)
log.info("wrote %s (%d samples)", snakemake.output[0], len(table))
