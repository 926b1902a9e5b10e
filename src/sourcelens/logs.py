"""Logging set-up for workflow scripts and the CLI: one log file per job, tqdm to it too.

With a log file, stderr goes to the file, so an uncaught exception's traceback would reach only
the log and Snakemake's console would show no reason for the failure. :func:`log_to_file` therefore
also installs a ``sys.excepthook`` that writes the traceback to the log and one line (exception
type, message and the log's path) to the console's stderr.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Callable, TextIO

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], None]

# the stream log_to_file last redirected stderr to, and the stderr it replaced (the console)
_redirect: dict[str, TextIO | None] = {"log": None, "console": None}


def _console_stream() -> TextIO:
    """The stderr to report failures on: the one before any of our redirections."""
    if _redirect["log"] is not None and sys.stderr is _redirect["log"] and _redirect["console"] is not None:
        return _redirect["console"]
    return sys.stderr


def failure_line(exc_type: type[BaseException], exc: BaseException, log_path: str | Path) -> str:
    """One line for the console about an uncaught exception: its type, message and where the traceback is."""
    message = " ".join(str(exc).split())
    return f"{exc_type.__name__}: {message} (full traceback in {log_path})" if message else (
        f"{exc_type.__name__} (full traceback in {log_path})")


def failure_hook(log_stream: TextIO, log_path: str | Path, console: TextIO) -> ExceptHook:
    """A ``sys.excepthook``: the full traceback to ``log_stream``, :func:`failure_line` to ``console``."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        try:
            log_stream.write("Uncaught exception:\n")
            traceback.print_exception(exc_type, exc, tb, file=log_stream)
            log_stream.flush()
        except (OSError, ValueError):  # the log is closed or its disk full: the console gets it all
            traceback.print_exception(exc_type, exc, tb, file=console)
        console.write(failure_line(exc_type, exc, log_path) + "\n")
        console.flush()

    return hook


def log_to_file(path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send logging, warnings and stderr (so tqdm progress bars too) to ``path``.

    With a ``path``, an uncaught exception is logged there with its traceback and named in one
    line on the original stderr (so Snakemake's console says why a job failed). With ``path``
    None, log to stderr. Returns the ``sourcelens`` logger.
    """
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        console = _console_stream()
        stream = open(path, "w", buffering=1)
        _redirect.update(log=stream, console=console)
        sys.stderr = stream
        sys.excepthook = failure_hook(stream, path, console)
    else:
        stream = sys.stderr
    logging.basicConfig(
        level=level, stream=stream, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    return logging.getLogger("sourcelens")
