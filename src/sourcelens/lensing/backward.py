"""Backward lensing: image plane to source plane.

Two ways to put an observed image (flux per pixel) on a source grid:

* :func:`naive_scatter` -- each image-pixel centre is traced to the source plane and its
  surface brightness added to the one source cell it lands in (``scatter_add``), then
  averaged. Cells that no ray hits stay empty, and the ray density varies with the
  magnification, which gives the familiar "flower" pattern.
* :class:`OverlapOperator` -- exact fractional overlaps. The four corners of every image
  pixel are traced to the source plane; the (straight-edged) traced quadrilateral is clipped
  against every source cell of its bounding box and the overlap areas are kept in a sparse
  matrix ``W`` (source cells x image pixels, arcsec^2). ``W`` averages image surface
  brightness into the source (``to_source``) and its transpose maps a source back to the
  image (``to_image``).

Clipping. Sutherland--Hodgman clipping of a polygon against an axis-aligned half-plane
keeps the inside vertices and inserts the crossing points; the output boundary is exactly
the subject boundary mapped through the clamp onto the half-plane (runs outside collapse
onto the clip line, where they enclose no area). Clipping against a whole cell is therefore
the boundary mapped through the componentwise clamp to the cell, which is linear between
the points where an edge crosses a cell line. For every (quad, cell) pair the shoelace area
of that clamped boundary, ``(1/2) sum (X dY - Y dX) = sum X dY`` over the closed path, is
integrated edge by edge in closed form (``X`` is piecewise linear between the at most four
crossings, ``dY`` vanishes where ``Y`` is clamped), with no vertex lists and no sorting. This
is the area of the Sutherland--Hodgman polygon (up to harmless zero-area spurs along the
cell edges), fully vectorised.

Non-convex and self-intersecting quads. Traced quads are non-convex or folded (bow-ties)
near critical curves. Clipping a *subject* of any shape against a *convex* clip region is
exact when area is signed: the clipped curve has the same winding number as the subject at
every point inside the cell and zero outside, so its shoelace area is the integral over the
cell of the subject's winding number. For simple quads (convex or not) this is +-(overlap
area), the sign being the orientation (image parity: negative-parity images trace to
clockwise quads). We store overlaps times the parity of each quad (the sign of its total
signed area), so simple quads get their true overlap areas and each pixel's overlaps sum
to its traced area |A| where the quad lies inside the grid (flux conservation). For a folded
quad the cells of the fold get winding-number-weighted (possibly negative) areas; they
still sum to the quad's net area. ``refine`` subdivides image pixels near the lens centre,
where traced edges curve most, so that the straight-edged quads follow the true pre-images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .conventions import pixel_corners, pixel_grid
from .lenses import ray_shoot

__all__ = ["SourceGrid", "naive_scatter", "quad_cell_overlaps", "polygon_area",
           "trace_pixel_quads", "OverlapOperator"]


@dataclass(frozen=True)
class SourceGrid:
    """A source-plane grid: ``shape = (m_y, m_x)`` cells of ``pixel_scale`` arcsec, centred on
    ``(center_x, center_y)``; cell ``(j, i)`` (row, col) has its centre at
    ``center + ((i, j) - (m - 1) / 2) * pixel_scale``, as lenstronomy's centred grid."""

    shape: tuple[int, int]
    pixel_scale: float
    center_x: float = 0.0
    center_y: float = 0.0

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def x_min(self) -> float:
        """Left edge of the grid (arcsec)."""
        return self.center_x - self.shape[1] * self.pixel_scale / 2

    @property
    def y_min(self) -> float:
        """Bottom edge of the grid (arcsec)."""
        return self.center_y - self.shape[0] * self.pixel_scale / 2

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(x_min, x_max, y_min, y_max)`` arcsec, for ``imshow(origin="lower")``."""
        return (self.x_min, self.x_min + self.shape[1] * self.pixel_scale,
                self.y_min, self.y_min + self.shape[0] * self.pixel_scale)

    def cell_index(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index of positions (arcsec) and whether they fall inside the grid."""
        i = torch.floor((x - self.x_min) / self.pixel_scale).long()
        j = torch.floor((y - self.y_min) / self.pixel_scale).long()
        inside = (i >= 0) & (i < self.shape[1]) & (j >= 0) & (j < self.shape[0])
        return j.clamp(0, self.shape[0] - 1) * self.shape[1] + i.clamp(0, self.shape[1] - 1), inside


def naive_scatter(image: Tensor, bx: Tensor, by: Tensor, grid: SourceGrid,
                  image_pixel_scale: float) -> tuple[Tensor, Tensor]:
    """Scatter image pixels (flux per pixel) to the source cell their traced centre lands in.

    ``bx, by`` are the traced pixel centres (arcsec, same shape as ``image``'s last two
    axes). Returns the mean source flux per source pixel (surface brightness times the cell
    area; 0 where no ray landed) and the number of rays per cell, both ``grid.shape``.
    """
    idx, inside = grid.cell_index(bx.reshape(-1), by.reshape(-1))
    sb = (image.reshape(*image.shape[:-2], -1) / image_pixel_scale**2)
    idx, sb = idx[inside], sb[..., inside]
    total = torch.zeros(*sb.shape[:-1], grid.size, dtype=sb.dtype, device=sb.device)
    total = total.index_add(-1, idx, sb)
    count = torch.zeros(grid.size, dtype=sb.dtype, device=sb.device).index_add(
        0, idx, torch.ones_like(idx, dtype=sb.dtype))
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    return (mean * grid.pixel_scale**2).reshape(*sb.shape[:-1], *grid.shape), count.reshape(grid.shape)


def polygon_area(px: Tensor, py: Tensor) -> Tensor:
    """Signed shoelace area of polygons ``(..., K)`` (counter-clockwise positive)."""
    return 0.5 * (px * py.roll(-1, -1) - px.roll(-1, -1) * py).sum(-1)


def _clamp_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``clamp(z, 0, 1)`` for ``z`` running linearly from ``a`` to ``b`` (exact)."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    m1, m2 = lo.clamp(0, 1), hi.clamp(0, 1)
    same = (hi <= 0) | (lo >= 1) | ((lo >= 0) & (hi <= 1))
    integral = 0.5 * (m2 - m1) * (m2 + m1) + (hi - torch.clamp(lo, min=1)).clamp(min=0)
    span = torch.where(same, torch.ones_like(hi), hi - lo)
    return torch.where(same, (0.5 * (lo + hi)).clamp(0, 1), integral / span)


def _edge_terms(u: Tensor, v: Tensor) -> tuple[Tensor, ...]:
    """Per-edge constants of quads ``(N, 4)`` (grid units): start, step and ``1/dv``."""
    du, dv = u.roll(-1, -1) - u, v.roll(-1, -1) - v
    moving = dv != 0
    inv = torch.where(moving, 1 / torch.where(moving, dv, torch.ones_like(dv)), torch.zeros_like(dv))
    return u, v, du, dv, inv


def _clamped_edge_area(u0: Tensor, v0: Tensor, du: Tensor, dv: Tensor, inv_dv: Tensor) -> Tensor:
    """``integral X dY`` along edges ``(u0, v0) -> (u0 + du, v0 + dv)`` clamped to the unit cell.

    Summed over a closed polygon this is the shoelace area ``(1/2) sum (X dY - Y dX)`` of
    the clamped (= Sutherland--Hodgman clipped) polygon, evaluated per edge in closed form:
    ``dY`` vanishes where the clamped ``v`` is flat (``inv_dv = 0`` marks ``dv = 0``), and
    ``X = clamp(u)``, piecewise linear, is integrated over the parameter range ``[ta, tb]``
    where ``v`` is inside the cell.
    """
    t0 = -v0 * inv_dv
    t1 = t0 + inv_dv
    ta = torch.minimum(t0, t1).clamp_(0, 1)
    tb = torch.maximum(t0, t1).clamp_(0, 1)
    span_t = (tb - ta).clamp_(min=0)
    mean = _clamp_mean(u0 + ta * du, u0 + tb * du)
    return dv * span_t * mean


def _pair_areas(u: Tensor, v: Tensor, du: Tensor, dv: Tensor, inv_dv: Tensor) -> Tensor:
    """Signed overlap (cell units) with the unit cell of quads ``(P, 4)`` given in cell-local
    coordinates with their edge steps."""
    return _clamped_edge_area(u, v, du, dv, inv_dv).sum(-1)


def quad_cell_overlaps(qx: Tensor, qy: Tensor, grid: SourceGrid, *,
                       max_pairs: int = 1 << 17) -> tuple[Tensor, Tensor, Tensor]:
    """Signed overlap areas (arcsec^2) of quads ``(N, 4)`` (arcsec) with the cells of ``grid``.

    Candidate cells are those of each quad's bounding box; pairs are generated with
    ``repeat_interleave`` and processed in chunks of ``max_pairs`` (memory stays bounded).
    Returns ``(quad, cell, area)`` for the non-zero overlaps.
    """
    s = grid.pixel_scale
    u = (qx - grid.x_min) / s
    v = (qy - grid.y_min) / s
    my, mx = grid.shape
    i0 = torch.floor(u.min(-1).values).clamp(min=0)
    i1 = torch.floor(u.max(-1).values).clamp(max=mx - 1)
    j0 = torch.floor(v.min(-1).values).clamp(min=0)
    j1 = torch.floor(v.max(-1).values).clamp(max=my - 1)
    w = (i1 - i0 + 1).clamp(min=0).long()
    h = (j1 - j0 + 1).clamp(min=0).long()
    count = w * h
    keep = torch.nonzero(count > 0).squeeze(-1)
    i0, j0, w, count = i0.long()[keep], j0.long()[keep], w[keep], count[keep]
    u, v, du, dv, inv = _edge_terms(u[keep], v[keep])
    ends = torch.cumsum(count, 0)
    out_q, out_c, out_a = [], [], []
    start_q = 0
    n = keep.numel()
    while start_q < n:
        base = int(ends[start_q - 1]) if start_q else 0
        stop_q = int(torch.searchsorted(ends, base + max_pairs, right=True))
        stop_q = max(stop_q, start_q + 1)
        cnt = count[start_q:stop_q]
        q = torch.repeat_interleave(torch.arange(start_q, stop_q, device=u.device), cnt)
        k = torch.arange(q.numel(), device=u.device) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
        ci = i0[q] + k % w[q]
        cj = j0[q] + torch.div(k, w[q], rounding_mode="floor")
        area = _pair_areas(u[q] - ci[:, None], v[q] - cj[:, None], du[q], dv[q], inv[q])
        nz = area.abs() > 1e-14  # drop exact zeros and rounding-level touches
        out_q.append(keep[q[nz]])
        out_c.append((cj * mx + ci)[nz])
        out_a.append(area[nz] * s**2)
        start_q = stop_q
    if not out_q:
        e = torch.zeros(0, dtype=torch.long, device=qx.device)
        return e, e, torch.zeros(0, dtype=qx.dtype, device=qx.device)
    return torch.cat(out_q), torch.cat(out_c), torch.cat(out_a)


def trace_pixel_quads(lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                      n_pix: int, pixel_scale: float, *, refine: int = 1,
                      refine_radius: float = 0.0, refine_center: tuple[float, float] = (0.0, 0.0),
                      dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Traced corners ``(N, 4)`` x and y (arcsec, counter-clockwise in the image plane) of the
    image pixels' quads and the image pixel each belongs to.

    Pixels whose centre lies within ``refine_radius`` arcsec of ``refine_center`` are split
    into ``refine x refine`` sub-quads.
    """
    cx, cy = pixel_corners(n_pix, pixel_scale, dtype=dtype, device=device)
    with torch.no_grad():
        bx, by = ray_shoot(cx, cy, lens_models, kwargs_lens)
    if bx.ndim != 2:
        raise ValueError("backward lensing takes one lens (unbatched parameters)")

    def quads(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # corners (..., r+1, r+1) -> quads (..., r*r, 4): (j,i) (j,i+1) (j+1,i+1) (j+1,i)
        q = [x[..., :-1, :-1], x[..., :-1, 1:], x[..., 1:, 1:], x[..., 1:, :-1]]
        p = [y[..., :-1, :-1], y[..., :-1, 1:], y[..., 1:, 1:], y[..., 1:, :-1]]
        return (torch.stack(q, -1).flatten(-3, -2), torch.stack(p, -1).flatten(-3, -2))

    qx, qy = quads(bx, by)
    pix = torch.arange(n_pix * n_pix, device=qx.device)
    if refine > 1 and refine_radius > 0:
        px, py = pixel_grid(n_pix, pixel_scale, dtype=dtype, device=device)
        near = (((px - refine_center[0]) ** 2 + (py - refine_center[1]) ** 2)
                <= refine_radius**2).reshape(-1)
        sel = torch.nonzero(near).squeeze(-1)
        if sel.numel():
            off = (torch.arange(refine + 1, dtype=dtype, device=qx.device) / refine - 0.5) * pixel_scale
            sy, sx = torch.meshgrid(off, off, indexing="ij")
            sub_x = px.reshape(-1)[sel, None, None] + sx
            sub_y = py.reshape(-1)[sel, None, None] + sy
            with torch.no_grad():
                tx, ty = ray_shoot(sub_x, sub_y, lens_models, kwargs_lens)
            rx, ry = quads(tx, ty)
            coarse = ~near
            qx = torch.cat([qx[coarse], rx.reshape(-1, 4)])
            qy = torch.cat([qy[coarse], ry.reshape(-1, 4)])
            pix = torch.cat([pix[coarse], sel.repeat_interleave(refine * refine)])
    return qx, qy, pix


class OverlapOperator:
    """Exact fractional-overlap map between an ``n_pix x n_pix`` image and a source grid.

    ``matrix`` is a sparse ``(grid.size, n_pix**2)`` tensor ``W`` of overlap areas (arcsec^2,
    parity-signed, see the module docstring): ``W[s, p]`` is the area of source cell ``s``
    covered by the traced image pixel ``p``. Images and sources are flux per pixel.

    Quads traced to more than ``max_area_ratio`` times their image-plane area (``|mu|`` below
    ``1 / max_area_ratio``) are left out: they straddle the central singularity of cuspy
    lenses, where a pixel's pre-image is nothing like the straight-edged quad through its
    traced corners (the pixel on an SIS centre traces to a polygon inscribed in the Einstein
    ring). ``refine`` (sub-quads per pixel side, within ``refine_radius`` arcsec of
    ``refine_center``, default the first lens centre) follows curved pre-images closer.
    """

    def __init__(self, lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                 n_pix: int, pixel_scale: float, grid: SourceGrid, *, refine: int = 1,
                 refine_radius: float = 0.0, refine_center: tuple[float, float] | None = None,
                 max_area_ratio: float | None = 10.0, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, max_pairs: int = 1 << 17):
        self.n_pix, self.pixel_scale, self.grid = n_pix, pixel_scale, grid
        if refine_center is None:
            kw0 = kwargs_lens[0] if len(kwargs_lens) else {}
            refine_center = (float(kw0.get("center_x", 0.0)), float(kw0.get("center_y", 0.0)))
        qx, qy, pix = trace_pixel_quads(lens_models, kwargs_lens, n_pix, pixel_scale,
                                        refine=refine, refine_radius=refine_radius,
                                        refine_center=refine_center, dtype=dtype, device=device)
        signed = polygon_area(qx, qy)
        if max_area_ratio is not None:
            sub = torch.bincount(pix, minlength=n_pix * n_pix)[pix]  # sub-quads per pixel
            ok = signed.abs() <= max_area_ratio * pixel_scale**2 / sub
            qx, qy, pix, signed = qx[ok], qy[ok], pix[ok], signed[ok]
        parity = torch.sign(signed)
        q, cell, area = quad_cell_overlaps(qx, qy, grid, max_pairs=max_pairs)
        area = area * parity[q]
        #: traced area (arcsec^2, parity-signed) of each image pixel
        self.traced_area = torch.zeros(n_pix * n_pix, dtype=dtype, device=qx.device).index_add(
            0, pix, signed * parity)
        coo = torch.sparse_coo_tensor(torch.stack([cell, pix[q]]), area, (grid.size, n_pix * n_pix),
                                      check_invariants=False).coalesce()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            self.matrix = coo.to_sparse_csr()
            self.matrix_t = coo.t().coalesce().to_sparse_csr()
        ones = torch.ones(n_pix * n_pix, 1, dtype=dtype, device=qx.device)
        #: total image-pixel area landing in each source cell (arcsec^2), ``grid.shape``
        self.coverage = (self.matrix @ ones).reshape(grid.shape)
        #: area of each image pixel's traced quad that lies inside the grid (arcsec^2)
        self.covered_area = (self.matrix_t @ torch.ones(grid.size, 1, dtype=dtype,
                                                        device=qx.device)).reshape(n_pix, n_pix)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "OverlapOperator":
        """A copy with its matrices and maps in ``dtype`` on ``device`` (e.g. float32 for training; the overlaps
        are computed in float64 and only rounded here); CSR indices become int32 (half the memory)."""
        import copy

        out = copy.copy(self)
        for name in ("matrix", "matrix_t"):
            m = getattr(self, name).to(device=device, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                m = torch.sparse_csr_tensor(m.crow_indices().int(), m.col_indices().int(), m.values(), m.shape)
            setattr(out, name, m)
        for name in ("coverage", "covered_area", "traced_area"):
            setattr(out, name, getattr(self, name).to(device=device, dtype=dtype))
        return out

    @property
    def mask(self) -> Tensor:
        """Convergence mask: source cells that receive any image pixel, ``grid.shape``."""
        return self.coverage > 0

    def to_source(self, image: Tensor) -> Tensor:
        """Area-weighted mean of image surface brightness in each source cell, as flux per
        source pixel (0 outside the mask); ``(n, n)`` or ``(B, n, n)`` in."""
        lead = image.shape[:-2]
        sb = image.reshape(-1, self.n_pix * self.n_pix).T / self.pixel_scale**2
        num = (self.matrix @ sb.to(self.matrix.dtype)).T.reshape(*lead, *self.grid.shape)
        cov = self.coverage
        out = torch.where(cov > 0, num / torch.where(cov > 0, cov, torch.ones_like(cov)),
                          torch.zeros_like(num))
        return out * self.grid.pixel_scale**2

    def to_image(self, source: Tensor) -> Tensor:
        """Transpose map: each image pixel gets the area-weighted mean source surface
        brightness over its traced quad, as flux per image pixel (0 where it misses the grid)."""
        lead = source.shape[:-2]
        sb = source.reshape(-1, self.grid.size).T / self.grid.pixel_scale**2
        num = (self.matrix_t @ sb.to(self.matrix.dtype)).T.reshape(*lead, self.n_pix, self.n_pix)
        a = self.covered_area
        out = torch.where(a != 0, num / torch.where(a != 0, a, torch.ones_like(a)), torch.zeros_like(num))
        return out * self.pixel_scale**2
