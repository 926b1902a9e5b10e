# sourcelens: galaxy catalogues -> stamps -> lensing datasets -> models, fits, figures, tables.
# Run:  snakemake --cores N            (default config: CPU, minutes)
#       snakemake --cores N --configfile config/tiny.yaml
#       snakemake --profile workflow/profiles/slurm
import os

from snakemake.utils import min_version
from snakemake_interface_executor_plugins.settings import DeploymentMethod

min_version("9.0")

try:
    from sourcelens.config import check_config
except ImportError as err:
    raise ImportError(
        "the sourcelens package is not installed in this environment: run `pip install -e .` "
        f"(or `pip install .`) in {workflow.basedir} first"
    ) from err


# the default config, found next to this Snakefile whatever the working directory (--directory)
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# the schema (defaults filled) and every rule across keys, before any job: workflow/schemas/, sourcelens.config
config.update(check_config(config))

if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    # jobs in envs/*.yaml environments import the library from this checkout
    os.environ.update(
        PYTHONPATH=os.pathsep.join(p for p in (os.path.join(workflow.basedir, "src"), os.getenv("PYTHONPATH")) if p)
    )


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/vae.smk"
include: "workflow/rules/cnn_unet.smk"
include: "workflow/rules/sr.smk"
include: "workflow/rules/deblend.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
