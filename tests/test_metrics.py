"""Image metrics against known cases."""

from __future__ import annotations

import logging
import math

import galsim
import numpy as np
import pandas as pd
import pytest

from sourcelens import metrics
from sourcelens.selection import select_examples


def _gaussian(g1=0.0, g2=0.0, sigma=3.0, n=64):
    return galsim.Gaussian(sigma=sigma).shear(g1=g1, g2=g2).drawImage(nx=n, ny=n, scale=1.0).array.astype(float)


def test_identical_images():
    img = _gaussian(0.1, 0.05)
    m = metrics.image_metrics(img, img, sigma=0.01, n_params=3)
    assert m["mse"] == 0 and m["ssim"] == pytest.approx(1.0) and math.isinf(m["psnr"])
    assert m["peak_rel_error"] == 0 and m["flux_rel_error"] == 0
    assert m["ellipticity_error"] == 0 and m["chi2"] == 0 and m["chi2_nu"] == 0


def test_known_errors():
    img = _gaussian()
    model = 1.1 * img
    assert metrics.flux_rel_error(img, model) == pytest.approx(0.1)
    assert metrics.peak_rel_error(img, model) == pytest.approx(0.1)
    assert metrics.mse(img, model) == pytest.approx(np.mean((0.1 * img) ** 2))
    rng = img.max() - img.min()
    assert metrics.psnr(img, model) == pytest.approx(10 * np.log10(rng**2 / metrics.mse(img, model)))
    assert metrics.ssim(img, img + np.random.default_rng(0).normal(0, 0.2 * rng, img.shape)) < 0.9


@pytest.mark.parametrize("g1, g2", [(0.2, -0.1), (0.0, 0.3), (-0.15, 0.0)])
def test_hsm_ellipticity_of_sheared_gaussian(g1, g2):
    e1, e2 = metrics.hsm_ellipticity(_gaussian(g1, g2))
    expected = galsim.Shear(g1=g1, g2=g2)  # distortion convention: e = (a²−b²)/(a²+b²)
    assert e1 == pytest.approx(expected.e1, abs=0.01)
    assert e2 == pytest.approx(expected.e2, abs=0.01)


def test_hsm_failure_is_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sourcelens.metrics"):
        e1, e2 = metrics.hsm_ellipticity(np.zeros((32, 32)), "blank")
    assert math.isnan(e1) and math.isnan(e2)
    assert "blank" in caplog.text


def test_chi2_nu():
    rng = np.random.default_rng(1)
    truth = _gaussian()
    data = truth + rng.normal(0, 0.01, truth.shape)
    assert metrics.reduced_chi2(data, truth, 0.01, n_params=0) == pytest.approx(1.0, abs=0.06)
    assert metrics.reduced_chi2(data, truth, 0.01, n_params=96) == pytest.approx(
        metrics.chi2(data, truth, 0.01) / (truth.size - 96))
    with pytest.raises(ValueError):
        metrics.reduced_chi2(data, truth, 0.01, n_params=truth.size)
    m = metrics.image_metrics(truth, truth, sigma=None)
    assert math.isnan(m["chi2"])


def test_batch_metrics_and_summarise():
    imgs = np.stack([_gaussian(sigma=s) for s in (2.0, 3.0, 4.0)])
    df = metrics.batch_metrics(imgs, imgs * np.array([1.0, 1.1, 0.9])[:, None, None], sigma=[0.01, 0.01, 0.02])
    assert list(df.columns) == list(metrics.METRIC_COLUMNS) and len(df) == 3
    s = metrics.summarise(df).set_index("metric")
    vals = df["flux_rel_error"].to_numpy()
    assert s.loc["flux_rel_error", "mean"] == pytest.approx(vals.mean())
    assert s.loc["flux_rel_error", "median"] == pytest.approx(np.median(vals))
    assert s.loc["flux_rel_error", "std"] == pytest.approx(vals.std(ddof=1))
    assert s.loc["flux_rel_error", "p16"] == pytest.approx(np.percentile(vals, 16))
    assert s.loc["flux_rel_error", "p84"] == pytest.approx(np.percentile(vals, 84))
    assert s.loc["psnr", "n"] == 2  # the identical pair's infinite PSNR is left out
    grouped = metrics.summarise(df.assign(method=["a", "a", "b"]), by="method")
    assert set(grouped["method"]) == {"a", "b"} and grouped.columns[0] == "method"


def test_select_examples_is_deterministic():
    meta = pd.DataFrame({"source_id": [f"k-{i:03d}" for i in (5, 3, 9, 1, 7, 3)],
                         "augmentation": ["original"] * 5 + ["rot90"]})
    idx = select_examples(meta, 3)
    assert list(meta.source_id[idx]) == ["k-001", "k-005", "k-009"]
    assert np.array_equal(idx, select_examples(meta, 3))
