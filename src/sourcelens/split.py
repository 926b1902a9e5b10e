"""Train/validation/test split by source id: every copy of a galaxy lands in one split only."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .names import SPLITS


def assign_splits(source_ids: pd.Series | np.ndarray, fractions: Mapping[str, float],
                  rng: np.random.Generator, strata: pd.Series | np.ndarray | None = None) -> np.ndarray:
    """The split name of each row, drawn per distinct source id (seeded, order-independent).

    With ``strata`` (e.g. the source kind of each row), each stratum is split with the fractions on its own, so
    every kind of galaxy (the few real ones above all) is in every split in proportion; a source in several
    strata (a real stamp and its fitted profile sharing a galaxy id) belongs to their combination.
    """
    ids = np.asarray(source_ids).astype(str)
    total = sum(fractions[s] for s in SPLITS)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} (config key split/fractions)")
    labels = np.asarray(strata).astype(str) if strata is not None else np.full(len(ids), "")
    stratum_of: dict[str, set[str]] = {}
    for sid, label in zip(ids, labels):
        stratum_of.setdefault(sid, set()).add(label)
    groups: dict[str, list[str]] = {}
    for sid in sorted(stratum_of):
        groups.setdefault("+".join(sorted(stratum_of[sid])), []).append(sid)
    lookup: dict[str, str] = {}
    for name in sorted(groups):
        lookup.update(_split_group(np.array(groups[name]), fractions, rng))
    counts = {s: sum(v == s for v in lookup.values()) for s in SPLITS}
    for name in SPLITS:
        if fractions[name] > 0 and counts[name] == 0:
            raise ValueError(
                f"only {len(lookup)} distinct sources: the '{name}' split (fraction {fractions[name]}) would be "
                "empty; use more galaxies or larger fractions"
            )
    return np.array([lookup[s] for s in ids], dtype=object)


def _split_group(unique: np.ndarray, fractions: Mapping[str, float], rng: np.random.Generator) -> dict[str, str]:
    """Split name of each of the sorted distinct ids of one stratum: val and test rounded, train the rest."""
    n = len(unique)
    n_val = int(round(fractions["val"] * n))
    n_test = int(round(fractions["test"] * n))
    if n_val + n_test > n:
        n_val = max(n - n_test, 0)
    n_train = n - n_val - n_test
    order = rng.permutation(n)
    split_of = np.empty(n, dtype=object)
    split_of[order[:n_train]] = "train"
    split_of[order[n_train:n_train + n_val]] = "val"
    split_of[order[n_train + n_val:]] = "test"
    return dict(zip(unique, split_of))


def check_no_leakage(metas: Mapping[str, pd.DataFrame], column: str = "source_id") -> None:
    """Raise if any value of ``column`` (a source, or a galaxy on the sky) appears in more than one split."""
    seen: dict[str, str] = {}
    for split, meta in metas.items():
        for sid in set(meta[column]):
            if sid in seen and seen[sid] != split:
                raise AssertionError(f"{column} '{sid}' is in both '{seen[sid]}' and '{split}'")
            seen[sid] = split
