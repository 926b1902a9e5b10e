# Evaluation of trained models on the test split.


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
