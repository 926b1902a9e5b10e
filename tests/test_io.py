import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.cli import main
from sourcelens.data import PairsDataset, StampsDataset
from sourcelens.io import atomic_path, concatenate_datasets, read_attrs, read_dataset, write_dataset


def _write(path, n=5, offset=0):
    rng = np.random.default_rng(offset)
    arrays = {"lensed": rng.random((n, 8, 8), dtype=np.float32), "lens_params": rng.random((n, 8)).astype(np.float32)}
    arrays["source"] = arrays["lensed"] * 2
    meta = pd.DataFrame({"source_id": [f"s{offset + i}" for i in range(n)], "theta_E": rng.random(n)})
    return write_dataset(path, arrays, meta, kind="pairs", attrs={"provenance": {"config": {"seed": 1}}, "pixel_scale_arcsec": 0.08},
                         array_attrs={"lensed": {"units": "e-/s"}})


def test_roundtrip_and_subset(tmp_path):
    path = _write(tmp_path / "a.h5")
    arrays, meta = read_dataset(path)
    assert arrays["lensed"].shape == (5, 8, 8) and list(meta["source_id"]) == [f"s{i}" for i in range(5)]
    sub, sub_meta = read_dataset(path, ("lensed",), np.array([3, 1]))
    assert np.array_equal(sub["lensed"], arrays["lensed"][[3, 1]]) and list(sub_meta["source_id"]) == ["s3", "s1"]
    attrs = read_attrs(path)
    assert attrs["kind"] == "pairs" and attrs["provenance"]["config"]["seed"] == 1
    with h5py.File(path) as fh:
        assert fh["lensed"].attrs["units"] == "e-/s" and fh["lensed"].compression == "gzip"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="'lensed' has 3 rows"):
        write_dataset(target, {"lensed": np.zeros((3, 2, 2))}, pd.DataFrame({"a": [1, 2]}), kind="pairs")
    assert not list(tmp_path.iterdir())


def test_concatenate_shards(tmp_path):
    a, b = _write(tmp_path / "a.h5", 3, 0), _write(tmp_path / "b.h5", 4, 10)
    out = concatenate_datasets([a, b], tmp_path / "all.h5")
    arrays, meta = read_dataset(out)
    assert arrays["lensed"].shape == (7, 8, 8) and meta["source_id"].tolist()[3] == "s10"
    assert read_attrs(out)["n_shards"] == 2


def test_torch_datasets(tmp_path):
    path = _write(tmp_path / "a.h5")
    ds = PairsDataset(path)
    lensed, source, params = ds[2]
    assert lensed.shape == (1, 8, 8) and params.shape == (8,) and lensed.dtype == torch.float32
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    assert next(iter(loader))[0].shape == (2, 1, 8, 8)
    with pytest.raises(KeyError, match="images"):
        StampsDataset(path)


def test_cli_info_and_check_config(tmp_path, capsys, repo):
    path = _write(tmp_path / "a.h5")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "/lensed" in out and "(5, 8, 8)" in out and "distinct source_id: 5" in out
    assert main(["info", str(tmp_path / "missing.h5")]) == 1
    assert main(["check-config", str(repo / "config" / "tiny.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("stamps: {size: 4}\n")
    assert main(["check-config", str(bad)]) == 1
    assert "stamps/size" in capsys.readouterr().err
