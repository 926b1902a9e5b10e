"""The Snakemake workflow: lint, dry runs, bad input caught before any job, a tiny end-to-end run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def run_snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (), timeout: int = 1200):
    cmd = SNAKEMAKE + ["--directory", str(workdir)]
    if configs:
        cmd += ["--configfile", *map(str, configs)]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_slurm_profile_lists_every_submitted_rule():
    """Every rule that SLURM runs (all but the local rules) has its memory and runtime in the SLURM profile, and
    every GPU rule asks SLURM for a GPU there."""
    import re

    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    resources = profile["set-resources"]
    submitted, gpu = set(), set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if not m or "localrule: True" in block:
                continue
            submitted.add(m.group(1))
            if re.search(r"^\s+gpu=1,", block, re.M):
                gpu.add(m.group(1))
    assert {"train_vae", "posterior_vae", "apply_shard", "simulate_pairs"} <= submitted
    assert not submitted - set(resources), f"rules without SLURM resources: {sorted(submitted - set(resources))}"
    for rule in submitted:
        assert {"mem_mb", "runtime"} <= set(resources[rule]), rule
    assert gpu and all(resources[r].get("gpu") == 1 for r in gpu), {r: resources[r] for r in gpu}


def test_lint_clean(tmp_path):
    res = run_snakemake(tmp_path, "--lint")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "Congratulations" in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml", "paper_like", "study000_like"])
def test_dry_run(tmp_path, name, btk_dir):
    if name == "paper_like":  # the paper DAG with the small real sample standing in for COSMOS 25.2
        base = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
        base["sources"]["cosmos"]["dir"] = base["sources"]["cosmos_fit"]["dir"] = str(btk_dir)
        cfg = write_config(tmp_path / "paper_like.yaml", base)
    elif name == "study000_like":  # study 000's protocol with the shipped real sample standing in for COSMOS 23.5
        base = yaml.safe_load((REPO / "config" / "study000.yaml").read_text())
        base["sources"]["cosmos"]["dir"] = str(btk_dir)
        cfg = write_config(tmp_path / "study000_like.yaml", base)
    else:
        cfg = REPO / "config" / name
    res = run_snakemake(tmp_path, "-n", "--cores", "2", configs=(cfg,))
    assert res.returncode == 0, res.stderr + res.stdout
    if name == "paper_like":  # 80k train pairs in shards of 2000: 40 shard jobs per lens model
        assert "simulate_pairs" in res.stdout and res.stdout.count("rule simulate_pairs") >= 40 * 3


@pytest.mark.parametrize(
    "override, culprit",
    [
        ({"stamps": {"sise": 64}}, "sise"),
        ({"simulate": {"pairs": {"lens_models": ["NFW"]}}}, "NFW"),
        ({"split": {"fractions": {"train": 0.9, "val": 0.2, "test": 0.1}}}, "split/fractions"),
        ({"sources": {"kinds": ["cosmos"], "cosmos": {"dir": "/no/such/cosmos"}}}, "/no/such/cosmos"),
        ({"sources": {"kinds": ["cosmos"], "cosmos": {"sample": None}}}, "sources/cosmos/dir"),
        ({"stamps": {"size": 20}}, "stamps/size"),     # tiny's VAE halves 3 times: 20 and 33 fail late otherwise
        ({"stamps": {"size": 33}}, "vae/widths"),
        ({"fit": {"shapelet_n_max": [30]}}, "fit/shapelet_n_max"),
    ],
)
def test_bad_config_named_before_any_job(tmp_path, override, culprit):
    cfg = write_config(tmp_path / "bad.yaml", override)
    res = run_snakemake(tmp_path, "-n", "--cores", "1", configs=(REPO / "config" / "tiny.yaml", cfg))
    assert res.returncode != 0
    assert culprit in res.stderr + res.stdout
    assert not (tmp_path / "results").exists()


def _arrays(path: Path) -> dict[str, bytes]:
    with h5py.File(path, "r") as fh:
        return {k: fh[k][()].tobytes() for k in fh if k != "meta"}


@pytest.mark.slow
def test_tiny_end_to_end(tmp_path):
    tiny = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    res = run_snakemake(tmp_path, "--cores", "2", configs=(REPO / "config" / "tiny.yaml",))
    assert res.returncode == 0, res.stderr[-4000:]
    results = tmp_path / "results"
    for lens in tiny["simulate"]["pairs"]["lens_models"]:
        for split in ("train", "val", "test"):
            path = results / "data" / f"pairs_{lens}_{split}.h5"
            with h5py.File(path, "r") as fh:
                n = tiny["simulate"]["pairs"]["n_samples"][split]
                npix = tiny["simulate"]["pairs"]["num_pix"]
                for name in ("lensed", "lensed_noiseless", "source", "noise_sigma"):
                    assert fh[name].shape == (n, npix, npix)
                    assert np.isfinite(fh[name][()]).all()
                assert fh["lens_params"].shape == (n, 8)
                assert "provenance" in fh.attrs
        assert (results / "figures" / f"examples_{lens}.png").stat().st_size > 10_000
        assert (results / "figures" / f"lens_params_{lens}.png").stat().st_size > 10_000
    # no source of the test split reaches training, in the stamps and in the simulated pairs
    from sourcelens.io import read_meta

    ids = {s: set(read_meta(results / "data" / f"stamps_{s}.h5")["source_id"]) for s in ("train", "val", "test")}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"] and not ids["val"] & ids["test"]
    lens = tiny["simulate"]["pairs"]["lens_models"][0]
    pair_ids = set(read_meta(results / "data" / f"pairs_{lens}_test.h5")["source_id"])
    assert pair_ids <= ids["test"]
    for f in ("filter_table.csv", "filter_table.provenance.json"):
        assert (results / "tables" / f).exists()
    for f in ("filter_table.png", "stamps_by_kind.png", "source_diversity.png"):
        assert (results / "figures" / f).exists()
    import pandas as pd

    diversity = pd.read_csv(results / "tables" / "source_diversity.csv")
    assert diversity["kind"].iloc[0] == "cosmos" and set(diversity["split"]) == {"train", "test"}
    assert diversity["hlr_arcsec_median"].between(0.01, 5).all() and diversity["sersic_n_median"].between(0.2, 8).all()
    assert diversity.loc[diversity["split"] == "test", "nn_correlation_median"].between(-1, 1).all()
    assert list((tmp_path / "logs").rglob("*.log")) and list((tmp_path / "benchmarks").rglob("*.tsv"))
    _check_vae_and_fits(results, tiny)
    _check_cnn_unet(results, tiny)
    _check_sr(results, tiny)
    _check_leaderboard(results, tiny)
    # shard files were temporary
    assert not list((results / "data" / "pairs").rglob("shard_*.h5"))
    _check_apply(tmp_path, results)

    # rerunning the simulation rules gives byte-identical arrays
    before = _arrays(results / "data" / f"pairs_{lens}_train.h5")
    # every super-resolution set, its grid and its per-pair table
    sr = tiny["simulate"]["sr"]
    for name, spec in sr["sets"].items():
        for split in ("train", "val", "test"):
            path = results / "data" / f"sr_{name}_SIE_noisy_{split}.h5"
            with h5py.File(path, "r") as fh:
                n, npix = sr["n_samples"][split], spec["low_res_num_pix"]
                assert fh["low_res"].shape == (n, npix, npix) and fh["high_res"].shape == (n, 2 * npix, 2 * npix)
                assert np.isfinite(fh["low_res"][()]).all() and fh.attrs["sr_set"] == name
        table = read_meta(results / "data" / f"sr_{name}_SIE_noisy_test.h5")
        assert {"edge_peak_fraction", "exposure_time_s", "source_amplitude"} <= set(table.columns)
        assert (results / "figures" / f"sr_examples_{name}_SIE_noisy.png").stat().st_size > 10_000
    assert set(read_meta(results / "data" / "sr_real_SIE_noisy_test.h5")["source_id"]) <= ids["test"]
    model_i = read_meta(results / "data" / "sr_model_i_SIE_noisy_train.h5")
    assert np.allclose(model_i["theta_E"], 1.28149, atol=1e-4) and model_i["exposure_time_s"].between(1e3, 3163).all()
    sr_before = _arrays(results / "data" / "sr_model_i_SIE_noisy_test.h5")
    res = run_snakemake(tmp_path, "--cores", "2", "--forcerun", "simulate_pairs", "simulate_sr", "stamps",
                        configs=(REPO / "config" / "tiny.yaml",))
    assert res.returncode == 0, res.stderr[-4000:]
    assert _arrays(results / "data" / f"pairs_{lens}_train.h5") == before
    assert _arrays(results / "data" / "sr_model_i_SIE_noisy_test.h5") == sr_before

    # the report gathers every figure and table of the run, and its captions render (no reStructuredText errors)
    res = run_snakemake(tmp_path, "--report", str(tmp_path / "report.html"), configs=(REPO / "config" / "tiny.yaml",))
    assert res.returncode == 0, res.stderr[-4000:]
    assert not [line for line in res.stderr.splitlines() if "(ERROR/" in line or "(SEVERE/" in line], res.stderr[-4000:]
    report = (tmp_path / "report.html").read_text()
    produced = sorted(p.relative_to(tmp_path).as_posix()
                      for p in [*results.glob("figures/**/*.png"), *results.glob("tables/*.csv")])
    assert len(produced) >= 20 and not [p for p in produced if p not in report]
    assert "this run, real galaxies" in report      # the studies' captions show their published numbers beside ours


def _check_vae_and_fits(results: Path, tiny: dict) -> None:
    """The study-000 outputs of the tiny run: the model file, its training record, the evaluation and fit tables."""
    import pandas as pd

    from sourcelens.io import read_meta
    from sourcelens.models import load_vae

    vae = load_vae(results / "models" / "vae.pt")
    assert vae.hparams == {"image_size": tiny["stamps"]["size"], "latent_dim": tiny["vae"]["latent_dim"],
                           "widths": tiny["vae"]["widths"], "in_channels": 1}
    assert vae.reference_latents is not None and vae.reference_latents.shape[1] == tiny["vae"]["latent_dim"]
    assert vae.provenance["rule"] == "train_vae" and vae.provenance["config"]["seed"] == tiny["seed"]
    training = pd.read_csv(results / "metrics" / "vae_training.csv")
    max_epochs = [s["epochs"] for s in tiny["vae"]["stages"]]
    assert list(training["stage"].unique()) == [1, 2]
    assert all(1 <= (training["stage"] == i + 1).sum() <= n for i, n in enumerate(max_epochs))
    assert np.isfinite(training[["train_loss", "val_loss", "val_mse"]].to_numpy()).all()

    test_meta = read_meta(results / "data" / "stamps_test.h5")
    n_test, n_orig = len(test_meta), int((test_meta["augmentation"] == "original").sum())
    kinds = [k for k in ("cosmos", "cosmos_fit", "parametric") if k in set(test_meta["kind"])]
    assert kinds[0] == "cosmos", "the tiny run has real test galaxies"
    per_stamp = pd.read_csv(results / "metrics" / "vae_test.csv")
    assert len(per_stamp) == n_test and per_stamp["original"].sum() == n_orig
    assert per_stamp["ssim"].between(-1, 1).all() and (per_stamp["mse"] >= 0).all()
    real = per_stamp[per_stamp["kind"] == "cosmos"]
    assert np.isfinite(real["chi2_nu"]).all() and real["ssim_ceiling"].between(0, 1).all()
    assert real["ssim_truth"].isna().all()                      # no truth for real galaxies
    assert np.isfinite(per_stamp.loc[per_stamp["kind"] == "parametric", "ssim_truth"]).all()
    # the summary reports by kind, real galaxies first, then everything together
    summary = pd.read_csv(results / "tables" / "vae_reconstruction.csv")
    originals = summary[summary["subset"] == "originals"]
    assert list(pd.unique(originals["kind"]))[0] == "cosmos" and list(pd.unique(originals["kind"]))[-1] == "all"
    s = summary.set_index(["subset", "kind", "metric"])
    assert s.loc[("originals", "all", "ssim"), "n"] == n_orig and s.loc[("all stamps", "all", "mse"), "n"] == n_test
    for kind in kinds:
        assert s.loc[("originals", kind, "ssim"), "n"] == (test_meta.loc[test_meta.augmentation == "original", "kind"]
                                                         == kind).sum()
    assert 0 < s.loc[("originals", "cosmos", "ssim_fraction"), "median"] < 1.5
    _check_provenance(results / "tables" / "vae_reconstruction.csv", tiny)

    n_max = tiny["fit"]["shapelet_n_max"]
    methods = ["decoder", "sersic"] + [f"sersic+shapelets{n}" for n in n_max]
    galaxies = pd.read_csv(results / "tables" / "fit_galaxies.csv")
    assert galaxies["kind"].iloc[0] == "cosmos" and galaxies["kind"].iloc[-1] == "all"
    for kind, rows in galaxies.groupby("kind", sort=False):
        assert rows["method"].tolist() == methods, kind
    everything = galaxies[galaxies["kind"] == "all"]
    assert (everything["n_galaxies"] == min(tiny["fit"]["n_galaxies"], n_orig)).all()
    assert everything["n_params"].tolist() == [tiny["vae"]["latent_dim"] + 4, 7] + [
        (n + 1) * (n + 2) // 2 + 8 for n in n_max]
    assert set(galaxies["kind"]) >= {"cosmos", "cosmos_fit"}     # the fits take every kind in turn
    assert (galaxies["chi2_nu_median"] > 0.5).all() and (galaxies["chi2_nu_median"] < 50).all()
    assert galaxies["ssim_median"].between(0, 1).all() and (galaxies["seconds_per_galaxy_mean"] > 0).all()
    _check_provenance(results / "tables" / "fit_galaxies.csv", tiny)
    lensed = pd.read_csv(results / "tables" / "fit_lensed.csv")
    from sourcelens.config import load_config

    # the run merges tiny.yaml over config.yaml (the Snakefile's configfile), whose source_kinds apply
    lensed_kinds = load_config(REPO / "config" / "config.yaml", REPO / "config" / "tiny.yaml")["simulate"]["source_kinds"]
    assert set(lensed["kind"]) - {"all"} <= set(lensed_kinds)
    for kind, rows in lensed.groupby("kind", sort=False):
        assert rows["method"].tolist() == methods + ["pixelated"], kind
    n_lensable = int(((test_meta["augmentation"] == "original") & test_meta["kind"].isin(lensed_kinds)).sum())
    assert (lensed.loc[lensed["kind"] == "all", "n_galaxies"] == min(tiny["fit"]["lensed"]["n_galaxies"],
                                                                     n_lensable)).all()
    assert np.isfinite(lensed.drop(columns=["kind", "method"]).to_numpy(dtype=float)).all()
    assert lensed["source_ssim_median"].between(-1, 1).all() and (lensed["chi2_nu_median"] > 0.3).all()
    _check_provenance(results / "tables" / "fit_lensed.csv", tiny)

    # posteriors of the decoder fits: every set, both methods, every level, real galaxies first among the stamps
    post = pd.read_csv(results / "tables" / "posterior_calibration.csv", comment="#")
    pcfg = tiny["posterior"]
    assert list(pd.unique(post["set"])) == ["model", "stamps", "lensed"]
    assert post.loc[post["set"] == "stamps", "kind"].iloc[0] == "cosmos"
    assert set(post["method"]) == set(pcfg["methods"]) == {"laplace", "nuts"}
    assert sorted(set(post["level"])) == [0.2, 0.4, 0.6, 0.68, 0.8, 0.9, 0.95]
    assert post["coverage_galaxy"].between(0, 1).all() and post["coverage_all"].between(0, 1).all()
    assert post.loc[post["set"] == "lensed", "coverage_image"].between(0, 1).all()
    nuts = post[post["method"] == "nuts"]
    assert (nuts["galaxies"] == pcfg["nuts"]["n_galaxies"]).all() and (nuts["parameter_std_ratio"] > 0).all()
    per = pd.read_csv(results / "metrics" / "posterior_vae.csv", comment="#")
    lap = per[(per["method"] == "laplace") & (per["level"] == 0.68)]
    assert lap.groupby("set")["galaxy"].nunique().to_dict() == {
        "model": pcfg["n_galaxies"]["model"], "stamps": min(pcfg["n_galaxies"]["stamps"], n_orig),
        "lensed": min(pcfg["n_galaxies"]["lensed"], n_lensable)}
    # coverage never falls as the level rises
    for _, rows in post.groupby(["set", "kind", "method"]):
        assert np.all(np.diff(rows.sort_values("level")["coverage_galaxy"].to_numpy()) >= -1e-12)
    for f in ("posterior_maps.png", "posterior_calibration.png"):
        assert (results / "figures" / f).stat().st_size > 10_000
    _check_provenance(results / "tables" / "posterior_calibration.csv", tiny)


def _check_leaderboard(results: Path, tiny: dict) -> None:
    """Every source-recovery method on the same test galaxies, real galaxies first, with their intervals."""
    import pandas as pd

    from sourcelens.evaluate.leaderboard import METHODS

    per = pd.read_csv(results / "metrics" / "leaderboard.csv", comment="#")
    methods = list(dict.fromkeys(per["method"]))
    assert [m for m in methods if not m.startswith("Sérsic + shapelets")] == [
        m for m in METHODS if m != "Sérsic + shapelets"]
    shapelets = [f"Sérsic + shapelets n_max {n}" for n in tiny["fit"]["shapelet_n_max"]]
    assert [m for m in methods if m.startswith("Sérsic + shapelets")] == shapelets
    galaxies = per.groupby("method")["source_id"].apply(tuple)
    assert galaxies.nunique() == 1 and len(galaxies.iloc[0]) == len(set(galaxies.iloc[0]))   # the same galaxies, once
    table = pd.read_csv(results / "tables" / "leaderboard.csv", comment="#")
    assert table["kind"].iloc[0] == "cosmos" and table["kind"].iloc[-1] == "all"
    best = table[table["kind"] == "all"].iloc[0]
    assert best["ssim_diff"] == 0 and best["ssim_diff_low"] == 0 and np.isfinite(best["ssim_mean"])
    assert (results / "figures" / "leaderboard.png").stat().st_size > 10_000
    # each study's published numbers beside this run's
    studies = pd.read_csv(results / "tables" / "published_vs_computed.csv", comment="#")
    assert {"000", "001", "002"} <= set(studies["study"].astype(str).str.zfill(3))
    for quantity in ("decoder fit of one galaxy [s]", "CNN test MSE of theta_E", "U-Net source SSIM"):
        row = studies[studies["quantity"] == quantity].iloc[0]
        assert np.isfinite(row["published"]) and np.isfinite(row["computed_all"]), quantity
    # ... and each study table's own rows, for its report caption
    from sourcelens.evaluate.cnn import STUDY_002_MSE

    caption = pd.read_csv(results / "report" / "published_cnn_lens_params.csv")
    published = caption.set_index("quantity").loc["CNN test MSE of theta_E", "published"]
    assert published == pytest.approx(STUDY_002_MSE["theta_E"], rel=1e-3)


def _check_apply(workdir: Path, results: Path) -> None:
    """A user catalogue (a FITS cube of test stamps) through the trained VAE in shards, gathered in row order: the
    encodings equal the VAE's own of the same stamps, the fits carry their posterior."""
    from astropy.io import fits

    from sourcelens.io import read_dataset, read_meta
    from sourcelens.models import encode_images, load_vae

    with h5py.File(results / "data" / "stamps_test.h5", "r") as fh:
        stamps = np.asarray(fh["images"][:5], dtype=np.float32)
    fits.PrimaryHDU(stamps).writeto(workdir / "catalogue.fits")
    cfg = write_config(workdir / "apply.yaml", {"apply": {"shard_size": 2, "catalogues": {
        "enc": {"path": "catalogue.fits", "task": "encode"},
        "post": {"path": "catalogue.fits", "task": "fit_posterior", "sigma": 0.05, "max_iter": 5, "n_samples": 4}}}})
    res = run_snakemake(workdir, "--cores", "2", "results/apply/enc.h5", "results/apply/post.h5",
                        configs=(REPO / "config" / "tiny.yaml", cfg))
    assert res.returncode == 0, res.stderr[-4000:]
    assert (res.stdout + res.stderr).count("rule apply_shard") == 6     # 3 shards of 2 rows per catalogue
    arrays, meta = read_dataset(results / "apply" / "enc.h5")
    assert meta["row"].tolist() == [0, 1, 2, 3, 4]
    vae = load_vae(results / "models" / "vae.pt")
    peaks = stamps.max(axis=(1, 2))
    np.testing.assert_allclose(arrays["z"], encode_images(vae, stamps / peaks[:, None, None])[0], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(meta["peak"], peaks, rtol=1e-6)
    arrays, meta = read_dataset(results / "apply" / "post.h5")
    assert arrays["source_std"].shape == stamps.shape and (arrays["source_std"] >= 0).all()
    assert (meta["flux_std"] > 0).all() and np.isfinite(meta["chi2_nu"]).all()
    assert not list((results / "apply").rglob("shard_*.h5"))          # shards were temporary
    # the run's own LSST + Euclid test blends (a sourcelens blends file) through that band set's deblender
    from sourcelens.models.deblender import deblend_images, load_deblender

    blends_file = results / "data" / "blends_lsst_euclid_blended_test.h5"
    cfg = write_config(workdir / "apply_deblend.yaml", {"apply": {"shard_size": 6, "catalogues": {
        "deb": {"path": str(blends_file), "task": "deblend", "band_set": "lsst_euclid"}}}})
    res = run_snakemake(workdir, "--cores", "2", "results/apply/deb.h5", configs=(REPO / "config" / "tiny.yaml", cfg))
    assert res.returncode == 0, res.stderr[-4000:]
    arrays, meta = read_dataset(results / "apply" / "deb.h5")
    with h5py.File(blends_file, "r") as fh:
        blends = np.asarray(fh["blend"][()], dtype=np.float64)
    expected = deblend_images(load_deblender(results / "models" / "deblend" / "deblender_lsst_euclid.pt"), blends)
    np.testing.assert_allclose(arrays["central"], expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    assert meta["blend_id"].tolist() == read_meta(blends_file)["blend_id"].tolist()
    assert "flux_r" in meta and len([c for c in meta.columns if c.startswith("flux_")]) == blends.shape[1] == 10
    # a catalogue that does not exist is named before any job
    bad = write_config(workdir / "bad.yaml", {"apply": {"catalogues": {"x": {"path": "nope.h5", "task": "encode"}}}})
    res = run_snakemake(workdir, "--cores", "1", "--dry-run", configs=(REPO / "config" / "tiny.yaml", bad))
    assert res.returncode != 0 and "apply/catalogues/x/path" in res.stderr + res.stdout


def _check_cnn_unet(results: Path, tiny: dict) -> None:
    """Study 002's outputs of the tiny run: both models, the CNN table, the delensing table of every method."""
    import pandas as pd

    from sourcelens.evaluate.delensing import METHODS
    from sourcelens.models import load_cnn, load_unet
    from sourcelens.names import LENS_PARAMETERS

    cnn, unet = load_cnn(results / "models" / "cnn.pt"), load_unet(results / "models" / "unet.pt")
    npix = tiny["simulate"]["pairs"]["num_pix"]
    assert cnn.hparams["image_size"] == unet.hparams["image_size"] == npix
    assert (cnn.sigma_scale > 0).all() and len(cnn.extra["training"]["prior_std"]) == 8
    assert unet.extra["source_grid"]["pixel_scale_arcsec"] == pytest.approx(
        tiny["simulate"]["pairs"].get("pixel_scale_arcsec", 0.12) / 3)
    table = pd.read_csv(results / "tables" / "cnn_lens_params.csv").set_index("quantity")
    assert list(table.columns) == list(LENS_PARAMETERS)
    assert table.loc["MSE (study 002)", "theta_E"] == 0.0699 and (table.loc["MSE (sourcelens)"] >= 0).all()
    assert table.loc["68% coverage"].between(0, 1).all()
    n_test = tiny["simulate"]["pairs"]["n_samples"]["test"]
    predictions = pd.read_csv(results / "metrics" / "cnn_test.csv")
    assert len(predictions) == n_test
    for kind in pd.unique(predictions["kind"]):               # R² per source kind present in the test pairs
        assert f"R² ({kind})" in table.index, kind
    per_pair = pd.read_csv(results / "metrics" / "delensing.csv")
    assert list(pd.unique(per_pair["method"])) == list(METHODS)
    assert (per_pair.groupby("method").size() == n_test).all()
    summary = pd.read_csv(results / "tables" / "delensing.csv")
    assert summary["kind"].iloc[-1] == "all" and set(summary["method"]) == set(METHODS)
    ssim = per_pair.set_index("method")["ssim"]
    assert ssim["backward (true lens, noiseless)"].median() > ssim["identity"].median()   # physics beats nothing
    for name in ("cnn_predictions", "cnn_residuals", "cnn_calibration", "unet_examples", "delensing_methods",
                 "delensing_vs_snr", "cnn_learning_curve", "unet_learning_curve"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000, name
    _check_provenance(results / "tables" / "delensing.csv", tiny)


def _check_sr(results: Path, tiny: dict) -> None:
    """Studies 001 and 004's outputs of the tiny run: a model per trained method (and PISR ablation variant),
    set, lens and noise; every method on the same test images; the summary beside study 001's rows; figures."""
    import pandas as pd

    from sourcelens.models.sr import load_sr_model
    from sourcelens.names import PISR_ABLATION, SOURCE_KINDS, SR_METHODS

    sr, sims = tiny["super_resolution"], tiny["simulate"]["sr"]
    assert set(sr["methods"]) == set(SR_METHODS) and sr["pisr_ablation"]
    n_test = sims["n_samples"]["test"]
    table = pd.read_csv(results / "tables" / "super_resolution.csv")
    ours = table[table["origin"] == "sourcelens"]
    assert list(pd.unique(ours["set"])) == sr["sets"]
    assert (table["origin"] == "study 001").sum() == 8
    for name in sr["sets"]:
        for lens in sims["lens_models"]:
            for noise in sims["noise_variants"]:
                for method in [*SR_METHODS[1:], *PISR_ABLATION]:
                    model, kind = load_sr_model(results / "models" / "sr" / f"{name}_{lens}_{noise}" / f"{method}.pt")
                    assert kind == ("pisr" if method in PISR_ABLATION else method)
                    assert model.provenance["rule"] == "train_sr"
        per = pd.read_csv(results / "metrics" / f"super_resolution_{name}.csv")
        assert set(per["method"]) == set(SR_METHODS) | set(PISR_ABLATION)
        assert all(sorted(v) == list(range(n_test)) for v in per.groupby("method")["index"].apply(list))
        assert per["ssim"].between(-1, 1).all() and (per["mse"] >= 0).all()
        has_source = per["method"].isin(["lenssr_no_source", "pisr", *PISR_ABLATION])
        assert per.loc[has_source, "source_ssim"].notna().all() and per.loc[~has_source, "source_ssim"].isna().all()
        rows = ours[ours["set"] == name]
        assert set(rows[rows["kind"] == "all"]["method"]) == set(SR_METHODS)
        kinds = list(pd.unique(rows["kind"]))
        assert kinds[-1] == "all" and kinds[:-1] == sorted(kinds[:-1], key=lambda k: (
            SOURCE_KINDS.index(k) if k in SOURCE_KINDS else len(SOURCE_KINDS), k))
        for figure in ("sr_noise_limit", "sr_methods"):
            assert (results / "figures" / f"{figure}_{name}.png").stat().st_size > 10_000, (figure, name)
    ablation = pd.read_csv(results / "tables" / "super_resolution_pisr_ablation.csv")
    assert list(pd.unique(ablation["loss"])) == [label for label, _ in PISR_ABLATION.values()]
    _check_provenance(results / "tables" / "super_resolution.csv", tiny)


def _check_provenance(table: Path, tiny: dict) -> None:
    """A table's provenance beside it: its config, versions, commit and the citations of the real galaxies."""
    import json

    from sourcelens.io import provenance_path

    record = json.loads(provenance_path(table).read_text())
    assert record["config"]["seed"] == tiny["seed"] and "torch" in record["versions"] and record["git_commit"]
    assert any("Koekemoer" in c for c in record["data_citations"])
    assert any("cosmos_btk_ext26" in c and "MIT" in c for c in record["data_citations"])


@pytest.mark.slow
def test_cosmos_sources_through_the_workflow(tmp_path, btk_dir):
    """Real COSMOS stamps from a RealGalaxyCatalog directory given in the config."""
    cfg = write_config(tmp_path / "cosmos.yaml", {
        "sources": {"kinds": ["cosmos"], "cosmos": {"dir": str(btk_dir), "cuts": {"mag_max": 24.0}}},
    })
    res = run_snakemake(tmp_path, "--cores", "2", "results/data/stamps_train.h5", "results/figures/filter_table.png",
                        configs=(REPO / "config" / "tiny.yaml", cfg))
    assert res.returncode == 0, res.stderr[-4000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "tables" / "filter_table.csv")
    assert set(table["stage"]) == {"catalogue", "stamps"}
    assert table.set_index("cut").loc["magnitude", "n_removed"] > 0
    from sourcelens.io import read_meta

    meta = read_meta(tmp_path / "results" / "data" / "stamps.h5")
    assert (meta["kind"] == "cosmos").all() and (meta["magnitude"] <= 24.0).all()
    assert len(meta) == table["n_kept"].iloc[-1]
