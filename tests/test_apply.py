"""sourcelens.apply (the code of rules apply_shard and apply_gather): shards of a catalogue through a trained model
give the same as the model on the whole catalogue, in row order; bad catalogues are refused naming the file or rows.
The multi-band deblend task here; encode and fit_posterior run end to end in tests/test_workflow.py."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits

from sourcelens.apply import count_stamps, read_stamps, run_shard, shard_ranges
from sourcelens.io import concatenate_datasets, read_dataset
from sourcelens.models.deblender import Deblender, deblend_images, load_deblender, save_deblender

SIZE = 16
BANDS = ["g", "r", "i"]
ARCH = {"bands": len(BANDS), "image_size": SIZE, "widths": (4, 8), "latent_dim": 4, "hidden_dim": 16}


@pytest.fixture(scope="module")
def deblender(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "deblender.pt"
    save_deblender(Deblender(**ARCH), path, {"bands": BANDS, "scales": [100.0, 200.0, 250.0]})
    return path


def _blends(n: int = 5, seed: int = 0) -> np.ndarray:
    """Two-galaxy blends (n, bands, S, S) in counts with Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((SIZE, SIZE)) - (SIZE - 1) / 2
    central = np.exp(-(xx**2 + yy**2) / 8.0)
    neighbour = np.exp(-((xx - 4) ** 2 + (yy + 3) ** 2) / 4.5)
    flux = rng.uniform(50, 300, (n, len(BANDS), 2))
    img = flux[..., :1, None] * central + flux[..., 1:, None] * neighbour
    return (img + rng.normal(0, 5.0, img.shape)).astype(np.float32)


def _run_in_shards(task, model, catalogue, n, shard_size, folder) -> tuple[dict, pd.DataFrame]:
    outs = []
    for i, (start, stop) in enumerate(shard_ranges(n, shard_size)):
        out = folder / f"shard_{i}.h5"
        run_shard(task, model, catalogue, start, stop, out)
        outs.append(out)
    gathered = folder / "gathered.h5"
    concatenate_datasets(outs, gathered)
    return read_dataset(gathered)   # (arrays, meta)


def test_deblend_shards_of_a_fits_cube_equal_the_whole(deblender, tmp_path):
    blends = _blends(5)
    fits.PrimaryHDU(blends).writeto(tmp_path / "blends.fits")
    assert count_stamps(tmp_path / "blends.fits") == 5
    arrays, meta = _run_in_shards("deblend", deblender, tmp_path / "blends.fits", 5, 2, tmp_path)
    expected = deblend_images(load_deblender(deblender), blends.astype(np.float64))
    assert arrays["central"].shape == (5, len(BANDS), SIZE, SIZE)
    np.testing.assert_allclose(arrays["central"], expected, rtol=1e-4, atol=1e-3)
    assert meta["row"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(meta[[f"flux_{b}" for b in BANDS]].to_numpy(), expected.sum(axis=(2, 3)), rtol=1e-4)


def test_deblend_reads_a_sourcelens_blends_file(deblender, tmp_path):
    """A blends file of rule simulate_blends: its `blend` array, its `blend_id` carried into the output."""
    blends = _blends(3, seed=1)
    path = tmp_path / "blends.h5"
    with h5py.File(path, "w") as fh:
        fh["blend"] = blends
        meta = fh.create_group("meta")
        meta["blend_id"] = np.array([b"a", b"b", b"c"])
    assert count_stamps(path) == 3
    images, table = read_stamps(path, 1, 3)
    assert images.shape == (2, len(BANDS), SIZE, SIZE) and table["blend_id"].tolist() == ["b", "c"]
    _, meta = _run_in_shards("deblend", deblender, path, 3, 2, tmp_path)
    assert meta["blend_id"].tolist() == ["a", "b", "c"]


def test_deblend_refuses_the_wrong_bands_and_single_band_stamps(deblender, tmp_path):
    fits.PrimaryHDU(_blends(2)[:, :2]).writeto(tmp_path / "two_bands.fits")
    with pytest.raises(ValueError, match=r"3 bands \(g r i, in that order\)"):
        run_shard("deblend", deblender, tmp_path / "two_bands.fits", 0, 2, tmp_path / "out.h5")
    fits.PrimaryHDU(_blends(2)[:, 0]).writeto(tmp_path / "stamps.fits")
    with pytest.raises(ValueError, match=r"multi-band blends \(N, B, S, S\)"):
        run_shard("deblend", deblender, tmp_path / "stamps.fits", 0, 2, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_bad_catalogues_are_named(tmp_path):
    bad = _blends(4)
    bad[2, 1, 3, 3] = np.nan
    fits.PrimaryHDU(bad).writeto(tmp_path / "nan.fits")
    with pytest.raises(ValueError, match=r"nan.fits.*rows \[2\]"):
        read_stamps(tmp_path / "nan.fits", 0, 4)
    with h5py.File(tmp_path / "other.h5", "w") as fh:
        fh["pixels"] = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match=r"other.h5.*no 'images' or 'blend' dataset.*pixels"):
        count_stamps(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="missing.fits"):
        count_stamps(tmp_path / "missing.fits")
    fits.PrimaryHDU(np.zeros((2, 8, 6), np.float32)).writeto(tmp_path / "oblong.fits")
    with pytest.raises(ValueError, match="must be square"):
        read_stamps(tmp_path / "oblong.fits", 0, 2)


def test_shard_ranges_cover_every_row_once():
    ranges = shard_ranges(10, 4)
    assert ranges == [(0, 4), (4, 8), (8, 10)]
    assert pd.Series([r for a, b in ranges for r in range(a, b)]).tolist() == list(range(10))
    with pytest.raises(ValueError, match="positive"):
        shard_ranges(10, 0)
