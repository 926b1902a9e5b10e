"""Deterministic choices of rows: evenly spaced examples, un-augmented originals, a few per kind.

Every figure and fit that shows or uses "some" galaxies picks them here, so that the same
galaxies are chosen by every rule and every rerun.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .names import SOURCE_KINDS

__all__ = ["evenly_spaced_rows", "original_rows", "first_originals", "select_examples", "select_per_kind"]


def evenly_spaced_rows(n_total: int, n: int) -> np.ndarray:
    """Up to ``n`` row indices spread evenly over ``range(n_total)`` (first and last included):
    a deterministic sample that spans shards and sorted orders."""
    if n_total <= 0 or n <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n_total - 1, min(int(n), int(n_total))).round().astype(int))


def original_rows(meta: pd.DataFrame) -> np.ndarray:
    """Rows of un-augmented stamps (``augmentation == "original"``; all rows if the column is absent)."""
    if "augmentation" not in meta.columns:
        return np.arange(len(meta))
    return np.flatnonzero(meta["augmentation"].astype(str).to_numpy() == "original")


def _originals_by_id(meta: pd.DataFrame) -> np.ndarray:
    orig = original_rows(meta)
    if "source_id" not in meta.columns:
        return orig
    return orig[np.argsort(meta["source_id"].astype(str).to_numpy()[orig], kind="stable")]


def first_originals(meta: pd.DataFrame, n: int | None = None, *, linear_only: bool = False) -> np.ndarray:
    """Rows of ``n`` originals (all for None), one stamp per galaxy, the same galaxies whatever the row order of
    the file: the first in source-id order of each kind, taken in turn from every kind (real galaxies first, as
    :data:`~sourcelens.names.SOURCE_KINDS`), so that every kind is fitted and judged. ``linear_only`` skips stamps
    that are not linear in flux (``flux_linear`` False: the XDF picture), for fits and photometry."""
    rows = _originals_by_id(meta)
    if linear_only and "flux_linear" in meta.columns:
        rows = rows[meta["flux_linear"].to_numpy(dtype=bool)[rows]]
    if n is None or "kind" not in meta.columns:
        return rows if n is None else rows[: max(0, int(n))]
    kinds = meta["kind"].astype(str).to_numpy()[rows]
    order = sorted(set(kinds), key=lambda k: (SOURCE_KINDS.index(k) if k in SOURCE_KINDS else len(SOURCE_KINDS), k))
    # position within its kind, then the kind's rank: a round robin over the kinds
    rank = np.array([order.index(k) for k in kinds])
    within = np.zeros(len(rows), dtype=int)
    for k in order:
        within[kinds == k] = np.arange(np.count_nonzero(kinds == k))
    chosen = np.lexsort((rank, within))[: max(0, int(n))]
    chosen = chosen[np.lexsort((within[chosen], rank[chosen]))]     # listed kind by kind, by source id
    return rows[chosen]


def select_examples(meta: pd.DataFrame, n: int) -> np.ndarray:
    """``n`` originals for example figures: evenly spaced in source-id order within each kind, the kinds taken in
    turn (real galaxies first, :data:`~sourcelens.names.SOURCE_KINDS`), so a figure shows every kind whatever
    their numbers; listed kind by kind. Returns row indices of ``meta``."""
    order = _originals_by_id(meta)
    if "kind" not in meta.columns:
        return order[evenly_spaced_rows(order.size, n)]
    kinds = meta["kind"].astype(str).to_numpy()[order]
    present = sorted(set(kinds), key=lambda k: (SOURCE_KINDS.index(k) if k in SOURCE_KINDS else len(SOURCE_KINDS), k))
    n_of = dict.fromkeys(present, 0)
    for _ in range(max(0, int(n))):                     # round robin over the kinds that still have galaxies
        open_kinds = [k for k in present if n_of[k] < np.count_nonzero(kinds == k)]
        if not open_kinds:
            break
        n_of[min(open_kinds, key=lambda k: (n_of[k], present.index(k)))] += 1
    rows = [order[kinds == k][evenly_spaced_rows(int(np.count_nonzero(kinds == k)), n_of[k])] for k in present]
    return np.concatenate(rows) if rows else np.zeros(0, dtype=int)


def select_per_kind(kinds: Sequence[str], n_per_kind: int, seed: int = 0) -> np.ndarray:
    """Indices of up to ``n_per_kind`` objects of each kind, drawn at random (reproducibly), sorted."""
    kinds = np.asarray(kinds).astype(str)
    rng = np.random.default_rng(seed)
    chosen = []
    for kind in pd.unique(kinds):
        idx = np.flatnonzero(kinds == kind)
        take = min(n_per_kind, idx.size)
        chosen.append(np.sort(rng.choice(idx, size=take, replace=False)))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)
