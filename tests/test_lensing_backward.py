"""sourcelens.lensing backward mapping: exact pixel overlaps and naive scatter."""

from __future__ import annotations

import numpy as np
import torch

from sourcelens.lensing import (
    LensingSimulator, OverlapOperator, SourceGrid, naive_scatter, pixel_corners, pixel_grid,
    quad_cell_overlaps, ray_shoot,
)

LENS = (["SIE", "SHEAR"], [dict(theta_E=0.9, e1=0.15, e2=-0.08, center_x=0.03, center_y=-0.02),
                           dict(gamma1=0.04, gamma2=0.02)])


def scalar_overlap(poly, x0, x1, y0, y1):
    """Reference: Sutherland-Hodgman clip of a polygon against a box, signed shoelace area."""
    def clip(poly, inside, cross):
        out = []
        for k in range(len(poly)):
            p, q = poly[k], poly[(k + 1) % len(poly)]
            if inside(p):
                out.append(p)
                if not inside(q):
                    out.append(cross(p, q))
            elif inside(q):
                out.append(cross(p, q))
        return out

    def at_x(c):
        return lambda p, q: (c, p[1] + (q[1] - p[1]) * (c - p[0]) / (q[0] - p[0]))

    def at_y(c):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (c - p[1]) / (q[1] - p[1]), c)

    for inside, cross in ((lambda p: p[0] >= x0, at_x(x0)), (lambda p: p[0] <= x1, at_x(x1)),
                          (lambda p: p[1] >= y0, at_y(y0)), (lambda p: p[1] <= y1, at_y(y1))):
        poly = clip(poly, inside, cross)
        if not poly:
            return 0.0
    return 0.5 * sum(poly[k][0] * poly[(k + 1) % len(poly)][1] - poly[(k + 1) % len(poly)][0] * poly[k][1]
                     for k in range(len(poly)))


def dense(op: OverlapOperator) -> np.ndarray:
    return op.matrix.to_dense().numpy()


def test_matches_scalar_reference_16x16():
    n, scale = 16, 0.15
    grid = SourceGrid((11, 13), 0.09, center_x=0.05, center_y=-0.03)
    op = OverlapOperator(*LENS, n, scale, grid, max_area_ratio=None)
    cx, cy = pixel_corners(n, scale)
    bx, by = ray_shoot(cx, cy, *LENS)
    bx, by = bx.numpy(), by.numpy()
    ref = np.zeros((grid.size, n * n))
    for j in range(n):
        for i in range(n):
            poly = [(bx[j, i], by[j, i]), (bx[j, i + 1], by[j, i + 1]),
                    (bx[j + 1, i + 1], by[j + 1, i + 1]), (bx[j + 1, i], by[j + 1, i])]
            sign = np.sign(0.5 * sum(poly[k][0] * poly[(k + 1) % 4][1] - poly[(k + 1) % 4][0] * poly[k][1]
                                     for k in range(4)))
            for b in range(grid.shape[0]):
                for a in range(grid.shape[1]):
                    x0 = grid.x_min + a * grid.pixel_scale
                    y0 = grid.y_min + b * grid.pixel_scale
                    ref[b * grid.shape[1] + a, j * n + i] = sign * scalar_overlap(
                        poly, x0, x0 + grid.pixel_scale, y0, y0 + grid.pixel_scale)
    assert np.abs(ref).sum() > 0.1
    np.testing.assert_allclose(dense(op), ref, rtol=0, atol=1e-10)


def test_random_self_intersecting_quads_match_reference():
    rng = np.random.default_rng(0)
    grid = SourceGrid((4, 5), 0.3, 0.1, -0.05)
    qx, qy = (torch.tensor(rng.uniform(-1, 1, (100, 4))) for _ in range(2))
    q, c, a = quad_cell_overlaps(qx, qy, grid, max_pairs=64)  # several chunks
    got = torch.zeros(100, grid.size, dtype=torch.float64).index_put_((q, c), a, accumulate=True).numpy()
    for k in range(100):
        poly = list(zip(qx[k].tolist(), qy[k].tolist()))
        for cell in range(grid.size):
            b, a_ = divmod(cell, grid.shape[1])
            x0, y0 = grid.x_min + a_ * 0.3, grid.y_min + b * 0.3
            assert abs(got[k, cell] - scalar_overlap(poly, x0, x0 + 0.3, y0, y0 + 0.3)) < 1e-12


def test_identity_map_is_diagonal_pixel_area():
    op = OverlapOperator([], [], 12, 0.1, SourceGrid((12, 12), 0.1))
    np.testing.assert_allclose(dense(op), np.eye(144) * 0.01, rtol=0, atol=1e-15)
    img = torch.rand(12, 12, dtype=torch.float64)
    torch.testing.assert_close(op.to_source(img), img)
    torch.testing.assert_close(op.to_image(img), img)


def _grid_quads(n, scale, dx=0.0, dy=0.0, zoom=1.0):
    cx, cy = pixel_corners(n, scale)
    cx, cy = cx * zoom + dx, cy * zoom + dy
    qx = torch.stack([cx[:-1, :-1], cx[:-1, 1:], cx[1:, 1:], cx[1:, :-1]], -1).reshape(-1, 4)
    qy = torch.stack([cy[:-1, :-1], cy[:-1, 1:], cy[1:, 1:], cy[1:, :-1]], -1).reshape(-1, 4)
    return qx, qy


def test_shift_and_scaling_give_exact_areas():
    grid = SourceGrid((10, 10), 1.0)
    # shift by (0.3, 0.45) cells: each interior pixel splits 0.7/0.3 x 0.55/0.45
    q, c, a = quad_cell_overlaps(*_grid_quads(10, 1.0, 0.3, 0.45), grid)
    full = torch.zeros(100, 100, dtype=torch.float64).index_put_((q, c), a, accumulate=True)
    k = 4 * 10 + 4
    expect = {k: 0.7 * 0.55, k + 1: 0.3 * 0.55, k + 10: 0.7 * 0.45, k + 11: 0.3 * 0.45}
    for cell, area in expect.items():
        assert abs(full[k, cell].item() - area) < 1e-14
    assert abs(full[k].sum().item() - 1.0) < 1e-14
    # shrink by 4: a 4x4 block of quads fills one cell, each with area 1/16
    q, c, a = quad_cell_overlaps(*_grid_quads(8, 1.0, zoom=0.25), grid)
    torch.testing.assert_close(a, torch.full_like(a, 1 / 16))
    assert set(c.tolist()) == {44, 45, 54, 55}
    # magnify by 2 (aligned): each quad covers 4 whole cells
    q, c, a = quad_cell_overlaps(*_grid_quads(4, 1.0, zoom=2.0), grid)
    torch.testing.assert_close(a, torch.ones_like(a))
    assert torch.bincount(q).tolist() == [4] * 16


def test_overlaps_sum_to_traced_area_where_inside():
    n, scale = 48, 0.06
    grid = SourceGrid((40, 40), 0.04)
    op = OverlapOperator(*LENS, n, scale, grid)
    cx, cy = pixel_corners(n, scale)
    bx, by = ray_shoot(cx, cy, *LENS)
    inside = (bx > grid.extent[0]) & (bx < grid.extent[1]) & (by > grid.extent[2]) & (by < grid.extent[3])
    all_in = (inside[:-1, :-1] & inside[1:, :-1] & inside[:-1, 1:] & inside[1:, 1:]).reshape(-1)
    assert all_in.sum() > 500
    covered = op.covered_area.reshape(-1)
    torch.testing.assert_close(covered[all_in], op.traced_area[all_in], rtol=1e-12, atol=1e-16)
    # flux: image pixels' areas all end up in the source
    assert abs(op.coverage.sum().item() - covered.sum().item()) < 1e-12


def test_refinement_keeps_flux_and_refines_area():
    n, scale = 24, 0.12
    grid = SourceGrid((30, 30), 0.06)
    base = OverlapOperator(*LENS, n, scale, grid)
    fine = OverlapOperator(*LENS, n, scale, grid, refine=4, refine_radius=0.5)
    assert fine.matrix._nnz() >= base.matrix._nnz()
    # far from the centre nothing changes
    px, py = pixel_grid(n, scale)
    far = (((px - 0.03) ** 2 + (py + 0.02) ** 2) > 0.6**2).reshape(-1)
    torch.testing.assert_close(fine.traced_area[far], base.traced_area[far])
    # refined traced areas approach the true pre-image area (finer still = reference)
    finer = OverlapOperator(*LENS, n, scale, grid, refine=16, refine_radius=0.5)
    near = ~far
    err_base = (base.traced_area[near] - finer.traced_area[near]).abs().sum()
    err_fine = (fine.traced_area[near] - finer.traced_area[near]).abs().sum()
    assert err_fine < 0.5 * err_base


def test_forward_then_backward_recovers_smooth_source():
    grid = SourceGrid((32, 32), 0.05)
    yy, xx = (torch.arange(32, dtype=torch.float64) - 15.5) * 0.05, (torch.arange(32, dtype=torch.float64) - 15.5) * 0.05
    y, x = torch.meshgrid(yy, xx, indexing="ij")
    src = torch.exp(-0.5 * ((x - 0.1) ** 2 + (y + 0.05) ** 2 / 0.7) / 0.25**2) * grid.pixel_scale**2
    sim = LensingSimulator(64, 0.05, 4)
    img = sim.image(*LENS, ["PIXELATED"], [dict(image=src, pixel_scale=0.05)])
    op = OverlapOperator(*LENS, 64, 0.05, grid)
    rec = op.to_source(img)
    mask = op.mask
    assert mask.float().mean() > 0.3
    well = mask & (op.coverage > 0.5 * grid.pixel_scale**2)
    err = (rec - src)[well].abs().max() / src.max()
    assert err < 0.03
    assert (rec - src)[mask].abs().max() / src.max() < 0.05
    # the naive scatter leaves holes (the "flower") where the overlap map does not
    bx, by = ray_shoot(*pixel_grid(64, 0.05), *LENS)
    naive, count = naive_scatter(img, bx, by, grid, 0.05)
    assert ((count == 0) & well).sum() > 0
    assert torch.isfinite(naive).all()


def test_negative_parity_quads_get_positive_areas():
    op = OverlapOperator(["SIS"], [dict(theta_E=1.0)], 40, 0.075, SourceGrid((40, 40), 0.05))
    assert (op.traced_area < 0).sum() == 0  # parity-signed: all |area|
    vals = op.matrix.values()
    assert (vals < -1e-12).sum() <= 0.01 * vals.numel()  # only folded quads at critical curves
