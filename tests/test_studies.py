"""Published numbers beside computed ones (sourcelens.evaluate.studies), read from tables made by the functions
that make them in the workflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sourcelens.evaluate.cnn import STUDY_002_MSE, cnn_summary
from sourcelens.evaluate.delensing import delensing_summary
from sourcelens.evaluate.studies import STUDY_002_UNET, caption_table, published_vs_computed
from sourcelens.evaluate.super_resolution import STUDY_001, super_resolution_summary
from sourcelens.names import LENS_PARAMETERS


def _tables(tmp_path) -> tuple[dict, pd.DataFrame]:
    rng = np.random.default_rng(0)
    kinds = np.array(["cosmos", "parametric"] * 10)
    pred = pd.DataFrame({"source_id": [f"g{i}" for i in range(20)], "kind": kinds, "snr": 50.0})
    for name in LENS_PARAMETERS:
        true = rng.normal(0, 0.3, 20)
        err = np.where(kinds == "cosmos", 0.2, 0.1) * rng.standard_normal(20)
        pred[f"true_{name}"], pred[f"pred_{name}"] = true, true + err
        pred[f"sigma_{name}"], pred[f"z_{name}"] = 0.15, err / 0.15
    cnn = cnn_summary(pred, [0.3] * len(LENS_PARAMETERS))
    per_pair = pd.DataFrame([{"source_id": f"g{i}", "kind": k, "method": "U-Net", "mse": 0.002 + 0.001 * (k == "cosmos"),
                              "ssim": 0.9, "psnr": 27.0, "ssim_ceiling": np.nan, "ssim_fraction": np.nan}
                             for i, k in enumerate(kinds)])
    delensing = delensing_summary(per_pair)
    per_image = pd.DataFrame([{"set": s, "lens": "SIE", "noise": "noisy", "kind": k, "method": "lenssr_no_source",
                               "mse": 0.003, "ssim": 0.8 if s == "model_i" else 0.7, "psnr": 25.0}
                              for s, k in (("model_i", "sersic"), ("real", "cosmos")) for _ in range(3)])
    sr = super_resolution_summary(per_image)
    fits = pd.DataFrame({"kind": ["cosmos", "all"], "method": "decoder", "seconds_per_galaxy_median": [0.4, 0.3]})
    paths = {}
    for name, table in (("cnn_lens_params", cnn), ("delensing", delensing), ("super_resolution", sr),
                        ("fit_galaxies", fits)):
        paths[name] = tmp_path / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    return paths, pred


def test_published_beside_computed(tmp_path):
    paths, pred = _tables(tmp_path)
    table = published_vs_computed(paths)
    assert list(dict.fromkeys(table["study"])) == ["000", "001", "002"]
    row = table[table["quantity"] == "decoder fit of one galaxy [s]"].iloc[0]
    assert row["published"] == 7.0 and row["computed_real"] == 0.4 and row["computed_all"] == 0.3
    cnn = table[table["quantity"] == "CNN test MSE of theta_E"].iloc[0]
    assert cnn["published"] == STUDY_002_MSE["theta_E"] and cnn["better"] == "lower"
    # the MSE on the real galaxies alone, recovered from the table's R² and prior std
    real = pred[pred["kind"] == "cosmos"]
    assert cnn["computed_real"] == pytest.approx(((real["pred_theta_E"] - real["true_theta_E"]) ** 2).mean())
    assert cnn["computed_all"] == pytest.approx(((pred["pred_theta_E"] - pred["true_theta_E"]) ** 2).mean())
    unet = table[table["quantity"] == "U-Net source SSIM"].iloc[0]
    assert unet["published"] == STUDY_002_UNET["ssim"] and unet["computed_all"] == pytest.approx(0.9)
    assert table[table["quantity"] == "U-Net source MSE"].iloc[0]["computed_real"] == pytest.approx(0.003)
    sr = table[table["study"] == "001"]
    assert len(sr) == 3 * len(STUDY_001)
    done = sr[sr["quantity"] == "LensSR lenssr_no_source, SIE, with noise: SSIM"].iloc[0]
    assert done["computed_all"] == pytest.approx(0.8) and done["computed_real"] == pytest.approx(0.7)
    # variants this run did not make are NaN, not a number from elsewhere
    assert sr[sr["quantity"].str.contains("SIS")]["computed_all"].isna().all()
    with pytest.raises(ValueError, match="unknown tables"):
        published_vs_computed({"nope": tmp_path / "x.csv"})
    assert len(published_vs_computed({})) == 0


def test_caption_table_shows_what_this_run_computed(tmp_path):
    """Each study table's report caption shows its own rows: computed ones only, 4 significant digits, – for NaN;
    a table whose variants the run did not make says so in one row."""
    paths, _ = _tables(tmp_path)
    cap = caption_table(published_vs_computed({"super_resolution": paths["super_resolution"]}))
    assert list(cap.columns) == ["quantity", "published", "this run, real galaxies", "this run, all kinds", "better"]
    assert len(cap) == 3 and cap["quantity"].str.contains("lenssr_no_source, SIE, with noise").all()   # SSIM, PSNR, MSE
    assert set(cap["this run, all kinds"]) == {"0.8", "25", "0.003"}
    fit = caption_table(published_vs_computed({"fit_galaxies": paths["fit_galaxies"]}))
    assert fit.iloc[0].tolist() == ["decoder fit of one galaxy [s]", "7", "0.4", "0.3", "lower"]
    rows = published_vs_computed({"delensing": paths["delensing"]})
    rows.loc[rows["quantity"] == "U-Net source SSIM", "computed_real"] = np.nan
    assert caption_table(rows).set_index("quantity").loc["U-Net source SSIM", "this run, real galaxies"] == "–"
    none = rows.assign(computed_real=np.nan, computed_all=np.nan)
    assert caption_table(none)["quantity"].tolist() == ["not computed by this run's config"]
