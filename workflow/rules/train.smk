# Model training. Rules that want a GPU declare resources: gpu=1 (CPU fallback otherwise).


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
        checkpoint_dir="results/models/vae_checkpoints",
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/train_vae.log",
    benchmark:
        "benchmarks/train_vae.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/train_vae.py"
