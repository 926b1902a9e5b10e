"""Overview figures: each function on small synthetic data, and the figure scripts end to end."""

from __future__ import annotations

import json
import logging
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import AsinhNorm
from matplotlib.figure import Figure

from sourcelens import plots
from sourcelens.io import save_figure, write_dataset
from sourcelens.names import LENS_PARAMETERS
from sourcelens.selection import select_per_kind

ROOT = Path(__file__).resolve().parents[1]
N, S = 2, 16


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def _blob(n, sigma=2.0, x0=0.0, y0=0.0):
    c = np.arange(n) - n / 2 + 0.5
    x, y = np.meshgrid(c, c)
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2)).astype(np.float32)


def _ring(n, radius=5.0, width=1.0):
    c = np.arange(n) - n / 2 + 0.5
    x, y = np.meshgrid(c, c)
    return np.exp(-((np.hypot(x, y) - radius) ** 2) / (2 * width**2)).astype(np.float32)


def _lens_params(rng, n):
    p = np.zeros((n, 8), dtype=np.float32)
    p[:, 0] = rng.uniform(0.5, 1.5, n)
    p[:, 1] = 2.0
    p[:, 2:4] = rng.normal(0, 0.1, (n, 2))
    p[:, 4:6] = rng.normal(0, 0.05, (n, 2))
    p[:, 6:8] = rng.normal(0, 0.02, (n, 2))
    return p


def _pairs(rng, n=N, s=S):
    source = np.stack([_blob(s, 1.5) for _ in range(n)])
    noiseless = np.stack([_ring(s) * (i + 1) for i in range(n)])
    sigma = np.full((n, s, s), 0.05, dtype=np.float32)
    lensed = (noiseless + rng.normal(0, 0.05, noiseless.shape)).astype(np.float32)
    return source, noiseless, lensed, sigma


def _filter_table():
    return pd.DataFrame({
        "stage": ["catalogue", "catalogue", "stamps", "catalogue"],
        "cut": ["magnitude", "exclusion", "size", "detection"],
        "description": [
            "magnitude brighter than the limit", "GalSim exclusion level 'marginal'",
            "the galaxy fits in the stamp after rescaling by at most the largest shrink factor allowed",
            "detected above 3 sigma",
        ],
        "n_in": [100, 80, 70, 50], "n_kept": [80, 70, 60, 40], "n_removed": [20, 10, 10, 10],
        "source_kind": ["cosmos", "cosmos", "cosmos", "xdf"],
    })


def _check_saves(fig, tmp_path, name="fig.png"):
    out = save_figure(fig, tmp_path / name, dpi=40)
    assert out.exists() and out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pair_examples(rng, tmp_path):
    source, noiseless, lensed, sigma = _pairs(rng)
    fig = plots.pair_examples(
        source, noiseless, lensed, 0.08, lens_params=_lens_params(rng, N), noise_sigma=sigma,
        row_labels=[f"id{i}" for i in range(N)],
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * N + N  # images + one colourbar per row
    images = [ax.images[0] for ax in fig.axes[: 3 * N]]
    # one colour scale per row, arcsec extent centred on the image
    assert images[0].norm is images[1].norm is images[2].norm
    assert np.allclose(images[0].get_extent(), [-0.64, 0.64, -0.64, 0.64])
    assert "id0" in fig.axes[0].get_ylabel()
    _check_saves(fig, tmp_path)


def test_pair_examples_minimal_and_linear(rng, tmp_path):
    source, noiseless, lensed, _ = _pairs(rng, n=1)
    fig = plots.pair_examples(source[0], noiseless[0], lensed[0], 0.05, stretch="linear")
    assert len(fig.axes) == 4
    with pytest.raises(ValueError):
        plots.pair_examples(source, noiseless, lensed, 0.05, stretch="log")
    with pytest.raises(ValueError):
        plots.pair_examples(source, noiseless[:0], lensed, 0.05)


def test_lens_parameter_histograms(rng, tmp_path):
    tables = []
    for split, n in (("train", 40), ("val", 10), ("test", 20)):
        df = pd.DataFrame(_lens_params(rng, n), columns=LENS_PARAMETERS)
        df["split"] = split
        tables.append(df)
    df = pd.concat(tables, ignore_index=True)
    df.loc[0, "theta_E"] = np.nan  # NaNs are skipped
    fig = plots.lens_parameter_histograms(df, by="split")
    assert len(fig.axes) == 8
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "train (N=40)", "val (N=10)", "test (N=20)"
    ]
    # gamma is fixed at 2 (SIS-like): the panel says so
    assert any("fixed" in t.get_text() for t in fig.axes[1].texts)
    _check_saves(fig, tmp_path)
    with pytest.raises(KeyError):
        plots.lens_parameter_histograms(df.drop(columns="gamma2"))


def test_stamps_by_kind(rng, tmp_path):
    kinds = ["xdf", "parametric", "xdf", "cosmos", "parametric", "parametric"]
    images = np.stack([_blob(S, 1 + i % 3) for i in range(len(kinds))])
    ids = [f"src{i}" for i in range(len(kinds))]
    fig = plots.stamps_by_kind(
        images, kinds, ids, 2, pixel_scales=[0.12, 0.03, 0.12, 0.03, 0.03, 0.03],
        magnitudes=np.linspace(20, 24, len(kinds)), redshifts=[np.nan, 1.0, 0.5, 2.0, np.nan, np.nan],
        kind_counts={"xdf": 10, "parametric": 20, "cosmos": 5},
    )
    assert len(fig.axes) == 3 * 2 + 1  # kinds x n_per_kind + colourbar
    # rows in the fixed kind order; a kind with fewer stamps leaves blank panels
    assert fig.axes[0].get_ylabel().startswith("COSMOS") and "N = 5" in fig.axes[0].get_ylabel()
    assert fig.axes[2].get_ylabel().startswith("parametric")
    assert not fig.axes[1].axison
    _check_saves(fig, tmp_path)


def test_select_per_kind():
    kinds = np.array(["a"] * 5 + ["b"] * 2)
    idx = select_per_kind(kinds, 3, seed=1)
    assert len(idx) == 5 and np.all(np.diff(idx) > 0)
    assert (kinds[idx] == "a").sum() == 3 and (kinds[idx] == "b").sum() == 2
    assert np.array_equal(idx, select_per_kind(kinds, 3, seed=1))


def test_filter_table_figure(tmp_path):
    fig = plots.filter_table_figure(_filter_table())
    assert len(fig.axes) == 2
    bars, table_ax = fig.axes
    assert len(bars.patches) == 2 * 4  # kept + removed per cut
    assert len(table_ax.tables) == 1
    _check_saves(fig, tmp_path)


def test_filter_table_figure_tolerates_missing_columns(tmp_path):
    df = _filter_table().drop(columns=["source_kind", "n_removed"])
    fig = plots.filter_table_figure(df)
    assert len(fig.axes) == 2
    _check_saves(fig, tmp_path)


@pytest.mark.parametrize("scales", [(0.05, 0.025), (0.05, None), (None, None)])
def test_sr_examples(rng, tmp_path, scales):
    low = rng.normal(0, 0.1, (2, 8, 8)).astype(np.float32) + _ring(8, 2.5)
    high = np.stack([_ring(16, 5.0)] * 2)
    src = np.stack([_blob(16)] * 2)
    fig = plots.sr_examples(
        low, high, src, low_res_pixel_scale=scales[0], high_res_pixel_scale=scales[1],
        noise_sigma=np.full(2, 0.1), lens_params=_lens_params(rng, 2),
    )
    assert len(fig.axes) == 2 * 3 * 2  # images + one colourbar per panel
    ext_low = fig.axes[0].images[0].get_extent()
    ext_high = fig.axes[2].images[0].get_extent()
    assert np.allclose(ext_low, ext_high)  # same field of view
    if scales[0] is None:
        assert "low-res pixels" in fig.axes[3].get_xlabel()  # bottom row
    else:
        assert np.isclose(ext_low[1], 0.2)
    if scales == (0.05, 0.025):
        _check_saves(fig, tmp_path)
    assert len(plots.sr_examples(low, high).axes) == 2 * 2 * 2


def test_asinh_norm_and_ticks():
    image = np.linspace(-0.2, 10, 100).reshape(10, 10)
    norm = plots.asinh_norm(image, noise_sigma=0.1, upper_percentile=100)
    assert isinstance(norm, AsinhNorm)
    assert np.isclose(norm.vmax, 10) and np.isclose(norm.vmin, -0.2) and np.isclose(norm.linear_width, 0.1)
    ticks = plots.asinh_ticks(norm.vmin, norm.vmax, norm.linear_width)
    assert 0.0 in ticks and all(norm.vmin <= t <= norm.vmax for t in ticks)
    assert plots.asinh_norm(np.zeros((4, 4))).vmax > 0  # blank image: still a valid scale


def test_format_lens_params():
    text = plots.format_lens_params([1.2, 2.0, 0.1, -0.1, 0, 0, 0.01, 0.02])
    assert "1.20" in text and "+0.10" in text and "+0.020" in text


# --- scripts, run as Snakemake would, with a stand-in `snakemake` object -----------------


class _Named(list):
    """Snakemake's named input list: items by position and, for a dict, by name."""

    def __init__(self, items):
        self.names = dict(items) if isinstance(items, dict) else {}
        super().__init__(str(p) for p in (self.names.values() if self.names else items))

    def __getitem__(self, key):
        return str(self.names[key]) if isinstance(key, str) else super().__getitem__(key)


def _run_script(name, tmp_path, inputs, output, params=None, wildcards=None):
    log = tmp_path / "logs" / f"{name}.log"
    smk = SimpleNamespace(
        input=_Named(inputs), output=[str(output)], log=[str(log)],
        params=SimpleNamespace(**(params or {})), wildcards=SimpleNamespace(**(wildcards or {})),
        scriptdir=str(ROOT / "scripts"), config={"figures": {"n_examples": 6}},
    )
    stderr, handlers = sys.stderr, logging.getLogger().handlers[:]
    try:
        runpy.run_path(str(ROOT / "scripts" / f"{name}.py"), init_globals={"snakemake": smk}, run_name="__main__")
    finally:
        if sys.stderr is not stderr:
            sys.stderr.close()
        sys.stderr = stderr
        logging.getLogger().handlers[:] = handlers
        logging.captureWarnings(False)
    assert Path(output).stat().st_size > 0
    assert "wrote" in log.read_text()
    from PIL import Image

    with Image.open(output) as png:  # provenance embedded by save_figure
        assert json.loads(png.info["Description"])["rule"] == name


def _write_pairs(path, rng, split, n=2):
    source, noiseless, lensed, sigma = _pairs(rng, n)
    params = _lens_params(rng, n)
    meta = pd.DataFrame(params, columns=LENS_PARAMETERS)
    meta["source_id"] = [f"{split}{i}" for i in range(n)]
    meta["kind"] = "parametric"
    meta["lens_model"] = "SIE"
    meta["source_x"] = 0.0
    meta["source_y"] = 0.0
    meta["source_magnitude"] = 23.0
    write_dataset(
        path, {"lensed": lensed, "lensed_noiseless": noiseless, "source": source, "noise_sigma": sigma,
               "lens_params": params},
        meta, kind="pairs", attrs={"pixel_scale_arcsec": 0.08, "lens_model": "SIE"},
    )
    return path


def test_script_filter_table(tmp_path):
    table = tmp_path / "filter_table.csv"
    _filter_table().to_csv(table, index=False)
    _run_script("plot_filter_table", tmp_path, [table], tmp_path / "filter_table.png")


def test_script_stamps(tmp_path, rng):
    kinds = ["xdf", "parametric", "parametric", "xdf", "parametric"]
    meta = pd.DataFrame({
        "source_id": [f"s{i}" for i in range(5)], "kind": kinds, "magnitude": np.linspace(20, 24, 5),
        "redshift": [0.5, np.nan, np.nan, 1.0, np.nan], "pixel_scale_arcsec": 0.03,
        "noise_sigma": 0.01, "size_arcsec": 0.5,
    })
    images = np.stack([_blob(S) for _ in kinds])
    write_dataset(tmp_path / "stamps.h5", {"images": images}, meta, kind="stamps")
    _run_script("plot_stamps", tmp_path, [tmp_path / "stamps.h5"], tmp_path / "stamps.png", {"n_per_kind": 2})


def test_script_pairs_and_lens_params(tmp_path, rng):
    paths = [_write_pairs(tmp_path / f"pairs_SIE_{s}.h5", rng, s) for s in ("train", "val", "test")]
    _run_script("plot_pair_examples", tmp_path, paths[2:], tmp_path / "examples_SIE.png",
                {"n_examples": 6}, {"lens": "SIE"})
    _run_script("plot_lens_params", tmp_path, dict(zip(("train", "val", "test"), paths)), tmp_path / "lens_params_SIE.png",
                wildcards={"lens": "SIE"})


def test_script_sr_without_pixel_scales(tmp_path, rng):
    n, low_n = 3, 8
    low = (np.stack([_ring(low_n, 2.5)] * n) + rng.normal(0, 0.05, (n, low_n, low_n))).astype(np.float32)
    arrays = {
        "low_res": low, "low_res_noiseless": np.stack([_ring(low_n, 2.5)] * n),
        "noise_sigma": np.full((n, low_n, low_n), 0.05, dtype=np.float32),
        "high_res": np.stack([_ring(16, 5.0)] * n), "source_high_res": np.stack([_blob(16)] * n),
        "lens_params": _lens_params(rng, n),
    }
    meta = pd.DataFrame({"source_id": [f"s{i}" for i in range(n)]})
    write_dataset(tmp_path / "sr_SIS_noisy_test.h5", arrays, meta, kind="sr")  # no pixel-scale attrs
    _run_script("plot_sr_examples", tmp_path, [tmp_path / "sr_SIS_noisy_test.h5"], tmp_path / "sr.png",
                {"n_examples": 2}, {"lens": "SIS", "noise": "noisy"})
