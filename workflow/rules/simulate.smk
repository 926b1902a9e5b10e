# Lensing simulations with lenstronomy, in shards that run as separate jobs.


rule simulate_pairs:
    input:
        "results/data/stamps_{split}.h5",
    output:
        temp("results/data/pairs/{lens}/{split}/shard_{shard}.h5"),
    params:
        pairs=config["simulate"]["pairs"],
        n=lambda wc: shard_count(config["simulate"]["pairs"]["n_samples"][wc.split], wc.shard),
        seed=config["seed"],
    log:
        "logs/simulate_pairs/{lens}_{split}_{shard}.log",
    benchmark:
        "benchmarks/simulate_pairs/{lens}_{split}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/simulate_pairs.py"


rule gather_pairs:
    input:
        pair_shards,
    output:
        "results/data/pairs_{lens}_{split}.h5",
    log:
        "logs/gather_pairs/{lens}_{split}.log",
    benchmark:
        "benchmarks/gather_pairs/{lens}_{split}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/gather_shards.py"


rule simulate_sr:
    input:
        "results/data/stamps_{split}.h5",
    output:
        temp("results/data/sr/{lens}_{noise}/{split}/shard_{shard}.h5"),
    params:
        sr=config["simulate"]["sr"],
        n=lambda wc: shard_count(config["simulate"]["sr"]["n_samples"][wc.split], wc.shard),
        seed=config["seed"],
    log:
        "logs/simulate_sr/{lens}_{noise}_{split}_{shard}.log",
    benchmark:
        "benchmarks/simulate_sr/{lens}_{noise}_{split}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/simulate_sr.py"


rule gather_sr:
    input:
        sr_shards,
    output:
        "results/data/sr_{lens}_{noise}_{split}.h5",
    log:
        "logs/gather_sr/{lens}_{noise}_{split}.log",
    benchmark:
        "benchmarks/gather_sr/{lens}_{noise}_{split}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/gather_shards.py"
