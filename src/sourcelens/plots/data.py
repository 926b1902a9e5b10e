"""Figures of the source data: galaxy stamps per source kind, the selection (filter) table, and the size,
profile and shape distributions of each kind."""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure

from .style import (
    IMAGE_CMAP, KIND_LABELS, KIND_ORDER, as_stack, colorbar, extent, image_grid, panel, peak_asinh_norm, scale_bar,
)

__all__ = ["stamps_by_kind", "filter_table_figure", "source_diversity"]


def _pixel_scales(scale: float | Sequence[float] | None, n: int) -> np.ndarray:
    """One pixel scale per stamp (NaN where unknown)."""
    if scale is None:
        return np.full(n, np.nan)
    arr = np.asarray(scale, dtype=float)
    return np.full(n, float(arr)) if arr.ndim == 0 else arr


def _stamp_title(source_id: str, magnitude: float, redshift: float) -> str:
    """Source id (shortened), then magnitude and redshift where known."""
    info = [textwrap.shorten(source_id, 18, placeholder="…")]
    extra = []
    if np.isfinite(magnitude):
        extra.append(f"m={magnitude:.1f}")
    if np.isfinite(redshift):
        extra.append(f"z={redshift:.2f}")
    if extra:
        info.append(" ".join(extra))
    return "\n".join(info)


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
    images = as_stack(images)
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
        norm = peak_asinh_norm(images, vmin_floor=-0.05, vmax=1.0)
    else:
        norm = colors.Normalize(vmin=min(0.0, float(np.nanmin(images))), vmax=1.0)

    fig, axes = image_grid(len(kind_list), n_cols, panel=1.6, extra_width=1.2)
    im = None
    for r, kind in enumerate(kind_list):
        idx = np.flatnonzero(kinds == kind)[:n_cols]
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= idx.size:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_axis_off()
                continue
            k = idx[c]
            known = np.isfinite(scales[k]) and scales[k] > 0
            ext = extent(images[k].shape, scales[k] if known else 1.0)
            im = panel(ax, images[k], norm, IMAGE_CMAP, _stamp_title(ids[k], mags[k], zs[k]), extent=ext)
            scale_bar(ax, ext[1] - ext[0], 1.0, unit='"' if known else " pix")
        axes[r, 0].set_ylabel(
            f"{KIND_LABELS.get(kind, kind)}\nN = {kind_counts.get(kind, idx.size)}", fontsize=9
        )
    if im is not None:
        colorbar(fig, im, axes.ravel().tolist(), "flux / peak flux", shrink=0.8, pad=0.01, aspect=30)
    fig.suptitle(suptitle or "Galaxy source stamps by kind (peak-normalised, arcsinh stretch)", fontsize=11)
    return fig


def _filter_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The filter table with every column the figure needs: missing kinds become "all", missing
    counts follow from the other two (n_in = n_kept + n_removed)."""
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


_DIVERSITY_PANELS = (
    ("hlr_arcsec", "half-light radius (arcsec)", None),
    ("sersic_n", "Sérsic index n", None),
    ("ellipticity", "HSM |e|", (0.0, 1.0)),
    ("nn_correlation", "test: best correlation with a training stamp", None),
)


def source_diversity(measured: pd.DataFrame, *, near_copy: float | None = None) -> Figure:
    """Distributions of size, Sérsic index, ellipticity (all splits) and of the test galaxies' nearest training
    neighbour (:mod:`sourcelens.diversity`), one line per source kind, real galaxies first; ``near_copy`` marks
    the correlation above which a test galaxy nearly repeats a training one."""
    fig = Figure(figsize=(13.0, 3.2), layout="constrained")
    axes = fig.subplots(1, len(_DIVERSITY_PANELS))
    kinds = [k for k in KIND_ORDER if (measured["kind"] == k).any()]
    for ax, (column, label, limits) in zip(axes, _DIVERSITY_PANELS):
        values = measured[column].dropna() if column in measured else pd.Series(dtype=float)
        if values.empty:
            ax.set_axis_off()
            continue
        lo, hi = limits or (float(values.quantile(0.01)), float(values.quantile(0.99)))
        if column == "nn_correlation":
            lo, hi = max(lo, -1.0), 1.0
        bins = np.linspace(lo, hi, 25)
        for kind in kinds:
            v = measured.loc[measured["kind"] == kind, column].dropna().to_numpy(dtype=float)
            if len(v):
                ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", lw=1.6,
                        label=f"{KIND_LABELS.get(kind, kind)} ({len(v)})")
        if column == "nn_correlation" and near_copy is not None:
            ax.axvline(near_copy, color="0.4", ls="--", lw=1)
        ax.set_xlabel(label)
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7, loc="upper right")
    return fig
