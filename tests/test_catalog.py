"""Catalogue reading, the study cuts and the galaxies of the real COSMOS samples shipped with sourcelens."""

import numpy as np
import pytest

from sourcelens.catalog import CatalogueError, find_catalogue_file, read_cosmos_catalogue, select_cosmos
from sourcelens.sources import cosmos_fit_galaxies, cosmos_galaxies


def test_read_catalogue_columns(example_params_dir):
    cat = read_cosmos_catalogue(example_params_dir)
    assert len(cat) == 100
    assert {"ident", "mag", "zphot", "size_arcsec"} <= set(cat.columns)
    assert np.isfinite(cat["zphot"]).all() and (cat["size_arcsec"] > 0).all()


def test_galsim_exclusion_and_cuts_table(example_params_dir):
    sel, table = select_cosmos(example_params_dir, None, "marginal",
                               {"mag_max": 23.0, "zphot_min": 0.3, "min_size_arcsec": 0.2})
    rows = table.set_index("cut")
    assert rows.loc["galsim_exclusion", "n_kept"] == 96  # GalSim's own 'marginal' selection
    # each cut's n_in is the previous cut's n_kept, and the final count is the selection
    assert (table["n_in"].to_numpy()[1:] == table["n_kept"].to_numpy()[:-1]).all()
    assert (table["n_in"] - table["n_kept"] == table["n_removed"]).all()
    assert table["n_kept"].iloc[-1] == len(sel)
    assert (sel["mag"] <= 23.0).all() and (sel["zphot"] >= 0.3).all() and (sel["size_arcsec"] >= 0.2).all()


def test_exclusion_without_selection_file_is_recorded(btk_dir):
    sel, table = select_cosmos(btk_dir, None, "marginal", {})
    row = table.set_index("cut").loc["galsim_exclusion"]
    assert "not applied" in row["description"] and row["n_kept"] == 100


def test_empty_selection_names_the_cut(example_params_dir):
    with pytest.raises(CatalogueError, match="cut 'magnitude'"):
        select_cosmos(example_params_dir, None, "none", {"mag_max": 10.0})


def test_missing_directory_and_file(tmp_path, example_params_dir):
    with pytest.raises(CatalogueError, match="directory not found.*nowhere"):
        find_catalogue_file(tmp_path / "nowhere")
    with pytest.raises(CatalogueError, match="catalogue file not found"):
        find_catalogue_file(example_params_dir, "real_galaxy_catalog_99.fits")
    with pytest.raises(CatalogueError, match="expected exactly one"):
        find_catalogue_file(tmp_path)


def test_missing_image_files_named(example_params_dir):
    sel, _ = select_cosmos(example_params_dir, None, "none", {})
    with pytest.raises(CatalogueError, match=r"real_galaxy_images.fits.*missing.*cosmos_fit"):
        next(cosmos_galaxies(sel, example_params_dir, None))


def test_shipped_samples_are_complete_with_licence_and_citations():
    import hashlib

    from sourcelens.samples import GALAXIES, SAMPLES, sample_dir

    for line in (GALAXIES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((GALAXIES / name).read_bytes()).hexdigest() == digest, name
    readme = (GALAXIES / "README.md").read_text()
    for name in SAMPLES:
        assert (sample_dir(name) / "LICENSE").is_file() and name in readme
    for ref in ("Koekemoer", "Mandelbaum", "MIT", "BSD-3-Clause"):
        assert ref in readme
    with pytest.raises(ValueError, match="unknown shipped galaxy sample"):
        sample_dir("cosmos_25.2")


def test_real_galaxies_of_the_shipped_sample(btk_dir):
    """All 100 galaxies: unique ids from the catalogue, 0.03" stamps whose background scatter is the catalogue's
    noise sigma, and an HST PSF for each."""
    import galsim

    from sourcelens.stamps import estimate_noise_sigma

    sel, _ = select_cosmos(btk_dir, None, "none", {})
    gals = list(cosmos_galaxies(sel, btk_dir, None))
    assert len(gals) == 100 and len({g.source_id for g in gals}) == 100
    assert [g.source_id for g in gals] == [f"cosmos-{i}" for i in sel["ident"]]
    assert all(g.kind == "cosmos" and g.pixel_scale_arcsec == pytest.approx(0.03) and g.truth is None for g in gals)
    ratio = np.array([estimate_noise_sigma(g.image) / g.noise_sigma for g in gals])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.15), np.median(ratio)
    rgc = galsim.RealGalaxyCatalog(find_catalogue_file(btk_dir).name, dir=str(btk_dir))
    for i in sel["index"].head(10):
        psf = rgc.getPSFImage(int(i))
        peak = np.unravel_index(psf.array.argmax(), psf.array.shape)
        assert psf.scale == pytest.approx(0.03) and abs(psf.array.sum() - 1) < 0.05
        assert np.allclose(peak, (np.array(psf.array.shape) - 1) / 2, atol=1)    # centred


def test_cosmos_fit_galaxies(example_params_dir):
    """GalSim's fitted profiles with each galaxy's PSF: the truth noiseless, the image the truth plus noise of
    the catalogue's sigma, reproducible per seed."""
    sel, _ = select_cosmos(example_params_dir, None, "marginal", {})
    assert len(sel) == 96
    a = list(cosmos_fit_galaxies(sel.head(4), example_params_dir, None, np.random.default_rng(1)))
    b = list(cosmos_fit_galaxies(sel.head(4), example_params_dir, None, np.random.default_rng(1)))
    c = list(cosmos_fit_galaxies(sel.head(4), example_params_dir, None, np.random.default_rng(2)))
    for g, h, k, row in zip(a, b, c, sel.head(4).itertuples()):
        assert g.kind == "cosmos_fit" and g.source_id == f"cosmosfit-{row.ident}"
        assert np.array_equal(g.image, h.image) and not np.array_equal(g.image, k.image)
        assert np.array_equal(g.truth, k.truth) and g.truth.sum() > 0
        assert g.noise_sigma == pytest.approx(np.sqrt(row.noise_variance))
        assert np.std(g.image - g.truth) == pytest.approx(g.noise_sigma, rel=0.05)
        assert g.truth[0].max() < 5e-3 * g.truth.max()     # the stamp holds the galaxy (16 half-light radii)
    quiet = next(cosmos_fit_galaxies(sel.head(1), example_params_dir, None, np.random.default_rng(1), noise=False))
    assert np.array_equal(quiet.image, quiet.truth) and quiet.noise_sigma == 0
