"""Figures of sourcelens.plots.lensing: the images, curves and scales each panel draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import LogNorm

from sourcelens import plots
from sourcelens.lensing import (
    LensingSimulator, OverlapOperator, SourceGrid, caustics, critical_curves, magnification, naive_scatter,
    pixel_grid, ray_shoot,
)
from sourcelens.plots.lensing import plot_backward, plot_lens_models, plot_magnification

LENS = (["SIE", "SHEAR"], [dict(theta_E=0.8, e1=0.1, e2=0.05), dict(gamma1=0.03, gamma2=0.0)])
SIS = (["SIS"], [dict(theta_E=0.8)])


def _source(m=24, scale=0.04):
    c = (torch.arange(m, dtype=torch.float64) - (m - 1) / 2) * scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-0.5 * (x**2 + y**2) / 0.1**2) * scale**2


def _shown(ax) -> np.ndarray:
    assert len(ax.images) == 1
    return np.ma.getdata(ax.images[0].get_array())


def _assert_curves(ax, curves, colour):
    """The panel draws exactly these (K, 2) curves, in this colour."""
    lines = [line for line in ax.lines if line.get_color() == colour]
    assert len(lines) == len(curves) > 0
    for line, curve in zip(lines, curves):
        np.testing.assert_allclose(line.get_xydata(), curve)


def test_lensing_figures_are_reexported():
    assert plots.plot_lens_models is plot_lens_models and plots.plot_backward is plot_backward
    with pytest.raises(AttributeError):
        plots.no_such_figure  # noqa: B018


def test_plot_lens_models():
    src = _source()
    cases = [("SIS", *SIS), ("SIE+shear", *LENS)]
    fig = plot_lens_models(src, 0.04, cases, n_pix=32, pixel_scale=0.08)
    assert len(fig.axes) == 4
    axes = np.array(fig.axes).reshape(2, 2)
    sim = LensingSimulator(32, 0.08, 2)
    for k, (name, models, kws) in enumerate(cases):
        top, bottom = axes[0, k], axes[1, k]
        np.testing.assert_array_equal(_shown(top), src.numpy())
        assert np.allclose(top.images[0].get_extent(), [-0.48, 0.48, -0.48, 0.48])
        assert np.allclose(top.get_xlim(), [-0.48, 0.48])  # the caustics do not widen the field
        assert top.get_title() == f"source, {name} caustics"
        lensed = sim.image(models, kws, ["PIXELATED"], [dict(image=src, pixel_scale=0.04)]).numpy()
        np.testing.assert_allclose(_shown(bottom), lensed)
        assert np.allclose(bottom.images[0].get_extent(), [-1.28, 1.28, -1.28, 1.28])
        assert bottom.get_title() == f"lensed by {name}"
        crit = critical_curves(models, kws, 32, 0.08)
        _assert_curves(bottom, crit, "cyan")
        _assert_curves(top, caustics(crit, models, kws), "cyan")
    # the lensed SIS ring peaks near theta_E, not at the centre
    ring = _shown(axes[1, 0])
    c = (np.arange(32) - 15.5) * 0.08
    r = np.hypot(*np.meshgrid(c, c))
    assert abs(r.ravel()[ring.argmax()] - 0.8) < 0.1 and ring[15, 15] < 0.5 * ring.max()
    assert axes[0, 0].get_ylabel() == axes[1, 0].get_ylabel() == "y [arcsec]"


def test_plot_magnification():
    fig = plot_magnification(*LENS, n_pix=40, pixel_scale=0.06, title="(SIE + shear)")
    image_ax, source_ax = fig.axes[:2]
    x, y = pixel_grid(40, 0.06)
    mu = magnification(x + 1e-7, y + 1e-7, *LENS).abs().numpy()
    np.testing.assert_allclose(_shown(image_ax), np.clip(mu, 1e-2, 1e3))
    im = image_ax.images[0]
    assert isinstance(im.norm, LogNorm) and (im.norm.vmin, im.norm.vmax) == (0.1, 100)
    assert np.allclose(im.get_extent(), [-1.2, 1.2, -1.2, 1.2])
    assert im.colorbar.ax.get_ylabel() == "|mu|"
    assert image_ax.get_title() == "|magnification| (SIE + shear)"
    crit = critical_curves(*LENS, 40, 0.06)
    _assert_curves(image_ax, crit, "red")
    _assert_curves(source_ax, caustics(crit, *LENS), "red")
    assert [t.get_text() for t in image_ax.get_legend().get_texts()] == ["critical curves"]
    assert [t.get_text() for t in source_ax.get_legend().get_texts()] == ["caustics"]


def test_plot_backward(tmp_path):
    src = _source()
    grid = SourceGrid((24, 24), 0.04)
    img = torch.rand(32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bx, by = ray_shoot(*pixel_grid(32, 0.06), *LENS)
    naive, _ = naive_scatter(img, bx, by, grid, 0.06)
    op = OverlapOperator(*LENS, 32, 0.06, grid)
    overlap = op.to_source(img)
    fig = plot_backward(img, 0.06, src, naive, overlap, grid, op.mask)
    assert len(fig.axes) == 4
    for ax, shown, title in zip(fig.axes, (img, src, naive, overlap),
                                ("lensed image", "true source", "naive pixel scatter", "exact pixel overlaps")):
        np.testing.assert_array_equal(_shown(ax), shown.numpy())
        assert ax.get_title() == title
    assert np.allclose(fig.axes[0].images[0].get_extent(), [-0.96, 0.96, -0.96, 0.96])
    for ax in fig.axes[1:]:  # the source grid, one linear scale from 0 to the true peak
        assert np.allclose(ax.images[0].get_extent(), grid.extent)
        norm = ax.images[0].norm
        assert norm.vmin == 0 and np.isclose(norm.vmax, float(src.max()))
    assert [len(ax.collections) for ax in fig.axes] == [0, 0, 1, 1]  # the mask outline on the reconstructions
    fig.savefig(tmp_path / "b.png")
