# Studies 001 and 004: super-resolution of lensed images. train_sr trains one method (or PISR ablation variant) on
# one set, lens model and noise variant; evaluate_sr runs every configured method on the same test images of a
# set (each lens model and noise variant); super_resolution_table gathers the sets beside study 001's table.
# Methods, sets, lens models and noise variants come from config key super_resolution.


rule train_sr:
    input:
        train="results/data/sr_{set}_{lens}_{noise}_train.h5",
        val="results/data/sr_{set}_{lens}_{noise}_val.h5",
    output:
        model="results/models/sr/{set}_{lens}_{noise}/{method}.pt",
        metrics="results/metrics/sr_training/{set}_{lens}_{noise}/{method}.csv",
        curve=report("results/figures/sr_training/{set}_{lens}_{noise}/{method}.png",
                     caption="../report/sr_learning_curve.rst", category="Super-resolution (studies 001, 004)",
                     subcategory="{set}: {lens} {noise}"),
    wildcard_constraints:
        method="|".join(SR_TRAINED) or "(?!)",
    params:
        method=lambda wc: sr_method_config(SR, wc.method)[0],
        settings=lambda wc: sr_method_config(SR, wc.method)[1],
        seed=config["seed"],
        checkpoint_dir=lambda wc: f"{SR['checkpoint_dir']}/{wc.set}_{wc.lens}_{wc.noise}/{wc.method}",
    threads: SR["threads"]
    resources:
        gpu=1,
    log:
        "logs/train_sr/{set}_{lens}_{noise}_{method}.log",
    benchmark:
        "benchmarks/train_sr/{set}_{lens}_{noise}_{method}.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_sr.py"


rule evaluate_sr:
    input:
        sr_evaluation_inputs,
    output:
        metrics="results/metrics/super_resolution_{set}.csv",
        fig_noise=report("results/figures/sr_noise_limit_{set}.png", caption="../report/sr_noise_limit.rst",
                         category="Super-resolution (studies 001, 004)", subcategory="{set}"),
        fig_methods=report("results/figures/sr_methods_{set}.png", caption="../report/sr_methods.rst",
                           category="Super-resolution (studies 001, 004)", subcategory="{set}"),
    params:
        tests=sr_evaluation_tests,
        models=sr_evaluation_models,
        data_consistency=SR["data_consistency"],
    threads: 2
    log:
        "logs/evaluate_sr/{set}.log",
    benchmark:
        "benchmarks/evaluate_sr/{set}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/evaluate_sr.py"


rule super_resolution_table:
    localrule: True
    input:
        expand("results/metrics/super_resolution_{set}.csv", set=SR_EVAL_SETS),
    output:
        table=report("results/tables/super_resolution.csv", caption="../report/super_resolution.rst",
                     category="Super-resolution (studies 001, 004)"),
        **({"ablation": report("results/tables/super_resolution_pisr_ablation.csv",
                               caption="../report/sr_pisr_ablation.rst",
                               category="Super-resolution (studies 001, 004)")} if SR_ABLATION else {}),
    log:
        "logs/super_resolution_table.log",
    benchmark:
        "benchmarks/super_resolution_table.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/super_resolution_table.py"
