"""Packages whose public names load from their submodules on first use (so that importing one light
function does not import Lightning, lenstronomy or matplotlib)."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to its submodule."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
