# Galaxy sources: catalogue cuts, stamps, augmentation, split by source id; their figures.


rule catalogue:
    output:
        catalogue="results/data/catalogue.csv",
        table="results/tables/filter_catalogue.csv",
    params:
        sources=config["sources"],
        seed=config["seed"],
    priority: 20  # the chain to the pairs and the CNN (the longest job): first, before the work that can wait
    log:
        "logs/catalogue.log",
    benchmark:
        "benchmarks/catalogue.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/catalogue.py"


rule stamps:
    input:
        catalogue="results/data/catalogue.csv",
        table="results/tables/filter_catalogue.csv",
    output:
        stamps="results/data/stamps.h5",
        table=report(
            "results/tables/filter_table.csv",
            caption="../report/filter_table.rst",
            category="Data",
        ),
        provenance="results/tables/filter_table.provenance.json",
    params:
        sources=config["sources"],
        stamps=config["stamps"],
        seed=config["seed"],
    priority: 20
    log:
        "logs/stamps.log",
    benchmark:
        "benchmarks/stamps.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/stamps.py"


rule augment:
    input:
        "results/data/stamps.h5",
    output:
        "results/data/stamps_augmented.h5",
    params:
        augment=config["augment"],
        seed=config["seed"],
    priority: 20
    log:
        "logs/augment.log",
    benchmark:
        "benchmarks/augment.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/augment.py"


rule split:
    input:
        "results/data/stamps_augmented.h5",
    output:
        expand("results/data/stamps_{split}.h5", split=SPLITS),
    params:
        fractions=config["split"]["fractions"],
        seed=config["seed"],
    priority: 20
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/split.py"


rule plot_filter_table:
    localrule: True
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
    localrule: True
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


rule source_diversity:
    input:
        train="results/data/stamps_train.h5",
        test="results/data/stamps_test.h5",
    output:
        per_galaxy="results/metrics/source_diversity.csv",
        table=report("results/tables/source_diversity.csv", caption="../report/source_diversity.rst", category="Data"),
        figure=report("results/figures/source_diversity.png", caption="../report/source_diversity.rst", category="Data"),
    params:
        max_per_kind=config["evaluate"]["diversity_galaxies"],
    log:
        "logs/source_diversity.log",
    benchmark:
        "benchmarks/source_diversity.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/source_diversity.py"
