# Trained models applied to users' stamp catalogues (config `apply.catalogues`), in shards of
# `apply.shard_size` rows: one job each (a core locally, an sbatch job under the SLURM profile),
# gathered into results/apply/{name}.h5. Logic in sourcelens.apply.


rule apply_shard:
    input:
        model=lambda wc: apply_model(wc.name),
        catalogue=lambda wc: APPLY[wc.name]["path"],
    output:
        temp("results/apply/{name}/shard_{shard}.h5"),
    params:
        task=lambda wc: APPLY[wc.name]["task"],
        rows=lambda wc: apply_rows(wc.name, wc.shard),
        options=lambda wc: apply_options(wc.name),
    threads: 1  # shards scale out by jobs: one core each
    resources:
        gpu=lambda wc: int(config["apply"]["gpu_per_shard"]),
    log:
        "logs/apply/{name}_{shard}.log",
    benchmark:
        "benchmarks/apply/{name}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/apply_shard.py"


rule apply_gather:
    localrule: True
    input:
        apply_shards,
    output:
        "results/apply/{name}.h5",
    log:
        "logs/apply/{name}_gather.log",
    benchmark:
        "benchmarks/apply/{name}_gather.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/gather_shards.py"
