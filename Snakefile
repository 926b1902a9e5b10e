# sourcelens: galaxy catalogues -> stamps -> lensing datasets -> models, fits, figures, tables.
# Run:  snakemake --cores N            (default config: CPU, minutes)
#       snakemake --cores N --configfile config/tiny.yaml
#       snakemake --profile workflow/profiles/slurm
import os

from snakemake.utils import min_version, validate

min_version("9.0")


# the default config, found next to this Snakefile whatever the working directory (--directory)
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
