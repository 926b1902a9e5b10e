# Shared helpers for the rules: shard bookkeeping and the list of default targets.
# The config was checked (schema and cross-key rules) by sourcelens.config.check_config in the Snakefile.
import math

from sourcelens.config import sr_method_config, sr_set_config
from sourcelens.names import PISR_ABLATION, SPLITS

PAIR_LENSES = config["simulate"]["pairs"]["lens_models"]
SR_SETS = list(config["simulate"]["sr"]["sets"])  # named super-resolution sets (presets + overrides)
SR_LENSES = config["simulate"]["sr"]["lens_models"]
SR_NOISE = config["simulate"]["sr"]["noise_variants"]
SHARD_SIZE = config["simulate"]["shard_size"]
# super-resolution (studies 001 and 004): what is trained and evaluated (check_config filled the null lists)
SR = config["super_resolution"]
SR_EVAL_SETS, SR_EVAL_LENSES, SR_EVAL_NOISE = SR["sets"], SR["lens_models"], SR["noise_variants"]
SR_ABLATION = list(PISR_ABLATION) if SR["pisr_ablation"] else []
SR_TRAINED = [m for m in SR["methods"] if m != "bicubic"] + SR_ABLATION  # bicubic needs no training


wildcard_constraints:
    split="|".join(SPLITS),
    shard=r"\d+",
    lens=r"[A-Z]+",
    noise="|".join(SR_NOISE),
    set="|".join(SR_SETS),


def n_shards(n_samples):
    """Number of shard jobs for n_samples samples."""
    return max(1, math.ceil(n_samples / SHARD_SIZE))


def shard_count(n_samples, shard):
    """Samples in shard number `shard` (the last one takes the remainder)."""
    return min(SHARD_SIZE, n_samples - int(shard) * SHARD_SIZE)


def pair_shards(wildcards):
    n = config["simulate"]["pairs"]["n_samples"][wildcards.split]
    return expand(
        "results/data/pairs/{lens}/{split}/shard_{shard}.h5",
        lens=wildcards.lens, split=wildcards.split, shard=range(n_shards(n)),
    )


def sr_set(name):
    """The full config of super-resolution set `name`: its preset with the set's overrides (sourcelens.config)."""
    return sr_set_config(config["simulate"]["sr"], name)


def sr_n_samples(name, split):
    """Pairs of super-resolution set `name` in `split`."""
    return sr_set(name)["n_samples"][split]


def sr_shards(wildcards):
    n = sr_n_samples(wildcards.set, wildcards.split)
    return expand(
        "results/data/sr/{set}/{lens}_{noise}/{split}/shard_{shard}.h5",
        set=wildcards.set, lens=wildcards.lens, noise=wildcards.noise, split=wildcards.split,
        shard=range(n_shards(n)),
    )


def sr_model(method, set, lens, noise):
    """The model file of a trained super-resolution method (or PISR ablation variant) on one set, lens and noise."""
    return f"results/models/sr/{set}_{lens}_{noise}/{method}.pt"


def leaderboard_sr_models():
    """The super-resolution models whose sources join the leaderboard: {method: path} (config leaderboard.super_resolution)."""
    board = config["leaderboard"]["super_resolution"]
    return {m: sr_model(m, board["set"], board["lens_model"], board["noise"]) for m in board["methods"]}


def sr_evaluation_tests(wildcards):
    """The test files evaluate_sr reads for a set: {"lens/noise": path}."""
    return {f"{lens}/{noise}": f"results/data/sr_{wildcards.set}_{lens}_{noise}_test.h5"
            for lens in SR_EVAL_LENSES for noise in SR_EVAL_NOISE}


def sr_evaluation_models(wildcards):
    """The models evaluate_sr applies for a set: {method: {"lens/noise": path}} (bicubic: none)."""
    return {method: {f"{lens}/{noise}": (None if method == "bicubic" else sr_model(method, wildcards.set, lens, noise))
                     for lens in SR_EVAL_LENSES for noise in SR_EVAL_NOISE}
            for method in SR["methods"] + SR_ABLATION}


def sr_evaluation_inputs(wildcards):
    return list(sr_evaluation_tests(wildcards).values()) + [
        path for files in sr_evaluation_models(wildcards).values() for path in files.values() if path is not None]


def all_targets():
    return (
        expand("results/data/pairs_{lens}_{split}.h5", lens=PAIR_LENSES, split=SPLITS)
        + expand(
            "results/data/sr_{set}_{lens}_{noise}_{split}.h5", set=SR_SETS, lens=SR_LENSES, noise=SR_NOISE, split=SPLITS
        )
        + [
            "results/tables/filter_table.csv",
            "results/figures/filter_table.png",
            "results/figures/stamps_by_kind.png",
            "results/tables/source_diversity.csv",
            "results/figures/lensing_models.png",
            "results/figures/lensing_magnification.png",
            "results/figures/lensing_backward.png",
            "results/figures/vae_learning_curve.png",
            "results/tables/vae_reconstruction.csv",
            "results/figures/vae_reconstructions.png",
            "results/tables/fit_galaxies.csv",
            "results/figures/fit_galaxies.png",
            "results/tables/fit_lensed.csv",
            "results/figures/fit_lensed.png",
            "results/tables/posterior_calibration.csv",
            "results/figures/posterior_maps.png",
            "results/figures/posterior_calibration.png",
            "results/tables/cnn_lens_params.csv",
            "results/figures/cnn_learning_curve.png",
            "results/tables/delensing.csv",
            "results/figures/unet_learning_curve.png",
            "results/tables/leaderboard.csv",
            "results/figures/leaderboard.png",
            "results/figures/leaderboard_examples.png",
            "results/tables/published_vs_computed.csv",
        ]
        + expand("results/figures/examples_{lens}.png", lens=PAIR_LENSES)
        + expand("results/figures/lens_params_{lens}.png", lens=PAIR_LENSES)
        + expand("results/figures/sr_examples_{set}_{lens}_{noise}.png", set=SR_SETS, lens=SR_LENSES, noise=SR_NOISE)
        + ["results/tables/super_resolution.csv"]
        + (["results/tables/super_resolution_pisr_ablation.csv"] if SR_ABLATION else [])
        + expand("results/figures/sr_{figure}_{set}.png", figure=("noise_limit", "methods"), set=SR_EVAL_SETS)
        + deblend_targets()
    )


# study 003: the band sets with a VAE and a deblender (each must be simulated: blends.band_sets)
DEBLEND_BAND_SETS = list(config.get("deblend", {}).get("band_sets") or [])
_unsimulated = sorted(set(DEBLEND_BAND_SETS) - set(config.get("blends", {}).get("band_sets") or []))
if _unsimulated:
    raise ValueError(f"config keys 'deblend/band_sets' and 'blends/band_sets': band sets {_unsimulated} are trained "
                     "but not simulated; add them to blends.band_sets or remove them from deblend.band_sets")


def deblend_evaluation_inputs(wildcards):
    """The test files and models evaluate_deblender reads, named `{part}_{bands}`."""
    out = {}
    for bands in DEBLEND_BAND_SETS:
        out[f"isolated_{bands}"] = f"results/data/blends_{bands}_isolated_test.h5"
        out[f"blended_{bands}"] = f"results/data/blends_{bands}_blended_test.h5"
        out[f"vae_{bands}"] = f"results/models/deblend/vae_{bands}.pt"
        out[f"deblender_{bands}"] = f"results/models/deblend/deblender_{bands}.pt"
    return out


def deblend_targets():
    """Study 003's table, figures and learning curves, for the band sets of `deblend.band_sets` (none: nothing)."""
    band_sets = DEBLEND_BAND_SETS
    if not band_sets:
        return []
    return [
        "results/tables/deblending.csv",
        "results/figures/deblending_residuals_snr.png",
        "results/figures/deblending_residuals_mag.png",
        "results/figures/deblending_shear_bias.png",
        "results/figures/deblending_examples.png",
    ] + expand("results/figures/deblend_{net}_{bands}_learning_curve.png", net=("vae", "deblender"), bands=band_sets)


# trained models applied to users' catalogues in shards (workflow/rules/apply.smk; sourcelens.apply)
APPLY = config["apply"]["catalogues"]


def _apply_shards_of(name):
    from sourcelens.apply import count_stamps, shard_ranges

    if APPLY[name]["task"] in ("fit", "fit_posterior") and "sigma" not in APPLY[name]:
        raise ValueError(f"config key 'apply/catalogues/{name}/sigma': task {APPLY[name]['task']} needs the stamps' "
                         "noise sigma")
    try:
        n = count_stamps(APPLY[name]["path"])
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"config key 'apply/catalogues/{name}/path': {err}") from err
    return shard_ranges(n, int(config["apply"]["shard_size"]))


_APPLY_SHARDS = {name: _apply_shards_of(name) for name in APPLY}


def apply_model(name):
    """The model file of a catalogue's task: its own `model`, else the workflow's trained one (the deblender of
    the catalogue's `band_set`, by default the first of deblend.band_sets)."""
    from sourcelens.apply import MODEL_OF_TASK

    entry = APPLY[name]
    if entry.get("model"):
        return entry["model"]
    if entry["task"] == "deblend":
        band_set = entry.get("band_set") or (DEBLEND_BAND_SETS[0] if DEBLEND_BAND_SETS else None)
        if band_set not in DEBLEND_BAND_SETS:
            raise ValueError(f"config key 'apply/catalogues/{name}/band_set': {band_set!r} is not one of the "
                             f"band sets the workflow trains deblenders for (deblend.band_sets: "
                             f"{', '.join(DEBLEND_BAND_SETS) or 'none'}); give one, or the catalogue's `model`")
        return f"results/models/deblend/deblender_{band_set}.pt"
    return f"results/models/{MODEL_OF_TASK[entry['task']]}.pt"


def apply_rows(name, shard):
    """Rows [start, stop) of shard number `shard` of catalogue `name`."""
    return list(_APPLY_SHARDS[name][int(shard)])


def apply_options(name):
    """The task's options from the catalogue's config (sigma, max_iter, n_samples) and its seed."""
    from sourcelens.config import derive_seed

    entry = APPLY[name]
    opts = {k: entry[k] for k in ("sigma", "max_iter") if k in entry}
    if entry["task"] == "fit_posterior":
        opts["n_samples"] = entry.get("n_samples", 100)
        opts["seed"] = int(derive_seed(config["seed"], "apply_shard", name).generate_state(1)[0])
    return opts


def apply_shards(wildcards):
    return expand("results/apply/{name}/shard_{shard}.h5", name=wildcards.name,
                  shard=range(len(_APPLY_SHARDS[wildcards.name])))
