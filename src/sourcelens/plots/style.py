"""The look shared by every figure: colour maps and units, colour scales (norms) and their
colour bars, image extents in arcsec, scale bars, grids of image panels.

One home for these, so that all figures of the project draw images the same way
(``origin="lower"``, arcsec axes centred on 0, arcsinh stretch tied to the noise).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..names import SOURCE_KIND_LABELS, SOURCE_KINDS

__all__ = [
    "IMAGE_CMAP", "FLUX_UNITS", "SPLIT_COLOURS", "KIND_ORDER", "KIND_LABELS", "KIND_COLOURS", "STRETCHES",
    "extent", "finite", "robust_sigma", "running_median", "kinds_present", "asinh_norm", "peak_asinh_norm",
    "linear_norm", "check_stretch",
    "stretch_norm", "residual_norm", "asinh_ticks", "colorbar", "nice_length", "scale_bar", "image_grid",
    "as_stack", "panel",
]

IMAGE_CMAP = "magma"
FLUX_UNITS = r"e$^-$ s$^{-1}$ pix$^{-1}$"
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
KIND_ORDER = SOURCE_KINDS
KIND_LABELS = SOURCE_KIND_LABELS
#: One colour per source kind, the same in every figure that colours points or lines by kind.
KIND_COLOURS = dict(zip(SOURCE_KINDS, ("#d62728", "#ff7f0e", "#1f77b4", "#2ca02c")))
STRETCHES = ("asinh", "linear")


# --------------------------------------------------------------------------------------
# geometry and pixel statistics


def extent(shape: tuple[int, ...], pixel_scale: float) -> tuple[float, float, float, float]:
    """``imshow`` extent (pixel edges) of an image centred on (0, 0), in units of ``pixel_scale``."""
    ny, nx = shape[-2:]
    return (-nx / 2 * pixel_scale, nx / 2 * pixel_scale, -ny / 2 * pixel_scale, ny / 2 * pixel_scale)


def finite(values: np.ndarray) -> np.ndarray:
    """The finite values of an array, flattened, as floats."""
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def robust_sigma(image: np.ndarray) -> float:
    """Noise level estimated from the median absolute deviation (1.4826 MAD); 0 for no pixels."""
    values = finite(image)
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def running_median(x: np.ndarray, y: np.ndarray, n_bins: int = 8, min_count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Median x and median y in up to ``n_bins`` bins of equal counts along x (at least ``min_count`` finite
    points each): a trend line that ignores outliers and needs no bin edges (so it suits a log axis too)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    xs, ys = x[ok][order], y[ok][order]
    n = min(int(n_bins), xs.size // max(int(min_count), 1))
    if n < 1:
        return np.zeros(0), np.zeros(0)
    bins = np.array_split(np.arange(xs.size), n)
    return np.array([np.median(xs[b]) for b in bins]), np.array([np.median(ys[b]) for b in bins])


def kinds_present(kinds: Sequence[str]) -> list[str]:
    """The source kinds among ``kinds``, in :data:`KIND_ORDER` (real galaxies first), then any others sorted."""
    present = set(np.asarray(kinds).astype(str))
    return [k for k in KIND_ORDER if k in present] + sorted(present - set(KIND_ORDER))


def as_stack(images: np.ndarray) -> np.ndarray:
    """Images as a float (N, H, W) stack (one (H, W) image becomes N = 1)."""
    images = np.asarray(images, dtype=float)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {images.shape}")
    return images


# --------------------------------------------------------------------------------------
# colour scales


def _values(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(images, np.ndarray):
        images = [images]
    return np.concatenate([finite(im) for im in images]) if len(images) else np.zeros(0)


def asinh_norm(
    images: Sequence[np.ndarray] | np.ndarray,
    noise_sigma: float | None = None,
    *,
    upper_percentile: float = 99.9,
    vmin: float | None = None,
    vmax: float | None = None,
    linear_fraction: float = 0.02,
) -> colors.AsinhNorm:
    """A shared arcsinh normalisation for one or more images.

    ``vmax`` defaults to the ``upper_percentile`` of all finite pixels, ``vmin`` to
    ``-2 noise_sigma`` (or the minimum, if higher). The linear width is the noise sigma when it
    is positive, else ``linear_fraction * vmax``: the noise is drawn linearly, sources above it
    logarithmically.
    """
    values = _values(images)
    if values.size == 0:
        values = np.zeros(1)
    hi = float(np.percentile(values, upper_percentile)) if vmax is None else float(vmax)
    lo_data = float(values.min())
    if hi <= 0 or not np.isfinite(hi):
        hi = float(values.max()) if values.max() > 0 else 1.0
    sigma = float(noise_sigma) if noise_sigma is not None and np.isfinite(noise_sigma) else 0.0
    linear_width = sigma if sigma > 0 else linear_fraction * hi
    linear_width = max(linear_width, 1e-6 * hi)
    if vmin is None:
        lo = max(lo_data, -2.0 * sigma) if sigma > 0 else min(0.0, lo_data)
        lo = min(lo, 0.0)
    else:
        lo = float(vmin)
    if lo >= hi:
        lo = hi - 1.0
    return colors.AsinhNorm(linear_width=linear_width, vmin=lo, vmax=hi)


def peak_asinh_norm(
    images: np.ndarray, *, vmin_floor: float = -np.inf, vmax_floor: float = 1e-6, vmax: float | None = None,
) -> colors.AsinhNorm:
    """Arcsinh scale of peak-normalised images (galaxy stamps, VAE outputs): linear below 0.02.

    ``vmin`` is the minimum pixel, not above 0 and not below ``vmin_floor`` (so a few negative
    noise pixels do not squeeze the scale); ``vmax`` the maximum pixel, at least ``vmax_floor``,
    unless given.
    """
    lo = min(0.0, max(vmin_floor, float(np.nanmin(images))))
    hi = float(vmax) if vmax is not None else max(vmax_floor, float(np.nanmax(images)))
    return colors.AsinhNorm(linear_width=0.02, vmin=lo, vmax=hi)


def linear_norm(images: Sequence[np.ndarray] | np.ndarray, upper_percentile: float = 99.9) -> colors.Normalize:
    """A linear normalisation from min(0, min) to the ``upper_percentile`` of the pixels."""
    values = _values(images)
    hi = float(np.percentile(values, upper_percentile)) if values.size else 1.0
    lo = min(0.0, float(values.min())) if values.size else 0.0
    return colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def check_stretch(stretch: str) -> str:
    """``stretch`` if it is one of :data:`STRETCHES`, else a ValueError."""
    if stretch not in STRETCHES:
        raise ValueError(f"stretch must be 'asinh' or 'linear', got {stretch!r}")
    return stretch


def stretch_norm(images: Sequence[np.ndarray] | np.ndarray, noise_sigma: float | None, stretch: str) -> colors.Normalize:
    """:func:`asinh_norm` (with the noise level) or :func:`linear_norm`, by name."""
    if check_stretch(stretch) == "asinh":
        return asinh_norm(images, noise_sigma)
    return linear_norm(images)


def residual_norm(residuals: np.ndarray) -> colors.Normalize:
    """A linear scale symmetric about 0, to the 99.5th percentile of ``|residuals|``."""
    lim = float(np.nanpercentile(np.abs(residuals), 99.5)) if np.size(residuals) else 1.0
    lim = lim if np.isfinite(lim) and lim > 0 else 1.0
    return colors.Normalize(vmin=-lim, vmax=lim)


# --------------------------------------------------------------------------------------
# colour bars and scale bars


def nice_length(target: float) -> float:
    """A round number (1, 2, 5 x 10^k) close to and not above ``target``."""
    if target <= 0 or not np.isfinite(target):
        return 1.0
    exponent = np.floor(np.log10(target))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10**exponent <= target:
            return float(mantissa * 10**exponent)
    return float(10**exponent)


def asinh_ticks(vmin: float, vmax: float, linear_width: float, max_ticks: int = 6) -> list[float]:
    """Round colourbar ticks for an arcsinh scale: 0, decades (or 1-2-5 steps) up to vmax, one negative."""
    ticks: list[float] = []
    if vmin < -0.5 * linear_width:
        ticks.append(-nice_length(-vmin))
    if vmin <= 0 <= vmax:
        ticks.append(0.0)
    lo = max(linear_width, vmax / 10**4)
    if vmax > 0 and lo < vmax:
        k0, k1 = int(np.floor(np.log10(lo))), int(np.floor(np.log10(vmax)))
        for mantissas in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0)):
            pos = [m * 10.0**k for k in range(k0, k1 + 1) for m in mantissas if lo <= m * 10.0**k <= vmax]
            if len(pos) >= 3 or mantissas == (1.0, 2.0, 5.0):
                break
        while len(pos) > max_ticks - len(ticks):
            pos = pos[1::2] if len(pos) % 2 == 0 else pos[::2]
        ticks.extend(pos)
    return ticks


def colorbar(fig: Figure, im: AxesImage, ax, label: str | None = None, fontsize: float = 7, **kwargs) -> Colorbar:
    """A colourbar of ``im`` beside ``ax`` (one axes or a list) with readable round ticks
    (arcsinh norms get explicit ones from :func:`asinh_ticks`); ``kwargs`` go to ``fig.colorbar``."""
    cbar = fig.colorbar(im, ax=ax, **kwargs)
    norm = im.norm
    if isinstance(norm, colors.AsinhNorm):
        ticks = asinh_ticks(norm.vmin, norm.vmax, norm.linear_width)
        cbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        cbar.ax.minorticks_off()
    cbar.ax.tick_params(labelsize=fontsize)
    if label:
        cbar.set_label(label, fontsize=fontsize + 1)
    return cbar


def scale_bar(ax: Axes, width: float, unit_scale: float, unit: str = '"', colour: str = "white") -> None:
    """Draw a scale bar about a quarter of ``width`` (data units) long in the lower left,
    labelled in ``unit`` (``unit_scale`` units per data unit)."""
    length = nice_length(width / 4 * unit_scale)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    bar = length / unit_scale
    xs = x0 + 0.07 * (x1 - x0)
    ys = y0 + 0.08 * (y1 - y0)
    ax.plot([xs, xs + bar], [ys, ys], color=colour, lw=2, solid_capstyle="butt")
    label = f"{length:g}{unit}"
    ax.text(xs + bar / 2, ys + 0.03 * (y1 - y0), label, color=colour, ha="center", va="bottom", fontsize=7)


# --------------------------------------------------------------------------------------
# panels


def image_grid(n_rows: int, n_cols: int, panel: float = 2.3, extra_width: float = 0.6, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure of ``n_rows`` x ``n_cols`` square-ish panels (``panel`` inches each, plus
    ``extra_width`` for colour bars); axes as a 2-D array. ``kwargs`` go to ``fig.subplots``."""
    fig = Figure(figsize=(n_cols * panel + extra_width, n_rows * panel + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, **kwargs)
    return fig, axes


def panel(
    ax: Axes, image: np.ndarray, norm: colors.Normalize, cmap: str = IMAGE_CMAP, title: str | None = None,
    extent: tuple[float, float, float, float] | None = None,
) -> AxesImage:
    """An image without ticks (``origin="lower"``, no interpolation), with a small title."""
    im = ax.imshow(image, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)
    return im
