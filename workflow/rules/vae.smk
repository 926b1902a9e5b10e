# Study 000: the VAE galaxy model — training (a GPU rule: resources gpu=1, CUDA environment, CPU fallback),
# evaluation on the test split, and the decoder as a galaxy model in fits, unlensed and through a lens.


rule train_vae:
    input:
        train="results/data/stamps_train.h5",
        val="results/data/stamps_val.h5",
    output:
        model="results/models/vae.pt",
        metrics="results/metrics/vae_training.csv",
        curve=report(
            "results/figures/vae_learning_curve.png",
            caption="../report/vae_learning_curve.rst",
            category="VAE (study 000)",
        ),
    params:
        vae=config["vae"],
        seed=config["seed"],
        # a cache outside the outputs (vae.checkpoint_dir); not in the training fingerprint
        checkpoint_dir=config["vae"]["checkpoint_dir"],
    threads: config["vae"]["threads"]
    priority: 10
    resources:
        gpu=1,
    log:
        "logs/train_vae.log",
    benchmark:
        "benchmarks/train_vae.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_vae.py"


rule evaluate_vae:
    input:
        model="results/models/vae.pt",
        test="results/data/stamps_test.h5",
    output:
        metrics="results/metrics/vae_test.csv",
        table=report(
            "results/tables/vae_reconstruction.csv",
            caption="../report/vae_reconstruction.rst",
            category="VAE (study 000)",
        ),
        reconstructions=report(
            "results/figures/vae_reconstructions.png",
            caption="../report/vae_reconstructions.rst",
            category="VAE (study 000)",
        ),
        samples=report(
            "results/figures/vae_prior_samples.png",
            caption="../report/vae_prior_samples.rst",
            category="VAE (study 000)",
        ),
        interpolation=report(
            "results/figures/vae_interpolation.png",
            caption="../report/vae_interpolation.rst",
            category="VAE (study 000)",
        ),
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
    log:
        "logs/evaluate_vae.log",
    benchmark:
        "benchmarks/evaluate_vae.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/evaluate_vae.py"


rule fit_galaxies:
    input:
        model="results/models/vae.pt",
        test="results/data/stamps_test.h5",
    output:
        metrics="results/metrics/fit_galaxies.csv",
        table=report(
            "results/tables/fit_galaxies.csv", caption="../report/fit_galaxies.rst", category="VAE (study 000)"
        ),
        figure=report(
            "results/figures/fit_galaxies.png", caption="../report/fit_galaxies.rst", category="VAE (study 000)"
        ),
    params:
        fit=config["fit"],
        evaluate=config["evaluate"],
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core for every method
    log:
        "logs/fit_galaxies.log",
    benchmark:
        "benchmarks/fit_galaxies.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/fit_galaxies.py"


rule fit_lensed:
    input:
        model="results/models/vae.pt",
        test="results/data/stamps_test.h5",
    output:
        metrics="results/metrics/fit_lensed.csv",
        table=report("results/tables/fit_lensed.csv", caption="../report/fit_lensed.rst", category="VAE (study 000)"),
        figure=report(
            "results/figures/fit_lensed.png", caption="../report/fit_lensed.rst", category="VAE (study 000)"
        ),
    params:
        fit=config["fit"],
        pairs=config["simulate"]["pairs"],
        source_kinds=config["simulate"]["source_kinds"],
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core for every method
    log:
        "logs/fit_lensed.log",
    benchmark:
        "benchmarks/fit_lensed.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/fit_lensed.py"


rule posterior_vae:
    input:
        model="results/models/vae.pt",
        test="results/data/stamps_test.h5",
    output:
        metrics="results/metrics/posterior_vae.csv",
        table=report(
            "results/tables/posterior_calibration.csv",
            caption="../report/posterior_calibration.rst",
            category="VAE (study 000)",
        ),
        maps=report(
            "results/figures/posterior_maps.png", caption="../report/posterior_maps.rst", category="VAE (study 000)"
        ),
        calibration=report(
            "results/figures/posterior_calibration.png",
            caption="../report/posterior_calibration.rst",
            category="VAE (study 000)",
        ),
    params:
        fit=config["fit"],
        posterior=config["posterior"],
        pairs=config["simulate"]["pairs"],
        source_kinds=config["simulate"]["source_kinds"],
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core
    log:
        "logs/posterior_vae.log",
    benchmark:
        "benchmarks/posterior_vae.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/posterior_vae.py"
