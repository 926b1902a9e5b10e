# Overview figures, gathered by `snakemake --report report.html`.


rule plot_filter_table:
    input:
        "results/tables/filter_table.csv",
    output:
        report("results/figures/filter_table.png", caption="../report/filter_table.rst", category="Data"),
    log:
        "logs/figures/filter_table.log",
    benchmark:
        "benchmarks/figures/filter_table.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_filter_table.py"


rule plot_stamps:
    input:
        "results/data/stamps.h5",
    output:
        report("results/figures/stamps_by_kind.png", caption="../report/stamps.rst", category="Data"),
    params:
        n_per_kind=config["figures"]["n_stamps_per_kind"],
    log:
        "logs/figures/stamps_by_kind.log",
    benchmark:
        "benchmarks/figures/stamps_by_kind.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_stamps.py"


rule plot_pair_examples:
    input:
        "results/data/pairs_{lens}_test.h5",
    output:
        report(
            "results/figures/examples_{lens}.png",
            caption="../report/examples.rst",
            category="Simulations",
            subcategory="{lens}",
        ),
    params:
        n_examples=config["figures"]["n_examples"],
    log:
        "logs/figures/examples_{lens}.log",
    benchmark:
        "benchmarks/figures/examples_{lens}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_pair_examples.py"


rule plot_lens_params:
    input:
        **{split: f"results/data/pairs_{{lens}}_{split}.h5" for split in SPLITS},
    output:
        report(
            "results/figures/lens_params_{lens}.png",
            caption="../report/lens_params.rst",
            category="Simulations",
            subcategory="{lens}",
        ),
    log:
        "logs/figures/lens_params_{lens}.log",
    benchmark:
        "benchmarks/figures/lens_params_{lens}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_lens_params.py"


rule plot_sr_examples:
    input:
        "results/data/sr_{lens}_{noise}_test.h5",
    output:
        report(
            "results/figures/sr_examples_{lens}_{noise}.png",
            caption="../report/sr_examples.rst",
            category="Super-resolution data",
            subcategory="{lens} {noise}",
        ),
    params:
        n_examples=config["figures"]["n_examples"],
    log:
        "logs/figures/sr_examples_{lens}_{noise}.log",
    benchmark:
        "benchmarks/figures/sr_examples_{lens}_{noise}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_sr_examples.py"


rule lensing_demo:
    output:
        models=report("results/figures/lensing_models.png", caption="../report/lensing_models.rst", category="Lensing"),
        magnification=report(
            "results/figures/lensing_magnification.png",
            caption="../report/lensing_magnification.rst",
            category="Lensing",
        ),
        backward=report(
            "results/figures/lensing_backward.png", caption="../report/lensing_backward.rst", category="Lensing"
        ),
    params:
        seed=config["seed"],
    log:
        "logs/figures/lensing_demo.log",
    benchmark:
        "benchmarks/figures/lensing_demo.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/lensing_demo.py"
