"""Study 003: the multi-band β-VAE, the latent-space deblender, their training with the staged machinery, the
shear-bias regression, the sep baseline and the evaluation end to end on tiny synthetic blend files."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.io import write_dataset
from sourcelens.metrics import binned_statistics, bootstrap_error, shear_bias
from sourcelens.models.deblender import (BandVAE, Deblender, deblend_images, load_band_vae, load_deblender,
                                         reconstruct_bands, save_band_vae, save_deblender)
from sourcelens.train.deblend import (LatentModule, deblend_settings, init_sigmoid_bias, train_band_vae,
                                      train_deblender)

BANDS = ["u", "g", "r", "i", "z", "y"]


def _normalise(images, scales):
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 1, 1) / 2.5
    return np.tanh(np.arcsinh(np.asarray(images) / s))


def _denormalise(images, scales):
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 1, 1) / 2.5
    return np.sinh(np.arctanh(np.asarray(images))) * s


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and robust to other jobs on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def blend_normalisation(monkeypatch):
    """sourcelens.blends.normalise/denormalise (written by the blend simulation): stand-ins while absent."""
    try:
        import sourcelens.blends as blends
        if hasattr(blends, "normalise") and hasattr(blends, "denormalise"):
            return
    except Exception:
        pass
    module = types.ModuleType("sourcelens.blends")
    module.normalise, module.denormalise = _normalise, _denormalise
    monkeypatch.setitem(sys.modules, "sourcelens.blends", module)


def _gaussian(size, x0, y0, flux, sigma, e1=0.0, e2=0.0):
    y, x = np.mgrid[:size, :size].astype(float)
    dx, dy = x - x0, y - y0
    # sheared Gaussian: quadratic form of a distortion (e1, e2)
    q = ((1 - e1) * dx**2 + (1 + e1) * dy**2 - 2 * e2 * dx * dy) / np.sqrt(max(1 - e1**2 - e2**2, 1e-3))
    img = np.exp(-0.5 * q / sigma**2)
    return flux * img / img.sum()


def write_blend_file(path, n=12, size=32, blended=True, seed=0, bands=BANDS):
    """A tiny blend file in the layout of rule simulate_blends (contract of study 003)."""
    rng = np.random.default_rng(seed)
    b = len(bands)
    colours = np.linspace(0.6, 1.4, b)
    sigma_noise = np.full((n, b), 0.5, np.float32)
    iso = np.zeros((n, b, size, size), np.float32)
    scene = np.zeros_like(iso)
    meta = {k: [] for k in ("blend_id", "source_id", "kind", "n_galaxies", "blendedness",
                            "neighbour_distance_arcsec", "neighbour_mag_r")}
    mags = {f"mag_{band}": [] for band in bands}
    snrs = {f"snr_{band}": [] for band in bands}
    c = (size - 1) / 2
    for i in range(n):
        flux = rng.uniform(200, 2000)
        e1, e2 = rng.uniform(-0.3, 0.3, 2)
        width = rng.uniform(1.5, 3.0)
        for k in range(b):
            iso[i, k] = _gaussian(size, c, c, flux * colours[k], width, e1, e2)
        scene[i] = iso[i]
        dist = np.nan
        if blended:
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(7, 11)
            for k in range(b):
                scene[i, k] += _gaussian(size, c + dist * np.cos(ang), c + dist * np.sin(ang),
                                         rng.uniform(100, 1500) * colours[k], 2.0)
        noisy = scene[i] + rng.normal(0, 0.5, scene[i].shape)
        scene[i] = noisy
        meta["blend_id"].append(f"b{seed}_{i}")
        meta["source_id"].append(f"s{seed}_{i}")
        meta["kind"].append("cosmos" if i % 2 else "parametric")
        meta["n_galaxies"].append(2 if blended else 1)
        overlap = float(np.sum(iso[i, 2] * (scene[i, 2] - iso[i, 2]).clip(0)) / np.sum(iso[i, 2] ** 2))
        meta["blendedness"].append(overlap if blended else 0.0)
        meta["neighbour_distance_arcsec"].append(dist * 0.2)
        meta["neighbour_mag_r"].append(25.0 if blended else np.nan)
        for k, band in enumerate(bands):
            mags[f"mag_{band}"].append(30.0 - 2.5 * np.log10(iso[i, k].sum()))
            snrs[f"snr_{band}"].append(float(iso[i, k].sum() / (0.5 * np.sqrt(4 * np.pi * width**2))))
    meta_df = pd.DataFrame({**meta, **mags, **snrs})
    attrs = {"bands": list(bands), "pixel_scale_arcsec": 0.2, "normalisation_scale": [50.0] * b,
             "zero_point": {band: 30.0 for band in bands}, "exposure_time_s": {band: 1.0 for band in bands},
             "native_pixel_scale_arcsec": {band: 0.2 for band in bands},
             "psf": {band: {"profile": "gaussian", "fwhm_arcsec": 0.7} for band in bands}}
    write_dataset(path, {"blend": scene, "isolated": iso, "noise_sigma": sigma_noise}, meta_df, kind="blends",
                  attrs=attrs)
    return path


@pytest.fixture(scope="module")
def blend_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("blends")
    files = {}
    for sample, blended in (("isolated", False), ("blended", True)):
        for split, n, seed in (("train", 24, 1), ("val", 8, 2), ("test", 10, 3)):
            files[sample, split] = write_blend_file(root / f"blends_lsst_{sample}_{split}.h5", n=n,
                                                    blended=blended, seed=seed + 10 * blended)
    return files


def test_shapes_and_save_load(tmp_path):
    vae = BandVAE(bands=6, image_size=64, widths=(8, 16, 32, 64), latent_dim=32)
    x = torch.rand(2, 6, 64, 64)
    with torch.no_grad():
        recon, mu, logvar = vae.eval()(x)
    assert recon.shape == x.shape and mu.shape == (2, 32) and logvar.shape == (2, 32)
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    deb = Deblender.from_vae(vae)
    assert deb(torch.rand(3, 6, 64, 64))[0].shape == (3, 6, 64, 64)
    assert BandVAE(bands=10)(torch.rand(1, 10, 64, 64))[0].shape == (1, 10, 64, 64)   # the study's widths
    with pytest.raises(ValueError, match="divisible"):
        BandVAE(image_size=60, widths=(8, 16, 32))
    norm = {"bands": BANDS, "scales": [1.0] * 6}
    save_band_vae(vae, tmp_path / "vae.pt", norm)
    save_deblender(deb, tmp_path / "deb.pt", norm)
    v2, d2 = load_band_vae(tmp_path / "vae.pt"), load_deblender(tmp_path / "deb.pt")
    assert v2.extra["normalisation"]["bands"] == BANDS
    assert torch.allclose(v2(x)[0], vae(x)[0]) and torch.allclose(d2(x)[0], deb.eval()(x)[0])
    assert not any(p.requires_grad for p in d2.decoder.parameters())
    with pytest.raises(ValueError, match="not a sourcelens deblender"):
        load_deblender(tmp_path / "vae.pt")
    with pytest.raises(ValueError, match=r"\(N, 6, 64, 64\)"):
        reconstruct_bands(v2, np.zeros((1, 5, 64, 64), np.float32))


def _small_vae(bands=3, size=16):
    torch.manual_seed(0)
    return BandVAE(bands=bands, image_size=size, widths=(8, 16), latent_dim=8, hidden_dim=32)


def test_gradient_step_changes_weights():
    vae = _small_vae()
    module = LatentModule(vae, loss="mse", beta=0.01)
    x, y = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    before = [p.detach().clone() for p in vae.parameters()]
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    out = module.compute_loss(x, y)
    assert set(out) == {"loss", "recon", "kl", "mse"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))


def test_bce_loss_is_zero_at_the_target_and_trains_through_the_sigmoid():
    from sourcelens.train.deblend import bce_loss

    t = torch.rand(3, 2, 8, 8) * 0.9
    assert torch.allclose(bce_loss(torch.logit(t), t), torch.zeros(3), atol=1e-3)
    logits = torch.full((1, 1, 4, 4), -12.0, requires_grad=True)    # a saturated sigmoid
    bce_loss(logits, torch.full((1, 1, 4, 4), 0.5)).sum().backward()
    assert torch.allclose(logits.grad, torch.full_like(logits, -0.5), atol=1e-4)   # p − t, not vanishing


def test_overfits_a_tiny_batch():
    vae = _small_vae()
    y = torch.stack([torch.as_tensor(_normalise(np.stack([_gaussian(16, 7.5, 7.5, 300 * (k + 1), 1.5 + i * 0.4)
                                                           for k in range(3)]), [50.0] * 3), dtype=torch.float32)
                     for i in range(4)])
    init_sigmoid_bias(vae, float(y.mean()))
    module = LatentModule(vae, loss="mse", beta=0.0)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    vae.train()
    with torch.no_grad():
        first = float(module.compute_loss(y, y)["recon"])
    for _ in range(150):
        opt.zero_grad()
        module.compute_loss(y, y)["loss"].backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        assert float(module.compute_loss(y, y)["recon"]) < 0.05 * first


def _elongated(size: int, e1: float, e2: float, sigma: float = 2.5) -> np.ndarray:
    """A Gaussian of ellipticity (e1, e2) (distortion) centred on the stamp."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    a = np.array([[1 + e1, e2], [e2, 1 - e1]]) * sigma**2      # second moments
    inv = np.linalg.inv(a)
    return np.exp(-0.5 * (inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y))


def test_vae_learns_shapes_not_just_the_mean_galaxy():
    """The regression test of a VAE that reproduced flux and size but returned round galaxies whatever their
    shape (PyTorch's default initialisation left the decoder deaf to the latent code): a small VAE trained briefly
    as an autoencoder on Gaussians of random ellipticity gives ellipticities that follow the input's."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    e = rng.uniform(-0.5, 0.5, size=(96, 2))
    y = torch.as_tensor(np.stack([_elongated(16, a, b)[None] for a, b in e]) * 0.9, dtype=torch.float32)
    vae = BandVAE(bands=1, image_size=16, widths=(8, 16), latent_dim=8, hidden_dim=32)
    init_sigmoid_bias(vae, float(y.mean()))
    module = LatentModule(vae, loss="bce", beta=1e-2, input="noiseless")
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    vae.train()
    noise = torch.randn_like(y)   # the noiseless stage never looks at its input
    for step in range(300):
        idx = torch.randint(0, len(y), (16,))
        opt.zero_grad()
        module.compute_loss(noise[idx], y[idx])["loss"].backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        out = vae(y)[0][:, 0].numpy()
    from sourcelens.fit.common import image_moments

    truth = image_moments(y[:, 0].numpy())["e1"]
    slope = np.polyfit(truth, image_moments(out)["e1"], 1)[0]
    assert slope > 0.6, slope


def test_noiseless_stage_feeds_the_target():
    torch.manual_seed(0)
    vae = _small_vae().eval()
    t = torch.rand(2, 3, 16, 16) * 0.5
    x = torch.rand(2, 3, 16, 16)
    noiseless = LatentModule(vae, loss="bce", beta=0.0, input="noiseless")
    noisy = LatentModule(vae, loss="bce", beta=0.0)
    assert torch.allclose(noiseless.compute_loss(x, t)["loss"], noisy.compute_loss(t, t)["loss"])
    assert not torch.allclose(noisy.compute_loss(x, t)["loss"], noisy.compute_loss(t, t)["loss"])
    with pytest.raises(ValueError, match="stage input"):
        LatentModule(vae, input="clean")


def test_deblender_starts_from_the_vae_with_a_frozen_decoder():
    vae = _small_vae()
    deb = Deblender.from_vae(vae)
    for a, b in zip(vae.encoder.state_dict().values(), deb.encoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(vae.decoder.state_dict().values(), deb.decoder.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in deb.decoder.parameters())
    assert all(p.requires_grad for p in deb.encoder.parameters())
    deb.train()
    assert not deb.decoder.training and deb.encoder.training
    module = LatentModule(deb, loss="mse", beta=0.0)
    opt = module.configure_optimizers()["optimizer"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in deb.encoder.parameters())
    dec_before = [p.detach().clone() for p in deb.decoder.parameters()]
    enc_before = [p.detach().clone() for p in deb.encoder.parameters()]
    loss = module.compute_loss(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))["loss"]
    loss.backward()
    assert all(p.grad is None for p in deb.decoder.parameters())
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(dec_before, deb.decoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(enc_before, deb.encoder.parameters()))
    # the VAE it came from is untouched
    for a, b in zip(vae.encoder.parameters(), enc_before):
        assert torch.equal(a, b)


def test_shear_bias_recovers_m_and_c_with_covering_errors():
    rng = np.random.default_rng(1)
    m_true, c_true, n = 0.03, 0.002, 300
    hits_m = hits_c = 0
    trials = 40
    for _ in range(trials):
        e = rng.normal(0, 0.25, n)
        out = (1 + m_true) * e + c_true + rng.normal(0, 0.02, n)
        fit = shear_bias(e, out, n_bootstrap=100, rng=rng)
        hits_m += abs(fit["m"] - m_true) < fit["m_err"]
        hits_c += abs(fit["c"] - c_true) < fit["c_err"]
    # 1σ intervals cover about 68 % of the time
    assert 0.5 <= hits_m / trials <= 0.9 and 0.5 <= hits_c / trials <= 0.9
    e = rng.normal(0, 0.25, 5000)
    fit = shear_bias(e, (1 + m_true) * e + c_true + rng.normal(0, 0.02, 5000), n_bootstrap=50, rng=rng)
    assert abs(fit["m"] - m_true) < 4 * fit["m_err"] and fit["m_err"] < 0.005 and fit["n"] == 5000
    analytic = 0.02 / (0.25 * np.sqrt(5000))
    assert 0.5 * analytic < fit["m_err"] < 2 * analytic
    # NaNs dropped, degenerate input gives NaN
    assert shear_bias([0.1, np.nan, 0.2, 0.3], [0.1, 0.5, 0.2, 0.3], 20)["n"] == 3
    assert np.isnan(shear_bias([0.1, 0.1, 0.1], [0.0, 0.1, 0.2])["m"])
    assert np.isfinite(bootstrap_error(rng.normal(size=50), np.median, 50, rng))


def test_binned_statistics():
    x = np.array([1, 2, 3, 10, 11, 12, np.nan])
    v = np.array([0.1, -0.1, 0.0, 1.0, 2.0, 3.0, 5.0])
    b = binned_statistics(x, v, [0, 5, 20, 30])
    assert list(b["n"]) == [3, 3, 0]
    assert b["median"].iloc[1] == 2.0 and np.isnan(b["median"].iloc[2])
    assert b["median_abs"].iloc[0] == pytest.approx(0.1)


def test_sep_returns_the_central_object_of_a_two_gaussian_blend():
    from sourcelens.evaluate.deblending import sep_central

    size, c = 48, 23.5
    rng = np.random.default_rng(3)
    central = np.stack([_gaussian(size, c, c, 1000.0 * (k + 1), 2.0) for k in range(3)])
    neighbour = np.stack([_gaussian(size, c + 12, c + 3, 1500.0, 2.0) for _ in range(3)])
    blend = central + neighbour + rng.normal(0, 0.3, central.shape)
    for mode in ("mask_neighbours", "segment"):
        out, found = sep_central(blend, [0.3] * 3, {"mode": mode})
        assert found
        assert np.allclose(out[:, 26:30, 34:38], 0.0)   # the neighbour's core is gone
        flux = out.sum(axis=(1, 2))
        assert np.allclose(flux, central.sum(axis=(1, 2)), rtol=0.08)
    # nothing near the centre: a counted failure, not the neighbour
    out, found = sep_central(neighbour + rng.normal(0, 0.3, neighbour.shape), [0.3] * 3)
    assert not found and np.isnan(out).all()


def test_train_and_evaluate_end_to_end(blend_files, tmp_path):
    from sourcelens.evaluate.deblending import evaluate_deblending
    from sourcelens.plots.deblending import deblending_examples, deblending_residuals, shear_bias_figure

    cfg = deblend_settings({
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "vae": {"widths": [4, 8], "latent_dim": 4, "hidden_dim": 16, "batch_size": 8,
                "stages": [{"loss": "mse", "epochs": 1}], "accelerator": "cpu"},
        "deblender": {"batch_size": 8, "stages": [{"loss": "mse", "epochs": 1}], "accelerator": "cpu"},
        "evaluate": {"n_bootstrap": 20, "n_examples": 2, "snr_bins": [0, 50, 1e9]},
    })
    vae = train_band_vae(blend_files["isolated", "train"], blend_files["isolated", "val"], cfg,
                         tmp_path / "vae.pt", tmp_path / "vae.csv", seed=1, band_set="lsst")
    deb = train_deblender(blend_files["blended", "train"], blend_files["blended", "val"], tmp_path / "vae.pt", cfg,
                          tmp_path / "deb.pt", tmp_path / "deb.csv", seed=1, band_set="lsst")
    assert pd.read_csv(tmp_path / "vae.csv").shape[0] == 1 and pd.read_csv(tmp_path / "deb.csv").shape[0] == 1
    assert deb.extra["normalisation"]["scales"] == [50.0] * 6
    assert torch.equal(deb.decoder.to_image.weight, vae.decoder.to_image.weight)   # decoder frozen in training
    # a rerun skips the finished stage
    again = train_band_vae(blend_files["isolated", "train"], blend_files["isolated", "val"], cfg,
                           tmp_path / "vae2.pt", tmp_path / "vae2.csv", seed=1, band_set="lsst")
    assert again.extra["training"]["stages"][0]["skipped"]
    out = deblend_images(load_deblender(tmp_path / "deb.pt"), np.zeros((2, 6, 32, 32), np.float32))
    assert out.shape == (2, 6, 32, 32) and np.all(np.isfinite(out))

    files = {"lsst": {"isolated": blend_files["isolated", "test"], "blended": blend_files["blended", "test"],
                      "vae": tmp_path / "vae.pt", "deblender": tmp_path / "deb.pt"}}
    result = evaluate_deblending(files, cfg["evaluate"], seed=1)
    per = result.per_galaxy
    assert set(per["method"]) == {"vae", "deblender", "sep", "blend"}
    assert (per.groupby("method").size() == 10).all()
    for col in ("e1_ksb", "de1_regauss", "dmag_r", "failed_ksb", "snr", "mag_true", "blendedness", "kind"):
        assert col in per
    truth = per[per["method"] == "blend"]
    assert np.isfinite(truth["e1_true_ksb"]).all() and np.isfinite(truth["mag_r_truth"]).all()
    assert np.allclose(truth["mag_r_truth"], 30 - 2.5 * np.log10(10 ** ((30 - truth["mag_r_truth"]) / 2.5)))
    sep_rows = per[per["method"] == "sep"]
    assert sep_rows["detected"].all() and np.nanmedian(np.abs(sep_rows["dmag_r"])) < 0.1
    table = result.table
    assert list(table["kind"].unique()[:1]) == ["cosmos"]   # real galaxies first
    for col in ("m1", "m1_err", "c2_err", "median_abs_de1", "median_abs_dmag_err", "n_failed", "study_m1"):
        assert col in table
    assert len(table) == 4 * 2 * 3   # methods × estimators × (cosmos, parametric, all)
    assert {"snr", "mag_true", "blendedness"} <= set(result.binned["variable"])
    ex = result.examples["lsst"]
    assert ex["truth"].shape == (2, 32, 32) and set(ex["outputs"]) == {"deblender", "sep"}
    for fig in (deblending_residuals(per), deblending_residuals(per, x="mag_true"),
                shear_bias_figure(per, table), deblending_examples(result.examples)):
        assert fig.axes
