import os
import stat

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.cli import main
from sourcelens.data import PairsDataset, StampsDataset
from sourcelens.data import H5ArrayDataset
from sourcelens.io import (DatasetError, atomic_path, concatenate_datasets, read_attrs, read_dataset, read_meta,
                           write_dataset, write_json)


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
    with pytest.raises(DatasetError, match=r"has no array\(s\) \['images'\]"):
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


# --------------------------------------------------------------------------------------------
# corrupt inputs are named; outputs are readable by others; stale partial files are removed


def _truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _not_hdf5(path):
    path.write_text("this is not an HDF5 file\n")


def _drop(name):
    def damage(path):
        with h5py.File(path, "a") as fh:
            del fh[name]
    return damage


def _damage_chunks(path):
    """Overwrite bytes in the middle of the file (the compressed chunks), keeping its size."""
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\xff" * 512)


READERS = {
    "read_dataset": lambda p: read_dataset(p),
    "read_meta": lambda p: read_meta(p),
    "read_attrs": lambda p: read_attrs(p),
    "concatenate_datasets": lambda p: concatenate_datasets([p], p.with_name("all.h5")),
    "H5ArrayDataset": lambda p: H5ArrayDataset(p, "lensed"),
}
DAMAGES = {  # how a file is broken -> what the message must say, and the readers that must notice
    "truncated": (_truncate, "is truncated", tuple(READERS)),
    "not_hdf5": (_not_hdf5, "is not an HDF5 file", tuple(READERS)),
    "no_meta": (_drop("meta"), "has no 'meta' group", ("read_dataset", "read_meta", "concatenate_datasets")),
    "no_array": (_drop("lensed"), "has no array(s) ['lensed']", ("H5ArrayDataset",)),
    "damaged_chunks": (_damage_chunks, "is a damaged HDF5 file", ("read_dataset", "concatenate_datasets")),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupt_input_is_named_with_the_fix(tmp_path, damage):
    """Every reader raises a DatasetError (a ValueError) naming the file, the problem and the fix."""
    breaker, problem, readers = DAMAGES[damage]
    for reader in readers:
        path = _write(tmp_path / f"{reader}.h5", n=64)
        breaker(path)
        with pytest.raises(DatasetError) as info:
            READERS[reader](path)
        message = str(info.value)
        assert isinstance(info.value, ValueError)
        assert str(path) in message and problem in message, (reader, message)
        assert f"snakemake --forcerun {path}" in message and "--rerun-incomplete" in message, (reader, message)


def test_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "missing.h5")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_outputs_get_the_umask_permissions(tmp_path, umask, mode):
    """Outputs are as readable as a plain open() would make them (not mkstemp's 0600)."""
    old = os.umask(umask)
    try:
        outputs = [_write(tmp_path / "a.h5"), write_json({"a": 1}, tmp_path / "a.json")]
        with atomic_path(tmp_path / "plain.txt") as tmp:
            tmp.write_text("x")
        outputs.append(tmp_path / "plain.txt")
        with open(tmp_path / "reference.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "reference.txt").st_mode) == mode
    for out in outputs:
        assert stat.S_IMODE(os.stat(out).st_mode) == mode, out


def test_stale_parts_of_the_same_output_are_removed(tmp_path):
    """A killed write leaves .{name}.XXXXXXXX.part; the next write of that output removes it, only its."""
    stale = [tmp_path / ".out.h5.ab12cd_9.part", tmp_path / ".out.h5.zzzzzzzz.part"]
    others = [tmp_path / ".other.h5.ab12cd_9.part", tmp_path / ".out.h5.x.ab12cd_9.part",
              tmp_path / ".out.h5.short.part", tmp_path / "out.h5.ab12cd_9.part"]
    for path in stale + others:
        path.write_text("half")
    _write(tmp_path / "out.h5")
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in others)
    assert read_dataset(tmp_path / "out.h5")[0]["lensed"].shape == (5, 8, 8)


def test_cli_info_nested_groups_and_scalars(tmp_path, capsys):
    path = _write(tmp_path / "a.h5")
    with h5py.File(path, "a") as fh:
        fh.create_dataset("grp/sub/deep", data=np.arange(6.0).reshape(2, 3))
        fh["grp"].create_dataset("flags", data=np.array([1, 0, 1]))
        fh["grp"].attrs["note"] = "nested"
        fh["scalar"] = 2.5
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("/grp/  (group, 2 members) note=nested", "/grp/sub/", "/grp/sub/deep", "(2, 3)",
                 "/grp/flags", "/scalar", "min=2.5", "/lensed", "distinct source_id: 5"):
        assert text in out, text


def test_cli_info_closes_the_files_it_opens(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "a.h5")
    opened = []

    class TrackedFile(h5py.File):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed_by_caller = False
            opened.append(self)

        def close(self):
            self.closed_by_caller = True
            super().close()

    monkeypatch.setattr(h5py, "File", TrackedFile)
    assert main(["info", str(path)]) == 0
    assert opened and all(f.closed_by_caller for f in opened), f"{len(opened)} opened"


def test_cli_info_corrupt_file(tmp_path, capsys):
    path = _write(tmp_path / "a.h5")
    _truncate(path)
    good = _write(tmp_path / "b.h5")
    assert main(["info", str(path), str(good)]) == 1
    captured = capsys.readouterr()
    assert f"sourcelens info: {path} is truncated" in captured.err and "Traceback" not in captured.err
    assert "--forcerun" in captured.err
    assert "/lensed" in captured.out  # the good file is still described


def _checkpoint_folder(path, with_progress=True):
    (path / "stage0_mse").mkdir(parents=True)
    (path / "stage0_mse" / "last.ckpt").write_bytes(b"weights")
    if with_progress:
        (path / "progress.json").write_text('{"fingerprint": "abc", "finished": {}}')
    return path


def test_cli_clean_checkpoints(tmp_path, capsys, monkeypatch):
    ckpt = _checkpoint_folder(tmp_path / "vae_checkpoints")
    other = _checkpoint_folder(tmp_path / "my_results", with_progress=False)
    assert main(["clean-checkpoints", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert f"removed {ckpt} (2 files)" in out and str(ckpt / "stage0_mse" / "last.ckpt") in out
    assert not ckpt.exists()
    # a folder without progress.json is refused (and kept); the others are still cleaned
    ckpt = _checkpoint_folder(tmp_path / "vae_checkpoints")
    assert main(["clean-checkpoints", str(other), str(ckpt)]) == 1
    captured = capsys.readouterr()
    assert str(other) in captured.err and "progress.json" in captured.err
    assert other.exists() and (other / "stage0_mse" / "last.ckpt").exists() and not ckpt.exists()
    # default: results/checkpoints/* of the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["clean-checkpoints"]) == 0
    assert "no checkpoint folders match results/checkpoints/*" in capsys.readouterr().out
    _checkpoint_folder(tmp_path / "results" / "checkpoints" / "vae")
    assert main(["clean-checkpoints"]) == 0
    assert "removed results/checkpoints/vae (2 files)" in capsys.readouterr().out
    assert not (tmp_path / "results" / "checkpoints" / "vae").exists()


def test_provenance_cites_the_galaxies_and_sits_beside_tables(tmp_path):
    """Every record names the data's references: the COSMOS papers and the shipped sample's origin (licence) when
    COSMOS galaxies are used, the XDF's when it is; a table gets its record beside it."""
    import json

    import pandas as pd

    from sourcelens.io import provenance, provenance_path, write_table

    cfg = {"sources": {"kinds": ["cosmos", "parametric"], "cosmos": {"sample": "cosmos_btk_ext26"}}}
    record = provenance(cfg, rule="x")
    cites = record["data_citations"]
    assert any("Koekemoer" in c for c in cites) and any("Mandelbaum" in c for c in cites)
    assert any("cosmos_btk_ext26" in c and "MIT" in c for c in cites)
    downloaded = provenance({"sources": {"kinds": ["cosmos"], "cosmos": {"dir": "/data/COSMOS_25.2"}}})
    assert not any("cosmos_btk_ext26" in c for c in downloaded["data_citations"])
    assert any("Koekemoer" in c for c in downloaded["data_citations"])
    assert provenance({"sources": {"kinds": ["parametric"]}})["data_citations"] == []
    assert any("eXtreme Deep Field" in c for c in provenance({"sources": {"kinds": ["xdf"]}})["data_citations"])
    path = write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv", record)
    side = provenance_path(path)
    assert side.name == "t.provenance.json" and json.loads(side.read_text())["data_citations"] == cites
