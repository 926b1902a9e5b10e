# Across studies: the leaderboard of every source-recovery method on one common test set
# (sourcelens.evaluate.leaderboard), and each study's published numbers beside this run's (sourcelens.evaluate.studies).


rule leaderboard:
    input:
        vae="results/models/vae.pt",
        cnn="results/models/cnn.pt",
        unet="results/models/unet.pt",
        test=f"results/data/pairs_{config['unet']['lens_model']}_test.h5",
        sr=list(leaderboard_sr_models().values()),
    output:
        metrics="results/metrics/leaderboard.csv",
        table=report("results/tables/leaderboard.csv", caption="../report/leaderboard.rst", category="Leaderboard"),
        figure=report("results/figures/leaderboard.png", caption="../report/leaderboard.rst", category="Leaderboard"),
        examples=report(
            "results/figures/leaderboard_examples.png", caption="../report/leaderboard.rst", category="Leaderboard"
        ),
    params:
        leaderboard=config["leaderboard"],
        fit=config["fit"],
        pairs=config["simulate"]["pairs"],
        sr_models=leaderboard_sr_models(),
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core for every method
    log:
        "logs/leaderboard.log",
    benchmark:
        "benchmarks/leaderboard.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/leaderboard.py"


rule published_vs_computed:
    input:
        fit_galaxies="results/tables/fit_galaxies.csv",
        super_resolution="results/tables/super_resolution.csv",
        cnn_lens_params="results/tables/cnn_lens_params.csv",
        delensing="results/tables/delensing.csv",
    output:
        table=report(
            "results/tables/published_vs_computed.csv",
            caption="../report/published_vs_computed.rst",
            category="Studies: published vs computed",
        ),
        # the rows of each table, shown in that table's report caption
        caption_fit_galaxies="results/report/published_fit_galaxies.csv",
        caption_super_resolution="results/report/published_super_resolution.csv",
        caption_cnn_lens_params="results/report/published_cnn_lens_params.csv",
        caption_delensing="results/report/published_delensing.csv",
    localrule: True  # reads four small tables: not worth a cluster job
    log:
        "logs/published_vs_computed.log",
    benchmark:
        "benchmarks/published_vs_computed.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/published_vs_computed.py"
