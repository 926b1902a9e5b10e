"""Smoke tests of sourcelens.lensing.plots: each returns a Figure with the panels drawn."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from sourcelens.lensing import OverlapOperator, SourceGrid, naive_scatter, pixel_grid, ray_shoot
from sourcelens.lensing.plots import plot_backward, plot_lens_models, plot_magnification

LENS = (["SIE", "SHEAR"], [dict(theta_E=0.8, e1=0.1, e2=0.05), dict(gamma1=0.03, gamma2=0.0)])


def _source(m=24, scale=0.04):
    c = (torch.arange(m, dtype=torch.float64) - (m - 1) / 2) * scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-0.5 * (x**2 + y**2) / 0.1**2) * scale**2


def test_plots_return_figures(tmp_path):
    src = _source()
    fig = plot_lens_models(src, 0.04, [("SIS", ["SIS"], [dict(theta_E=0.8)]), ("SIE+shear", *LENS)],
                           n_pix=32, pixel_scale=0.08)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    fig = plot_magnification(*LENS, n_pix=40, pixel_scale=0.06)
    assert isinstance(fig, Figure) and len(fig.axes) >= 2
    grid = SourceGrid((24, 24), 0.04)
    img = torch.rand(32, 32, dtype=torch.float64)
    bx, by = ray_shoot(*pixel_grid(32, 0.06), *LENS)
    naive, _ = naive_scatter(img, bx, by, grid, 0.06)
    op = OverlapOperator(*LENS, 32, 0.06, grid)
    fig = plot_backward(img, 0.06, src, naive, op.to_source(img), grid, op.mask)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    fig.savefig(tmp_path / "b.png")
