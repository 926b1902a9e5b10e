"""Tests of the blend simulation of study 003 (sourcelens.surveys, sourcelens.blends, scripts/simulate_blends.py)."""

from __future__ import annotations

import copy
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sourcelens.blends import (
    BlendRenderer,
    _shear_matrix,
    bands_for,
    catalogue_columns,
    denormalise,
    normalisation_scales,
    normalise,
    simulate_blends,
)
from sourcelens.config import ConfigError, rng_for, validate_config
from sourcelens.io import concatenate_datasets, read_array_attrs, read_attrs, read_dataset
from sourcelens.surveys import BAND_SETS, band, band_set, surveycodex_constants

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg() -> dict:
    """The default ``blends`` block with a small calibration set."""
    c = validate_config({})["blends"]
    c["normalisation"]["n_calibration"] = 10
    return c


@pytest.fixture(scope="module")
def compact_cfg(cfg) -> dict:
    """Small exponential disks without bulge or knots: (nearly) all their light falls on the stamp."""
    c = copy.deepcopy(cfg)
    c["galaxies"].update(hlr_arcsec=[0.15, 0.25], bulge_probability=0.0, knots_probability=0.0)
    return c


# ----------------------------------------------------------------------------- survey constants
def test_survey_constants_come_from_surveycodex():
    import astropy.units as u
    import surveycodex

    lsst = surveycodex.get_survey("LSST")
    for b in band_set("lsst_euclid"):
        survey = surveycodex.get_survey(b.survey)
        filt = survey.get_filter(b.name)
        assert b.pixel_scale_arcsec == survey.pixel_scale.to_value(u.arcsec)
        assert b.psf_fwhm_arcsec == filt.psf_fwhm.to_value(u.arcsec)
        assert b.zero_point == filt.zeropoint.value
        assert b.sky_brightness == filt.sky_brightness.value
        assert b.exposure_time_s == filt.full_exposure_time.to_value(u.s)
        assert b.overridden == ()
    assert [b.name for b in band_set("lsst")] == list("ugrizy") == list(lsst.available_filters)
    assert len(BAND_SETS["lsst_euclid"]) == 10
    # surveycodex's own electron counts and sky level (it rounds to whole electrons)
    from surveycodex.utilities import mag2counts, mean_sky_level

    g = band("g")
    assert abs(g.electrons(24.0) - mag2counts(24.0, "LSST", "g").value) <= 1
    assert g.sky_per_pixel() == pytest.approx(mean_sky_level("LSST", "g").value, rel=1e-6)


def test_survey_overrides_and_errors():
    b = band("r", {"psf_fwhm_arcsec": 0.65, "exposure_time_s": None})
    assert b.psf_fwhm_arcsec == 0.65 and b.overridden == ("psf_fwhm_arcsec",)
    assert b.exposure_time_s == surveycodex_constants("r")["exposure_time_s"]
    assert band("IE").psf_profile == "moffat" and band("u").psf_profile == "kolmogorov"
    with pytest.raises(ValueError, match="unknown survey constant"):
        band("r", {"psf_fwhm": 0.65})
    with pytest.raises(ValueError, match="unknown band"):
        band_set("lsst", {"Q": {"zero_point": 20}})
    with pytest.raises(ValueError, match="unknown band set"):
        band_set("euclid")


@pytest.mark.parametrize("bad, key", [
    ({"blends": {"band_sets": ["des"]}}, "blends/band_sets"),
    ({"blends": {"survey_overrides": {"Q": {"zero_point": 25.0}}}}, "blends/survey_overrides"),
    ({"blends": {"survey_overrides": {"r": {"psf": 0.7}}}}, "blends/survey_overrides/r"),
    ({"blends": {"n_samples": {"blended": {"train": 0}}}}, "blends/n_samples/blended/train"),
    ({"blends": {"galaxies": {"cosmos_fraction": 1.5}}}, "blends/galaxies/cosmos_fraction"),
    ({"blends": {"stamp_size": 63}}, "blends/stamp_size"),
    ({"blends": {"nieghbours": [0, 3]}}, "blends"),
])
def test_bad_config_keys_are_named(bad, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(bad)


def test_bad_ranges_are_refused(cfg):
    for key, value in (("n_neighbours", [3, 1]), ("neighbour_radius_arcsec", [1.5, 0.3])):
        bad = dict(cfg, **{key: value})
        with pytest.raises(ValueError, match=key):
            simulate_blends(1, "blended", "lsst", bad, rng_for(1, "t"), progress=False)
    with pytest.raises(ValueError, match="sample"):
        simulate_blends(1, "lonely", "lsst", cfg, rng_for(1, "t"), progress=False)


# ----------------------------------------------------------------------------- normalisation
def test_normalise_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 4, 8, 8)) * np.array([10.0, 1e3, 1e5, 3.0])[None, :, None, None]
    scales = np.array([50.0, 2e3, 4e5, 7.0])
    y = normalise(x, scales)
    assert y.shape == x.shape and np.all(np.abs(y) < 1)
    np.testing.assert_allclose(y, np.tanh(np.arcsinh(x / (scales[None, :, None, None] / 2.5))), rtol=1e-12)
    np.testing.assert_allclose(denormalise(y, scales), x, rtol=1e-9, atol=1e-9)
    x32 = x.astype(np.float32)
    assert normalise(x32, scales).dtype == np.float32
    np.testing.assert_allclose(denormalise(normalise(x32, scales), scales), x32, rtol=1e-3, atol=1e-3)
    assert np.all(np.isfinite(denormalise(np.ones((1, 4, 2, 2)), scales)))   # ±1 clipped, not infinite
    with pytest.raises(ValueError):
        normalise(x, scales[:3] * 0)


# ----------------------------------------------------------------------------- drawing
def test_renderer_matches_galsim_direct_drawing():
    """A sheared, shifted galaxy through the k-space renderer equals GalSim's drawImage of profile ⊗ PSF ⊗ native
    pixel sampled on the grid (the exact resampling), LSST pixels on the 0.1″ grid and NISP's 0.3″ pixels too."""
    import galsim

    bands = band_set("lsst_euclid")
    r = BlendRenderer(bands, 0.1, 64)
    g1, g2 = 0.3, -0.1
    k = r.kimage(("exponential", 0.4, _shear_matrix(g1, g2)), 0.7, -0.3)
    images = r.render(k[None] * np.ones((len(bands), 1, 1)))
    prof = galsim.Exponential(half_light_radius=0.4).shear(g1=g1, g2=g2).shift(0.7, -0.3)
    for i in (2, 6, 8):
        b = bands[i]
        ref = galsim.Convolve(prof, b.psf(), galsim.Pixel(max(b.pixel_scale_arcsec, 0.1))).drawImage(
            nx=64, ny=64, scale=0.1, method="no_pixel").array
        np.testing.assert_allclose(images[i], ref, atol=1e-3 * ref.max())


def test_shapes_columns_and_geometry(cfg):
    out, table = simulate_blends(12, "blended", "lsst_euclid", cfg, rng_for(3, "t"), progress=False)
    names = list(BAND_SETS["lsst_euclid"])
    assert out["blend"].shape == out["isolated"].shape == (12, 10, 64, 64)
    assert out["noise_sigma"].shape == (12, 10)
    assert out["catalogue"].shape == (12, 4, len(catalogue_columns(names)))
    assert all(a.dtype == np.float32 for a in out.values())
    for col in ["blend_id", "source_id", "kind", "n_galaxies", "blendedness", "neighbour_distance_arcsec",
                "neighbour_mag_r"] + [f"mag_{b}" for b in names] + [f"snr_{b}" for b in names]:
        assert col in table, col
    assert table["n_galaxies"].between(1, 4).all() and table["n_galaxies"].nunique() > 1
    assert (table["kind"] == "parametric").all() and table["blend_id"].is_unique
    cols = catalogue_columns(names)
    cat = out["catalogue"]
    for i, n in enumerate(table["n_galaxies"]):
        assert np.isfinite(cat[i, :n]).all() and np.isnan(cat[i, n:]).all()
        dx = cat[i, 1:n, cols.index("dx_arcsec")] - cat[i, 0, cols.index("dx_arcsec")]
        dy = cat[i, 1:n, cols.index("dy_arcsec")] - cat[i, 0, cols.index("dy_arcsec")]
        radius = np.hypot(dx, dy)
        assert np.all((radius >= 0.325 - 1e-5) & (radius <= 1.5 + 1e-5))
        # the brightest galaxy is the central one; its magnitudes are the table's
        assert cat[i, 0, cols.index("mag_r")] <= np.nanmin(cat[i, :n, cols.index("mag_r")]) + 1e-5
        assert cat[i, 0, cols.index("mag_r")] == pytest.approx(table["mag_r"][i], abs=1e-4)
        if n > 1:
            assert table["neighbour_distance_arcsec"][i] == pytest.approx(radius.min(), abs=1e-5)
            assert 0 < table["blendedness"][i] < 1
        else:
            assert np.isnan(table["neighbour_distance_arcsec"][i]) and table["blendedness"][i] == 0
    # the blend holds more light than the central galaxy alone where there are neighbours
    multi = table["n_galaxies"].to_numpy() > 1
    excess = (out["blend"] - out["isolated"]).sum(axis=(2, 3))[:, 2]
    assert np.all(excess[multi] > 0)

    iso, iso_table = simulate_blends(5, "isolated", "lsst", cfg, rng_for(3, "t"), progress=False)
    assert iso["blend"].shape == (5, 6, 64, 64) and (iso_table["n_galaxies"] == 1).all()
    assert np.isnan(iso["catalogue"][:, 1:]).all() and (iso_table["blendedness"] == 0).all()


def test_same_seed_same_arrays(cfg):
    a, ta = simulate_blends(4, "blended", "lsst", cfg, rng_for(5, "t"), progress=False)
    b, tb = simulate_blends(4, "blended", "lsst", cfg, rng_for(5, "t"), progress=False)
    c, _ = simulate_blends(4, "blended", "lsst", cfg, rng_for(6, "t"), progress=False)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    pd.testing.assert_frame_equal(ta, tb)
    assert not np.array_equal(a["blend"], c["blend"])
    s1, s2 = normalisation_scales(cfg, "lsst", 5), normalisation_scales(cfg, "lsst", 5)
    np.testing.assert_array_equal(s1, s2)
    assert s1.shape == (6,) and np.all(s1 > 0)


def test_normalisation_scale_is_the_configured_quantile_of_the_peaks(cfg):
    """peak_quantile 1 is the study's I_b (the largest pixel of the calibration set); a smaller quantile is
    smaller in every band, and the median lies between the extremes."""
    def scales(q):
        return normalisation_scales({**cfg, "normalisation": {**cfg["normalisation"], "peak_quantile": q}}, "lsst", 5)

    top, median, low = scales(1.0), scales(0.5), scales(0.01)
    assert np.all(low < median) and np.all(median < top)


def test_noise_sigma_matches_the_sky_level(cfg):
    """(noisy − noiseless) away from the galaxy has the sky's σ = √(sky per grid pixel) in every band."""
    out, _ = simulate_blends(6, "isolated", "lsst_euclid", cfg, rng_for(8, "t"), progress=False)
    bands = bands_for(cfg, "lsst_euclid")
    sky = np.array([b.sky_per_pixel(0.1) for b in bands])
    np.testing.assert_allclose(out["noise_sigma"], np.tile(np.sqrt(sky), (6, 1)), rtol=1e-6)
    resid = (out["blend"] - out["isolated"]).astype(np.float64)
    border = np.ones((64, 64), bool)
    border[10:-10, 10:-10] = False               # pixels beyond 2.2″ from the centre
    std = resid[:, :, border].transpose(1, 0, 2).reshape(10, -1).std(axis=1)
    np.testing.assert_allclose(std, np.sqrt(sky), rtol=0.05)
    mean = resid[:, :, border].mean(axis=(0, 2))
    assert np.all(np.abs(mean) < 0.05 * np.sqrt(sky))     # sky-subtracted


@pytest.mark.parametrize("band_set_name", ["lsst", "lsst_euclid"])
def test_isolated_flux_matches_catalogue_magnitude(compact_cfg, band_set_name):
    """The noiseless central galaxy's flux on the stamp is its catalogue magnitude through the zero point and
    exposure within 1 % in every band (flux conservation of the drawing and resampling)."""
    out, table = simulate_blends(4, "isolated", band_set_name, compact_cfg, rng_for(9, "t"), progress=False)
    for i, b in enumerate(bands_for(compact_cfg, band_set_name)):
        expected = b.electrons(table[f"mag_{b.name}"].to_numpy())
        np.testing.assert_allclose(out["isolated"][:, i].sum(axis=(1, 2)), expected, rtol=0.01, err_msg=b.name)


def test_single_galaxy_without_noise_is_given_back(compact_cfg):
    """A one-galaxy "blend" with the noise switched off (no source noise, a negligible sky) is the galaxy."""
    c = copy.deepcopy(compact_cfg)
    c["survey_overrides"] = {b: {"sky_brightness": 60.0} for b in BAND_SETS["lsst"]}
    c["source_poisson"] = False
    c["n_neighbours"] = [0, 0]
    out, _ = simulate_blends(3, "blended", "lsst", c, rng_for(2, "t"), progress=False)
    np.testing.assert_allclose(out["blend"], out["isolated"], atol=1e-3 * out["isolated"].max())


def test_colours_follow_the_sed_model(cfg):
    """Bulge-dominated galaxies are redder (g − i) than pure disks; every galaxy's r magnitude is within mag_r."""
    _, table = simulate_blends(40, "isolated", "lsst", cfg, rng_for(4, "t"), progress=False)
    lo, hi = cfg["galaxies"]["mag_r"]
    assert table["mag_r"].between(lo, hi).all()
    colour = table["mag_g"] - table["mag_i"]
    bulgy, disky = table["bulge_to_total"] > 0.5, table["bulge_to_total"] == 0
    assert colour[bulgy].median() > colour[disky].median() + 0.3


# ----------------------------------------------------------------------------- the workflow script
def _fake_stamps(n=4, size=32):
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    images = np.stack([np.exp(-0.5 * (x**2 + (y / (1 + 0.2 * i)) ** 2) / 9.0) for i in range(n)]).astype(np.float32)
    meta = pd.DataFrame({"source_id": [f"cosmos-{i}" for i in range(n)], "kind": ["cosmos"] * (n - 1) + ["parametric"],
                         "pixel_scale_arcsec": [0.03] * n})
    return images, meta


def test_script_writes_shards_that_gather(tmp_path, cfg):
    from sourcelens.io import write_dataset

    images, meta = _fake_stamps()
    stamps = tmp_path / "stamps_val.h5"
    write_dataset(stamps, {"images": images}, meta, kind="stamps")
    config = validate_config({"blends": {"galaxies": {"cosmos_fraction": 0.5},
                                         "normalisation": {"n_calibration": 5}}})
    shards = []
    for shard, n in ((0, 3), (1, 2)):
        out = tmp_path / f"shard_{shard}.h5"
        runpy.run_path(str(REPO / "scripts" / "simulate_blends.py"), init_globals={"snakemake": SimpleNamespace(
            input=SimpleNamespace(stamps=str(stamps)), output=[str(out)], log=[str(tmp_path / f"{shard}.log")],
            wildcards=SimpleNamespace(bands="lsst", sample="blended", split="val", shard=str(shard)),
            params=SimpleNamespace(blends=config["blends"], n=n, seed=config["seed"]), config=config)})
        shards.append(out)
    gathered = tmp_path / "blends_lsst_blended_val.h5"
    concatenate_datasets(shards, gathered)
    arrays, table = read_dataset(gathered)
    attrs = read_attrs(gathered)
    assert arrays["blend"].shape == (5, 6, 64, 64) and len(table) == 5 and table["blend_id"].is_unique
    assert attrs["kind"] == "blends" and attrs["bands"] == list("ugrizy") and attrs["pixel_scale_arcsec"] == 0.2
    assert len(attrs["normalisation_scale"]) == 6 and attrs["n_shards"] == 2
    assert set(attrs["zero_point"]) == set("ugrizy") and attrs["split"] == "val"
    assert read_array_attrs(gathered)["catalogue"]["columns"] == catalogue_columns(list("ugrizy"))
    # real galaxies come from the kind-cosmos stamps only
    real = table[table["kind"] == "cosmos"]
    assert set(real["source_id"]) <= {"cosmos-0", "cosmos-1", "cosmos-2"}
    assert (table["kind"] == "parametric").any() or len(real) == 5
