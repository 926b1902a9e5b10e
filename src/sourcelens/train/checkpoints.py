"""The checkpoint folder of staged training: its ``progress.json``, the training fingerprint, reading
checkpoints that may be damaged, and removing the folder.

Layout: ``checkpoint_dir/progress.json`` (the fingerprint and the finished stages, written when the folder
is made and after each stage) and one ``stage{i}[_{label}]/`` folder per stage with Lightning's
``best.ckpt`` and ``last.ckpt``. The folder is a cache: deleting it (:func:`clean_checkpoints`) only makes
the next run start afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import Dataset, TensorDataset

from ..io import write_json

log = logging.getLogger("sourcelens.train")

PROGRESS_FILE = "progress.json"
# settings that choose where and how fast training runs, not what it computes: outside the fingerprint
RUNTIME_KEYS = frozenset({"accelerator", "num_workers", "checkpoint_dir", "threads", "devices"})


def dataset_fingerprint(data: Dataset) -> str:
    """Hash of a dataset's content: its ``fingerprint()`` if it has one, else the tensors of a TensorDataset.

    Datasets that read lazily from files should define ``fingerprint()`` (e.g. a hash of the file) rather
    than be read in full here.
    """
    if callable(getattr(data, "fingerprint", None)):
        return str(data.fingerprint())
    if isinstance(data, TensorDataset):
        h = hashlib.sha256()
        for t in data.tensors:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().numpy().tobytes())
        return h.hexdigest()
    raise TypeError(f"cannot fingerprint a {type(data).__name__}: give it a fingerprint() method or use a TensorDataset")


def fingerprint(settings: Mapping[str, Any], seed: int, *datasets: Dataset) -> str:
    """Hash of what determines the training: the settings (less :data:`RUNTIME_KEYS`), the seed and the data."""
    keep = {k: v for k, v in settings.items() if k not in RUNTIME_KEYS}
    h = hashlib.sha256(json.dumps({"settings": keep, "seed": int(seed)}, sort_keys=True, default=str).encode())
    for data in datasets:
        h.update(dataset_fingerprint(data).encode())
    return h.hexdigest()[:20]


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The content of a Lightning checkpoint, or None when it is missing or does not load (truncated, garbage).

    A damaged file is named in a warning by the caller, which decides what to do instead.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, garbage pickle, ...: all mean "unusable"
        log.debug("%s does not load: %s", path, exc)
        return None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        return None
    return ckpt


def write_progress(checkpoint_dir: Path, progress: Mapping[str, Any]) -> None:
    """Write ``progress.json`` atomically (a kill never leaves half a file)."""
    write_json(dict(progress), checkpoint_dir / PROGRESS_FILE)


def open_progress(checkpoint_dir: str | Path, fingerprint: str) -> dict[str, Any]:
    """The progress record of ``checkpoint_dir`` if it belongs to ``fingerprint``; otherwise the folder is
    emptied (a warning says why: other settings or data, or a damaged ``progress.json``) and a fresh record
    written. A folder that exists but was not made by this machinery is refused (see :func:`clean_checkpoints`).
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / PROGRESS_FILE
    if path.is_file():
        try:
            progress = json.loads(path.read_text())
            if not isinstance(progress, dict) or not isinstance(progress.get("finished"), dict):
                raise ValueError("not a progress record")
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            log.warning("%s is damaged (%s): discarding the checkpoints in %s and starting afresh",
                        path, exc, checkpoint_dir)
        else:
            if progress.get("fingerprint") == fingerprint:
                return progress
            log.warning("%s: checkpoints of other settings or data; starting afresh", checkpoint_dir)
    if checkpoint_dir.exists():
        clean_checkpoints(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    progress = {"fingerprint": fingerprint, "finished": {}}
    write_progress(checkpoint_dir, progress)
    return progress


def clean_checkpoints(path: str | Path) -> list[Path]:
    """Remove a checkpoint folder made by staged training; returns the files removed (none if it is absent).

    Refuses (ValueError) a folder without ``progress.json``, which this machinery writes first in every
    folder it makes, so that a mistyped path never deletes anything else. An empty folder is removed too.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder, so not a training checkpoint folder: nothing removed")
    files = sorted(p for p in path.rglob("*") if not p.is_dir())
    if files and not (path / PROGRESS_FILE).is_file():
        raise ValueError(f"{path} does not look like a training checkpoint folder (it has no {PROGRESS_FILE}): "
                         "nothing removed")
    shutil.rmtree(path)
    log.info("removed %s (%d files)", path, len(files))
    return files


__all__ = ["PROGRESS_FILE", "RUNTIME_KEYS", "clean_checkpoints", "dataset_fingerprint", "fingerprint",
           "open_progress", "read_checkpoint", "write_progress"]
