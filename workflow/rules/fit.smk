# Galaxy fits: the VAE decoder as a galaxy model against Sérsic and shapelets, unlensed and lensed.


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
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core for every method (lenstronomy's are single-threaded)
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
        seed=config["seed"],
    threads: 1  # seconds per galaxy in the table are per core for every method (lenstronomy's are single-threaded)
    log:
        "logs/fit_lensed.log",
    benchmark:
        "benchmarks/fit_lensed.tsv"
    conda:
        "../../envs/sourcelens.yaml"
    script:
        "../../scripts/fit_lensed.py"
