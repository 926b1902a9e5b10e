"""Overview figures: galaxy stamps, lensed/unlensed pairs, lens-parameter distributions,
the source filter table and super-resolution examples.

Every function takes plain arrays or tables and returns a :class:`matplotlib.figure.Figure`
built without pyplot (no GUI backend, no display, no global figure state; works under Agg and
on headless nodes), ready for :func:`sourcelens.io.save_figure`.

Image conventions: arrays are indexed ``[row, column]`` and drawn with ``origin="lower"``;
axes are offsets from the image centre in arcsec (x to the right, y up), so lens centres
``center_x, center_y`` and source positions share the axes. Images use an arcsinh stretch
(linear below ``linear_width``, logarithmic above), with the linear width set by the noise
level where known, so faint lensed arcs and the noise are both visible.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from .names import LENS_PARAMETERS

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
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
KIND_ORDER = ("cosmos", "parametric", "xdf")
KIND_LABELS = {"cosmos": "COSMOS (HST)", "parametric": "parametric (GalSim)", "xdf": "XDF (HST)"}
FLUX_UNITS = r"e$^-$ s$^{-1}$ pix$^{-1}$"
IMAGE_CMAP = "magma"

PAIR_TITLES = ("source (unlensed)", "lensed, noiseless", "lensed + noise")
SR_TITLES = ("low resolution (input)", "high resolution (target)", "source, high resolution")


# --------------------------------------------------------------------------------------
# helpers


def _extent(shape: tuple[int, ...], pixel_scale: float) -> tuple[float, float, float, float]:
    """imshow extent (pixel edges) of an image centred on (0, 0), in units of pixel_scale."""
    ny, nx = shape[-2:]
    return (-nx / 2 * pixel_scale, nx / 2 * pixel_scale, -ny / 2 * pixel_scale, ny / 2 * pixel_scale)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def _robust_sigma(image: np.ndarray) -> float:
    """Noise level estimated from the median absolute deviation (1.4826 MAD)."""
    values = _finite(image)
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def asinh_norm(
    images: Sequence[np.ndarray] | np.ndarray,
    noise_sigma: float | None = None,
    *,
    upper_percentile: float = 99.9,
    vmin: float | None = None,
    vmax: float | None = None,
    linear_fraction: float = 0.02,
) -> colors.Normalize:
    """A shared arcsinh normalisation for one or more images.

    ``vmax`` defaults to the ``upper_percentile`` of all finite pixels, ``vmin`` to
    ``-2 noise_sigma`` (or the minimum, if higher). The linear width is the noise sigma when it
    is positive, else ``linear_fraction * vmax``.
    """
    if isinstance(images, np.ndarray):
        images = [images]
    values = np.concatenate([_finite(im) for im in images]) if len(images) else np.zeros(1)
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


def linear_norm(images: Sequence[np.ndarray] | np.ndarray, upper_percentile: float = 99.9) -> colors.Normalize:
    """A linear normalisation from min(0, min) to the ``upper_percentile`` of the pixels."""
    if isinstance(images, np.ndarray):
        images = [images]
    values = np.concatenate([_finite(im) for im in images])
    hi = float(np.percentile(values, upper_percentile)) if values.size else 1.0
    lo = min(0.0, float(values.min())) if values.size else 0.0
    return colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def _norm(images, noise_sigma, stretch: str) -> colors.Normalize:
    if stretch == "asinh":
        return asinh_norm(images, noise_sigma)
    if stretch == "linear":
        return linear_norm(images)
    raise ValueError(f"stretch must be 'asinh' or 'linear', got {stretch!r}")


def asinh_ticks(vmin: float, vmax: float, linear_width: float, max_ticks: int = 6) -> list[float]:
    """Round colourbar ticks for an arcsinh scale: 0, decades (or 1-2-5 steps) up to vmax, one negative."""
    ticks: list[float] = []
    if vmin < -0.5 * linear_width:
        ticks.append(-_nice_length(-vmin))
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


def _colorbar(fig: Figure, im, ax, label: str | None = None, fontsize: float = 7, **kwargs):
    """A colourbar with readable round ticks (arcsinh norms get explicit ones)."""
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


def _nice_length(target: float) -> float:
    """A round number (1, 2, 5 x 10^k) close to and not above ``target``."""
    if target <= 0 or not np.isfinite(target):
        return 1.0
    exponent = np.floor(np.log10(target))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10**exponent <= target:
            return float(mantissa * 10**exponent)
    return float(10**exponent)


def _scale_bar(ax: Axes, width: float, unit_scale: float, unit: str = '"', colour: str = "white") -> None:
    """Draw a scale bar about a quarter of ``width`` (data units) long in the lower left."""
    length = _nice_length(width / 4 * unit_scale)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    bar = length / unit_scale
    xs = x0 + 0.07 * (x1 - x0)
    ys = y0 + 0.08 * (y1 - y0)
    ax.plot([xs, xs + bar], [ys, ys], color=colour, lw=2, solid_capstyle="butt")
    label = f"{length:g}{unit}"
    ax.text(xs + bar / 2, ys + 0.03 * (y1 - y0), label, color=colour, ha="center", va="bottom", fontsize=7)


def _pixel_scales(scale, n: int) -> np.ndarray:
    if scale is None:
        return np.full(n, np.nan)
    arr = np.asarray(scale, dtype=float)
    return np.full(n, float(arr)) if arr.ndim == 0 else arr


def format_lens_params(params: Sequence[float], names: Sequence[str] = LENS_PARAMETERS) -> str:
    """A compact two-line description of one lens: Einstein radius, slope, ellipticity, shear."""
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


def _image_grid(n_rows: int, n_cols: int, panel: float = 2.3, extra_width: float = 0.6, **kwargs) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(n_cols * panel + extra_width, n_rows * panel + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, **kwargs)
    return fig, axes


def _as_stack(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=float)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {images.shape}")
    return images


# --------------------------------------------------------------------------------------
# figures


def _row_label(row_labels, params, i: int, unit: str) -> str:
    """Y label of row ``i``: its label, its lens parameters, and the axis name with ``unit``."""
    parts = [] if row_labels is None else [str(row_labels[i])]
    if params is not None:
        parts.append(format_lens_params(params[i]))
    parts.append(rf"$\Delta y$ [{unit}]")
    return "\n".join(parts)


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
) -> Figure:
    """Lensing examples, one row each: unlensed source, noiseless lensed image, noisy lensed image.

    All arrays are (N, H, W) on the same grid of ``pixel_scale`` arcsec; the three panels of a
    row share one colour scale (surface brightness is conserved by lensing) and one colourbar.
    ``noise_sigma`` (per-pixel maps (N, H, W) or one value per row) sets the arcsinh linear
    width; ``lens_params`` (N, 8, in :data:`LENS_PARAMETERS` order) is written in the row label
    and, with ``mark_lens``, the lens centre and a theta_E circle are drawn on the lensed panels.
    Returns a figure with 3 N image axes followed by N colourbar axes.
    """
    if stretch not in ("asinh", "linear"):
        raise ValueError(f"stretch must be 'asinh' or 'linear', got {stretch!r}")
    source, lensed_noiseless, lensed = (_as_stack(a) for a in (source, lensed_noiseless, lensed))
    n = len(source)
    if not (len(lensed_noiseless) == len(lensed) == n):
        raise ValueError("source, lensed_noiseless and lensed must have the same number of examples")
    if n == 0:
        raise ValueError("no examples to plot")
    sigmas = np.full(n, np.nan)
    if noise_sigma is not None:
        ns = np.asarray(noise_sigma, dtype=float)
        sigmas = np.array([np.nanmedian(ns[i]) for i in range(n)]) if ns.ndim > 1 else np.broadcast_to(ns, (n,)).astype(float)
    params = None if lens_params is None else np.asarray(lens_params, dtype=float).reshape(n, -1)
    extent = _extent(source.shape, pixel_scale)

    fig, axes = _image_grid(n, 3, sharex=True, sharey=True)
    for i in range(n):
        sigma = sigmas[i] if np.isfinite(sigmas[i]) else _robust_sigma(lensed[i] - lensed_noiseless[i])
        if stretch == "asinh":  # top from the noise-free panels, bottom at -2 sigma to show the noise
            norm = asinh_norm([source[i], lensed_noiseless[i]], sigma, vmin=-2 * sigma if sigma > 0 else None)
        else:
            norm = linear_norm([source[i], lensed_noiseless[i], lensed[i]])
        for j, image in enumerate((source[i], lensed_noiseless[i], lensed[i])):
            ax = axes[i, j]
            im = ax.imshow(image, origin="lower", extent=extent, cmap=IMAGE_CMAP, norm=norm, interpolation="nearest")
            if mark_lens and j > 0 and params is not None:
                _mark_lens(ax, params[i], circle=j == 1)
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
            if i == n - 1:
                ax.set_xlabel(r"$\Delta x$ [arcsec]")
            ax.tick_params(labelsize=7, direction="in", color="0.7")
        axes[i, 0].set_ylabel(_row_label(row_labels, params, i, "arcsec"), fontsize=8)
        if np.isfinite(sigma) and sigma > 0:
            axes[i, 2].text(
                0.97, 0.04, rf"$\sigma$={sigma:.2g}", transform=axes[i, 2].transAxes,
                ha="right", va="bottom", color="white", fontsize=7,
            )
        _colorbar(fig, im, axes[i, :].tolist(), units, shrink=0.9, pad=0.01, aspect=15)
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
        values = _finite(df[name].to_numpy())
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
            vals = _finite(sub[name].to_numpy())
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


def stamps_by_kind(
    images: np.ndarray,
    kinds: Sequence[str],
    ids: Sequence[str],
    n_per_kind: int,
    *,
    pixel_scales: float | Sequence[float] | None = None,
    magnitudes: Sequence[float] | None = None,
    redshifts: Sequence[float] | None = None,
    kind_counts: dict[str, int] | None = None,
    stretch: str = "asinh",
    suptitle: str | None = None,
) -> Figure:
    """Galaxy stamps, one row per source kind, the first ``n_per_kind`` of each kind in order.

    Stamps are peak-normalised, so all panels share one scale and colourbar. With
    ``pixel_scales`` (one value or one per stamp, arcsec) each stamp gets a scale bar; its
    label gives the source id and, where known, magnitude and redshift. ``kind_counts`` (the
    full number of stamps per kind, when ``images`` is a selection) goes into the row labels.
    Returns a figure with n_kinds x n_per_kind image axes and one colourbar axis.
    """
    images = _as_stack(images)
    kinds = np.asarray(kinds).astype(str)
    ids = np.asarray(ids).astype(str)
    n = len(images)
    scales = _pixel_scales(pixel_scales, n)
    mags = np.full(n, np.nan) if magnitudes is None else np.asarray(magnitudes, dtype=float)
    zs = np.full(n, np.nan) if redshifts is None else np.asarray(redshifts, dtype=float)
    present = list(pd.unique(kinds))
    kind_list = [k for k in KIND_ORDER if k in present] + [k for k in present if k not in KIND_ORDER]
    if not kind_list:
        raise ValueError("no stamps to plot")
    n_cols = max(1, int(n_per_kind))
    if kind_counts is None:
        kind_counts = {k: int((kinds == k).sum()) for k in kind_list}
    if stretch == "asinh":
        norm = colors.AsinhNorm(linear_width=0.02, vmin=min(0.0, max(-0.05, float(np.nanmin(images)))), vmax=1.0)
    else:
        norm = colors.Normalize(vmin=min(0.0, float(np.nanmin(images))), vmax=1.0)

    fig, axes = _image_grid(len(kind_list), n_cols, panel=1.6, extra_width=1.2)
    im = None
    for r, kind in enumerate(kind_list):
        idx = np.flatnonzero(kinds == kind)[:n_cols]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= idx.size:
                ax.set_axis_off()
                continue
            k = idx[c]
            scale = scales[k] if np.isfinite(scales[k]) and scales[k] > 0 else 1.0
            extent = _extent(images[k].shape, scale)
            im = ax.imshow(images[k], origin="lower", extent=extent, cmap=IMAGE_CMAP, norm=norm, interpolation="nearest")
            if np.isfinite(scales[k]) and scales[k] > 0:
                _scale_bar(ax, extent[1] - extent[0], 1.0, unit='"')
            else:
                _scale_bar(ax, extent[1] - extent[0], 1.0, unit=" pix")
            info = [textwrap.shorten(ids[k], 18, placeholder="…")]
            extra = []
            if np.isfinite(mags[k]):
                extra.append(f"m={mags[k]:.1f}")
            if np.isfinite(zs[k]):
                extra.append(f"z={zs[k]:.2f}")
            if extra:
                info.append(" ".join(extra))
            ax.set_title("\n".join(info), fontsize=7)
        axes[r, 0].set_ylabel(
            f"{KIND_LABELS.get(kind, kind)}\nN = {kind_counts.get(kind, idx.size)}", fontsize=9
        )
    if im is not None:
        _colorbar(fig, im, axes.ravel().tolist(), "flux / peak flux", shrink=0.8, pad=0.01, aspect=30)
    fig.suptitle(suptitle or "Galaxy source stamps by kind (peak-normalised, arcsinh stretch)", fontsize=11)
    return fig


def _filter_rows(df: pd.DataFrame) -> pd.DataFrame:
    rows = df.copy()
    if "source_kind" not in rows.columns:
        rows["source_kind"] = "all"
    rows["source_kind"] = rows["source_kind"].fillna("all").astype(str)
    if "stage" not in rows.columns:
        rows["stage"] = ""
    rows["stage"] = rows["stage"].fillna("").astype(str)
    for col in ("n_in", "n_kept", "n_removed"):
        if col not in rows.columns:
            rows[col] = np.nan
        rows[col] = pd.to_numeric(rows[col], errors="coerce")
    rows["n_removed"] = rows["n_removed"].fillna(rows["n_in"] - rows["n_kept"])
    rows["n_kept"] = rows["n_kept"].fillna(rows["n_in"] - rows["n_removed"])
    rows["n_in"] = rows["n_in"].fillna(rows["n_kept"] + rows["n_removed"])
    if "description" not in rows.columns:
        rows["description"] = ""
    rows["description"] = rows["description"].fillna("").astype(str)
    return rows.reset_index(drop=True)


def filter_table_figure(df: pd.DataFrame, *, description_width: int = 60, suptitle: str | None = None) -> Figure:
    """The source selection: kept/removed per cut as horizontal bars, and the table itself.

    ``df`` has columns stage, cut, description, n_in, n_kept, n_removed and source_kind (rows
    in the order the cuts are applied). Returns a figure with two axes: the bar chart and the
    rendered table.
    """
    rows = _filter_rows(df)
    n = len(rows)
    labels = [f"{r.source_kind} · {r.stage}: {r.cut}" for r in rows.itertuples()]
    wrapped = [textwrap.fill(d, description_width) for d in rows["description"]]
    n_lines = [max(1, w.count("\n") + 1) for w in wrapped]
    bar_height = max(1.8, 0.32 * n + 0.8)
    table_height = 0.5 + 0.2 * (sum(n_lines) + 1)
    fig = Figure(figsize=(11, bar_height + table_height + 0.4), layout="constrained")
    ax_bar, ax_tab = fig.subplots(2, 1, height_ratios=[bar_height, table_height])

    y = np.arange(n)[::-1]
    kept = rows["n_kept"].to_numpy(dtype=float)
    removed = rows["n_removed"].to_numpy(dtype=float)
    ax_bar.barh(y, kept, color="#4c72b0", label="kept", height=0.7)
    ax_bar.barh(y, removed, left=kept, color="#dd8452", label="removed", height=0.7)
    total_max = np.nanmax(kept + removed) if n else 1.0
    for yi, k, rm in zip(y, kept, removed):
        total = k + rm
        if total > 0 and np.isfinite(total):
            ax_bar.text(
                total + 0.01 * total_max, yi, f"{k:.0f}/{total:.0f} kept ({100 * k / total:.1f}%)",
                va="center", fontsize=7,
            )
    ax_bar.set_yticks(y, labels, fontsize=8)
    ax_bar.set_xlim(0, 1.3 * total_max if np.isfinite(total_max) and total_max > 0 else 1)
    ax_bar.set_xlabel("number of galaxies")
    ax_bar.legend(loc="lower right", fontsize=8, frameon=False)
    ax_bar.spines[["top", "right"]].set_visible(False)
    # separate source kinds with a thin line
    kinds = rows["source_kind"].to_numpy()
    for i in range(1, n):
        if kinds[i] != kinds[i - 1]:
            ax_bar.axhline(y[i] + 0.5, color="0.6", lw=0.6, ls=":")

    ax_tab.set_axis_off()
    if n:
        frac = np.where(rows["n_in"] > 0, 100 * rows["n_kept"] / rows["n_in"].where(rows["n_in"] > 0), np.nan)
        cells = [
            [r.source_kind, r.stage, str(r.cut), w, f"{r.n_in:.0f}", f"{r.n_kept:.0f}", f"{r.n_removed:.0f}", f"{p:.1f}"]
            for r, w, p in zip(rows.itertuples(), wrapped, frac)
        ]
        col_labels = ["kind", "stage", "cut", "description", "in", "kept", "removed", "% kept"]
        widths = [0.09, 0.08, 0.14, 0.45, 0.06, 0.06, 0.07, 0.05]
        table = ax_tab.table(cellText=cells, colLabels=col_labels, colWidths=widths, loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        unit = 1.0 / (sum(n_lines) + 1.5)
        for (r, c), cell in table.get_celld().items():
            lines = 1 if r == 0 else n_lines[r - 1]
            cell.set_height(unit * (lines + 0.4) * 0.97)
            cell.set_edgecolor("0.75")
            cell.set_linewidth(0.5)
            if r == 0:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("0.92")
            cell.PAD = 0.04 if c == 3 else 0.08
            if c >= 4:
                cell.get_text().set_horizontalalignment("right")
    fig.suptitle(suptitle or "Source selection: galaxies kept and removed by each cut", fontsize=11)
    return fig


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
    pixels. Each panel has its own colourbar (per-pixel values differ between the two grids).
    ``suptitle`` is followed by the factor and pixel scales. Returns a figure with n_cols N
    image axes followed by n_cols N colourbar axes (n_cols = 3, or 2 without ``source_high_res``).
    """
    low_res, high_res = _as_stack(low_res), _as_stack(high_res)
    stacks = [low_res, high_res]
    if source_high_res is not None:
        stacks.append(_as_stack(source_high_res))
    n = len(low_res)
    if any(len(s) != n for s in stacks):
        raise ValueError("low_res, high_res and source_high_res must have the same number of examples")
    if n == 0:
        raise ValueError("no examples to plot")
    factor = high_res.shape[-1] / low_res.shape[-1]
    lo_scale, hi_scale, unit = low_res_pixel_scale, high_res_pixel_scale, "arcsec"
    if lo_scale is None and hi_scale is not None:
        lo_scale = hi_scale * factor
    if hi_scale is None and lo_scale is not None:
        hi_scale = lo_scale / factor
    if lo_scale is None:
        lo_scale, hi_scale, unit = 1.0, 1.0 / factor, "low-res pixels"
    scales = [lo_scale, hi_scale, hi_scale]
    sigmas = np.full(n, np.nan)
    if noise_sigma is not None:
        ns = np.asarray(noise_sigma, dtype=float)
        sigmas = np.array([np.nanmedian(ns[i]) for i in range(n)]) if ns.ndim > 1 else np.broadcast_to(ns, (n,)).astype(float)
    params = None if lens_params is None else np.asarray(lens_params, dtype=float).reshape(n, -1)
    n_cols = len(stacks)

    fig, axes = _image_grid(n, n_cols, panel=2.4, extra_width=1.5, sharex=True, sharey=True)
    for i in range(n):
        for j in range(n_cols):
            ax = axes[i, j]
            image = stacks[j][i]
            sigma = sigmas[i] if j == 0 else 0.0
            norm = _norm(image, sigma if np.isfinite(sigma) else None, stretch)
            im = ax.imshow(
                image, origin="lower", extent=_extent(image.shape, scales[j]), cmap=IMAGE_CMAP,
                norm=norm, interpolation="nearest",
            )
            if params is not None and j < 2 and unit == "arcsec":
                _mark_lens(ax, params[i])
            if i == 0:
                title = titles[j] if j < len(titles) else ""
                ax.set_title(f"{title}\n{image.shape[-1]}×{image.shape[-2]} pix", fontsize=9)
            if i == n - 1:
                ax.set_xlabel(rf"$\Delta x$ [{unit}]")
            ax.tick_params(labelsize=7, direction="in", color="0.7")
            _colorbar(fig, im, ax, units if j == n_cols - 1 else None, fontsize=6, shrink=0.85, pad=0.02, aspect=15)
        axes[i, 0].set_ylabel(_row_label(row_labels, params, i, unit), fontsize=8)
    scale_note = f'{lo_scale:g}" → {hi_scale:g}" pixels' if unit == "arcsec" else "pixel scales unknown"
    fig.suptitle(
        f"{suptitle or 'Super-resolution examples'} (×{factor:g}, {scale_note}, {stretch} stretch per panel)",
        fontsize=11,
    )
    return fig


def fit_comparison_lensed(
    data: np.ndarray,
    noise_sigma: np.ndarray | float,
    models: dict[str, np.ndarray],
    sources: dict[str, np.ndarray],
    true_source: np.ndarray,
    pixel_scale: float,
    source_pixel_scale: float,
    *,
    scores: dict[str, str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Lensed source fits of one galaxy, one row per method (study 000's ``fit_comparison_lensed``).

    Columns: data, model, normalised residual ``(data - model) / sigma`` (±5), reconstructed source,
    true source. ``models`` (image grid) and ``sources`` (source grid, centred on (0, 0)) are keyed
    by method name; ``scores`` adds a line per method (e.g. χ²/ν and SSIM) to its row label.
    Images share one arcsinh stretch set by the noise; sources one linear stretch set by the truth.
    """
    names = list(models)
    data = np.asarray(data, dtype=float)
    sigma = np.broadcast_to(np.asarray(noise_sigma, dtype=float), data.shape)
    fig, axes = _image_grid(len(names), 5, panel=2.0, extra_width=1.2)
    img_norm = asinh_norm([data, *models.values()], float(np.median(sigma)))
    src_vmax = float(np.nanmax(true_source)) or 1.0
    src_norm = colors.Normalize(vmin=-0.05 * src_vmax, vmax=1.05 * src_vmax)
    ext_img, ext_src = _extent(data.shape, pixel_scale), _extent(np.shape(true_source), source_pixel_scale)
    titles = ("data", "model", "(data − model) / σ", "reconstructed source", "true source")
    for r, name in enumerate(names):
        resid = (data - np.asarray(models[name], dtype=float)) / sigma
        panels = [(data, img_norm, ext_img, IMAGE_CMAP), (models[name], img_norm, ext_img, IMAGE_CMAP),
                  (resid, colors.Normalize(-5, 5), ext_img, "RdBu_r"),
                  (sources[name], src_norm, ext_src, IMAGE_CMAP), (true_source, src_norm, ext_src, IMAGE_CMAP)]
        for c, (img, norm, ext, cmap) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(np.asarray(img, dtype=float), origin="lower", extent=ext, norm=norm, cmap=cmap,
                           interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 2 and r == len(names) - 1:
                _colorbar(fig, im, axes[:, 2].tolist(), location="bottom", shrink=0.8)
        label = name if not scores or name not in scores else f"{name}\n{scores[name]}"
        axes[r, 0].set_ylabel(label, fontsize=8)
    _scale_bar(axes[0, 0], ext_img[1] - ext_img[0], 1.0)
    _scale_bar(axes[0, 4], ext_src[1] - ext_src[0], 1.0)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------
# training


def learning_curve(metrics: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Training and validation loss per epoch of a staged training (the metrics CSV of ``train_vae``).

    ``metrics`` has one row per stage and epoch with columns ``stage``, ``epoch``, ``train_loss``,
    ``val_loss`` and optionally ``loss`` (the stage's reconstruction loss), ``lr`` and ``val_mse``. Epochs are
    counted continuously across stages; stage boundaries are marked and labelled with the stage's loss,
    the best validation epoch of each stage is circled. Log y axis where all losses are positive (each stage
    has its own loss, so levels jump between stages). A lower panel shows the learning rate where given.
    """
    from matplotlib.ticker import MaxNLocator

    if len(metrics) == 0:
        raise ValueError("no metrics to plot")
    df = metrics.sort_values(["stage", "epoch"], kind="stable").reset_index(drop=True)
    x = np.arange(1, len(df) + 1)
    has_lr = "lr" in df.columns and np.isfinite(df["lr"].to_numpy(dtype=float)).any()
    fig = Figure(figsize=(7.0, 4.6 if has_lr else 3.8), layout="constrained")
    if has_lr:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        ax, ax_lr = fig.subplots(1, 1), None
    train = df["train_loss"].to_numpy(dtype=float)
    val = df["val_loss"].to_numpy(dtype=float)
    for stage, rows in df.groupby("stage", sort=False):
        idx = rows.index.to_numpy()
        first = idx[0] == 0
        ax.plot(x[idx], train[idx], "-o", ms=3, color=SPLIT_COLOURS["train"], label="train" if first else None)
        ax.plot(x[idx], val[idx], "-s", ms=3, color=SPLIT_COLOURS["val"], label="validation" if first else None)
        finite = idx[np.isfinite(val[idx])]
        if finite.size:
            best = finite[np.argmin(val[finite])]
            ax.plot(x[best], val[best], "o", ms=10, mfc="none", mec="k", label="best (per stage)" if first else None)
        if idx[0] > 0:
            for a in (ax, ax_lr):
                if a is not None:
                    a.axvline(x[idx[0]] - 0.5, color="0.5", ls="--", lw=0.8)
        name = f"stage {stage}" + (f": {rows['loss'].iloc[0]}" if "loss" in rows.columns else "")
        ax.text(x[idx[0]] - 0.4, 1.0, name, transform=ax.get_xaxis_transform(), va="top", ha="left",
                fontsize=8, color="0.3")
    values = np.concatenate([train, val])
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0):
        ax.set_yscale("log")
    ax.set_ylabel("loss (reconstruction + β·KL)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center right")
    if ax_lr is not None:
        ax_lr.step(x, df["lr"].to_numpy(dtype=float), where="mid", color="0.3")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", fontsize=8)
        ax_lr.grid(alpha=0.3, which="both")
    (ax_lr if ax_lr is not None else ax).set_xlabel("epoch (all stages)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "VAE learning curve", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------
# VAE evaluation and galaxy fits (study 000)


def _panel(ax: Axes, image: np.ndarray, norm, cmap: str = IMAGE_CMAP, title: str | None = None):
    im = ax.imshow(image, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)
    return im


def _residual_norm(residuals: np.ndarray) -> colors.Normalize:
    lim = float(np.nanpercentile(np.abs(residuals), 99.5)) if np.size(residuals) else 1.0
    lim = lim if np.isfinite(lim) and lim > 0 else 1.0
    return colors.Normalize(vmin=-lim, vmax=lim)


def vae_reconstructions(
    inputs: np.ndarray, reconstructions: np.ndarray, labels: Sequence[str] | None = None,
    *, suptitle: str | None = None,
) -> Figure:
    """Input, VAE reconstruction and residual (input − reconstruction) of example galaxies.

    One column per galaxy; rows input / reconstruction (shared arcsinh stretch) and residual
    (diverging, symmetric about 0). ``labels`` title each column (e.g. source id and SSIM).
    """
    inputs, recs = _as_stack(inputs), _as_stack(reconstructions)
    n = len(inputs)
    res = inputs - recs
    norm = colors.AsinhNorm(linear_width=0.02, vmin=min(0.0, max(-0.05, float(np.nanmin(inputs)))),
                            vmax=max(1.0, float(np.nanmax(inputs))))
    rnorm = _residual_norm(res)
    fig, axes = _image_grid(3, n, panel=1.5, extra_width=1.2)
    im = rim = None
    for c in range(n):
        im = _panel(axes[0, c], inputs[c], norm, title=None if labels is None else str(labels[c]))
        _panel(axes[1, c], recs[c], norm)
        rim = _panel(axes[2, c], res[c], rnorm, cmap="RdBu_r")
    for r, name in enumerate(("input", "reconstruction", "residual")):
        axes[r, 0].set_ylabel(name, fontsize=9)
    if im is not None:
        _colorbar(fig, im, axes[:2].ravel().tolist(), "flux / peak flux", shrink=0.8, pad=0.01)
        _colorbar(fig, rim, axes[2].ravel().tolist(), "input − model", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "VAE reconstructions of test galaxies (encoder mean → decoder)", fontsize=11)
    return fig


def image_gallery(
    images: np.ndarray, *, n_cols: int = 8, titles: Sequence[str] | None = None, suptitle: str | None = None,
) -> Figure:
    """A grid of images with one shared arcsinh stretch (e.g. decoder samples from the prior)."""
    images = _as_stack(images)
    n = len(images)
    n_cols = max(1, min(int(n_cols), n))
    n_rows = int(np.ceil(n / n_cols))
    norm = colors.AsinhNorm(linear_width=0.02, vmin=min(0.0, float(np.nanmin(images))),
                            vmax=max(float(np.nanmax(images)), 1e-6))
    fig, axes = _image_grid(n_rows, n_cols, panel=1.4, extra_width=1.0)
    im = None
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_axis_off()
            continue
        im = _panel(ax, images[k], norm, title=None if titles is None else str(titles[k]))
    if im is not None:
        _colorbar(fig, im, axes.ravel().tolist(), "flux", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "Galaxies decoded from the prior z ~ N(0, I)", fontsize=11)
    return fig


def latent_interpolation(
    images: np.ndarray, *, endpoints: np.ndarray | None = None, labels: tuple[str, str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Decoded images along a straight line in latent space between two galaxies.

    ``images`` (n_steps, H, W) from t = 0 to 1; ``endpoints`` (2, H, W), the two input galaxies, are
    drawn at both ends of a second row when given.
    """
    images = _as_stack(images)
    n = len(images)
    rows = 1 if endpoints is None else 2
    stack = images if endpoints is None else np.concatenate([images, _as_stack(endpoints)])
    norm = colors.AsinhNorm(linear_width=0.02, vmin=min(0.0, float(np.nanmin(stack))),
                            vmax=max(float(np.nanmax(stack)), 1e-6))
    fig, axes = _image_grid(rows, n, panel=1.4, extra_width=1.0)
    im = None
    for c in range(n):
        t = c / max(n - 1, 1)
        im = _panel(axes[0, c], images[c], norm, title=f"t = {t:.2f}")
    axes[0, 0].set_ylabel("decoded", fontsize=9)
    if endpoints is not None:
        endpoints = _as_stack(endpoints)
        for c in range(n):
            axes[1, c].set_axis_off()
        for c, k in ((0, 0), (n - 1, 1)):
            axes[1, c].set_axis_on()
            _panel(axes[1, c], endpoints[k], norm, title=None if labels is None else str(labels[k]))
        axes[1, 0].set_ylabel("input", fontsize=9)
    _colorbar(fig, im, axes.ravel().tolist(), "flux", shrink=0.8, pad=0.01)
    fig.suptitle(suptitle or "Latent interpolation z(t) = (1 − t) z₀ + t z₁ between two test galaxies", fontsize=11)
    return fig


def fit_comparison(
    data: np.ndarray, models: dict[str, np.ndarray], *, labels: Sequence[str] | None = None,
    chi2_nu: dict[str, Sequence[float]] | None = None, noise_sigma: Sequence[float] | float | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Data, then model and normalised residual (data − model)/σ per fit method, one row per galaxy.

    ``models``: {method: (N, H, W)}; ``chi2_nu``: {method: (N,)} written in the model panels;
    residuals are divided by ``noise_sigma`` when given (shown from −5 to 5) and raw otherwise.
    """
    data = _as_stack(data)
    n = len(data)
    methods = list(models)
    n_cols = 1 + 2 * len(methods)
    norm = colors.AsinhNorm(linear_width=0.02, vmin=min(0.0, max(-0.1, float(np.nanmin(data)))),
                            vmax=max(1.0, float(np.nanmax(data))))
    sig = None if noise_sigma is None else np.broadcast_to(np.asarray(noise_sigma, dtype=float), (n,))
    residuals = {m: data - _as_stack(models[m]) for m in methods}
    if sig is not None:
        residuals = {m: r / sig[:, None, None] for m, r in residuals.items()}
        rnorm = colors.Normalize(-5, 5)
    else:
        rnorm = _residual_norm(np.concatenate(list(residuals.values())))
    fig, axes = _image_grid(n, n_cols, panel=1.35, extra_width=1.2)
    im = rim = None
    for r in range(n):
        im = _panel(axes[r, 0], data[r], norm, title="data" if r == 0 else None)
        if labels is not None:
            axes[r, 0].set_ylabel(textwrap.shorten(str(labels[r]), 20, placeholder="…"), fontsize=7)
        for k, m in enumerate(methods):
            title = None
            if chi2_nu is not None:
                title = (f"{m}\n" if r == 0 else "") + f"χ²/ν={float(chi2_nu[m][r]):.2f}"
            elif r == 0:
                title = m
            _panel(axes[r, 1 + 2 * k], _as_stack(models[m])[r], norm, title=title)
            rim = _panel(axes[r, 2 + 2 * k], residuals[m][r], rnorm, cmap="RdBu_r",
                         title="residual" if r == 0 else None)
    _colorbar(fig, im, axes[:, 0].tolist(), "flux / peak flux", shrink=0.6, pad=0.01, location="left")
    _colorbar(fig, rim, axes.ravel().tolist(), "(data − model)/σ" if sig is not None else "data − model",
              shrink=0.6, pad=0.01)
    fig.suptitle(suptitle or "Galaxy fits: data, model and residual per method", fontsize=11)
    return fig
