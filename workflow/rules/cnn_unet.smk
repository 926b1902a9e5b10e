# Study 002: the lens-parameter CNN and the U-Net delenser, trained on the pairs, with physics baselines.


rule train_cnn:
    input:
        train=f"results/data/pairs_{config['cnn']['lens_model']}_train.h5",
        val=f"results/data/pairs_{config['cnn']['lens_model']}_val.h5",
    output:
        model="results/models/cnn.pt",
        metrics="results/metrics/cnn_training.csv",
        curve=report("results/figures/cnn_learning_curve.png", caption="../report/cnn_learning_curve.rst",
                     category="CNN and U-Net (study 002)"),
    params:
        cnn=config["cnn"],
        seed=config["seed"],
        checkpoint_dir=config["cnn"]["checkpoint_dir"],
    threads: config["cnn"]["threads"]
    priority: 20  # the longest jobs first, so the short ones fill both cores at the end of a run
    resources:
        gpu=1,
    log:
        "logs/train_cnn.log",
    benchmark:
        "benchmarks/train_cnn.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_cnn.py"


rule evaluate_cnn:
    input:
        model="results/models/cnn.pt",
        test=f"results/data/pairs_{config['cnn']['lens_model']}_test.h5",
    output:
        predictions="results/metrics/cnn_test.csv",
        calibration="results/metrics/cnn_calibration.csv",
        table=report("results/tables/cnn_lens_params.csv", caption="../report/cnn_lens_params.rst",
                     category="CNN and U-Net (study 002)"),
        fig_predictions=report("results/figures/cnn_predictions.png", caption="../report/cnn_lens_params.rst",
                               category="CNN and U-Net (study 002)"),
        fig_residuals=report("results/figures/cnn_residuals.png", caption="../report/cnn_residuals.rst",
                             category="CNN and U-Net (study 002)"),
        fig_calibration=report("results/figures/cnn_calibration.png", caption="../report/cnn_calibration.rst",
                               category="CNN and U-Net (study 002)"),
    params:
        lens_model=config["cnn"]["lens_model"],
        priors=config["simulate"]["pairs"]["priors"],
    log:
        "logs/evaluate_cnn.log",
    benchmark:
        "benchmarks/evaluate_cnn.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/evaluate_cnn.py"


rule train_unet:
    input:
        train=f"results/data/pairs_{config['unet']['lens_model']}_train.h5",
        val=f"results/data/pairs_{config['unet']['lens_model']}_val.h5",
    output:
        model="results/models/unet.pt",
        metrics="results/metrics/unet_training.csv",
        curve=report("results/figures/unet_learning_curve.png", caption="../report/unet_learning_curve.rst",
                     category="CNN and U-Net (study 002)"),
    params:
        unet=config["unet"],
        seed=config["seed"],
        checkpoint_dir=config["unet"]["checkpoint_dir"],
    threads: config["unet"]["threads"]
    priority: 10
    resources:
        gpu=1,
    log:
        "logs/train_unet.log",
    benchmark:
        "benchmarks/train_unet.tsv"
    conda:
        "../../envs/sourcelens-gpu.yaml"
    script:
        "../../scripts/train_unet.py"


rule evaluate_unet:
    input:
        unet="results/models/unet.pt",
        cnn="results/models/cnn.pt",
        test=f"results/data/pairs_{config['unet']['lens_model']}_test.h5",
    output:
        metrics="results/metrics/delensing.csv",
        table=report("results/tables/delensing.csv", caption="../report/delensing.rst",
                     category="CNN and U-Net (study 002)"),
        fig_unet=report("results/figures/unet_examples.png", caption="../report/unet_examples.rst",
                        category="CNN and U-Net (study 002)"),
        fig_methods=report("results/figures/delensing_methods.png", caption="../report/delensing.rst",
                           category="CNN and U-Net (study 002)"),
        fig_snr=report("results/figures/delensing_vs_snr.png", caption="../report/delensing.rst",
                       category="CNN and U-Net (study 002)"),
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
    log:
        "logs/evaluate_unet.log",
    benchmark:
        "benchmarks/evaluate_unet.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/evaluate_unet.py"
