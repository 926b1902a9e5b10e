"""The real-galaxy samples shipped with sourcelens (``src/sourcelens/galaxies/``, see its README) and the
references that every output made from COSMOS galaxies records."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES", "COSMOS_CITATIONS", "sample_dir", "catalogue_dir"]

GALAXIES = Path(__file__).resolve().parent / "galaxies"

#: Shipped samples: name -> one line on what it is (the folder of the same name under ``galaxies/``).
SAMPLES: dict[str, str] = {
    "cosmos_btk_ext26": "100 real HST/ACS F814W COSMOS stamps with PSFs (LSST DESC BlendingToolKit, MIT)",
    "cosmos23.5_example_params": "GalSim's 100-galaxy COSMOS 23.5 example: Sérsic / bulge+disk fits, PSFs, "
                                 "no images (GalSim, BSD-3-Clause)",
}

#: References of the COSMOS galaxies (any sample, shipped or downloaded).
COSMOS_CITATIONS: tuple[str, ...] = (
    "Koekemoer, A. M., et al. 2007, ApJS, 172, 196 (COSMOS HST/ACS imaging)",
    "Mandelbaum, R., et al. 2012, MNRAS, 420, 1518 (COSMOS galaxy samples for GalSim)",
    "Rowe, B. T. P., et al. 2015, Astronomy and Computing, 10, 121 (GalSim)",
)


def sample_dir(name: str) -> Path:
    """The folder of a shipped sample; ValueError naming the allowed names for an unknown one."""
    if name not in SAMPLES:
        raise ValueError(f"unknown shipped galaxy sample {name!r}; shipped: {', '.join(SAMPLES)}")
    return GALAXIES / name


def catalogue_dir(block: dict) -> Path:
    """The RealGalaxyCatalog folder of a ``sources.cosmos`` / ``sources.cosmos_fit`` config block: ``dir`` (a
    downloaded sample) if set, else the shipped ``sample``."""
    if block.get("dir"):
        return Path(block["dir"])
    if block.get("sample"):
        return sample_dir(block["sample"])
    raise ValueError("neither 'dir' nor 'sample' is set")
