"""Logging set-up for workflow scripts and the CLI: one log file per job, tqdm to it too."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to_file(path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging, warnings and stderr (so tqdm progress bars too) to ``path``.

    With ``path`` None, log to stderr. Returns the ``sourcelens`` logger.
    """
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "w", buffering=1)
        sys.stderr = stream
    else:
        stream = sys.stderr
    logging.basicConfig(
        level=level, stream=stream, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    return logging.getLogger("sourcelens")
