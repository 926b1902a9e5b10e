"""Rule evaluate_sr: every configured super-resolution method on the same test images of one set, for each lens
model and noise variant, against the noiseless high-res truth (logic in sourcelens.evaluate.super_resolution);
writes the per-image metrics, the noise-limit figure and the example figure."""

from sourcelens.logs import log_to_file

log = log_to_file(snakemake.log[0])

import torch

from sourcelens import plots
from sourcelens.evaluate.super_resolution import evaluate_super_resolution
from sourcelens.io import provenance, save_figure, write_table
from sourcelens.names import SR_METHODS

torch.set_num_threads(max(1, int(snakemake.threads)))
name = snakemake.wildcards.set
record = provenance(snakemake.config, rule="evaluate_sr", input=list(map(str, snakemake.input)))
tests = {tuple(key.split("/")): path for key, path in snakemake.params.tests.items()}
models = {method: {tuple(key.split("/")): path for key, path in files.items()}
          for method, files in snakemake.params.models.items()}
result = evaluate_super_resolution(tests, models, set_name=name, n_examples=1,
                                   data_consistency=snakemake.params.data_consistency)
write_table(result.per_image, snakemake.output.metrics, record)
log.info("%d images x %d methods; median SSIM:\n%s", result.per_image["index"].nunique(), len(models),
         result.per_image.groupby(["lens", "noise", "method"], sort=False)["ssim"].median().to_string())

main = result.per_image[result.per_image["method"].isin(SR_METHODS)]
save_figure(plots.sr_noise_limit(main, suptitle=f"Super-resolution against the noise, set {name}: each method "
                                              "against the noiseless high-res truth (lines: running medians)"),
            snakemake.output.fig_noise, provenance=record)
examples, ssims = [], []
for (lens, noise), ex in result.examples.items():
    rows = main[(main["lens"] == lens) & (main["noise"] == noise)]
    for k, i in enumerate(ex["rows"]):
        examples.append({"low_res": ex["low_res"][k], "truth": ex["truth"][k], "pixel_scale": ex["pixel_scale"],
                         "factor": ex["factor"], "label": ex["labels"][k],
                         "estimates": {m: v[k] for m, v in ex["estimates"].items() if m in SR_METHODS}})
        ssims.append(rows[rows["index"] == i].set_index("method")["ssim"].to_dict())
save_figure(plots.sr_method_examples(examples, metrics=ssims,
                                     suptitle=f"Super-resolution examples, set {name}: each method and its residual "
                                              "against the noiseless truth"),
            snakemake.output.fig_methods, provenance=record)
log.info("wrote %s", ", ".join(map(str, snakemake.output)))
