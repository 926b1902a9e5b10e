"""The leaderboard (sourcelens.evaluate.leaderboard): the common test set read from a pairs file, the re-lensed χ²,
every method's row, the paired bootstrap and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.config import validate_config
from sourcelens.evaluate import leaderboard as lb
from sourcelens.fit.scenes import true_source_on_grid
from sourcelens.io import write_dataset
from sourcelens.models.cnn import LensCNN
from sourcelens.models.lenssr import LensSRNoSource
from sourcelens.models.pisr import PISR
from sourcelens.models.vae import VAE
from sourcelens.simulate import pairs_array_attrs, pairs_attrs, simulate_pairs

STAMP = 16


def _pairs_cfg() -> dict:
    return validate_config({"simulate": {"pairs": {
        "num_pix": 24, "pixel_scale_arcsec": 0.1, "source_pixel_scale_arcsec": 0.04, "supersampling": 2,
        "source_taper_fraction": 0.0, "source_grid_pixel_scale_arcsec": 0.025,
        "psf": {"type": "GAUSSIAN", "fwhm_arcsec": 0.15},
        "noise": {"background_rms": 0.02, "poisson": False},
        "source_offset_arcsec": 0.0, "source_magnitude": [22.5, 22.5],
        "priors": {"theta_E": {"uniform": [0.45, 0.55]}},
    }}})["simulate"]["pairs"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Six lensed smooth galaxies of two kinds, written as the workflow writes a pairs file."""
    yy, xx = np.indices((STAMP, STAMP)) - (STAMP - 1) / 2
    stamps = np.stack([np.exp(-(xx**2 + (yy / q) ** 2) / (2 * 2.5**2)) for q in (0.5, 0.7, 0.9)])
    meta = pd.DataFrame({"source_id": ["cosmos-1", "param-1", "param-2"], "kind": ["cosmos", "parametric", "parametric"]})
    cfg = _pairs_cfg()
    arrays, table = simulate_pairs(stamps, meta, 6, "SIE", cfg, np.random.default_rng(5), progress=False)
    path = tmp_path_factory.mktemp("pairs") / "pairs_SIE_test.h5"
    write_dataset(path, arrays, table, kind="pairs", attrs=pairs_attrs(cfg, "SIE"), array_attrs=pairs_array_attrs())
    return path, cfg


def test_pairs_scenes_are_the_stored_pairs(pairs_file):
    path, cfg = pairs_file
    scenes = lb.pairs_scenes(path, 10, cfg)
    # one lensing per galaxy, real galaxies first
    assert len(scenes) == 3 and sorted(scenes.source_ids) == ["cosmos-1", "param-1", "param-2"]
    assert scenes.kinds.count("cosmos") == 1 and scenes.psf_kernel is not None
    # the fits' evaluation grid is the pairs' source grid: the truth there is the stored source
    assert np.allclose(true_source_on_grid(scenes), scenes.stamps, rtol=0, atol=1e-9 * scenes.stamps.max())
    # the true source re-lensed through the true lens explains the noiseless image far better than a wrong one
    noiseless = lb.pairs_scenes(path, 10, cfg)
    noiseless.data = noiseless.noiseless
    good = lb.relensed_chi2(scenes, scenes.stamps)
    wrong = lb.relensed_chi2(scenes, np.roll(scenes.stamps, 4, axis=-1))
    assert (good < 2).all() and (wrong > 10 * good).all()
    assert (lb.relensed_chi2(noiseless, noiseless.stamps) < good).all()
    with pytest.raises(ValueError, match="num_pix"):
        lb.pairs_scenes(path, 2, {**cfg, "num_pix": 32})


def test_every_method_on_the_same_galaxies(pairs_file):
    path, cfg = pairs_file
    scenes = lb.pairs_scenes(path, 3, cfg)
    torch.manual_seed(0)
    vae = VAE(image_size=STAMP, latent_dim=4, widths=(8, 16)).eval()
    per, sources = lb.evaluate_leaderboard(scenes, vae, fit_options={"max_iter": 10, "shapelet_n_max": (2,)})
    expected = ["identity", "backward (true lens)", "decoder (true lens)", "Sérsic", "Sérsic + shapelets n_max 2",
                "pixelated"]                                      # no CNN, no U-Net given: their methods left out
    assert list(sources) == expected and list(dict.fromkeys(per["method"])) == expected
    assert len(per) == 3 * len(expected) and set(per.groupby("method").size()) == {3}
    for name, stack in sources.items():
        assert stack.shape == scenes.stamps.shape, name
    for col in ("mse", "ssim", "psnr", "chi2_nu", "chi2_nu_true_source", "seconds"):
        assert np.isfinite(per[col]).all(), col
    # the χ² floor of the source grid: the true source re-lensed, the same for every method of a galaxy
    assert (per.groupby("galaxy")["chi2_nu_true_source"].nunique() == 1).all()
    mean = per.groupby("method")["ssim"].mean()
    # physics with the true lens beats taking the lensed image as the source
    assert mean["backward (true lens)"] > mean["identity"] + 0.2 and mean["pixelated"] > mean["identity"] + 0.2
    assert np.allclose(per["psnr"], 10 * np.log10(1 / per["mse"]))
    table = lb.leaderboard_table(per, np.random.default_rng(0), 200)
    assert table["kind"].tolist()[:len(expected)] == ["cosmos"] * len(expected)     # real galaxies first
    assert set(table["kind"]) == {"cosmos", "parametric", "all"}
    top = table[table["kind"] == "all"].iloc[0]
    assert top["rank_ssim"] == 1 and top["ssim_best"] == top["method"] and top["ssim_diff"] == 0
    with pytest.raises(ValueError, match="unknown leaderboard methods"):
        lb.evaluate_leaderboard(scenes, vae, methods=["magic"])


def test_super_resolution_sources_join_the_leaderboard(pairs_file):
    """The SR methods that yield a source, applied to the pairs through the true lens (EPL/SIE + shear) at the
    pairs' own grids, land on the source grid and recover it far better than the lensed image does."""
    path, cfg = pairs_file
    scenes = lb.pairs_scenes(path, 3, cfg)
    torch.manual_seed(0)
    sr = {"pisr": PISR(2, sisr={"width": 4, "depth": 1}), "lenssr_no_source": LensSRNoSource(2, sisr={"width": 4, "depth": 1})}
    wanted = ["identity", "backward (true lens)", "LensSR no source (true lens)", "PISR (true lens)"]
    per, sources = lb.evaluate_leaderboard(scenes, sr_models=sr, pairs_cfg=cfg, methods=wanted)
    assert list(sources) == wanted and set(per.groupby("method").size()) == {3}     # no CNN: no CNN-lens rows
    assert all(stack.shape == scenes.stamps.shape for stack in sources.values())
    rows = per[per["method"].isin(wanted[2:])]
    assert (rows["lens"] == "true").all() and np.isfinite(rows[["mse", "ssim", "chi2_nu", "seconds"]]).all().all()
    mean = per.groupby("method")["ssim"].mean()
    assert mean["PISR (true lens)"] > mean["identity"] + 0.2
    assert mean["LensSR no source (true lens)"] > mean["identity"] + 0.2
    # PISR refines its source on the data: it explains the image better than the network's start alone
    unrefined = PISR(2, sisr={"width": 4, "depth": 1}, refine={"steps": 0})
    unrefined.load_state_dict(sr["pisr"].state_dict())
    start = lb.sr_source(scenes, "pisr", unrefined, cfg["psf"], cfg["supersampling"])
    assert lb.relensed_chi2(scenes, sources["PISR (true lens)"]).mean() < lb.relensed_chi2(scenes, start).mean()
    # through the CNN's lens: a CNN that predicts galaxy 0's true lens for every image (zero head, that lens as
    # its mean) gives galaxy 0 the true-lens source, and rows of lens "CNN" that pay the CNN's time
    cnn = LensCNN(image_size=24, widths=(4, 8), dense=8)
    with torch.no_grad():
        cnn.head[-1].weight.zero_()
        cnn.head[-1].bias.zero_()
        cnn.target_mean.copy_(torch.as_tensor(scenes.lens.iloc[0].to_numpy(), dtype=torch.float32))
    both = wanted[2:] + ["LensSR no source (CNN lens)", "PISR (CNN lens)"]
    per_cnn, via_cnn = lb.evaluate_leaderboard(scenes, cnn=cnn, sr_models=sr, pairs_cfg=cfg, methods=both)
    assert list(via_cnn) == ["LensSR no source (true lens)", "LensSR no source (CNN lens)", "PISR (true lens)",
                             "PISR (CNN lens)"]
    assert (per_cnn.loc[per_cnn["method"].str.endswith("(CNN lens)"), "lens"] == "CNN").all()
    for name in ("LensSR no source", "PISR"):
        assert np.allclose(via_cnn[f"{name} (CNN lens)"][0], via_cnn[f"{name} (true lens)"][0], rtol=1e-4, atol=1e-6)
        assert not np.allclose(via_cnn[f"{name} (CNN lens)"][1:], via_cnn[f"{name} (true lens)"][1:])
    with pytest.raises(ValueError, match="yields no source"):
        lb.sr_source(scenes, "supervised", sr["pisr"], cfg["psf"])
    with pytest.raises(ValueError, match="pairs' config"):
        lb.evaluate_leaderboard(scenes, sr_models=sr, methods=["PISR (true lens)"])


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 0.9, 60)
    per = pd.DataFrame({"galaxy": np.tile(np.arange(60), 3),
                        "method": np.repeat(["a", "b", "failed"], 60),
                        "ssim": np.concatenate([base, base - 0.1 + rng.normal(0, 0.02, 60), np.full(60, np.nan)])})
    out = lb.paired_bootstrap(per, "ssim", True, np.random.default_rng(2), 2000, 0.95).set_index("method")
    assert (out["ssim_best"] == "a").all() and out.loc["a", "ssim_diff"] == 0
    # the pairing removes the galaxy-to-galaxy spread: the interval is that of the 0.02 scatter, around -0.1
    low, high = out.loc["b", "ssim_diff_low"], out.loc["b", "ssim_diff_high"]
    assert low < -0.1 < high and high - low < 0.02
    assert np.isnan(out.loc["failed", "ssim_diff"]) and np.isnan(out.loc["failed", "ssim_mean"])
    # smaller is better for MSE: the best is the smallest
    per["mse"] = 1 - per["ssim"]
    assert lb.paired_bootstrap(per, "mse", False, np.random.default_rng(2))["mse_best"].iloc[0] == "a"
    # the same seed, the same interval
    again = lb.paired_bootstrap(per, "ssim", True, np.random.default_rng(2), 2000, 0.95).set_index("method")
    assert again.loc["b", "ssim_diff_low"] == low


def test_leaderboard_figure():
    from sourcelens.plots import leaderboard_figure

    rng = np.random.default_rng(0)
    per = pd.DataFrame({"galaxy": np.tile(np.arange(8), 2), "method": np.repeat(["a", "b"], 8),
                        "kind": np.tile(["cosmos", "parametric"] * 4, 2), "lens": "true",
                        "ssim": rng.uniform(0.3, 0.9, 16), "seconds": 0.1, "chi2_nu": rng.uniform(1, 5, 16),
                        "chi2_nu_true_source": 1.0})
    per["mse"] = (1 - per["ssim"]) / 10
    per["psnr"] = 10 * np.log10(1 / per["mse"])
    fig = leaderboard_figure(lb.leaderboard_table(per, rng, 100))
    assert len(fig.axes) == 3 and fig.axes[2].get_xscale() == "log"
