"""Shared fixtures: paths to the repository and to the small real COSMOS samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GALAXIES = Path(os.environ.get("SOURCELENS_GALAXIES", REPO.parent / "shared" / "galaxies"))


def _sample(name: str) -> Path:
    path = GALAXIES / name
    if not path.is_dir():
        pytest.skip(f"real COSMOS sample '{name}' not found at {path} (set SOURCELENS_GALAXIES to the folder "
                    "holding cosmos_btk_ext26/ and cosmos23.5_example_params/)")
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def btk_dir() -> Path:
    """100 real F814W COSMOS stamps (no selection file)."""
    return _sample("cosmos_btk_ext26")


@pytest.fixture
def example_params_dir() -> Path:
    """GalSim's 23.5 example catalogue with fits and selection files, no galaxy images."""
    return _sample("cosmos23.5_example_params")


@pytest.fixture
def stamp_cfg():
    from sourcelens.config import validate_config

    return validate_config({})["stamps"]
