"""Figures of model training: the learning curve of a staged training (VAE today; the CNN,
U-Net and super-resolution trainings write the same metrics table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .style import SPLIT_COLOURS

__all__ = ["learning_curve"]


def learning_curve(
    metrics: pd.DataFrame, *, title: str | None = None, ylabel: str = "loss (reconstruction + β·KL)",
) -> Figure:
    """Training and validation loss per epoch of a staged training.

    ``metrics`` (e.g. the metrics CSV of ``train_vae``) has one row per stage and epoch with columns
    ``stage``, ``epoch``, ``train_loss``, ``val_loss`` and optionally ``loss`` (the stage's loss
    name), ``lr`` and others. Epochs are counted continuously across stages; stage boundaries are
    marked and labelled with the stage's loss, the best validation epoch of each stage is circled.
    Log y axis where all losses are positive (each stage may have its own loss, so levels jump
    between stages). A lower panel shows the learning rate where given. ``ylabel`` names the loss
    (its default is the VAE's).
    """
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
    ax.set_ylabel(ylabel)
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
