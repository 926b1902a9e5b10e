import galsim
import numpy as np
import pandas as pd
import pytest

from sourcelens.diversity import diversity_table, measure_sources, nearest_neighbour_correlation


def _sersic(n: float, hlr: float, e1: float = 0.0, size: int = 48) -> np.ndarray:
    gal = galsim.Sersic(n=n, half_light_radius=hlr).shear(e1=e1, e2=0.0)
    return gal.drawImage(nx=size, ny=size, scale=1.0, method="no_pixel").array.astype(float)


def test_measure_sources_recovers_profile_and_shape():
    """Sérsic index from the fit and HSM |e| from the truth, against what was drawn (noise on the image only)."""
    rng = np.random.default_rng(3)
    truths = np.stack([_sersic(1.0, 4.0, 0.3), _sersic(4.0, 3.0, 0.0)])
    truths /= truths.max(axis=(1, 2), keepdims=True)
    images = truths + rng.normal(0, 0.005, truths.shape)
    meta = pd.DataFrame({"source_id": ["a", "b"], "kind": "parametric", "noise_sigma": 0.005,
                         "hlr_arcsec": [0.12, 0.09], "flux_linear": True})
    out = measure_sources({"images": images, "images_noiseless": truths}, meta)
    assert out["sersic_n"].to_numpy() == pytest.approx([1.0, 4.0], rel=0.2)
    assert out["ellipticity"].iloc[0] == pytest.approx(0.3, abs=0.05) and out["ellipticity"].iloc[1] < 0.05
    assert out["hlr_arcsec"].tolist() == [0.12, 0.09]
    # a stamp not linear in flux gets no Sérsic index
    meta.loc[1, "flux_linear"] = False
    assert np.isnan(measure_sources({"images": images}, meta)["sersic_n"].iloc[1])


def test_nearest_neighbour_finds_copies():
    a, b = _sersic(1.0, 4.0, 0.4), _sersic(4.0, 2.0, 0.0)
    train = np.stack([np.rot90(a), b])
    test = np.stack([np.rot90(a), _sersic(1.0, 8.0, -0.4)])
    best = nearest_neighbour_correlation(test, train, chunk=1)
    assert best[0] == pytest.approx(1.0) and best[1] < 0.99


def test_diversity_table_real_first_with_distances():
    rng = np.random.default_rng(0)
    n = 200
    measured = pd.DataFrame({
        "kind": ["parametric"] * n + ["cosmos"] * n,
        "split": (["train", "test"] * n),
        "hlr_arcsec": np.r_[rng.uniform(0.1, 0.3, n), rng.uniform(0.1, 0.3, n)],
        "sersic_n": np.r_[rng.uniform(2, 4, n), rng.uniform(0.5, 1.5, n)],
        "ellipticity": rng.uniform(0, 0.6, 2 * n),
        "nn_correlation": np.r_[np.where(np.arange(n) % 2, 0.995, 0.9), np.full(n, 0.5)],
    })
    table = diversity_table(measured)
    assert table["kind"].tolist() == ["cosmos", "cosmos", "parametric", "parametric"]
    assert table["split"].tolist() == ["train", "test", "train", "test"]
    param = table[table["kind"] == "parametric"].iloc[0]
    assert param["ks_vs_real_sersic_n"] == 1.0 and param["ks_vs_real_hlr_arcsec"] < 0.2
    assert np.isnan(table.iloc[0]["ks_vs_real_hlr_arcsec"])
    test = table.set_index(["kind", "split"])
    assert test.loc[("parametric", "test"), "near_copy_fraction"] == 1.0
    assert test.loc[("parametric", "train"), "near_copy_fraction"] == 0.0
    assert test.loc[("cosmos", "test"), "nn_correlation_median"] == 0.5
