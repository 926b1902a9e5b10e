"""The physics of lensed-image super-resolution (studies 001 and 004): per-lens operators between a
low-resolution image, its source and the ``factor``× finer image, and the χ² that compares them.

Grids (lenstronomy's centred grids, one field of view): the low-resolution image, ``n`` pixels of ``s`` arcsec;
the high-resolution image, ``f·n`` pixels of ``s/f``; the network's input source grid, ``n`` cells of ``s``
(what the low-resolution image resolves); the output source grid, ``f·n`` cells of ``s/f`` — the grid of the SR
datasets' ``source_high_res``, so a recovered source is compared with the truth cell by cell.

:class:`SRLens` holds one lens's operators: the exact fractional-overlap map of the low-resolution image onto
the input source grid (``i∘β``, :meth:`OverlapOperator.to_source`, no gradients needed), the exact overlap map
of the high-resolution source onto the high-resolution image (``ŝ∘θ``, :meth:`OverlapOperator.to_image`: the
pixel-integrated image of the piecewise-constant source, a sparse CSR product through which gradients flow) or
its bilinear counterpart (the source interpolated at each pixel's sub-samples, as the datasets were rendered), the
PSF ``P`` at the high-resolution scale and the block sum ``D`` (:func:`~.forward.downsample`), so that the model
of the data is ``F = D(P ∗ (ŝ∘θ))`` (study 004; on point-sampled data such as Model_I, the source sampled at the
low-res pixels instead). Built in float64 and kept in float32: about 0.7 s and 1.2 MB per lens at 75² → 150².
:class:`SRLensCache` builds each distinct lens once. :func:`data_consistency` moves any super-resolved image onto
its data through ``D``.

Units. Images are flux per pixel. The networks work in *normalised surface-brightness units*: a
low-resolution image divided by its scale ``c`` (:func:`sourcelens.models.common.lensed_image_scale`); a
high-resolution image or source in the same units holds ``f²·flux/c`` per fine pixel, so that bicubic
upsampling preserves the values and ``D/f²`` (block mean) brings a fine image back to the coarse one. Lensing
(fine cells and fine pixels have one size) and the PSF are linear and keep these units.

χ² normalisation (:func:`chi2_per_pixel`): ``Σ w (d − m)²/σ² / Σ w`` over each image, so a model equal to the
noiseless truth scores ≈ 1 on data with Gaussian noise σ whatever the weights ``w`` (mask, magnification).
A residual on the fine grid (:func:`fine_sigma`) is compared with ``f·σ`` (the noise of one fine pixel if
``f²`` independent fine pixels averaged to the coarse noise σ), so its χ² per pixel is ≈ 1 at the noise level
too. ``sigma_floor`` (a fraction of the image scale, added in quadrature) keeps noiseless data finite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .backward import OverlapOperator, SourceGrid
from .conventions import pixel_grid
from .forward import convolve, downsample
from .maps import magnification

__all__ = ["INTERPOLATIONS", "low_res_is_binned", "SRGeometry", "SRLens", "SRLensCache", "psf_kernel", "chi2_per_pixel", "fine_sigma",
           "total_variation", "block_mean", "data_consistency"]


#: Forward maps of a high-resolution source onto the image (:class:`SRLens`).
INTERPOLATIONS = ("overlap", "bilinear")


def psf_kernel(psf: Mapping[str, Any] | None, pixel_scale: float, subgrid: int = 1) -> Tensor | None:
    """The PSF kernel (unit sum, float64) at ``pixel_scale`` arcsec of a dataset's ``psf`` description (the
    config's ``psf`` block: GAUSSIAN, MOFFAT, PIXEL, NONE), built as the simulation builds it
    (:func:`sourcelens.simulate.make_psf`, ``subgrid`` for a PIXEL kernel on a finer grid); None for NONE."""
    from ..simulate import make_psf

    if not psf or str(psf.get("type", "GAUSSIAN")).upper() == "NONE":
        return None
    kernel = np.asarray(make_psf(psf, pixel_scale, subgrid).kernel_point_source, dtype=float)
    return torch.as_tensor(kernel / kernel.sum())


def low_res_is_binned(factor: int, supersampling: int | None = 1, low_res_supersampling: int | None = None) -> bool:
    """Whether a low-res image rendered on ``low_res_supersampling`` sub-pixels per side (None: the high-res
    sub-pixels) is the ``factor × factor`` block sum of the high-res image rendered on ``supersampling``."""
    return low_res_supersampling is None or int(low_res_supersampling) == int(factor) * int(supersampling or 1)


@dataclass(frozen=True)
class SRGeometry:
    """The grids of a super-resolution problem: ``low_res_num_pix`` pixels of ``low_res_pixel_scale`` arcsec,
    ``factor``× finer high-resolution grid; ``psf``: kernel at the high-resolution scale (None: no PSF).

    How the images sample the sky (as the SR datasets were rendered): ``supersampling`` sub-pixels per side of a
    high-resolution pixel, ``low_res_supersampling`` of a low-resolution one (None: ``factor × supersampling``,
    the high-resolution sub-pixels, so that the low-res image is the block sum of the high-res one,
    :attr:`low_res_is_binned`); ``low_res_psf``: the kernel at the low-resolution scale, used only where the
    low-res image is not binned (Model_I samples both grids at pixel centres, without PSF)."""

    low_res_num_pix: int
    low_res_pixel_scale: float
    factor: int
    psf: Tensor | None = field(default=None, compare=False, repr=False)
    supersampling: int = 1
    low_res_supersampling: int | None = None
    low_res_psf: Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def low_res_is_binned(self) -> bool:
        """Whether the low-res image is the ``factor × factor`` block sum of the high-res one (``D`` exact)."""
        return low_res_is_binned(self.factor, self.supersampling, self.low_res_supersampling)

    @property
    def high_res_num_pix(self) -> int:
        return self.low_res_num_pix * self.factor

    @property
    def high_res_pixel_scale(self) -> float:
        """arcsec per high-resolution pixel."""
        return self.low_res_pixel_scale / self.factor

    @property
    def low_res_source_grid(self) -> SourceGrid:
        """The network's input source grid (the low-resolution image's field and pixel scale)."""
        return SourceGrid((self.low_res_num_pix,) * 2, self.low_res_pixel_scale)

    @property
    def high_res_source_grid(self) -> SourceGrid:
        """The recovered source's grid (the datasets' ``source_high_res`` grid)."""
        return SourceGrid((self.high_res_num_pix,) * 2, self.high_res_pixel_scale)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "SRGeometry":
        """The geometry of an SR dataset from its root attributes (``low_res_num_pix``,
        ``low_res_pixel_scale_arcsec``, ``factor``, ``psf``, ``supersampling``, ``low_res_supersampling``: the
        last three optional); KeyError names a missing one."""
        missing = [k for k in ("low_res_num_pix", "low_res_pixel_scale_arcsec", "factor") if k not in attrs]
        if missing:
            raise KeyError(f"SR dataset attributes lack {', '.join(missing)}")
        factor, scale = int(attrs["factor"]), float(attrs["low_res_pixel_scale_arcsec"])
        ss = int(attrs.get("supersampling") or 1)
        lr_ss = attrs.get("low_res_supersampling")
        lr_ss = None if low_res_is_binned(factor, ss, lr_ss) else int(lr_ss)
        return cls(int(attrs["low_res_num_pix"]), scale, factor, psf_kernel(attrs.get("psf"), scale / factor, factor),
                   ss, lr_ss, None if lr_ss is None else psf_kernel(attrs.get("psf"), scale))


def block_mean(image: Tensor, factor: int) -> Tensor:
    """``D/f²``: the mean of ``factor × factor`` blocks of the last two axes (normalised units, module
    docstring)."""
    return downsample(image, factor) / factor**2


def _full_precision(tensor: Tensor):
    """A context without autocast on ``tensor``'s device: the lensing operators run in their own dtype."""
    return torch.autocast(tensor.device.type, enabled=False)


class SRLens:
    """One lens's super-resolution operators (module docstring) for ``geometry``; ``lens_models`` and
    ``kwargs_lens`` as in :mod:`sourcelens.lensing.lenses` (one lens, unbatched). Keyword arguments go to both
    :class:`OverlapOperator` s (``refine``, ``max_area_ratio``, …).

    The forward map of a high-resolution source onto the image (``interpolation``, :data:`INTERPOLATIONS`):
    ``"overlap"`` — the exact overlap of the traced pixels with the source cells (a piecewise-constant source,
    integrated over each pixel: blocky where the lens magnifies a cell over several pixels), the low-res model
    the block mean of the high-res image; ``"bilinear"`` — the source interpolated bilinearly at the dataset's
    sub-pixels of each pixel (:class:`~.sparse.BilinearLensingOperator`, as lenstronomy renders a smooth
    source), the low-res model the block mean where the low-res image is binned
    (:attr:`SRGeometry.low_res_is_binned`), else the source sampled at the low-res sub-pixels with the low-res
    PSF. Each operator is built on first use (the bilinear map about 4× faster than the overlaps)."""

    def __init__(self, geometry: SRGeometry, lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]],
                 *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, **overlap: Any):
        g = geometry
        self.geometry, self.lens_models, self.kwargs_lens = g, list(lens_models), [dict(k) for k in kwargs_lens]
        self.dtype, self.device, self._overlap = dtype, device, overlap
        self.backward = OverlapOperator(lens_models, kwargs_lens, g.low_res_num_pix, g.low_res_pixel_scale,
                                        g.low_res_source_grid, **overlap).to(dtype, device)
        self._ops: dict[str, Any] = {}
        self.psf = None if g.psf is None else g.psf.to(dtype=dtype, device=device)
        self.low_res_psf = None if g.low_res_psf is None else g.low_res_psf.to(dtype=dtype, device=device)

    @property
    def forward_op(self) -> OverlapOperator:
        """The exact-overlap map of the high-resolution source onto the high-resolution image."""
        if "overlap" not in self._ops:
            g = self.geometry
            self._ops["overlap"] = OverlapOperator(self.lens_models, self.kwargs_lens, g.high_res_num_pix,
                                                   g.high_res_pixel_scale, g.high_res_source_grid,
                                                   **self._overlap).to(self.dtype, self.device)
        return self._ops["overlap"]

    def _bilinear(self, which: str) -> "BilinearLensingOperator":
        """The bilinear map of the high-resolution source onto the ``high_res`` or ``low_res`` image."""
        if which not in self._ops:
            from .forward import LensingSimulator
            from .sparse import BilinearLensingOperator

            g = self.geometry
            n, scale, sub = ((g.high_res_num_pix, g.high_res_pixel_scale, g.supersampling) if which == "high_res" else
                             (g.low_res_num_pix, g.low_res_pixel_scale, g.low_res_supersampling or 1))
            sim = LensingSimulator(n, scale, supersample=sub, device=self.device)
            op = BilinearLensingOperator(sim, self.lens_models, self.kwargs_lens, (g.high_res_num_pix,) * 2,
                                         g.high_res_pixel_scale)
            m = op.matrix.to(dtype=self.dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
                op.matrix = torch.sparse_csr_tensor(m.crow_indices().int(), m.col_indices().int(), m.values(),
                                                    m.shape)
            self._ops[which] = op
        return self._ops[which]

    def to_source(self, image: Tensor) -> Tensor:
        """``i∘β``: low-resolution images (…, n, n) on the input source grid (…, n, n), same units (exact
        overlaps; 0 outside the convergence mask)."""
        with _full_precision(image):
            return self.backward.to_source(image)

    def lens(self, source: Tensor, interpolation: str = "overlap") -> Tensor:
        """``ŝ∘θ``: high-resolution sources (…, fn, fn) lensed onto the high-resolution image, before the PSF
        (differentiable), by ``interpolation`` (class docstring). In the operators' precision also inside a
        mixed-precision training step (sparse products have no bf16 kernel on the CPU)."""
        with _full_precision(source):
            if interpolation == "overlap":
                return self.forward_op.to_image(source)
            if interpolation == "bilinear":
                return self._bilinear("high_res").lens(source.to(self.dtype))
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")

    def blur(self, image: Tensor) -> Tensor:
        """``P ∗``: the PSF at the high-resolution scale."""
        with _full_precision(image):
            return convolve(image, self.psf)

    def image(self, source: Tensor, interpolation: str = "overlap") -> Tensor:
        """``P ∗ (ŝ∘θ)``: the super-resolved image of a high-resolution source (the SR output)."""
        return self.blur(self.lens(source, interpolation))

    def forward(self, source: Tensor, interpolation: str = "overlap") -> tuple[Tensor, Tensor]:
        """The high-resolution image ``P ∗ (ŝ∘θ)`` and the model of the data (class docstring), normalised
        units."""
        hr = self.image(source, interpolation)
        g = self.geometry
        if interpolation == "overlap" or g.low_res_is_binned:
            return hr, block_mean(hr, g.factor)
        with _full_precision(source):
            low = self._bilinear("low_res").lens(source.to(self.dtype)) / g.factor**2
            return hr, convolve(low, self.low_res_psf)

    __call__ = forward

    def mask_weight(self) -> Tensor:
        """Convergence-mask weight (n, n) of each low-resolution pixel: the fraction of its traced area on
        input source cells that receive image pixels (``C(β)`` brought to the image plane): 0 for pixels whose
        pre-image leaves the grid or straddles a central singularity (left out by the overlap operator)."""
        op = self.backward
        inside = op.covered_area.abs() / op.traced_area.abs().clamp_min(1e-30).reshape(op.covered_area.shape)
        return torch.where(op.traced_area.reshape(inside.shape) != 0, inside.clamp(0, 1), torch.zeros_like(inside))

    def magnification_weight(self, max_magnification: float = 30.0) -> Tensor:
        """``|μ(θ)|`` at the low-resolution pixel centres (n, n), capped at ``max_magnification`` (it diverges
        on the critical curves), scaled to mean 1."""
        g = self.geometry
        x, y = pixel_grid(g.low_res_num_pix, g.low_res_pixel_scale)
        mu = magnification(x, y, self.lens_models, self.kwargs_lens).abs().clamp(max=max_magnification)
        mu = torch.nan_to_num(mu, nan=max_magnification)
        return (mu / mu.mean()).to(self.backward.coverage.dtype)

    def weight(self, mask: bool = False, magnify: bool = False, max_magnification: float = 30.0) -> Tensor:
        """Pixel weights (n, n) of the χ²: ones, times :meth:`mask_weight` and/or :meth:`magnification_weight`."""
        w = torch.ones_like(self.backward.covered_area)
        if mask:
            w = w * self.mask_weight()
        if magnify:
            w = w * self.magnification_weight(max_magnification)
        return w


class SRLensCache:
    """:class:`SRLens` es of one geometry, built once per distinct lens (keyed by the model names and the
    parameter values) and kept; ``overlap`` keywords go to every :class:`SRLens`."""

    def __init__(self, geometry: SRGeometry, **overlap: Any):
        self.geometry, self.overlap = geometry, overlap
        self._lenses: dict[tuple, SRLens] = {}

    def __len__(self) -> int:
        return len(self._lenses)

    def get(self, lens_models: Sequence[str], kwargs_lens: Sequence[Mapping[str, Any]]) -> SRLens:
        key = (tuple(lens_models), tuple(tuple(sorted((k, round(float(v), 12)) for k, v in kw.items()))
                                         for kw in kwargs_lens))
        if key not in self._lenses:
            self._lenses[key] = SRLens(self.geometry, lens_models, kwargs_lens, **self.overlap)
        return self._lenses[key]

    def for_rows(self, lens_model: str, lens_params: np.ndarray, with_shear: bool = False) -> list[SRLens]:
        """One :class:`SRLens` per row of a dataset's ``lens_params`` (N, 8) (LENS_PARAMETERS columns; the
        external shear only ``with_shear``: the SR datasets have none, the pairs do)."""
        from ..names import LENS_PARAMETERS
        from ..simulate import lens_kwargs

        out = []
        for row in np.asarray(lens_params, dtype=float):
            models, kwargs = lens_kwargs(lens_model, dict(zip(LENS_PARAMETERS, row)), with_shear=with_shear)
            out.append(self.get(models, kwargs))
        return out


def chi2_per_pixel(data: Tensor, model: Tensor, sigma: Tensor, weight: Tensor | None = None) -> Tensor:
    """``Σ w ((d − m)/σ)² / Σ w`` per image (…,): ≈ 1 for a model equal to the truth under Gaussian noise σ
    (:func:`sourcelens.metrics.chi2` with the weights as its mask)."""
    from ..metrics import chi2

    w = torch.ones_like(data) if weight is None else weight.expand_as(data)
    return chi2(data, model, sigma, w) / w.sum((-2, -1)).clamp_min(1e-12)


def fine_sigma(sigma: Tensor, factor: int) -> Tensor:
    """The noise of one fine pixel, ``f·σ`` repeated over each coarse pixel's ``f × f`` block (module
    docstring), for χ²'s of high-resolution residuals in normalised units."""
    return factor * F.interpolate(sigma.reshape(-1, 1, *sigma.shape[-2:]), scale_factor=factor,
                                  mode="nearest").reshape(*sigma.shape[:-2], *(factor * s for s in sigma.shape[-2:]))


def total_variation(image: Tensor) -> Tensor:
    """Anisotropic total variation per image (…,): mean |horizontal| + mean |vertical| neighbour difference."""
    return ((image[..., :, 1:] - image[..., :, :-1]).abs().mean((-2, -1))
            + (image[..., 1:, :] - image[..., :-1, :]).abs().mean((-2, -1)))


def data_consistency(high_res: np.ndarray, low_res: np.ndarray, sigma: np.ndarray | float, factor: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Super-resolved images (N, fn, fn) moved towards their low-resolution data (N, n, n), both flux per pixel,
    where the low-res image is the block sum ``D`` of the high-res one (:attr:`SRGeometry.low_res_is_binned`):
    ``HR + t · up(LR − D HR)/f²`` (``up``: each coarse pixel's residual spread evenly over its block, so the
    correction lies in the range of ``Dᵀ`` and leaves everything the data cannot see untouched), with the smallest
    ``t ∈ [0, 1]`` per image that brings χ²/pixel of ``D HR`` against the data (noise ``sigma``, per pixel or one
    number) down to 1: the residual becomes ``(1 − t)·(LR − D HR)``, so ``t = 1 − 1/√χ²`` when χ² > 1, else 0
    (the image already explains the data to its noise). Noiseless data (σ = 0) get ``t = 1``: exact consistency.
    Returns the images and ``t`` (N,)."""
    hr = np.asarray(high_res, dtype=np.float64)
    lr = np.asarray(low_res, dtype=np.float64)
    f = int(factor)
    n = lr.shape[-1]
    if hr.shape[-2:] != (f * lr.shape[-2], f * n) or hr.shape[:-2] != lr.shape[:-2]:
        raise ValueError(f"high-res images {hr.shape} are not {f}× the low-res ones {lr.shape}")
    residual = lr - hr.reshape(*hr.shape[:-2], lr.shape[-2], f, n, f).sum(axis=(-3, -1))
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), lr.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sig > 0, residual / np.where(sig > 0, sig, 1.0), np.where(residual != 0, np.inf, 0.0))
    chi2 = np.mean(ratio**2, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        t = np.where(chi2 > 1, 1 - 1 / np.sqrt(chi2), 0.0)
    correction = np.repeat(np.repeat(residual, f, axis=-2), f, axis=-1) / f**2
    out = hr + t[..., None, None] * correction
    return out.astype(np.asarray(high_res).dtype, copy=False), t
