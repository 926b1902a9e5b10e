# Study 003: multi-band β-VAE and latent-space deblender per band set (deblend.band_sets), trained on the blend
# files of rule simulate_blends (GPU rules: resources gpu=1, CUDA environment, CPU fallback), and their evaluation
# against a classical (sep) deblender on the same test blends.


rule train_vae_bands:
    input:
        train="results/data/blends_{bands}_isolated_train.h5",
        val="results/data/blends_{bands}_isolated_val.h5",
    output:
        model="results/models/deblend/vae_{bands}.pt",
        metrics="results/metrics/deblend_vae_{bands}_training.csv",
        curve=report("results/figures/deblend_vae_{bands}_learning_curve.png",
                     caption="../report/deblend_learning_curve.rst", category="Deblending (study 003)"),
    params:
        deblend={"vae": config["deblend"]["vae"]},   # only what the training reads (a changed evaluation retrains nothing)
        seed=config["seed"],
        checkpoint_dir=lambda wildcards: f"{config['deblend']['checkpoint_dir']}/vae_{wildcards.bands}",
    wildcard_constraints:
        bands="|".join(DEBLEND_BAND_SETS),
    threads: config["deblend"]["threads"]
    resources:
        gpu=1,
    log:
        "logs/train_vae_bands_{bands}.log",
    benchmark:
        "benchmarks/train_vae_bands_{bands}.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_vae_bands.py"


rule train_deblender:
    input:
        train="results/data/blends_{bands}_blended_train.h5",
        val="results/data/blends_{bands}_blended_val.h5",
        vae="results/models/deblend/vae_{bands}.pt",
    output:
        model="results/models/deblend/deblender_{bands}.pt",
        metrics="results/metrics/deblend_deblender_{bands}_training.csv",
        curve=report("results/figures/deblend_deblender_{bands}_learning_curve.png",
                     caption="../report/deblend_learning_curve.rst", category="Deblending (study 003)"),
    params:
        deblend={"deblender": config["deblend"]["deblender"]},
        seed=config["seed"],
        checkpoint_dir=lambda wildcards: f"{config['deblend']['checkpoint_dir']}/deblender_{wildcards.bands}",
    wildcard_constraints:
        bands="|".join(DEBLEND_BAND_SETS),
    threads: config["deblend"]["threads"]
    resources:
        gpu=1,
    log:
        "logs/train_deblender_{bands}.log",
    benchmark:
        "benchmarks/train_deblender_{bands}.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_deblender.py"


rule evaluate_deblender:
    input:
        unpack(deblend_evaluation_inputs),
    output:
        metrics="results/metrics/deblending.csv",
        binned="results/metrics/deblending_binned.csv",
        table=report("results/tables/deblending.csv", caption="../report/deblending.rst",
                     category="Deblending (study 003)"),
        fig_snr=report("results/figures/deblending_residuals_snr.png", caption="../report/deblending_residuals.rst",
                       category="Deblending (study 003)"),
        fig_mag=report("results/figures/deblending_residuals_mag.png", caption="../report/deblending_residuals.rst",
                       category="Deblending (study 003)"),
        fig_bias=report("results/figures/deblending_shear_bias.png", caption="../report/deblending.rst",
                        category="Deblending (study 003)"),
        fig_examples=report("results/figures/deblending_examples.png", caption="../report/deblending_examples.rst",
                            category="Deblending (study 003)"),
    params:
        evaluate=config["deblend"]["evaluate"],
        band_sets=DEBLEND_BAND_SETS,
        seed=config["seed"],
    threads: 2
    log:
        "logs/evaluate_deblender.log",
    benchmark:
        "benchmarks/evaluate_deblender.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/evaluate_deblender.py"
