"""Figures of sourcelens.plots: what each draws (the arrays shown, where, on which colour scale,
with which labels) on small synthetic data, and the figure scripts end to end."""

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
from matplotlib.colors import AsinhNorm, Normalize, to_rgb
from matplotlib.patches import Circle

from sourcelens import plots
from sourcelens.io import save_figure, write_dataset
from sourcelens.names import LENS_PARAMETERS
from sourcelens.plots.simulations import LENS_PARAM_LABELS, PAIR_TITLES
from sourcelens.plots.style import FLUX_UNITS, KIND_LABELS, SPLIT_COLOURS, robust_sigma

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


# --- reading a figure back ------------------------------------------------------------------


def _image(ax):
    """The one image drawn in a panel."""
    assert len(ax.images) == 1
    return ax.images[0]


def _assert_shows(ax, expected):
    """The panel draws exactly ``expected`` (the data array, not a copy of another panel)."""
    np.testing.assert_array_equal(np.ma.getdata(_image(ax).get_array()), np.asarray(expected, dtype=float))


def _value_at(ax, x, y):
    """The image value drawn at data position (x, y) (arcsec), as a cursor over the panel reads it."""
    X, Y = ax.transData.transform((x, y))
    return _image(ax).get_cursor_data(SimpleNamespace(x=X, y=Y))


def _spike(n, row, col, value=5.0):
    image = np.zeros((n, n), dtype=np.float32)
    image[row, col] = value
    return image


def _colorbar_label(im):
    """The label of the colour bar made for ``im``."""
    cbar = im.colorbar
    return cbar.ax.get_xlabel() if cbar.orientation == "horizontal" else cbar.ax.get_ylabel()


def _markers(ax, marker="+"):
    """(x, y) of the point markers drawn in a panel."""
    return [tuple(np.ravel(line.get_xydata())) for line in ax.lines if line.get_marker() == marker]


def _step_heights(patch):
    """Bin edges and heights of a ``histtype="step"`` histogram polygon."""
    xy = patch.get_xy()
    return xy[0:-1:2, 0], xy[1:-1:2, 1]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


# --- pairs, lens parameters, super-resolution ------------------------------------------------


def test_pair_examples_draws_each_array_on_its_row_scale(rng, tmp_path):
    source, noiseless, lensed, sigma = _pairs(rng)
    source[0] += _spike(S, 3, 12)  # row 3, column 12: x = -0.64 + 12.5 * 0.08, y = -0.64 + 3.5 * 0.08
    params = _lens_params(rng, N)
    fig = plots.pair_examples(source, noiseless, lensed, 0.08, lens_params=params, noise_sigma=sigma,
                              row_labels=[f"id{i}" for i in range(N)])
    assert len(fig.axes) == 3 * N + N  # images, then one colourbar per row
    panels = np.array(fig.axes[: 3 * N]).reshape(N, 3)
    for i in range(N):
        for j, stack in enumerate((source, noiseless, lensed)):
            _assert_shows(panels[i, j], stack[i])
            assert np.allclose(_image(panels[i, j]).get_extent(), [-0.64, 0.64, -0.64, 0.64])
        # one scale per row: top from the noise-free panels, linear width sigma, bottom -2 sigma
        norm = _image(panels[i, 0]).norm
        assert all(_image(ax).norm is norm for ax in panels[i])
        assert isinstance(norm, AsinhNorm)
        assert np.isclose(norm.linear_width, 0.05) and np.isclose(norm.vmin, -0.1)
        assert np.isclose(norm.vmax, np.percentile(np.concatenate([source[i].ravel(), noiseless[i].ravel()]), 99.9))
        assert rf"$\sigma$=0.05" in _texts(panels[i, 2])
        # row label: id, lens parameters, axis
        assert panels[i, 0].get_ylabel() == "\n".join(
            [f"id{i}", plots.format_lens_params(params[i]), r"$\Delta y$ [arcsec]"])
        # the lens centre on the lensed panels, the theta_E circle on the noiseless one only
        centre = (params[i, 4], params[i, 5])
        assert _markers(panels[i, 0]) == []
        assert all(np.allclose(_markers(ax), [centre]) for ax in panels[i, 1:])
        circles = [p for p in panels[i, 1].patches if isinstance(p, Circle)]
        assert len(circles) == 1 and np.isclose(circles[0].radius, params[i, 0])
        assert np.allclose(circles[0].center, centre)
        assert not [p for p in panels[i, 2].patches if isinstance(p, Circle)]
        assert _colorbar_label(_image(panels[i, 2])) == FLUX_UNITS
    assert _image(panels[0, 0]).norm is not _image(panels[1, 0]).norm
    assert [ax.get_title() for ax in panels[0]] == list(PAIR_TITLES)
    assert [ax.get_title() for ax in panels[1]] == ["", "", ""]
    assert [ax.get_xlabel() for ax in panels[:, 0]] == ["", r"$\Delta x$ [arcsec]"]
    # origin lower, arcsec axes: the spike is at (+0.36, -0.36), not at its transpose or mirror
    assert _value_at(panels[0, 0], 0.36, -0.36) == pytest.approx(source[0, 3, 12])
    assert _value_at(panels[0, 0], -0.36, 0.36) == pytest.approx(source[0, 12, 3])
    assert source[0, 3, 12] > 10 * source[0, 12, 3]
    _check_saves(fig, tmp_path)


def test_pair_examples_estimates_noise_and_linear_stretch(rng):
    source, noiseless, lensed, _ = _pairs(rng, n=1)
    fig = plots.pair_examples(source[0], noiseless[0], lensed[0], 0.05)
    norm = _image(fig.axes[0]).norm
    assert np.isclose(norm.linear_width, robust_sigma(lensed[0] - noiseless[0]))  # sigma from the noise itself
    assert fig.axes[0].get_ylabel() == r"$\Delta y$ [arcsec]"  # no labels, no lens parameters
    fig = plots.pair_examples(source[0], noiseless[0], lensed[0], 0.05, stretch="linear")
    assert len(fig.axes) == 4
    norm = _image(fig.axes[2]).norm
    assert type(norm) is Normalize
    everything = np.concatenate([a[0].ravel() for a in (source, noiseless, lensed)])
    assert np.isclose(norm.vmin, min(0.0, everything.min())) and np.isclose(norm.vmax, np.percentile(everything, 99.9))
    assert "linear stretch" in fig.get_suptitle() and '0.05" pixels' in fig.get_suptitle()
    with pytest.raises(ValueError, match="stretch"):
        plots.pair_examples(source, noiseless, lensed, 0.05, stretch="log")
    with pytest.raises(ValueError, match="same number"):
        plots.pair_examples(source, noiseless[:0], lensed, 0.05)


def test_example_labels():
    meta = pd.DataFrame({"source_id": ["cosmos_1", "xdf_2"], "kind": ["cosmos", "xdf"],
                         "source_magnitude": [23.04, np.nan]})
    assert plots.example_labels(meta) == ["cosmos_1 (cosmos, m=23.0)", "xdf_2 (xdf)"]
    assert plots.example_labels(pd.DataFrame({"x": [1]})) == ["? (?)"]


def _known_lens_table():
    """theta_E: train 2 + 2, val 3 + 0, test 0 + 1 (and one NaN) in the bins [0.5, 1) and [1, 1.5]."""
    theta = {"train": [0.5, 0.6, 1.4, 1.5], "val": [0.7, 0.8, 0.9], "test": [1.2, np.nan]}
    tables = []
    for split, values in theta.items():
        df = pd.DataFrame({p: np.linspace(-1, 1, len(values)) for p in LENS_PARAMETERS})
        df["theta_E"] = values
        df["gamma"] = 2.0  # fixed, as for SIS
        df["split"] = split
        tables.append(df)
    return pd.concat(tables, ignore_index=True)


def test_lens_parameter_histograms_counts(tmp_path):
    fig = plots.lens_parameter_histograms(_known_lens_table(), by="split", bins=2, density=False)
    assert len(fig.axes) == 8
    assert [ax.get_xlabel() for ax in fig.axes] == [LENS_PARAM_LABELS[p] for p in LENS_PARAMETERS]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["train (N=4)", "val (N=3)", "test (N=2)"]
    theta = fig.axes[0]
    assert len(theta.patches) == 3  # one step histogram per split, in split order
    for patch, split, counts in zip(theta.patches, ("train", "val", "test"), ([2, 2], [3, 0], [0, 1])):
        edges, heights = _step_heights(patch)
        assert np.allclose(edges, [0.5, 1.0, 1.5]) and np.array_equal(heights, counts)
        assert np.allclose(patch.get_edgecolor()[:3], to_rgb(SPLIT_COLOURS[split]))
    assert theta.get_ylabel() == "count" and fig.axes[4].get_ylabel() == "count" and fig.axes[1].get_ylabel() == ""
    # gamma is fixed at 2: a line there and a note instead of histograms
    gamma = fig.axes[1]
    assert not gamma.patches and np.allclose(gamma.lines[0].get_xdata(), [2, 2])
    assert _texts(gamma) == ["fixed at 2\nin all 3 splits"]
    _check_saves(fig, tmp_path)


def test_lens_parameter_histograms_density_and_order():
    df = _known_lens_table()
    fig = plots.lens_parameter_histograms(df, order=["test", "train", "val"], bins=4)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["test (N=2)", "train (N=4)", "val (N=3)"]
    assert fig.axes[0].get_ylabel() == "probability density"
    for patch in fig.axes[0].patches:  # each split integrates to 1
        edges, heights = _step_heights(patch)
        assert np.isclose(np.sum(heights * np.diff(edges)), 1.0)
    fig = plots.lens_parameter_histograms(df.drop(columns="split"), bins=2, density=False)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["all (N=9)"]
    assert np.array_equal(_step_heights(fig.axes[0].patches[0])[1], [5, 3])
    with pytest.raises(KeyError, match="gamma2"):
        plots.lens_parameter_histograms(df.drop(columns="gamma2"))


@pytest.mark.parametrize("scales", [(0.05, 0.025), (0.05, None), (None, 0.025)])
def test_sr_examples_in_arcsec(rng, tmp_path, scales):
    low = rng.normal(0, 0.1, (2, 8, 8)).astype(np.float32) + _ring(8, 2.5)
    high = np.stack([_ring(16, 5.0), 2 * _ring(16, 5.0)])
    src = np.stack([_blob(16), _blob(16, 3.0)])
    params = _lens_params(rng, 2)
    fig = plots.sr_examples(low, high, src, low_res_pixel_scale=scales[0], high_res_pixel_scale=scales[1],
                            noise_sigma=np.full(2, 0.1), lens_params=params, units="flux")
    assert len(fig.axes) == 2 * 3 * 2  # images, then one colourbar per panel
    panels = np.array(fig.axes[:6]).reshape(2, 3)
    for i in range(2):
        for j, stack in enumerate((low, high, src)):
            _assert_shows(panels[i, j], stack[i])
            assert np.allclose(_image(panels[i, j]).get_extent(), [-0.2, 0.2, -0.2, 0.2])  # one field
            assert _colorbar_label(_image(panels[i, j])) == ("flux" if j == 2 else "")
        # per-panel scales: the noisy input's linear width is its noise, the targets' a fraction of the peak
        low_norm, high_norm = _image(panels[i, 0]).norm, _image(panels[i, 1]).norm
        assert np.isclose(low_norm.linear_width, 0.1)
        assert np.isclose(high_norm.linear_width, 0.02 * high_norm.vmax)
        assert np.isclose(high_norm.vmax, np.percentile(high[i], 99.9))
        centre = (params[i, 4], params[i, 5])
        assert np.allclose(_markers(panels[i, 0]), [centre]) and np.allclose(_markers(panels[i, 1]), [centre])
        assert _markers(panels[i, 2]) == []
        assert plots.format_lens_params(params[i]) in panels[i, 0].get_ylabel()
    assert [ax.get_title() for ax in panels[0]] == [
        "low resolution (input)\n8×8 pix", "high resolution (target)\n16×16 pix", "source, high resolution\n16×16 pix"]
    assert panels[1, 0].get_xlabel() == r"$\Delta x$ [arcsec]"
    assert '0.05" → 0.025" pixels' in fig.get_suptitle() and "×2" in fig.get_suptitle()
    _check_saves(fig, tmp_path)


def test_sr_examples_without_pixel_scales(rng):
    low = rng.normal(0, 0.1, (2, 8, 8)) + _ring(8, 2.5)
    high = np.stack([_ring(16, 5.0)] * 2)
    fig = plots.sr_examples(low, high, lens_params=_lens_params(rng, 2))
    assert len(fig.axes) == 2 * 2 * 2
    panels = np.array(fig.axes[:4]).reshape(2, 2)
    assert np.allclose(_image(panels[0, 0]).get_extent(), [-4, 4, -4, 4])  # in low-res pixels
    assert np.allclose(_image(panels[0, 1]).get_extent(), [-4, 4, -4, 4])
    assert panels[1, 0].get_xlabel() == r"$\Delta x$ [low-res pixels]"
    assert _markers(panels[0, 0]) == []  # lens positions are in arcsec: not drawn on pixel axes
    assert "pixel scales unknown" in fig.get_suptitle()
    with pytest.raises(ValueError, match="same number"):
        plots.sr_examples(low, high[:1])


def test_format_lens_params():
    text = plots.format_lens_params([1.2, 2.0, 0.1, -0.1, 0, 0, 0.01, 0.02])
    assert text.split("\n") == [
        r"$\theta_\mathrm{E}$=1.20$''$, $\gamma$=2.00", r"$e$=(+0.10, -0.10)", r"$\gamma_\mathrm{ext}$=(+0.010, +0.020)"]


def test_asinh_norm_and_ticks():
    image = np.linspace(-0.2, 10, 100).reshape(10, 10)
    norm = plots.asinh_norm(image, noise_sigma=0.1, upper_percentile=100)
    assert isinstance(norm, AsinhNorm)
    assert np.isclose(norm.vmax, 10) and np.isclose(norm.vmin, -0.2) and np.isclose(norm.linear_width, 0.1)
    ticks = plots.asinh_ticks(norm.vmin, norm.vmax, norm.linear_width)
    assert 0.0 in ticks and all(norm.vmin <= t <= norm.vmax for t in ticks)
    assert plots.asinh_ticks(-0.2, 10, 0.1) == [-0.2, 0.0, 0.1, 1.0, 10.0]
    assert plots.asinh_norm(np.zeros((4, 4))).vmax > 0  # blank image: still a valid scale


# --- source data -----------------------------------------------------------------------------


def test_stamps_by_kind(tmp_path):
    kinds = ["xdf", "parametric", "xdf", "cosmos", "parametric", "parametric"]
    images = np.stack([_blob(S, 1 + 0.3 * i) for i in range(len(kinds))])
    images[0] += _spike(S, 2, 11)  # at x = -0.96 + 11.5 * 0.12, y = -0.96 + 2.5 * 0.12
    ids = [f"src{i}" for i in range(len(kinds))]
    fig = plots.stamps_by_kind(
        images, kinds, ids, 2, pixel_scales=[0.12, 0.03, 0.12, 0.03, 0.03, 0.03],
        magnitudes=np.linspace(20, 24, len(kinds)), redshifts=[np.nan, 1.0, 0.5, 2.0, np.nan, np.nan],
        kind_counts={"xdf": 10, "parametric": 20, "cosmos": 5},
    )
    assert len(fig.axes) == 3 * 2 + 1  # kinds x n_per_kind + colourbar
    panels = np.array(fig.axes[:6]).reshape(3, 2)
    # rows in the fixed kind order, the first stamps of each kind in file order; a missing one is blank
    assert [ax.get_ylabel() for ax in panels[:, 0]] == [
        "COSMOS (HST, real)\nN = 5", "parametric (GalSim priors)\nN = 20", "XDF (morphology only)\nN = 10"]
    for ax, k in zip(panels.ravel()[[0, 2, 3, 4, 5]], (3, 1, 4, 0, 2)):
        _assert_shows(ax, images[k])
    assert not panels[0, 1].axison and not panels[0, 1].images
    assert [panels[1, 0].get_title(), panels[2, 0].get_title(), panels[2, 1].get_title()] == [
        "src1\nm=20.8 z=1.00", "src0\nm=20.0", "src2\nm=21.6 z=0.50"]
    # each stamp on its own arcsec extent, with a round scale bar of about a quarter of it
    assert np.allclose(_image(panels[2, 0]).get_extent(), [-0.96, 0.96, -0.96, 0.96])
    assert np.allclose(_image(panels[0, 0]).get_extent(), [-0.24, 0.24, -0.24, 0.24])
    assert _texts(panels[2, 0]) == ['0.2"'] and _texts(panels[0, 0]) == ['0.1"']
    assert _value_at(panels[2, 0], 0.42, -0.66) == pytest.approx(images[0, 2, 11])
    assert _value_at(panels[2, 0], -0.66, 0.42) == pytest.approx(images[0, 11, 2])
    # one peak-normalised scale for all
    norm = _image(panels[0, 0]).norm
    assert all(_image(ax).norm is norm for ax in panels.ravel()[[0, 2, 3, 4, 5]])
    assert isinstance(norm, AsinhNorm) and (norm.vmin, norm.vmax, norm.linear_width) == (0.0, 1.0, 0.02)
    assert _colorbar_label(_image(panels[2, 1])) == "flux / peak flux"  # the bar of the last stamp drawn
    _check_saves(fig, tmp_path)


def test_stamps_by_kind_in_pixels_and_linear():
    images = np.stack([_blob(S), _blob(S) - 0.01])
    fig = plots.stamps_by_kind(images, ["a", "b"], ["x", "y"], 1, stretch="linear")
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["a\nN = 1", "b\nN = 1"]  # unknown kinds keep their name
    assert np.allclose(_image(fig.axes[0]).get_extent(), [-8, 8, -8, 8])
    assert _texts(fig.axes[0]) == ["2 pix"]
    norm = _image(fig.axes[1]).norm
    assert type(norm) is Normalize and np.isclose(norm.vmin, images.min()) and norm.vmax == 1.0


def test_filter_table_figure(tmp_path):
    table = _filter_table()
    fig = plots.filter_table_figure(table)
    assert len(fig.axes) == 2
    bars, table_ax = fig.axes
    kept, removed = bars.containers
    # first cut on top; removed stacked after kept
    assert [b.get_y() + b.get_height() / 2 for b in kept] == [3, 2, 1, 0]
    assert [b.get_width() for b in kept] == table["n_kept"].tolist()
    assert [b.get_width() for b in removed] == table["n_removed"].tolist()
    assert [b.get_x() for b in removed] == table["n_kept"].tolist()
    assert [t.get_text() for t in bars.get_yticklabels()] == [
        "cosmos · catalogue: magnitude", "cosmos · catalogue: exclusion", "cosmos · stamps: size",
        "xdf · catalogue: detection"]
    assert _texts(bars)[0] == "80/100 kept (80.0%)"
    assert any(np.allclose(line.get_ydata(), 0.5) for line in bars.lines)  # cosmos | xdf separator
    cells = table_ax.tables[0].get_celld()
    assert [cells[0, c].get_text().get_text() for c in range(8)] == [
        "kind", "stage", "cut", "description", "in", "kept", "removed", "% kept"]
    assert [cells[3, c].get_text().get_text() for c in (0, 1, 2, 4, 5, 6, 7)] == [
        "cosmos", "stamps", "size", "70", "60", "10", "85.7"]
    assert "\n" in cells[3, 3].get_text().get_text()  # long descriptions wrapped
    _check_saves(fig, tmp_path)


def test_filter_table_figure_completes_missing_columns():
    df = _filter_table().drop(columns=["source_kind", "n_removed"])
    bars, _ = plots.filter_table_figure(df).axes
    assert [b.get_width() for b in bars.containers[1]] == [20, 10, 10, 10]  # n_in - n_kept
    assert all(t.get_text().startswith("all · ") for t in bars.get_yticklabels())


# --- training, VAE, fits -----------------------------------------------------------------------


def _metrics():
    return pd.DataFrame({
        "stage": [1, 0, 0, 1, 0], "epoch": [0, 0, 1, 1, 2],
        "train_loss": [0.4, 1.0, 0.5, 0.3, 0.45], "val_loss": [0.5, 1.1, 0.6, 0.55, 0.7],
        "loss": ["mse", "mae", "mae", "mse", "mae"], "lr": [1e-4, 1e-3, 1e-3, 1e-4, 1e-3],
    })


def test_learning_curve():
    fig = plots.learning_curve(_metrics(), ylabel="loss (MSE)")
    ax, ax_lr = fig.axes
    train, val = ax.lines[0], ax.lines[1]  # stage 0, sorted by epoch, then stage 1 from epoch 4
    assert np.array_equal(train.get_xdata(), [1, 2, 3]) and np.array_equal(train.get_ydata(), [1.0, 0.5, 0.45])
    assert np.array_equal(val.get_ydata(), [1.1, 0.6, 0.7])
    stage1 = [line for line in ax.lines if np.array_equal(line.get_xdata(), [4, 5])]
    assert [list(line.get_ydata()) for line in stage1] == [[0.4, 0.3], [0.5, 0.55]]
    best = [tuple(np.ravel(line.get_xydata())) for line in ax.lines if line.get_markersize() == 10]
    assert best == [(2, 0.6), (4, 0.5)]  # best validation epoch per stage
    assert any(np.allclose(line.get_xdata(), 3.5) for line in ax.lines)  # stage boundary
    assert _texts(ax) == ["stage 0: mae", "stage 1: mse"]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss (MSE)"
    lr = [line for line in ax_lr.lines if line.get_drawstyle() == "steps-mid"]
    assert len(lr) == 1 and np.array_equal(lr[0].get_ydata(), [1e-3] * 3 + [1e-4] * 2)
    assert any(np.allclose(line.get_xdata(), 3.5) for line in ax_lr.lines)
    assert fig.get_suptitle() == "VAE learning curve"
    fig = plots.learning_curve(_metrics().drop(columns="lr"), title="CNN")
    assert len(fig.axes) == 1 and fig.get_suptitle() == "CNN"
    with pytest.raises(ValueError):
        plots.learning_curve(_metrics().iloc[:0])


def test_vae_reconstructions():
    inputs = np.stack([_blob(S), _blob(S, 3.0), _ring(S)])
    recs = inputs * 0.9
    fig = plots.vae_reconstructions(inputs, recs, ["a", "b", "c"])
    panels = np.array(fig.axes[:9]).reshape(3, 3)
    for c in range(3):
        _assert_shows(panels[0, c], inputs[c])
        _assert_shows(panels[1, c], recs[c])
        _assert_shows(panels[2, c], inputs[c] - recs[c])
    assert [ax.get_title() for ax in panels[0]] == ["a", "b", "c"]
    assert [ax.get_ylabel() for ax in panels[:, 0]] == ["input", "reconstruction", "residual"]
    assert _image(panels[0, 0]).norm is _image(panels[1, 2]).norm
    rnorm = _image(panels[2, 0]).norm
    assert np.isclose(rnorm.vmax, -rnorm.vmin) and np.isclose(rnorm.vmax, np.percentile(0.1 * inputs, 99.5))
    assert _colorbar_label(_image(panels[0, 2])) == "flux / peak flux"
    assert _colorbar_label(_image(panels[2, 2])) == "input − model"


def test_image_gallery_and_latent_interpolation():
    images = np.stack([_blob(S, 1 + 0.5 * k) * (k + 1) for k in range(5)])
    fig = plots.image_gallery(images, n_cols=3, titles=list("abcde"))
    panels = fig.axes[:6]
    for k in range(5):
        _assert_shows(panels[k], images[k])
    assert not panels[5].axison and [ax.get_title() for ax in panels[:5]] == list("abcde")
    norm = _image(panels[0]).norm
    assert (norm.vmin, norm.vmax) == (0.0, pytest.approx(images.max()))
    ends = np.stack([_blob(S), _ring(S)])
    fig = plots.latent_interpolation(images[:4], endpoints=ends, labels=("g0", "g1"))
    panels = np.array(fig.axes[:8]).reshape(2, 4)
    assert [ax.get_title() for ax in panels[0]] == ["t = 0.00", "t = 0.33", "t = 0.67", "t = 1.00"]
    _assert_shows(panels[0, 2], images[2])
    _assert_shows(panels[1, 0], ends[0])
    _assert_shows(panels[1, 3], ends[1])
    assert [ax.get_title() for ax in panels[1, [0, 3]]] == ["g0", "g1"]
    assert not panels[1, 1].axison and not panels[1, 1].images


def test_fit_comparison():
    data = np.stack([_blob(S), _blob(S, 3.0)])
    models = {"sersic": data * 0.9, "vae": data * 1.1}
    fig = plots.fit_comparison(data, models, labels=["gal0", "gal1"], chi2_nu={"sersic": [1, 2], "vae": [3, 4]},
                               noise_sigma=[0.1, 0.2])
    panels = np.array(fig.axes[:10]).reshape(2, 5)
    for r, sigma in enumerate((0.1, 0.2)):
        _assert_shows(panels[r, 0], data[r])
        _assert_shows(panels[r, 1], models["sersic"][r])
        _assert_shows(panels[r, 4], (data[r] - models["vae"][r]) / sigma)
    assert [ax.get_title() for ax in panels[0, :3]] == ["data", "sersic\nχ²/ν=1.00", "residual"]
    assert panels[1, 3].get_title() == "χ²/ν=4.00" and panels[1, 0].get_ylabel() == "gal1"
    rnorm = _image(panels[0, 2]).norm
    assert (rnorm.vmin, rnorm.vmax) == (-5, 5) and _image(panels[0, 2]).get_cmap().name == "RdBu_r"  # diverging
    assert _colorbar_label(_image(panels[1, 4])) == "(data − model)/σ"
    fig = plots.fit_comparison(data, {"sersic": models["sersic"]})  # raw residuals on their own scale
    _assert_shows(fig.axes[2], data[0] - models["sersic"][0])
    assert _colorbar_label(_image(fig.axes[5])) == "data − model"


def test_fit_comparison_lensed():
    data = 2 * _ring(S).astype(float)
    true = _blob(8).astype(float)
    models = {"pixel": data * 0.8, "vae": data}
    sources = {"pixel": true * 0.5, "vae": true}
    fig = plots.fit_comparison_lensed(data, 0.1, models, sources, true, 0.08, 0.04,
                                      scores={"vae": "χ²/ν=1.0"}, suptitle="one galaxy")
    panels = np.array(fig.axes[:10]).reshape(2, 5)
    _assert_shows(panels[0, 1], models["pixel"])
    _assert_shows(panels[0, 2], (data - models["pixel"]) / 0.1)
    _assert_shows(panels[0, 3], sources["pixel"])
    _assert_shows(panels[1, 4], true)
    assert np.allclose(_image(panels[0, 0]).get_extent(), [-0.64, 0.64, -0.64, 0.64])
    assert np.allclose(_image(panels[0, 3]).get_extent(), [-0.16, 0.16, -0.16, 0.16])
    img_norm, src_norm = _image(panels[0, 0]).norm, _image(panels[0, 4]).norm
    assert np.isclose(img_norm.linear_width, 0.1)
    assert np.isclose(src_norm.vmin, -0.05 * true.max()) and np.isclose(src_norm.vmax, 1.05 * true.max())
    assert [ax.get_ylabel() for ax in panels[:, 0]] == ["pixel", "vae\nχ²/ν=1.0"]
    assert _texts(panels[0, 0]) == ['0.2"'] and _texts(panels[0, 4]) == ['0.05"']
    assert fig.get_suptitle() == "one galaxy"


# --- scripts, run as Snakemake would, with a stand-in `snakemake` object -----------------


class _Named(list):
    """Snakemake's named input/output list: items by position and, for a dict, by name."""

    def __init__(self, items):
        self.names = dict(items) if isinstance(items, dict) else {}
        super().__init__(str(p) for p in (self.names.values() if self.names else items))

    def __getitem__(self, key):
        return str(self.names[key]) if isinstance(key, str) else super().__getitem__(key)


def _run_script(name, tmp_path, inputs, output, params=None, wildcards=None):
    """Run ``scripts/<name>.py``; ``output`` is one path or a dict of named ones. Checks that each
    output is a PNG with the rule's provenance and that the log says so."""
    log = tmp_path / "logs" / f"{name}.log"
    outputs = _Named(output if isinstance(output, dict) else [output])
    smk = SimpleNamespace(
        input=_Named(inputs), output=outputs, log=[str(log)],
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
    from PIL import Image

    for out in outputs:
        assert Path(out).stat().st_size > 0
        assert f"wrote {out}" in log.read_text()
        with Image.open(out) as png:  # provenance embedded by save_figure
            assert json.loads(png.info["Description"])["rule"] == name


def _write_pairs(path, rng, split, n=2, attrs=None):
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
        meta, kind="pairs", attrs={"pixel_scale_arcsec": 0.08, "lens_model": "SIE"} if attrs is None else attrs,
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


def test_script_pairs_without_pixel_scale_fails(tmp_path, rng):
    path = _write_pairs(tmp_path / "pairs_SIE_test.h5", rng, "test", attrs={"lens_model": "SIE"})
    with pytest.raises(ValueError, match=r"pairs_SIE_test\.h5.*pixel_scale_arcsec.*rerun the rule that makes it"):
        _run_script("plot_pair_examples", tmp_path, [path], tmp_path / "examples_SIE.png",
                    {"n_examples": 6}, {"lens": "SIE"})
    assert not (tmp_path / "examples_SIE.png").exists()


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
                {"n_examples": 2}, {"set": "broad", "lens": "SIS", "noise": "noisy"})


def test_script_lensing_demo(tmp_path):
    outputs = {name: tmp_path / f"lensing_{name}.png" for name in ("models", "magnification", "backward")}
    _run_script("lensing_demo", tmp_path, [], outputs, {"seed": 3})


# --- lens-parameter CNN and delensing (study 002) --------------------------------------------


def _cnn_table(n=12, seed=1):
    """A predictions table as :func:`sourcelens.evaluate.cnn.cnn_predictions` writes it; kinds not in their order."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"source_id": [f"s{i}" for i in range(n)],
                          "kind": np.resize(["xdf", "cosmos", "parametric"], n), "snr": np.geomspace(5, 500, n)})
    for name in LENS_PARAMETERS:
        true = rng.uniform(0.5, 1.5, n) if name == "theta_E" else rng.normal(0, 0.1, n)
        sigma = rng.uniform(0.02, 0.1, n)
        pred = true + rng.normal(0, 0.06, n)
        table[f"true_{name}"], table[f"pred_{name}"], table[f"sigma_{name}"] = true, pred, sigma
        table[f"z_{name}"] = (pred - true) / sigma
    return table


_KINDS_IN_ORDER = ["cosmos", "parametric", "xdf"]


def _errorbars(ax):
    """(points (k, 2), error-bar segments) of each errorbar container of a panel, in drawing order."""
    return [(c.lines[0].get_xydata(), c.lines[2][0].get_segments()) for c in ax.containers]


def _check_points_by_kind(ax, table, x, y, sigma):
    """The panel draws one errorbar set per kind in the fixed kind order, at (x, y) with bars y ± sigma."""
    drawn = _errorbars(ax)
    assert len(drawn) == len(_KINDS_IN_ORDER)
    for (points, segments), kind in zip(drawn, _KINDS_IN_ORDER):
        sel = (table["kind"] == kind).to_numpy()
        np.testing.assert_allclose(points, np.column_stack([x[sel], y[sel]]))
        np.testing.assert_allclose([s[:, 1] for s in segments], np.column_stack([y[sel] - sigma[sel], y[sel] + sigma[sel]]))


def test_running_median_and_kinds_present():
    from sourcelens.plots.style import kinds_present, running_median

    x = np.array([11, 3, 0, 7, 5, 1, 9, 2, 10, 4, 8, 6, np.nan], dtype=float)
    xm, ym = running_median(x, 2 * x, n_bins=4)  # 12 finite points: 4 bins of 3 along x
    assert np.array_equal(xm, [1, 4, 7, 10]) and np.array_equal(ym, [2, 8, 14, 20])
    assert running_median(x[:2], x[:2])[0].size == 0  # too few points for one bin
    assert kinds_present(["xdf", "zz", "cosmos", "aa", "xdf"]) == ["cosmos", "xdf", "aa", "zz"]


def test_cnn_predictions_draws_each_parameter(tmp_path):
    table = _cnn_table()
    fig = plots.cnn_predictions(table, fixed=["gamma"])
    assert len(fig.axes) == 8
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [KIND_LABELS[k] for k in _KINDS_IN_ORDER]
    for ax, name in zip(fig.axes, LENS_PARAMETERS):
        if name == "gamma":  # fixed: a note, no points
            assert _texts(ax) == ["fixed in training"] and not ax.containers
            continue
        true, pred = table[f"true_{name}"].to_numpy(), table[f"pred_{name}"].to_numpy()
        _check_points_by_kind(ax, table, true, pred, table[f"sigma_{name}"].to_numpy())
        r2 = 1 - np.mean((pred - true) ** 2) / np.var(true)
        coverage = np.mean(np.abs(table[f"z_{name}"]) <= 1)
        assert f"R² = {r2:.3f}" in ax.get_title() and f"68% cov. = {coverage:.2f}" in ax.get_title()
        one_to_one = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(one_to_one) == 1 and np.array_equal(one_to_one[0].get_xdata(), one_to_one[0].get_ydata())
        assert ("[arcsec]" in ax.get_xlabel()) == (name in ("theta_E", "center_x", "center_y"))
        assert ax.get_xlabel().startswith("true") and ax.get_ylabel().startswith("predicted")
    _check_saves(fig, tmp_path)


def test_cnn_residuals_against_snr_and_theta_e():
    from sourcelens.plots.style import running_median

    table = _cnn_table()
    fig = plots.cnn_residuals(table, fixed=["gamma"])
    assert len(fig.axes) == 2 * 8
    panels = np.array(fig.axes).reshape(2, 8)
    assert all(ax.get_xscale() == "log" for ax in panels[0, [0, 2]]) and panels[1, 0].get_xscale() == "linear"
    assert _texts(panels[0, 1]) == _texts(panels[1, 1]) == ["fixed in training"]
    for c, name in enumerate(LENS_PARAMETERS):
        if name == "gamma":
            continue
        resid = (table[f"pred_{name}"] - table[f"true_{name}"]).to_numpy()
        for ax, x in zip(panels[:, c], ("snr", "true_theta_E")):
            _check_points_by_kind(ax, table, table[x].to_numpy(), resid, table[f"sigma_{name}"].to_numpy())
            assert any(np.allclose(line.get_ydata(), 0) for line in ax.lines)  # zero line
            median = [line for line in ax.lines if line.get_label() == "_median"]
            assert len(median) == 1
            np.testing.assert_allclose(median[0].get_xydata(), np.column_stack(running_median(table[x], resid)))
    assert panels[0, 0].get_xlabel() == "S/N (optimal)" and "[arcsec]" in panels[1, 3].get_xlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [KIND_LABELS[k] for k in _KINDS_IN_ORDER]


def test_cnn_calibration_lines_are_the_curve():
    from sourcelens.evaluate.cnn import calibration_curve
    from sourcelens.plots.cnn import PARAM_SYMBOLS

    curve = calibration_curve(_cnn_table())
    fig = plots.cnn_calibration(curve, fixed=["gamma"])
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    expected = [PARAM_SYMBOLS[p] for p in LENS_PARAMETERS if p != "gamma"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == expected
    for name in LENS_PARAMETERS:
        if name != "gamma":
            np.testing.assert_allclose(lines[PARAM_SYMBOLS[name]].get_xydata(), curve[["level", name]].to_numpy())
    assert np.array_equal(lines["_calibrated"].get_xdata(), lines["_calibrated"].get_ydata())
    assert any(t.startswith("under-confident") for t in _texts(ax))
    assert any(t.startswith("over-confident") for t in _texts(ax))
    assert (ax.get_xlim(), ax.get_ylim()) == ((0, 1), (0, 1))


def _delensing_images(n=2, size=S, m=8):
    lensed = np.stack([_ring(size) * (i + 1) for i in range(n)]) + 0.01 * np.arange(size * size).reshape(size, size)
    truth = np.stack([_blob(m, 1.5 + i) for i in range(n)]).astype(float)
    estimates = {"identity": 0.5 * truth, "U-Net": np.roll(truth, 1, axis=-1)}
    return lensed, truth, estimates


def test_delensing_examples(tmp_path):
    lensed, truth, estimates = _delensing_images()
    metrics = pd.DataFrame({"method": ["identity", "identity", "U-Net", "U-Net"], "ssim": [0.1, 0.2, 0.75, 0.5]})
    fig = plots.delensing_examples(lensed, truth, estimates, 0.08, 0.04, row_labels=["g0", "g1"], metrics=metrics)
    assert len(fig.axes) == 2 * 4 + 2  # images, then the lensed and source colour bars
    panels = np.array(fig.axes[:8]).reshape(2, 4)
    for i in range(2):
        for j, stack in enumerate((lensed, truth, estimates["identity"], estimates["U-Net"])):
            _assert_shows(panels[i, j], stack[i])
            half = 0.64 if j == 0 else 0.16  # n * pixel_scale / 2, m * grid_scale / 2
            assert np.allclose(_image(panels[i, j]).get_extent(), [-half, half, -half, half])
    assert [ax.get_title() for ax in panels[0]] == ["lensed image", "true source", "identity", "U-Net"]
    assert [ax.get_ylabel() for ax in panels[:, 0]] == ["g0", "g1"]
    assert _texts(panels[0, 2]) == ["SSIM 0.10"] and _texts(panels[1, 3]) == ["SSIM 0.50"]
    src_norm = _image(panels[0, 1]).norm
    assert all(_image(ax).norm is src_norm for ax in panels[:, 1:].ravel())
    assert isinstance(src_norm, AsinhNorm) and src_norm.vmax == 1.0
    assert _image(panels[0, 0]).norm is not src_norm
    assert _colorbar_label(_image(panels[1, 0])) == FLUX_UNITS
    assert _colorbar_label(_image(panels[1, 3])) == "flux / peak flux"
    assert _texts(panels[0, 0]) == ['0.2"'] and _texts(panels[0, 1]) == ['0.05"']  # scale bars
    _check_saves(fig, tmp_path)
    with pytest.raises(ValueError, match="one per example"):
        plots.delensing_examples(lensed, truth, estimates, 0.08, 0.04, metrics=metrics.iloc[:3])
    with pytest.raises(ValueError, match="same number"):
        plots.delensing_examples(lensed, truth[:1], estimates, 0.08, 0.04)


def test_unet_examples_residual():
    lensed, truth, estimates = _delensing_images()
    unet = estimates["U-Net"]
    fig = plots.unet_examples(lensed, truth, unet, 0.08, 0.04)
    assert len(fig.axes) == 2 * 4 + 3
    panels = np.array(fig.axes[:8]).reshape(2, 4)
    for i in range(2):
        _assert_shows(panels[i, 2], unet[i])
        _assert_shows(panels[i, 3], unet[i] - truth[i])
        assert np.allclose(_image(panels[i, 3]).get_extent(), [-0.16, 0.16, -0.16, 0.16])
    rim = _image(panels[0, 3])
    assert rim.get_cmap().name == "RdBu_r" and np.isclose(rim.norm.vmin, -rim.norm.vmax)
    assert np.isclose(rim.norm.vmax, np.percentile(np.abs(unet - truth), 99.5))
    assert [ax.get_title() for ax in panels[0]] == ["lensed image", "true source", "U-Net source", "U-Net − truth"]
    assert _colorbar_label(_image(panels[1, 3])) == "U-Net − truth"  # the bar of the last residual drawn


def test_delensing_vs_snr():
    from sourcelens.plots.delensing import METHOD_COLOURS
    from sourcelens.plots.style import running_median

    n = 9
    rows = [pd.DataFrame({"method": method, "snr": np.geomspace(3, 300, n), "theta_E": np.linspace(0.5, 1.5, n),
                          "ssim": np.linspace(0.1, 0.9, n) * scale})
            for method, scale in (("U-Net", 1.0), ("identity", 0.5))]
    per_pair = pd.concat(rows, ignore_index=True)
    per_pair.loc[0, "ssim"] = np.nan  # dropped
    fig = plots.delensing_vs_snr(per_pair)
    left, right = fig.axes
    assert left.get_xscale() == "log" and right.get_xscale() == "linear" and left.get_ylabel() == "SSIM"
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["identity", "U-Net"]  # the methods' order
    for ax, column in ((left, "snr"), (right, "theta_E")):
        for k, (method, points) in enumerate(zip(("identity", "U-Net"), ax.collections)):
            sub = per_pair[(per_pair["method"] == method) & per_pair["ssim"].notna()]
            np.testing.assert_allclose(points.get_offsets(), sub[[column, "ssim"]].to_numpy())
            line = next(line for line in ax.lines if line.get_label() == method)
            np.testing.assert_allclose(line.get_xydata(), np.column_stack(running_median(sub[column], sub["ssim"])))
            assert np.allclose(to_rgb(line.get_color()), to_rgb(METHOD_COLOURS[method]))
    with pytest.raises(KeyError, match="psnr"):
        plots.delensing_vs_snr(per_pair, "psnr")


def test_method_colours_cover_the_methods():
    from sourcelens.evaluate.delensing import DELENSING_METRICS, METHODS
    from sourcelens.plots.delensing import METHOD_COLOURS, METRIC_LABELS

    assert tuple(METHOD_COLOURS) == METHODS and tuple(METRIC_LABELS) == DELENSING_METRICS
