# Lensing simulations with lenstronomy, in shards that run as separate jobs (gathered locally),
# their figures, and the lensing-physics demonstration.


rule simulate_pairs:
    input:
        "results/data/stamps_{split}.h5",
    output:
        temp("results/data/pairs/{lens}/{split}/shard_{shard}.h5"),
    params:
        pairs=config["simulate"]["pairs"],
        source_kinds=config["simulate"]["source_kinds"],
        min_observed_snr=config["simulate"]["min_observed_source_snr"],
        n=lambda wc: shard_count(config["simulate"]["pairs"]["n_samples"][wc.split], wc.shard),
        seed=config["seed"],
    priority: 20  # the pairs feed the two longest trainings (CNN, U-Net): start them first
    log:
        "logs/simulate_pairs/{lens}_{split}_{shard}.log",
    benchmark:
        "benchmarks/simulate_pairs/{lens}_{split}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/simulate_pairs.py"


rule gather_pairs:
    localrule: True
    input:
        pair_shards,
    output:
        "results/data/pairs_{lens}_{split}.h5",
    priority: 20
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
        # the split's stamps for the sets that lens them (a Sérsic set such as model_i needs none, so it runs
        # from the start of a run, beside the stamps)
        unpack(
            lambda wc: {"stamps": f"results/data/stamps_{wc.split}.h5"}
            if sr_set(wc.set)["source"] == "stamps"
            else {}
        ),
    output:
        temp("results/data/sr/{set}/{lens}_{noise}/{split}/shard_{shard}.h5"),
    params:
        sr=lambda wc: sr_set(wc.set),
        source_kinds=config["simulate"]["source_kinds"],
        min_observed_snr=config["simulate"]["min_observed_source_snr"],
        n=lambda wc: shard_count(sr_n_samples(wc.set, wc.split), wc.shard),
        seed=config["seed"],
    log:
        "logs/simulate_sr/{set}_{lens}_{noise}_{split}_{shard}.log",
    benchmark:
        "benchmarks/simulate_sr/{set}_{lens}_{noise}_{split}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/simulate_sr.py"


rule gather_sr:
    localrule: True
    input:
        sr_shards,
    output:
        "results/data/sr_{set}_{lens}_{noise}_{split}.h5",
    log:
        "logs/gather_sr/{set}_{lens}_{noise}_{split}.log",
    benchmark:
        "benchmarks/gather_sr/{set}_{lens}_{noise}_{split}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/gather_shards.py"


rule plot_pair_examples:
    localrule: True
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
    localrule: True
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
    localrule: True
    input:
        "results/data/sr_{set}_{lens}_{noise}_test.h5",
    output:
        report(
            "results/figures/sr_examples_{set}_{lens}_{noise}.png",
            caption="../report/sr_examples.rst",
            category="Super-resolution data",
            subcategory="{set}: {lens} {noise}",
        ),
    params:
        n_examples=config["figures"]["n_examples"],
    log:
        "logs/figures/sr_examples_{set}_{lens}_{noise}.log",
    benchmark:
        "benchmarks/figures/sr_examples_{set}_{lens}_{noise}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/plot_sr_examples.py"


rule lensing_demo:
    localrule: True
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


# Study 003: multi-band blends (sourcelens.blends), one dataset per band set, sample (isolated, blended) and split,
# in shards of blends.shard_size gathered into results/data/blends_{bands}_{sample}_{split}.h5.
BLENDS = config["blends"]
BLEND_SHARD = BLENDS["shard_size"]


rule simulate_blends:
    input:
        # the split's stamps when real galaxies enter the blends (blends.galaxies.cosmos_fraction > 0)
        unpack(
            lambda wc: {"stamps": f"results/data/stamps_{wc.split}.h5"}
            if BLENDS["galaxies"]["cosmos_fraction"] > 0
            else {}
        ),
    output:
        temp("results/data/blends/{bands}/{sample}/{split}/shard_{shard}.h5"),
    wildcard_constraints:
        bands="|".join(BLENDS["band_sets"]),
        sample="isolated|blended",
    params:
        blends=BLENDS,
        # samples in this shard (the last one takes the remainder)
        n=lambda wc: min(BLEND_SHARD, BLENDS["n_samples"][wc.sample][wc.split] - int(wc.shard) * BLEND_SHARD),
        seed=config["seed"],
    log:
        "logs/simulate_blends/{bands}_{sample}_{split}_{shard}.log",
    benchmark:
        "benchmarks/simulate_blends/{bands}_{sample}_{split}_{shard}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/simulate_blends.py"


rule gather_blends:
    localrule: True
    input:
        lambda wc: expand(
            "results/data/blends/{bands}/{sample}/{split}/shard_{shard}.h5",
            bands=wc.bands, sample=wc.sample, split=wc.split,
            shard=range(max(1, math.ceil(BLENDS["n_samples"][wc.sample][wc.split] / BLEND_SHARD))),
        ),
    output:
        "results/data/blends_{bands}_{sample}_{split}.h5",
    wildcard_constraints:
        bands="|".join(BLENDS["band_sets"]),
        sample="isolated|blended",
    log:
        "logs/gather_blends/{bands}_{sample}_{split}.log",
    benchmark:
        "benchmarks/gather_blends/{bands}_{sample}_{split}.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/gather_shards.py"
