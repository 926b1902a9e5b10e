"""Figures of the simulated data sets: lensed/unlensed pair examples, lens-parameter
distributions per split, and super-resolution examples."""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from ..names import LENS_PARAMETERS
from .style import (
    FLUX_UNITS, IMAGE_CMAP, SPLIT_COLOURS, asinh_norm, as_stack, check_stretch, colorbar, extent, finite,
    image_grid, linear_norm, robust_sigma, stretch_norm,
)

__all__ = [
    "LENS_PARAM_LABELS", "PAIR_TITLES", "SR_TITLES", "format_lens_params", "example_labels", "pair_examples",
    "lens_parameter_histograms", "sr_examples",
]

#: Axis labels of the lens parameters of :data:`sourcelens.names.LENS_PARAMETERS`.
LENS_PARAM_LABELS = {
    "theta_E": r"Einstein radius $\theta_\mathrm{E}$ [arcsec]",
    "gamma": r"density slope $\gamma$",
    "e1": r"ellipticity $e_1$",
    "e2": r"ellipticity $e_2$",
    "center_x": r"lens centre $x$ [arcsec]",
    "center_y": r"lens centre $y$ [arcsec]",
    "gamma1": r"external shear $\gamma_1$",
    "gamma2": r"external shear $\gamma_2$",
}
PAIR_TITLES = ("source (unlensed)", "lensed, noiseless", "lensed + noise")
SR_TITLES = ("low resolution (input)", "high resolution (target)", "source, high resolution")


# --------------------------------------------------------------------------------------
# labels and markers


def format_lens_params(params: Sequence[float], names: Sequence[str] = LENS_PARAMETERS) -> str:
    """A compact description of one lens: Einstein radius and slope, ellipticity, shear (one line each)."""
    p = dict(zip(names, np.asarray(params, dtype=float)))
    lines = []
    first = []
    if "theta_E" in p:
        first.append(rf"$\theta_\mathrm{{E}}$={p['theta_E']:.2f}$''$")
    if "gamma" in p:
        first.append(rf"$\gamma$={p['gamma']:.2f}")
    if first:
        lines.append(", ".join(first))
    if "e1" in p and "e2" in p:
        lines.append(rf"$e$=({p['e1']:+.2f}, {p['e2']:+.2f})")
    if "gamma1" in p and "gamma2" in p:
        lines.append(rf"$\gamma_\mathrm{{ext}}$=({p['gamma1']:+.3f}, {p['gamma2']:+.3f})")
    return "\n".join(lines)


def example_labels(meta: pd.DataFrame) -> list[str]:
    """One row label per example of a pairs or SR table: ``"<source_id> (<kind>, m=<source_magnitude>)"``
    ("?" for a missing id or kind; the magnitude only where known)."""
    labels = []
    for row in meta.itertuples():
        label = f"{getattr(row, 'source_id', '?')} ({getattr(row, 'kind', '?')}"
        mag = float(getattr(row, "source_magnitude", np.nan))
        labels.append(label + (f", m={mag:.1f})" if np.isfinite(mag) else ")"))
    return labels


def _row_label(row_labels: Sequence[str] | None, params: np.ndarray | None, i: int, unit: str) -> str:
    """Y label of row ``i``: its label, its lens parameters, and the axis name with ``unit``."""
    parts = [] if row_labels is None else [str(row_labels[i])]
    if params is not None:
        parts.append(format_lens_params(params[i]))
    parts.append(rf"$\Delta y$ [{unit}]")
    return "\n".join(parts)


def _mark_lens(
    ax: Axes, params: np.ndarray | None, names: Sequence[str] = LENS_PARAMETERS, circle: bool = True
) -> None:
    """Mark the lens centre (+) and a circle of radius theta_E (a guide, not the critical curve)."""
    if params is None:
        return
    p = dict(zip(names, np.asarray(params, dtype=float)))
    cx, cy = p.get("center_x", np.nan), p.get("center_y", np.nan)
    if not (np.isfinite(cx) and np.isfinite(cy)):
        return
    ax.plot([cx], [cy], marker="+", color="cyan", ms=6, mew=1.0, alpha=0.8)
    theta_e = p.get("theta_E", np.nan)
    if circle and np.isfinite(theta_e) and theta_e > 0:
        xlim, ylim = ax.get_xlim(), ax.get_ylim()
        ax.add_patch(Circle((cx, cy), theta_e, fill=False, ls="--", lw=0.7, ec="cyan", alpha=0.6))
        ax.set_xlim(xlim)  # keep the image's field even if the circle leaves it
        ax.set_ylim(ylim)


# --------------------------------------------------------------------------------------
# shared pieces of the example figures


def _row_sigmas(noise_sigma: np.ndarray | Sequence[float] | None, n: int) -> np.ndarray:
    """One noise level per example: the median of per-pixel maps (N, H, W), or the values given (NaN: unknown)."""
    if noise_sigma is None:
        return np.full(n, np.nan)
    ns = np.asarray(noise_sigma, dtype=float)
    return np.array([np.nanmedian(ns[i]) for i in range(n)]) if ns.ndim > 1 else np.broadcast_to(ns, (n,)).astype(float)


def _lens_params(lens_params: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if lens_params is None else np.asarray(lens_params, dtype=float).reshape(n, -1)


def _show(ax: Axes, image: np.ndarray, ext: tuple[float, float, float, float], norm: Normalize) -> AxesImage:
    """An image on arcsec (or pixel) axes, with small inward ticks."""
    im = ax.imshow(image, origin="lower", extent=ext, cmap=IMAGE_CMAP, norm=norm, interpolation="nearest")
    ax.tick_params(labelsize=7, direction="in", color="0.7")
    return im


# --------------------------------------------------------------------------------------
# figures


def pair_examples(
    source: np.ndarray,
    lensed_noiseless: np.ndarray,
    lensed: np.ndarray,
    pixel_scale: float,
    titles: Sequence[str] = PAIR_TITLES,
    *,
    lens_params: np.ndarray | None = None,
    row_labels: Sequence[str] | None = None,
    noise_sigma: np.ndarray | Sequence[float] | None = None,
    stretch: str = "asinh",
    mark_lens: bool = True,
    units: str = FLUX_UNITS,
    suptitle: str | None = None,
    source_pixel_scale: float | None = None,
) -> Figure:
    """Lensing examples, one row each: unlensed source, noiseless lensed image, noisy lensed image.

    All arrays are (N, H, W): the images on a grid of ``pixel_scale`` arcsec, the source on its own grid of
    ``source_pixel_scale`` arcsec (default the same), both centred on the optical axis; the source is shown
    per image-pixel area, so that the three panels of a row share one colour scale (surface brightness is
    conserved by lensing) and one colourbar.
    ``noise_sigma`` (per-pixel maps (N, H, W) or one value per row; estimated from
    ``lensed - lensed_noiseless`` when not given) sets the arcsinh linear width and the bottom of
    the scale (-2 sigma); ``lens_params`` (N, 8, in :data:`LENS_PARAMETERS` order) is written in
    the row label and, with ``mark_lens``, the lens centre and a theta_E circle are drawn on the
    lensed panels. Returns a figure with 3 N image axes followed by N colourbar axes.
    """
    check_stretch(stretch)
    source, lensed_noiseless, lensed = (as_stack(a) for a in (source, lensed_noiseless, lensed))
    n = len(source)
    if not (len(lensed_noiseless) == len(lensed) == n):
        raise ValueError("source, lensed_noiseless and lensed must have the same number of examples")
    if n == 0:
        raise ValueError("no examples to plot")
    sigmas = _row_sigmas(noise_sigma, n)
    params = _lens_params(lens_params, n)
    ext = extent(lensed.shape, pixel_scale)
    src_scale = float(pixel_scale if source_pixel_scale is None else source_pixel_scale)
    src_ext = extent(source.shape, src_scale)
    source = source * (float(pixel_scale) / src_scale) ** 2       # flux per image-pixel area

    fig, axes = image_grid(n, 3)
    for i in range(n):
        sigma = sigmas[i] if np.isfinite(sigmas[i]) else robust_sigma(lensed[i] - lensed_noiseless[i])
        if stretch == "asinh":  # top from the noise-free panels, bottom at -2 sigma to show the noise
            norm = asinh_norm([source[i], lensed_noiseless[i]], sigma, vmin=-2 * sigma if sigma > 0 else None)
        else:
            norm = linear_norm([source[i], lensed_noiseless[i], lensed[i]])
        for j, image in enumerate((source[i], lensed_noiseless[i], lensed[i])):
            ax = axes[i, j]
            im = _show(ax, image, src_ext if j == 0 else ext, norm)
            if mark_lens and j > 0 and params is not None:
                _mark_lens(ax, params[i], circle=j == 1)
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
            if i == n - 1:
                ax.set_xlabel(r"$\Delta x$ [arcsec]")
        axes[i, 0].set_ylabel(_row_label(row_labels, params, i, "arcsec"), fontsize=8)
        if np.isfinite(sigma) and sigma > 0:
            axes[i, 2].text(
                0.97, 0.04, rf"$\sigma$={sigma:.2g}", transform=axes[i, 2].transAxes,
                ha="right", va="bottom", color="white", fontsize=7,
            )
        colorbar(fig, im, axes[i, :].tolist(), units, shrink=0.9, pad=0.01, aspect=15)
    fig.suptitle(suptitle or f"Lensed/unlensed pairs ({stretch} stretch, {pixel_scale:g}\" pixels)", fontsize=11)
    return fig


def lens_parameter_histograms(
    df: pd.DataFrame,
    by: str = "split",
    params: Sequence[str] = LENS_PARAMETERS,
    *,
    bins: int | None = None,
    density: bool = True,
    order: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """One panel per lens parameter, with the distributions of each ``by`` group overlaid.

    Groups share the bins of each panel (``bins`` of them; by default sqrt(N) clipped to
    10-40); with ``density`` the histograms are normalised so that splits of different sizes
    compare. A parameter that is constant (e.g. gamma = 2 for SIS) is drawn as a vertical line
    labelled "fixed". One legend (group and its N) below the panels. Returns a figure with
    ``len(params)`` axes.
    """
    missing = [p for p in params if p not in df.columns]
    if missing:
        raise KeyError(f"lens-parameter columns missing from the table: {missing}")
    if by not in df.columns:
        groups = [("all", df)]
    else:
        present = list(pd.unique(df[by].astype(str)))
        if order is None:
            order = [g for g in SPLIT_COLOURS if g in present] + [g for g in present if g not in SPLIT_COLOURS]
        groups = [(g, df[df[by].astype(str) == g]) for g in order if g in present]
    n_cols = 4
    n_rows = int(np.ceil(len(params) / n_cols))
    fig = Figure(figsize=(3.0 * n_cols, 2.5 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(params):]:
        fig.delaxes(ax)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    n_bins = bins if bins is not None else int(np.clip(np.sqrt(len(df)), 10, 40))
    handles = {}
    for k, (name, ax) in enumerate(zip(params, axes)):
        values = finite(df[name].to_numpy())
        ax.set_xlabel(LENS_PARAM_LABELS.get(name, name), fontsize=9)
        ax.tick_params(labelsize=8)
        if values.size == 0:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
            continue
        lo, hi = float(values.min()), float(values.max())
        if np.isclose(lo, hi, rtol=1e-9, atol=1e-12):  # fixed by the model (e.g. gamma = 2)
            ax.axvline(lo, color="0.3", lw=1.5)
            ax.set_xlim(lo - 1, lo + 1) if lo == 0 else ax.set_xlim(lo - 0.5 * abs(lo), lo + 0.5 * abs(lo))
            ax.set_yticks([])
            ax.text(0.5, 0.6, f"fixed at {lo:g}\nin all {len(groups)} splits" if by in df.columns else f"fixed at {lo:g}",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9,
                    bbox=dict(fc="white", ec="0.8"))
            continue
        edges = np.linspace(lo, hi, n_bins + 1)
        for g, (group, sub) in enumerate(groups):
            colour = SPLIT_COLOURS.get(group, cycle[g % len(cycle)])
            vals = finite(sub[name].to_numpy())
            if vals.size == 0:
                continue
            ax.hist(vals, bins=edges, density=density, histtype="step", lw=1.4, color=colour)
            handles.setdefault(group, Line2D([], [], color=colour, lw=1.4, label=f"{group} (N={len(sub)})"))
        if k % n_cols == 0:
            ax.set_ylabel("probability density" if density else "count", fontsize=9)
    if handles:
        fig.legend(
            list(handles.values()), [h.get_label() for h in handles.values()], loc="outside lower center",
            ncols=len(handles), fontsize=9, frameon=False,
        )
    fig.suptitle(suptitle or "Lens-parameter distributions", fontsize=11)
    return fig


def _sr_scales(factor: float, low_res_pixel_scale: float | None,
               high_res_pixel_scale: float | None) -> tuple[float, float, str]:
    """Low- and high-res pixel scales and the axis unit: arcsec, the missing scale following from
    the other and the size ratio ``factor``; low-res pixels when neither is known."""
    lo_scale, hi_scale = low_res_pixel_scale, high_res_pixel_scale
    if lo_scale is None and hi_scale is not None:
        lo_scale = hi_scale * factor
    if hi_scale is None and lo_scale is not None:
        hi_scale = lo_scale / factor
    if lo_scale is None or hi_scale is None:
        return 1.0, 1.0 / factor, "low-res pixels"
    return float(lo_scale), float(hi_scale), "arcsec"


def sr_examples(
    low_res: np.ndarray,
    high_res: np.ndarray,
    source_high_res: np.ndarray | None = None,
    *,
    low_res_pixel_scale: float | None = None,
    high_res_pixel_scale: float | None = None,
    noise_sigma: np.ndarray | Sequence[float] | None = None,
    lens_params: np.ndarray | None = None,
    row_labels: Sequence[str] | None = None,
    titles: Sequence[str] = SR_TITLES,
    stretch: str = "asinh",
    units: str | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Super-resolution examples, one row each: low-res input, high-res target, high-res source.

    All panels cover the same field. Axes are in arcsec when the pixel scales are known; if
    only one is, the other follows from the image sizes; if neither is, axes are in low-res
    pixels. Each panel has its own colourbar (per-pixel values differ between the two grids);
    ``noise_sigma`` sets the linear width of the low-res panels' arcsinh stretch.
    ``suptitle`` is followed by the factor and pixel scales. Returns a figure with n_cols N
    image axes followed by n_cols N colourbar axes (n_cols = 3, or 2 without ``source_high_res``).
    """
    low_res, high_res = as_stack(low_res), as_stack(high_res)
    stacks = [low_res, high_res]
    if source_high_res is not None:
        stacks.append(as_stack(source_high_res))
    n = len(low_res)
    if any(len(s) != n for s in stacks):
        raise ValueError("low_res, high_res and source_high_res must have the same number of examples")
    if n == 0:
        raise ValueError("no examples to plot")
    factor = high_res.shape[-1] / low_res.shape[-1]
    lo_scale, hi_scale, unit = _sr_scales(factor, low_res_pixel_scale, high_res_pixel_scale)
    scales = [lo_scale, hi_scale, hi_scale]
    sigmas = _row_sigmas(noise_sigma, n)
    params = _lens_params(lens_params, n)
    n_cols = len(stacks)

    fig, axes = image_grid(n, n_cols, panel=2.4, extra_width=1.5, sharex=True, sharey=True)
    for i in range(n):
        for j in range(n_cols):
            ax = axes[i, j]
            image = stacks[j][i]
            sigma = sigmas[i] if j == 0 else 0.0
            norm = stretch_norm(image, sigma if np.isfinite(sigma) else None, stretch)
            im = _show(ax, image, extent(image.shape, scales[j]), norm)
            if params is not None and j < 2 and unit == "arcsec":
                _mark_lens(ax, params[i])
            if i == 0:
                title = titles[j] if j < len(titles) else ""
                ax.set_title(f"{title}\n{image.shape[-1]}×{image.shape[-2]} pix", fontsize=9)
            if i == n - 1:
                ax.set_xlabel(rf"$\Delta x$ [{unit}]")
            colorbar(fig, im, ax, units if j == n_cols - 1 else None, fontsize=6, shrink=0.85, pad=0.02, aspect=15)
        axes[i, 0].set_ylabel(_row_label(row_labels, params, i, unit), fontsize=8)
    scale_note = f'{lo_scale:g}" → {hi_scale:g}" pixels' if unit == "arcsec" else "pixel scales unknown"
    fig.suptitle(
        f"{suptitle or 'Super-resolution examples'} (×{factor:g}, {scale_note}, {stretch} stretch per panel)",
        fontsize=11,
    )
    return fig
