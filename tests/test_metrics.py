"""Image metrics against known cases."""

from __future__ import annotations

import logging
import math

import galsim
import numpy as np
import pandas as pd
import pytest

from sourcelens import metrics
from sourcelens.selection import first_originals, select_examples


def _gaussian(g1=0.0, g2=0.0, sigma=3.0, n=64):
    return galsim.Gaussian(sigma=sigma).shear(g1=g1, g2=g2).drawImage(nx=n, ny=n, scale=1.0).array.astype(float)


def test_identical_images():
    img = _gaussian(0.1, 0.05)
    m = metrics.image_metrics(img, img, sigma=0.01, n_params=3)
    assert m["mse"] == 0 and m["ssim"] == pytest.approx(1.0) and math.isinf(m["psnr"])
    assert m["peak_rel_error"] == 0 and m["flux_rel_error"] == 0
    assert m["ellipticity_error"] == 0 and m["chi2"] == 0 and m["chi2_nu"] == 0 and np.isnan(m["ssim_truth"])


def test_known_errors():
    img = _gaussian()
    model = 1.1 * img
    assert metrics.flux_rel_error(img, model) == pytest.approx(0.1)
    assert metrics.peak_rel_error(img, model) == pytest.approx(0.1)
    assert metrics.mse(img, model) == pytest.approx(np.mean((0.1 * img) ** 2))
    # PSNR of a known error: range² / MSE in dB (range = peak, the background is 0 to 1e-7)
    expected = 10 * np.log10(img.max() ** 2 / np.mean((0.1 * img) ** 2))
    assert metrics.psnr(img, model) == pytest.approx(expected, abs=1e-4)
    noisy = img + np.random.default_rng(0).normal(0, 0.2 * img.max(), img.shape)
    assert metrics.ssim(img, noisy) < 0.9


def test_psnr_and_ssim_against_scikit_image():
    """PSNR is scikit-image's with the true image's range; SSIM is scikit-image's Gaussian-window SSIM
    (Wang et al. 2004), not its 7×7 uniform default."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(3)
    true = _gaussian(0.1, 0.05) - 0.01
    for model in (true + rng.normal(0, 0.01, true.shape), 0.8 * true, np.roll(true, 2, axis=1)):
        span = true.max() - true.min()
        assert metrics.psnr(true, model) == pytest.approx(peak_signal_noise_ratio(true, model, data_range=span))
        gauss = structural_similarity(true, model, data_range=span, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
        assert metrics.ssim(true, model) == pytest.approx(gauss, rel=1e-12)
    # ... which differs from the default convention (noise is judged on 7×7 uniform windows there)
    assert metrics.ssim(true, noisy := true + rng.normal(0, 0.1 * span, true.shape)) != pytest.approx(
        structural_similarity(true, noisy, data_range=span), rel=1e-2)
    with pytest.raises(ValueError, match="SSIM window"):
        metrics.ssim(true[:8, :8], true[:8, :8])


def test_torch_ssim_is_the_table_ssim():
    """The training loss's SSIM (torch, differentiable) gives the tables' numbers for data range 1."""
    import torch

    rng = np.random.default_rng(3)
    clean = np.stack([_gaussian(sigma=s, n=32) for s in (2.0, 3.0, 4.0, 5.0)])
    clean /= clean.max(axis=(1, 2), keepdims=True)
    noisy = clean + rng.normal(scale=[[[0.01]], [[0.05]], [[0.2]], [[0.0]]], size=clean.shape)
    for a, b in ((clean, noisy), (clean, clean[::-1].copy()), (noisy, np.roll(clean, 3, axis=-1))):
        ours = metrics.ssim_torch(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]).numpy()
        ref = [metrics.ssim(a[i], b[i], data_range=1.0) for i in range(len(a))]
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-8)
    x = torch.from_numpy(noisy[:2, None]).float().requires_grad_()
    metrics.ssim_torch(x, torch.from_numpy(clean[:2, None]).float()).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_chi2_of_simulated_noise_numpy_and_torch():
    """The one χ²: per image over the last two axes, numpy or torch alike; the simulation's noise model
    (Poisson + background) gives χ²/N ≈ 1 with its own sigma map."""
    import torch

    from sourcelens.simulate import add_noise

    rng = np.random.default_rng(1)
    model = np.full((3, 100, 100), 5.0)
    data, sigma = add_noise(model, {"exposure_time_s": 100.0, "background_rms": 0.5, "poisson": True}, rng)
    np.testing.assert_allclose(sigma, np.sqrt(0.25 + 5.0 / 100.0))
    c2 = metrics.chi2(data, model, sigma)
    assert c2.shape == (3,) and np.all(np.abs(c2 / 1e4 - 1) < 0.05)
    ct = metrics.chi2(torch.from_numpy(data), torch.from_numpy(model), torch.from_numpy(sigma))
    np.testing.assert_allclose(ct.numpy(), c2, rtol=1e-12)
    assert isinstance(metrics.chi2(data[0], model[0], sigma[0]), float)


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
    # with kinds: every kind shown, real galaxies first, however few they are
    meta = pd.DataFrame({"source_id": [f"parametric-{i:02d}" for i in range(40)] + ["cosmos-1", "cosmos-2"]
                         + [f"cosmos_fit-{i}" for i in range(5)], "augmentation": "original"})
    meta["kind"] = meta["source_id"].str.split("-").str[0]
    picked = list(meta.source_id[select_examples(meta, 8)])
    assert picked[:2] == ["cosmos-1", "cosmos-2"] and sum(p.startswith("cosmos_fit") for p in picked) == 3
    assert sum(p.startswith("parametric") for p in picked) == 3 and picked[-1] == "parametric-39"


def test_ssim_ceiling_with_correlated_noise():
    """Drizzled HST noise is correlated (ρ ≈ 0.5 between neighbours): the ceiling measured with the stamp's own
    noise correlation is what the perfect model scores; the white-noise ceiling would overstate it, and
    the correlation is measured back from data − model on the background."""
    from scipy.ndimage import gaussian_filter

    truth = _gaussian(0.2, 0.1)
    truth /= truth.max()
    sigma = 0.08
    rng = np.random.default_rng(5)
    scores = []
    for _ in range(12):
        noise = gaussian_filter(rng.standard_normal(truth.shape), 0.8, mode="wrap")
        noise *= sigma / noise.std()
        scores.append(metrics.ssim(truth + noise, truth))
    data = truth + noise
    rho = metrics.stamp_noise_correlation(data, truth, sigma)
    assert rho[3, 3] == 1.0 and 0.4 < rho[3, 4] < 0.8 and 0.4 < rho[4, 3] < 0.8 and abs(rho[0, 0]) < 0.1
    white = metrics.ssim_noise_ceiling(truth, sigma, np.random.default_rng(1), draws=12)
    correlated = metrics.ssim_noise_ceiling(truth, sigma, np.random.default_rng(1), draws=12, correlation=rho)
    assert correlated == pytest.approx(np.mean(scores), rel=0.05)
    assert white > 1.1 * np.mean(scores)
    m = metrics.image_metrics(data, truth, sigma=sigma, ceiling_rng=np.random.default_rng(2), ceiling_draws=12)
    # image_metrics measures the correlation, and uses the data's range (the constants of the SSIM it divides)
    assert m["ssim_ceiling"] == pytest.approx(metrics.ssim_noise_ceiling(
        truth, sigma, np.random.default_rng(2), draws=12, correlation=rho, data_range=float(np.ptp(data))))
    # white noise is measured as white: the ceiling is the white one
    white_rho = metrics.stamp_noise_correlation(truth + rng.normal(0, sigma, truth.shape), truth, sigma)
    assert np.abs(white_rho - np.eye(7)[3][:, None] * np.eye(7)[3][None, :]).max() < 0.1


def test_a_model_missing_the_galaxy_stays_below_its_ceiling():
    """A flat model of a faint galaxy must not score above its noise ceiling (the ceiling shares the data's
    SSIM constants)."""
    truth = _gaussian(0.0, 0.0, sigma=2.0, n=32)
    truth /= truth.max()
    data = truth + np.random.default_rng(0).normal(0, 0.15, truth.shape)
    flat = np.full_like(truth, truth.mean())
    m = metrics.image_metrics(data, flat, sigma=0.15, ceiling_rng=np.random.default_rng(1))
    assert m["ssim_fraction"] < 1.0


def test_first_originals_takes_every_kind_in_turn():
    """Fits take galaxies of every kind (real first), not the first n in id order (all of one kind); originals
    only, the same whatever the row order; non-linear stamps skipped when asked."""
    ids = [f"parametric-{i}" for i in range(6)] + [f"cosmos_fit-{i}" for i in range(2)] + ["cosmos-1", "cosmos-0"]
    meta = pd.DataFrame({"source_id": ids + ["xdf-0", "cosmos-0"],
                         "kind": [i.split("-")[0] for i in ids] + ["xdf", "cosmos"],
                         "augmentation": ["original"] * 11 + ["rot90"],
                         "flux_linear": [True] * 10 + [False, True]})
    picked = list(meta.source_id[first_originals(meta, 7, linear_only=True)])
    assert picked == ["cosmos-0", "cosmos-1", "cosmos_fit-0", "cosmos_fit-1",
                      "parametric-0", "parametric-1", "parametric-2"]
    shuffled = meta.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert list(shuffled.source_id[first_originals(shuffled, 7, linear_only=True)]) == picked
    assert "xdf-0" in set(meta.source_id[first_originals(meta, 11)])
    assert len(first_originals(meta, None, linear_only=True)) == 10


def test_ssim_noise_ceiling_is_what_a_perfect_model_scores():
    """A perfect (noiseless) model of noisy data scores the ceiling, not 1: the ceiling falls with the noise,
    is 1 without noise, and ssim_fraction judges the model against it."""
    truth = _gaussian(0.2, 0.1)
    truth /= truth.max()
    rng = np.random.default_rng(4)
    ceilings = [metrics.ssim_noise_ceiling(truth, s, np.random.default_rng(1), draws=8) for s in (0.0, 0.02, 0.1)]
    assert ceilings[0] == 1.0 and 1 > ceilings[1] > ceilings[2] > 0
    data = truth + rng.normal(0, 0.1, truth.shape)
    m = metrics.image_metrics(data, truth, sigma=0.1, truth=truth, ceiling_rng=np.random.default_rng(2), ceiling_draws=16)
    assert m["ssim"] == pytest.approx(m["ssim_ceiling"], rel=0.05)      # the perfect model reaches the ceiling
    assert m["ssim_fraction"] == pytest.approx(1.0, abs=0.05) and m["ssim"] < 0.9
    assert m["chi2_nu"] == pytest.approx(1.0, abs=0.06)
    assert m["ssim_truth"] == pytest.approx(1.0) and m["mse_truth"] == 0 and m["ellipticity_error_truth"] == 0
    shifted = metrics.image_metrics(data, np.roll(truth, 6, 1), sigma=0.1, truth=truth,
                                    ceiling_rng=np.random.default_rng(2))     # the galaxy in the wrong place
    assert shifted["ssim_fraction"] < 0.9 and shifted["ssim_truth"] < 0.9 and shifted["chi2_nu"] > 1.5
    unknown = metrics.image_metrics(data, truth, sigma=0.1, truth=np.full_like(truth, np.nan))
    assert np.isnan(unknown["ssim_truth"]) and np.isnan(unknown["ssim_ceiling"])


def test_by_kind_leads_with_real_galaxies():
    per = pd.DataFrame({"kind": ["parametric", "cosmos", "cosmos", "cosmos_fit", "cosmos"],
                        "snr": [50.0, 20.0, 400.0, 900.0, 250.0], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = metrics.by_kind(per, lambda rows: pd.DataFrame({"n": [len(rows)], "x": [rows["x"].mean()]}), 200.0)
    assert out["kind"].tolist() == ["cosmos", "cosmos_fit", "parametric", "cosmos S/N≥200", "cosmos_fit S/N≥200", "all"]
    assert out.set_index("kind").loc["cosmos S/N≥200", "n"] == 2 and out.set_index("kind").loc["all", "n"] == 5
    assert out.columns[0] == "kind"
