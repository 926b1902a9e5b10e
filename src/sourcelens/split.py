"""Train/validation/test split by source id: every copy of a galaxy lands in one split only."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .names import SPLITS


def assign_splits(source_ids: pd.Series | np.ndarray, fractions: Mapping[str, float],
                  rng: np.random.Generator) -> np.ndarray:
    """The split name of each row, drawn per distinct source id (seeded, order-independent)."""
    ids = np.asarray(source_ids).astype(str)
    unique = np.array(sorted(set(ids)))
    n = len(unique)
    total = sum(fractions[s] for s in SPLITS)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} (config key split/fractions)")
    n_val = int(round(fractions["val"] * n))
    n_test = int(round(fractions["test"] * n))
    for name, count in (("val", n_val), ("test", n_test)):
        if fractions[name] > 0 and count == 0:
            raise ValueError(
                f"only {n} distinct sources: the '{name}' split (fraction {fractions[name]}) would be empty; "
                "use more galaxies or larger fractions"
            )
    n_train = n - n_val - n_test
    if fractions["train"] > 0 and n_train <= 0:
        raise ValueError(f"only {n} distinct sources: the 'train' split would be empty")
    order = rng.permutation(n)
    split_of = np.empty(n, dtype=object)
    split_of[order[:n_train]] = "train"
    split_of[order[n_train:n_train + n_val]] = "val"
    split_of[order[n_train + n_val:]] = "test"
    lookup = dict(zip(unique, split_of))
    return np.array([lookup[s] for s in ids], dtype=object)


def check_no_leakage(metas: Mapping[str, pd.DataFrame], column: str = "source_id") -> None:
    """Raise if any value of ``column`` (a source, or a galaxy on the sky) appears in more than one split."""
    seen: dict[str, str] = {}
    for split, meta in metas.items():
        for sid in set(meta[column]):
            if sid in seen and seen[sid] != split:
                raise AssertionError(f"{column} '{sid}' is in both '{seen[sid]}' and '{split}'")
            seen[sid] = split
