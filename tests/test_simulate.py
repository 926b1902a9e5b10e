"""Tests of the lenstronomy simulation layer (priors, pairs, super-resolution, scripts)."""

from __future__ import annotations

import copy
import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from sourcelens.config import rng_for, sr_set_config, validate_config
from sourcelens.io import read_attrs, read_dataset, write_dataset
from sourcelens.names import LENS_PARAMETERS
from sourcelens.priors import check_prior, prior_bounds, sample_prior
from sourcelens.simulate import (
    draw_lens_parameters,
    lens_kwargs,
    magnitude_to_counts,
    make_psf,
    simulate_pairs,
    source_grid_scale,
    simulate_sr,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def config() -> dict:
    return validate_config({})


@pytest.fixture
def pairs_cfg(config) -> dict:
    return copy.deepcopy(config["simulate"]["pairs"])


@pytest.fixture
def sr_cfg(config) -> dict:
    return sr_set_config(config["simulate"]["sr"], "broad")


@pytest.fixture
def model_i_cfg(config) -> dict:
    return sr_set_config(config["simulate"]["sr"], "model_i")


def fake_stamps(m: int = 6, size: int = 64, seed: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """Peak-normalised elliptical Sérsic-like stamps drawn with numpy, with a little structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for _ in range(m):
        q, phi, r0, n = rng.uniform(0.4, 1), rng.uniform(0, np.pi), rng.uniform(4, 10), rng.uniform(0.7, 2.5)
        x = xx * np.cos(phi) + yy * np.sin(phi)
        y = -xx * np.sin(phi) + yy * np.cos(phi)
        r = np.hypot(x * np.sqrt(q), y / np.sqrt(q))
        img = np.exp(-2.0 * ((r / r0) ** (1 / n) - 1))
        cx, cy = rng.uniform(-10, 10, 2)
        img += 0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8)  # a clump
        out.append(img / img.max())
    meta = pd.DataFrame({"source_id": [f"fake-{i}" for i in range(m)], "kind": ["parametric"] * m,
                         "pixel_scale_arcsec": 0.03 + 0.01 * (np.arange(m) % 3)})
    return np.asarray(out, dtype=np.float32), meta


def gaussian_stamp(sigma_pix: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-(xx**2 + yy**2) / (2 * sigma_pix**2)).astype(np.float32)[None]


# ----------------------------------------------------------------------------- priors
def test_prior_fixed_uniform_normal():
    rng = np.random.default_rng(0)
    assert np.all(sample_prior(1.5, rng, 10, name="x") == 1.5)
    u = sample_prior({"uniform": [-0.2, 0.3]}, rng, 5000, name="u")
    assert u.min() >= -0.2 and u.max() <= 0.3 and abs(u.mean() - 0.05) < 0.01
    c = sample_prior({"normal": [0.0, 0.15], "clip": [-0.1, 0.4]}, rng, 20000, name="c")
    assert c.min() >= -0.1 and c.max() <= 0.4
    assert np.mean(c == -0.1) < 1e-3  # truncated (redraw-like), not piled up at the bound
    n = sample_prior({"normal": [1.0, 0.5]}, rng, 20000, name="n")
    assert abs(n.mean() - 1.0) < 0.02 and abs(n.std() - 0.5) < 0.02
    tail = sample_prior({"normal": [0.0, 1.0], "clip": [9.0, 10.0]}, rng, 100, name="t")  # far tail
    assert np.all((tail >= 9.0) & (tail <= 10.0))
    assert prior_bounds({"normal": [0, 1]}) == (-np.inf, np.inf)


def test_prior_truncated_normal_matches_rejection():
    rng = np.random.default_rng(3)
    x = sample_prior({"normal": [0.1, 0.2], "clip": [0.0, 0.3]}, rng, 40000, name="x")
    ref = rng.normal(0.1, 0.2, 400000)
    ref = ref[(ref >= 0.0) & (ref <= 0.3)]
    assert abs(x.mean() - ref.mean()) < 3e-3 and abs(x.std() - ref.std()) < 3e-3


@pytest.mark.parametrize("spec", [
    "abc", True, [0, 1], {"uniform": [1]}, {"uniform": [2, 1]}, {"uniform": [0, 1], "clip": [0, 1]},
    {"normal": [0, -1]}, {"normal": [0, 1], "clip": [1, 0]}, {"beta": [1, 2]}, {"uniform": ["a", 1]},
])
def test_prior_bad_spec_names_parameter(spec):
    with pytest.raises(ValueError, match="theta_E"):
        sample_prior(spec, np.random.default_rng(0), 3, name="theta_E")
    with pytest.raises(ValueError, match="theta_E"):
        check_prior(spec, "theta_E")


# ----------------------------------------------------------------------------- lens parameters
def test_lens_parameters_respect_priors(pairs_cfg):
    priors = pairs_cfg["priors"]
    rng = np.random.default_rng(5)
    for model in ("SIS", "SIE", "EPL"):
        df = draw_lens_parameters(model, priors, rng, 3000)
        assert list(df.columns) == list(LENS_PARAMETERS) and len(df) == 3000
        for name in LENS_PARAMETERS:
            lo, hi = prior_bounds(priors[name])
            if model == "SIS" and name in ("gamma", "e1", "e2"):
                assert np.all(df[name] == (2.0 if name == "gamma" else 0.0))
            elif model == "SIE" and name == "gamma":
                assert np.all(df[name] == 2.0)
            else:
                assert df[name].min() >= lo and df[name].max() <= hi, (model, name)
                assert df[name].std() > 0
    # lens_kwargs maps the parameters onto lenstronomy's models
    params = dict(zip(LENS_PARAMETERS, [1.2, 1.9, 0.1, -0.05, 0.01, 0.02, 0.03, -0.04]))
    models, kw = lens_kwargs("EPL", params)
    assert models == ["EPL", "SHEAR"]
    assert kw[0] == {"theta_E": 1.2, "center_x": 0.01, "center_y": 0.02, "e1": 0.1, "e2": -0.05, "gamma": 1.9}
    assert kw[1] == {"gamma1": 0.03, "gamma2": -0.04, "ra_0": 0.0, "dec_0": 0.0}
    assert lens_kwargs("SIS", params)[1][0] == {"theta_E": 1.2, "center_x": 0.01, "center_y": 0.02}
    assert set(lens_kwargs("SIE", params)[1][0]) == {"theta_E", "e1", "e2", "center_x", "center_y"}


def test_unknown_lens_model_errors(pairs_cfg):
    images, meta = fake_stamps(2)
    params = dict.fromkeys(LENS_PARAMETERS, 0.0)
    for call in (
        lambda: lens_kwargs("NFW", params),
        lambda: draw_lens_parameters("NFW", pairs_cfg["priors"], np.random.default_rng(0), 2),
        lambda: simulate_pairs(images, meta, 2, "NFW", pairs_cfg, np.random.default_rng(0)),
    ):
        with pytest.raises(ValueError, match=r"NFW.*SIS, SIE, EPL"):
            call()
    with pytest.raises(ValueError, match="EPL"):
        simulate_sr(1, "EPL", "noisy", sr_set_config(validate_config({})["simulate"]["sr"], "broad"),
                    np.random.default_rng(0))


def test_bad_stamps_name_source_id(pairs_cfg):
    images, meta = fake_stamps(3)
    bad = images.copy()
    bad[1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="fake-1"):
        simulate_pairs(bad, meta, 2, "SIE", pairs_cfg, np.random.default_rng(0))
    bad = images.copy()
    bad[2] = 0
    with pytest.raises(ValueError, match="fake-2.*all zero"):
        simulate_pairs(bad, meta, 2, "SIE", pairs_cfg, np.random.default_rng(0))


# ----------------------------------------------------------------------------- pairs
def test_pairs_outputs_and_lenstronomy_reference(pairs_cfg):
    """The noiseless image equals an independent direct lenstronomy ImageModel call."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    images, meta = fake_stamps(4)
    n = 4
    arrays, table = simulate_pairs(images, meta, n, "SIE", pairs_cfg, np.random.default_rng(11), progress=False)
    width = round(pairs_cfg["source_taper_fraction"] * images.shape[-1])
    ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(width) + 0.5) / width))
    edge = np.concatenate([ramp, np.ones(images.shape[-1] - 2 * width), ramp[::-1]])
    taper = np.outer(edge, edge)
    npix, s = pairs_cfg["num_pix"], pairs_cfg["pixel_scale_arcsec"]
    assert set(arrays) == {"lensed", "lensed_noiseless", "source", "noise_sigma", "lens_params"}
    for key in ("lensed", "lensed_noiseless", "source", "noise_sigma"):
        assert arrays[key].shape == (n, npix, npix) and arrays[key].dtype == np.float32
    assert arrays["lens_params"].shape == (n, 8) and arrays["lens_params"].dtype == np.float32
    assert list(table.columns) == (["source_id", "kind", "stamp_index", "lens_model"] + list(LENS_PARAMETERS)
                                   + ["source_x", "source_y", "source_magnitude", "source_pixel_scale_arcsec",
                                      "source_hlr_arcsec", "source_grid_flux_fraction", "source_relens_error",
                                      "edge_peak_fraction"])
    # each source keeps its own size on the sky: the stamp's pixel scale
    np.testing.assert_array_equal(table["source_pixel_scale_arcsec"],
                                  meta["pixel_scale_arcsec"].to_numpy()[table["stamp_index"]])
    np.testing.assert_allclose(arrays["lens_params"], table[list(LENS_PARAMETERS)].to_numpy(), rtol=1e-6)
    assert (table["source_id"] == meta["source_id"].to_numpy()[table["stamp_index"]]).all()

    # Independent reference: lenstronomy's standard orientation-free set-up written out by hand.
    grid = PixelGrid(nx=npix, ny=npix, transform_pix2angle=np.diag([s, s]),
                     ra_at_xy_0=-(npix - 1) / 2 * s, dec_at_xy_0=-(npix - 1) / 2 * s)
    psf = PSF(psf_type="GAUSSIAN", fwhm=pairs_cfg["psf"]["fwhm_arcsec"])
    for i in range(n):
        row = table.iloc[i]
        source_model = LightModel(["INTERPOL"])
        model = ImageModel(grid, psf, lens_model_class=LensModel(["SIE", "SHEAR"]), source_model_class=source_model,
                           kwargs_numerics={"supersampling_factor": pairs_cfg["supersampling"]})
        kw_lens = [{k: row[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
                   {"gamma1": row["gamma1"], "gamma2": row["gamma2"], "ra_0": 0, "dec_0": 0}]
        stamp = images[row["stamp_index"]].astype(float) * taper    # the edge-tapered stamp is the source
        scale = meta["pixel_scale_arcsec"][row["stamp_index"]]
        flux = 10 ** (-0.4 * (row["source_magnitude"] - pairs_cfg["magnitude_zero_point"]))
        kw_src = [{"image": stamp, "scale": scale, "center_x": row["source_x"], "center_y": row["source_y"],
                   "phi_G": 0.0, "amp": flux / (stamp.sum() * scale**2)}]
        ref = model.image(kw_lens, kw_src)
        np.testing.assert_allclose(arrays["lensed_noiseless"][i], ref, rtol=1e-5, atol=1e-6 * ref.max())
        # the unlensed source: lenstronomy's surface brightness of the same INTERPOL source averaged over each
        # source-grid pixel's sub-pixels (pixel centres at (k + 1/2)/sub - npix/2, in grid pixels), flux per pixel
        g, sub = source_grid_scale(pairs_cfg), pairs_cfg["supersampling"]
        centres = ((np.arange(npix * sub) + 0.5) / sub - npix / 2) * g
        sb = np.array([[float(source_model.surface_brightness(x, y, kw_src)) for x in centres] for y in centres])
        expect_src = sb.reshape(npix, sub, npix, sub).mean(axis=(1, 3)) * g**2
        np.testing.assert_allclose(arrays["source"][i], expect_src, rtol=1e-5, atol=1e-6 * expect_src.max())
        assert table["source_grid_flux_fraction"][i] == pytest.approx(arrays["source"][i].sum() / flux, rel=1e-5)
        assert table["source_grid_flux_fraction"][i] > 0.99           # these stamps lie inside the grid
        assert 0 <= table["source_relens_error"][i] < 0.2 and 0 <= table["edge_peak_fraction"][i] < 0.01
        # the relensing check (rays traced once for the stamp and its gridded truth) is lenstronomy's own image of
        # the gridded source
        kw_grid = [{"image": expect_src, "amp": 1.0 / g**2, "center_x": 0.0, "center_y": 0.0, "phi_G": 0.0,
                    "scale": g}]
        grid_model = ImageModel(grid, psf, lens_model_class=LensModel(["SIE", "SHEAR"]),
                                source_model_class=LightModel(["INTERPOL"]),
                                kwargs_numerics={"supersampling_factor": pairs_cfg["supersampling"]})
        relens_error = np.abs(grid_model.image(kw_lens, kw_grid) - ref).max() / ref.max()
        assert table["source_relens_error"][i] == pytest.approx(relens_error, rel=1e-3, abs=1e-6)
        # the unlensed source keeps the stamp's orientation (x along columns, y along rows)
        src = arrays["source"][i]
        stamp_c = np.asarray(np.unravel_index(np.argmax(stamp), stamp.shape), float) - (stamp.shape[0] - 1) / 2
        peak = np.asarray(np.unravel_index(np.argmax(src), src.shape), float) - (npix - 1) / 2
        expect = (stamp_c * scale + [row["source_y"], row["source_x"]]) / g
        assert np.all(np.abs(peak - expect) <= 1.51)


def test_sis_point_source_magnification(pairs_cfg):
    """Total lensed flux / source flux = 2 theta_E / beta for a compact source behind an SIS."""
    theta_e, beta = 1.0, 0.3
    cfg = pairs_cfg
    cfg.update(num_pix=160, pixel_scale_arcsec=0.02, supersampling=4, source_pixel_scale_arcsec=0.005,
               source_grid_pixel_scale_arcsec=0.02, source_offset_arcsec=0.0, source_magnitude=[20.0, 20.0],
               psf={"type": "NONE"})
    cfg["priors"] = {"theta_E": theta_e, "center_x": 0.0, "center_y": 0.0, "gamma1": 0.0, "gamma2": 0.0}
    images = gaussian_stamp(4.0)  # sigma 0.02 arcsec << beta
    meta = pd.DataFrame({"source_id": ["point"], "kind": ["test"]})
    flux = magnitude_to_counts(20.0, cfg["magnitude_zero_point"])
    rng = np.random.default_rng(0)
    # the offset prior applies to each component: a fixed beta/sqrt(2) puts the source at |beta|
    for b, expect in ((beta, 2 * theta_e / beta), (1.1, 1 + theta_e / 1.1)):  # beta > theta_E: one image
        cfg["source_offset_arcsec"] = b / np.sqrt(2)
        arrays, _ = simulate_pairs(images, meta, 1, "SIS", cfg, rng, progress=False)
        assert arrays["source"][0].sum() == pytest.approx(flux, rel=1e-3)
        mu = arrays["lensed_noiseless"][0].sum() / flux
        assert mu == pytest.approx(expect, rel=0.03), b


def test_determinism_and_shards(pairs_cfg):
    images, meta = fake_stamps(5)
    runs = [simulate_pairs(images, meta, 3, "EPL", pairs_cfg, rng_for(7, "simulate_pairs", "EPL", "train", shard),
                           progress=False) for shard in (0, 0, 1)]
    for key in runs[0][0]:
        assert runs[0][0][key].tobytes() == runs[1][0][key].tobytes(), key
        assert runs[0][0][key].tobytes() != runs[2][0][key].tobytes(), key
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    # lenstronomy's or numpy's global RNG plays no part
    np.random.seed(123)
    again = simulate_pairs(images, meta, 3, "EPL", pairs_cfg, rng_for(7, "simulate_pairs", "EPL", "train", 0),
                           progress=False)
    assert again[0]["lensed"].tobytes() == runs[0][0]["lensed"].tobytes()


def test_noise_sigma_matches_residuals(pairs_cfg):
    images, meta = fake_stamps(4)
    cfg = pairs_cfg
    cfg["noise"] = {"exposure_time_s": 200.0, "background_rms": 0.02, "poisson": True}
    cfg["source_magnitude"] = [19.0, 20.0]
    arrays, _ = simulate_pairs(images, meta, 12, "SIE", cfg, np.random.default_rng(2), progress=False)
    resid = (arrays["lensed"] - arrays["lensed_noiseless"]).astype(float)
    sigma = arrays["noise_sigma"].astype(float)
    expect = np.sqrt(0.02**2 + np.clip(arrays["lensed_noiseless"], 0, None) / 200.0)
    np.testing.assert_allclose(sigma, expect, rtol=1e-5)
    z = resid / sigma
    assert z.std() == pytest.approx(1.0, abs=0.02)
    bright = sigma > 3 * 0.02  # Poisson-dominated pixels
    assert bright.sum() > 1000
    assert z[bright].std() == pytest.approx(1.0, abs=0.05)
    # no Poisson term: sigma is the background only
    cfg["noise"]["poisson"] = False
    arrays, _ = simulate_pairs(images, meta, 2, "SIE", cfg, np.random.default_rng(2), progress=False)
    assert np.allclose(arrays["noise_sigma"], 0.02)
    assert (arrays["lensed"] - arrays["lensed_noiseless"]).std() == pytest.approx(0.02, rel=0.05)


def test_psf_kinds(tmp_path):
    from lenstronomy.Util import kernel_util

    moffat = make_psf({"type": "MOFFAT", "fwhm_arcsec": 0.3, "moffat_beta": 3.0}, 0.05)
    k = moffat.kernel_point_source
    assert k.shape[0] % 2 == 1 and k.sum() == pytest.approx(1.0)
    assert kernel_util.fwhm_kernel(k) * 0.05 == pytest.approx(0.3, rel=0.15)
    kernel = np.outer(*(2 * [np.exp(-np.linspace(-3, 3, 11) ** 2)]))
    np.save(tmp_path / "k.npy", kernel)
    pix = make_psf({"type": "PIXEL", "kernel_file": str(tmp_path / "k.npy")}, 0.05)
    assert pix.kernel_point_source.sum() == pytest.approx(1.0)
    finer = make_psf({"type": "PIXEL", "kernel_file": str(tmp_path / "k.npy")}, 0.025, kernel_subgrid=2)
    assert finer.kernel_point_source.shape[0] > 11
    assert make_psf({"type": "NONE"}, 0.05).psf_type == "NONE"
    with pytest.raises(ValueError, match="kernel_file"):
        make_psf({"type": "PIXEL", "kernel_file": None}, 0.05)


# ----------------------------------------------------------------------------- super-resolution
def test_sr_grids_and_flux_consistency(sr_cfg):
    n = 3
    arrays, table = simulate_sr(n, "SIE", "noisy", sr_cfg, rng_for(1, "simulate_sr", "train", 0),
                                id_prefix="sersic-train-0", progress=False)
    lr, f = sr_cfg["low_res_num_pix"], sr_cfg["factor"]
    assert arrays["low_res"].shape == arrays["low_res_noiseless"].shape == arrays["noise_sigma"].shape == (n, lr, lr)
    assert arrays["high_res"].shape == arrays["source_high_res"].shape == (n, lr * f, lr * f)
    assert arrays["lens_params"].shape == (n, 8)
    assert np.all(table["gamma"] == 2) and np.all(table["gamma1"] == 0) and np.all(table["gamma2"] == 0)
    assert table["source_id"].tolist() == [f"sersic-train-0-{i:06d}" for i in range(n)]
    for i in range(n):
        hr, lo = arrays["high_res"][i].astype(float), arrays["low_res_noiseless"][i].astype(float)
        # images in flux per pixel: the totals agree (HR pixel area is 1/f² of LR's, f² times as many pixels)
        assert hr.sum() == pytest.approx(lo.sum(), rel=2e-3)
        # and the HR image binned f×f is the LR image (same field, same PSF in arcsec)
        binned = hr.reshape(lr, f, lr, f).sum(axis=(1, 3))
        assert np.abs(binned - lo).max() < 0.03 * lo.max()
        flux = magnitude_to_counts(table["source_magnitude"][i], sr_cfg["magnitude_zero_point"])
        assert arrays["source_high_res"][i].sum() == pytest.approx(flux, rel=0.05)
    assert np.any(arrays["low_res"] != arrays["low_res_noiseless"])
    assert np.all(arrays["noise_sigma"] > 0)


def test_sr_noise_variants_share_scenes(sr_cfg):
    sr_cfg["low_res_num_pix"] = 32
    sr_cfg["low_res_pixel_scale_arcsec"] = 0.1
    noisy, t1 = simulate_sr(2, "SIS", "noisy", sr_cfg, np.random.default_rng(4), progress=False)
    clean, t2 = simulate_sr(2, "SIS", "noiseless", sr_cfg, np.random.default_rng(4), progress=False)
    shot, t3 = simulate_sr(2, "SIS", "poisson", sr_cfg, np.random.default_rng(4), progress=False)
    pd.testing.assert_frame_equal(t1, t2)
    pd.testing.assert_frame_equal(t1, t3)
    assert noisy["high_res"].tobytes() == clean["high_res"].tobytes() == shot["high_res"].tobytes()
    assert np.array_equal(clean["low_res"], clean["low_res_noiseless"])
    assert np.all(clean["noise_sigma"] == 0)
    assert np.array_equal(noisy["low_res_noiseless"], clean["low_res_noiseless"])
    # shot noise only: no noise where there is no source light, sigma sqrt(m / t)
    lo = shot["low_res_noiseless"].astype(float)
    dark = lo <= 0
    assert np.all(shot["low_res"][dark] == 0) and np.any(shot["low_res"] != lo)
    np.testing.assert_allclose(shot["noise_sigma"], np.sqrt(np.clip(lo, 0, None) / 1000.0), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="noise variant"):
        simulate_sr(1, "SIS", "grainy", sr_cfg, np.random.default_rng(4))


def test_sr_from_stamps(sr_cfg):
    images, meta = fake_stamps(3)
    sr_cfg.update(source="stamps", low_res_num_pix=32, low_res_pixel_scale_arcsec=0.1)
    arrays, table = simulate_sr(2, "SIE", "noiseless", sr_cfg, np.random.default_rng(0),
                                images=images, meta=meta, progress=False)
    assert set(table["source_id"]) <= set(meta["source_id"])
    assert np.all(np.isfinite(table["source_pixel_scale_arcsec"]))
    assert np.all(arrays["high_res"].sum(axis=(1, 2)) > 0)
    with pytest.raises(ValueError, match="stamps"):
        simulate_sr(1, "SIE", "noiseless", sr_cfg, np.random.default_rng(0))


# ----------------------------------------------------------------------------- super-resolution sets
def test_theta_E_from_halo_mass_with_astropy():
    """Model_I's θE = 1.28149″ is DeepLenseSim's mass_to_radius: a 1e12 M☉ point mass, luminosity distances and
    D_LS = D_S − D_L, flat ΛCDM H0 70, Ωm 0.3; the textbook angular-diameter relation gives 1.6645″."""
    from astropy import constants as const
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    from sourcelens.simulate import einstein_radius_point_mass, resolve_theta_E

    theta = einstein_radius_point_mass(1e12, 0.5, 1.0, H0=70, Om0=0.3, distances="luminosity")
    assert theta == pytest.approx(1.28149, abs=1e-4)
    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    d_l, d_s = cosmo.angular_diameter_distance(0.5), cosmo.angular_diameter_distance(1.0)
    d_ls = cosmo.angular_diameter_distance(0.5, 1.0)
    textbook = (np.sqrt(4 * const.G * 1e12 * const.M_sun / const.c**2 * d_ls / (d_l * d_s)).decompose() * u.rad)
    assert einstein_radius_point_mass(1e12, 0.5, 1.0, distances="angular_diameter") == pytest.approx(
        textbook.to(u.arcsec).value, rel=1e-12)
    assert textbook.to(u.arcsec).value == pytest.approx(1.6645, abs=1e-3)
    # θE ∝ sqrt(M)
    assert einstein_radius_point_mass(4e12, 0.5, 1.0) == pytest.approx(2 * theta, rel=1e-12)
    spec = {"point_mass": {"mass_msun": 1e12, "z_lens": 0.5, "z_source": 1.0, "H0": 70.0, "Om0": 0.3,
                           "distances": "luminosity"}}
    assert resolve_theta_E(spec) == theta and resolve_theta_E({"uniform": [1, 2]}) == {"uniform": [1, 2]}
    with pytest.raises(ValueError, match="z_lens"):
        einstein_radius_point_mass(1e12, 1.0, 0.5)


def test_model_i_preset_is_deeplensesim_model_i(model_i_cfg):
    """The model_i preset's values are DeepLenseSim Model_I's (study 001's lens.py, simple_sim)."""
    c = model_i_cfg
    assert (c["low_res_num_pix"], c["low_res_pixel_scale_arcsec"], c["factor"]) == (75, 0.05, 2)
    assert c["supersampling"] == 1 and c["low_res_supersampling"] == 1 and c["psf"]["type"] == "NONE"
    assert c["source"] == "sersic"
    assert c["noise"] == {"model": "deeplensesim", "exposure_time_s": {"log10_uniform": [3.0, 3.5]},
                          "background_rms": 0.01, "poisson": True}
    p = c["priors"]
    assert p["theta_E"]["point_mass"] == {"mass_msun": 1e12, "z_lens": 0.5, "z_source": 1.0, "H0": 70.0,
                                          "Om0": 0.3, "distances": "luminosity"}
    assert (p["e1"], p["e2"], p["center_x"], p["center_y"]) == (0.1, 0.0, 0.0, 0.0)
    assert (p["source_R_sersic"], p["source_n_sersic"], p["source_e1"], p["source_e2"]) == (0.25, 1.0, -0.1, 0.1)
    assert p["source_x"] == p["source_y"] == {"uniform": [-0.35, 0.35]}
    assert p["source_amplitude"] == 20.0 and p["source_magnitude"] is None

    arrays, table = simulate_sr(40, "SIE", "noisy", c, np.random.default_rng(0), progress=False)
    assert arrays["low_res"].shape == (40, 75, 75) and arrays["high_res"].shape == (40, 150, 150)
    assert np.allclose(table["theta_E"], 1.28149, atol=1e-4)
    assert (table["e1"] == 0.1).all() and (table["e2"] == 0).all() and (table[["center_x", "center_y"]] == 0).all().all()
    assert (table["source_amplitude"] == 20).all() and (table["source_R_sersic"] == 0.25).all()
    assert (table["source_n_sersic"] == 1).all() and (table["source_e1"] == -0.1).all() and (table["source_e2"] == 0.1).all()
    assert table["source_x"].between(-0.35, 0.35).all() and table["source_y"].between(-0.35, 0.35).all()
    assert table["exposure_time_s"].between(1e3, 10**3.5).all() and table["exposure_time_s"].nunique() == 40
    _, sis = simulate_sr(2, "SIS", "noiseless", c, np.random.default_rng(0), progress=False)
    assert (sis[["e1", "e2", "gamma1", "gamma2"]] == 0).all().all() and (sis["gamma"] == 2).all()


@pytest.mark.parametrize("lens", ["SIS", "SIE"])
def test_model_i_pixels_are_deeplensesims(model_i_cfg, lens):
    """The noiseless model_i images are, pixel for pixel, what DeepLenseSim's simple_sim renders with lenstronomy
    (ImageData from make_grid_with_coordtransform, PSF NONE, supersampling 1, SERSIC_ELLIPSE amp 20)."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Util import util

    arrays, table = simulate_sr(2, lens, "noiseless", model_i_cfg, np.random.default_rng(3), progress=False)
    for i in range(2):
        kw_lens = {"theta_E": table["theta_E"][i], "center_x": 0.0, "center_y": 0.0}
        if lens == "SIE":
            kw_lens.update(e1=0.1, e2=0.0)
        kw_src = {"amp": 20, "R_sersic": 0.25, "n_sersic": 1, "e1": -0.1, "e2": 0.1,
                  "center_x": table["source_x"][i], "center_y": table["source_y"][i]}
        for num_pix, scale, name in ((75, 0.05, "low_res_noiseless"), (150, 0.025, "high_res")):
            _, _, ra0, dec0, _, _, m_pix2coord, _ = util.make_grid_with_coordtransform(
                num_pix, scale, center_ra=0, center_dec=0, subgrid_res=1, inverse=False)  # numPix=, deltapix= then
            data = ImageData(background_rms=0.01, exposure_time=1000.0, ra_at_xy_0=ra0, dec_at_xy_0=dec0,
                             transform_pix2angle=m_pix2coord, image_data=np.zeros((num_pix, num_pix)))
            model = ImageModel(data, PSF(psf_type="NONE"), lens_model_class=LensModel([lens]),
                               source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                               kwargs_numerics={"supersampling_factor": 1, "supersampling_convolution": False})
            expected = model.image([kw_lens], [kw_src])
            np.testing.assert_allclose(arrays[name][i], expected, rtol=2e-6, atol=1e-9)


def test_noise_models_statistics():
    """additive: Poisson + Gaussian background; deeplensesim: DeepLenseSim's simple_sim (shot noise twice, counts
    clipped at zero); exposure priors drawn log-uniformly; sigma maps match the scatter."""
    from sourcelens.simulate import add_noise, exposure_time

    rng = np.random.default_rng(0)
    m = np.full((400, 400), 0.2)
    t, bg = 1500.0, 0.01
    add, sig = add_noise(m, {"model": "additive", "exposure_time_s": t, "background_rms": bg}, rng)
    assert add.mean() == pytest.approx(0.2, abs=1e-3)
    assert add.std() == pytest.approx(np.sqrt(bg**2 + 0.2 / t), rel=0.02) and np.allclose(sig, np.sqrt(bg**2 + 0.2 / t))
    dls, sig = add_noise(m, {"model": "deeplensesim", "exposure_time_s": t, "background_rms": bg}, rng)
    assert dls.mean() == pytest.approx(0.2, abs=1e-3)
    assert dls.std() == pytest.approx(np.sqrt(bg**2 + 2 * 0.2 / t), rel=0.02)
    assert np.allclose(sig, np.sqrt(bg**2 + 2 * 0.2 / t))
    assert np.allclose(dls * t, np.round(dls * t))                        # whole counts over the exposure
    sky, _ = add_noise(np.zeros((400, 400)), {"model": "deeplensesim", "exposure_time_s": t, "background_rms": bg},
                       rng)
    assert sky.min() >= 0 and sky.mean() == pytest.approx(bg / np.sqrt(2 * np.pi), rel=0.05)   # clipped Gaussian
    spec = {"log10_uniform": [3.0, 3.5]}
    times = exposure_time({"exposure_time_s": spec}, np.random.default_rng(1), 20000)
    assert times.min() >= 1e3 and times.max() <= 10**3.5
    assert np.log10(times).mean() == pytest.approx(3.25, abs=0.01) and np.log10(times).std() == pytest.approx(
        0.5 / np.sqrt(12), rel=0.02)
    assert sample_prior(spec, np.random.default_rng(1), 5).tolist() == exposure_time(
        {"exposure_time_s": spec}, np.random.default_rng(1), 5).tolist()
    assert prior_bounds(spec) == (1e3, 10**3.5) and check_prior(spec)["kind"] == "log10_uniform"
    with pytest.raises(ValueError, match="log10_uniform"):
        check_prior({"log10_uniform": [3.5, 3.0]}, "t")
    with pytest.raises(ValueError, match="noise model"):
        add_noise(m, {"model": "grainy"}, rng)
    # the model_i noisy variant: the study's noise at the drawn exposure of each image
    a, b = (add_noise(m, {"model": "deeplensesim", "exposure_time_s": spec}, np.random.default_rng(5))[0]
            for _ in range(2))
    assert np.array_equal(a, b)


def test_sr_edge_fractions_of_the_presets(config):
    """broad: the lensed light on the field's border stays below 1 % of the peak for >= 99 % of the pairs; Model_I's
    own 3.75″ field (kept, as the study's) cuts part of the light of every pair, and the table records it."""
    sr = config["simulate"]["sr"]
    for lens, n in (("SIE", 200), ("SIS", 100)):
        _, table = simulate_sr(n, lens, "noiseless", sr_set_config(sr, "broad"), rng_for(1, "edge", lens),
                               progress=False)
        assert (table["edge_peak_fraction"] < 0.01).mean() >= 0.99, table["edge_peak_fraction"].describe()
        assert (table["edge_peak_fraction_low_res"] < 0.01).mean() >= 0.99
    _, table = simulate_sr(100, "SIE", "noiseless", sr_set_config(sr, "model_i"), rng_for(1, "edge", "model_i"),
                           progress=False)
    assert (table["edge_peak_fraction"] > 0.01).all() and table["edge_peak_fraction"].median() < 0.2


@pytest.mark.parametrize("name", ["model_i", "broad"])
def test_sr_sets_deterministic(config, name):
    cfg = sr_set_config(config["simulate"]["sr"], name)
    cfg.update(low_res_num_pix=24)
    a, ta = simulate_sr(3, "SIE", "noisy", cfg, rng_for(7, "simulate_sr", name, "test", 0), progress=False)
    b, tb = simulate_sr(3, "SIE", "noisy", cfg, rng_for(7, "simulate_sr", name, "test", 0), progress=False)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    pd.testing.assert_frame_equal(ta, tb)


# ----------------------------------------------------------------------------- scripts
def _run_script(name: str, **snake) -> None:
    """Run a workflow script with a stand-in ``snakemake`` object (restoring stderr/logging)."""
    stderr, handlers = sys.stderr, logging.getLogger().handlers[:]
    try:
        runpy.run_path(str(REPO / "scripts" / name),
                       init_globals={"snakemake": SimpleNamespace(scriptdir=str(REPO / "scripts"), **snake)})
    finally:
        if sys.stderr is not stderr:
            sys.stderr.close()
        sys.stderr = stderr
        logging.getLogger().handlers[:] = handlers


def test_scripts_simulate_and_gather(tmp_path, config):
    images, meta = fake_stamps(4)
    stamps = tmp_path / "stamps_train.h5"
    write_dataset(stamps, {"images": images}, meta, kind="stamps")
    cfg = copy.deepcopy(config)
    cfg["simulate"]["pairs"]["num_pix"] = 32
    shards = []
    for shard, n in ((0, 3), (1, 2)):
        out = tmp_path / f"shard_{shard}.h5"
        _run_script(
            "simulate_pairs.py", input=[str(stamps)], output=[str(out)], log=[str(tmp_path / f"{shard}.log")],
            wildcards=SimpleNamespace(lens="SIE", split="train", shard=str(shard)),
            params=SimpleNamespace(pairs=cfg["simulate"]["pairs"], source_kinds=["parametric"], min_observed_snr=None, n=n, seed=cfg["seed"]),
            config=cfg,
        )
        shards.append(str(out))
    gathered = tmp_path / "pairs_SIE_train.h5"
    _run_script("gather_shards.py", input=shards, output=[str(gathered)], log=[str(tmp_path / "g.log")], config=cfg)
    arrays, table = read_dataset(gathered)
    assert arrays["lensed"].shape == (5, 32, 32) and len(table) == 5
    attrs = read_attrs(gathered)
    assert attrs["kind"] == "pairs" and attrs["lens_model"] == "SIE" and attrs["n_shards"] == 2
    assert [p["shard"] for p in attrs["shard_provenance"]] == [0, 1]
    assert attrs["provenance"]["config"]["seed"] == cfg["seed"]

    sr_out = tmp_path / "sr.h5"
    sr = sr_set_config(cfg["simulate"]["sr"], "broad")
    sr.update(low_res_num_pix=16, low_res_pixel_scale_arcsec=0.2)
    _run_script(
        "simulate_sr.py", input=SimpleNamespace(stamps=str(stamps)), output=[str(sr_out)], log=[str(tmp_path / "sr.log")],
        wildcards=SimpleNamespace(set="broad", lens="SIS", noise="noisy", split="val", shard="0"),
        params=SimpleNamespace(sr=sr, source_kinds=["parametric"], min_observed_snr=None, n=2, seed=cfg["seed"]), config=cfg,
    )
    arrays, table = read_dataset(sr_out)
    assert arrays["high_res"].shape == (2, 32, 32)
    attrs = read_attrs(sr_out)
    assert attrs["high_res_psf_convolved"] and attrs["sr_set"] == "broad" and attrs["preset"] == "broad"
    assert table["source_id"].tolist() == ["broad-val-0-000000", "broad-val-0-000001"]
    # the real-galaxy set: stamps as sources, their ids and kinds in the table
    real = sr_set_config(cfg["simulate"]["sr"], "real")
    real.update(low_res_num_pix=16, low_res_pixel_scale_arcsec=0.2)
    _run_script(
        "simulate_sr.py", input=SimpleNamespace(stamps=str(stamps)), output=[str(sr_out)], log=[str(tmp_path / "sr2.log")],
        wildcards=SimpleNamespace(set="real", lens="SIE", noise="noiseless", split="val", shard="0"),
        params=SimpleNamespace(sr=real, source_kinds=["parametric"], min_observed_snr=None, n=3, seed=cfg["seed"]), config=cfg,
    )
    arrays, table = read_dataset(sr_out)
    assert set(table["source_id"]) <= set(meta["source_id"]) and set(table["kind"]) == {"parametric"}
    assert read_attrs(sr_out)["source"] == "stamps" and np.isnan(table["source_amplitude"]).all()


def test_source_size_on_the_sky(pairs_cfg):
    """A stamp's own pixel scale sets its source's size on the sky (null config), a fixed scale overrides it;
    without either the error names the key. The edge taper leaves the centre and clears the border."""
    images, meta = fake_stamps(2)
    meta["pixel_scale_arcsec"] = [0.02, 0.04]
    same = np.stack([images[0], images[0]])                   # one galaxy, at two sizes on the sky
    fine = dict(pairs_cfg, source_offset_arcsec=0.0, num_pix=128, pixel_scale_arcsec=0.02,
                source_grid_pixel_scale_arcsec=0.02)
    own, t_own = simulate_pairs(same, meta, 6, "SIS", fine, np.random.default_rng(3), progress=False)
    np.testing.assert_array_equal(t_own["source_pixel_scale_arcsec"],
                                  meta["pixel_scale_arcsec"].to_numpy()[t_own["stamp_index"]])
    yy, xx = np.indices((128, 128)) - 63.5

    def rms_radius(img):
        w = np.clip(img, 0, None) / np.clip(img, 0, None).sum()
        cy, cx = (w * yy).sum(), (w * xx).sum()
        return np.sqrt((w * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum())

    size = {s: np.mean([rms_radius(own["source"][i]) for i in np.flatnonzero(t_own["source_pixel_scale_arcsec"] == s)])
            for s in (0.02, 0.04)}
    assert size[0.04] == pytest.approx(2 * size[0.02], rel=0.05), size
    _, t_fix = simulate_pairs(images, meta, 2, "SIS", dict(pairs_cfg, source_pixel_scale_arcsec=0.05),
                              np.random.default_rng(3), progress=False)
    assert (t_fix["source_pixel_scale_arcsec"] == 0.05).all()
    # the recorded half-light radius follows the scale the source was lensed at
    meta["hlr_arcsec"] = [0.1, 0.2]
    _, t_hlr = simulate_pairs(images, meta, 4, "SIS", pairs_cfg, np.random.default_rng(3), progress=False)
    np.testing.assert_allclose(t_hlr["source_hlr_arcsec"], meta["hlr_arcsec"].to_numpy()[t_hlr["stamp_index"]])
    _, t_hlr = simulate_pairs(images, meta, 4, "SIS", dict(pairs_cfg, source_pixel_scale_arcsec=0.08),
                              np.random.default_rng(3), progress=False)
    np.testing.assert_allclose(t_hlr["source_hlr_arcsec"],
                               (meta["hlr_arcsec"] * 0.08 / meta["pixel_scale_arcsec"]).to_numpy()[t_hlr["stamp_index"]])
    with pytest.raises(ValueError, match="source_pixel_scale_arcsec"):
        simulate_pairs(images, meta.drop(columns="pixel_scale_arcsec"), 2, "SIS", pairs_cfg, np.random.default_rng(3),
                       progress=False)
    from sourcelens.simulate import taper_sources

    tapered = taper_sources(images, 0.125)
    assert np.array_equal(tapered[:, 20:44, 20:44], images[:, 20:44, 20:44].astype(float))
    assert np.abs(tapered[:, 0]).max() < 0.01 * np.abs(images).max()


def test_lensing_sources_cut_observed_stamps_by_snr():
    """Observed stamps below ``min_observed_snr`` are not lensed; drawn kinds (noiseless truth known) always are."""
    from sourcelens.simulate import lensing_sources

    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 8, 8)).astype(np.float32)
    truth = np.full_like(images, np.nan)
    truth[2:] = 1.0                                   # rows 2, 3 drawn: their truth is known
    meta = pd.DataFrame({"source_id": list("abcd"), "kind": ["cosmos", "cosmos", "parametric", "parametric"],
                         "snr": [20.0, 60.0, 5.0, 80.0]})
    arrays = {"images": images, "images_noiseless": truth}
    kinds = ["cosmos", "parametric"]
    out, sel = lensing_sources(arrays, meta, kinds, min_observed_snr=40)
    assert sel["source_id"].tolist() == ["b", "c", "d"]
    np.testing.assert_array_equal(out[0], images[1])   # observed: the stamp as observed
    assert (out[1:] == 1.0).all()                      # drawn: the noiseless truth, whatever its stamp S/N
    all_rows, _ = lensing_sources(arrays, meta, kinds)
    assert len(all_rows) == 4
    with pytest.raises(ValueError, match="min_observed_source_snr"):
        lensing_sources(arrays, meta, ["cosmos"], min_observed_snr=100)
