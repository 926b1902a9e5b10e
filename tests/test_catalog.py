"""Catalogue reading and the study cuts, on the real COSMOS samples in ../shared/galaxies."""

import numpy as np
import pytest

from sourcelens.catalog import CatalogueError, find_catalogue_file, read_cosmos_catalogue, select_cosmos
from sourcelens.sources import cosmos_galaxies


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
    with pytest.raises(CatalogueError, match=r"real_galaxy_images.fits.*missing"):
        next(cosmos_galaxies(sel, example_params_dir, None, "real"))


def test_real_and_parametric_cosmos_galaxies(btk_dir, example_params_dir):
    sel, _ = select_cosmos(btk_dir, None, "none", {"mag_max": 24.0})
    gals = list(cosmos_galaxies(sel.head(5), btk_dir, None, "real"))
    assert len(gals) == 5 and all(g.pixel_scale_arcsec == pytest.approx(0.03) for g in gals)
    assert all(g.source_id.startswith("cosmos-") and np.isfinite(g.image).all() for g in gals)
    sel2, _ = select_cosmos(example_params_dir, None, "marginal", {})
    par = list(cosmos_galaxies(sel2.head(3), example_params_dir, None, "parametric"))
    assert len(par) == 3 and all(g.image.sum() > 0 for g in par)
