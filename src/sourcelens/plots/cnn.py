"""Figures of the lens-parameter CNN (study 002): predicted against true parameters, residuals against the
signal-to-noise and the Einstein radius, and the calibration of the predicted uncertainties.

They read the table of :func:`sourcelens.evaluate.cnn.cnn_predictions` (``kind``, ``snr`` and per lens parameter
``true_<p>``, ``pred_<p>``, ``sigma_<p>``, ``z_<p>``) and the curve of
:func:`sourcelens.evaluate.cnn.calibration_curve` (``level`` and one column per parameter)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..names import LENS_PARAMETERS
from .style import KIND_COLOURS, KIND_LABELS, kinds_present, running_median

__all__ = ["FIXED_TEXT", "PARAM_SYMBOLS", "PARAM_UNITS", "cnn_calibration", "cnn_predictions", "cnn_residuals",
           "coverage_68", "param_label", "r_squared"]

#: Short symbols of the lens parameters of :data:`sourcelens.names.LENS_PARAMETERS`, for titles and legends.
PARAM_SYMBOLS = {
    "theta_E": r"$\theta_\mathrm{E}$", "gamma": r"$\gamma$", "e1": r"$e_1$", "e2": r"$e_2$",
    "center_x": r"$x_\mathrm{lens}$", "center_y": r"$y_\mathrm{lens}$",
    "gamma1": r"$\gamma_1^\mathrm{ext}$", "gamma2": r"$\gamma_2^\mathrm{ext}$",
}
#: Units of the lens parameters (the others are dimensionless).
PARAM_UNITS = {"theta_E": "arcsec", "center_x": "arcsec", "center_y": "arcsec"}
FIXED_TEXT = "fixed in training"
_N_COLS = 4


def param_label(name: str, prefix: str = "") -> str:
    """``"<prefix> <symbol> [unit]"``: an axis label of lens parameter ``name``."""
    unit = PARAM_UNITS.get(name)
    label = f"{prefix} {PARAM_SYMBOLS.get(name, name)}".strip()
    return f"{label} [{unit}]" if unit else label


def r_squared(true: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination 1 − MSE / var(true) over the finite pairs (NaN when the truth is constant)."""
    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    ok = np.isfinite(true) & np.isfinite(pred)
    var = float(np.var(true[ok])) if ok.any() else 0.0
    return float(1.0 - np.mean((pred[ok] - true[ok]) ** 2) / var) if var > 0 else float("nan")


def coverage_68(z: np.ndarray) -> float:
    """Fraction of finite normalised errors with |z| ≤ 1: 0.68 for calibrated Gaussian 1σ intervals."""
    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    return float(np.mean(np.abs(z) <= 1.0)) if z.size else float("nan")


def _kind_colour(kind: str, k: int) -> str:
    return KIND_COLOURS.get(kind, f"C{k % 10}")


def _mark_fixed(ax: Axes, name: str) -> None:
    """A panel that says the parameter was fixed in training (nothing to predict, nothing to plot)."""
    ax.set_title(PARAM_SYMBOLS.get(name, name), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, FIXED_TEXT, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3")


def _errorbars_by_kind(ax: Axes, pred: pd.DataFrame, x: str, y: np.ndarray, yerr: str) -> None:
    """Points (x, y) with 1σ error bars ``yerr``, one colour per source kind (real galaxies first)."""
    kinds = pred["kind"].astype(str).to_numpy()
    for k, kind in enumerate(kinds_present(kinds)):
        sel = kinds == kind
        ax.errorbar(pred[x].to_numpy(dtype=float)[sel], y[sel], yerr=pred[yerr].to_numpy(dtype=float)[sel],
                    fmt="o", ms=2.5, lw=0.6, elinewidth=0.6, alpha=0.7, color=_kind_colour(kind, k),
                    label=KIND_LABELS.get(kind, kind))


def _kind_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend of the source kinds below the panels (from the first panel that has points)."""
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
            return


def cnn_predictions(pred: pd.DataFrame, *, fixed: Sequence[str] = ()) -> Figure:
    """Predicted against true value of each lens parameter (2 × 4 panels), with the 1σ error bars of the
    prediction, the 1:1 line and points coloured by source kind; each title gives R² = 1 − MSE / var(true) and the
    68 % coverage (fraction with |z| ≤ 1, 0.68 when the σ are calibrated). Parameters in ``fixed`` (held constant
    by the training set) get a panel saying so. Returns a figure with 8 axes."""
    fig = Figure(figsize=(3.0 * _N_COLS, 2.9 * 2 + 0.6), layout="constrained")
    axes = fig.subplots(2, _N_COLS).ravel()
    for ax, name in zip(axes, LENS_PARAMETERS):
        if name in fixed:
            _mark_fixed(ax, name)
            continue
        true, value = pred[f"true_{name}"].to_numpy(dtype=float), pred[f"pred_{name}"].to_numpy(dtype=float)
        _errorbars_by_kind(ax, pred, f"true_{name}", value, f"sigma_{name}")
        both = np.concatenate([true, value])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=0.8, label="_1:1")
        ax.set_title(f"{PARAM_SYMBOLS[name]}: R² = {r_squared(true, value):.3f}, "
                     f"68% cov. = {coverage_68(pred[f'z_{name}']):.2f}", fontsize=9)
        ax.set_xlabel(param_label(name, "true"), fontsize=8)
        ax.set_ylabel(param_label(name, "predicted"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _kind_legend(fig, axes)
    fig.suptitle("Lens-parameter CNN on the test pairs: predicted vs true (±1σ)", fontsize=11)
    return fig


def cnn_residuals(pred: pd.DataFrame, *, fixed: Sequence[str] = ()) -> Figure:
    """Residual pred − true of each lens parameter (one column each) against the optimal S/N (top row, log axis)
    and against the true Einstein radius (bottom row): points with their 1σ error bars by source kind, a zero
    line and the running median (black), to show where the CNN is biased or loses precision. Parameters in
    ``fixed`` get panels saying so. Returns a figure with 2 × 8 axes."""
    n = len(LENS_PARAMETERS)
    fig = Figure(figsize=(2.3 * n, 2.3 * 2 + 0.8), layout="constrained")
    axes = fig.subplots(2, n, sharey="col")
    for c, name in enumerate(LENS_PARAMETERS):
        if name in fixed:
            for ax in axes[:, c]:
                _mark_fixed(ax, name)
            continue
        resid = (pred[f"pred_{name}"] - pred[f"true_{name}"]).to_numpy(dtype=float)
        for ax, x in zip(axes[:, c], ("snr", "true_theta_E")):
            _errorbars_by_kind(ax, pred, x, resid, f"sigma_{name}")
            ax.axhline(0.0, color="0.3", lw=0.8)
            ax.plot(*running_median(pred[x].to_numpy(dtype=float), resid), color="k", lw=1.4, label="_median")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0, c].set_xscale("log")
        axes[0, c].set_title(PARAM_SYMBOLS[name], fontsize=9)
        axes[0, c].set_ylabel(param_label(name, "pred − true"), fontsize=8)
        axes[0, c].set_xlabel("S/N (optimal)", fontsize=8)
        axes[1, c].set_xlabel(param_label("theta_E", "true"), fontsize=8)
    _kind_legend(fig, axes.ravel())
    fig.suptitle("Lens-parameter CNN: residuals against S/N (top) and Einstein radius (bottom); "
                 "black: running median", fontsize=11)
    return fig


def cnn_calibration(curve: pd.DataFrame, *, fixed: Sequence[str] = ()) -> Figure:
    """Observed fraction of true values inside the central predicted interval against its nominal probability,
    one line per lens parameter (those in ``fixed`` left out), with the diagonal of perfect calibration: above it
    the intervals are too wide (under-confident), below too narrow (over-confident). Returns a figure with 1 axes."""
    fig = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.fill_between([0, 1], [0, 1], [1, 1], color="tab:blue", alpha=0.07, lw=0)
    ax.fill_between([0, 1], [0, 0], [0, 1], color="tab:red", alpha=0.07, lw=0)
    ax.text(0.05, 0.93, "under-confident\n(σ too large)", fontsize=8, va="top", color="tab:blue")
    ax.text(0.95, 0.07, "over-confident\n(σ too small)", fontsize=8, ha="right", va="bottom", color="tab:red")
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=0.8, label="_calibrated")
    level = curve["level"].to_numpy(dtype=float)
    for k, name in enumerate(LENS_PARAMETERS):
        if name in fixed or name not in curve:
            continue
        ax.plot(level, curve[name].to_numpy(dtype=float), "-o", ms=2.5, lw=1.2, color=f"C{k}",
                label=PARAM_SYMBOLS[name])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal probability of the central interval")
    ax.set_ylabel("observed fraction of true values inside")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle("Lens-parameter CNN: calibration of the predicted σ", fontsize=11)
    return fig
