"""Figures of study 003 (deblending): shape and magnitude residuals against S/N per band set (the study's
figures), measured against true ellipticities with the shear-bias fit, and example blends with every method's
central galaxy and residual. Inputs are the tables of :mod:`sourcelens.evaluate.deblending`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .style import asinh_norm, colorbar, extent, image_grid, panel, residual_norm, robust_sigma

__all__ = ["METHOD_COLOURS", "deblending_residuals", "shear_bias_figure", "deblending_examples"]

METHOD_COLOURS = {"vae": "#1f77b4", "deblender": "#d62728", "sep": "#2ca02c", "blend": "0.5"}
_LABELS = {"vae": "VAE (isolated)", "deblender": "VAE deblender", "sep": "sep (segmentation)", "blend": "no deblending"}
_BAND_SET_LABELS = {"lsst": "LSST", "lsst_euclid": "LSST + Euclid"}


def _binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 3):
    centres, med, lo, hi = [], [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (x >= a) & (x < b) & np.isfinite(y)
        if sel.sum() >= min_count:
            p16, p50, p84 = np.percentile(y[sel], [16, 50, 84])
            centres.append(float(np.median(x[sel])))
            med.append(p50)
            lo.append(p16)
            hi.append(p84)
    return np.array(centres), np.array(med), np.array(lo), np.array(hi)


def deblending_residuals(per: pd.DataFrame, x: str = "snr", estimator: str = "ksb", shape_band: str = "r",
                         n_bins: int = 8, methods: Sequence[str] | None = None) -> Figure:
    """Δe1, Δe2 and Δmag (shape band) against ``x`` (``snr`` or ``mag_true``): one column per band set, one line
    per method (median in bins of equal count, band from the 16th to the 84th percentile)."""
    band_sets = list(dict.fromkeys(per["band_set"]))
    methods = [m for m in (methods or METHOD_COLOURS) if m in set(per["method"])]
    quantities = [(f"de1_{estimator}", r"$\Delta e_1$"), (f"de2_{estimator}", r"$\Delta e_2$"),
                  (f"dmag_{shape_band}", rf"$\Delta m_{{{shape_band}}}$")]
    fig = Figure(figsize=(4.2 * len(band_sets), 2.4 * len(quantities) + 0.5), layout="constrained")
    axes = fig.subplots(len(quantities), len(band_sets), squeeze=False, sharex="col")
    for j, band_set in enumerate(band_sets):
        sub = per[per["band_set"] == band_set]
        xs_all = sub[x].to_numpy(dtype=float)
        finite = xs_all[np.isfinite(xs_all) & (xs_all > 0 if x == "snr" else True)]
        if finite.size == 0:
            continue
        smallest = min(int((sub["method"] == m).sum()) for m in methods if (sub["method"] == m).any())
        bins = max(1, min(int(n_bins), smallest // 5))      # at least ~5 points per bin and method
        qs = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
        qs[-1] = np.nextafter(qs[-1], np.inf)               # the largest value in the last bin
        for i, (col, label) in enumerate(quantities):
            ax = axes[i, j]
            ax.axhline(0.0, color="0.7", lw=0.8)
            for method in methods:
                rows = sub[sub["method"] == method]
                if col not in rows:
                    continue
                c, med, lo, hi = _binned(rows[x].to_numpy(dtype=float), rows[col].to_numpy(dtype=float), qs)
                if c.size == 0:
                    continue
                ax.plot(c, med, "-o", ms=3, color=METHOD_COLOURS.get(method), label=_LABELS.get(method, method))
                ax.fill_between(c, lo, hi, color=METHOD_COLOURS.get(method), alpha=0.15, lw=0)
            if x == "snr":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel(label)
            if i == 0:
                ax.set_title(_BAND_SET_LABELS.get(band_set, band_set), fontsize=9)
            if i == len(quantities) - 1:
                ax.set_xlabel(f"S/N ({shape_band})" if x == "snr" else f"true magnitude ({shape_band})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


def shear_bias_figure(per: pd.DataFrame, table: pd.DataFrame | None = None, estimator: str = "ksb",
                      methods: Sequence[str] | None = None, max_points: int = 2000) -> Figure:
    """Measured against true ellipticity per component (columns) and band set (rows), a colour per method, with
    the fitted line e_out = (1 + m) e_true + c (from ``table``, the ``all`` rows) in the legend."""
    band_sets = list(dict.fromkeys(per["band_set"]))
    methods = [m for m in (methods or METHOD_COLOURS) if m in set(per["method"])]
    fig = Figure(figsize=(8.2, 3.6 * len(band_sets) + 0.3), layout="constrained")
    axes = fig.subplots(len(band_sets), 2, squeeze=False)
    for i, band_set in enumerate(band_sets):
        for j, c in enumerate(("1", "2")):
            ax = axes[i, j]
            lim = 0.0
            for method in methods:
                rows = per[(per["band_set"] == band_set) & (per["method"] == method)]
                xt = rows[f"e{c}_true_{estimator}"].to_numpy(dtype=float)
                yo = rows[f"e{c}_{estimator}"].to_numpy(dtype=float)
                ok = np.isfinite(xt) & np.isfinite(yo)
                xt, yo = xt[ok][:max_points], yo[ok][:max_points]
                if xt.size == 0:
                    continue
                lim = max(lim, float(np.percentile(np.abs(np.r_[xt, yo]), 99)))
                label = _LABELS.get(method, method)
                fit = _fit_row(table, band_set, method, estimator)
                if fit is not None and np.isfinite(fit.get(f"m{c}", np.nan)):
                    m, merr, cc = fit[f"m{c}"], fit.get(f"m{c}_err", np.nan), fit[f"c{c}"]
                    label += f": m = {m:+.3f} ± {merr:.3f}, c = {cc:+.4f}"
                    grid = np.linspace(-1, 1, 3)
                    ax.plot(grid, (1 + m) * grid + cc, "-", color=METHOD_COLOURS.get(method), lw=1)
                ax.plot(xt, yo, ".", ms=2, alpha=0.5, color=METHOD_COLOURS.get(method), label=label)
            lim = min(max(lim * 1.05, 0.1), 1.0)
            ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.7)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xlabel(rf"true $e_{c}$ ({estimator.upper()})")
            ax.set_ylabel(rf"measured $e_{c}$")
            ax.set_title(_BAND_SET_LABELS.get(band_set, band_set), fontsize=9)
            ax.legend(fontsize=6, loc="upper left", markerscale=3)
    return fig


def _fit_row(table: pd.DataFrame | None, band_set: str, method: str, estimator: str) -> Mapping[str, Any] | None:
    if table is None or table.empty:
        return None
    rows = table[(table["band_set"] == band_set) & (table["method"] == method) & (table["estimator"] == estimator)
                 & (table["kind"] == "all")]
    return None if rows.empty else rows.iloc[0].to_dict()


def deblending_examples(examples: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Example blends per band set (rows): the blend, the true central galaxy, each method's central galaxy
    (deblender, sep) and its residual against the truth, in the shape band; one arcsinh stretch per row tied to
    the blend's noise, residuals on a symmetric scale."""
    rows = [(name, i) for name, ex in examples.items() if ex for i in range(len(ex.get("truth", [])))]
    methods = [m for m in ("deblender", "sep") if any(m in ex.get("outputs", {}) for ex in examples.values() if ex)]
    n_cols = 2 + 2 * len(methods)
    fig, axes = image_grid(max(1, len(rows)), n_cols, panel=1.7, extra_width=1.0)
    for r, (name, i) in enumerate(rows):
        ex = examples[name]
        blend, truth = np.asarray(ex["blend"][i], float), np.asarray(ex["truth"][i], float)
        outs = {m: np.asarray(ex["outputs"][m][i], float) for m in methods if m in ex["outputs"]}
        ext = extent(truth.shape, float(ex.get("pixel_scale", 1.0)))
        norm = asinh_norm([blend, truth], robust_sigma(blend - truth))
        band = ex.get("band", "r")
        panel(axes[r, 0], blend, norm, title=f"{_BAND_SET_LABELS.get(name, name)} blend ({band})", extent=ext)
        axes[r, 0].set_ylabel(ex.get("labels", [""] * (i + 1))[i], fontsize=6)
        panel(axes[r, 1], truth, norm, title="truth", extent=ext)
        residuals = [np.nan_to_num(o - truth) for o in outs.values()]
        rnorm = residual_norm(np.stack(residuals)) if residuals else None
        im_r = im = None
        for k, (m, o) in enumerate(outs.items()):
            im = panel(axes[r, 2 + 2 * k], np.nan_to_num(o), norm, title=_LABELS.get(m, m), extent=ext)
            im_r = panel(axes[r, 3 + 2 * k], np.nan_to_num(o - truth), rnorm, cmap="RdBu_r",
                         title=f"{m} − truth", extent=ext)
        for k in range(2 + 2 * len(outs), n_cols):
            axes[r, k].set_axis_off()
        if im is not None:
            colorbar(fig, im, axes[r, 2 + 2 * (len(outs) - 1)], label="counts", shrink=0.8)
        if im_r is not None:
            colorbar(fig, im_r, axes[r, -1], shrink=0.8)
    return fig
