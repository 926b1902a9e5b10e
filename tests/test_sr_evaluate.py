"""Super-resolution evaluation (studies 001 and 004): metrics on known answers, the summary's layout and order,
study 001's rows, the PISR ablation table, the config block, the evaluation of models on a test file and the
figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.evaluate.super_resolution import (
    STUDY_001, evaluate_super_resolution, image_snr, pisr_ablation_summary, sr_metrics, super_resolution_summary,
)
from sourcelens.io import write_dataset
from sourcelens.names import LENS_PARAMETERS, PISR_ABLATION

N_LR, SCALE, FACTOR = 16, 0.2, 2


def _blob(n: int, x0: float = 0.0, width: float = 3.0, amp: float = 4.0) -> np.ndarray:
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    return amp * np.exp(-((x - x0) ** 2 + y**2) / (2 * width**2))


def test_perfect_estimate_scores_mse_0_ssim_1():
    truth = _blob(32) + _blob(32, 6.0, 2.0, 1.0)
    out = sr_metrics(truth, truth.copy())
    assert out["mse"] == 0 and out["ssim"] == pytest.approx(1.0) and math.isinf(out["psnr"])


def test_metrics_on_the_truth_peak_scale():
    truth = _blob(32)                                    # peak 4 (at the centre of a 32-grid: just below)
    peak = truth.max()
    offset = 0.1 * peak                                  # a uniform error of 0.1 truth peaks
    out = sr_metrics(truth, truth + offset)
    assert out["mse"] == pytest.approx(0.01) and out["psnr"] == pytest.approx(20.0)
    # one normalisation for every method: scaling the pair leaves the metrics unchanged
    scaled = sr_metrics(7.0 * truth, 7.0 * (truth + offset))
    assert scaled == pytest.approx(out)
    # the estimate is not normalised on its own: a method off by a factor 2 is penalised
    assert sr_metrics(truth, 2 * truth)["mse"] == pytest.approx(np.mean((truth / peak) ** 2))
    with pytest.raises(ValueError, match="shape"):
        sr_metrics(truth, truth[:-1])
    with pytest.raises(ValueError, match="peak"):
        sr_metrics(np.zeros((16, 16)), np.zeros((16, 16)))


def test_snr_nan_for_noiseless_images():
    clean = np.stack([_blob(16), _blob(16)])
    sigma = np.stack([np.full((16, 16), 0.5), np.zeros((16, 16))])
    snr = image_snr(clean, sigma)
    assert snr[0] == pytest.approx(np.sqrt(np.sum((clean[0] / 0.5) ** 2))) and np.isnan(snr[1])


def _per_image(methods=("pisr", "bicubic", "supervised"), kinds=("parametric", "cosmos", "cosmos_fit")):
    rng = np.random.default_rng(0)
    rows = []
    for noise in ("noisy", "noiseless"):
        for method in methods:
            for i in range(6):
                rows.append({"set": "real", "lens": "SIE", "noise": noise, "index": i, "source_id": f"g{i}",
                             "kind": kinds[i % len(kinds)], "snr": 10.0 + i if noise == "noisy" else np.nan,
                             "method": method, "mse": rng.uniform(0, 0.01), "ssim": rng.uniform(0.5, 1),
                             "psnr": rng.uniform(20, 40),
                             "source_mse": rng.uniform() if method.startswith("pisr") else np.nan,
                             "source_ssim": rng.uniform() if method.startswith("pisr") else np.nan})
    return pd.DataFrame(rows)


def test_summary_real_galaxies_first_methods_in_order_and_study_rows():
    per = _per_image()
    table = super_resolution_summary(per)
    ours = table[table["origin"] == "sourcelens"]
    block = ours[(ours["noise"] == "noisy")]
    assert list(dict.fromkeys(block["kind"])) == ["cosmos", "cosmos_fit", "parametric", "all"]
    assert list(block[block["kind"] == "all"]["method"]) == ["bicubic", "supervised", "pisr"]
    assert list(dict.fromkeys(ours["noise"])) == ["noiseless", "noisy"]       # noise rows in order
    mine = per[(per["noise"] == "noisy") & (per["method"] == "pisr") & (per["kind"] == "cosmos")]
    row = block[(block["kind"] == "cosmos") & (block["method"] == "pisr")].iloc[0]
    assert row["n"] == len(mine)
    assert row["ssim_mean"] == pytest.approx(mine["ssim"].mean())
    assert row["ssim_std"] == pytest.approx(mine["ssim"].std(ddof=1))
    assert row["ssim_median"] == pytest.approx(mine["ssim"].median())
    assert row["source_mse_mean"] == pytest.approx(mine["source_mse"].mean())
    assert np.isnan(block[block["method"] == "bicubic"]["source_mse_mean"]).all()
    # study 001's table, transcribed exactly, beside ours
    study = table[table["origin"] == "study 001"]
    assert len(study) == len(STUDY_001) == 8 and set(study["set"]) == {"model_i"}
    sis_noisy = study[(study["lens"] == "SIS") & (study["noise"] == "noisy")].set_index("method")
    assert sis_noisy.loc["lenssr_no_source", "ssim_mean"] == 0.655
    assert sis_noisy.loc["lenssr_no_source", "psnr_mean"] == 24.082
    assert sis_noisy.loc["lenssr_with_source", "mse_mean"] == 0.00802
    sie = study[(study["lens"] == "SIE") & (study["noise"] == "poisson")].set_index("method")
    assert sie.loc["lenssr_with_source", "ssim_mean"] == 0.614 and sie.loc["lenssr_with_source", "ssim_std"] == 0.0535
    assert study["ssim_mean"].between(0.61, 0.70).all() and study["psnr_mean"].between(21.9, 25.2).all()
    assert study["mse_mean"].between(0.0039, 0.0095).all()
    # ablation variants stay out of the main table
    with_ablation = pd.concat([per, _per_image(methods=tuple(PISR_ABLATION))])
    assert set(super_resolution_summary(with_ablation)["method"]) <= {"bicubic", "supervised", "pisr",
                                                                     "lenssr_with_source", "lenssr_no_source"}


def test_pisr_ablation_table():
    table = pisr_ablation_summary(_per_image(methods=tuple(PISR_ABLATION)))
    block = table[(table["kind"] == "all") & (table["noise"] == "noisy")]
    assert list(block["loss"]) == ["χ² alone", "+ TV", "+ convergence mask", "+ magnification weighting"]
    assert block["source_mse_mean"].notna().all()


def test_config_block():
    from sourcelens.config import ConfigError, check_config, sr_method_config, validate_config
    from sourcelens.train.sr import DEFAULTS

    cfg = check_config({})
    sr = cfg["super_resolution"]
    assert sr["sets"] == list(cfg["simulate"]["sr"]["sets"]) and sr["lens_models"] == ["SIS", "SIE"]
    for method, defaults in DEFAULTS.items():            # the schema's defaults are the trainer's
        assert validate_config({})["super_resolution"][method] == defaults, method
    method, settings = sr_method_config(sr, "pisr_chi2")
    assert method == "pisr" and settings["tv_weight"] == 0 and not settings["mask"]
    assert sr_method_config(sr, "pisr_tv_mask_magnification")[1]["magnification"] is True
    assert sr_method_config(sr, "pisr_tv")[1]["tv_weight"] == sr["pisr"]["tv_weight"]
    with pytest.raises(ConfigError, match="bicubic"):
        sr_method_config(sr, "bicubic")
    with pytest.raises(ConfigError) as err:          # every problem named at once
        check_config({"super_resolution": {"sets": ["nope"], "noise_variants": ["poisson"], "pisr_ablation": True,
                                           "pisr": {"tv_weight": 0.0}}})
    for key in ("super_resolution/sets", "super_resolution/noise_variants", "super_resolution/pisr/tv_weight"):
        assert key in str(err.value), key
    with pytest.raises(ConfigError, match="loss"):
        check_config({"super_resolution": {"pisr": {"stages": [{"loss": "mse", "epochs": 1}]}}})


def _write_test_set(path, n: int = 3, kinds=("parametric", "cosmos", "parametric")) -> str:
    """A small SR test file (no PSF): lensed Gaussian blobs on the fine grid, block-summed, with noise."""
    from sourcelens.lensing import LensingSimulator

    rng = np.random.default_rng(3)
    sim = LensingSimulator(N_LR * FACTOR, SCALE / FACTOR, supersample=1)
    params = np.zeros((n, len(LENS_PARAMETERS)))
    params[:, 0], params[:, 1], params[:, 2] = 0.7, 2.0, 0.05
    kw_lens = {"theta_E": torch.full((n,), 0.7), "e1": torch.full((n,), 0.05), "e2": torch.zeros(n),
               "center_x": torch.zeros(n), "center_y": torch.zeros(n)}
    kw_src = {"amp": torch.full((n,), 10.0), "R_sersic": torch.full((n,), 0.3), "n_sersic": torch.ones(n),
              "e1": torch.zeros(n), "e2": torch.zeros(n), "center_x": torch.as_tensor(rng.uniform(-0.1, 0.1, n)),
              "center_y": torch.zeros(n)}
    hr = sim.image(["SIE"], [kw_lens], ["SERSIC_ELLIPSE"], [kw_src]).numpy()
    lr = hr.reshape(n, N_LR, FACTOR, N_LR, FACTOR).sum((2, 4))
    sigma = 0.05 * lr.max((1, 2), keepdims=True) * np.ones_like(lr)
    source = np.stack([_blob(N_LR * FACTOR, 0.0, 3.0, 1.0)] * n)
    arrays = {"low_res": (lr + rng.normal(size=lr.shape) * sigma).astype(np.float32),
              "low_res_noiseless": lr.astype(np.float32), "high_res": hr.astype(np.float32),
              "noise_sigma": sigma.astype(np.float32), "source_high_res": source.astype(np.float32),
              "lens_params": params.astype(np.float32)}
    attrs = {"lens_model": "SIE", "factor": FACTOR, "low_res_num_pix": N_LR, "low_res_pixel_scale_arcsec": SCALE,
             "high_res_pixel_scale_arcsec": SCALE / FACTOR, "psf": {"type": "NONE"}}
    meta = pd.DataFrame({"source_id": [f"s{i}" for i in range(n)], "kind": list(kinds)[:n]})
    write_dataset(path, arrays, meta, kind="sr", attrs=attrs)
    return str(path)


def test_every_method_on_the_same_test_images(tmp_path):
    from sourcelens import plots
    from sourcelens.models import PISR, SISR, save_pisr, save_sisr

    test = _write_test_set(tmp_path / "test.h5")
    torch.manual_seed(0)
    supervised = SISR(factor=FACTOR, width=4, depth=1)       # untrained, bicubic skip: bicubic upsampling exactly
    save_sisr(supervised, tmp_path / "supervised.pt", extra={"method": "supervised"})
    save_pisr(PISR(factor=FACTOR, sisr={"width": 4, "depth": 1}), tmp_path / "pisr.pt")
    key = ("SIE", "noisy")
    result = evaluate_super_resolution({key: test}, {"bicubic": {key: None},
                                                      "supervised": {key: tmp_path / "supervised.pt"},
                                                      "pisr": {key: tmp_path / "pisr.pt"},
                                                      "pisr_chi2": {key: tmp_path / "pisr.pt"}},
                                       set_name="toy", n_examples=2)
    per = result.per_image.query("method != 'pisr_chi2'")
    assert len(per) == 3 * 3 and list(pd.unique(per["method"])) == ["bicubic", "supervised", "pisr"]
    # an ablation variant is scored as its network was trained: the same file, without PISR's refinement
    ablation = result.per_image.query("method == 'pisr_chi2'").set_index("index")
    pisr = per.query("method == 'pisr'").set_index("index")
    assert not np.allclose(ablation["ssim"], pisr["ssim"])
    assert all(list(v) == [0, 1, 2] for v in per.groupby("method")["index"].apply(list))   # the same images
    by = per.set_index(["method", "index"])
    assert np.allclose(by.loc["supervised", "ssim"], by.loc["bicubic", "ssim"], atol=1e-5)
    assert by.loc["pisr", "source_ssim"].notna().all() and by.loc["bicubic", "source_ssim"].isna().all()
    assert per["snr"].gt(0).all() and per["ssim"].between(-1, 1).all()
    ex = result.examples[key]
    assert per.loc[per["index"] == ex["rows"][0], "kind"].iloc[0] == "cosmos"      # real galaxies first
    assert set(ex["estimates"]) == {"bicubic", "supervised", "pisr", "pisr_chi2"} and ex["truth"].shape[-1] == N_LR * FACTOR

    fig = plots.sr_noise_limit(per)
    assert len(fig.axes) == 2
    examples = [{"low_res": ex["low_res"][k], "truth": ex["truth"][k], "pixel_scale": SCALE, "factor": FACTOR,
                 "label": ex["labels"][k], "estimates": {m: v[k] for m, v in ex["estimates"].items()}}
                for k in range(len(ex["rows"]))]
    fig = plots.sr_method_examples(examples, metrics=[{"pisr": 0.5}] * len(examples))
    assert len(fig.axes) >= 2 * len(examples) * (3 + 2)
    with pytest.raises(ValueError, match="no examples"):
        plots.sr_method_examples([])
