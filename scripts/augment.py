"""Rule augment: dihedral copies and random rotations of every stamp array (the noiseless truth transformed as
the image); copies keep their parent's source id."""

from sourcelens.augment import augment
from sourcelens.config import rng_for
from sourcelens.io import provenance, read_array_attrs, read_attrs, read_dataset, write_dataset
from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])
arrays, meta = read_dataset(snakemake.input[0])
attrs = read_attrs(snakemake.input[0])
out, out_meta = augment(arrays, meta, snakemake.params.augment, rng_for(snakemake.params.seed, "augment"))
log.info("augmented %d stamps into %d", len(meta), len(out_meta))
attrs.pop("kind"), attrs.pop("layout_version")
attrs["provenance"] = provenance(snakemake.config, rule="augment")
attrs["description"] = "augmented galaxy stamps (copies keep their parent's source_id)"
write_dataset(snakemake.output[0], out, out_meta, kind="stamps", attrs=attrs,
              array_attrs=read_array_attrs(snakemake.input[0]))
